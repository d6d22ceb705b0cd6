//! The field checks shared by requests and responses: Content-Length,
//! Transfer-Encoding, Connection, and the bytes of the head itself.

use super::chars::{is_field_byte, is_token};
use super::fields::Fields;
use super::ConnectionOptions;

/// The most digits a Content-Length may have (keeps the value in a u64).
const MAX_LENGTH_DIGITS: usize = 18;

/// Checks the line endings of a complete or partial head: every LF follows
/// a CR and every CR is followed by an LF (a CR that is the last byte
/// received is not judged yet). `Err` names the fault.
pub(crate) fn check_line_endings(head: &[u8]) -> Result<(), &'static str> {
    for i in memchr::memchr2_iter(b'\r', b'\n', head) {
        match head[i] {
            b'\n' if i == 0 || head[i - 1] != b'\r' => return Err("bare LF"),
            b'\r' if i + 1 < head.len() && head[i + 1] != b'\n' => return Err("bare CR"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks every byte of a field value (httparse allows the same set; this
/// keeps the rule here, where the tests are).
pub(crate) fn check_value(value: &[u8]) -> Result<(), &'static str> {
    match value.iter().find(|&&b| !is_field_byte(b)) {
        None => Ok(()),
        Some(0) => Err("NUL in a field value"),
        Some(b'\r') | Some(b'\n') => Err("CR or LF in a field value"),
        Some(_) => Err("control character in a field value"),
    }
}

/// The Content-Length of a head: `Ok(None)` without one; `Err` for a value
/// that is not digits (signs, spaces inside, empty), too large, or several
/// values that differ. Identical repeats (`5, 5` or two fields) are one
/// value (RFC 9110 §8.6).
pub(crate) fn content_length(fields: &Fields) -> Result<Option<u64>, &'static str> {
    let mut found: Option<u64> = None;
    let mut any = false;
    for value in fields.get_all("content-length") {
        any = true;
        for item in value.split(|&b| b == b',') {
            let item = super::chars::trim_ows(item);
            if item.is_empty() {
                return Err("empty Content-Length");
            }
            if item.len() > MAX_LENGTH_DIGITS {
                return Err("Content-Length too large");
            }
            if !item.iter().all(u8::is_ascii_digit) {
                return Err("Content-Length is not a number");
            }
            let n = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(m) if m != n => return Err("differing Content-Length values"),
                _ => found = Some(n),
            }
        }
    }
    if any && found.is_none() {
        return Err("empty Content-Length");
    }
    Ok(found)
}

/// What the Transfer-Encoding fields of a head say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codings {
    /// No Transfer-Encoding field.
    Absent,
    /// The final coding is chunked (applied once).
    Chunked,
    /// Present, but the final coding is not chunked.
    NotChunkedLast,
    /// `chunked` appears before the final coding, or more than once.
    ChunkedTwiceOrEarly,
    /// The field is present but lists nothing.
    Empty,
    /// A coding name that is not a token.
    Malformed,
}

/// Transfer codings this proxy can pass on (it never decodes them): the
/// registered ones. Any other is a 501 in a request.
const KNOWN_CODINGS: [&str; 5] = ["gzip", "deflate", "compress", "x-gzip", "x-compress"];

/// Reads the Transfer-Encoding fields; `unknown` is set when a coding
/// before `chunked` is not one [`KNOWN_CODINGS`] names.
pub(crate) fn codings(fields: &Fields, unknown: &mut bool) -> Codings {
    if !fields.contains("transfer-encoding") {
        return Codings::Absent;
    }
    let items: Vec<&[u8]> = fields.list_items("transfer-encoding").collect();
    let Some((last, before)) = items.split_last() else {
        return Codings::Empty;
    };
    let name = |c: &[u8]| -> Option<Vec<u8>> {
        // A coding may carry parameters (`gzip;q=1`): the name is the token
        // before them. `chunked` defines none: with one, a server that does
        // not see chunked would read the body as the next request.
        let mut parts = c.splitn(2, |&b| b == b';');
        let n = super::chars::trim_ows(parts.next().unwrap_or(c));
        let params = parts.next().is_some();
        (is_token(n) && !(params && n.eq_ignore_ascii_case(b"chunked")))
            .then(|| n.to_ascii_lowercase())
    };
    let mut names = Vec::with_capacity(items.len());
    for c in before.iter().chain(std::iter::once(last)) {
        match name(c) {
            Some(n) => names.push(n),
            None => return Codings::Malformed,
        }
    }
    let (last, before) = names.split_last().expect("not empty");
    if before.iter().any(|n| n == b"chunked") {
        return Codings::ChunkedTwiceOrEarly;
    }
    if last != b"chunked" {
        return Codings::NotChunkedLast;
    }
    *unknown = before
        .iter()
        .any(|n| !KNOWN_CODINGS.iter().any(|k| k.as_bytes() == n.as_slice()));
    Codings::Chunked
}

