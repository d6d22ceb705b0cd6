//! Where a refused head went wrong, for `show errors`' "error at position":
//! the offset of the first byte HTTP/1.1's syntax forbids there. A head
//! whose syntax is fine but whose meaning is refused (two Content-Lengths,
//! a bad Transfer-Encoding) is placed at the start of the first framing
//! field, or at the head's end. Pure and total: any bytes in, an offset
//! within them out.

use super::chars::is_tchar;

/// The offset of the fault in `buf`, a request head (`request`) or a
/// status line and fields.
pub fn error_position(buf: &[u8], request: bool) -> usize {
    let mut i = 0;
    while buf[i..].starts_with(b"\r\n") {
        i += 2;
    }
    // Start line.
    if request {
        let m = i;
        while i < buf.len() && is_tchar(buf[i]) {
            i += 1;
        }
        if i == m || buf.get(i) != Some(&b' ') {
            return i.min(buf.len());
        }
        i += 1;
        let t = i;
        while i < buf.len() && buf[i] > b' ' && buf[i] != 0x7f {
            i += 1;
        }
        if i == t || buf.get(i) != Some(&b' ') {
            return i.min(buf.len());
        }
        i += 1;
        match version_end(buf, i) {
            Ok(e) => i = e,
            Err(e) => return e,
        }
    } else {
        match version_end(buf, i) {
            Ok(e) => i = e,
            Err(e) => return e,
        }
        if buf.get(i) != Some(&b' ') {
            return i.min(buf.len());
        }
        i += 1;
        for _ in 0..3 {
            if !buf.get(i).is_some_and(u8::is_ascii_digit) {
                return i.min(buf.len());
            }
            i += 1;
        }
        i = match text_end(buf, i) {
            Ok(e) => e,
            Err(e) => return e,
        };
    }
    match line_end(buf, i) {
        Ok(e) => i = e,
        Err(e) => return e,
    }
    // Fields.
    let mut framing = None;
    loop {
        if buf[i..].starts_with(b"\r\n") {
            return framing.unwrap_or(i + 2).min(buf.len());
        }
        let start = i;
        while i < buf.len() && is_tchar(buf[i]) {
            i += 1;
        }
        if i == start || buf.get(i) != Some(&b':') {
            return i.min(buf.len());
        }
        let name = &buf[start..i];
        if framing.is_none()
            && (name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"transfer-encoding"))
        {
            framing = Some(start);
        }
        i = match text_end(buf, i + 1) {
            Ok(e) => e,
            Err(e) => return e,
        };
        match line_end(buf, i) {
            Ok(e) => i = e,
            Err(e) => return e,
        }
        if i >= buf.len() {
            return buf.len();
        }
    }
}

/// `HTTP/1.x` at `i`: its end, or the offset of the fault.
fn version_end(buf: &[u8], i: usize) -> Result<usize, usize> {
    let want = b"HTTP/1.";
    for (k, &w) in want.iter().enumerate() {
        if buf.get(i + k) != Some(&w) {
            return Err((i + k).min(buf.len()));
        }
    }
    match buf.get(i + want.len()) {
        Some(b'0' | b'1') => Ok(i + want.len() + 1),
        _ => Err((i + want.len()).min(buf.len())),
    }
}

/// CRLF at `i`: what follows it, or the offset of the fault (a bare CR or
/// LF, anything else).
/// Where the text from `i` (a reason phrase, a field value) meets CR or
/// LF; `Err` at the first control character it may not hold.
fn text_end(buf: &[u8], mut i: usize) -> Result<usize, usize> {
    while i < buf.len() && buf[i] != b'\r' && buf[i] != b'\n' {
        if buf[i] < b' ' && buf[i] != b'\t' || buf[i] == 0x7f {
            return Err(i);
        }
        i += 1;
    }
    Ok(i)
}

fn line_end(buf: &[u8], i: usize) -> Result<usize, usize> {
    if buf[i.min(buf.len())..].starts_with(b"\r\n") {
        Ok(i + 2)
    } else {
        Err(i.min(buf.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_placed() {
        assert_eq!(error_position(b"GET\x01 / HTTP/1.1\r\n\r\n", true), 3);
        assert_eq!(error_position(b"GET / HTTP/2.0\r\n\r\n", true), 11);
        assert_eq!(
            error_position(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", true),
            20
        );
        assert_eq!(
            error_position(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", true),
            20
        );
        assert_eq!(error_position(b"GET / HTTP/1.1\nHost: x\r\n\r\n", true), 14);
        let two_cl =
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(error_position(two_cl, true), 26, "the first framing field");
        assert_eq!(error_position(b"HTTP/1.1 2x0 OK\r\n\r\n", false), 10);
        assert_eq!(error_position(b"", true), 0);
        assert_eq!(error_position(b"\r\n", false), 2);
    }

    #[test]
    fn any_bytes_give_an_offset_within_them() {
        let mut seed = 7u64;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    b"GET /HTP1.\r\n: a\x00"[(seed >> 33) as usize % 16]
                })
                .collect();
            assert!(error_position(&buf, true) <= buf.len());
            assert!(error_position(&buf, false) <= buf.len());
        }
    }
}
