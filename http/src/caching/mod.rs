//! What a shared cache may store and serve (an RFC 9111 subset, as
//! HAProxy's cache, plus what it lacks): pure functions of heads and a
//! clock, so the worker's cache path and the tests share one judge.
//!
//! * Stored: responses to GET with status 200, 203, 204, 300, 301, 308,
//!   404 or 410, with explicit freshness (`s-maxage`, `max-age`,
//!   `Expires`) or, lacking it, a validator (`ETag`, `Last-Modified`); the
//!   cache's `max_age` bounds every lifetime.
//! * Never stored: `no-store`, `no-cache` and `private` responses, a
//!   response carrying `Set-Cookie` (deliberately stricter than HAProxy
//!   2.6, which stores it), a response to a request carrying
//!   `Authorization` or `Cache-Control: no-store`, and `Vary: *`.
//! * A request with `Cache-Control: no-cache`, `max-age=0` or `Pragma:
//!   no-cache` is not answered from the cache (its response may refresh the
//!   entry); `max-age=N` and `min-fresh=N` narrow what it accepts, and
//!   `only-if-cached` gets a 504 rather than a trip to the server.
//! * Stale objects are never served, so `must-revalidate` always holds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::h1::{Fields, Method, Request, Response};

/// Statuses a cache stores (HAProxy's list, RFC 9110 §15.1's heuristically
/// cacheable ones).
pub const STORABLE: &[u16] = &[200, 203, 204, 300, 301, 308, 404, 410];

/// What the cache may do with a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Answer it from the cache if an object is fresh.
    pub lookup: bool,
    /// Store its response, if that is storable.
    pub store: bool,
    /// `max-age=N`: an object older than N s does not answer it.
    pub max_age: Option<u64>,
    /// `min-fresh=N`: an object fresh for less than N s more does not.
    pub min_fresh: Option<u64>,
    /// `only-if-cached`: a miss is answered 504, not forwarded.
    pub only_if_cached: bool,
}

/// How a request may use the cache.
pub fn request_policy(req: &Request) -> RequestPolicy {
    let method = matches!(req.method, Method::Get | Method::Head);
    if !method || req.fields.contains("authorization") || req.upgrade {
        return RequestPolicy::default();
    }
    let cc = directives(&req.fields);
    let secs = |name: &str| {
        cc.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref()?.parse::<u64>().ok())
    };
    let max_age = secs("max-age");
    let no_cache = cc.iter().any(|(k, _)| k == "no-cache")
        || max_age == Some(0)
        || req.fields.has_token("pragma", "no-cache");
    let no_store = cc.iter().any(|(k, _)| k == "no-store");
    RequestPolicy {
        lookup: !no_cache && !no_store,
        store: req.method == Method::Get && !no_store,
        max_age,
        min_fresh: secs("min-fresh"),
        only_if_cached: cc.iter().any(|(k, _)| k == "only-if-cached"),
    }
}

/// The `Cache-Control` directives of `fields`, names lowercased, values
/// unquoted.
pub fn directives(fields: &Fields) -> Vec<(String, Option<String>)> {
    fields
        .list_items("cache-control")
        .filter_map(|item| {
            let item = std::str::from_utf8(item).ok()?;
            let (k, v) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"').to_string())),
                None => (item.trim(), None),
            };
            Some((k.to_ascii_lowercase(), v))
        })
        .collect()
}

/// How long a stored response stays fresh, and the age it came with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Unix ms when it stops being fresh.
    pub expires_ms: u64,
    /// Its age (s) when received (RFC 9111 §4.2.3's corrected initial age).
    pub age: u32,
}

/// Why a response is not stored (for the debug log and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// Its status is not one a cache stores.
    Status,
    /// `no-store`, `no-cache` or `private`.
    Directive,
    /// It sets a cookie.
    SetCookie,
    /// `Vary: *`, or a `Vary` while `process_vary` is off.
    Vary,
    /// Neither explicit freshness nor a validator.
    NoFreshness,
    /// Already stale when it arrived.
    Stale,
}

