//! The arguments of actions: track keys and tables, stick counter slots,
//! headers, statuses, `return` options, backends.

use super::acl::{call, is_token};
use super::ast::{HeaderAction, HttpRequestAction, Redirect, RedirectKind, Track, TrackKey};
use super::cond::Cursor;
use super::lexer::Token;
use super::{Context, RuleError};
use crate::model::{KeyType, Mode};
use crate::walk::hint;

/// `unknown action 'X' for WHERE (expected one of: ...)`.
pub(crate) fn unknown_action(act: &Token, place: &str, known: &[&str]) -> RuleError {
    RuleError::new(
        act.at,
        format!(
            "unknown action '{}' for {place} (expected one of: {})",
            act.text,
            known.join(", ")
        ),
    )
}

/// The slot of `track-sc0|1|2`.
pub(crate) fn track_slot(action: &str) -> Option<u8> {
    match action {
        "track-sc0" => Some(0),
        "track-sc1" => Some(1),
        "track-sc2" => Some(2),
        _ => None,
    }
}

/// The slot of `sc-inc-gpc0(N)` / `scN-inc-gpc0`; `None` for other actions.
pub(crate) fn gpc_slot(act: &Token) -> Result<Option<u8>, RuleError> {
    let slot = |n: &str| match n {
        "0" | "1" | "2" => Some(n.as_bytes()[0] - b'0'),
        _ => None,
    };
    let bad = || {
        RuleError::new(
            act.at,
            "expected sc-inc-gpc0(N) or scN-inc-gpc0 with N = 0, 1 or 2",
        )
    };
    if let Some(n) = act
        .text
        .strip_prefix("sc")
        .and_then(|s| s.strip_suffix("-inc-gpc0"))
    {
        return if n.is_empty() {
            Err(bad())
        } else {
            slot(n).map(Some).ok_or_else(bad)
        };
    }
    match call(&act.text) {
        Ok(("sc-inc-gpc0", arg)) => arg.and_then(slot).map(Some).ok_or_else(bad),
        _ => Ok(None),
    }
}

/// `KEY [table NAME]` after `track-scN`; `http`: HTTP keys are allowed.
pub(crate) fn track(
    slot: u8,
    http: bool,
    c: &mut Cursor<'_>,
    cx: &Context<'_>,
) -> Result<Track, RuleError> {
    let k = c.expect("track key (expected one of: src, req.hdr(NAME), path, url)")?;
    let key = match call(&k.text).map_err(|e| RuleError::new(k.at, e))? {
        ("src", None) => TrackKey::Src,
        ("path", None) => TrackKey::Path,
        ("url", None) => TrackKey::Url,
        ("req.hdr" | "hdr", Some(h)) if is_token(h) => TrackKey::ReqHdr(h.to_string()),
        ("req.hdr" | "hdr", _) => {
            return Err(RuleError::new(
                k.at,
                format!(
                    "invalid track key '{}': expected req.hdr(NAME) with a header name",
                    k.text
                ),
            ))
        }
        _ => {
            return Err(RuleError::new(
                k.at,
                format!(
                    "unknown track key '{}' (expected one of: src, req.hdr(NAME), path, url)",
                    k.text
                ),
            ))
        }
    };
    if !http && key != TrackKey::Src {
        return Err(RuleError::new(
            k.at,
            format!(
                "track key '{}' needs an HTTP request: tcp-request connection can only track 'src'",
                k.text
            ),
        ));
    }
    if !c.peek().is_some_and(|t| t.is("table")) {
        return Err(RuleError::new(
            c.here(),
            format!("missing 'table NAME' after 'track-sc{slot} {}' (frontends have no stick table of their own)", k.text),
        ));
    }
    c.next();
    let t = c.expect("table name after 'table'")?;
    let Some(table) = cx.tables.iter().position(|x| x.name == t.text) else {
        let h = hint(&t.text, cx.tables.iter().map(|x| x.name.as_str()), "table");
        return Err(RuleError::new(
            t.at,
            format!("unknown table '{}'{h}", t.text),
        ));
    };
    let kt = cx.tables[table].key;
    let (fits, needs) = match key {
        TrackKey::Src => (matches!(kt, KeyType::Ip | KeyType::Ipv6), "an ip or ipv6"),
        _ => (kt == KeyType::String, "a string"),
    };
    if !fits {
        return Err(RuleError::new(
            t.at,
            format!(
                "table '{}' has keys of type {}, but track key '{}' needs {needs} table",
                t.text,
                kt.as_str(),
                k.text
            ),
        ));
    }
    Ok(Track { slot, key, table })
}

