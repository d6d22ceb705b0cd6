//! HTTP edges an adversarial reading found, each reproduced end to end: a
//! request body is never queued to a connection still being established (a
//! retry would resend the head with a body cut short); a kept server
//! connection the server closed is dropped, never reused; a client naming
//! `X-Forwarded-For` in `Connection` cannot strip the one corral adds; a
//! HEAD request's local answer has no body on a kept connection; a soft stop
//! serves a connection that has not sent its first request yet; an HTTP/1.0
//! request without Host reaches the server with one; a request answered
//! while queued is never sent to a server afterwards; refusals are counted
//! once.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::cli::cli;
use common::http::*;
use common::*;
use nix::sys::signal::Signal;

/// The timeouts most tests run with.
const TIMEOUTS: &str =
    r#"{ connect = "300ms", client = "5s", server = "5s", http_request = "1s", queue = "400ms" }"#;

/// corral in `mode` with [`HttpSetup`]'s frontend `web` to backend `app`
/// with `servers`, and `timeouts`; returns it and the socket's path.
fn start_with(
    mode: &str,
    timeouts: &str,
    frontend_extra: &str,
    backend_extra: &str,
    servers: &[SocketAddr],
) -> (Corral, String) {
    let (c, sock) = HttpSetup {
        mode,
        timeouts,
        frontend: frontend_extra,
        backend: backend_extra,
        servers,
        ..Default::default()
    }
    .start();
    (c, sock.display().to_string())
}

fn start(frontend_extra: &str, backend_extra: &str, servers: &[SocketAddr]) -> (Corral, String) {
    start_with("http", TIMEOUTS, frontend_extra, backend_extra, servers)
}

/// A listener whose accept queue is full: SYNs to it are dropped, so a
/// connect to it stays pending until the connect timeout.
fn blackhole() -> (TcpListener, Vec<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen on an open socket; a backlog of 0 lets one connection wait.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let addr = l.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            held.push(s);
        }
    }
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
        "the blackhole must not accept"
    );
    (l, held)
}

#[test]
fn a_retried_connect_sends_the_whole_body() {
    let (hole, _held) = blackhole();
    let live = Origin::start("live");
    let (c, sock) = start(
        "",
        "balance = \"roundrobin\"\nretries = 2",
        &[hole.local_addr().unwrap(), live.addr],
    );
    for i in 0..4 {
        let mut cl = Client::connect(c.addr());
        // Part of the body comes with the head, while corral connects; the
        // rest comes once the first connect is long given up.
        cl.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello");
        thread::sleep(Duration::from_millis(450));
        cl.send(b"world");
        let r = cl.response(false).expect("an answer");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "helloworld"),
            "request {i}"
        );
    }
    let stat = cli(std::path::Path::new(&sock), "show stat");
    let be = stat_row(&stat, "app", "BACKEND");
    assert!(
        be["wretr"].parse::<u64>().unwrap() >= 2,
        "requests went to the blackhole first and were retried: {stat}"
    );
    // Each request reached the live server once, whole.
    assert_eq!(live.requests.load(std::sync::atomic::Ordering::Relaxed), 4);
}

/// Answers one request per connection (keep-alive by its head), then
/// closes it 50 ms later, as a server's own keep-alive timeout does.
/// Returns the address and every connection's received bytes.
fn closing_server() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
    let rec = got.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let rec = rec.clone();
            thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                thread::sleep(Duration::from_millis(50));
                // Whatever came meanwhile is recorded, then the close.
                s.set_nonblocking(true).unwrap();
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                rec.lock().unwrap().push(buf);
            });
        }
    });
    (addr, got)
}

