//! Keep-alive across reloads: idle client connections are handed to the
//! new generation over the master's socket pairs (with the bytes already
//! read), old workers exit in seconds whatever `hard_stop_after` says, and
//! a connection the new generation refuses is finished by the old worker.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::cli::{cli, reload_ok, show_proc, wait_old_gone};
use common::http::*;
use common::*;

fn setup<'a>(servers: &'a [SocketAddr], workers: usize, global: &'a str) -> HttpSetup<'a> {
    HttpSetup {
        workers,
        global,
        servers,
        timeouts: r#"{ connect = "2s", client = "30s", server = "30s", http_keep_alive = "30s" }"#,
        ..Default::default()
    }
}

#[test]
fn idle_keep_alive_connections_move_to_the_new_generation_and_old_workers_exit() {
    let o = Origin::start("a");
    let (c, sock) = setup(&[o.addr], 2, "hard_stop_after = \"60s\"").start();
    let mut clients: Vec<Client> = (0..20).map(|_| Client::connect(c.addr())).collect();
    for cl in &mut clients {
        assert_eq!(cl.get("/name").status, 200);
    }
    let old = show_proc(&sock).worker_pids();
    reload_ok(&c, &sock);
    let took = wait_old_gone(&c, &sock, &old, Duration::from_secs(2));
    eprintln!("old workers gone {took:?} after the reload");
    // Each connection answers its next request, without reconnecting.
    for (i, cl) in clients.iter_mut().enumerate() {
        let r = cl.get("/name");
        assert_eq!(r.status, 200, "connection {i}");
        assert!(
            !r.head.has_token("connection", "close"),
            "connection {i}: {:?}",
            r.head
        );
    }
    for cl in &mut clients {
        assert_eq!(cl.get("/name").status, 200);
    }
    let stderr = c.stderr_text();
    assert!(stderr.contains("handed over"), "{stderr}");
}

#[test]
fn a_partial_head_and_pipelined_requests_travel_with_the_connection() {
    let o = Origin::start("a");
    let (c, sock) = setup(&[o.addr], 1, "hard_stop_after = \"60s\"").start();
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/name").status, 200);
    // A slow request in flight, with pipelined ones behind it, and half
    // of one more head: all of it crosses the reload.
    let mut all = b"GET /sleep?ms=600 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    for i in 0..5 {
        all.extend_from_slice(
            format!("GET /status/{} HTTP/1.1\r\nHost: t\r\n\r\n", 200 + i).as_bytes(),
        );
    }
    all.extend_from_slice(b"GET /status/210 HTTP/1.1\r\nHo");
    cl.send(&all);
    thread::sleep(Duration::from_millis(100));
    let old = show_proc(&sock).worker_pids();
    let reloader = {
        let sock = sock.clone();
        thread::spawn(move || {
            let answer = cli(&sock, "reload");
            (answer, Instant::now())
        })
    };
    let slow = cl.response(false).unwrap();
    let answered = Instant::now();
    assert_eq!(slow.status, 200, "the slow one");
    let (answer, reloaded) = reloader.join().unwrap();
    assert!(answer.starts_with("Success=1"), "{answer}");
    // The old worker was stopping when the slow answer ended: what it had
    // read after it crossed to the new generation (no `close` anywhere).
    assert!(
        reloaded < answered,
        "the reload ended before the slow answer"
    );
    assert!(
        !slow.head.has_token("connection", "close"),
        "{:?}",
        slow.head
    );
    for i in 0..5 {
        let r = cl.response(false).unwrap();
        assert_eq!(r.status, 200 + i, "answer {i} in order");
        assert!(!r.head.has_token("connection", "close"), "{:?}", r.head);
    }
    thread::sleep(Duration::from_millis(300));
    cl.send(b"st: t\r\n\r\n");
    assert_eq!(
        cl.response(false).unwrap().status,
        210,
        "the head cut in two"
    );
    wait_old_gone(&c, &sock, &old, Duration::from_secs(3));
    assert_eq!(cl.get("/name").status, 200);
}

#[test]
fn twenty_reloads_half_a_second_apart_under_fifty_keep_alive_clients_lose_nothing() {
    let o = Origin::start("a");
    let (c, sock) = setup(&[o.addr], 2, "hard_stop_after = \"60s\"").start();
    let addr = c.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (errors, done, reconnects) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let (stop, errors, done, reconnects) = (
                stop.clone(),
                errors.clone(),
                done.clone(),
                reconnects.clone(),
            );
            thread::spawn(move || {
                let mut cl = Client::connect(addr);
                let mut k = 0u64;
                while !stop.load(Relaxed) {
                    cl.send(b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n");
                    match cl.response(false) {
                        Ok(r) if r.status == 200 => {
                            done.fetch_add(1, Relaxed);
                            if r.head.has_token("connection", "close") {
                                reconnects.fetch_add(1, Relaxed);
                                cl = Client::connect(addr);
                            }
                        }
                        other => {
                            errors.fetch_add(1, Relaxed);
                            eprintln!("client {i}: {:?}", other.map(|r| r.status));
                            cl = Client::connect(addr);
                        }
                    }
                    k += 1;
                    // Idle gaps too, so reloads find connections between
                    // requests as well as in the middle of one.
                    thread::sleep(Duration::from_millis(5 + (i * 13 + k * 7) % 40));
                }
            })
        })
        .collect();
    let mut olds = std::collections::BTreeSet::new();
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(500));
        olds.extend(show_proc(&sock).worker_pids());
        reload_ok(&c, &sock);
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let (errors, done, reconnects) = (
        errors.load(Relaxed),
        done.load(Relaxed),
        reconnects.load(Relaxed),
    );
    eprintln!("20 reloads: {done} requests, {errors} errors, {reconnects} closed by corral");
    assert_eq!(errors, 0, "{done} requests");
    assert!(done > 1000, "{done} requests");
    let current = show_proc(&sock).worker_pids();
    let gone: std::collections::BTreeSet<i32> = olds.difference(&current).copied().collect();
    wait_old_gone(&c, &sock, &gone, Duration::from_secs(3));
}

