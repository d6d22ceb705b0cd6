//! The stats page at `/`: one table per proxy in the spirit of HAProxy's
//! (frontend, servers, backend), states coloured, a process summary on
//! top. Self-contained: inline style, no script, no external resource; a
//! meta refresh reloads it every 10 s.

use std::fmt::Write as _;

use super::stat::{ObjType, StatRow};
use super::typed::InfoField;

/// `s` escaped for HTML text and attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The CSS class of a status.
fn class(status: &str) -> &'static str {
    match status {
        "OPEN" | "UP" => "up",
        "DOWN" => "down",
        "MAINT" => "maint",
        "DRAIN" | "NOLB" => "drain",
        "no check" => "nocheck",
        s if s.starts_with("UP ") => "goingdown",
        s if s.starts_with("DOWN ") => "goingup",
        _ => "nocheck",
    }
}

const COLUMNS: &[(&str, &str)] = &[
    ("status", "Status"),
    ("lastchg", "LastChg (s)"),
    ("weight", "Wght"),
    ("qcur", "Queue cur"),
    ("qmax", "Queue max"),
    ("scur", "Sess cur"),
    ("smax", "Sess max"),
    ("slim", "Sess limit"),
    ("stot", "Sess total"),
    ("rate", "Rate"),
    ("rate_max", "Rate max"),
    ("bin", "Bytes in"),
    ("bout", "Bytes out"),
    ("dreq", "Denied req"),
    ("ereq", "Err req"),
    ("econ", "Err conn"),
    ("eresp", "Err resp"),
    ("wretr", "Retr"),
    ("wredis", "Redis"),
    ("hrsp_2xx", "2xx"),
    ("hrsp_4xx", "4xx"),
    ("hrsp_5xx", "5xx"),
    ("check_status", "Check"),
    ("chkfail", "Chk fail"),
    ("chkdown", "Chk down"),
    ("ttime", "Ttime (ms)"),
    ("addr", "Address"),
];

const STYLE: &str = "body{font-family:sans-serif;font-size:13px;margin:1em;color:#222}\
h1{font-size:18px}h2{font-size:15px;margin:1.2em 0 .3em}\
table{border-collapse:collapse;margin-bottom:.5em}\
th,td{border:1px solid #999;padding:2px 5px;text-align:right;white-space:nowrap}\
th{background:#20377a;color:#fff}td.name{text-align:left;font-weight:bold}\
tr.frontend td,tr.backend td{background:#e8e8f8}\
tr.up td{background:#c0ffc0}tr.down td{background:#ff9090}\
tr.maint td{background:#d6c2a0}tr.drain td{background:#b0d0ff}\
tr.goingdown td{background:#ffffa0}tr.goingup td{background:#ffd090}\
tr.nocheck td{background:#f0f0f0}.info td{text-align:left}";

/// The page.
pub fn render(rows: &[StatRow], info: &[InfoField]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"10\"><title>corral statistics</title>\
<link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head><body>\n"
    );
    let get = |k: &str| {
        info.iter()
            .find(|f| f.name == k)
            .map_or("", |f| f.value.as_str())
    };
    let _ = writeln!(
        out,
        "<h1>corral {} statistics on {}</h1>",
        esc(get("Version")),
        esc(get("node"))
    );
    out.push_str("<table class=\"info\">");
    for k in [
        "Pid",
        "Uptime",
        "Nbworkers",
        "Generation",
        "Maxconn",
        "CurrConns",
        "CumConns",
        "CumReq",
        "ConnRate",
        "Idle_pct",
    ] {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(get(k)));
    }
    out.push_str("</table>\n");
    let mut i = 0;
    while i < rows.len() {
        let px = rows[i].get("pxname");
        let kind = match rows[i].obj {
            ObjType::Frontend => "frontend",
            _ => "backend",
        };
        let end = rows[i..]
            .iter()
            .position(|r| {
                r.get("pxname") != px || (r.obj == ObjType::Frontend) != (kind == "frontend")
            })
            .map_or(rows.len(), |n| i + n);
        let _ = writeln!(out, "<h2>{kind} {}</h2>", esc(px));
        out.push_str("<table><tr><th>Name</th>");
        for (_, title) in COLUMNS {
            let _ = write!(out, "<th>{}</th>", esc(title));
        }
        out.push_str("</tr>\n");
        for r in &rows[i..end] {
            let status = r.get("status");
            let cls = match r.obj {
                ObjType::Server => class(status),
                ObjType::Frontend => "frontend",
                ObjType::Backend => "backend",
            };
            let _ = write!(
                out,
                "<tr class=\"{cls}\"><td class=\"name\">{}</td>",
                esc(r.get("svname"))
            );
            for (col, _) in COLUMNS {
                let _ = write!(out, "<td>{}</td>", esc(r.get(col)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
        i = end;
    }
    out.push_str("<p>CSV: <a href=\"/;csv\">/;csv</a> &middot; Prometheus: <a href=\"/metrics\">/metrics</a></p>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
