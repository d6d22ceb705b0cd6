//! HTTP timeouts, failures and counters, adversarially: a head trickled
//! byte by byte gets its 408 at `http_request`; an idle keep-alive
//! connection is closed without a 408; a server killed during load costs no
//! request after `fall` checks and is back after `rise`; 100 requests over
//! two workers are exactly 100 in the counter rows; after all of it corral
//! is idle and holds no fd more than before. An upload held back by a busy
//! server is not timed as the client's, and one to a stalled server ends in
//! a 504 at `timeout server`, spliced or copied.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::http::*;
use common::*;

fn start(
    servers: &[SocketAddr],
    workers: usize,
    backend_extra: &str,
) -> (Corral, std::path::PathBuf) {
    HttpSetup {
        workers,
        timeouts: r#"{ connect = "1s", client = "5s", server = "3s", http_request = "1s", http_keep_alive = "1s" }"#,
        backend: backend_extra,
        servers,
        ..Default::default()
    }
    .start()
}

#[test]
fn a_trickled_head_gets_408_at_http_request() {
    let o = Origin::start("a");
    let (c, _) = start(&[o.addr], 1, "");
    let base = c.baseline();
    let mut cl = Client::connect(c.addr());
    let started = Instant::now();
    let head =
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut w = cl.r.s.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        use std::io::Write;
        for b in head.iter() {
            if w.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let r = cl.response(false).expect("a 408");
    let took = started.elapsed();
    assert_eq!(r.status, 408);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "408 at http_request (1s), got it after {took:?}"
    );
    let _ = trickle.join();
    assert_eq!(
        o.requests.load(Ordering::Relaxed),
        0,
        "nothing reached the server"
    );
    let l = &wait_http_log(&c, cl.r.s.local_addr().unwrap(), 1, Duration::from_secs(2))[0];
    assert_eq!((l.status, l.tsc.as_str()), (408, "cR--"), "{}", l.raw);
    drop(cl);
    c.assert_quiescent(&base);
}

#[test]
fn an_idle_keep_alive_connection_closes_silently() {
    let o = Origin::start("a");
    let (c, _) = start(&[o.addr], 1, "");
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/").status, 200);
    let closed = cl.closed_within(Duration::from_secs(4));
    let took = closed.unwrap_or_else(|got| panic!("an idle connection must get no bytes: {got:?}"));
    assert!(
        took >= Duration::from_millis(800),
        "closed after http_keep_alive (1s): {took:?}"
    );
    // An empty first connection also goes silently, at http_request.
    let mut empty = Client::connect(c.addr());
    assert!(empty.closed_within(Duration::from_secs(4)).is_ok());
    // One log line: the request; none for the idle ends.
    assert_eq!(
        http_log_lines(&c.log_text(), cl.r.s.local_addr().unwrap()).len(),
        1
    );
    assert!(http_log_lines(&c.log_text(), empty.r.s.local_addr().unwrap()).is_empty());
}

