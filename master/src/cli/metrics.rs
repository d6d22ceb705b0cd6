//! `/metrics`: the Prometheus text format (version 0.0.4) over `show
//! stat`'s rows and `show info`'s process fields. Names are prefixed
//! `corral_`; labels are `proxy`, `server` and, for responses by class,
//! `code`. Each metric has its HELP and TYPE lines once, then its samples.

use std::fmt::Write as _;

use super::stat::{ObjType, StatRow};
use super::typed::InfoField;

/// How a metric is read from a row.
#[derive(Clone, Copy)]
enum Source {
    /// A column, as is.
    Col(&'static str),
    /// A column of milliseconds, as seconds.
    Ms(&'static str),
    /// 1 when the status column says the object is usable.
    Up,
}

/// One metric: name after `corral_<object>_`, help, type, source, and
/// the objects it applies to (bits of `ObjType::bit`).
const METRICS: &[(&str, &str, &str, Source, u32)] = &[
    (
        "current_sessions",
        "Current number of active sessions.",
        "gauge",
        Source::Col("scur"),
        7,
    ),
    (
        "max_sessions",
        "Highest number of active sessions observed.",
        "gauge",
        Source::Col("smax"),
        7,
    ),
    (
        "limit_sessions",
        "Configured session limit.",
        "gauge",
        Source::Col("slim"),
        5,
    ),
    (
        "sessions_total",
        "Total number of sessions.",
        "counter",
        Source::Col("stot"),
        7,
    ),
    (
        "current_session_rate",
        "Sessions per second over the last second.",
        "gauge",
        Source::Col("rate"),
        7,
    ),
    (
        "max_session_rate",
        "Highest sessions per second observed.",
        "gauge",
        Source::Col("rate_max"),
        7,
    ),
    (
        "bytes_in_total",
        "Bytes received from clients.",
        "counter",
        Source::Col("bin"),
        7,
    ),
    (
        "bytes_out_total",
        "Bytes sent to clients.",
        "counter",
        Source::Col("bout"),
        7,
    ),
    (
        "requests_denied_total",
        "Requests denied by rules.",
        "counter",
        Source::Col("dreq"),
        3,
    ),
    (
        "responses_denied_total",
        "Responses denied by rules.",
        "counter",
        Source::Col("dresp"),
        7,
    ),
    (
        "request_errors_total",
        "Invalid or timed-out requests.",
        "counter",
        Source::Col("ereq"),
        1,
    ),
    (
        "http_requests_total",
        "HTTP requests.",
        "counter",
        Source::Col("req_tot"),
        7,
    ),
    (
        "http_requests_rate_max",
        "Highest HTTP requests per second observed.",
        "gauge",
        Source::Col("req_rate_max"),
        1,
    ),
    (
        "connections_total",
        "Connections accepted.",
        "counter",
        Source::Col("conn_tot"),
        1,
    ),
    (
        "denied_connections_total",
        "Connections denied by tcp-request connection rules.",
        "counter",
        Source::Col("dcon"),
        1,
    ),
    (
        "intercepted_requests_total",
        "Requests answered by corral itself.",
        "counter",
        Source::Col("intercepted"),
        1,
    ),
    (
        "current_queue",
        "Requests waiting in the queue.",
        "gauge",
        Source::Col("qcur"),
        6,
    ),
    (
        "max_queue",
        "Longest queue observed.",
        "gauge",
        Source::Col("qmax"),
        6,
    ),
    (
        "connection_errors_total",
        "Failed connections to servers.",
        "counter",
        Source::Col("econ"),
        6,
    ),
    (
        "response_errors_total",
        "Invalid or cut responses.",
        "counter",
        Source::Col("eresp"),
        6,
    ),
    (
        "retry_warnings_total",
        "Connection retries.",
        "counter",
        Source::Col("wretr"),
        6,
    ),
    (
        "redispatch_warnings_total",
        "Redispatches to another server.",
        "counter",
        Source::Col("wredis"),
        6,
    ),
    (
        "client_aborts_total",
        "Transfers aborted by the client.",
        "counter",
        Source::Col("cli_abrt"),
        6,
    ),
    (
        "server_aborts_total",
        "Transfers aborted by the server.",
        "counter",
        Source::Col("srv_abrt"),
        6,
    ),
    (
        "connection_attempts_total",
        "Connections opened to servers.",
        "counter",
        Source::Col("connect"),
        6,
    ),
    (
        "connection_reuses_total",
        "Idle server connections reused.",
        "counter",
        Source::Col("reuse"),
        6,
    ),
    (
        "http_cache_lookups_total",
        "HTTP requests looked up in the cache.",
        "counter",
        Source::Col("cache_lookups"),
        3,
    ),
    (
        "http_cache_hits_total",
        "HTTP requests answered from the cache.",
        "counter",
        Source::Col("cache_hits"),
        3,
    ),
    (
        "loadbalanced_total",
        "Times a server was selected.",
        "counter",
        Source::Col("lbtot"),
        6,
    ),
    (
        "last_session_seconds",
        "Seconds since the last session (-1: none).",
        "gauge",
        Source::Col("lastsess"),
        6,
    ),
    (
        "queue_time_average_seconds",
        "Average queue time over the last 1024 requests.",
        "gauge",
        Source::Ms("qtime"),
        6,
    ),
    (
        "connect_time_average_seconds",
        "Average connect time over the last 1024 requests.",
        "gauge",
        Source::Ms("ctime"),
        6,
    ),
    (
        "response_time_average_seconds",
        "Average response time over the last 1024 requests.",
        "gauge",
        Source::Ms("rtime"),
        6,
    ),
    (
        "total_time_average_seconds",
        "Average total time over the last 1024 requests.",
        "gauge",
        Source::Ms("ttime"),
        6,
    ),
    (
        "max_queue_time_seconds",
        "Longest queue time of a request.",
        "gauge",
        Source::Ms("qtime_max"),
        6,
    ),
    (
        "max_connect_time_seconds",
        "Longest connect time.",
        "gauge",
        Source::Ms("ctime_max"),
        6,
    ),
    (
        "max_response_time_seconds",
        "Longest response time.",
        "gauge",
        Source::Ms("rtime_max"),
        6,
    ),
    (
        "max_total_time_seconds",
        "Longest total time.",
        "gauge",
        Source::Ms("ttime_max"),
        6,
    ),
    (
        "weight",
        "Current weight.",
        "gauge",
        Source::Col("weight"),
        6,
    ),
    (
        "active_servers",
        "Usable active servers.",
        "gauge",
        Source::Col("act"),
        2,
    ),
    (
        "backup_servers",
        "Usable backup servers.",
        "gauge",
        Source::Col("bck"),
        2,
    ),
    (
        "check_failures_total",
        "Failed health checks.",
        "counter",
        Source::Col("chkfail"),
        4,
    ),
    (
        "check_down_total",
        "UP to DOWN transitions.",
        "counter",
        Source::Col("chkdown"),
        4,
    ),
    (
        "check_duration_seconds",
        "Duration of the last health check.",
        "gauge",
        Source::Ms("check_duration"),
        4,
    ),
    (
        "last_change_seconds",
        "Seconds since the last state change.",
        "gauge",
        Source::Col("lastchg"),
        6,
    ),
    (
        "up",
        "1 when usable (UP, no check, OPEN), else 0.",
        "gauge",
        Source::Up,
        7,
    ),
];

/// Response classes, the `code` label.
const CODES: &[(&str, &str)] = &[
    ("1xx", "hrsp_1xx"),
    ("2xx", "hrsp_2xx"),
    ("3xx", "hrsp_3xx"),
    ("4xx", "hrsp_4xx"),
    ("5xx", "hrsp_5xx"),
    ("other", "hrsp_other"),
];

fn object(o: ObjType) -> &'static str {
    match o {
        ObjType::Frontend => "frontend",
        ObjType::Backend => "backend",
        ObjType::Server => "server",
    }
}

/// A label value, escaped for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(r: &StatRow) -> String {
    match r.obj {
        ObjType::Server => format!(
            "proxy=\"{}\",server=\"{}\"",
            label(r.get("pxname")),
            label(r.get("svname"))
        ),
        _ => format!("proxy=\"{}\"", label(r.get("pxname"))),
    }
}

