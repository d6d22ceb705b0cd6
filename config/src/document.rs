//! The whole file: TOML syntax, top-level sections, the order sections are
//! resolved in (tables, then backends, then frontends), and the checks that
//! span sections (duplicate listeners).

use std::net::SocketAddr;

use toml::de::DeTable;

use crate::addr;
use crate::backend;
use crate::cache;
use crate::diag::{Diag, Span};
use crate::error::{ConfigError, Errors};
use crate::frontend;
use crate::global;
use crate::model::Config;
use crate::position::LineIndex;
use crate::proxy;
use crate::stats;
use crate::table;
use crate::walk::{self, Section, Value};

/// Top-level keys.
const KEYS: &[&str] = &[
    "global", "stats", "defaults", "frontend", "backend", "table", "cache",
];

/// What of the language a caller accepts. What a build does not run is
/// refused ("not supported by this version") rather than accepted and
/// ignored; the language's own tests and fuzzer parse all of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Support {
    /// `mode = "http"` and `http-request`/`http-response` rule lines.
    pub http: bool,
}

impl Support {
    /// What this build runs.
    pub const BUILD: Support = Support { http: true };
    /// All of the language.
    pub const ALL: Support = Support { http: true };
}

/// Parses and validates a configuration for this build; `file` is only
/// used in errors. What the build cannot run is an error (see [`Support`]).
pub fn parse(src: &str, file: &str) -> Result<Config, Errors> {
    parse_with(src, file, Support::BUILD)
}

/// Parses and validates a configuration, accepting what `support` allows
/// beyond this build.
pub fn parse_with(src: &str, file: &str, support: Support) -> Result<Config, Errors> {
    let lines = LineIndex::new(src);
    let to_errors = |errs: Vec<(Option<Span>, String)>| {
        Errors::new(
            errs.into_iter()
                .map(|(span, message)| {
                    let (line, column) = span.map_or((0, 0), |s| lines.locate(s.start));
                    ConfigError {
                        file: file.to_string(),
                        line,
                        column,
                        message,
                    }
                })
                .collect(),
        )
    };
    let (doc, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        // The recovered tree may lack what the broken lines held, so checking
        // it would report errors that are not there: syntax errors come alone.
        return Err(to_errors(
            syntax
                .iter()
                .map(|e| (e.span(), format!("TOML syntax error: {}", e.message())))
                .collect(),
        ));
    }
    let mut d = Diag {
        support,
        ..Diag::default()
    };
    let config = resolve(doc.get_ref(), src, &mut d);
    if d.errors.is_empty() {
        Ok(config)
    } else {
        Err(to_errors(
            d.errors.into_iter().map(|(s, m)| (Some(s), m)).collect(),
        ))
    }
}

/// Reads `path` and parses it; an unreadable file is one error at line 0.
pub fn load(path: &std::path::Path) -> Result<Config, Errors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse(&src, &file),
        Err(e) => Err(Errors(vec![ConfigError {
            file,
            line: 0,
            column: 0,
            message: format!("cannot read the configuration: {e}"),
        }])),
    }
}

/// Walks the document; every problem goes to `d`, the result is only
/// meaningful when `d` stays empty.
fn resolve(doc: &DeTable<'_>, src: &str, d: &mut Diag) -> Config {
    for (k, _) in doc.iter() {
        let key: &str = k.get_ref().as_ref();
        if !KEYS.contains(&key) {
            let hint = walk::did_you_mean(key, KEYS.iter().copied());
            let hint = if hint.is_empty() {
                " (expected one of: global, stats, defaults, frontend, backend, table, cache)"
                    .to_string()
            } else {
                hint
            };
            d.error(k.span(), format!("unknown section '{key}'{hint}"));
        }
    }
    let section = |key: &str, d: &mut Diag| -> Option<Section<'_, '_>> {
        let (k, v) = doc.get_key_value(key)?;
        Section::of(key, format!("[{key}]"), k.span(), v, d)
    };

    let global = global::parse(section("global", d).as_ref(), d);
    let stats = section("stats", d).and_then(|s| stats::parse(&s, d));
    let defaults = section("defaults", d)
        .map(|s| proxy::parse_defaults(&s, d))
        .unwrap_or_default();

    let named = |key: &str, d: &mut Diag| named_sections(doc, key, d);

    let mut tables: Vec<_> = named("table", d)
        .into_iter()
        .map(|(name, sec)| table::parse(name, &sec, d))
        .collect();
    let table_names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let caches: Vec<_> = named("cache", d)
        .into_iter()
        .map(|(name, sec)| cache::parse(name, &sec, d))
        .collect();
    let cache_names: Vec<&str> = caches.iter().map(|c| c.name.as_str()).collect();

    let backends: Vec<_> = named("backend", d)
        .into_iter()
        .map(|(name, sec)| backend::parse(name, &sec, &defaults, &table_names, &cache_names, d))
        .collect();
    // Persistence stores the server in the table even when `store` omits it,
    // as HAProxy's `stick on` does.
    for stick in backends
        .iter()
        .filter_map(|b: &crate::Backend| b.stick.as_ref())
    {
        if let Some(t) = tables.iter_mut().find(|t| t.name == stick.table) {
            if !t.store.contains(&crate::DataType::ServerId) {
                t.store.push(crate::DataType::ServerId);
            }
        }
    }

    let mut frontends = Vec::new();
    let mut bound: Vec<(SocketAddr, String)> = Vec::new();
    let known = frontend::Known {
        src,
        global_maxconn: global.maxconn,
        backends: &backends,
        tables: &tables,
    };
    for (name, sec) in named("frontend", d) {
        let (fe, binds) = frontend::parse(name, &sec, &defaults, &known, d);
        check_binds(name, &binds, &mut bound, d);
        frontends.push(fe);
    }

    Config {
        global,
        stats,
        frontends,
        backends,
        tables,
        caches,
    }
}

