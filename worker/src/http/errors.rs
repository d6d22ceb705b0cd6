//! corral's own answers: error responses with a short body (HAProxy's set of
//! codes), `http-request return`, `deny` and `redirect`.

use corral_config::{Redirect, RedirectKind};
use corral_http::h1::encode;
use corral_http::h1::{Request, Version};

/// The body of corral's error page for `status`.
fn error_text(status: u16) -> &'static str {
    match status {
        400 => "The request could not be understood: it is not valid HTTP/1.1.",
        403 => "The request was denied by the proxy's rules.",
        408 => "The request did not arrive in time.",
        414 => "The request line is too long.",
        429 => "Too many requests: slow down.",
        431 => "The request head is too large.",
        500 => "The proxy failed to handle the request.",
        501 => "The proxy does not implement what the request asks for.",
        502 => "The server's answer was invalid, or the server could not be reached.",
        503 => "No server is available to handle this request.",
        504 => "The server did not answer in time.",
        _ => "The request could not be served.",
    }
}

/// Writes an error response (`Connection: close` when `close`; the body
/// left out, its length kept, for a HEAD request).
pub(crate) fn error_response(
    out: &mut Vec<u8>,
    status: u16,
    close: bool,
    client: Version,
    head_request: bool,
) {
    let reason = encode::reason_phrase(status);
    let body = format!(
        "<html><body><h1>{status} {reason}</h1>\n{}\n</body></html>\n",
        error_text(status)
    );
    encode::status_line(out, Version::Http11, status, reason);
    let with_body = has_body(status);
    if with_body {
        encode::field(out, b"Content-Length", body.len().to_string().as_bytes());
    }
    encode::field(out, b"Cache-Control", b"no-cache");
    if with_body {
        encode::field(out, b"Content-Type", b"text/html");
    }
    connection_field(out, close, client);
    encode::end_head(out);
    if with_body && !head_request {
        out.extend_from_slice(body.as_bytes());
    }
}

/// Whether a response with `status` may carry a body (and its length):
/// never 1xx, 204 or 304 (RFC 9110 §6.4.1), whatever a rule asked for.
fn has_body(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

/// `http-request return`: the status, and the body with its type if given.
pub(crate) fn return_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: Option<&str>,
    body: Option<&str>,
    close: bool,
    client: Version,
    head_request: bool,
) {
    encode::status_line(out, Version::Http11, status, "");
    let body = if has_body(status) {
        body.unwrap_or("")
    } else {
        ""
    };
    if has_body(status) {
        encode::field(out, b"Content-Length", body.len().to_string().as_bytes());
        if let Some(t) = content_type {
            encode::field(out, b"Content-Type", t.as_bytes());
        }
    }
    connection_field(out, close, client);
    encode::end_head(out);
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
}

/// `http-request redirect`: the 3xx and its `Location`.
pub(crate) fn redirect_response(out: &mut Vec<u8>, r: &Redirect, req: &Request, close: bool) {
    let location = location(r, req);
    encode::status_line(out, Version::Http11, r.code, "");
    encode::field(out, b"Content-Length", b"0");
    encode::field(out, b"Location", location.as_bytes());
    encode::field(out, b"Cache-Control", b"no-cache");
    connection_field(out, close, req.version);
    encode::end_head(out);
}

/// The `Location` of a redirect, as HAProxy builds it.
pub(crate) fn location(r: &Redirect, req: &Request) -> String {
    // The request's URI in origin form (path and query), absolute-form
    // targets reduced to it.
    let target = req.target();
    let uri = if req.is_absolute_form() {
        let p = req.path();
        match target.find('?') {
            Some(q) => format!("{p}{}", &target[q..]),
            None => p.to_string(),
        }
    } else {
        target.to_string()
    };
    let mut uri = if r.drop_query {
        uri.split('?').next().unwrap_or("").to_string()
    } else {
        uri
    };
    if r.append_slash && !uri.ends_with('/') {
        // The slash goes after the path, before a query that was kept.
        match uri.find('?') {
            Some(q) => uri.insert(q, '/'),
            None => uri.push('/'),
        }
    }
    match r.kind {
        RedirectKind::Location => r.value.clone(),
        RedirectKind::Prefix if r.value == "/" => uri,
        RedirectKind::Prefix => format!("{}{}", r.value.trim_end_matches('/'), uri),
        RedirectKind::Scheme => format!("{}://{}{}", r.value, req.host().unwrap_or(""), uri),
    }
}

/// `Connection: close` when closing; `keep-alive` for a 1.0 client that stays.
pub(crate) fn connection_field(out: &mut Vec<u8>, close: bool, client: Version) {
    if close {
        encode::field(out, b"Connection", b"close");
    } else if client == Version::Http10 {
        encode::field(out, b"Connection", b"keep-alive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_http::h1::{parse_request, Limits, Parsed};

    fn req(raw: &str) -> Request {
        match parse_request(raw.as_bytes(), &Limits::default()) {
            Ok(Parsed::Complete(r, _)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn redirect(kind: RedirectKind, value: &str, drop_query: bool, append_slash: bool) -> Redirect {
        Redirect {
            kind,
            value: value.into(),
            code: 302,
            drop_query,
            append_slash,
        }
    }

    #[test]
    fn locations() {
        let r = req("GET /a/b?x=1 HTTP/1.1\r\nHost: h.example\r\n\r\n");
        let loc = |k, v, d, s| location(&redirect(k, v, d, s), &r);
        assert_eq!(
            loc(RedirectKind::Location, "/login", false, false),
            "/login"
        );
        assert_eq!(
            loc(RedirectKind::Prefix, "https://new", false, false),
            "https://new/a/b?x=1"
        );
        assert_eq!(
            loc(RedirectKind::Prefix, "https://new/", true, false),
            "https://new/a/b"
        );
        assert_eq!(loc(RedirectKind::Prefix, "/", true, true), "/a/b/");
        assert_eq!(loc(RedirectKind::Prefix, "/", false, true), "/a/b/?x=1");
        assert_eq!(
            loc(RedirectKind::Scheme, "https", false, false),
            "https://h.example/a/b?x=1"
        );
    }

    #[test]
    fn bodiless_statuses_get_no_body_or_length() {
        for status in [204, 304] {
            let mut out = Vec::new();
            return_response(
                &mut out,
                status,
                Some("text/plain"),
                Some("x"),
                false,
                Version::Http11,
                false,
            );
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n\r\n"), "{text}");
            assert!(!text.contains("Content-Length"), "{text}");
            let mut out = Vec::new();
            error_response(&mut out, status, false, Version::Http11, false);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.ends_with("\r\n\r\n") && !text.contains("Content-Length"),
                "{text}"
            );
        }
    }

    #[test]
    fn error_pages_are_complete_messages() {
        let mut out = Vec::new();
        error_response(&mut out, 503, true, Version::Http11, false);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.contains("Connection: close"));
    }
}
