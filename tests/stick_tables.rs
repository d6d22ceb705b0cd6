//! Shared stick tables, checked as an operator would: the workers of one
//! corral count a client once, whichever worker accepts it, persistence holds
//! across workers, counters come back down when connections end (even when
//! the worker holding them is SIGKILLed), and entries expire.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One tcp frontend with `rules`, a backend of name servers, one table.
fn config(
    workers: usize,
    rules: &[&str],
    table: &str,
    backend_extra: &str,
    servers: &[&NameServer],
) -> String {
    let port = free_port();
    let rules: Vec<String> = rules.iter().map(|r| format!("  {r:?},")).collect();
    let servers: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, srv)| format!("server.s{i} = {{ addr = \"{}\" }}", srv.addr))
        .collect();
    format!(
        r#"
[global]
workers = {workers}

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"
rules = [
{}
]

[backend.be]
mode = "tcp"
balance = "roundrobin"
timeout = {{ connect = "1s", client = "10s", server = "10s" }}
{backend_extra}
{}

[table.per_ip]
{table}
"#,
        rules.join("\n"),
        servers.join("\n")
    )
}

/// Connects from `src` and reads the server's name; `None` if corral closed
/// the connection without forwarding (rejected).
fn name_from(src: Ipv4Addr, addr: SocketAddr) -> Option<String> {
    let mut s = connect_from(src, addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    read_line(&mut s).ok().filter(|n| !n.is_empty())
}

/// Holds a connection open from `src`; `None` if rejected.
fn hold_from(src: Ipv4Addr, addr: SocketAddr) -> Option<TcpStream> {
    let mut s = connect_from(src, addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    read_line(&mut s).ok().filter(|n| !n.is_empty()).map(|_| s)
}

/// The runbook's rate limit: `reject if { sc0_conn_cnt gt 50 }` with two
/// workers. 80 connections from one address: exactly 50 pass, 30 are
/// rejected, wherever they land; a new address starts fresh.
#[test]
fn conn_cnt_is_counted_exactly_across_workers() {
    let a = NameServer::start("a");
    let c = Corral::start(&config(
        2,
        &[
            "tcp-request connection track-sc0 src table per_ip",
            "tcp-request connection reject if { sc0_conn_cnt gt 50 }",
        ],
        "type = \"ip\"\nsize = 1000\nexpire = \"1m\"\nstore = [\"conn_cnt\", \"conn_cur\"]",
        "",
        &[&a],
    ));
    let (mut ok, mut rejected) = (0, 0);
    for _ in 0..80 {
        match name_from(Ipv4Addr::LOCALHOST, c.addr()) {
            Some(_) => ok += 1,
            None => rejected += 1,
        }
    }
    assert_eq!((ok, rejected), (50, 30), "accepted/rejected from 127.0.0.1");
    assert_eq!(a.conns(), 50, "rejected connections never reach the server");
    assert!(
        name_from(Ipv4Addr::new(127, 0, 0, 2), c.addr()).is_some(),
        "127.0.0.2 has its own fresh entry"
    );
}

/// `reject if { sc0_conn_cur gt 5 }`: five held connections (spread over two
/// workers) pass, the sixth is rejected; once one closes, a new one passes.
#[test]
fn conn_cur_counts_held_connections_across_workers() {
    let a = NameServer::start("a");
    let c = Corral::start(&config(
        2,
        &[
            "tcp-request connection track-sc0 src table per_ip",
            "tcp-request connection reject if { sc0_conn_cur gt 5 }",
        ],
        "type = \"ip\"\nsize = 1000\nexpire = \"1m\"\nstore = [\"conn_cur\"]",
        "",
        &[&a],
    ));
    let src = Ipv4Addr::new(127, 0, 0, 3);
    let mut held: Vec<TcpStream> = (0..5)
        .map(|i| hold_from(src, c.addr()).unwrap_or_else(|| panic!("connection {i} rejected")))
        .collect();
    let owners: std::collections::BTreeSet<i32> =
        held.iter().filter_map(|s| c.owner_of(s)).collect();
    assert!(
        hold_from(src, c.addr()).is_none(),
        "the sixth concurrent connection is rejected"
    );
    drop(held.pop());
    // The close reaches corral asynchronously: conn_cur drops shortly after.
    let deadline = Instant::now() + Duration::from_secs(2);
    let again = loop {
        if let Some(s) = hold_from(src, c.addr()) {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        again.is_some(),
        "after one closes, a new connection passes (owners: {owners:?})"
    );
}

/// A worker SIGKILLed while holding tracked connections: the master releases
/// its trackings, so conn_cur comes back down and the client is not locked out.
#[test]
fn killed_worker_releases_its_tracked_connections() {
    let a = NameServer::start("a");
    let c = Corral::start(&config(
        1,
        &[
            "tcp-request connection track-sc0 src table per_ip",
            "tcp-request connection reject if { sc0_conn_cur gt 3 }",
        ],
        "type = \"ip\"\nsize = 1000\nexpire = \"1m\"\nstore = [\"conn_cur\", \"conn_cnt\"]",
        "",
        &[&a],
    ));
    let src = Ipv4Addr::new(127, 0, 0, 4);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| hold_from(src, c.addr()).expect("under the limit"))
        .collect();
    assert!(hold_from(src, c.addr()).is_none(), "at the limit");
    let old = c.worker_pids();
    assert_eq!(old.len(), 1);
    kill(Pid::from_raw(old[0]), Signal::SIGKILL).unwrap();
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(3);
    while c.worker_pids().first() == old.first() || c.worker_pids().is_empty() {
        assert!(Instant::now() < deadline, "no replacement worker");
        thread::sleep(Duration::from_millis(20));
    }
    let fresh: Vec<Option<TcpStream>> = (0..3).map(|_| hold_from(src, c.addr())).collect();
    assert!(
        fresh.iter().all(Option::is_some),
        "conn_cur of the killed worker's connections was released: {} of 3 accepted",
        fresh.iter().filter(|s| s.is_some()).count()
    );
    // The segment is a memfd: nothing named, nothing left in /dev/shm, crash or not.
    let named: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !named.iter().any(|n| n.contains("corral")),
        "/dev/shm holds {named:?}"
    );
    let maps =
        std::fs::read_to_string(format!("/proc/{}/maps", c.master_pid())).unwrap_or_default();
    assert!(
        maps.contains("/memfd:corral-segment"),
        "the master maps the memfd segment"
    );
}

/// `stick = { on = "src", table = "per_ip" }` with two workers and round
/// robin: each of 20 client addresses always reaches the same server, and
/// both servers get some clients.
#[test]
fn persistence_keeps_each_client_on_its_server() {
    let a = NameServer::start("a");
    let b = NameServer::start("b");
    let c = Corral::start(&config(
        2,
        &[],
        "type = \"ip\"\nsize = 1000\nexpire = \"1m\"\nstore = [\"server_id\"]",
        "stick = { on = \"src\", table = \"per_ip\" }",
        &[&a, &b],
    ));
    let mut seen: BTreeMap<u8, String> = BTreeMap::new();
    for _round in 0..10 {
        for last in 10..30u8 {
            let src = Ipv4Addr::new(127, 0, 0, last);
            let name = name_from(src, c.addr()).expect("served");
            let first = seen.entry(last).or_insert_with(|| name.clone());
            assert_eq!(*first, name, "127.0.0.{last} moved from {first} to {name}");
        }
    }
    let on_a = seen.values().filter(|n| *n == "a").count();
    assert!(
        on_a > 0 && on_a < 20,
        "both servers get clients: {on_a} of 20 on a"
    );
}

/// Entries vanish after `expire`: with `reject if { sc0_conn_cnt gt 2 }` and
/// a 1 s expiry, a client blocked after 2 connections passes again later.
#[test]
fn entries_expire() {
    let a = NameServer::start("a");
    let c = Corral::start(&config(
        1,
        &[
            "tcp-request connection track-sc0 src table per_ip",
            "tcp-request connection reject if { sc0_conn_cnt gt 2 }",
        ],
        "type = \"ip\"\nsize = 100\nexpire = \"1s\"\nstore = [\"conn_cnt\"]",
        "",
        &[&a],
    ));
    let src = Ipv4Addr::new(127, 0, 0, 5);
    assert!(name_from(src, c.addr()).is_some());
    assert!(name_from(src, c.addr()).is_some());
    assert!(
        name_from(src, c.addr()).is_none(),
        "third within the period is rejected"
    );
    thread::sleep(Duration::from_millis(1300));
    assert!(
        name_from(src, c.addr()).is_some(),
        "the entry expired: counting starts over"
    );
}

/// A table of size 1000 fed 10 000 client keys stays within its size and keeps
/// the most recent ones (eviction of the least recently updated).
#[test]
fn a_full_table_evicts_the_oldest() {
    let a = NameServer::start("a");
    let c = Corral::start(&config(
        1,
        &[
            "tcp-request connection track-sc0 src table per_ip",
            "tcp-request connection reject if { sc0_conn_cnt gt 1 }",
        ],
        "type = \"ip\"\nsize = 64\nexpire = \"1m\"\nstore = [\"conn_cnt\"]",
        "",
        &[&a],
    ));
    // 200 addresses, one connection each: every one is new, so every one passes.
    for i in 0..200u32 {
        let src = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
        assert!(
            name_from(src, c.addr()).is_some(),
            "{src}: first connection passes"
        );
    }
    // The most recent ones are still known (a second connection is rejected) …
    let recent_known = (190..200u32)
        .filter(|&i| name_from(Ipv4Addr::new(127, 1, 0, i as u8 + 1), c.addr()).is_none())
        .count();
    assert_eq!(
        recent_known, 10,
        "the last 10 clients are still in the table"
    );
    // … while the oldest were evicted (a second connection passes again).
    let old_forgotten = (0..10u32)
        .filter(|&i| name_from(Ipv4Addr::new(127, 1, 0, i as u8 + 1), c.addr()).is_some())
        .count();
    assert!(
        old_forgotten >= 8,
        "the oldest clients were evicted: {old_forgotten} of 10"
    );
}

/// `dst_port` reaches the rules (corral asks the kernel for it only when a
/// rule reads it): one frontend on two ports rejects one of them.
#[test]
fn dst_port_rules_see_the_port_the_client_came_in_on() {
    let a = NameServer::start("a");
    let (p1, p2) = (free_port(), free_port());
    let c = Corral::start(&format!(
        r#"
[frontend.fe]
bind = ["127.0.0.1:{p1}", "127.0.0.1:{p2}"]
mode = "tcp"
default_backend = "be"
rules = ["tcp-request connection reject if {{ dst_port {p2} }}"]

[backend.be]
mode = "tcp"
server.a = {{ addr = "{}" }}
"#,
        a.addr
    ));
    let via = |port: u16| {
        name_from(
            Ipv4Addr::LOCALHOST,
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
    };
    assert_eq!(via(p1).as_deref(), Some("a"), "port {p1} is served");
    assert_eq!(via(p2), None, "port {p2} is rejected");
    assert_eq!(c.binds().len(), 2);
}
