//! The process model, as an operator drives it with ps and kill: a master and
//! N workers (named as such), a killed worker replaced within a second while
//! the others keep serving, SIGUSR1 drains and exits 0, SIGTERM stops now.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn config(workers: usize, echo: SocketAddr) -> String {
    let port = free_port();
    format!(
        r#"
[global]
workers = {workers}

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
splice = false
default_backend = "be"

[backend.be]
mode = "tcp"
balance = "roundrobin"
splice = false
timeout = {{ connect = "1s", client = "10s", server = "10s" }}
server.echo = {{ addr = "{echo}" }}
"#
    )
}

/// Whether a new client is served (gets its bytes echoed within 500 ms).
fn new_client_served(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    if s.write_all(b"ping").is_err() {
        return false;
    }
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

fn wait_all_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    wait_until(timeout, || pids.iter().all(|&p| !is_alive(p)));
    pids.iter().copied().filter(|&p| is_alive(p)).collect()
}

/// `workers = 2`: exactly two worker processes, children of the master, each
/// recognisable as a worker in `ps` (comm or cmdline mentions "worker").
#[test]
fn two_workers_are_children_of_the_master_and_named_worker() {
    let echo = EchoServer::start();
    let corral = Corral::start(&config(2, echo.addr));
    let master = corral.master_pid();
    let workers = corral.worker_pids();
    assert_eq!(workers.len(), 2, "worker pids: {workers:?}");
    for &w in &workers {
        assert_ne!(w, master);
        assert_eq!(
            ppid(w),
            Some(master),
            "worker {w} is not a child of the master"
        );
        let (c, cmd) = (comm(w), cmdline(w));
        assert!(
            c.to_lowercase().contains("worker") || cmd.to_lowercase().contains("worker"),
            "worker {w} is not named as one: comm {c:?}, cmdline {cmd:?}"
        );
    }
    let mut s = corral.connect();
    echo_roundtrip(&mut s, b"served by two workers");
}

/// kill -9 of one worker: a new worker appears within 1 s, a connection held
/// by the other worker keeps working throughout, new clients are served, and
/// afterwards corral is idle with the master's fds back to their baseline.
#[test]
fn killed_worker_is_respawned_and_the_other_keeps_serving() {
    let echo = EchoServer::start();
    let corral = Corral::start(&config(2, echo.addr));
    for i in 0..6 {
        let mut s = corral.connect();
        echo_roundtrip(&mut s, format!("warm-up {i}").as_bytes());
    }
    assert!(echo.wait_active(0, Duration::from_secs(2)));
    let base = corral.baseline();

    let mut held = corral.connect();
    echo_roundtrip(&mut held, b"before");
    let owner = corral
        .owner_of(&held)
        .expect("no worker holds corral's side of the client connection");
    let workers = corral.worker_pids();
    let victim = *workers
        .iter()
        .find(|&&w| w != owner)
        .expect("a second worker");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let t = Instant::now();
    let respawned = wait_until(Duration::from_secs(1), || {
        let w = corral.worker_pids();
        w.len() == 2 && !w.contains(&victim)
    });
    assert!(
        respawned,
        "no replacement worker within 1 s of kill -9 (workers now {:?}, killed {victim})\n{}",
        corral.worker_pids(),
        corral.stderr_text()
    );
    assert!(t.elapsed() <= Duration::from_millis(1100));
    assert!(
        corral.worker_pids().contains(&owner),
        "the surviving worker was replaced too"
    );
    echo_roundtrip(&mut held, b"the other worker keeps serving");
    for i in 0..10 {
        let mut s = corral.connect();
        echo_roundtrip(&mut s, format!("after respawn {i}").as_bytes());
    }
    echo_roundtrip(&mut held, b"still");
    drop(held);
    assert!(echo.wait_active(0, Duration::from_secs(2)));
    corral.assert_quiescent(&base);
}

/// SIGUSR1 (soft stop) with a client connected: that client keeps being
/// served, new clients are not, and when it closes, the master exits 0 and
/// no worker is left.
#[test]
fn soft_stop_drains_then_exits_0() {
    let echo = EchoServer::start();
    let mut corral = Corral::start(&config(2, echo.addr));
    let workers = corral.worker_pids();
    let mut held = corral.connect();
    echo_roundtrip(&mut held, b"before soft stop");

    corral.signal(Signal::SIGUSR1);
    thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        echo_roundtrip(&mut held, format!("draining {i}").as_bytes());
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !new_client_served(corral.addr()),
        "a new client was served after SIGUSR1"
    );
    assert!(
        corral.wait_exit(Duration::from_millis(300)).is_none(),
        "master exited while a client connection was still open"
    );
    echo_roundtrip(&mut held, b"last words");

    drop(held);
    let status = corral
        .wait_exit(Duration::from_secs(3))
        .expect("master still running 3 s after the last connection closed");
    assert!(status.success(), "soft stop exit status: {status}");
    let left = wait_all_gone(&workers, Duration::from_secs(2));
    assert!(
        left.is_empty(),
        "workers still alive after the master exited: {left:?}"
    );
}

/// SIGTERM (hard stop) with a client connected: the master exits within 2 s,
/// every worker is gone, and the client's connection is closed.
#[test]
fn hard_stop_ends_everything_quickly() {
    let echo = EchoServer::start();
    let mut corral = Corral::start(&config(2, echo.addr));
    let workers = corral.worker_pids();
    let mut held = corral.connect();
    echo_roundtrip(&mut held, b"before hard stop");

    corral.signal(Signal::SIGTERM);
    assert!(
        corral.wait_exit(Duration::from_secs(2)).is_some(),
        "master still running 2 s after SIGTERM"
    );
    let left = wait_all_gone(&workers, Duration::from_secs(2));
    assert!(
        left.is_empty(),
        "workers still alive 2 s after the master exited on SIGTERM: {left:?}"
    );
    let (how, _) = wait_closed(&mut held, Duration::from_secs(1));
    assert_ne!(
        how,
        Closed::StillOpen,
        "client connection survived a hard stop"
    );
}