#[test]
fn connections_the_new_generation_refuses_are_finished_by_the_old_worker() {
    // The new config's maxconn leaves room for 3 of the 10 connections;
    // the others stay with the old worker, whose next answer closes them.
    let o = Origin::start("a");
    let servers = [o.addr];
    let (text, sock) = setup(&servers, 1, "hard_stop_after = \"60s\"").config();
    let c = Corral::start(&text);
    let mut clients: Vec<Client> = (0..10).map(|_| Client::connect(c.addr())).collect();
    for cl in &mut clients {
        assert_eq!(cl.get("/name").status, 200);
    }
    let old = show_proc(&sock).worker_pids();
    std::fs::write(
        &c.config_path,
        text.replace("[global]\n", "[global]\nmaxconn = 3\n"),
    )
    .unwrap();
    reload_ok(&c, &sock);
    thread::sleep(Duration::from_millis(300));
    assert!(
        old.iter().all(|&p| is_alive(p)),
        "the old worker keeps what it could not hand over"
    );
    let mut closed = 0;
    for (i, cl) in clients.iter_mut().enumerate() {
        let r = cl.get("/name");
        assert_eq!(r.status, 200, "connection {i}: nothing lost");
        if r.head.has_token("connection", "close") {
            closed += 1;
        }
    }
    assert_eq!(closed, 7, "the old worker closes the 7 it kept");
    wait_old_gone(&c, &sock, &old, Duration::from_secs(3));
}

#[test]
fn a_frontend_gone_from_the_new_config_is_closed_by_the_old_worker_after_one_answer() {
    let o = Origin::start("a");
    let servers = [o.addr];
    let (text, sock) = setup(&servers, 1, "hard_stop_after = \"60s\"").config();
    let c = Corral::start(&text);
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/name").status, 200);
    let old = show_proc(&sock).worker_pids();
    // Same listener, another frontend name: nothing to hand over to.
    std::fs::write(
        &c.config_path,
        text.replace("[frontend.web]", "[frontend.site]"),
    )
    .unwrap();
    reload_ok(&c, &sock);
    let r = cl.get("/name");
    assert_eq!(r.status, 200);
    assert!(r.head.has_token("connection", "close"), "{:?}", r.head);
    wait_old_gone(&c, &sock, &old, Duration::from_secs(3));
    let t = Instant::now();
    assert!(cl.closed_within(Duration::from_secs(2)).is_ok());
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_soft_stop_without_a_new_generation_closes_idle_connections_and_serves_fresh_ones() {
    // SIGUSR1 to the master: no generation to hand over to.
    let o = Origin::start("a");
    let servers = [o.addr];
    let (text, _) = setup(&servers, 1, "hard_stop_after = \"60s\"").config();
    let mut c = Corral::start(&text);
    let mut silent = Client::connect(c.addr());
    let mut kept = Client::connect(c.addr());
    assert_eq!(kept.get("/name").status, 200);
    thread::sleep(Duration::from_millis(200));
    c.signal(nix::sys::signal::Signal::SIGUSR1);
    // The idle kept connection is closed at once; the one that has not
    // spoken yet is served, with `Connection: close`.
    assert!(kept.closed_within(Duration::from_secs(2)).is_ok());
    silent.send(b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = silent
        .response(false)
        .expect("served by the stopping worker");
    assert_eq!(r.status, 200);
    assert!(r.head.has_token("connection", "close"));
    assert!(silent.closed_within(Duration::from_secs(2)).is_ok());
    assert!(
        c.wait_exit(Duration::from_secs(5)).is_some(),
        "the instance stopped"
    );
}

#[test]
fn idle_connections_cross_five_reloads_in_a_row() {
    let o = Origin::start("a");
    let (c, sock) = setup(&[o.addr], 2, "hard_stop_after = \"60s\"").start();
    let mut clients: Vec<Client> = (0..10).map(|_| Client::connect(c.addr())).collect();
    for cl in &mut clients {
        assert_eq!(cl.get("/name").status, 200);
    }
    let mut old = std::collections::BTreeSet::new();
    for _ in 0..5 {
        old.extend(show_proc(&sock).worker_pids());
        reload_ok(&c, &sock);
        thread::sleep(Duration::from_millis(300));
    }
    let current = show_proc(&sock).worker_pids();
    let gone: std::collections::BTreeSet<i32> = old.difference(&current).copied().collect();
    wait_old_gone(&c, &sock, &gone, Duration::from_secs(2));
    for (i, cl) in clients.iter_mut().enumerate() {
        let r = cl.get("/name");
        assert_eq!(r.status, 200, "connection {i}");
        assert!(!r.head.has_token("connection", "close"), "connection {i}");
    }
}
