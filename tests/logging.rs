//! Logs never block the data plane: with stdout a pipe nobody reads (a
//! stalled journald or log shipper), every connection is still served, and
//! the lines that could not be written are dropped and counted.

mod common;

use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn a_stalled_stdout_reader_never_stops_a_worker() {
    let backend = EchoServer::start();
    let sock = temp_dir("logstall").join("admin.sock");
    let port = free_port();
    let config = format!(
        r#"
[global]
workers = 2
log = "stdout"

[stats]
socket = "{}"
level = "admin"

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"

[backend.be]
mode = "tcp"
server.s0 = {{ addr = "{}" }}
"#,
        sock.display(),
        backend.addr
    );
    // stdout is a pipe whose reader never reads: 64 KiB fill it in ~400 lines.
    let c = Corral::launch(Launch {
        config: &config,
        stdout_pipe: true,
        ..Launch::default()
    });
    let addr = c.addr();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..750 {
                    let mut s = connect(addr);
                    echo_roundtrip(&mut s, b"ping");
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .expect("every one of the 3000 connections is served");
    }
    // The counters are published once per loop turn: give them one.
    let mut dropped = 0;
    assert!(wait_until(Duration::from_secs(5), || {
        dropped = info_field(&sock, "DroppedLogs")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        dropped > 0
    }));
    // The workers still answer at once, and nothing spins while blocked.
    let mut s = connect(addr);
    echo_roundtrip(&mut s, b"still here");
    drop(s);
    let base = c.baseline();
    c.assert_quiescent(&base);
    eprintln!("3000 connections with stdout stalled: {dropped} log lines dropped");
}
