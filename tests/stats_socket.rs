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

fn table_config(sock: &std::path::Path, backend: &EchoServer, size: u32) -> String {
    format!(
        r#"
[global]
workers = 2

[stats]
socket = "{}"
level = "admin"

[frontend.fe]
bind = "127.0.0.1:{}"
mode = "tcp"
default_backend = "be"

[backend.be]
mode = "tcp"
server.a = {{ addr = "{}" }}

[table.big]
type = "ip"
size = {size}
store = ["conn_cnt"]
"#,
        sock.display(),
        free_port(),
        backend.addr
    )
}

/// Fills table `big` with `n` keys through `set table`, many commands a line.
fn fill(sock: &std::path::Path, n: u32) {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(b"prompt\n").unwrap();
    let mut line = String::new();
    for i in 0..n {
        let ip = std::net::Ipv4Addr::from(0x0A00_0000 + i);
        line.push_str(&format!("set table big key {ip} data.conn_cnt {i};"));
        if line.len() > 60_000 || i == n - 1 {
            line.push('\n');
            s.write_all(line.as_bytes()).unwrap();
            line.clear();
        }
    }
    s.write_all(b"show table\n").unwrap();
    let mut r = BufReader::new(s);
    let mut got = String::new();
    while !got.contains("used:") {
        got.clear();
        r.read_line(&mut got).unwrap();
    }
    assert!(got.contains(&format!("used:{n}")), "{got}");
}

#[test]
fn a_slow_reader_of_a_million_entry_dump_blocks_nobody() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let backend = EchoServer::start();
    let sock = temp_dir("stats").join("dump.sock");
    let c = Corral::start(&table_config(&sock, &backend, 1_000_000));
    let t = Instant::now();
    fill(&sock, 1_000_000);
    eprintln!("1 M entries set in {:?}", t.elapsed());
    let master = c.master_pid();
    let rss_before = rss_kb(master);
    // The slow reader: 4 KiB every 10 ms of a ~60 MB dump.
    let mut slow = UnixStream::connect(&sock).unwrap();
    slow.write_all(b"show table big\n").unwrap();
    let mut first = [0u8; 4096];
    slow.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"# table: big, type: ip, size:1000000, used:1000000\n"));
    // And a fast one, reading the whole dump as quickly as it can.
    let fast_sock = sock.clone();
    let fast = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&fast_sock).unwrap();
        s.write_all(b"show table big\n").unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        all.iter().filter(|&&b| b == b'\n').count()
    });
    let mut worst = Duration::ZERO;
    let mut read = 4096;
    for _ in 0..50 {
        let t = Instant::now();
        let info = stats_command(&sock, "show info").unwrap();
        worst = worst.max(t.elapsed());
        assert!(info.contains("Name: corral"));
        let mut buf = [0u8; 4096];
        slow.read_exact(&mut buf).unwrap();
        read += buf.len();
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss_during = rss_kb(master);
    let lines = fast.join().unwrap();
    assert_eq!(
        lines,
        1_000_000 + 2,
        "summary, one line per entry, the empty line"
    );
    assert!(
        worst < Duration::from_millis(100),
        "show info took {worst:?} while a dump was read slowly"
    );
    assert!(
        rss_during < rss_before + 16 * 1024,
        "the master held the dump in memory: RSS {rss_before} -> {rss_during} KiB"
    );
    eprintln!(
        "slowest show info during the dump: {worst:?}; master RSS {rss_before} -> {rss_during} KiB; {read} bytes read"
    );
}

#[test]
fn show_info_values_are_real() {
    let backend = EchoServer::start();
    let sock = temp_dir("stats").join("values.sock");
    let c = Corral::start(&config("admin", &sock, &backend));
    let info = stats_command(&sock, "show info").unwrap();
    // maxconn 4096 over 2 workers: 2048 each, pipe pools of 1024 each.
    assert_eq!(
        info_value(&info, "Maxpipes").as_deref(),
        Some("2048"),
        "{info}"
    );
    assert_eq!(info_value(&info, "Run_queue").as_deref(), Some("0"));
    assert_eq!(info_value(&info, "Stopping").as_deref(), Some("0"));
    assert_eq!(info_value(&info, "DroppedLogs").as_deref(), Some("0"));
    assert_eq!(info_value(&info, "Tasks").as_deref(), Some("2"));
    // A soft stop with a connection open: Stopping until it ends.
    let mut held = c.connect();
    echo_roundtrip(&mut held, b"x");
    c.signal(nix::sys::signal::Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let info = stats_command(&sock, "show info").unwrap();
        if info_value(&info, "Stopping").as_deref() == Some("1") {
            assert_eq!(info_value(&info, "CurrConns").as_deref(), Some("1"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Stopping never became 1:\n{info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
}
