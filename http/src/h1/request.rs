//! Request heads: RFC 9112 §3 strictly, with the proxy's framing decisions.

use super::chars::{valid_authority, valid_path_query};
use super::fields::{Fields, Span};
use super::semantics::{self, Codings};
use super::{ConnectionOptions, Framing, Limits, Parsed, Reject, Version};

/// A request method, with the ones the proxy treats specially named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: the response has no body whatever its fields say.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// OPTIONS (the only method with an asterisk-form target).
    Options,
    /// CONNECT: not implemented by this reverse proxy (501).
    Connect,
    /// Any other token.
    Other,
}

impl Method {
    /// Whether a request with this method may be sent again when it got
    /// no answer (RFC 9110 §9.2.2; TRACE falls under `Other`, refused).
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get | Method::Head | Method::Put | Method::Delete | Method::Options
        )
    }

    fn of(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }
}

/// A parsed, validated request head.
#[derive(Clone, Debug)]
pub struct Request {
    /// The header fields (and the bytes of the start line).
    pub fields: Fields,
    /// The method.
    pub method: Method,
    method_span: Span,
    target: Span,
    path: Span,
    authority: Option<Span>,
    /// The version on the request line.
    pub version: Version,
    /// How the body is delimited (requests: none, a length or chunked).
    pub framing: Framing,
    /// The `Connection` options.
    pub connection: ConnectionOptions,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade`
    /// and an `Upgrade` field).
    pub upgrade: bool,
}

impl Request {
    /// The method as sent.
    pub fn method_str(&self) -> &str {
        self.text(self.method_span)
    }

    /// The request-target as sent.
    pub fn target(&self) -> &str {
        self.text(self.target)
    }

    /// The path, without the query string (`/` for an absolute-form target
    /// with an empty path, `*` for the asterisk form).
    pub fn path(&self) -> &str {
        match self.text(self.path) {
            "" => "/",
            p => p,
        }
    }

    /// The authority the request is for: that of an absolute-form target,
    /// which overrides Host (RFC 9112 §3.2.2), else the Host field.
    pub fn host(&self) -> Option<&str> {
        match self.authority {
            Some(a) => Some(self.text(a)),
            None => self.fields.get_str("host"),
        }
    }

    /// Whether the target was in absolute form (`http://host/path`).
    pub fn is_absolute_form(&self) -> bool {
        self.authority.is_some()
    }

    /// Whether the client wants the connection kept open after the response.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.connection.close,
            Version::Http10 => self.connection.keep_alive && !self.connection.close,
        }
    }

    fn text(&self, s: Span) -> &str {
        // Start-line parts were checked to be ASCII.
        std::str::from_utf8(self.fields.bytes(s)).unwrap_or("")
    }
}

/// Parses a request head at the start of `buf`. Empty lines before the
/// request line are skipped (RFC 9112 §2.2) and count in the returned length.
/// `Partial` only while nothing seen so far is wrong: a bad request line is
/// refused as soon as it is complete, a bare LF as soon as it arrives.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed<Request>, Reject> {
    let mut off = 0;
    while buf[off..].starts_with(b"\r\n") {
        off += 2;
    }
    if off > limits.max_head {
        return Err(Reject::bad("empty lines instead of a request"));
    }
    let window = &buf[off..buf.len().min(off + limits.max_head)];
    // Only the head is judged: the body after it may hold any byte.
    let end = memchr::memmem::find(window, b"\r\n\r\n");
    let region = end.map_or(window, |e| &window[..e + 4]);
    semantics::check_line_endings(region).map_err(Reject::bad)?;
    let Some(line_end) = memchr::memchr(b'\n', region) else {
        if window.len() >= limits.max_head {
            return Err(Reject {
                status: 414,
                reason: "request line too long",
            });
        }
        return Ok(Parsed::Partial);
    };
    // LF always follows a CR here (checked above).
    check_request_line(&region[..line_end - 1])?;
    if end.is_none() {
        if window.len() >= limits.max_head {
            return Err(Reject {
                status: 431,
                reason: "request head too large",
            });
        }
        return Ok(Parsed::Partial);
    }
    let req = parse_head(region, limits)?;
    Ok(Parsed::Complete(req, off + region.len()))
}

/// `method SP request-target SP HTTP-version`, single spaces, before the
/// rest of the head arrives: a request without a version (HTTP/0.9) or with
/// an unknown one is refused here.
fn check_request_line(line: &[u8]) -> Result<(), Reject> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::bad(if memchr::memchr(b' ', line).is_some() {
            "malformed request line"
        } else {
            "HTTP/0.9 or malformed request line"
        }));
    };
    if target.is_empty() || !super::chars::is_token(method) {
        return Err(Reject::bad("malformed request line"));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(Reject::bad("unsupported HTTP version"));
    }
    Ok(())
}

