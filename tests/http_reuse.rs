//! Server connection reuse (`http_reuse`): per-worker pools of idle server
//! connections, the modes, the cap and the purge, idle connections the
//! server closes, and the replay of a request (with its body) that a reused
//! connection lost.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::cli::cli;
use common::http::*;

fn setup<'a>(backend: &'a str, servers: &'a [SocketAddr], workers: usize) -> HttpSetup<'a> {
    HttpSetup {
        workers,
        backend,
        servers,
        timeouts: r#"{ connect = "2s", client = "10s", server = "10s", http_keep_alive = "10s" }"#,
        ..Default::default()
    }
}

fn counter(sock: &std::path::Path, px: &str, sv: &str, col: &str) -> u64 {
    let stat = cli(sock, "show stat");
    stat_row(&stat, px, sv)[col].parse().unwrap_or(0)
}

/// Waits until `f` holds (up to `wait`), returning whether it did.
fn eventually(wait: Duration, f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn a_thousand_keep_alive_requests_open_at_most_clients_plus_workers_connections() {
    const CLIENTS: usize = 10;
    let o = Origin::start("a");
    let (c, sock) = setup("", &[o.addr], 2).start();
    let addr = c.addr();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            thread::spawn(move || {
                let mut cl = Client::connect(addr);
                for _ in 0..100 {
                    assert_eq!(cl.get("/name").status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let opened = o.conns.load(Relaxed) as usize;
    assert!(
        opened <= CLIENTS + 2,
        "{opened} server connections for {CLIENTS} clients and 2 workers"
    );
    // Every request went on a connection opened or reused, as counted.
    let connect = counter(&sock, "app", "s0", "connect");
    let reuse = counter(&sock, "app", "s0", "reuse");
    assert_eq!(connect as usize, opened, "connect column");
    assert_eq!(connect + reuse, 1000, "connect {connect} + reuse {reuse}");
}

#[test]
fn close_clients_reuse_server_connections_with_always_and_not_with_safe() {
    let o = Origin::start("a");
    let (c, sock) = setup("http_reuse = \"always\"", &[o.addr], 1).start();
    for _ in 0..200 {
        let r = request(
            c.addr(),
            b"GET /name HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 200);
    }
    let opened = o.conns.load(Relaxed);
    assert!(
        opened <= 2,
        "always: {opened} server connections for 200 requests"
    );
    assert!(counter(&sock, "app", "s0", "reuse") >= 198);
    drop(c);

    // `safe`: a client connection's first request gets a connection of
    // its own, so a close-mode load opens one per request.
    let o = Origin::start("a");
    let (c, _) = setup("http_reuse = \"safe\"", &[o.addr], 1).start();
    for _ in 0..50 {
        let r = request(
            c.addr(),
            b"GET /name HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(o.conns.load(Relaxed), 50, "safe: one per first request");
}

#[test]
fn aggressive_gives_first_requests_only_proven_connections() {
    let o = Origin::start("a");
    let (c, _) = setup("http_reuse = \"aggressive\"", &[o.addr], 1).start();
    let close = b"GET /name HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    // A connection that served one request is not proven: a first request
    // does not take it.
    assert_eq!(request(c.addr(), close).unwrap().status, 200);
    assert_eq!(request(c.addr(), close).unwrap().status, 200);
    assert_eq!(o.conns.load(Relaxed), 2);
    // A keep-alive client's second request proves its connection...
    let mut ka = Client::connect(c.addr());
    assert_eq!(ka.get("/name").status, 200);
    assert_eq!(ka.get("/name").status, 200);
    let before = o.conns.load(Relaxed);
    drop(ka);
    // ...which first requests may then take.
    for _ in 0..5 {
        assert_eq!(request(c.addr(), close).unwrap().status, 200);
    }
    assert_eq!(
        o.conns.load(Relaxed),
        before,
        "first requests took the proven one"
    );
}

#[test]
fn never_keeps_a_server_connection_to_its_client() {
    let o = Origin::start("a");
    let (c, _) = setup("http_reuse = \"never\"", &[o.addr], 1).start();
    let mut a = Client::connect(c.addr());
    let mut b = Client::connect(c.addr());
    for _ in 0..3 {
        assert_eq!(a.get("/name").status, 200);
        assert_eq!(b.get("/name").status, 200);
    }
    assert_eq!(o.conns.load(Relaxed), 2, "one per client, kept");
    drop((a, b));
    let close = b"GET /name HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(request(c.addr(), close).unwrap().status, 200);
    assert_eq!(o.conns.load(Relaxed), 3, "nothing shared");
}

#[test]
fn the_pool_is_capped_and_idle_connections_are_purged() {
    let o = Origin::start("a");
    let (c, _) = setup(
        "pool_max_idle = 2\npool_purge_delay = \"600ms\"",
        &[o.addr],
        1,
    )
    .start();
    let addr = c.addr();
    // Eight requests at once: eight server connections.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                let mut cl = Client::connect(addr);
                assert_eq!(cl.get("/sleep?ms=300").status, 200);
                cl
            })
        })
        .collect();
    let clients: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(o.conns.load(Relaxed), 8);
    // Only two stay idle; the rest close as their requests end.
    assert!(
        eventually(Duration::from_millis(400), || o.open.load(Relaxed) == 2),
        "open: {}",
        o.open.load(Relaxed)
    );
    // And those two close once unused for the purge delay.
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || o.open.load(Relaxed) == 0),
        "open: {}",
        o.open.load(Relaxed)
    );
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(200), "purged after {took:?}");
    drop(clients);
}

#[test]
fn a_server_that_closes_idle_connections_loses_no_request() {
    // The server's keep-alive timeout is 300 ms; requests come 250 to
    // 350 ms apart, so some meet a connection the server is closing at
    // that moment (the close crosses the request).
    let o = Origin::start_closing_idle("a", Duration::from_millis(300));
    let (c, sock) = setup("", &[o.addr], 1).start();
    let mut cl = Client::connect(c.addr());
    let mut failures = 0;
    for k in 0..30u64 {
        thread::sleep(Duration::from_millis(250 + (k * 37) % 101));
        cl.send(b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n");
        match cl.response(false) {
            Ok(r) if r.status == 200 => {}
            _ => {
                failures += 1;
                cl = Client::connect(c.addr());
            }
        }
    }
    assert_eq!(
        failures, 0,
        "requests failed across the server's idle closes"
    );
    let opened = o.conns.load(Relaxed);
    assert!(opened > 5, "the server did close connections: {opened}");
    let replays = counter(&sock, "app", "BACKEND", "wretr");
    eprintln!("30 requests: {opened} server connections, {replays} replayed");
}

/// Answers the first request of each connection (keep-alive, echoing the
/// body), and closes the connection without answering on the second, as
/// a server whose keep-alive timeout crosses a request. Returns the
/// address and every request received (head and body) in order.
fn forgetful_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got: Arc<Mutex<Vec<String>>> = Default::default();
    let rec = got.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let rec = rec.clone();
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = Reader::new(s);
                for nth in 0.. {
                    let Ok(Some(head)) = r.head() else { return };
                    let mut body = Vec::new();
                    let read = if head.has_token("transfer-encoding", "chunked") {
                        r.chunked(&mut |b| body.extend_from_slice(b))
                    } else {
                        let len = head.get("content-length").map_or(0, |v| v.parse().unwrap());
                        r.exact(len, &mut |b| body.extend_from_slice(b))
                    };
                    if read.is_err() {
                        return;
                    }
                    rec.lock().unwrap().push(format!(
                        "{} {}",
                        head.line,
                        String::from_utf8_lossy(&body)
                    ));
                    if nth == 1 {
                        return; // closed, unanswered
                    }
                    let out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = w.write_all(out.as_bytes());
                    let _ = w.write_all(&body);
                }
            });
        }
    });
    (addr, got)
}

