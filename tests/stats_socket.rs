//! The stats socket as operators use it with socat: `show info` with the keys
//! hatop requires and live connection counts summed over workers, one-line
//! answers to mistakes, and levels that keep admin commands from others.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn config(level: &str, sock: &std::path::Path, backend: &EchoServer) -> String {
    format!(
        r#"
[global]
workers = 2

[stats]
socket = "{}"
level = "{level}"

[frontend.fe]
bind = "127.0.0.1:{}"
mode = "tcp"
default_backend = "be"

[backend.be]
mode = "tcp"
server.a = {{ addr = "{}" }}
"#,
        sock.display(),
        free_port(),
        backend.addr
    )
}

fn info_value(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
}

#[test]
fn show_info_has_what_hatop_needs_and_counts_connections_over_workers() {
    let backend = EchoServer::start();
    let sock = temp_dir("stats").join("admin.sock");
    let c = Corral::start(&config("admin", &sock, &backend));
    let info = stats_command(&sock, "show info").expect("stats socket");
    for key in [
        "Name",
        "Version",
        "Release_date",
        "Nbproc",
        "Process_num",
        "Pid",
        "Uptime",
        "Maxconn",
        "CurrConns",
        "Maxpipes",
        "PipesUsed",
        "Tasks",
        "Run_queue",
        "node",
    ] {
        assert!(
            info_value(&info, key).is_some_and(|v| !v.is_empty()),
            "show info lacks {key}:\n{info}"
        );
    }
    assert!(info.ends_with("\n\n"), "an answer ends with an empty line");
    assert_eq!(info_value(&info, "Pid"), Some(c.master_pid().to_string()));
    let held: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut s = c.connect();
            echo_roundtrip(&mut s, b"x");
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let info = stats_command(&sock, "show info").expect("stats socket");
        if info_value(&info, "CurrConns").as_deref() == Some("5") {
            assert!(
                info_value(&info, "CumConns")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    >= 5
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CurrConns never reached 5:\n{info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(2);
    while info_value(
        &stats_command(&sock, "show info").expect("stats socket"),
        "CurrConns",
    )
    .as_deref()
        != Some("0")
    {
        assert!(
            Instant::now() < deadline,
            "CurrConns back to 0 after the clients closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mistakes_get_short_answers_and_levels_hold() {
    let backend = EchoServer::start();
    let sock = temp_dir("stats").join("user.sock");
    let c = Corral::start(&config("user", &sock, &backend));
    let unknown = stats_command(&sock, "show infoo").expect("stats socket");
    assert!(unknown.starts_with("Unknown command: 'show'"), "{unknown}");
    let denied = stats_command(&sock, "reload").expect("stats socket");
    assert_eq!(denied, "Permission denied\n\n");
    let handover = stats_command(&sock, "_getsocks").expect("stats socket");
    assert_eq!(
        handover, "Permission denied\n\n",
        "only admin sockets hand fds over"
    );
    let tables = stats_command(&sock, "show table").expect("stats socket");
    assert_eq!(tables, "\n", "no tables: an empty answer");
    let two = stats_command(&sock, "show proc; show info").expect("stats socket");
    assert!(
        two.contains("master") && two.contains("Name: corral"),
        "two commands on one line:\n{two}"
    );
    assert_eq!(c.worker_pids().len(), 2);
}