#[test]
fn a_kept_server_connection_the_server_closed_is_not_reused() {
    let (addr, got) = closing_server();
    let (c, _) = start("", "", &[addr]);
    let mut cl = Client::connect(c.addr());
    for i in 0..5 {
        let r = cl.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
        assert!(!r.head.has_token("connection", "close"));
        // The server's FIN reaches corral while its connection is idle.
        thread::sleep(Duration::from_millis(150));
    }
    thread::sleep(Duration::from_millis(100));
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 5, "a new server connection each time");
    for (i, bytes) in got.iter().enumerate() {
        let text = String::from_utf8_lossy(bytes);
        assert_eq!(
            text.matches("GET / HTTP/1.1").count(),
            1,
            "connection {i} got one request: {text}"
        );
    }
}

#[test]
fn connection_cannot_strip_the_fields_corral_adds() {
    let raw = RawServer::start(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Resp, X-Gone\r\nX-Resp: server\r\nX-Gone: 1\r\n\r\nok"
            .to_vec(),
    ));
    let (c, _) = start(
        "forwardfor = true\nrules = [\n  \"http-request set-header X-Added yes\",\n  \"http-response set-header X-Resp corral\",\n]",
        "",
        &[raw.addr],
    );
    let mut cl = Client::connect(c.addr());
    cl.send(
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: X-Forwarded-For, X-Added, X-Secret\r\n\
          X-Forwarded-For: 6.6.6.6\r\nX-Added: client\r\nX-Secret: s\r\n\r\n",
    );
    let r = cl.response(false).unwrap();
    assert_eq!(r.status, 200);
    // The response: what the server named is gone, what the rule set stays.
    assert_eq!(r.head.all("x-resp"), ["corral"], "{:?}", r.head);
    assert!(r.head.get("x-gone").is_none());
    let got = String::from_utf8_lossy(&raw.received.lock().unwrap()[0]).into_owned();
    assert!(got.contains("\r\nX-Forwarded-For: 127.0.0.1\r\n"), "{got}");
    assert!(
        !got.contains("6.6.6.6"),
        "the client's hop-by-hop XFF: {got}"
    );
    assert!(got.contains("\r\nX-Added: yes\r\n"), "{got}");
    assert!(
        !got.contains("client") && !got.contains("X-Secret"),
        "{got}"
    );
}