#[test]
fn an_idempotent_request_lost_by_a_reused_connection_is_replayed_with_its_body() {
    let (addr, got) = forgetful_server();
    let (c, sock) = setup("", &[addr], 1).start();
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/first").status, 200);
    // The PUT goes on the reused connection, which the server drops: it
    // is sent again, body included, on a new connection.
    cl.send(b"PUT /doc HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    let r = cl.response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    let seen = got.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .filter(|l| l.starts_with("PUT /doc HTTP/1.1 hello world"))
            .count(),
        2,
        "{seen:?}"
    );
    assert!(counter(&sock, "app", "BACKEND", "wretr") >= 1);
    // A chunked PUT as well (the body queued in its canonical form).
    assert_eq!(cl.get("/again").status, 200);
    cl.send(
        b"PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
    );
    let r = cl.response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "abcde"));
    let chunked_puts = got
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.as_str() == "PUT /c HTTP/1.1 abcde")
        .count();
    assert_eq!(chunked_puts, 2, "sent, lost, sent again whole");
    // A 40 KiB body too (bulk, but kept whole for a replay, so copied).
    assert_eq!(cl.get("/again").status, 200);
    let big = "b".repeat(40 * 1024);
    cl.send(
        format!(
            "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    );
    let r = cl.response(false).unwrap();
    assert_eq!((r.status, r.body.len()), (200, big.len()));
    let big_puts = got
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.as_str() == format!("PUT /big HTTP/1.1 {big}"))
        .count();
    assert_eq!(big_puts, 2, "sent, lost, sent again whole");
    // A POST is not idempotent: it is never sent twice.
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/first").status, 200);
    cl.send(b"POST /order HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let r = cl.response(false).unwrap();
    assert_eq!(r.status, 502);
    let posts = got
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST /order"))
        .count();
    assert_eq!(posts, 1);
}

#[test]
fn pooled_connections_the_server_closed_are_dropped_not_reused() {
    // A server that closes 100 ms after each answer, pooled with `always`:
    // no request may be sent on a connection already closed.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = requests.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let seen = seen.clone();
            thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.fetch_add(1, Relaxed);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                thread::sleep(Duration::from_millis(100));
            });
        }
    });
    let (c, sock) = setup("http_reuse = \"always\"\nretries = 0", &[addr], 1).start();
    let close = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    for i in 0..5 {
        let r = request(c.addr(), close).unwrap();
        assert_eq!(r.status, 200, "request {i}");
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(requests.load(Relaxed), 5);
    assert_eq!(counter(&sock, "app", "s0", "reuse"), 0, "nothing reused");
}

