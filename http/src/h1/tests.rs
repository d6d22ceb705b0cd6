//! Request, response and body parsing against the RFC's rules and the
//! known request-smuggling shapes.

use super::body::{scan, Body, Piece};
use super::*;

fn req(raw: &str) -> Result<Parsed<Request>, Reject> {
    parse_request(raw.as_bytes(), &Limits::default())
}

fn ok(raw: &str) -> Request {
    match req(raw) {
        Ok(Parsed::Complete(r, n)) => {
            assert_eq!(n, raw.len(), "whole input is the head");
            r
        }
        other => panic!("{raw:?}: expected a complete request, got {other:?}"),
    }
}

fn refused(raw: &str) -> u16 {
    match req(raw) {
        Err(r) => r.status,
        other => panic!("{raw:?}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn simple_get() {
    let r = ok("GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-A:  v \r\n\r\n");
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.target(), "/a/b?c=d");
    assert_eq!(r.path(), "/a/b");
    assert_eq!(r.host(), Some("example.com"));
    assert_eq!(r.fields.get("x-a"), Some(&b"v"[..]));
    assert_eq!(r.framing, Framing::None);
    assert!(r.keep_alive());
}

#[test]
fn partial_until_the_empty_line() {
    for cut in [
        "G",
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\nHost: a\r\n",
    ] {
        assert!(matches!(req(cut), Ok(Parsed::Partial)), "{cut:?}");
    }
}

#[test]
fn leading_empty_lines_are_skipped() {
    let raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    match req(raw) {
        Ok(Parsed::Complete(_, n)) => assert_eq!(n, raw.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn body_bytes_after_the_head_are_not_judged_as_head() {
    let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\na\nb";
    match req(raw) {
        Ok(Parsed::Complete(r, n)) => {
            assert_eq!(n, raw.len() - 3);
            assert_eq!(r.framing, Framing::Length(3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn http10_keep_alive_rules() {
    assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive());
    assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive());
}

#[test]
fn absolute_form_authority_overrides_host() {
    let r = ok("GET http://api.example:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(r.host(), Some("api.example:8080"));
    assert_eq!(r.path(), "/x");
    assert!(r.is_absolute_form());
    let r = ok("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.path(), "/");
    assert_eq!(refused("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_eq!(refused("GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_eq!(refused("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

#[test]
fn asterisk_form_only_for_options() {
    assert_eq!(ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").path(), "*");
    assert_eq!(refused("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
}

#[test]
fn upgrade_and_expect() {
    let r = ok("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(r.upgrade);
    let r = ok("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    assert!(
        !r.upgrade,
        "Upgrade without Connection: upgrade is not a switch"
    );
    let r = ok("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    assert!(r.expect_continue);
}

/// The smuggling set and the malformed heads of the issue: each refused,
/// with its status.
#[test]
fn malformed_requests_are_refused() {
    let cases: &[(&str, u16, &str)] = &[
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "CL and TE"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 400, "TE and CL"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", 400, "differing CL"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\n", 400, "differing CL list"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n", 400, "signed CL"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, "negative CL"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4a\r\n\r\n", 400, "non-numeric CL"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "final coding not chunked"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400, "chunked not last"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400, "xchunked"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "chunked twice"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400, "space before colon"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400, "obs-fold"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, "obs-fold"),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "TE on HTTP/1.0"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400, "NUL in value"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "CR in value"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX\x01: a\r\n\r\n", 400, "name not a token"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n", 400, "name not a token"),
        ("GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 400, "empty name"),
        ("GET / HTTP/1.1\r\n\r\n", 400, "missing Host"),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "repeated Host"),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad Host"),
        ("GET /\r\n\r\n", 400, "HTTP/0.9"),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400, "HTTP/2.0 on an h1 line"),
        ("GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF"),
        ("GET / HTTP/1.1\r\nHost: a\n\r\n", 400, "bare LF in fields"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n", 400, "bare CR"),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "double space"),
        ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "space in target"),
        ("GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "target alphabet"),
        ("GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad percent-encoding"),
        ("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "DEL in target"),
        ("GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "fragment"),
        ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method not a token"),
        ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501, "CONNECT"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n", 501, "unknown coding"),
    ];
    for (raw, status, what) in cases {
        assert_eq!(refused(raw), *status, "{what}: {raw:?}");
    }
}

#[test]
fn http09_is_refused_without_waiting_for_more() {
    assert_eq!(refused("GET /\r\n"), 400);
}

#[test]
fn legal_edge_cases_are_accepted() {
    let r = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(r.framing, Framing::Length(5));
    let r = ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(r.framing, Framing::Chunked);
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: tab\there \x80\xff\r\n\r\n";
    let Ok(Parsed::Complete(r, _)) = parse_request(raw, &Limits::default()) else {
        panic!("obs-text and HTAB are legal in a value");
    };
    assert_eq!(r.fields.get("x"), Some(&b"tab\there \x80\xff"[..]));
    ok("GET / HTTP/1.0\r\n\r\n");
    ok("GET /~a/b;c=d/e:f@g!$&'()*+,=?q=/?x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
}

#[test]
fn limits_give_414_and_431() {
    let lim = Limits {
        max_head: 64,
        max_headers: 3,
    };
    let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(80));
    assert_eq!(
        parse_request(long_line.as_bytes(), &lim)
            .unwrap_err()
            .status,
        414
    );
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "b".repeat(80));
    assert_eq!(parse_request(big.as_bytes(), &lim).unwrap_err().status, 431);
    let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        parse_request(many.as_bytes(), &lim).unwrap_err().status,
        431
    );
    // Still partial below the limits.
    assert!(matches!(
        parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &lim),
        Ok(Parsed::Partial)
    ));
}

#[test]
fn a_field_limit_beyond_the_stack_slots_is_applied_exactly() {
    // Up to STACK_HEADERS slots live on the stack; a larger limit takes
    // them from the heap, and both sides of it count the same.
    for max in [
        super::STACK_HEADERS - 1,
        super::STACK_HEADERS,
        super::STACK_HEADERS + 72,
    ] {
        let lim = Limits {
            max_head: 64 * 1024,
            max_headers: max,
        };
        let head = |n: usize| {
            let mut h = "GET / HTTP/1.1\r\nHost: a\r\n".to_string();
            for i in 1..n {
                h.push_str(&format!("X-{i}: {i}\r\n"));
            }
            h + "\r\n"
        };
        let Ok(Parsed::Complete(r, _)) = parse_request(head(max).as_bytes(), &lim) else {
            panic!("{max} fields with a limit of {max}");
        };
        assert_eq!(r.fields.iter().count(), max);
        assert_eq!(
            parse_request(head(max + 1).as_bytes(), &lim)
                .unwrap_err()
                .status,
            431,
            "{} fields with a limit of {max}",
            max + 1
        );
        let resp_head = head(max).replacen("GET / HTTP/1.1", "HTTP/1.1 204 No Content", 1);
        assert!(matches!(
            parse_response(resp_head.as_bytes(), &lim, false),
            Ok(Parsed::Complete(..))
        ));
        let over = head(max + 1).replacen("GET / HTTP/1.1", "HTTP/1.1 204 No Content", 1);
        assert!(parse_response(over.as_bytes(), &lim, false).is_err());
    }
}

fn resp(raw: &str, head: bool) -> Result<Response, Reject> {
    match parse_response(raw.as_bytes(), &Limits::default(), head) {
        Ok(Parsed::Complete(r, n)) => {
            assert_eq!(n, raw.len());
            Ok(r)
        }
        Ok(Parsed::Partial) => panic!("partial: {raw:?}"),
        Err(e) => Err(e),
    }
}

#[test]
fn response_framing() {
    let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).unwrap();
    assert_eq!(r.framing, Framing::Length(5));
    assert!(r.keep_alive());
    let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
    assert_eq!(r.framing, Framing::None, "HEAD");
    for status in [100, 101, 204, 304] {
        let r = resp(
            &format!("HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\n"),
            false,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::None, "{status}");
    }
    let r = resp(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(r.framing, Framing::Chunked);
    let r = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap();
    assert_eq!(
        r.framing,
        Framing::UntilClose,
        "final coding not chunked: until close"
    );
    assert!(!r.keep_alive());
    let r = resp("HTTP/1.0 200 OK\r\n\r\n", false).unwrap();
    assert_eq!(r.framing, Framing::UntilClose);
    let r = resp(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(r.keep_alive());
    assert_eq!(r.reason(), "OK");
}

#[test]
fn response_cleanups() {
    let r = resp(
        "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(
        r.fields.get("x-a"),
        Some(&b"1"[..]),
        "space before colon removed"
    );
    let r = resp(
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    let v = r.fields.get("x-a").unwrap();
    assert!(!v.contains(&b'\r') && !v.contains(&b'\n'), "{v:?}");
}

#[test]
fn malformed_responses_are_502() {
    let cases = [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 X\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "HTCPCP/1.0 418 Teapot\r\n\r\n",
    ];
    for raw in cases {
        let e = resp(raw, false).unwrap_err();
        assert_eq!(e.status, 502, "{raw:?}");
    }
}

fn chunked(input: &[u8]) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let mut b = Body::new(Framing::Chunked);
    let mut out = Vec::new();
    let (n, done) = scan(&mut b, input, &mut out)?;
    Ok((out, n, done))
}

#[test]
fn chunked_decoding() {
    let input = b"5\r\nhello\r\n6;a=b;c=\"d\\\"e\"\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    let (p, n, done) = chunked(input).unwrap();
    assert_eq!(p, b"hello world");
    assert_eq!(n, input.len() - 4, "the next message is not consumed");
    assert!(done);
    let (p, _, done) = chunked(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
    assert_eq!(p, b"0123456789");
    assert!(done);
    let (p, _, done) = chunked(b"3 ; x\r\nabc\r\n000\r\n\r\n").unwrap();
    assert_eq!(p, b"abc");
    assert!(done);
}

#[test]
fn chunked_decoding_byte_by_byte_matches_at_once() {
    let input = b"5\r\nhello\r\n6;a=b\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
    let mut b = Body::new(Framing::Chunked);
    let mut out = Vec::new();
    let mut done = false;
    for i in 0..input.len() {
        let (n, d) = scan(&mut b, &input[i..i + 1], &mut out).unwrap();
        assert!(n == 1 || d);
        done = d;
    }
    assert!(done);
    assert_eq!(out, b"hello world");
}

#[test]
fn invalid_chunks_are_refused() {
    let cases: &[&[u8]] = &[
        b"z\r\n",
        b"\r\n",
        b"-5\r\nhello\r\n",
        b"5\nhello\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5 \r\nhello\r\n",
        b"5;\r\nhello\r\n",
        b"5;a=\r\nhello\r\n",
        b"5;a=\"x\r\nhello\r\n",
        b"5;a b\r\nhello\r\n",
        b"5\rhello",
        b"10000000000000000\r\n",
        b"0x5\r\nhello\r\n",
        b"0\r\nX T: 1\r\n\r\n",
        b"0\r\nX: 1\n\r\n",
        b"0\r\nX: \x00\r\n\r\n",
        b"0\r\n\n",
    ];
    for c in cases {
        assert!(chunked(c).is_err(), "{:?}", String::from_utf8_lossy(c));
    }
}

#[test]
fn length_and_close_bodies() {
    let mut b = Body::new(Framing::Length(3));
    let mut out = Vec::new();
    assert_eq!(scan(&mut b, b"abcdef", &mut out).unwrap(), (3, true));
    assert_eq!(out, b"abc");
    let mut b = Body::new(Framing::Length(3));
    assert_eq!(scan(&mut b, b"ab", &mut out).unwrap(), (2, false));
    assert!(b.on_eof().is_err(), "a short body is truncated");
    let mut b = Body::new(Framing::UntilClose);
    assert_eq!(scan(&mut b, b"xyz", &mut out).unwrap(), (3, false));
    assert!(b.on_eof().is_ok());
    assert!(b.is_done());
    assert!(Body::new(Framing::None).is_done());
}

#[test]
fn a_reason_phrase_that_is_not_utf8_is_dropped_not_a_panic() {
    // Found by fuzzing: httparse hands a static "" for such a phrase.
    let raw = b"HTTP/1.1 200 Let-th:\xe4\xcf\r\n\r\n";
    match parse_response(raw, &Limits::default(), false) {
        Ok(Parsed::Complete(r, _)) => assert_eq!(r.reason(), ""),
        Ok(Parsed::Partial) => panic!("complete"),
        Err(e) => assert_eq!(e.status, 502),
    }
}

/// A chunked body through [`Body::step_into`], fed in pieces of `cut` bytes.
fn canonical(input: &[u8], cut: usize) -> Vec<u8> {
    let mut b = Body::new(Framing::Chunked);
    let mut out = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let end = (at + cut).min(input.len());
        let mut i = at;
        while let Piece::Data(n) | Piece::Meta(n) =
            b.step_into(&input[i..end], &mut out).expect("valid")
        {
            i += n;
        }
        if b.is_done() {
            break;
        }
        at = end;
    }
    assert!(b.is_done());
    out
}

#[test]
fn chunk_framing_is_rewritten_canonically() {
    let input = b"005;a=b; c=\"x y\"\r\nhello\r\n000A\r\n0123456789\r\n0000;z\r\nX-T: 1\r\n\r\n";
    let want = b"5\r\nhello\r\na\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
    for cut in [1, 2, 3, 7, 1000] {
        assert_eq!(
            String::from_utf8_lossy(&canonical(input, cut)),
            String::from_utf8_lossy(want),
            "cut {cut}"
        );
    }
    // Already canonical: unchanged.
    assert_eq!(canonical(want, 5), want);
}

#[test]
fn spliced_payload_is_skipped_and_the_framing_goes_on() {
    // Length: the decoder learns of bytes it never saw.
    let mut b = Body::new(Framing::Length(100));
    assert_eq!(b.raw_data_left(), Some(100));
    b.skip_data(60);
    assert_eq!(b.raw_data_left(), Some(40));
    b.skip_data(40);
    assert!(b.is_done());
    assert_eq!(b.payload, 100);
    // Chunked: only a chunk's data may be skipped; its CRLF and the next
    // size line are still parsed.
    let mut b = Body::new(Framing::Chunked);
    assert_eq!(b.raw_data_left(), None);
    assert_eq!(b.step(b"10\r\n"), Ok(Piece::Meta(4)));
    assert_eq!(b.raw_data_left(), Some(16));
    b.skip_data(16);
    assert_eq!(b.raw_data_left(), None);
    let mut out = Vec::new();
    let rest = b"\r\n0\r\n\r\n";
    let mut at = 0;
    while let Piece::Data(n) | Piece::Meta(n) = b.step_into(&rest[at..], &mut out).unwrap() {
        at += n;
    }
    assert!(b.is_done(), "{out:?}");
    assert_eq!(out, b"\r\n0\r\n\r\n");
    assert_eq!(b.payload, 16);
}
