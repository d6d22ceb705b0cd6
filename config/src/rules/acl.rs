//! ACL tests: `FETCH [FLAGS] [OPERATOR] VALUE...`, as on `acl` lines and
//! inside `{ ... }` in conditions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ast::{AclTest, Cidr, Fetch, IntOp, Matcher, Regex, ScData, StrMatch};
use super::lexer::Token;
use super::RuleError;
use crate::walk::did_you_mean;

/// Fetches without a stick counter, as listed in messages.
const PLAIN: &[&str] = &[
    "src", "dst_port", "path", "path_beg", "path_end", "url", "hdr", "method",
];

/// What kind of sample a fetch gives, which decides how values are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ip,
    Int,
    Str,
}

/// Parses one test from `toks` (the fetch and what follows); `end` is the
/// offset missing words are reported at.
pub(crate) fn parse_test(toks: &[Token], end: usize) -> Result<AclTest, RuleError> {
    let Some((first, rest)) = toks.split_first() else {
        return Err(RuleError::new(end, "missing fetch"));
    };
    let (fetch, implied) = parse_fetch(first)?;
    let kind = match fetch {
        Fetch::Src => Kind::Ip,
        Fetch::DstPort | Fetch::Sc { .. } => Kind::Int,
        _ => Kind::Str,
    };
    let name = first.text.as_str();
    let mut ignore_case = false;
    let mut method: Option<(StrMatch, bool)> = implied.map(|m| (m, false));
    let mut i = 0;
    while let Some(t) = rest.get(i) {
        let is_flag = !t.quoted
            && t.text.starts_with('-')
            && t.text[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '-');
        if !is_flag {
            break;
        }
        i += 1;
        let not_string = || {
            RuleError::new(
                t.at,
                format!(
                    "flag '{}' only applies to string fetches ('{name}' gives {})",
                    t.text,
                    if kind == Kind::Ip {
                        "an address"
                    } else {
                        "an integer"
                    }
                ),
            )
        };
        match t.text.as_str() {
            "--" => break,
            "-i" if kind != Kind::Str => return Err(not_string()),
            "-i" => ignore_case = true,
            "-m" if kind != Kind::Str => return Err(not_string()),
            "-m" if implied.is_some() => {
                return Err(RuleError::new(
                    t.at,
                    format!(
                        "'{name}' already matches with -m {}; use 'path -m ...' instead",
                        if implied == Some(StrMatch::Begin) {
                            "beg"
                        } else {
                            "end"
                        }
                    ),
                ))
            }
            "-m" => {
                let Some(m) = rest.get(i) else {
                    return Err(RuleError::new(end, "missing match method after '-m' (expected one of: str, beg, end, sub, reg)"));
                };
                i += 1;
                method = Some(match m.text.as_str() {
                    "str" => (StrMatch::Exact, false),
                    "beg" => (StrMatch::Begin, false),
                    "end" => (StrMatch::End, false),
                    "sub" => (StrMatch::Sub, false),
                    "reg" => (StrMatch::Exact, true),
                    other => {
                        return Err(RuleError::new(
                            m.at,
                            format!("unsupported match method '{other}' (expected one of: str, beg, end, sub, reg)"),
                        ))
                    }
                });
            }
            "-f" | "-M" | "-n" | "-u" => {
                return Err(RuleError::new(
                    t.at,
                    format!(
                        "flag '{}' is not supported by this version (supported: -i, -m)",
                        t.text
                    ),
                ))
            }
            other => {
                return Err(RuleError::new(
                    t.at,
                    format!("unknown flag '{other}' (expected -i, -m or --)"),
                ))
            }
        }
    }
    let values = &rest[i..];
    let missing = || RuleError::new(end, format!("missing value for '{name}'"));
    let matcher = match kind {
        Kind::Ip => {
            if values.is_empty() {
                return Err(missing());
            }
            let nets = values
                .iter()
                .map(|v| {
                    cidr(&v.text).ok_or_else(|| {
                        RuleError::new(
                            v.at,
                            format!("invalid address '{}' for '{name}' (expected an IPv4 or IPv6 address or network, e.g. 10.0.0.0/8)", v.text),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Matcher::Ip(nets)
        }
        Kind::Int => {
            let (op, values) = match values.split_first() {
                Some((o, rest)) if !o.quoted => match int_op(&o.text) {
                    Some(op) => (op, rest),
                    None => (IntOp::Eq, values),
                },
                _ => (IntOp::Eq, values),
            };
            if values.is_empty() {
                return Err(missing());
            }
            let ints = values
                .iter()
                .map(|v| {
                    v.text.parse::<i64>().map_err(|_| {
                        RuleError::new(
                            v.at,
                            format!("invalid integer '{}' for '{name}' (expected an integer, optionally after one of: eq, ge, gt, le, lt)", v.text),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Matcher::Int { op, values: ints }
        }
        Kind::Str => {
            if values.is_empty() {
                return Err(missing());
            }
            match method {
                Some((_, true)) => {
                    let res = values
                        .iter()
                        .map(|v| {
                            Regex::new(&v.text, ignore_case).map_err(|e| {
                                RuleError::new(v.at, format!("invalid regex '{}': {e}", v.text))
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Matcher::Regex(res)
                }
                m => Matcher::Str {
                    kind: m.map_or(StrMatch::Exact, |m| m.0),
                    ignore_case,
                    values: values.iter().map(|v| v.text.clone()).collect(),
                },
            }
        }
    };
    Ok(AclTest { fetch, matcher })
}

/// `eq ge gt le lt`.
fn int_op(s: &str) -> Option<IntOp> {
    Some(match s {
        "eq" => IntOp::Eq,
        "ge" => IntOp::Ge,
        "gt" => IntOp::Gt,
        "le" => IntOp::Le,
        "lt" => IntOp::Lt,
        _ => return None,
    })
}

/// Splits `name(arg)` into its name and argument.
pub(crate) fn call(s: &str) -> Result<(&str, Option<&str>), String> {
    match s.split_once('(') {
        None => Ok((s, None)),
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(arg) if !arg.contains(['(', ')']) => Ok((name, Some(arg))),
            _ => Err(format!("invalid '{s}': expected NAME or NAME(ARGUMENT)")),
        },
    }
}

/// A fetch, and the match method its name implies (`path_beg`, `path_end`).
fn parse_fetch(t: &Token) -> Result<(Fetch, Option<StrMatch>), RuleError> {
    let err = |m: String| RuleError::new(t.at, m);
    let (name, arg) = call(&t.text).map_err(err)?;
    let no_arg = |f: Fetch| match arg {
        None => Ok(f),
        Some(_) => Err(err(format!("fetch '{name}' takes no argument"))),
    };
    match name {
        "src" => return Ok((no_arg(Fetch::Src)?, None)),
        "dst_port" => return Ok((no_arg(Fetch::DstPort)?, None)),
        "path" => return Ok((no_arg(Fetch::Path)?, None)),
        "path_beg" => return Ok((no_arg(Fetch::Path)?, Some(StrMatch::Begin))),
        "path_end" => return Ok((no_arg(Fetch::Path)?, Some(StrMatch::End))),
        "url" => return Ok((no_arg(Fetch::Url)?, None)),
        "method" => return Ok((no_arg(Fetch::Method)?, None)),
        "hdr" | "req.hdr" => return Ok((Fetch::Hdr(header_arg(name, arg).map_err(err)?), None)),
        _ => {}
    }
    if let Some(data) = name.strip_prefix("sc_").and_then(sc_data) {
        let slot = match arg {
            Some(n @ ("0" | "1" | "2")) => n.as_bytes()[0] - b'0',
            Some(a) if a.contains(',') => {
                return Err(err(format!(
                "a table argument to '{name}' is not supported by this version: write '{name}(N)'"
            )))
            }
            _ => {
                return Err(err(format!(
                    "'{name}' needs a stick counter number: {name}(0), {name}(1) or {name}(2)"
                )))
            }
        };
        return Ok((Fetch::Sc { slot, data }, None));
    }
    if let Some((slot, rest)) = sc_prefix(name) {
        if let Some(data) = sc_data(rest) {
            if slot > 2 {
                return Err(err(format!(
                    "stick counter 'sc{slot}' does not exist (expected sc0, sc1 or sc2)"
                )));
            }
            return Ok((no_arg(Fetch::Sc { slot, data })?, None));
        }
    }
    Err(err(unknown_fetch(name)))
}

/// `scN_` at the start of `name`: (N, what follows).
fn sc_prefix(name: &str) -> Option<(u8, &str)> {
    let rest = name.strip_prefix("sc")?;
    let (n, rest) = rest.split_once('_')?;
    Some((n.parse().ok()?, rest))
}

/// The counter named by an `sc` fetch suffix (`conn_rate`, `get_gpc0`, ...).
fn sc_data(suffix: &str) -> Option<ScData> {
    ScData::ALL.into_iter().find(|d| d.fetch_name() == suffix)
}

/// The header name of `hdr(NAME)`.
fn header_arg(name: &str, arg: Option<&str>) -> Result<String, String> {
    match arg {
        Some(a) if a.contains(',') => Err(format!(
            "'{name}' with an occurrence argument is not supported by this version: write {name}(NAME)"
        )),
        Some(a) if is_token(a) => Ok(a.to_string()),
        Some(a) if !a.is_empty() => Err(format!("invalid header name '{a}' in '{name}({a})'")),
        _ => Err(format!("'{name}' needs a header name: {name}(NAME)")),
    }
}

/// True for a valid HTTP header name (an RFC 9110 token).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `unknown fetch 'X'` with the closest known fetch, or what exists.
fn unknown_fetch(name: &str) -> String {
    let sc = |p: &str| ScData::ALL.map(|d| format!("{p}{}", d.fetch_name()));
    let mut all: Vec<String> = PLAIN.iter().map(|s| s.to_string()).collect();
    for p in ["sc0_", "sc1_", "sc2_", "sc_"] {
        all.extend(sc(p));
    }
    let hint = did_you_mean(name, all.iter().map(String::as_str));
    if !hint.is_empty() {
        return format!("unknown fetch '{name}'{hint}");
    }
    if let Some((slot, _)) = sc_prefix(name).filter(|(n, _)| *n <= 2) {
        let names = sc(&format!("sc{slot}_"));
        return format!(
            "unknown fetch '{name}' (expected one of: {})",
            names.join(", ")
        );
    }
    format!(
        "unknown fetch '{name}' (expected one of: src, dst_port, path, path_beg, path_end, url, hdr(NAME), method, or a stick counter fetch such as sc0_conn_rate or sc_conn_rate(0))"
    )
}

/// An address or network: `10.1.2.3`, `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, `::1`, `2001:db8::/32`.
pub(crate) fn cidr(s: &str) -> Option<Cidr> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match len {
        None => max,
        Some(l) if l.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty() => {
            l.parse::<u8>().ok().filter(|&p| p <= max)?
        }
        Some(l) if addr.is_ipv4() => {
            let m = u32::from(l.parse::<Ipv4Addr>().ok()?);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return None;
            }
            m.leading_ones() as u8
        }
        Some(_) => return None,
    };
    let addr = match addr {
        IpAddr::V4(v) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v) & mask))
        }
        IpAddr::V6(v) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v) & mask))
        }
    };
    Some(Cidr { addr, prefix })
}
