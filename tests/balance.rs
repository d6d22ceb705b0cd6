//! Load-balancing algorithms, checked the way an operator would: open
//! connections through corral to [`NameServer`]s (each writes its name first)
//! and count who answered.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// One frontend onto one backend with `balance` and the given servers
/// (`(name, inline-table body)`), plus `extra` backend lines.
fn lb_config(workers: usize, balance: &str, extra: &str, servers: &[(&str, String)]) -> String {
    let port = free_port();
    let mut s = format!(
        r#"
[global]
workers = {workers}

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"

[backend.be]
mode = "tcp"
balance = "{balance}"
retries = 2
timeout = {{ connect = "1s", client = "5s", server = "5s" }}
{extra}
"#
    );
    for (name, body) in servers {
        s.push_str(&format!("server.{name} = {{ {body} }}\n"));
    }
    s
}

/// Opens a connection, reads the server's name, keeps the connection open.
fn hold(c: &Corral) -> (String, TcpStream) {
    let mut s = c.connect();
    let name = read_line(&mut s).expect("server name");
    (name, s)
}

fn tally(names: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}

/// roundrobin with weights 1 and 3, one worker: 40 sequential connections
/// split exactly 10 / 30.
#[test]
fn roundrobin_follows_weights_exactly() {
    let a = NameServer::start("a");
    let b = NameServer::start("b");
    let corral = Corral::start(&lb_config(
        1,
        "roundrobin",
        "",
        &[
            ("a", format!(r#"addr = "{}", weight = 1"#, a.addr)),
            ("b", format!(r#"addr = "{}", weight = 3"#, b.addr)),
        ],
    ));
    let counts = tally((0..40).map(|_| name_via(corral.addr())));
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&30), "{counts:?}");
}

/// leastconn: held connections alternate between the two servers (never
/// more than one apart); after the ones on `a` close, the next two new
/// connections both go to `a` (roundrobin would send one to `b`).
#[test]
fn leastconn_prefers_the_server_with_fewer_connections() {
    let a = NameServer::start("a");
    let b = NameServer::start("b");
    let corral = Corral::start(&lb_config(
        1,
        "leastconn",
        "",
        &[
            ("a", format!(r#"addr = "{}""#, a.addr)),
            ("b", format!(r#"addr = "{}""#, b.addr)),
        ],
    ));
    let mut held: Vec<(String, TcpStream)> = Vec::new();
    for i in 0..4 {
        held.push(hold(&corral));
        let t = tally(held.iter().map(|h| h.0.clone()));
        let (na, nb) = (*t.get("a").unwrap_or(&0), *t.get("b").unwrap_or(&0));
        assert!(
            na.abs_diff(nb) <= 1,
            "after {} held connections: a={na} b={nb}",
            i + 1
        );
    }
    // Close the two on a; wait until a has seen them end.
    held.retain(|h| h.0 != "a");
    assert_eq!(held.len(), 2);
    assert!(
        a.wait_active(0, Duration::from_secs(2)),
        "server a still has connections"
    );
    thread::sleep(Duration::from_millis(200));
    let n1 = hold(&corral);
    let n2 = hold(&corral);
    assert_eq!(
        (n1.0.as_str(), n2.0.as_str()),
        ("a", "a"),
        "with a=0 and b=2 connections, the next two must go to a"
    );
}

/// source: each of 20 client addresses (127.0.0.10..=127.0.0.29, two
/// workers) always reaches the same server over 3 connections, and both
/// servers get some of the addresses.
#[test]
fn source_keeps_each_client_address_on_one_server() {
    let a = NameServer::start("a");
    let b = NameServer::start("b");
    let corral = Corral::start(&lb_config(
        2,
        "source",
        "",
        &[
            ("a", format!(r#"addr = "{}""#, a.addr)),
            ("b", format!(r#"addr = "{}""#, b.addr)),
        ],
    ));
    let mut per_ip: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for round in 0..3 {
        for last in 10..30u8 {
            let ip = Ipv4Addr::new(127, 0, 0, last);
            let mut s = connect_from(ip, corral.addr())
                .unwrap_or_else(|e| panic!("connect from {ip} (round {round}): {e}"));
            let name = read_line(&mut s).unwrap_or_else(|e| panic!("name for {ip}: {e}"));
            per_ip.entry(ip).or_default().insert(name);
        }
    }
    for (ip, names) in &per_ip {
        assert_eq!(names.len(), 1, "client {ip} reached {names:?}");
    }
    let used: BTreeSet<&String> = per_ip.values().flatten().collect();
    assert_eq!(used.len(), 2, "20 client addresses all hashed to {used:?}");
}

/// first: server `a` (maxconn 1) takes the first connection; while it is
/// held the next ones go to `b`; once it closes, `a` is first again.
#[test]
fn first_fills_servers_in_order() {
    let a = NameServer::start("a");
    let b = NameServer::start("b");
    let corral = Corral::start(&lb_config(
        1,
        "first",
        "",
        &[
            ("a", format!(r#"addr = "{}", maxconn = 1"#, a.addr)),
            ("b", format!(r#"addr = "{}""#, b.addr)),
        ],
    ));
    let c1 = hold(&corral);
    assert_eq!(c1.0, "a", "first connection");
    let c2 = hold(&corral);
    assert_eq!(c2.0, "b", "a is full (maxconn 1): second connection");
    let c3 = hold(&corral);
    assert_eq!(c3.0, "b", "a is still full: third connection");
    drop(c1);
    assert!(a.wait_active(0, Duration::from_secs(2)));
    thread::sleep(Duration::from_millis(200));
    let c4 = hold(&corral);
    assert_eq!(c4.0, "a", "a has a free slot again");
    drop((c2, c3, c4));
}

/// random: over 100 connections both servers get at least 10.
#[test]
fn random_uses_both_servers() {
    let a = NameServer::start("a");
    let b = NameServer::start("b");
    let corral = Corral::start(&lb_config(
        1,
        "random",
        "",
        &[
            ("a", format!(r#"addr = "{}""#, a.addr)),
            ("b", format!(r#"addr = "{}""#, b.addr)),
        ],
    ));
    let counts = tally((0..100).map(|_| name_via(corral.addr())));
    assert!(
        counts.get("a").copied().unwrap_or(0) >= 10 && counts.get("b").copied().unwrap_or(0) >= 10,
        "{counts:?}"
    );
}

/// backup: while the active server is up the backup gets no client; when the
/// active one goes down (health check every 200 ms, fall 1) clients reach
/// the backup within 3 s; when it comes back they return to it within 3 s.
#[test]
fn backup_is_used_only_while_the_active_server_is_down() {
    let mut a = NameServer::start("a");
    let a_addr = a.addr;
    let b = NameServer::start("b");
    let corral = Corral::start(&lb_config(
        1,
        "roundrobin",
        r#"check = { interval = "200ms", rise = 1, fall = 1 }"#,
        &[
            ("a", format!(r#"addr = "{}""#, a.addr)),
            ("b", format!(r#"addr = "{}", backup = true"#, b.addr)),
        ],
    ));
    let counts = tally((0..10).map(|_| name_via(corral.addr())));
    assert_eq!(
        counts.get("a"),
        Some(&10),
        "backup used while the active server is up: {counts:?}"
    );

    a.stop();
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || try_name_via(corral.addr())
            .as_deref()
            == Some("b")),
        "no client reached the backup within 3 s of the active server going down"
    );
    let counts = tally((0..5).map(|_| name_via(corral.addr())));
    assert_eq!(
        counts.get("b"),
        Some(&5),
        "active down: {counts:?} ({:?} after stop)",
        t.elapsed()
    );

    let a2 = NameServer::start_on("a", a_addr).expect("rebind server a on its port");
    assert!(
        wait_until(Duration::from_secs(3), || try_name_via(corral.addr())
            .as_deref()
            == Some("a")),
        "clients did not return to the active server within 3 s of it coming back"
    );
    let counts = tally((0..5).map(|_| name_via(corral.addr())));
    assert_eq!(counts.get("a"), Some(&5), "active back up: {counts:?}");
    drop(a2);
}

/// Health checks are spread over workers: with `workers = 2` a server gets one
/// check per interval (from the worker in charge of it), not one per worker;
/// and a server marked down by that worker is avoided by every worker.
#[test]
fn health_checks_are_spread_over_workers_and_shared() {
    let a = NameServer::start("a");
    let b = NameServer::start("b");
    let b_addr = b.addr;
    let c = Corral::start(&lb_config(
        2,
        "roundrobin",
        r#"check = { interval = "200ms", rise = 1, fall = 1 }"#,
        &[
            ("a", format!("addr = \"{}\"", a.addr)),
            ("b", format!("addr = \"{b_addr}\"")),
        ],
    ));
    let before = a.conns();
    thread::sleep(Duration::from_millis(2000));
    let checks = a.conns() - before;
    assert!(
        (6..=14).contains(&checks),
        "one check per 200 ms over 2 s, not two: {checks}"
    );
    drop(b); // b goes down: the worker checking it marks it down for both
    thread::sleep(Duration::from_millis(700));
    let logged_before = c.log_text().lines().count();
    for _ in 0..20 {
        assert_eq!(name_via(c.addr()), "a");
    }
    thread::sleep(Duration::from_millis(300));
    // No worker even tried b (a worker unaware of the check would have
    // retried: retries > 0 in its log line).
    let lines: Vec<LogLine> = c
        .log_text()
        .lines()
        .skip(logged_before)
        .filter_map(LogLine::parse)
        .collect();
    assert!(lines.len() >= 20, "{} log lines", lines.len());
    assert!(
        lines.iter().all(|l| l.retries == 0 && l.server == "a"),
        "every worker knew b was down: {:?}",
        lines.iter().map(|l| &l.raw).collect::<Vec<_>>()
    );
}
