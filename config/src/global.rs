//! `[global]`: worker count, process-wide limits, privileges, pid file, log.

use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeValue;

use crate::diag::Diag;
use crate::model::{Global, LogTarget};
use crate::walk::{self, Section, Value};

/// Keys `[global]` accepts.
const KEYS: &[&str] = &[
    "workers",
    "maxconn",
    "hard_stop_after",
    "memory_limit",
    "user",
    "group",
    "pidfile",
    "log",
    "http_max_head_size",
    "http_max_headers",
    "poll_naps",
];

/// Default process-wide connection cap.
pub(crate) const DEFAULT_MAXCONN: u32 = 4096;
/// Largest `workers`: two generations of workers (during a reload) and the
/// master must fit in the shared segment's 256 process slots.
pub(crate) const MAX_WORKERS: i128 = 127;

/// Reads `[global]` (`None`: the section is absent, all defaults).
pub(crate) fn parse(sec: Option<&Section<'_, '_>>, d: &mut Diag) -> Global {
    let mut g = Global {
        workers: auto_workers(),
        maxconn: DEFAULT_MAXCONN,
        hard_stop_after: Duration::from_secs(30),
        memory_limit: None,
        user: None,
        group: None,
        pidfile: None,
        log: LogTarget::Stdout,
        http_limits: Default::default(),
        poll_naps: true,
    };
    let Some(sec) = sec else { return g };
    sec.check_keys(KEYS, d);
    if let Some(w) = sec.read("workers", d, workers) {
        g.workers = w;
    }
    if let Some(n) = sec.read("maxconn", d, |k, v, d| walk::u32_min(k, v, 1, d)) {
        g.maxconn = n;
    }
    if let Some(t) = sec.read("hard_stop_after", d, walk::duration) {
        g.hard_stop_after = t;
    }
    if let Some(b) = sec.read("poll_naps", d, walk::boolean) {
        g.poll_naps = b;
    }
    g.memory_limit = sec.read("memory_limit", d, |k, v, d| walk::size(k, v, 1, d));
    g.user = sec.read("user", d, walk::nonempty).map(str::to_string);
    g.group = sec.read("group", d, walk::nonempty).map(str::to_string);
    g.pidfile = sec.read("pidfile", d, walk::nonempty).map(PathBuf::from);
    if let Some(n) = sec.read("http_max_head_size", d, |k, v, d| {
        walk::size(k, v, 1024, d).and_then(|n| {
            if n > 1 << 20 {
                d.error(v.span(), format!("'{k}' is at most 1MiB, found {n} bytes"));
                None
            } else {
                Some(n)
            }
        })
    }) {
        g.http_limits.max_head = n as usize;
    }
    if let Some(n) = sec.read("http_max_headers", d, |k, v, d| {
        walk::u32_min(k, v, 1, d).and_then(|n| {
            if n > 1000 {
                d.error(v.span(), format!("'{k}' is at most 1000, found {n}"));
                None
            } else {
                Some(n)
            }
        })
    }) {
        g.http_limits.max_headers = n as usize;
    }
    if let Some(log) = sec.read("log", d, walk::nonempty) {
        g.log = match log {
            "stdout" => LogTarget::Stdout,
            "stderr" => LogTarget::Stderr,
            "syslog" => LogTarget::Syslog,
            path => LogTarget::File(PathBuf::from(path)),
        };
    }
    g
}

/// One worker per core (1 when the core count is unknown).
fn auto_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS as usize))
}

/// `workers`: an integer >= 1 or `"auto"`.
fn workers(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<usize> {
    const EXPECTED: &str = "an integer >= 1 or \"auto\"";
    match v.get_ref() {
        DeValue::String(s) if s == "auto" => Some(auto_workers()),
        DeValue::Integer(_) => match walk::integer_of(v.get_ref()) {
            Some(n) if (1..=MAX_WORKERS).contains(&n) => Some(n as usize),
            Some(n) if n > MAX_WORKERS => {
                walk::mismatch(what, "an integer between 1 and 127 or \"auto\"", v, d);
                None
            }
            _ => {
                walk::mismatch(what, EXPECTED, v, d);
                None
            }
        },
        _ => {
            walk::mismatch(what, EXPECTED, v, d);
            None
        }
    }
}
