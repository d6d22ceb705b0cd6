//! What a worker spends per connection: one worker woken per new connection
//! (EPOLLEXCLUSIVE in the epoll fd it sleeps in), timer storage that
//! follows open connections, not how many came and went, and naps between
//! polls only while under load (an idle worker uses no CPU).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::*;

fn config(port: u16, sock: &Path, server: SocketAddr, workers: usize, timeouts: &str) -> String {
    config_with(port, sock, server, workers, timeouts, "")
}

/// [`config`] with more `[global]` keys.
fn config_with(
    port: u16,
    sock: &Path,
    server: SocketAddr,
    workers: usize,
    timeouts: &str,
    global: &str,
) -> String {
    format!(
        r#"
[global]
workers = {workers}
log = "/dev/null"
{global}

[stats]
socket = "{sock}"
level = "admin"

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"
{timeouts}

[backend.be]
mode = "tcp"
server.s0 = {{ addr = "{server}" }}
{timeouts}
"#,
        sock = sock.display(),
    )
}

/// `n` connections, `threads` at a time: connect, echo one byte, close.
fn short_connections(addr: SocketAddr, n: usize, threads: usize) {
    let each = n / threads;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..each {
                    let mut s = connect(addr);
                    echo_roundtrip(&mut s, b"x");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
}

#[test]
fn one_worker_wakes_per_new_connection() {
    let backend = EchoServer::start();
    let sock = temp_dir("herd").join("admin.sock");
    let port = free_port();
    let c = Corral::start(&config(port, &sock, backend.addr, 4, ""));
    let addr = c.addr();
    // A trickle: one connection at a time, every worker asleep in between.
    short_connections(addr, 300, 1);
    let (accepted, per_worker) = activity(&sock, "accepted");
    let (empty, _) = activity(&sock, "accept_empty");
    assert_eq!(accepted, 300, "{per_worker:?}");
    assert!(
        (empty as f64) < 0.3 * accepted as f64,
        "{empty} wakeups found nothing to accept for {accepted} connections \
         (each connection woke every worker?) per worker: {per_worker:?}"
    );
    eprintln!(
        "300 sequential connections over 4 workers: accepted {per_worker:?}, empty wakeups {empty}"
    );
}

#[test]
fn timers_follow_open_connections_not_the_connection_rate() {
    let backend = EchoServer::start();
    let sock = temp_dir("timers").join("admin.sock");
    let port = free_port();
    let long = r#"timeout = { connect = "1h", client = "1h", server = "1h", tunnel = "1h" }"#;
    let c = Corral::start(&config(port, &sock, backend.addr, 1, long));
    let worker = c.worker_pids()[0];
    let addr = c.addr();
    short_connections(addr, 5_000, 4);
    assert!(wait_until(Duration::from_secs(5), || activity(
        &sock,
        "curr_conns"
    )
    .0 == 0));
    let rss_5k = rss_kb(worker);
    short_connections(addr, 45_000, 4);
    assert!(wait_until(Duration::from_secs(5), || activity(
        &sock,
        "curr_conns"
    )
    .0 == 0));
    let rss_50k = rss_kb(worker);
    let (timers, _) = activity(&sock, "timers");
    assert_eq!(
        timers, 0,
        "no connection is open, so no deadline is armed (a lazy heap kept one per closed connection)"
    );
    // And with connections open, exactly one deadline each.
    let held: Vec<_> = (0..20)
        .map(|_| {
            let mut s = connect(addr);
            echo_roundtrip(&mut s, b"x");
            s
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || activity(
        &sock,
        "curr_conns"
    )
    .0 == 20));
    assert_eq!(activity(&sock, "timers").0, 20);
    drop(held);
    assert!(
        rss_50k <= rss_5k + 256,
        "worker RSS grew from {rss_5k} KiB after 5 000 connections to {rss_50k} KiB after 50 000"
    );
    eprintln!("worker RSS: {rss_5k} KiB after 5 000 connections, {rss_50k} KiB after 50 000");
}

#[test]
fn a_worker_naps_only_under_load_and_idles_at_no_cpu() {
    let backend = EchoServer::start();
    for naps_on in [true, false] {
        let sock = temp_dir("naps").join("admin.sock");
        let port = free_port();
        let global = format!("poll_naps = {naps_on}");
        let c = Corral::start(&config_with(port, &sock, backend.addr, 1, "", &global));
        let worker = c.worker_pids()[0];
        // Load: events come microseconds apart.
        short_connections(c.addr(), 4000, 4);
        let (under_load, _) = activity(&sock, "naps");
        if !naps_on {
            assert_eq!(under_load, 0, "poll_naps = false: no nap");
            continue;
        }
        assert!(under_load > 0, "no nap under load");
        // Then idle: the naps stop at once (within the nap window) and
        // the worker sleeps in epoll_wait.
        thread::sleep(Duration::from_millis(300));
        let (naps0, ticks0) = (activity(&sock, "naps").0, cpu_ticks(worker));
        thread::sleep(Duration::from_secs(2));
        let (naps1, ticks1) = (activity(&sock, "naps").0, cpu_ticks(worker));
        assert_eq!(naps1, naps0, "an idle worker napped");
        assert!(
            ticks1 - ticks0 <= 2,
            "an idle worker used {} ticks in 2 s",
            ticks1 - ticks0
        );
        eprintln!(
            "4000 short connections: {under_load} naps; idle: 0 naps, {} ticks in 2 s",
            ticks1 - ticks0
        );
    }
}
