//! `[frontend.NAME]`: listeners, limits, the default backend and rule lines.

use std::net::SocketAddr;

use toml::de::DeValue;

use crate::addr;
use crate::diag::{Diag, Span};
use crate::model::{Backend, Frontend, Mode, Table};
use crate::proxy::ProxySettings;
use crate::rules;
use crate::walk::{self, Section, Value};

/// Keys `[frontend.NAME]` accepts.
const KEYS: &[&str] = &[
    "bind",
    "backlog",
    "mode",
    "maxconn",
    "default_backend",
    "splice",
    "forwardfor",
    "timeout",
    "rules",
    "defer_accept",
];

/// What a frontend's settings may refer to, resolved before frontends are read.
pub(crate) struct Known<'a> {
    /// The source text, to point errors at a word inside a rule line.
    pub(crate) src: &'a str,
    /// `[global] maxconn`, the default of the frontend's.
    pub(crate) global_maxconn: u32,
    /// Every backend, in declaration order.
    pub(crate) backends: &'a [Backend],
    /// Every stick table, in declaration order.
    pub(crate) tables: &'a [Table],
}

/// Reads one frontend. Returns it with each bind address's span, for the
/// duplicate check across frontends.
pub(crate) fn parse(
    name: &str,
    sec: &Section<'_, '_>,
    defaults: &ProxySettings,
    known: &Known<'_>,
    d: &mut Diag,
) -> (Frontend, Vec<(SocketAddr, Span)>) {
    let backends = known.backends;
    sec.check_keys(KEYS, d);
    let own = ProxySettings::read(sec, d);
    let s = own.over(defaults);
    let mode = s.mode();
    let binds = sec.require("bind", d, bind).unwrap_or_default();
    let maxconn = s.maxconn.unwrap_or(known.global_maxconn);
    let lines = sec.read("rules", d, rule_lines).unwrap_or_default();
    if let (Some(span), Mode::Tcp) = (sec.key_span("forwardfor"), mode) {
        d.error(
            span,
            format!("forwardfor needs mode \"http\" (frontend '{name}' is in tcp mode)"),
        );
    }
    let cx = rules::Context {
        frontend: name,
        mode,
        backends,
        tables: known.tables,
    };
    let texts: Vec<&str> = lines.iter().map(|(l, _)| *l).collect();
    let (ruleset, errors) = rules::build(&texts, &cx);
    for (i, e) in errors {
        let (line, span) = &lines[i];
        d.error(word_span(known.src, span, line, e.offset), e.message);
    }
    if !d.support.http {
        for (line, span) in &lines {
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "http-request" | "http-response") {
                let at = line.len() - line.trim_start().len();
                d.error(
                    word_span(known.src, span, line, at),
                    format!("{first} rules are not supported by this version (HTTP mode is not implemented yet)"),
                );
            }
        }
    }
    let rules: Vec<String> = texts.iter().map(|l| l.to_string()).collect();
    let default_backend = sec.read("default_backend", d, |k, v, d| {
        let target = walk::string(k, v, d)?;
        let Some(i) = backends.iter().position(|b| b.name == target) else {
            let names = backends.iter().map(|b| b.name.as_str());
            let hint = walk::hint(target, names, "backend");
            d.error(v.span(), format!("unknown backend '{target}'{hint}"));
            return None;
        };
        let bmode = backends[i].mode;
        if bmode != mode {
            d.error(
                v.span(),
                format!(
                    "frontend '{name}' is in {} mode but its default_backend '{target}' is in {} mode",
                    mode_name(mode),
                    mode_name(bmode)
                ),
            );
        }
        Some(i)
    });
    if sec.get("default_backend").is_none() && rules.is_empty() {
        d.error(
            sec.span.clone(),
            format!("frontend '{name}' has no default_backend"),
        );
    }
    let frontend = Frontend {
        name: name.to_string(),
        bind: binds.iter().map(|b| b.0).collect(),
        backlog: s.backlog.unwrap_or(maxconn),
        mode,
        maxconn,
        default_backend,
        splice: s.splice(),
        forwardfor: s.forwardfor.unwrap_or(false),
        defer_accept: sec.read("defer_accept", d, walk::boolean).unwrap_or(false),
        timeouts: s.timeouts(),
        rules,
        ruleset,
    };
    (frontend, binds)
}

/// `"tcp"` or `"http"`.
fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    }
}

/// `bind`: one address or a non-empty array of them.
fn bind(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<Vec<(SocketAddr, Span)>> {
    const EXPECTED: &str = "an address string or a non-empty array of them";
    let items: Vec<&Value<'_>> = match v.get_ref() {
        DeValue::String(_) => vec![v],
        DeValue::Array(a) if !a.is_empty() => a.iter().collect(),
        _ => {
            walk::mismatch(what, EXPECTED, v, d);
            return None;
        }
    };
    let mut out = Vec::new();
    for item in items {
        let Some(s) = walk::string(what, item, d) else {
            continue;
        };
        match addr::parse_listen(s) {
            Ok(a) => out.push((a, item.span())),
            Err(e) => d.error(item.span(), e),
        }
    }
    Some(out)
}

/// `rules`: an array of directive lines, each with its span.
fn rule_lines<'a>(what: &str, v: &'a Value<'_>, d: &mut Diag) -> Option<Vec<(&'a str, Span)>> {
    let DeValue::Array(items) = v.get_ref() else {
        walk::mismatch(what, "an array of rule lines", v, d);
        return None;
    };
    let mut out = Vec::new();
    for item in items.iter() {
        if let Some(line) = walk::string("rules", item, d) {
            out.push((line, item.span()));
        }
    }
    Some(out)
}

/// Where byte `offset` of rule `line` is in the source: exactly when the
/// string is written without escapes, else at the string's start.
fn word_span(src: &str, item: &Span, line: &str, offset: usize) -> Span {
    let raw = src.get(item.clone()).unwrap_or("");
    for q in ["\"\"\"", "'''", "\"", "'"] {
        if raw.len() >= 2 * q.len() && raw.starts_with(q) && raw.ends_with(q) {
            if &raw[q.len()..raw.len() - q.len()] == line && offset <= line.len() {
                let at = item.start + q.len() + offset;
                return at..at + 1;
            }
            break;
        }
    }
    item.clone()
}
