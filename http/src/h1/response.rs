//! Response heads, as a proxy reads them: what would make the framing
//! ambiguous is refused (the client gets a 502), what is only untidy is
//! cleaned (whitespace before a colon removed, obs-fold replaced by spaces,
//! RFC 9112 §5.1-5.2).

use super::fields::{Fields, Span};
use super::semantics::{self, Codings};
use super::{ConnectionOptions, Framing, Limits, Parsed, Reject, Version};

/// A parsed, validated response head.
#[derive(Clone, Debug)]
pub struct Response {
    /// The header fields.
    pub fields: Fields,
    /// The version on the status line.
    pub version: Version,
    /// The status code, 100..=599.
    pub status: u16,
    reason: Span,
    /// How the body is delimited (depends on the request: see [`parse_response`]).
    pub framing: Framing,
    /// The `Connection` options.
    pub connection: ConnectionOptions,
}

impl Response {
    /// The reason phrase as sent (empty when it was not valid UTF-8).
    pub fn reason(&self) -> &str {
        std::str::from_utf8(self.fields.bytes(self.reason)).unwrap_or("")
    }

    /// An interim (1xx) response: the final one follows.
    pub fn is_interim(&self) -> bool {
        self.status < 200
    }

    /// Whether the server keeps the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        self.framing != Framing::UntilClose
            && match self.version {
                Version::Http11 => !self.connection.close,
                Version::Http10 => self.connection.keep_alive && !self.connection.close,
            }
    }
}

const fn bad_gateway(reason: &'static str) -> Reject {
    Reject {
        status: 502,
        reason,
    }
}

/// Parses a response head at the start of `buf`, for a request whose method
/// was HEAD when `head_request` is true (its response has no body).
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    head_request: bool,
) -> Result<Parsed<Response>, Reject> {
    let window = &buf[..buf.len().min(limits.max_head)];
    let end = memchr::memmem::find(window, b"\r\n\r\n");
    let region = end.map_or(window, |e| &window[..e + 4]);
    semantics::check_line_endings(region).map_err(bad_gateway)?;
    if end.is_none() {
        if window.len() >= limits.max_head {
            return Err(bad_gateway("response head too large"));
        }
        return Ok(Parsed::Partial);
    }
    let head = region;
    let mut stack = [httparse::EMPTY_HEADER; super::STACK_HEADERS];
    let mut heap = Vec::new();
    let headers = super::header_slots(&mut stack, &mut heap, limits.max_headers);
    let mut resp = httparse::Response::new(headers);
    let parsed = httparse::ParserConfig::default()
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .parse_response(&mut resp, head);
    match parsed {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(bad_gateway("malformed response head")),
        Err(httparse::Error::TooManyHeaders) => return Err(bad_gateway("too many header fields")),
        Err(httparse::Error::HeaderValue) => {
            return Err(bad_gateway("invalid byte in a response field value"))
        }
        Err(_) => return Err(bad_gateway("malformed response head")),
    }
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(bad_gateway("invalid status code"));
    }
    let version = match resp.version {
        Some(1) => Version::Http11,
        _ => Version::Http10,
    };
    let span = |s: &[u8]| Span::within(head, s);
    let reason = span(resp.reason.unwrap_or_default().as_bytes());
    // obs-fold: the CRLFs inside a folded value become spaces; any other
    // CR, LF or NUL makes the response unusable.
    let mut fields = Fields::with_raw(head, resp.headers.len());
    for h in resp.headers.iter() {
        let value = if memchr::memchr2(b'\r', b'\n', h.value).is_some() {
            let v: Vec<u8> = h
                .value
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect();
            semantics::check_value(&v).map_err(bad_gateway)?;
            fields.append(&v)
        } else {
            semantics::check_value(h.value).map_err(bad_gateway)?;
            span(h.value)
        };
        fields.push_span(span(h.name.as_bytes()), value);
    }
    let length = semantics::content_length(&fields).map_err(bad_gateway)?;
    let mut unknown = false;
    let codings = semantics::codings(&fields, &mut unknown);
    if codings != Codings::Absent && length.is_some() {
        return Err(bad_gateway("both Content-Length and Transfer-Encoding"));
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else {
        match codings {
            Codings::Absent => match length {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            },
            Codings::Chunked => Framing::Chunked,
            // Legal in a response: read until the server closes.
            Codings::NotChunkedLast => Framing::UntilClose,
            Codings::ChunkedTwiceOrEarly => return Err(bad_gateway("chunked applied twice")),
            Codings::Empty | Codings::Malformed => {
                return Err(bad_gateway("malformed Transfer-Encoding"))
            }
        }
    };
    let connection = semantics::connection_options(&fields);
    Ok(Parsed::Complete(
        Response {
            fields,
            version,
            status,
            reason,
            framing,
            connection,
        },
        head.len(),
    ))
}
