//! `typed` and `json` output of `show stat` and `show info`, as HAProxy
//! prints them: every field with its position, its tags (origin, nature,
//! scope) and its type. Empty fields are left out, as HAProxy does.

use std::fmt::Write as _;

use super::stat::{ObjType, StatRow, COLUMNS};

/// Tags and type of a field: three letters (origin, nature, scope) and one
/// of `u32`, `u64`, `s32`, `str`.
pub type Tags = (&'static str, &'static str);

/// The tags and type of `show stat` column `name` for rows of `obj`
/// (HAProxy 2.6's, read off `show stat typed`).
pub fn stat_tags(name: &str, obj: ObjType) -> Tags {
    match name {
        "pxname" | "svname" => ("KNS", "str"),
        "act" | "bck" if obj == ObjType::Backend => ("MGP", "u32"),
        "act" | "bck" => ("SGP", "u32"),
        "status" => ("SGP", "str"),
        "pid" => ("KGP", "u32"),
        "iid" | "sid" => ("KGS", "u32"),
        "type" | "check_rise" | "check_fall" | "check_health" | "agent_rise" | "agent_fall"
        | "agent_health" => ("CGS", "u32"),
        "addr" | "mode" | "algo" | "cookie" => ("CGS", "str"),
        "tracked" => ("KNS", "str"),
        "slim" | "rate_lim" | "qlimit" => ("CLP", "u32"),
        "qmax" | "smax" | "rate_max" | "req_rate_max" | "conn_rate_max" | "qtime_max"
        | "ctime_max" | "rtime_max" | "ttime_max" => ("MMP", "u32"),
        "qcur"
        | "scur"
        | "srv_icur"
        | "src_ilim"
        | "idle_conn_cur"
        | "safe_conn_cur"
        | "used_conn_cur"
        | "need_conn_est"
        | "agg_server_status"
        | "agg_server_check_status"
        | "agg_check_status" => ("MGP", "u32"),
        "rate" | "req_rate" | "conn_rate" => ("MRP", "u32"),
        "weight" | "uweight" | "qtime" | "ctime" | "rtime" | "ttime" | "throttle" => ("MaP", "u32"),
        "lastchg" => ("MAP", "u32"),
        "lastsess" => ("MAP", "s32"),
        "downtime" => ("MCP", "u32"),
        "check_status" | "check_desc" | "last_chk" | "last_agt" | "agent_status" | "agent_desc" => {
            ("MOP", "str")
        }
        "check_code" | "agent_code" => ("MOP", "u32"),
        "check_duration" | "agent_duration" => ("MDP", "u64"),
        _ => ("MCP", "u64"),
    }
}

/// The long names of tag letters, for JSON.
fn tag_names(tags: &str) -> (&'static str, &'static str, &'static str) {
    let b = tags.as_bytes();
    let origin = match b.first() {
        Some(b'M') => "Metric",
        Some(b'S') => "Status",
        Some(b'K') => "Key",
        Some(b'C') => "Config",
        Some(b'P') => "Product",
        _ => "Unknown",
    };
    let nature = match b.get(1) {
        Some(b'A') => "Age",
        Some(b'a') => "Avg",
        Some(b'C') => "Counter",
        Some(b'D') => "Duration",
        Some(b'G') => "Gauge",
        Some(b'L') => "Limit",
        Some(b'M') => "Max",
        Some(b'N') => "Name",
        Some(b'O') => "Output",
        Some(b'R') => "Rate",
        Some(b'T') => "Time",
        _ => "Unknown",
    };
    let scope = match b.get(2) {
        Some(b'G') => "Global",
        Some(b'P') => "Process",
        Some(b'S') => "Service",
        Some(b's') => "System",
        _ => "Unknown",
    };
    (origin, nature, scope)
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON value of type `ty`: numbers bare (when they parse), strings
/// quoted.
fn json_value(ty: &str, v: &str) -> String {
    match ty {
        "str" => json_str(v),
        _ if v.parse::<i64>().is_ok() || v.parse::<u64>().is_ok() => v.to_string(),
        _ => json_str(v),
    }
}

fn field_json(out: &mut String, prefix: &str, pos: usize, name: &str, tags: Tags, value: &str) {
    let (o, n, s) = tag_names(tags.0);
    let _ = write!(
        out,
        "{{{prefix}\"field\":{{\"pos\":{pos},\"name\":{}}},\"processNum\":1,\"tags\":{{\"origin\":\"{o}\",\"nature\":\"{n}\",\"scope\":\"{s}\"}},\"value\":{{\"type\":\"{}\",\"value\":{}}}}}",
        json_str(name),
        tags.1,
        json_value(tags.1, value)
    );
}

fn obj_letter(o: ObjType) -> (&'static str, &'static str) {
    match o {
        ObjType::Frontend => ("F", "Frontend"),
        ObjType::Backend => ("B", "Backend"),
        ObjType::Server => ("S", "Server"),
    }
}

/// `show stat typed`.
pub fn stat_typed<'a>(rows: impl Iterator<Item = &'a StatRow>) -> String {
    let mut out = String::new();
    for r in rows {
        let (l, _) = obj_letter(r.obj);
        for (pos, (name, v)) in COLUMNS.iter().zip(&r.fields).enumerate() {
            if v.is_empty() || *name == "-" {
                continue;
            }
            let (tags, ty) = stat_tags(name, r.obj);
            let _ = writeln!(
                out,
                "{l}.{}.{}.{pos}.{name}.1:{tags}:{ty}:{v}",
                r.iid, r.sid
            );
        }
    }
    out
}

/// `show stat json`: an array of rows, each an array of fields.
pub fn stat_json<'a>(rows: impl Iterator<Item = &'a StatRow>) -> String {
    let mut out = String::from("[");
    for (i, r) in rows.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        let (_, long) = obj_letter(r.obj);
        let prefix = format!(
            "\"objType\":\"{long}\",\"proxyId\":{},\"id\":{},",
            r.iid, r.sid
        );
        let mut first = true;
        for (pos, (name, v)) in COLUMNS.iter().zip(&r.fields).enumerate() {
            if v.is_empty() || *name == "-" {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            field_json(&mut out, &prefix, pos, name, stat_tags(name, r.obj), v);
        }
        out.push(']');
    }
    out.push_str("]\n");
    out
}

/// One `show info` field.
pub struct InfoField {
    /// HAProxy's position of the key.
    pub pos: usize,
    /// The key.
    pub name: &'static str,
    /// Tags and type.
    pub tags: Tags,
    /// The value.
    pub value: String,
}

/// `show info` as `Key: value` lines.
pub fn info_text(fields: &[InfoField]) -> String {
    let mut out = String::new();
    for f in fields {
        let _ = writeln!(out, "{}: {}", f.name, f.value);
    }
    out
}

/// `show info typed`.
pub fn info_typed(fields: &[InfoField]) -> String {
    let mut out = String::new();
    for f in fields {
        let _ = writeln!(
            out,
            "{}.{}.1:{}:{}:{}",
            f.pos, f.name, f.tags.0, f.tags.1, f.value
        );
    }
    out
}

/// `show info json`.
pub fn info_json(fields: &[InfoField]) -> String {
    let mut out = String::from("[");
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field_json(&mut out, "", f.pos, f.name, f.tags, &f.value);
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(json_value("u64", "12"), "12");
        assert_eq!(json_value("s32", "-1"), "-1");
        assert_eq!(json_value("str", "12"), "\"12\"");
    }
}
