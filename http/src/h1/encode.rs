//! Writing heads and chunk framing back out, and the hop-by-hop rule that
//! decides which received fields go on.

use super::fields::Fields;
use super::{Framing, Version};

/// The fields that belong to one connection and are not forwarded (RFC
/// 9110 §7.6.1): `Connection` and the fields it names, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, and `Upgrade` unless the protocol switches.
/// A `Connection` naming Content-Length, Transfer-Encoding or Host strips
/// none of them: the framing and the routing are the proxy's own.
///
/// A proxy applies it in two steps: [`HopByHop::strip_named`] on the
/// received head, before its rules add fields (a peer naming
/// `X-Forwarded-For` in `Connection` must not remove the one corral adds),
/// and [`HopByHop::fixed`] when the head is written.
#[derive(Clone, Debug, Default)]
pub struct HopByHop {
    named: Vec<Vec<u8>>,
    keep_upgrade: bool,
}

const NEVER_STRIPPED: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"host"];
const ALWAYS_STRIPPED: [&[u8]; 4] = [b"connection", b"keep-alive", b"proxy-connection", b"te"];

impl HopByHop {
    /// The hop-by-hop fields of `fields`; `switching` keeps `Upgrade`.
    pub fn of(fields: &Fields, switching: bool) -> HopByHop {
        let named = fields
            .list_items("connection")
            .map(|t| t.to_ascii_lowercase())
            .filter(|t| !NEVER_STRIPPED.contains(&t.as_slice()))
            .collect();
        HopByHop {
            named,
            keep_upgrade: switching,
        }
    }

    /// The fixed set only (no field named by `Connection`): for a head
    /// whose named fields [`HopByHop::strip_named`] already removed.
    pub fn fixed(switching: bool) -> HopByHop {
        HopByHop {
            named: Vec::new(),
            keep_upgrade: switching,
        }
    }

    /// Removes from a received head the fields its `Connection` names
    /// (except `Upgrade`, which the writer decides on, and the ones never
    /// stripped). Returns how many were removed.
    pub fn strip_named(fields: &mut Fields) -> usize {
        let named: Vec<Vec<u8>> = HopByHop::of(fields, false)
            .named
            .into_iter()
            .filter(|n| n != b"upgrade" && n != b"connection")
            .collect();
        if named.is_empty() {
            return 0;
        }
        fields.remove_where(|n| named.iter().any(|x| n.eq_ignore_ascii_case(x)))
    }

    /// Whether field `name` is stripped from this hop.
    pub fn strips(&self, name: &[u8]) -> bool {
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if NEVER_STRIPPED.iter().any(|n| is(n)) {
            return false;
        }
        if self.keep_upgrade && is(b"upgrade") {
            return false;
        }
        ALWAYS_STRIPPED.iter().any(|n| is(n)) || is(b"upgrade") || self.named.iter().any(|n| is(n))
    }
}

/// Whether `name` is one of the fields that frame a message's body
/// (Content-Length, Transfer-Encoding): a proxy writes them from the framing
/// it decided ([`framing_fields`]), never as received.
pub fn is_framing_field(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding")
}

/// The framing fields of a message framed as `framing`: one
/// `Content-Length: N`, or one `Transfer-Encoding` listing the received
/// codings (`fields`') with `chunked` last; nothing for the other framings.
/// Whatever duplicates, empty elements or odd spacing the peer sent, the
/// next hop reads the framing this proxy read.
pub fn framing_fields(out: &mut Vec<u8>, framing: Framing, fields: &Fields) {
    match framing {
        Framing::Length(n) => {
            let mut v = Vec::with_capacity(20);
            push_u64(&mut v, n);
            field(out, b"Content-Length", &v);
        }
        Framing::Chunked => {
            let mut v = Vec::new();
            for c in fields.list_items("transfer-encoding") {
                let name = c.split(|&b| b == b';').next().unwrap_or(c);
                if super::chars::trim_ows(name).eq_ignore_ascii_case(b"chunked") {
                    continue;
                }
                v.extend_from_slice(c);
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(b"chunked");
            field(out, b"Transfer-Encoding", &v);
        }
        Framing::None | Framing::UntilClose => {}
    }
}

/// `METHOD SP target SP version CRLF`.
pub fn request_line(out: &mut Vec<u8>, method: &str, target: &str, version: Version) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `version SP status SP reason CRLF` (the standard reason when `reason` is empty).
pub fn status_line(out: &mut Vec<u8>, version: Version, status: u16, reason: &str) {
    out.extend_from_slice(version.as_str().as_bytes());
    out.push(b' ');
    push_u64(out, u64::from(status));
    out.push(b' ');
    let reason = if reason.is_empty() {
        reason_phrase(status)
    } else {
        reason
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `name: value CRLF`.
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Every field of `fields` that `skip` does not reject.
pub fn fields(out: &mut Vec<u8>, fields: &Fields, mut skip: impl FnMut(&[u8]) -> bool) {
    for (n, v) in fields.iter() {
        if !skip(n) {
            field(out, n, v);
        }
    }
}

/// The empty line that ends a head.
pub fn end_head(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line (`len` > 0); its data and [`chunk_end`] follow.
pub fn chunk_start(out: &mut Vec<u8>, len: usize) {
    push_hex(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in lowercase hexadecimal, no leading zeros (a chunk size).
pub fn push_hex(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The CRLF after a chunk's data.
pub fn chunk_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub fn last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Appends the decimal form of `n`.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields() {
        let mut f = Fields::default();
        f.add("Connection", b"close, X-Private, Content-Length, host");
        f.add("X-Private", b"1");
        f.add("Content-Length", b"3");
        f.add("Host", b"h");
        f.add("Keep-Alive", b"timeout=5");
        f.add("Upgrade", b"websocket");
        f.add("TE", b"trailers");
        f.add("X-Other", b"2");
        let mut out = Vec::new();
        let hop = HopByHop::of(&f, false);
        fields(&mut out, &f, |n| hop.strips(n));
        assert_eq!(out, b"Content-Length: 3\r\nHost: h\r\nX-Other: 2\r\n");
        let hop = HopByHop::of(&f, true);
        assert!(!hop.strips(b"upgrade"));
    }

    #[test]
    fn lines_and_numbers() {
        let mut out = Vec::new();
        status_line(&mut out, Version::Http11, 404, "");
        request_line(&mut out, "GET", "/x", Version::Http11);
        push_u64(&mut out, 0);
        push_u64(&mut out, 18446744073709551615);
        chunk_start(&mut out, 255);
        push_hex(&mut out, 0);
        push_hex(&mut out, u64::MAX);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nGET /x HTTP/1.1\r\n018446744073709551615ff\r\n0ffffffffffffffff"
        );
    }
}