/// The `NAME` sections of `[KEY.NAME]` (name checked), in file order.
fn named_sections<'a, 'i>(
    doc: &'a DeTable<'i>,
    key: &str,
    d: &mut Diag,
) -> Vec<(&'a str, Section<'a, 'i>)> {
    let Some((k, v)) = doc.get_key_value(key) else {
        return Vec::new();
    };
    let expected = format!("a table of [{key}.NAME] sections");
    let Some(all) = section_of(&expected, key, format!("[{key}]"), k.span(), v, d) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, span, v) in all.entries() {
        walk::check_name(key, name, span.clone(), d);
        let expected = format!("a table [{key}.NAME]");
        if let Some(sec) = section_of(&expected, name, format!("[{key}.{name}]"), span, v, d) {
            out.push((name, sec));
        }
    }
    out
}

/// Like [`Section::of`] with a custom expectation in the type error.
fn section_of<'a, 'i>(
    expected: &str,
    what: &str,
    label: String,
    span: Span,
    v: &'a Value<'i>,
    d: &mut Diag,
) -> Option<Section<'a, 'i>> {
    if v.get_ref().is_table() {
        Section::of(what, label, span, v, d)
    } else {
        walk::mismatch(what, expected, v, d);
        None
    }
}

/// Reports each bind address already used by an earlier listener (this or
/// another frontend), then records them.
fn check_binds(
    name: &str,
    binds: &[(SocketAddr, Span)],
    bound: &mut Vec<(SocketAddr, String)>,
    d: &mut Diag,
) {
    for (a, span) in binds {
        if let Some((b, owner)) = bound.iter().find(|(b, _)| addr::conflicts(*a, *b)) {
            let msg = if a == b {
                format!("bind address {a} is already used by frontend '{owner}'")
            } else {
                format!("bind address {a} conflicts with {b}, already used by frontend '{owner}'")
            };
            d.error(span.clone(), msg);
        } else {
            bound.push((*a, name.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// A config touching every section, without host names to resolve.
    const SAMPLE: &str = r#"
[global]
workers = "auto"
memory_limit = "1MiB"
[stats]
socket = "/tmp/s"
mode = "0600"
[defaults]
mode = "http"
timeout = { connect = "1s", queue = "2s" }
[frontend.f]
bind = [":80", "[::1]:81"]
default_backend = "b"
rules = ["acl a src 1.2.3.4", "use_backend b if a"]
[backend.b]
mode = "http"
check = { interval = "1s", http = "GET /" }
stick = { on = "src", table = "t" }
[table.t]
type = "string"
key_len = 8
size = "1k"
store = ["conn_rate(1s)", "gpc0"]
"#;

    /// `parse` returns, whatever the input: it never panics.
    #[test]
    fn never_panics() {
        let deep_arrays = "a = ".to_string() + &"[".repeat(10_000);
        let deep_tables = "a = ".to_string() + &"{b = ".repeat(10_000);
        let headers = "[a.".repeat(5_000) + "]";
        let garbage = [
            "",
            "\0",
            "\u{feff}[global]",
            "[[frontend]]\nbind = 1",
            "[frontend.\"\"]\n[backend.\"\"]\n[table.\"\"]",
            "[global]\nworkers = -9223372036854775808\nmaxconn = 0x7fffffffffffffff",
            "[global]\nmemory_limit = -1\nhard_stop_after = 1.5",
            "frontend = []\nbackend = 1979-05-27\ntable = nan",
            "[backend.b.server]\ns = []",
            "[frontend.f]\nbind = [1, [2], {a = 3}]\nrules = [[], \"\"]",
            "[table.t]\ntype = \"binary\"\nkey_len = 99999999999999999999999\nstore = [\"(\", \")\", \"conn_rate(\"]",
            "\u{e9}\u{e9}\u{e9} = \"\u{e9}",
            &deep_arrays,
            &deep_tables,
            &headers,
        ];
        for src in garbage {
            let _ = parse(src, "g.toml");
        }
        // Every prefix of a valid file.
        for (i, _) in SAMPLE.char_indices() {
            let _ = parse(&SAMPLE[..i], "g.toml");
        }
        // Pseudo-random single-byte damage.
        let mut seed: u32 = 0x2545_f491;
        let noise = b"[]{}=\",\n#'x1_ -";
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let mut bytes = SAMPLE.as_bytes().to_vec();
            let at = seed as usize % bytes.len();
            bytes[at] = noise[(seed >> 16) as usize % noise.len()];
            if let Ok(src) = std::str::from_utf8(&bytes) {
                let _ = parse(src, "g.toml");
            }
        }
    }
}
