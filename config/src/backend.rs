//! `[backend.NAME]`: mode, balance, retries, health checks, persistence and
//! servers, with `[defaults]` inherited.

use std::time::Duration;

use crate::diag::Diag;
use crate::model::{Backend, Balance, Check, HttpReuse, Mode, Stick};
use crate::proxy::ProxySettings;
use crate::server;
use crate::walk::{self, Section, Value};

/// Keys `[backend.NAME]` accepts.
const KEYS: &[&str] = &[
    "mode",
    "balance",
    "retries",
    "allbackups",
    "splice",
    "forwardfor",
    "timeout",
    "check",
    "stick",
    "cache",
    "http_reuse",
    "pool_max_idle",
    "pool_purge_delay",
    "server",
];

/// Idle server connections a worker keeps per server unless
/// `pool_max_idle` says otherwise.
pub const DEFAULT_POOL_MAX_IDLE: u32 = 256;

/// Reads one backend; `tables` and `caches` are the names of the declared
/// stick tables and caches.
pub(crate) fn parse(
    name: &str,
    sec: &Section<'_, '_>,
    defaults: &ProxySettings,
    tables: &[&str],
    caches: &[&str],
    d: &mut Diag,
) -> Backend {
    sec.check_keys(KEYS, d);
    let own = ProxySettings::read(sec, d);
    let s = own.over(defaults);
    let mode = s.mode();
    let cache = sec.read_at("cache", d, walk::nonempty).and_then(|(c, span)| {
        if !caches.contains(&c) {
            let hint = walk::did_you_mean(c, caches.iter().copied());
            d.error(span, format!("backend '{name}' uses cache '{c}', which is not defined (no [cache.{c}] section){hint}"));
            return None;
        }
        if mode == Mode::Tcp {
            d.error(span, format!("cache needs mode \"http\" (backend '{name}' is in tcp mode: there are no HTTP responses to store)"));
            return None;
        }
        Some(c.to_string())
    });
    let balance = s.balance.as_ref().map_or(Balance::RoundRobin, |b| b.0);
    if let (Some((b @ (Balance::Uri | Balance::Hdr), span, _)), Mode::Tcp) = (&s.balance, mode) {
        let what = if *b == Balance::Uri {
            "uri"
        } else {
            "hdr(NAME)"
        };
        d.error(
            span.clone(),
            format!("balance \"{what}\" needs mode \"http\" (backend '{name}' is in tcp mode)"),
        );
    }
    if let (Some(span), Mode::Tcp) = (sec.key_span("forwardfor"), mode) {
        d.error(
            span,
            format!("forwardfor needs mode \"http\" (backend '{name}' is in tcp mode)"),
        );
    }
    for key in ["http_reuse", "pool_max_idle", "pool_purge_delay"] {
        if let (Some(span), Mode::Tcp) = (sec.key_span(key), mode) {
            d.error(
                span,
                format!("{key} needs mode \"http\" (backend '{name}' is in tcp mode: a TCP connection is never reused)"),
            );
        }
    }
    // A pool setting on a backend that pools nothing would do nothing.
    if s.http_reuse == Some(HttpReuse::Never) {
        for key in ["pool_max_idle", "pool_purge_delay"] {
            if let Some(span) = sec.key_span(key) {
                d.error(
                    span,
                    format!("{key} has no effect with http_reuse = \"never\" (backend '{name}' keeps no pool): remove it or choose another http_reuse mode"),
                );
            }
        }
    }
    let check = sec.get("check").and_then(|v| check(&sec.label, v, d));
    let stick = sec
        .get("stick")
        .and_then(|v| stick(&sec.label, v, tables, d));
    let mut servers = Vec::new();
    match sec.get("server") {
        Some(v) => {
            let span = sec.key_span("server").unwrap_or_else(|| v.span());
            let label = format!("{}.server]", sec.label.trim_end_matches(']'));
            if let Some(list) = Section::of("server", label, span, v, d) {
                for (sname, sspan, sv) in list.entries() {
                    walk::check_name("server", sname, sspan.clone(), d);
                    let label = format!("{}.server.{sname}]", sec.label.trim_end_matches(']'));
                    if let Some(ssec) = Section::of(sname, label, sspan, sv, d) {
                        servers.push(server::parse(sname, &ssec, d));
                    }
                }
                if list.table.is_empty() {
                    d.error(list.span.clone(), format!("backend '{name}' has no server"));
                }
            }
        }
        None => d.error(sec.span.clone(), format!("backend '{name}' has no server")),
    }
    Backend {
        name: name.to_string(),
        mode,
        balance,
        hash_header: s.balance.as_ref().and_then(|b| b.2.clone()),
        forwardfor: s.forwardfor.unwrap_or(false),
        retries: s.retries.unwrap_or(3),
        allbackups: s.allbackups.unwrap_or(false),
        splice: s.splice(),
        timeouts: s.timeouts(),
        check,
        stick,
        cache,
        http_reuse: s.http_reuse.unwrap_or_default(),
        pool_max_idle: s.pool_max_idle.unwrap_or(DEFAULT_POOL_MAX_IDLE),
        pool_purge_delay: s.pool_purge_delay.unwrap_or(Duration::from_secs(5)),
        servers,
    }
}