fn value(r: &StatRow, src: Source) -> Option<String> {
    match src {
        Source::Col(c) => {
            let v = r.get(c);
            (!v.is_empty()).then(|| v.to_string())
        }
        Source::Ms(c) => {
            let v: u64 = r.get(c).parse().ok()?;
            Some(format!("{}", v as f64 / 1000.0))
        }
        Source::Up => {
            let s = r.get("status");
            let up = s == "OPEN" || s == "no check" || s == "UP" || s.starts_with("UP ");
            Some(u8::from(up).to_string())
        }
    }
}

/// The whole exposition.
pub fn render(rows: &[StatRow], info: &[InfoField]) -> String {
    let mut out = String::new();
    let info_value = |k: &str| {
        info.iter()
            .find(|f| f.name == k)
            .map_or("0".to_string(), |f| f.value.clone())
    };
    for (name, help, ty, key) in [
        (
            "process_current_connections",
            "Connections open now.",
            "gauge",
            "CurrConns",
        ),
        (
            "process_connections_total",
            "Connections accepted.",
            "counter",
            "CumConns",
        ),
        (
            "process_requests_total",
            "HTTP requests received.",
            "counter",
            "CumReq",
        ),
        (
            "process_max_connections",
            "The global maxconn.",
            "gauge",
            "Maxconn",
        ),
        (
            "process_idle_time_percent",
            "Idle share of the workers' last second.",
            "gauge",
            "Idle_pct",
        ),
        (
            "process_start_time_seconds",
            "Start time of the master, Unix seconds.",
            "gauge",
            "Start_time_sec",
        ),
        (
            "process_workers",
            "Configured workers.",
            "gauge",
            "Nbworkers",
        ),
        (
            "process_reloads_total",
            "Reloads done.",
            "counter",
            "Reloads",
        ),
        (
            "process_failed_reloads_total",
            "Reloads that failed.",
            "counter",
            "FailedReloads",
        ),
        (
            "process_dropped_logs_total",
            "Log lines dropped because a reader stalled.",
            "counter",
            "DroppedLogs",
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP corral_{name} {help}\n# TYPE corral_{name} {ty}"
        );
        let _ = writeln!(out, "corral_{name} {}", info_value(key));
    }
    let _ = writeln!(
        out,
        "# HELP corral_build_info corral's version.\n# TYPE corral_build_info gauge\ncorral_build_info{{version=\"{}\",release_date=\"{}\"}} 1",
        label(&info_value("Version")),
        label(&info_value("Release_date"))
    );
    for obj in [ObjType::Frontend, ObjType::Backend, ObjType::Server] {
        let of: Vec<&StatRow> = rows.iter().filter(|r| r.obj == obj).collect();
        if of.is_empty() {
            continue;
        }
        let o = object(obj);
        for (name, help, ty, src, applies) in METRICS {
            if applies & obj.bit() == 0 {
                continue;
            }
            let samples: Vec<String> = of
                .iter()
                .filter_map(|r| {
                    Some(format!(
                        "corral_{o}_{name}{{{}}} {}",
                        labels(r),
                        value(r, *src)?
                    ))
                })
                .collect();
            if samples.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "# HELP corral_{o}_{name} {help}\n# TYPE corral_{o}_{name} {ty}"
            );
            for s in samples {
                out.push_str(&s);
                out.push('\n');
            }
        }
        let http: Vec<&&StatRow> = of.iter().filter(|r| r.get("mode") == "http").collect();
        if !http.is_empty() {
            let _ = writeln!(
                out,
                "# HELP corral_{o}_http_responses_total HTTP responses by status class.\n# TYPE corral_{o}_http_responses_total counter"
            );
            for r in http {
                for (code, col) in CODES {
                    let _ = writeln!(
                        out,
                        "corral_{o}_http_responses_total{{{},code=\"{code}\"}} {}",
                        labels(r),
                        r.get(col).parse::<u64>().unwrap_or(0)
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
