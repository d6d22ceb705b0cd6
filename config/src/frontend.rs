//! `[frontend.NAME]`: listeners, limits, the default backend and rule lines.

use std::net::SocketAddr;

use toml::de::DeValue;

use crate::addr;
use crate::diag::{Diag, Span};
use crate::model::{Backend, Frontend, Mode};
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
    "timeout",
    "rules",
];

/// Reads one frontend. Returns it with each bind address's span, for the
/// duplicate check across frontends.
pub(crate) fn parse(
    name: &str,
    sec: &Section<'_, '_>,
    defaults: &ProxySettings,
    global_maxconn: u32,
    backends: &[Backend],
    d: &mut Diag,
) -> (Frontend, Vec<(SocketAddr, Span)>) {
    sec.check_keys(KEYS, d);
    let own = ProxySettings::read(sec, d);
    let s = own.over(defaults);
    let mode = s.mode();
    let binds = sec.require("bind", d, bind).unwrap_or_default();
    let maxconn = s.maxconn.unwrap_or(global_maxconn);
    let rules = sec.read("rules", d, rule_lines).unwrap_or_default();
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
        timeouts: s.timeouts(),
        rules,
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

/// `rules`: an array of directive lines, each checked by [`rules::check_rule`].
fn rule_lines(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<Vec<String>> {
    let DeValue::Array(items) = v.get_ref() else {
        walk::mismatch(what, "an array of rule lines", v, d);
        return None;
    };
    let mut out = Vec::new();
    for item in items.iter() {
        let Some(line) = walk::string("rules", item, d) else {
            continue;
        };
        match rules::check_rule(line) {
            Ok(()) => out.push(line.to_string()),
            Err(e) => d.error(item.span(), e),
        }
    }
    Some(out)
}