/// Whether `resp` may be stored at unix ms `now_ms`, and for how long, with
/// `max_age` bounding its lifetime.
pub fn freshness(resp: &Response, now_ms: u64, max_age: Duration) -> Result<Freshness, NotStored> {
    if !STORABLE.contains(&resp.status) {
        return Err(NotStored::Status);
    }
    let f = &resp.fields;
    let cc = directives(f);
    if cc
        .iter()
        .any(|(k, _)| matches!(k.as_str(), "no-store" | "no-cache" | "private"))
    {
        return Err(NotStored::Directive);
    }
    if f.contains("set-cookie") {
        return Err(NotStored::SetCookie);
    }
    let secs = |name: &str| {
        cc.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref()?.parse::<u64>().ok())
    };
    let date_ms = f.get_str("date").and_then(parse_date).unwrap_or(now_ms);
    let lifetime_s = match secs("s-maxage").or_else(|| secs("max-age")) {
        Some(s) => s,
        None => match f.get("expires") {
            // An invalid Expires means already expired (RFC 9111 §5.3).
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(parse_date)
                .map_or(0, |e| e.saturating_sub(date_ms) / 1000),
            None if f.contains("etag") || f.contains("last-modified") => max_age.as_secs(),
            None => return Err(NotStored::NoFreshness),
        },
    };
    let lifetime_s = lifetime_s.min(max_age.as_secs());
    let apparent = now_ms.saturating_sub(date_ms) / 1000;
    let age_field = f
        .get_str("age")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let age = apparent.max(age_field);
    if lifetime_s <= age {
        return Err(NotStored::Stale);
    }
    Ok(Freshness {
        expires_ms: now_ms + (lifetime_s - age) * 1000,
        age: age.min(u32::MAX as u64) as u32,
    })
}

/// The request fields a response varies on, lowercased, sorted, deduplicated
/// (`Ok(empty)` without `Vary`); `Err` for `Vary: *`.
pub fn vary_names(resp: &Response) -> Result<Vec<String>, NotStored> {
    let mut names = Vec::new();
    for item in resp.fields.list_items("vary") {
        if item == b"*" {
            return Err(NotStored::Vary);
        }
        names.push(String::from_utf8_lossy(item).to_ascii_lowercase());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The value of request field `name` a variant is keyed by: for
/// `accept-encoding` the codings accepted (q > 0), lowercased, sorted, so
/// `gzip, br` and `br,gzip` share an object; for others the values as
/// sent, joined.
pub fn vary_value(fields: &Fields, name: &str) -> Vec<u8> {
    if name.eq_ignore_ascii_case("accept-encoding") {
        let mut codings: Vec<String> = fields
            .list_items("accept-encoding")
            .filter_map(|item| {
                let item = std::str::from_utf8(item).ok()?.to_ascii_lowercase();
                let mut parts = item.split(';');
                let coding = parts.next()?.trim().to_string();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                (!refused && !coding.is_empty()).then_some(coding)
            })
            .collect();
        codings.sort();
        codings.dedup();
        return codings.join(",").into_bytes();
    }
    let mut out = Vec::new();
    for (i, v) in fields.get_all(name).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v);
    }
    out
}

/// Whether a conditional request is answered 304 by a stored response
/// with these fields (RFC 9110 §13.1.2-3: `If-None-Match` first, weak
/// comparison; else `If-Modified-Since` against `Last-Modified`).
pub fn not_modified(req: &Request, stored: &Fields) -> bool {
    let inm: Vec<&[u8]> = req.fields.list_items("if-none-match").collect();
    if !inm.is_empty() {
        let Some(etag) = stored.get("etag") else {
            return false;
        };
        let weak = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
        return inm.iter().any(|t| *t == b"*" || weak(t) == weak(etag));
    }
    let (Some(ims), Some(lm)) = (
        req.fields.get_str("if-modified-since").and_then(parse_date),
        stored.get_str("last-modified").and_then(parse_date),
    ) else {
        return false;
    };
    lm <= ims
}

/// Fields a 304 carries from the stored response (RFC 9110 §15.4.5).
pub const NOT_MODIFIED_FIELDS: &[&str] = &[
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "last-modified",
    "vary",
];

/// An HTTP-date as unix ms.
pub fn parse_date(s: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// Unix ms as an IMF-fixdate.
pub fn format_date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// Wall-clock unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