fn parse_head(head: &[u8], limits: &Limits) -> Result<Request, Reject> {
    let mut stack = [httparse::EMPTY_HEADER; super::STACK_HEADERS];
    let mut heap = Vec::new();
    let headers = super::header_slots(&mut stack, &mut heap, limits.max_headers);
    let mut req = httparse::Request::new(headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(Reject::bad("malformed head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject {
                status: 431,
                reason: "too many header fields",
            })
        }
        Err(httparse::Error::HeaderName) => {
            return Err(Reject::bad(
                "invalid field name (not a token, or whitespace before the colon)",
            ))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(Reject::bad("invalid byte in a field value"))
        }
        Err(httparse::Error::NewLine) => return Err(Reject::bad("obs-fold or bad line ending")),
        Err(_) => return Err(Reject::bad("malformed request line")),
    }
    let span = |s: &[u8]| Span::within(head, s);
    let method_str = req.method.unwrap_or_default();
    let target_str = req.path.unwrap_or_default();
    let version = match req.version {
        Some(1) => Version::Http11,
        _ => Version::Http10,
    };
    let method = Method::of(method_str);
    let method_span = span(method_str.as_bytes());
    let target = span(target_str.as_bytes());
    let mut fields = Fields::with_raw(head, req.headers.len());
    for h in req.headers.iter() {
        semantics::check_value(h.value).map_err(Reject::bad)?;
        fields.push_span(span(h.name.as_bytes()), span(h.value));
    }
    // The target: origin-form, absolute-form (http/https), asterisk-form
    // for OPTIONS; CONNECT's authority-form is not served.
    if method == Method::Connect {
        return Err(Reject {
            status: 501,
            reason: "CONNECT is not implemented",
        });
    }
    let t = target_str.as_bytes();
    let t0 = target.range().start;
    let (path, authority) = if t.first() == Some(&b'/') {
        if !valid_path_query(t) {
            return Err(Reject::bad("invalid character in the request target"));
        }
        let end = memchr::memchr(b'?', t).unwrap_or(t.len());
        (Span::new(t0..t0 + end), None)
    } else if t == b"*" {
        if method != Method::Options {
            return Err(Reject::bad("asterisk-form target without OPTIONS"));
        }
        (target, None)
    } else {
        let scheme_len = if t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://") {
            7
        } else if t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://") {
            8
        } else {
            return Err(Reject::bad("invalid request target"));
        };
        let rest = &t[scheme_len..];
        let auth_end = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let auth = &rest[..auth_end];
        if auth.is_empty() || !valid_authority(auth) {
            return Err(Reject::bad("invalid authority in the request target"));
        }
        let pq = &rest[auth_end..];
        if !pq.is_empty() && (pq[0] != b'/' && pq[0] != b'?' || !valid_path_query(pq)) {
            return Err(Reject::bad("invalid character in the request target"));
        }
        let a0 = t0 + scheme_len;
        let p0 = a0 + auth_end;
        let pend = p0 + memchr::memchr(b'?', pq).unwrap_or(pq.len());
        (Span::new(p0..pend), Some(Span::new(a0..a0 + auth_end)))
    };
    // Host: exactly one on HTTP/1.1 (RFC 9112 §3.2), at most one on 1.0,
    // and a valid authority.
    let hosts = fields.get_all("host").count();
    if hosts > 1 {
        return Err(Reject::bad("repeated Host"));
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(Reject::bad("missing Host"));
    }
    if let Some(h) = fields.get("host") {
        if !valid_authority(h) {
            return Err(Reject::bad("invalid Host"));
        }
    }
    // Framing (RFC 9112 §6.1-6.3): chunked last, never with a length, never
    // on HTTP/1.0.
    let length = semantics::content_length(&fields).map_err(Reject::bad)?;
    let mut unknown = false;
    let framing = match semantics::codings(&fields, &mut unknown) {
        Codings::Absent => match length {
            Some(n) => Framing::Length(n),
            None => Framing::None,
        },
        _ if version == Version::Http10 => {
            return Err(Reject::bad("Transfer-Encoding in an HTTP/1.0 request"))
        }
        _ if length.is_some() => {
            return Err(Reject::bad("both Content-Length and Transfer-Encoding"))
        }
        Codings::Chunked if unknown => {
            return Err(Reject {
                status: 501,
                reason: "unknown transfer coding",
            })
        }
        Codings::Chunked => Framing::Chunked,
        Codings::NotChunkedLast => return Err(Reject::bad("final transfer coding is not chunked")),
        Codings::ChunkedTwiceOrEarly => {
            return Err(Reject::bad("chunked applied twice or not last"))
        }
        Codings::Empty | Codings::Malformed => {
            return Err(Reject::bad("malformed Transfer-Encoding"))
        }
    };
    let connection = semantics::connection_options(&fields);
    let expect_continue = version == Version::Http11
        && fields
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let upgrade = version == Version::Http11 && connection.upgrade && fields.contains("upgrade");
    Ok(Request {
        fields,
        method,
        method_span,
        target,
        path,
        authority,
        version,
        framing,
        connection,
        expect_continue,
        upgrade,
    })
}
