//! Strict parsing end to end: every malformed or ambiguous request of the
//! table gets its status (400, 414, 431, 501) and **no byte reaches the
//! server** (a raw server records every byte it receives); every malformed
//! response gets a 502 and is never passed on. Each refusal is counted
//! (`ereq`, `eresp`) and logged with its termination state.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::*;
use common::*;

/// corral with small head limits (4 KiB, 20 fields) in front of `server`,
/// and its stats socket.
fn start(server: SocketAddr) -> (Corral, std::path::PathBuf) {
    HttpSetup {
        global: "http_max_head_size = \"4KiB\"\nhttp_max_headers = 20",
        timeouts: r#"{ connect = "2s", client = "5s", server = "5s", http_request = "3s" }"#,
        servers: &[server],
        ..Default::default()
    }
    .start()
}

/// The smuggling set and the malformed heads, with the status each gets.
const REQUESTS: &[(&str, u16)] = &[
    // The eight of the known smuggling set (HAProxy 2.6 forwards three).
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n", 400),
    // The rest of RFC 9112's refusals.
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: five\r\n\r\nhello", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\r\nhello\r\n0\r\n\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("GET /\r\n\r\n", 400),
    ("GET / HTTP/1.1\nHost: a\n\n", 400),
    ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /<x> HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
    ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n", 501),
];

#[test]
fn malformed_requests_are_refused_and_nothing_reaches_the_server() {
    let raw = RawServer::start(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ));
    let (c, sock) = start(raw.addr);
    let base = c.baseline();
    let mut cases: Vec<(Vec<u8>, u16, String)> = REQUESTS
        .iter()
        .map(|(r, s)| (r.as_bytes().to_vec(), *s, format!("{r:?}")))
        .collect();
    // The limits: a request line over 4 KiB is a 414, a head over it a 431,
    // more than 20 fields a 431.
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(5000));
    cases.push((long_line.into_bytes(), 414, "long request line".into()));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "b".repeat(5000)
    );
    cases.push((big_head.into_bytes(), 431, "large head".into()));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..25 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    cases.push((many.into_bytes(), 431, "too many fields".into()));
    let n = cases.len();
    let mut clients = Vec::new();
    for (raw_req, status, what) in &cases {
        let mut cl = Client::connect(c.addr());
        cl.send(raw_req);
        let r = cl
            .response(false)
            .unwrap_or_else(|e| panic!("{what}: no answer ({e})"));
        assert_eq!(r.status, *status, "{what}");
        assert!(
            r.head.has_token("connection", "close"),
            "{what}: {:?}",
            r.head
        );
        assert!(
            cl.closed_within(Duration::from_secs(3)).is_ok(),
            "{what}: closed after"
        );
        clients.push(cl.r.s.local_addr().unwrap());
    }
    assert_eq!(
        raw.total(),
        0,
        "bytes reached the server: {:?}",
        raw.received.lock().unwrap()
    );
    assert_eq!(
        raw.connections(),
        0,
        "no server connection for a refused request"
    );
    // Logged with PR-- (or the status' own), counted as request errors.
    for (client, (_, status, what)) in clients.iter().zip(&cases) {
        let l = &wait_http_log(&c, *client, 1, Duration::from_secs(3))[0];
        assert_eq!(l.status, i64::from(*status), "{what}: {}", l.raw);
        assert_eq!(&l.tsc, "PR--", "{what}: {}", l.raw);
    }
    let stat = cli(&sock, "show stat");
    let fe_row = stat_row(&stat, "web", "FRONTEND");
    assert_eq!(fe_row["ereq"], n.to_string(), "{stat}");
    // A valid request still goes through.
    let mut ok = Client::connect(c.addr());
    assert_eq!(ok.get("/").status, 200);
    assert!(raw.total() > 0);
    drop(ok);
    c.assert_quiescent(&base);
}

#[test]
fn malformed_responses_are_502_and_never_passed_on() {
    let cases: &[&str] = &[
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        "garbage\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ];
    for (i, resp) in cases.iter().enumerate() {
        let raw = RawServer::start(Some(resp.as_bytes().to_vec()));
        let (c, sock) = start(raw.addr);
        let mut cl = Client::connect(c.addr());
        cl.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        match cl.response(false) {
            Ok(r) if i == cases.len() - 1 => {
                // A bad chunk after a valid head: the head went out, the
                // body is cut and the client sees the close, never the
                // bad bytes.
                panic!("case {i}: a truncated body must not complete: {r:?}");
            }
            Ok(r) => {
                assert_eq!(r.status, 502, "case {i}: {resp:?}");
                assert!(!r.text().contains("hello"), "case {i}");
                assert!(r.head.get("x-nul").is_none() && r.head.get("x-cr").is_none());
            }
            Err(e) if i == cases.len() - 1 => {
                let _ = e;
            }
            Err(e) => panic!("case {i} {resp:?}: {e}"),
        }
        let stat = cli(&sock, "show stat");
        assert_eq!(
            stat_row(&stat, "app", "BACKEND")["eresp"],
            "1",
            "case {i}: {stat}"
        );
    }
}

#[test]
fn untidy_responses_are_cleaned_not_refused() {
    // Whitespace before a colon is removed (RFC 9112 §5.1); obs-fold is
    // replaced by spaces; a final coding other than chunked is read until
    // the close.
    let raw = RawServer::start(Some(
        b"HTTP/1.1 200 OK\r\nX-Space : v\r\nX-Fold: a\r\n b\r\nTransfer-Encoding: gzip\r\n\r\nuntil close".to_vec(),
    ));
    let (c, _) = start(raw.addr);
    let mut cl = Client::connect(c.addr());
    cl.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = cl.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.head.get("x-space"), Some("v"));
    assert!(r
        .head
        .get("x-fold")
        .is_some_and(|v| v.starts_with('a') && v.ends_with('b')));
    assert!(!String::from_utf8_lossy(&r.head.raw).contains("X-Space :"));
    assert_eq!(r.text(), "until close");
}
