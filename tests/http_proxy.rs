//! HTTP/1.1 proxying as clients use it: keep-alive on both sides (1.1 and
//! 1.0), pipelining, chunked bodies both ways, a 1 GB upload and download
//! with checksums, HEAD/204/304 followed by another request, 100-continue,
//! an early answer during an upload, a WebSocket-style upgrade, and
//! close-delimited answers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::http::*;
use common::*;

fn start(servers: &[SocketAddr]) -> Corral {
    HttpSetup {
        timeouts: r#"{ connect = "2s", client = "10s", server = "10s", http_request = "5s", http_keep_alive = "5s" }"#,
        servers,
        ..Default::default()
    }
    .start()
    .0
}

#[test]
fn keep_alive_with_http11_and_http10_clients_and_with_the_server() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let base = c.baseline();
    let mut cl = Client::connect(c.addr());
    for _ in 0..5 {
        let r = cl.get("/name");
        assert_eq!((r.status, r.text().as_str()), (200, "a"));
        assert!(r.head.get("connection").is_none(), "{:?}", r.head);
    }
    assert_eq!(
        o.conns.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one server connection for five requests"
    );
    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut ten = Client::connect(c.addr());
    ten.send(b"GET /name HTTP/1.0\r\n\r\n");
    let r = ten.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.head.has_token("connection", "close"), "{:?}", r.head);
    assert!(ten.closed_within(Duration::from_secs(2)).is_ok());
    // HTTP/1.0 with keep-alive (ab, health checkers): kept.
    let mut ka = Client::connect(c.addr());
    for _ in 0..3 {
        ka.send(b"GET /name HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = ka.response(false).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.head.has_token("connection", "keep-alive"), "{:?}", r.head);
    }
    drop((cl, ka, ten));
    c.assert_quiescent(&base);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let mut cl = Client::connect(c.addr());
    let mut all = Vec::new();
    for i in 0..20 {
        all.extend_from_slice(
            format!("GET /status/{} HTTP/1.1\r\nHost: t\r\n\r\n", 200 + i).as_bytes(),
        );
    }
    all.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    all.extend_from_slice(b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n");
    cl.send(&all);
    for i in 0..20 {
        let r = cl.response(false).unwrap();
        assert_eq!(r.status, 200 + i, "answer {i} in order");
    }
    assert_eq!(cl.response(false).unwrap().text(), "hello");
    assert_eq!(cl.response(false).unwrap().text(), "a");
}

#[test]
fn chunked_bodies_both_ways() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let mut cl = Client::connect(c.addr());
    // Upload in odd-sized chunks, with an extension and a trailer.
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut sum = Sum::default();
    for (i, n) in [1usize, 17, 4096, 65536, 3, 100_000].iter().enumerate() {
        let data: Vec<u8> = (0..*n).map(|k| (k * 7 + i) as u8).collect();
        sum.add(&data);
        req.extend_from_slice(format!("{n:x};ext=v{i}\r\n").as_bytes());
        req.extend_from_slice(&data);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    cl.send(&req);
    let r = cl.response(false).unwrap();
    assert_eq!((r.status, r.text()), (200, sum.finish()));
    // Download chunked: relayed chunked to a 1.1 client...
    cl.send(b"GET /download?len=3000000&chunked=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = cl.response(false).unwrap();
    assert!(r.head.has_token("transfer-encoding", "chunked"));
    let mut got = Sum::default();
    got.add(&r.body);
    assert_eq!(got.finish(), pattern_sum(3_000_000));
    // ...and dechunked for a 1.0 client, which learns the end from the close.
    let mut ten = Client::connect(c.addr());
    ten.send(b"GET /download?len=500000&chunked=1 HTTP/1.0\r\n\r\n");
    let r = ten.response(false).unwrap();
    assert!(
        !r.head.has_token("transfer-encoding", "chunked"),
        "{:?}",
        r.head
    );
    let mut got = Sum::default();
    got.add(&r.body);
    assert_eq!(got.finish(), pattern_sum(500_000));
}

#[test]
fn a_gigabyte_up_and_down_arrives_intact() {
    const GB: u64 = 1 << 30;
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let base = c.baseline();
    let want = pattern_sum(GB);
    // Upload with a Content-Length, the body streamed as it is made.
    let mut cl = Client::connect(c.addr());
    cl.send(format!("PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {GB}\r\n\r\n").as_bytes());
    let mut writer = cl.r.s.try_clone().unwrap();
    let up = thread::spawn(move || write_pattern(&mut writer, GB));
    let r = cl.response(false).unwrap();
    up.join().unwrap();
    assert_eq!((r.status, r.text()), (200, want.clone()));
    // Download on the same connection, checked as it streams.
    cl.send(format!("GET /download?len={GB} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let head = cl.r.head().unwrap().unwrap();
    assert!(head.line.contains(" 200 "));
    let mut sum = Sum::default();
    cl.r.exact(GB, &mut |b| sum.add(b)).unwrap();
    assert_eq!(sum.finish(), want);
    drop(cl);
    c.assert_quiescent(&base);
}

#[test]
fn head_204_and_304_have_no_body_and_the_connection_goes_on() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let mut cl = Client::connect(c.addr());
    cl.send(b"HEAD /name HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = cl.response(true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.head.get("content-length"),
        Some("1"),
        "HEAD keeps the length of the GET"
    );
    assert_eq!(cl.get("/name").text(), "a");
    for status in [204, 304] {
        cl.send(format!("GET /status/{status} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = cl.response(false).unwrap();
        assert_eq!(r.status, status);
        assert!(r.body.is_empty());
        assert_eq!(cl.get("/name").text(), "a", "after {status}");
    }
}

#[test]
fn expect_100_continue_then_the_body() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let mut cl = Client::connect(c.addr());
    cl.send(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    );
    let interim = cl.response_with(false, true).unwrap();
    assert_eq!(
        interim.status, 100,
        "the client hears 100 Continue before sending"
    );
    cl.send(b"hello world");
    let r = cl.response(false).unwrap();
    let mut s = Sum::default();
    s.add(b"hello world");
    assert_eq!((r.status, r.text()), (200, s.finish()));
}

#[test]
fn an_early_answer_during_an_upload_reaches_the_client() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let base = c.baseline();
    let mut cl = Client::connect(c.addr());
    let len = 50u64 << 20;
    cl.send(
        format!("POST /early413 HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    );
    let mut writer = cl.r.s.try_clone().unwrap();
    let up = thread::spawn(move || {
        let chunk = vec![b'x'; 65536];
        let mut sent = 0u64;
        while sent < len {
            if writer.write_all(&chunk).is_err() {
                break; // corral closed: the answer came first
            }
            sent += chunk.len() as u64;
        }
    });
    let r = cl.response(false).expect("the 413 arrives");
    assert_eq!(r.status, 413);
    assert!(r.head.has_token("connection", "close"), "{:?}", r.head);
    up.join().unwrap();
    drop(cl);
    c.assert_quiescent(&base);
}

#[test]
fn a_websocket_upgrade_becomes_a_tunnel() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let base = c.baseline();
    let mut cl = Client::connect(c.addr());
    cl.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    let r = cl.response(false).unwrap();
    assert_eq!(r.status, 101);
    assert!(r.head.has_token("upgrade", "websocket"));
    assert!(r.head.has_token("connection", "upgrade"));
    for msg in [&b"\x81\x05hello"[..], &vec![7u8; 200_000]] {
        cl.send(msg);
        let mut got = vec![0u8; msg.len()];
        let mut at = 0;
        while at < got.len() {
            if !cl.r.buf.is_empty() {
                let n = cl.r.buf.len().min(got.len() - at);
                got[at..at + n].copy_from_slice(&cl.r.buf[..n]);
                cl.r.buf.drain(..n);
                at += n;
                continue;
            }
            let n = cl.r.s.read(&mut got[at..]).unwrap();
            assert!(n > 0, "tunnel closed early");
            at += n;
        }
        assert_eq!(&got, msg);
    }
    cl.r.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(cl.closed_within(Duration::from_secs(3)).is_ok());
    let lines = wait_http_log(&c, cl.r.s.local_addr().unwrap(), 1, Duration::from_secs(3));
    assert_eq!(
        (lines[0].status, lines[0].tsc.as_str()),
        (101, "----"),
        "{}",
        lines[0].raw
    );
    assert!(
        lines[0].bytes > 200_000,
        "tunnel bytes count: {}",
        lines[0].raw
    );
    drop(cl);
    c.assert_quiescent(&base);
}

#[test]
fn a_close_delimited_answer_ends_with_the_close() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let mut cl = Client::connect(c.addr());
    cl.send(b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = cl.response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "a until close"));
    assert!(r.head.has_token("connection", "close"));
}

/// A request that asks for the close, read whole, is answered and the
/// socket closed at once (a plain FIN, as HAProxy does): no half-close, no
/// unacknowledged-bytes probe, no wait for the client's FIN. A client that
/// sent more after its request still gets the careful close.
#[test]
fn a_connection_close_request_is_closed_at_once() {
    let Some((_o, c, pid)) = traced_setup() else {
        return;
    };
    let calls = common::strace_during(pid, "shutdown,ioctl,close,sendto,sendmsg", || {
        for _ in 0..20 {
            let r = request(
                c.addr(),
                b"GET /name HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), "a");
        }
    });
    let count = |name: &str| calls.lines().filter(|l| l.contains(name)).count();
    assert_eq!(count("shutdown("), 0, "{calls}");
    assert_eq!(count("ioctl("), 0, "{calls}");
    assert!(count("close(") >= 20, "{calls}");
    // Each request one send to the server, each answer (head and body
    // read together) one send to the client: 3 per request if the head
    // and the body went apart.
    assert_eq!(count("sendto(") + count("sendmsg("), 40, "{calls}");
    // Bytes after the request (a pipelined one the close drops): the
    // half-close and linger keep them from resetting the answer away.
    let calls = common::strace_during(pid, "shutdown", || {
        let mut cl = Client::connect(c.addr());
        cl.send(b"GET /name HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /name HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(cl.response(false).unwrap().status, 200);
    });
    assert_eq!(shutdowns(&calls), 1, "{calls}");
    // A large answer keeps the careful close too (a late client byte could
    // reset what is not yet acknowledged).
    let calls = common::strace_during(pid, "shutdown", || {
        let r = request(
            c.addr(),
            b"GET /download?len=100000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body.len(), 100_000);
    });
    assert_eq!(shutdowns(&calls), 1, "{calls}");
}

/// A keep-alive answer whose body came with its head goes out in one
/// write, as a closing one does: two sends per request, not three.
#[test]
fn a_keep_alive_answer_read_whole_goes_out_in_one_write() {
    let Some((_o, c, pid)) = traced_setup() else {
        return;
    };
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/name").status, 200);
    let calls = common::strace_during(pid, "sendto,sendmsg", || {
        for _ in 0..20 {
            let r = cl.get("/name");
            assert_eq!((r.status, r.text().as_str()), (200, "a"));
        }
    });
    let sends = calls
        .lines()
        .filter(|l| l.contains("sendto(") || l.contains("sendmsg("))
        .count();
    assert_eq!(sends, 40, "{calls}");
}

/// One origin behind a default corral, and its worker's pid to trace; `None`
/// without strace.
fn traced_setup() -> Option<(Origin, common::Corral, i32)> {
    if !common::have_strace() {
        return None;
    }
    let o = Origin::start("a");
    let (c, _sock) = HttpSetup {
        servers: &[o.addr],
        ..Default::default()
    }
    .start();
    let pid = c.worker_pids()[0];
    Some((o, c, pid))
}

fn shutdowns(strace: &str) -> usize {
    strace.lines().filter(|l| l.contains("shutdown(")).count()
}

/// A local answer that closes and drops pipelined bytes gets the careful
/// close, not the fast one.
#[test]
fn a_closing_local_answer_with_bytes_after_it_closes_carefully() {
    if !common::have_strace() {
        return;
    }
    let o = Origin::start("a");
    let (c, _sock) = HttpSetup {
        servers: &[o.addr],
        frontend: r#"rules = ["http-request return status 200 content-type text/plain string hi if { path /local }"]"#,
        ..Default::default()
    }
    .start();
    let pid = c.worker_pids()[0];
    let calls = common::strace_during(pid, "shutdown", || {
        let mut cl = Client::connect(c.addr());
        cl.send(b"GET /local HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /name HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(cl.response(false).unwrap().text(), "hi");
    });
    assert_eq!(shutdowns(&calls), 1, "{calls}");
    let calls = common::strace_during(pid, "shutdown", || {
        let r = request(
            c.addr(),
            b"GET /local HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.text(), "hi");
    });
    assert_eq!(shutdowns(&calls), 0, "alone: the fast close");
}

/// `defer_accept = true`: a connection is accepted with its first bytes,
/// so a silent one is no connection of corral's yet, and one that speaks is
/// served at once.
#[test]
fn a_deferred_accept_takes_a_connection_with_its_request() {
    let o = Origin::start("a");
    let (c, sock) = HttpSetup {
        servers: &[o.addr],
        frontend: "defer_accept = true",
        ..Default::default()
    }
    .start();
    let mut silent = std::net::TcpStream::connect(c.addr()).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(info_field(&sock, "CurrConns").as_deref(), Some("0"));
    let t = std::time::Instant::now();
    silent
        .write_all(b"GET /name HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    silent.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("a"), "{answer}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "served when it spoke"
    );
    // A plain request on a fresh connection, as any client sends it.
    let r = request(c.addr(), b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(r.text(), "a");
    // A reload that drops the key turns it off on the same listener, and
    // one that sets it again turns it back on.
    let conns = || info_field(&sock, "CurrConns");
    let text = std::fs::read_to_string(&c.config_path).unwrap();
    std::fs::write(&c.config_path, text.replace("defer_accept = true", "")).unwrap();
    reload_ok(&c, &sock);
    assert!(wait_until(Duration::from_secs(5), || conns().as_deref() == Some("0")));
    let silent = std::net::TcpStream::connect(c.addr()).unwrap();
    assert!(
        wait_until(Duration::from_millis(500), || conns().as_deref()
            == Some("1")),
        "off after the reload: accepted at once"
    );
    drop(silent);
    assert!(wait_until(Duration::from_secs(5), || conns().as_deref() == Some("0")));
    std::fs::write(&c.config_path, &text).unwrap();
    reload_ok(&c, &sock);
    let _silent = std::net::TcpStream::connect(c.addr()).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        conns().as_deref(),
        Some("0"),
        "on again after the next reload"
    );
}

/// Time from a request sent in two writes, the second held by Nagle until
/// the first is acknowledged, to its whole answer.
fn nagled_request(cl: &mut Client, first: &[u8], second: &[u8]) -> (Duration, Response) {
    let t = std::time::Instant::now();
    cl.send(first);
    cl.send(second);
    let r = cl.response(false).expect("a response");
    (t.elapsed(), r)
}

/// HTTP listeners delay the ACK of a request so that it rides on the answer
/// (one packet less per connection), and the kernel keeps delaying them on a
/// connection whose ACKs ride on answers. A client that must send more before
/// it is answered gets its ACKs at once, on every request: with Nagle on, its
/// second write waits for the ACK of the first, and a delayed ACK would hold
/// it for the kernel's delayed-ACK time (40 ms or more).
#[test]
fn a_client_with_nagle_is_not_held_up_by_delayed_acks() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut sum = Sum::default();
    sum.add(b"hello world");
    let sum = sum.finish();
    for _ in 0..5 {
        let mut cl = Client::connect(c.addr());
        cl.r.s.set_nodelay(false).unwrap();
        // A head in two writes, first on a fresh connection, then twice
        // more on the same one (keep-alive), then a whole head and its body.
        for t in &mut times[..3] {
            let (took, r) = nagled_request(&mut cl, b"GET /name HTTP/1.1\r\nHo", b"st: t\r\n\r\n");
            assert_eq!((r.status, r.text().as_str()), (200, "a"));
            t.push(took);
        }
        let (took, r) = nagled_request(
            &mut cl,
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n",
            b"hello world",
        );
        assert_eq!((r.status, r.text()), (200, sum.clone()));
        times[3].push(took);
    }
    let limit = Duration::from_millis(25);
    for (what, t) in ["first head", "second head", "third head", "body"]
        .iter()
        .zip(&mut times)
    {
        t.sort();
        assert!(t[2] < limit, "{what} in two writes: {t:?}");
    }
}

/// HTTP listeners hand out connections with delayed ACKs, so the ACK of a
/// request waits (up to the kernel's delayed-ACK time, 40 ms or more) to
/// ride on the answer: 5 ms after a request to a server that takes 300 ms,
/// the request is still unacknowledged. With quick ACKs it is acknowledged
/// within microseconds on loopback.
#[test]
fn a_request_is_acknowledged_with_its_answer() {
    let o = Origin::start("a");
    let c = start(&[o.addr]);
    let mut waiting = 0;
    for _ in 0..5 {
        let mut cl = Client::connect(c.addr());
        cl.send(b"GET /sleep?ms=300 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        thread::sleep(Duration::from_millis(5));
        if tcp_info(&cl.r.s).tcpi_unacked == 1 {
            waiting += 1;
        }
        assert_eq!(cl.response(false).unwrap().status, 200);
    }
    assert!(waiting >= 3, "unacknowledged after 5 ms: {waiting} of 5");
}

/// corral connects to a server with the request in hand, so the last ACK
/// of the handshake rides on the request: the server receives one segment
/// fewer than from a client that connects, then writes.
#[test]
fn the_handshake_ack_rides_on_the_request() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = start(&[l.local_addr().unwrap()]);
    let mut direct = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    direct
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let plain = segments_for_a_request(&l);
    for _ in 0..3 {
        let mut cl = Client::connect(c.addr());
        cl.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let via = segments_for_a_request(&l);
        assert_eq!(cl.response(false).unwrap().status, 200);
        assert_eq!(
            via,
            plain - 1,
            "segments in for a request: {via} via corral, {plain} direct"
        );
    }
}
