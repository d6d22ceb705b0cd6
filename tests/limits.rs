//! Limits: a frontend at `maxconn` leaves new clients waiting (in the kernel
//! backlog) instead of refusing them or overloading the servers; a server at
//! its `maxconn` makes new connections wait in the backend queue, and a
//! connection that waits longer than `timeout.queue` is closed.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

fn config(fe_maxconn: Option<u32>, timeouts: &str, server: &str) -> String {
    let port = free_port();
    let maxconn = fe_maxconn
        .map(|m| format!("maxconn = {m}"))
        .unwrap_or_default();
    format!(
        r#"
[global]
workers = 1

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
{maxconn}
default_backend = "be"

[backend.be]
mode = "tcp"
balance = "roundrobin"
timeout = {{ {timeouts} }}
server.a = {{ {server} }}
"#
    )
}

fn addr_of(s: &str) -> String {
    format!(r#"addr = "{s}""#)
}

/// Frontend maxconn = 2: two clients are served; a third is accepted by the
/// kernel but gets nothing through and no server connection is opened for it;
/// when one of the first two closes, the third proceeds.
#[test]
fn frontend_maxconn_holds_extra_clients_until_a_slot_frees() {
    let echo = EchoServer::start();
    let corral = Corral::start(&config(
        Some(2),
        r#"connect = "1s", client = "10s", server = "10s""#,
        &addr_of(&echo.addr.to_string()),
    ));
    let mut c1 = corral.connect();
    let mut c2 = corral.connect();
    echo_roundtrip(&mut c1, b"one");
    echo_roundtrip(&mut c2, b"two");

    let mut c3 = corral.connect(); // the kernel completes the handshake
    std::io::Write::write_all(&mut c3, b"three").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        data_arrives_within(&mut c3, Duration::from_millis(800), &mut buf),
        None,
        "a third connection got data through a frontend with maxconn = 2"
    );
    assert_eq!(
        echo.conns(),
        2,
        "corral opened a server connection beyond the frontend's maxconn"
    );

    drop(c1);
    let t = Instant::now();
    c3.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = [0u8; 5];
    c3.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("third connection not served after a slot freed: {e}"));
    assert_eq!(&got, b"three");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "third connection served {:?} after a slot freed",
        t.elapsed()
    );
    echo_roundtrip(&mut c2, b"still");
    assert_eq!(echo.conns(), 3);
}

/// Server maxconn = 1 with a queue: the second connection waits (no server
/// connection, no data) while the first is open, then reaches the server once
/// the first closes; its log line shows the time spent queued (Tw).
#[test]
fn server_maxconn_queues_then_serves() {
    let a = NameServer::start("a");
    let corral = Corral::start(&config(
        None,
        r#"connect = "1s", client = "10s", server = "10s", queue = "5s""#,
        &format!(r#"addr = "{}", maxconn = 1"#, a.addr),
    ));
    let mut c1 = corral.connect();
    assert_eq!(read_line(&mut c1).unwrap(), "a");
    let mut c2 = corral.connect();
    let c2_local = c2.local_addr().unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        data_arrives_within(&mut c2, Duration::from_millis(700), &mut buf),
        None,
        "second connection reached the server although it has maxconn = 1"
    );
    assert_eq!(a.conns(), 1, "server a got a second concurrent connection");

    drop(c1);
    let t = Instant::now();
    assert_eq!(
        read_line(&mut c2).unwrap_or_else(|e| panic!("queued connection never served: {e}")),
        "a"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "queued connection served {:?} after the slot freed",
        t.elapsed()
    );
    echo_roundtrip(&mut c2, b"after the queue");
    drop(c2);
    let l = corral.wait_log_line(c2_local, Duration::from_secs(3));
    assert!(
        l.tw >= 500,
        "Tw (time queued) of the second connection should be >= 500 ms: {}",
        l.raw
    );
    assert_eq!(l.term, "--", "{}", l.raw);
}