#[test]
fn local_answers_on_a_kept_connection_fit_the_request() {
    let o = Origin::start("a");
    let (c, _) = start(
        "rules = [\"http-request deny deny_status 403 if { path_beg /admin }\"]",
        "",
        &[o.addr],
    );
    let mut cl = Client::connect(c.addr());
    // Pipelined: if the 403 carried its page, it would be read as the
    // start of the next response.
    cl.send(b"HEAD /admin HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = cl.response(true).unwrap();
    assert_eq!(r.status, 403);
    assert!(r.head.get("content-length").is_some());
    let r = cl.response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    // HTTP/1.0 with keep-alive: the 403 says so, and the connection goes on.
    cl.send(b"GET /admin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = cl.response(false).unwrap();
    assert_eq!(r.status, 403);
    assert!(r.head.has_token("connection", "keep-alive"), "{:?}", r.head);
    assert!(String::from_utf8_lossy(&r.head.raw).contains("\r\nContent-Length: "));
    // A HEAD the server answers: its head only, the connection goes on.
    cl.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = cl.response(true).unwrap();
    assert_eq!(r.status, 200);
    assert!(cl.r.buf.is_empty(), "no stray bytes after a HEAD answer");
}

#[test]
fn a_reload_hands_over_a_connection_before_its_first_request_too() {
    let o = Origin::start("a");
    let (c, sock) = start("", "", &[o.addr]);
    let mut silent = Client::connect(c.addr());
    let mut kept = Client::connect(c.addr());
    assert_eq!(kept.get("/").status, 200);
    // Both are held by the first worker, which the reload soft-stops: both
    // go to the new generation (see tests/http_handoff.rs).
    thread::sleep(Duration::from_millis(200));
    c.signal(Signal::SIGUSR2);
    assert!(wait_until(Duration::from_secs(5), || {
        stats_command(std::path::Path::new(&sock), "show info")
            .is_ok_and(|t| t.contains("Generation: 2"))
    }));
    thread::sleep(Duration::from_millis(300));
    silent.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = silent.response(false).expect("served after the reload");
    assert_eq!(r.status, 200);
    assert!(!r.head.has_token("connection", "close"), "{:?}", r.head);
    let r = kept.get("/");
    assert_eq!(r.status, 200);
    assert!(!r.head.has_token("connection", "close"), "{:?}", r.head);
}

#[test]
fn an_http10_request_without_host_reaches_the_server_with_one() {
    let raw = RawServer::start(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    ));
    let (c, _) = start("", "", &[raw.addr]);
    let r = request(c.addr(), b"GET /x HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    let got = String::from_utf8_lossy(&raw.received.lock().unwrap()[0]).into_owned();
    assert!(got.starts_with("GET /x HTTP/1.1\r\n"), "{got}");
    assert_eq!(got.matches("\r\nHost:").count(), 1, "{got}");
}

#[test]
fn a_request_answered_in_the_queue_never_reaches_a_server() {
    let o = Origin::start("a");
    let (c, sock) = start_with(
        "http",
        r#"{ connect = "1s", client = "5s", server = "5s", queue = "300ms" }"#,
        "",
        &format!("server.s = {{ addr = \"{}\", maxconn = 1 }}", o.addr),
        &[],
    );
    let addr = c.addr();
    let holder = thread::spawn(move || {
        let mut cl = Client::connect(addr);
        cl.get("/sleep?ms=800").status
    });
    thread::sleep(Duration::from_millis(150));
    let mut queued = Client::connect(c.addr());
    queued.send(b"GET /queued HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = queued.response(false).unwrap();
    assert_eq!(r.status, 503, "the queue timeout answers");
    // Out of the queue at once (the slot is still held).
    thread::sleep(Duration::from_millis(50));
    let stat = cli(std::path::Path::new(&sock), "show stat");
    assert_eq!(stat_row(&stat, "app", "BACKEND")["qcur"], "0", "{stat}");
    assert_eq!(holder.join().unwrap(), 200);
    // Once the slot is free, the answered request must not be sent.
    thread::sleep(Duration::from_millis(300));
    let heads = o.heads.lock().unwrap();
    assert!(
        heads
            .iter()
            .all(|h| !String::from_utf8_lossy(h).contains("/queued")),
        "the 503'd request reached the server"
    );
    drop(heads);
    let lines = wait_http_log(
        &c,
        queued.r.s.local_addr().unwrap(),
        1,
        Duration::from_secs(2),
    );
    assert_eq!((lines[0].status, lines[0].tsc.as_str()), (503, "sQ--"));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        http_log_lines(&c.log_text(), queued.r.s.local_addr().unwrap()).len(),
        1,
        "one log line for the queued request"
    );
}

#[test]
fn refusals_are_counted_once() {
    let o = Origin::start("a");
    let (c, sock) = start("", "", &[o.addr]);
    // A head that never completes (408), a bad chunk that came with the
    // head, a bad chunk that came later (400 each).
    let mut slow = Client::connect(c.addr());
    slow.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let r = slow.response(false).unwrap();
    assert_eq!(r.status, 408);
    let r = request(
        c.addr(),
        b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    let mut late = Client::connect(c.addr());
    late.send(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    );
    thread::sleep(Duration::from_millis(200));
    late.send(b"x\r\n");
    let r = late.response(false).unwrap();
    assert_eq!(r.status, 400);
    thread::sleep(Duration::from_millis(200));
    let stat = cli(std::path::Path::new(&sock), "show stat");
    let f = stat_row(&stat, "web", "FRONTEND");
    assert_eq!(
        (
            f["req_tot"].as_str(),
            f["ereq"].as_str(),
            f["hrsp_4xx"].as_str()
        ),
        ("3", "3", "3"),
        "{stat}"
    );
}

#[test]
fn a_closing_answer_to_a_paused_client_arrives_whole() {
    let o = Origin::start("a");
    // The server timeout is shorter than the client's pause: corral is
    // waiting for the client then, not for the server.
    let (c, sock) = start_with(
        "http",
        r#"{ connect = "1s", client = "30s", server = "2s" }"#,
        "",
        "",
        &[o.addr],
    );
    let loops = || -> u64 {
        let text = cli(std::path::Path::new(&sock), "show activity");
        let line = text.lines().find(|l| l.starts_with("loops:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // 16 MiB: the kernel buffers fill and corral stops reading the server;
    // 1 MiB: all of it is queued in the kernel and corral is in its close,
    // waiting for acknowledgements that make no event.
    for (len, pause) in [(16u64 << 20, 7), (1 << 20, 6)] {
        let mut cl = Client::connect(c.addr());
        cl.send(format!("GET /download?len={len} HTTP/1.0\r\n\r\n").as_bytes());
        thread::sleep(Duration::from_millis(300));
        let before = loops();
        thread::sleep(Duration::from_secs(pause));
        let woke = loops() - before;
        // The rechecks back off to one a second: no busy wait.
        assert!(woke < 40, "{woke} loop turns in {pause} s of waiting");
        let r = cl.response(false).expect("the answer");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len() as u64, len, "the whole body, then the close");
        let mut sum = Sum::default();
        sum.add(&r.body);
        assert_eq!(sum.finish(), pattern_sum(len));
    }
}

#[test]
fn a_half_close_after_a_whole_request_is_no_abort() {
    // Through a connect that waits (the blackhole first, then a retry):
    // the client's FIN arrives while corral still holds the body.
    let (hole, _held) = blackhole();
    let live = Origin::start("live");
    let (c, _) = start(
        "",
        "balance = \"roundrobin\"\nretries = 2",
        &[hole.local_addr().unwrap(), live.addr],
    );
    for i in 0..4 {
        let mut cl = Client::connect(c.addr());
        cl.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        cl.r.s.shutdown(std::net::Shutdown::Write).unwrap();
        let r = cl.response(false).expect("an answer after the half-close");
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "request {i}");
        assert!(r.head.has_token("connection", "close"));
    }
    // Pipelined requests, then the FIN: every one is answered.
    let mut cl = Client::connect(c.addr());
    cl.send(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\nGET /live HTTP/1.1\r\nHost: t\r\n\r\n");
    cl.r.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(cl.response(false).unwrap().status, 200);
    let r = cl.response(false).expect("the second pipelined request");
    assert_eq!(r.text(), "live");
    assert!(cl.closed_within(Duration::from_secs(2)).is_ok());
    // A pipelined request cut short by the FIN (its body incomplete, or
    // its head): the whole one before it is answered with a close, then a
    // FIN (no reset), and the cut one never reaches a server.
    for cut in [
        &b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello"[..],
        &b"GET /never HTTP/1.1\r\nHost"[..],
    ] {
        let before = live.requests.load(std::sync::atomic::Ordering::Relaxed);
        let mut cl = Client::connect(c.addr());
        let mut raw = b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        raw.extend_from_slice(cut);
        cl.send(&raw);
        cl.r.s.shutdown(std::net::Shutdown::Write).unwrap();
        let r = cl.response(false).unwrap();
        assert_eq!(r.text(), "live");
        assert!(r.head.has_token("connection", "close"), "{:?}", r.head);
        let mut rest = Vec::new();
        cl.r.until_eof(&mut |b| rest.extend_from_slice(b))
            .expect("a FIN, not a reset");
        assert!(rest.is_empty());
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            live.requests.load(std::sync::atomic::Ordering::Relaxed),
            before + 1,
            "only the whole request reached the server"
        );
    }
}

/// Answers the first request of each connection (keep-alive by its head),
/// then closes the connection when the next request arrives, unanswered:
/// the server's keep-alive timeout crossing the request.
fn crossing_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            thread::spawn(move || {
                let mut r = Reader::new(s.try_clone().unwrap());
                let mut w = s;
                let Ok(Some(head)) = r.head() else { return };
                if let Some(n) = head.get("content-length").and_then(|v| v.parse().ok()) {
                    let _ = r.exact(n, &mut |_| {});
                }
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
                let _ = r.head();
            });
        }
    });
    addr
}