/// A backend reference of `use_backend`, of the frontend's mode.
pub(crate) fn backend(t: &Token, cx: &Context<'_>) -> Result<usize, RuleError> {
    let Some(i) = cx.backends.iter().position(|b| b.name == t.text) else {
        let h = hint(
            &t.text,
            cx.backends.iter().map(|b| b.name.as_str()),
            "backend",
        );
        return Err(RuleError::new(
            t.at,
            format!("unknown backend '{}'{h}", t.text),
        ));
    };
    let mode = |m| if m == Mode::Tcp { "tcp" } else { "http" };
    if cx.backends[i].mode != cx.mode {
        return Err(RuleError::new(
            t.at,
            format!(
                "frontend '{}' is in {} mode but backend '{}' is in {} mode",
                cx.frontend,
                mode(cx.mode),
                t.text,
                mode(cx.backends[i].mode)
            ),
        ));
    }
    Ok(i)
}

/// An HTTP status for `deny` and `return`: 200..=599.
pub(crate) fn http_status(t: &Token) -> Result<u16, RuleError> {
    t.text
        .parse()
        .ok()
        .filter(|s| (200..=599).contains(s))
        .ok_or_else(|| {
            RuleError::new(
                t.at,
                format!("invalid HTTP status '{}' (expected 200..599)", t.text),
            )
        })
}

/// `set-header NAME VALUE`, `add-header NAME VALUE` or `del-header NAME`
/// (the action word already read), for requests and responses alike.
pub(crate) fn header_action(word: &str, c: &mut Cursor<'_>) -> Result<HeaderAction, RuleError> {
    Ok(match word {
        "set-header" => {
            let (name, value) = header(c, word, true)?;
            HeaderAction::Set { name, value }
        }
        "add-header" => {
            let (name, value) = header(c, word, true)?;
            HeaderAction::Add { name, value }
        }
        _ => HeaderAction::Del {
            name: header(c, word, false)?.0,
        },
    })
}

/// `NAME VALUE...` (`value`: a value is required) of a header action.
fn header(c: &mut Cursor<'_>, action: &str, value: bool) -> Result<(String, String), RuleError> {
    let n = c.expect(&format!("header name after '{action}'"))?;
    if !is_token(&n.text) {
        return Err(RuleError::new(
            n.at,
            format!("invalid header name '{}'", n.text),
        ));
    }
    if !value {
        return Ok((n.text.clone(), String::new()));
    }
    let mut words = Vec::new();
    while !c.at_cond() {
        let t = c.next().expect("not at the end");
        let w = literal(t)?;
        if w.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(RuleError::new(
                t.at,
                format!("control character in the value of '{action} {}': a header value cannot hold CR, LF or NUL", n.text),
            ));
        }
        words.push(w);
    }
    if words.is_empty() {
        return Err(RuleError::new(
            c.here(),
            format!("missing value after '{action} {}'", n.text),
        ));
    }
    Ok((n.text.clone(), words.join(" ")))
}

/// A log-format word without expressions: `%%` is a literal `%`.
fn literal(t: &Token) -> Result<String, RuleError> {
    let mut out = String::new();
    let mut chars = t.text.chars();
    while let Some(ch) = chars.next() {
        if ch == '%' && chars.next() != Some('%') {
            return Err(RuleError::new(
                t.at,
                format!("log-format expressions ('%') are not supported by this version in '{}'; write '%%' for a literal '%'", t.text),
            ));
        }
        out.push(ch);
    }
    Ok(out)
}