/// timeout queue = 1s: a connection queued behind a busy server (maxconn 1) is
/// closed after about 1 s without ever reaching the server, and logged `sQ`.
#[test]
fn queue_timeout_closes_the_waiting_client() {
    let a = NameServer::start("a");
    let corral = Corral::start(&config(
        None,
        r#"connect = "1s", client = "10s", server = "10s", queue = "1s""#,
        &format!(r#"addr = "{}", maxconn = 1"#, a.addr),
    ));
    let mut c1 = corral.connect();
    assert_eq!(read_line(&mut c1).unwrap(), "a");
    let mut c2 = corral.connect();
    let c2_local: SocketAddr = c2.local_addr().unwrap();
    let t = Instant::now();
    let (how, _) = wait_closed(&mut c2, Duration::from_secs(4));
    let waited = t.elapsed();
    assert_ne!(
        how,
        Closed::StillOpen,
        "queued client still open 4 s into a 1 s queue timeout"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2500),
        "queued client closed after {waited:?}, expected about 1 s"
    );
    assert_eq!(
        a.conns(),
        1,
        "the timed-out connection must never reach the server"
    );
    let l = corral.wait_log_line(c2_local, Duration::from_secs(2));
    assert_eq!(
        l.term, "sQ",
        "termination state of a queue timeout: {}",
        l.raw
    );
    echo_roundtrip(&mut c1, b"first one unaffected");
}

/// `memory_limit` (like `haproxy -m`): a worker whose memory budget is spent
/// stops taking connections (they wait in the backlog) instead of failing an
/// allocation; nothing crashes, and the waiting clients are served once
/// connections close.
#[test]
fn memory_limit_refuses_work_instead_of_crashing() {
    use std::io::Write;
    let backend = EchoServer::start();
    let port = free_port();
    let c = Corral::start(&format!(
        r#"
[global]
workers = 1
memory_limit = "1MiB"

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"

[backend.be]
mode = "tcp"
server.a = {{ addr = "{}" }}
"#,
        backend.addr
    ));
    let workers = c.worker_pids();
    let mut conns: Vec<std::net::TcpStream> = (0..100).map(|_| c.connect()).collect();
    let mut served = 0;
    let mut waiting = Vec::new();
    for s in conns.iter_mut() {
        s.write_all(b"x").unwrap();
    }
    // One shared wait, then a quick look at each connection.
    std::thread::sleep(Duration::from_millis(500));
    for (i, s) in conns.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        if data_arrives_within(s, Duration::from_millis(5), &mut b).is_some() {
            served += 1;
        } else {
            waiting.push(i);
        }
    }
    assert!(
        served > 0 && served < 100,
        "a 1 MiB budget serves some, not all, of 100 connections: {served}"
    );
    assert_eq!(c.worker_pids(), workers, "no worker crashed");
    // Free the served connections: the waiting ones get their turn.
    let mut rest: Vec<std::net::TcpStream> = Vec::new();
    for (i, s) in conns.into_iter().enumerate() {
        if waiting.contains(&i) {
            rest.push(s);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut later = 0;
    for s in rest.iter_mut().take(10) {
        let mut b = [0u8; 1];
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        if data_arrives_within(s, left, &mut b).is_some() {
            later += 1;
        }
    }
    assert_eq!(
        later, 10,
        "clients that waited are served once memory is free again"
    );
}

/// Global maxconn is a cap on the whole instance, not per worker: with
/// `workers = 2` and `maxconn = 3` exactly three connections are served at
/// once (shares 2 + 1; a worker at its share leaves the accept wait queue so
/// the other one gets the connections); the fourth waits until one closes.
#[test]
fn global_maxconn_is_exact_across_workers() {
    use std::io::Write;
    let backend = EchoServer::start();
    let port = free_port();
    let c = Corral::start(&format!(
        r#"
[global]
workers = 2
maxconn = 3

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"

[backend.be]
mode = "tcp"
server.a = {{ addr = "{}" }}
"#,
        backend.addr
    ));
    let mut conns: Vec<std::net::TcpStream> = Vec::new();
    for i in 0..3 {
        let mut s = c.connect();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        assert!(
            data_arrives_within(&mut s, Duration::from_secs(2), &mut b).is_some(),
            "connection {i} of 3 is served"
        );
        conns.push(s);
    }
    let mut fourth = c.connect();
    fourth.write_all(b"y").unwrap();
    let mut b = [0u8; 1];
    assert!(
        data_arrives_within(&mut fourth, Duration::from_millis(700), &mut b).is_none(),
        "a fourth concurrent connection waits"
    );
    assert_eq!(
        backend.active(),
        3,
        "the server sees exactly three connections"
    );
    drop(conns.remove(1));
    assert!(
        data_arrives_within(&mut fourth, Duration::from_secs(2), &mut b).is_some(),
        "once one closes, the waiting one is served"
    );
}