#[test]
fn a_server_killed_during_load_costs_nothing_after_fall_and_is_back_after_rise() {
    let a = Origin::start("a");
    let mut b = Origin::start("b");
    let b_addr = b.addr;
    let (c, sock) = start(
        &[a.addr, b.addr],
        1,
        r#"check = { interval = "200ms", rise = 2, fall = 2 }
retries = 2"#,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let by_b = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let addr = c.addr();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed, by_b, total) =
                (stop.clone(), failed.clone(), by_b.clone(), total.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // New connections and keep-alive both.
                    let mut cl = Client::connect(addr);
                    for _ in 0..5 {
                        cl.send(b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n");
                        match cl.response(false) {
                            Ok(r) if r.status == 200 => {
                                if r.text() == "b" {
                                    by_b.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    assert!(
        by_b.load(Ordering::Relaxed) > 0,
        "b serves before it is killed"
    );
    b.stop();
    // Connections b kept open end with its threads; new ones are refused.
    thread::sleep(Duration::from_millis(200 * 2 + 300));
    let failed_at_fall = failed.load(Ordering::Relaxed);
    let b_at_fall = by_b.load(Ordering::Relaxed);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        failed.load(Ordering::Relaxed),
        failed_at_fall,
        "no failed request once fall checks marked b down"
    );
    assert_eq!(
        by_b.load(Ordering::Relaxed),
        b_at_fall,
        "b gets nothing while down"
    );
    let stat = cli(&sock, "show stat");
    assert!(
        stat.lines()
            .any(|l| l.starts_with("app,s1,") && l.contains(",DOWN,")),
        "{stat}"
    );
    // Back on the same port: up again after rise checks, and serving.
    let _b2 = Origin::start_on(b_addr, "b");
    thread::sleep(Duration::from_millis(200 * 2 + 600));
    let before = by_b.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert!(
        by_b.load(Ordering::Relaxed) > before,
        "b serves again after rise"
    );
    assert_eq!(failed.load(Ordering::Relaxed), failed_at_fall);
    assert!(
        failed_at_fall <= 4,
        "at most the requests in flight on b's connections when it died fail: {failed_at_fall}"
    );
    eprintln!(
        "{} requests, {failed_at_fall} failed when b died",
        total.load(Ordering::Relaxed)
    );
}

#[test]
fn counters_of_two_workers_add_up_exactly() {
    let o = Origin::start("a");
    let (c, sock) = start(&[o.addr], 2, "");
    let base = c.baseline();
    // Connections spread over both workers (one request each, and some
    // keep-alive), 100 requests in all.
    let mut done = 0;
    let mut owners = std::collections::HashSet::new();
    while done < 100 {
        let mut cl = Client::connect(c.addr());
        if let Some(p) = c.owner_of(&cl.r.s) {
            owners.insert(p);
        }
        let n = if done % 3 == 0 { 4 } else { 1 };
        for _ in 0..n.min(100 - done) {
            assert_eq!(cl.get("/").status, 200);
            done += 1;
        }
    }
    assert_eq!(owners.len(), 2, "both workers served");
    thread::sleep(Duration::from_millis(200));
    let stat = cli(&sock, "show stat");
    let row = |px: &str, sv: &str| -> std::collections::HashMap<String, String> {
        let header: Vec<&str> = stat
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let line = stat
            .lines()
            .find(|l| l.starts_with(&format!("{px},{sv},")))
            .unwrap_or_else(|| panic!("{px}/{sv} in {stat}"));
        header
            .iter()
            .zip(line.split(','))
            .map(|(h, v)| (h.to_string(), v.to_string()))
            .collect()
    };
    let be = row("app", "BACKEND");
    assert_eq!(be["stot"], "100", "{stat}");
    assert_eq!(be["hrsp_2xx"], "100", "{stat}");
    let fe = row("web", "FRONTEND");
    assert_eq!(fe["req_tot"], "100", "{stat}");
    assert_eq!(fe["hrsp_2xx"], "100");
    let srv = row("app", "s0");
    assert_eq!(srv["hrsp_2xx"], "100");
    assert_eq!(
        srv["connect"].parse::<u64>().unwrap() + srv["reuse"].parse::<u64>().unwrap(),
        100,
        "every request had a new or a reused server connection"
    );
    // Every row has the header's field count and a trailing comma.
    let width = stat.lines().next().unwrap().split(',').count();
    for l in stat.lines().skip(1).filter(|l| !l.is_empty()) {
        assert_eq!(l.split(',').count(), width, "{l}");
        assert!(l.ends_with(','));
    }
    c.assert_quiescent(&base);
}

/// An upload to a server busy for `pause_ms` before it reads the body, with
/// the given timeouts; the client writes 16 MiB as fast as it is taken.
/// Returns the answer, its log's termination state, and how long it took.
fn upload_to_a_busy_server(
    splice: bool,
    timeouts: &str,
    pause_ms: u64,
) -> (Response, String, Duration) {
    let o = Origin::start("a");
    let (c, sock) = HttpSetup {
        servers: &[o.addr],
        backend: if splice {
            "splice = true"
        } else {
            "splice = false"
        },
        timeouts,
        ..Default::default()
    }
    .start();
    let len = 16 << 20;
    let mut cl = Client::connect(c.addr());
    let started = Instant::now();
    cl.send(
        format!(
            "PUT /upload?pause={pause_ms} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut w = cl.r.s.try_clone().unwrap();
    // (A write error is the answer cutting the upload short.)
    let writer = thread::spawn(move || {
        let _ = try_write_pattern(&mut w, len);
    });
    let r = cl.response(false).expect("an answer");
    let took = started.elapsed();
    let _ = cl.r.s.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    let l = &wait_http_log(&c, cl.r.s.local_addr().unwrap(), 1, Duration::from_secs(3))[0];
    let tsc = l.tsc.clone();
    assert_eq!(
        r.status == 200,
        r.text() == pattern_sum(len),
        "the body arrived whole"
    );
    // A spliced upload that went through did splice: a pipe was taken, and
    // is back in the pool (one cut short closes its pipe with bytes in it).
    if r.status == 200 {
        let pipes = common::cli::info_field(&sock, "PipesFree").unwrap_or_default();
        assert_eq!(
            pipes != "0",
            splice,
            "PipesFree {pipes} with splice = {splice}"
        );
    }
    (r, tsc, took)
}

#[test]
fn an_upload_held_up_by_a_busy_server_is_not_timed_as_the_client() {
    // The server reads nothing for 3 s; corral's buffers fill and it stops
    // reading the client, which is then not idle but held back (HAProxy
    // disarms the client timeout while its buffer is full). The server's
    // timeout (10 s) is the one that runs.
    let timeouts = r#"{ connect = "1s", client = "1s", server = "10s" }"#;
    for splice in [true, false] {
        let (r, tsc, _) = upload_to_a_busy_server(splice, timeouts, 3000);
        assert_eq!(r.status, 200, "splice = {splice}: {tsc}");
    }
}

#[test]
fn an_upload_to_a_stalled_server_times_out_as_the_server() {
    // The other way round: the server stalls past `timeout server` (the
    // client would wait for ever): a 504, blamed on the server.
    let timeouts = r#"{ connect = "1s", client = "10s", server = "600ms" }"#;
    for splice in [false, true] {
        let (r, tsc, took) = upload_to_a_busy_server(splice, timeouts, 3000);
        assert_eq!((r.status, &tsc[..2]), (504, "sH"), "splice = {splice}");
        assert!(
            took >= Duration::from_millis(550) && took < Duration::from_millis(2500),
            "splice = {splice}: 504 after {took:?}"
        );
    }
}