/// `return [status N] [content-type T] [string S]`.
pub(crate) fn ret(c: &mut Cursor<'_>) -> Result<HttpRequestAction, RuleError> {
    let (mut status, mut content_type, mut body) = (None, None, None);
    while !c.at_cond() {
        let t = c.next().expect("not at the end");
        let twice = || RuleError::new(t.at, format!("'{}' is given twice", t.text));
        match t.text.as_str() {
            "status" if status.is_some() => return Err(twice()),
            "status" => status = Some(http_status(c.expect("HTTP status after 'status'")?)?),
            "content-type" if content_type.is_some() => return Err(twice()),
            "content-type" => {
                let v = c.expect("content type after 'content-type'")?;
                if v.text.bytes().any(|b| b < 0x20 || b == 0x7f) {
                    return Err(RuleError::new(v.at, "control character in the content type"));
                }
                content_type = Some(v.text.clone())
            }
            "string" if body.is_some() => return Err(twice()),
            "string" => body = Some((t.at, c.expect("body after 'string'")?.text.clone())),
            "lf-string" | "file" | "lf-file" | "errorfile" | "errorfiles" | "hdr" | "default-errorfiles" => {
                return Err(RuleError::new(
                    t.at,
                    format!("'return' option '{}' is not supported by this version (supported: status, content-type, string)", t.text),
                ))
            }
            other => {
                return Err(RuleError::new(
                    t.at,
                    format!("unknown 'return' option '{other}' (expected one of: status, content-type, string, if, unless)"),
                ))
            }
        }
    }
    if let (Some((at, _)), None) = (&body, &content_type) {
        return Err(RuleError::new(*at, "'string' needs a 'content-type'"));
    }
    Ok(HttpRequestAction::Return {
        status: status.unwrap_or(200),
        content_type,
        body: body.map(|b| b.1),
    })
}

/// `redirect location|prefix|scheme VALUE [code N] [drop-query] [append-slash]`.
pub(crate) fn redirect(c: &mut Cursor<'_>) -> Result<HttpRequestAction, RuleError> {
    let k = c.expect("redirect type (expected one of: location, prefix, scheme)")?;
    let kind = match k.text.as_str() {
        "location" => RedirectKind::Location,
        "prefix" => RedirectKind::Prefix,
        "scheme" => RedirectKind::Scheme,
        other => {
            return Err(RuleError::new(
                k.at,
                format!(
                    "unknown redirect type '{other}' (expected one of: location, prefix, scheme)"
                ),
            ))
        }
    };
    let v = c.expect(&format!("value after 'redirect {}'", k.text))?;
    let value = literal(v)?;
    let bad_byte = value
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'"');
    if value.is_empty() || bad_byte {
        return Err(RuleError::new(
            v.at,
            format!("invalid redirect {} '{}'", k.text, v.text),
        ));
    }
    if kind == RedirectKind::Scheme
        && !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(RuleError::new(v.at, format!("invalid scheme '{}'", v.text)));
    }
    let mut r = Redirect {
        kind,
        value,
        code: 302,
        drop_query: false,
        append_slash: false,
    };
    let mut code_seen = false;
    while !c.at_cond() {
        let t = c.next().expect("not at the end");
        match t.text.as_str() {
            "code" if code_seen => {
                return Err(RuleError::new(t.at, "'code' is given twice"))
            }
            "code" => {
                code_seen = true;
                let n = c.expect("redirect status after 'code'")?;
                r.code = match n.text.as_str() {
                    "301" => 301,
                    "302" => 302,
                    "303" => 303,
                    "307" => 307,
                    "308" => 308,
                    _ => {
                        return Err(RuleError::new(
                            n.at,
                            format!("invalid redirect code '{}' (expected one of: 301, 302, 303, 307, 308)", n.text),
                        ))
                    }
                };
            }
            "drop-query" => r.drop_query = true,
            "append-slash" => r.append_slash = true,
            "set-cookie" | "clear-cookie" | "ignore-empty" => {
                return Err(RuleError::new(
                    t.at,
                    format!("redirect option '{}' is not supported by this version (supported: code, drop-query, append-slash)", t.text),
                ))
            }
            other => {
                return Err(RuleError::new(
                    t.at,
                    format!("unknown redirect option '{other}' (expected one of: code, drop-query, append-slash, if, unless)"),
                ))
            }
        }
    }
    Ok(HttpRequestAction::Redirect(r))
}