/// The MSG_PEEK calls worker `pid` makes while `load` runs.
fn peeks_during(pid: i32, load: impl FnOnce()) -> usize {
    common::strace_during(pid, "recvfrom", load)
        .lines()
        .filter(|l| l.contains("MSG_PEEK"))
        .count()
}

#[test]
fn a_pooled_connection_reused_at_once_costs_no_syscall_one_idle_a_while_is_peeked() {
    if !common::have_strace() {
        return;
    }
    let o = Origin::start("a");
    // Kept well past the test's idle gaps.
    let (c, _sock) = setup("pool_purge_delay = \"20s\"", &[o.addr], 1).start();
    let pid = c.worker_pids()[0];
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/name").status, 200);
    let quick = peeks_during(pid, || {
        for _ in 0..100 {
            assert_eq!(cl.get("/name").status, 200);
        }
    });
    // The first comes after strace's attach (500 ms idle): peeked; the 99
    // that follow at once are not.
    assert_eq!(quick, 1, "100 reuses of a just-used connection: one peek");
    // A request that could not be sent again (a body) always looks first.
    let posts = peeks_during(pid, || {
        assert_eq!(cl.get("/name").status, 200);
        for _ in 0..5 {
            cl.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc");
            assert_eq!(cl.response(false).unwrap().status, 200);
        }
    });
    assert_eq!(
        posts,
        1 + 5,
        "the first GET after the attach, then every POST"
    );
    let idle = peeks_during(pid, || {
        thread::sleep(Duration::from_millis(400));
        assert_eq!(cl.get("/name").status, 200);
    });
    assert_eq!(
        idle, 1,
        "a connection idle past 250 ms is peeked once before reuse"
    );
    assert!(o.conns.load(Relaxed) <= 2, "reused, not reopened");
}