/// `check = { interval, rise, fall, http }`.
fn check(parent: &str, v: &Value<'_>, d: &mut Diag) -> Option<Check> {
    let label = format!("{}.check]", parent.trim_end_matches(']'));
    let sec = Section::of("check", label, v.span(), v, d)?;
    sec.check_keys(&["interval", "rise", "fall", "http"], d);
    Some(Check {
        interval: sec
            .read("interval", d, walk::positive_duration)
            .unwrap_or(Duration::from_secs(2)),
        rise: sec
            .read("rise", d, |k, v, d| walk::u32_min(k, v, 1, d))
            .unwrap_or(2),
        fall: sec
            .read("fall", d, |k, v, d| walk::u32_min(k, v, 1, d))
            .unwrap_or(3),
        http: sec.read("http", d, http_check),
    })
}

/// `"GET /health"` (optionally followed by an HTTP version).
fn http_check(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<String> {
    let s = walk::string(what, v, d)?;
    let words: Vec<&str> = s.split_whitespace().collect();
    let method_ok = |m: &str| m.bytes().all(|b| b.is_ascii_uppercase());
    let ok = match words.as_slice() {
        [m, p] => method_ok(m) && p.starts_with('/'),
        [m, p, ver] => method_ok(m) && p.starts_with('/') && ver.starts_with("HTTP/"),
        _ => false,
    };
    if ok {
        Some(s.to_string())
    } else {
        d.error(
            v.span(),
            format!("invalid HTTP check {s:?}: expected a method and a path, e.g. \"GET /health\""),
        );
        None
    }
}

/// `stick = { on = "src", table = "NAME" }`.
fn stick(parent: &str, v: &Value<'_>, tables: &[&str], d: &mut Diag) -> Option<Stick> {
    let label = format!("{}.stick]", parent.trim_end_matches(']'));
    let sec = Section::of("stick", label, v.span(), v, d)?;
    sec.check_keys(&["on", "table"], d);
    let on = sec.require("on", d, |k, v, d| {
        let s = walk::string(k, v, d)?;
        if s == "src" {
            Some(s.to_string())
        } else {
            d.error(
                v.span(),
                format!("unsupported stick key {s:?}: only \"src\" is supported by this version"),
            );
            None
        }
    });
    let table = sec.require("table", d, |k, v, d| {
        let s = walk::string(k, v, d)?;
        if tables.contains(&s) {
            Some(s.to_string())
        } else {
            let hint = walk::hint(s, tables.iter().copied(), "table");
            d.error(v.span(), format!("unknown table '{s}'{hint}"));
            None
        }
    });
    Some(Stick {
        on: on?,
        table: table?,
    })
}