#[test]
fn a_request_crossing_the_servers_close_goes_again_if_it_can() {
    let addr = crossing_server();
    let (c, sock) = start("", "", &[addr]);
    let mut cl = Client::connect(c.addr());
    for i in 0..5 {
        // Back to back: the kept connection looks healthy when reused.
        let r = cl.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "first"), "request {i}");
    }
    // A request with a body cannot be sent again: a 502, the connection
    // then closed.
    let r = cl.get("/");
    assert_eq!(r.status, 200);
    cl.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    let r = cl.response(false).unwrap();
    assert_eq!(r.status, 502);
    let stat = cli(std::path::Path::new(&sock), "show stat");
    let be = stat_row(&stat, "app", "BACKEND");
    assert_eq!(be["wretr"], "5", "each replay counted as a retry: {stat}");
    let lines = wait_http_log(&c, cl.r.s.local_addr().unwrap(), 7, Duration::from_secs(2));
    assert_eq!(lines[1].conns[4], 1, "%rc: {}", lines[1].raw);
    // `retries = 0`: no replay either.
    let (c0, _) = start("", "retries = 0", &[addr]);
    let mut cl = Client::connect(c0.addr());
    assert_eq!(cl.get("/").status, 200);
    assert_eq!(cl.get("/").status, 502);
}

