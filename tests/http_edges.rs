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

fn start(frontend_extra: &str, backend_extra: &str, servers: &[SocketAddr]) -> (Corral, String) {
    let fe = free_port();
    let sock = temp_dir("http-edges").join("admin.sock");
    let mut cfg = format!(
        r#"
[global]
workers = 1

[stats]
socket = "{}"

[defaults]
mode = "http"
timeout = {{ connect = "300ms", client = "5s", server = "5s", http_request = "1s", queue = "400ms" }}

[frontend.web]
bind = "127.0.0.1:{fe}"
default_backend = "app"
{frontend_extra}

[backend.app]
{backend_extra}
"#,
        sock.display()
    );
    for (i, a) in servers.iter().enumerate() {
        cfg.push_str(&format!("server.s{i} = {{ addr = \"{a}\" }}\n"));
    }
    (Corral::start(&cfg), sock.display().to_string())
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
fn a_head_request_denied_on_a_kept_connection_gets_no_body() {
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
    // A HEAD the server answers: its head only, the connection goes on.
    cl.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = cl.response(true).unwrap();
    assert_eq!(r.status, 200);
    assert!(cl.r.buf.is_empty(), "no stray bytes after a HEAD answer");
}

#[test]
fn a_soft_stop_serves_a_connection_before_its_first_request() {
    let o = Origin::start("a");
    let (c, sock) = start("", "", &[o.addr]);
    let mut silent = Client::connect(c.addr());
    let mut kept = Client::connect(c.addr());
    assert_eq!(kept.get("/").status, 200);
    // Both are held by the first worker, which the reload soft-stops.
    thread::sleep(Duration::from_millis(200));
    c.signal(Signal::SIGUSR2);
    assert!(wait_until(Duration::from_secs(5), || {
        stats_command(std::path::Path::new(&sock), "show info")
            .is_ok_and(|t| t.contains("Generation: 2"))
    }));
    thread::sleep(Duration::from_millis(300));
    // The idle kept connection was closed; the silent one is served, then
    // closed.
    assert!(kept.closed_within(Duration::from_secs(2)).is_ok());
    silent.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = silent.response(false).expect("served by the old worker");
    assert_eq!(r.status, 200);
    assert!(r.head.has_token("connection", "close"));
    assert!(silent.closed_within(Duration::from_secs(2)).is_ok());
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
    let fe = free_port();
    let sock = temp_dir("http-edges").join("admin.sock");
    let c = Corral::start(&format!(
        r#"
[global]
workers = 1
[stats]
socket = "{}"
[defaults]
mode = "http"
timeout = {{ connect = "1s", client = "5s", server = "5s", queue = "300ms" }}
[frontend.web]
bind = "127.0.0.1:{fe}"
default_backend = "app"
[backend.app]
server.s = {{ addr = "{}", maxconn = 1 }}
"#,
        sock.display(),
        o.addr
    ));
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
