//! Character classes of RFC 9110/9112 and RFC 3986.

/// `tchar`: the characters of a token (method, field name, coding).
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    ) || b.is_ascii_alphanumeric()
}

/// A non-empty token.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A byte allowed inside a field value: HTAB, SP, VCHAR, obs-text. (NUL, CR,
/// LF, the other controls and DEL are not.)
pub(crate) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

/// `OWS` characters.
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Removes leading and trailing OWS.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ows(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ows(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// RFC 3986 `unreserved / sub-delims / ":" / "@"`: a `pchar` other than a
/// percent-encoding.
fn is_pchar_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Checks `%HH` sequences and that every other byte is in `plain`.
fn valid_encoded(s: &[u8], plain: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            if i + 2 >= s.len() {
                return false;
            }
            if !(s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if plain(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// `path-abempty [ "?" query ]` of RFC 3986 (the `#fragment` is not part of
/// a request-target).
pub(crate) fn valid_path_query(s: &[u8]) -> bool {
    let (path, query) = match memchr::memchr(b'?', s) {
        Some(q) => (&s[..q], Some(&s[q + 1..])),
        None => (s, None),
    };
    valid_encoded(path, |b| is_pchar_plain(b) || b == b'/')
        && query.is_none_or(|q| valid_encoded(q, |b| is_pchar_plain(b) || b == b'/' || b == b'?'))
}

/// RFC 3986 `host [ ":" port ]` without userinfo: a reg-name, an IPv4
/// address or a bracketed IP literal, then an optional decimal port.
pub(crate) fn valid_authority(s: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix(b"[") {
        let Some(end) = memchr::memchr(b']', rest) else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        let after = &rest[end + 1..];
        match after {
            [] => (literal, None),
            [b':', port @ ..] => (literal, Some(port)),
            _ => return false,
        }
    } else {
        match memchr::memrchr(b':', s) {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    let host_ok =
        s.starts_with(b"[") || valid_encoded(host, |b| is_pchar_plain(b) && b != b':' && b != b'@');
    host_ok && port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_needs_two_hex_digits() {
        assert!(valid_path_query(b"/a%20b"));
        assert!(!valid_path_query(b"/a%2"));
        assert!(!valid_path_query(b"/a%"));
        assert!(!valid_path_query(b"/a%zz"));
        assert!(valid_path_query(b"/a?x=1&y=%41"));
        assert!(!valid_path_query(b"/a b"));
        assert!(!valid_path_query(b"/a#frag"));
        assert!(!valid_path_query(b"/<script>"));
    }

    #[test]
    fn authorities() {
        assert!(valid_authority(b"example.com"));
        assert!(valid_authority(b"example.com:8080"));
        assert!(valid_authority(b"127.0.0.1:80"));
        assert!(valid_authority(b"[::1]:80"));
        assert!(valid_authority(b"[::1]"));
        assert!(valid_authority(b""));
        assert!(!valid_authority(b"user@example.com"));
        assert!(!valid_authority(b"example.com:80x"));
        assert!(!valid_authority(b"[::1"));
        assert!(!valid_authority(b"a b"));
        assert!(!valid_authority(b"[::1]x"));
    }

    #[test]
    fn ows_trimmed_both_ends() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
    }
}