#[test]
fn framing_goes_on_as_corral_read_it() {
    let raw = RawServer::start(Some(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  chunked\r\n\r\n0005;x=y\r\nhello\r\n000\r\n\r\n"
            .to_vec(),
    ));
    let (c, _) = start("", "", &[raw.addr]);
    // Read raw, to see the framing as it arrives.
    let mut s = TcpStream::connect(c.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello")
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"0\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.ends_with("\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "the server's chunk framing, canonical: {answer:?}"
    );
    let got = String::from_utf8_lossy(&raw.received.lock().unwrap()[0]).into_owned();
    assert!(got.contains("\r\nContent-Length: 5\r\n\r\nhello"), "{got}");
    assert_eq!(got.matches("Content-Length").count(), 1, "{got}");
    let raw2 = RawServer::start(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ));
    let (c2, _) = start("", "", &[raw2.addr]);
    let mut cl = Client::connect(c2.addr());
    cl.send(
        b"POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip ,chunked\r\n\r\n00005;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(cl.response(false).unwrap().status, 200);
    let got = String::from_utf8_lossy(&raw2.received.lock().unwrap()[0]).into_owned();
    assert!(
        got.ends_with(
            "\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
        ),
        "{got:?}"
    );
}

#[test]
fn a_crlf_after_a_body_is_no_request() {
    let o = Origin::start("a");
    let (c, _) = start_with(
        "http",
        r#"{ connect = "1s", client = "5s", server = "5s", http_request = "3s", http_keep_alive = "1s" }"#,
        "",
        "",
        &[o.addr],
    );
    let mut cl = Client::connect(c.addr());
    cl.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\r\n");
    assert_eq!(cl.response(false).unwrap().text(), "hello");
    // Idle, not a started head: closed silently at http_keep_alive (1 s),
    // no 408 at http_request (3 s).
    let waited = cl
        .closed_within(Duration::from_secs(2))
        .expect("closed without a byte");
    assert!(waited < Duration::from_millis(1800), "{waited:?}");
}