/// The options of the `Connection` fields.
pub(crate) fn connection_options(fields: &Fields) -> ConnectionOptions {
    let mut o = ConnectionOptions::default();
    for t in fields.list_items("connection") {
        if t.eq_ignore_ascii_case(b"close") {
            o.close = true;
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            o.keep_alive = true;
        } else if t.eq_ignore_ascii_case(b"upgrade") {
            o.upgrade = true;
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, values: &[&str]) -> Fields {
        let mut f = Fields::default();
        for v in values {
            f.add(name, v.as_bytes());
        }
        f
    }

    #[test]
    fn content_length_rules() {
        let cl = |v: &[&str]| content_length(&with("Content-Length", v));
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&["42"]), Ok(Some(42)));
        assert_eq!(cl(&["007"]), Ok(Some(7)));
        assert_eq!(cl(&["5", "5"]), Ok(Some(5)));
        assert_eq!(cl(&["5, 5"]), Ok(Some(5)));
        assert!(cl(&["5", "6"]).is_err());
        assert!(cl(&["5, 6"]).is_err());
        assert!(cl(&["+5"]).is_err());
        assert!(cl(&["-5"]).is_err());
        assert!(cl(&["0x10"]).is_err());
        assert!(cl(&["1 0"]).is_err());
        assert!(cl(&[""]).is_err());
        assert!(cl(&["5,"]).is_err());
        assert!(cl(&["1234567890123456789"]).is_err());
    }

    #[test]
    fn transfer_coding_rules() {
        let te = |v: &[&str]| {
            let mut unknown = false;
            let c = codings(&with("Transfer-Encoding", v), &mut unknown);
            (c, unknown)
        };
        assert_eq!(te(&[]), (Codings::Absent, false));
        assert_eq!(te(&["chunked"]), (Codings::Chunked, false));
        assert_eq!(te(&["Chunked"]), (Codings::Chunked, false));
        assert_eq!(te(&["gzip, chunked"]), (Codings::Chunked, false));
        assert_eq!(te(&["gzip", "chunked"]), (Codings::Chunked, false));
        assert_eq!(te(&["foo, chunked"]), (Codings::Chunked, true));
        assert_eq!(te(&["chunked, gzip"]).0, Codings::ChunkedTwiceOrEarly);
        assert_eq!(te(&["chunked", "chunked"]).0, Codings::ChunkedTwiceOrEarly);
        assert_eq!(te(&["gzip"]).0, Codings::NotChunkedLast);
        assert_eq!(te(&["xchunked"]).0, Codings::NotChunkedLast);
        assert_eq!(te(&["chunked;x=1"]).0, Codings::Malformed);
        assert_eq!(te(&["gzip;q=1, chunked"]).0, Codings::Chunked);
        assert_eq!(te(&[""]).0, Codings::Empty);
        assert_eq!(te(&["chu\"nked"]).0, Codings::Malformed);
    }

    #[test]
    fn line_endings() {
        assert!(check_line_endings(b"a\r\nb\r\n\r\n").is_ok());
        assert!(check_line_endings(b"a\nb").is_err());
        assert!(check_line_endings(b"\n").is_err());
        assert!(check_line_endings(b"a\rb").is_err());
        assert!(check_line_endings(b"a\r").is_ok());
    }

    #[test]
    fn value_bytes() {
        assert!(check_value(b"a\tb \x80\xff").is_ok());
        assert!(check_value(b"a\0").is_err());
        assert!(check_value(b"a\rb").is_err());
        assert!(check_value(b"a\x7f").is_err());
        assert!(check_value(b"a\x01").is_err());
    }
}