#[test]
fn a_client_fin_before_the_switch_reaches_the_server() {
    let o = Origin::start("a");
    let (c, _) = start("", "", &[o.addr]);
    let mut cl = Client::connect(c.addr());
    cl.send(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly",
    );
    cl.r.s.shutdown(std::net::Shutdown::Write).unwrap();
    let head = cl.r.head().unwrap().unwrap();
    assert!(head.line.contains(" 101 "), "{}", head.line);
    // The echo server gets the bytes and the FIN, echoes, and closes.
    let mut rest = Vec::new();
    cl.r.until_eof(&mut |b| rest.extend_from_slice(b)).unwrap();
    assert_eq!(rest, b"early");
}

/// `bout` of `show stat`'s FRONTEND row of `fe`.
fn frontend_bout(sock: &str, fe: &str) -> (u64, u64) {
    let stat = cli(std::path::Path::new(sock), "show stat");
    let row = stat_row(&stat, fe, "FRONTEND");
    (row["bin"].parse().unwrap(), row["bout"].parse().unwrap())
}

#[test]
fn bytes_are_counted_while_they_flow() {
    let o = Origin::start("a");
    let (c, sock) = start("", "", &[o.addr]);
    let len: u64 = 64 << 20;
    let mut cl = Client::connect(c.addr());
    cl.send(format!("GET /download?len={len} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let head = cl.r.head().unwrap().unwrap();
    let mut got = 0u64;
    cl.r.exact(16 << 20, &mut |b| got += b.len() as u64)
        .unwrap();
    // Halfway through: the counters already show most of what went out.
    thread::sleep(Duration::from_millis(100));
    let (_, during) = frontend_bout(&sock, "web");
    assert!(
        during >= 8 << 20 && during < len,
        "bout {during} while {got} bytes were read"
    );
    cl.r.exact(len - got, &mut |_| {}).unwrap();
    // At the end: exactly what the client received, head and body.
    let lines = wait_http_log(&c, cl.r.s.local_addr().unwrap(), 1, Duration::from_secs(3));
    let total = head.raw.len() as u64 + len;
    assert_eq!(lines[0].bytes, total);
    assert!(wait_until(Duration::from_secs(2), || frontend_bout(
        &sock, "web"
    )
    .1 == total));

    // TCP mode: the same through an echo server.
    let echo = EchoServer::start();
    let (t, tsock) = start_with(
        "tcp",
        r#"{ connect = "1s", client = "5s", server = "5s" }"#,
        "",
        "",
        &[echo.addr],
    );
    let mut s = TcpStream::connect(t.addr()).unwrap();
    let block = vec![7u8; 1 << 20];
    let mut back = vec![0u8; 1 << 20];
    for _ in 0..8 {
        s.write_all(&block).unwrap();
        s.read_exact(&mut back).unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    let (bin, bout) = frontend_bout(&tsock, "web");
    assert!(
        bin >= 6 << 20 && bout >= 6 << 20,
        "bin {bin} bout {bout} while open"
    );
    drop(s);
    assert!(wait_until(Duration::from_secs(3), || frontend_bout(
        &tsock, "web"
    ) == (
        8 << 20,
        8 << 20
    )));
}

#[test]
fn a_kept_alive_request_costs_two_loop_turns() {
    let o = Origin::start("a");
    let (c, sock) = start("", "", &[o.addr]);
    let loops = || -> u64 {
        let text = cli(std::path::Path::new(&sock), "show activity");
        let line = text.lines().find(|l| l.starts_with("loops:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/").status, 200);
    let n = 300;
    let before = loops();
    for _ in 0..n {
        assert_eq!(cl.get("/").text(), "a");
    }
    // Per request: the client's bytes, the server's answer. A wakeup that
    // finds nothing to do (a connection put back on the run queue by its
    // own loop) would make it three.
    let per = (loops() - before) as f64 / n as f64;
    assert!(per < 2.5, "{per:.2} loop turns per request");
}
