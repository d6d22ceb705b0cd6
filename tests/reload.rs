//! Hot reload and takeover, as an operator lives them: reloads under a
//! connection-per-request load refuse and reset nothing, tunnels opened before
//! a reload go on until they end (or `hard_stop_after`), a broken config
//! changes nothing, stick-table counters survive reloads, a binary replaced on
//! disk takes effect on reload with the same master pid, a second instance
//! takes the listeners over without a refused connection, and a SIGKILLed
//! master leaves nothing behind.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

// ---------------------------------------------------------------------------
// Configs and the stats socket
// ---------------------------------------------------------------------------

/// A directory, removed on drop: for the stats socket (its path must be known
/// before corral starts, and a takeover instance uses the same one) or for a
/// copy of the binary.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        Scratch(temp_dir("sock"))
    }
    fn sock(&self) -> PathBuf {
        self.0.join("admin.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One TCP frontend (on `port`) to one backend server, a stats socket, and
/// optionally rules and a table.
fn config(
    port: u16,
    workers: usize,
    hard_stop_after: &str,
    sock: &Path,
    server: SocketAddr,
    rules: &[&str],
    table: &str,
) -> String {
    let rules: Vec<String> = rules.iter().map(|r| format!("  {r:?},")).collect();
    format!(
        r#"
[global]
workers = {workers}
hard_stop_after = "{hard_stop_after}"

[stats]
socket = "{sock}"
level = "admin"
mode = "0600"

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"
rules = [
{rules}
]

[backend.be]
mode = "tcp"
balance = "roundrobin"
timeout = {{ connect = "2s", client = "30s", server = "30s" }}
server.s0 = {{ addr = "{server}" }}
{table}
"#,
        sock = sock.display(),
        rules = rules.join("\n"),
    )
}

fn simple_config(workers: usize, hard_stop_after: &str, sock: &Path, server: SocketAddr) -> String {
    config(free_port(), workers, hard_stop_after, sock, server, &[], "")
}

// ---------------------------------------------------------------------------
// Connection-per-request load
// ---------------------------------------------------------------------------

#[derive(Default)]
struct LoadStats {
    ok: AtomicU64,
    refused: AtomicU64,
    connect_failed: AtomicU64,
    reset: AtomicU64,
    timeout: AtomicU64,
    short: AtomicU64,
    mismatch: AtomicU64,
    other: AtomicU64,
    /// The first failures, with when they happened.
    samples: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct LoadReport {
    ok: u64,
    refused: u64,
    connect_failed: u64,
    reset: u64,
    timeout: u64,
    short: u64,
    mismatch: u64,
    other: u64,
    samples: Vec<String>,
}

impl LoadReport {
    fn failures(&self) -> u64 {
        self.refused
            + self.connect_failed
            + self.reset
            + self.timeout
            + self.short
            + self.mismatch
            + self.other
    }
}

/// `threads` clients, each looping: connect, send 1-4 KiB of random bytes,
/// shut down writing, read the echo to EOF, compare, close.
struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
    threads: Vec<JoinHandle<()>>,
}

enum Failure {
    Refused,
    ConnectFailed,
    Reset,
    Timeout,
    Short,
    Mismatch,
    Other,
}

fn classify(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Failure::Reset,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Other,
    }
}

fn one_request(addr: SocketAddr, rng: &mut Rng) -> Result<(), (Failure, String)> {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err((Failure::Refused, format!("connect: {e}")))
        }
        Err(e) => return Err((Failure::ConnectFailed, format!("connect: {e}"))),
    };
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let len = 1024 + (rng.next_u64() % 3073) as usize;
    let mut payload = vec![0u8; len];
    rng.fill(&mut payload);
    if let Err(e) = s.write_all(&payload) {
        return Err((classify(&e), format!("write {len} bytes: {e}")));
    }
    if let Err(e) = s.shutdown(Shutdown::Write) {
        return Err((classify(&e), format!("shutdown: {e}")));
    }
    let mut got = Vec::with_capacity(len);
    if let Err(e) = s.read_to_end(&mut got) {
        return Err((
            classify(&e),
            format!("read after {} of {len} bytes: {e}", got.len()),
        ));
    }
    if got.len() != len {
        return Err((
            Failure::Short,
            format!("echo of {len} bytes was {} bytes", got.len()),
        ));
    }
    if got != payload {
        return Err((Failure::Mismatch, format!("echo of {len} bytes differs")));
    }
    Ok(())
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats: Arc<LoadStats> = Arc::default();
        let started = Instant::now();
        let threads = (0..threads)
            .map(|t| {
                let (stop, stats) = (stop.clone(), stats.clone());
                thread::spawn(move || {
                    let mut rng = Rng::new(0x5EED + t as u64);
                    while !stop.load(Ordering::Relaxed) {
                        match one_request(addr, &mut rng) {
                            Ok(()) => {
                                stats.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err((kind, msg)) => {
                                let counter = match kind {
                                    Failure::Refused => &stats.refused,
                                    Failure::ConnectFailed => &stats.connect_failed,
                                    Failure::Reset => &stats.reset,
                                    Failure::Timeout => &stats.timeout,
                                    Failure::Short => &stats.short,
                                    Failure::Mismatch => &stats.mismatch,
                                    Failure::Other => &stats.other,
                                };
                                counter.fetch_add(1, Ordering::Relaxed);
                                let mut s = stats.samples.lock().unwrap();
                                if s.len() < 20 {
                                    s.push(format!("t+{:?} thread {t}: {msg}", started.elapsed()));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            stats,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.stats.ok.load(Ordering::Relaxed)
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread panicked");
        }
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoadReport {
            ok: g(&s.ok),
            refused: g(&s.refused),
            connect_failed: g(&s.connect_failed),
            reset: g(&s.reset),
            timeout: g(&s.timeout),
            short: g(&s.short),
            mismatch: g(&s.mismatch),
            other: g(&s.other),
            samples: s.samples.lock().unwrap().clone(),
        }
    }
}

fn assert_clean(report: &LoadReport, min_ok: u64, what: &str, c: &Corral) {
    assert!(
        report.failures() == 0,
        "{what}: {} failed request(s): {report:?}\nfirst failures:\n{}\n--- corral stderr ---\n{}",
        report.failures(),
        report.samples.join("\n"),
        c.stderr_text()
    );
    assert!(
        report.ok > min_ok,
        "{what}: only {} requests completed (need > {min_ok}): {report:?}",
        report.ok
    );
}

// ---------------------------------------------------------------------------
// 1. Reloads under a connection-per-request load
// ---------------------------------------------------------------------------

/// 20 reloads (SIGUSR2, 0.5 s apart) under 3 connection-per-request clients:
/// no refused connection, no reset, every echo byte-correct, and the master
/// really went through 20 generations.
#[test]
fn twenty_reloads_under_connection_per_request_load_lose_nothing() {
    let echo = EchoServer::start();
    let sd = Scratch::new();
    let sock = sd.sock();
    let c = Corral::start(&simple_config(2, "10s", &sock, echo.addr));
    let master = c.master_pid();
    let first_workers = show_proc(&sock).worker_pids();

    let load = Load::start(c.addr(), 3);
    thread::sleep(Duration::from_millis(300));
    assert!(
        load.ok() > 0,
        "the load does not get through before any reload"
    );
    for _ in 0..20 {
        c.signal(Signal::SIGUSR2);
        thread::sleep(Duration::from_millis(500));
    }
    let reloaded = wait_until(Duration::from_secs(5), || {
        info_field(&sock, "Generation").as_deref() == Some("21")
    });
    // Some load after the last switch, too.
    thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    assert!(
        reloaded,
        "generation is {:?} after 20 SIGUSR2, expected 21\n--- stderr ---\n{}",
        info_field(&sock, "Generation"),
        c.stderr_text()
    );
    assert_clean(
        &report,
        100,
        "connection-per-request load across 20 reloads",
        &c,
    );
    eprintln!("20 reloads: {} requests, all correct", report.ok);

    let p = show_proc(&sock);
    assert_eq!(p.master, master, "master pid changed: {}", p.raw);
    assert_eq!(p.reloads, 20, "show proc: {}", p.raw);
    assert_eq!(p.failed, 0, "show proc: {}", p.raw);
    assert_eq!(p.workers.len(), 2, "show proc: {}", p.raw);
    assert!(p.workers.iter().all(|w| w.generation == 21), "{}", p.raw);
    assert!(p.worker_pids().is_disjoint(&first_workers), "{}", p.raw);
    let old: BTreeSet<i32> = p.old_pids().union(&first_workers).copied().collect();
    wait_old_gone(&c, &sock, &old, Duration::from_secs(5));
    assert_eq!(
        c.worker_pids().len(),
        2,
        "children of the master: {:?}",
        c.worker_pids()
    );
}

// ---------------------------------------------------------------------------
// 2. Long-lived connections across a reload
// ---------------------------------------------------------------------------

/// Four connections opened before a reload keep echoing (a round trip every
/// 100 ms) for 2 s after it, served by the old, draining workers while new
/// clients go to the new ones; once the clients close them, the old workers
/// exit.
#[test]
fn long_lived_connections_survive_a_reload_then_old_workers_exit() {
    let echo = EchoServer::start();
    let sd = Scratch::new();
    let sock = sd.sock();
    let c = Corral::start(&simple_config(2, "10s", &sock, echo.addr));
    let mut held: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut s = c.connect();
            echo_roundtrip(&mut s, format!("hello {i}").as_bytes());
            s
        })
        .collect();
    let owners: BTreeSet<i32> = held
        .iter()
        .map(|s| c.owner_of(s).expect("no worker holds a client connection"))
        .collect();
    let old_workers = show_proc(&sock).worker_pids();
    assert!(
        owners.is_subset(&old_workers),
        "{owners:?} vs {old_workers:?}"
    );

    let generation = reload_ok(&c, &sock);
    assert_eq!(generation, 2);
    let after = show_proc(&sock);
    let new_workers = after.worker_pids();
    assert_eq!(new_workers.len(), 2, "{}", after.raw);
    assert!(new_workers.is_disjoint(&old_workers), "{}", after.raw);

    let t = Instant::now();
    let mut round = 0;
    while t.elapsed() < Duration::from_secs(2) {
        for (i, s) in held.iter_mut().enumerate() {
            let msg = format!("round {round} conn {i} {}", "x".repeat(round % 50));
            s.write_all(msg.as_bytes())
                .unwrap_or_else(|e| panic!("conn {i} round {round}: write after reload: {e}"));
            let mut got = vec![0u8; msg.len()];
            s.read_exact(&mut got).unwrap_or_else(|e| {
                panic!(
                    "conn {i} round {round} ({:?} after the reload): read: {e}\n--- stderr ---\n{}",
                    t.elapsed(),
                    c.stderr_text()
                )
            });
            assert_eq!(got, msg.as_bytes(), "conn {i} round {round}: echo differs");
        }
        round += 1;
        thread::sleep(Duration::from_millis(100));
    }
    assert!(round >= 10, "only {round} rounds in 2 s");

    // Still draining, not gone: the connections are theirs.
    let p = show_proc(&sock);
    for &o in &owners {
        assert!(is_alive(o), "old worker {o} exited with connections open");
        let row = p.old.iter().find(|w| w.pid == o);
        assert!(
            matches!(row, Some(w) if w.draining && w.generation == 1),
            "old worker {o} not listed as a draining generation-1 worker:\n{}",
            p.raw
        );
    }
    // New clients reach the new generation.
    let mut fresh = c.connect();
    echo_roundtrip(&mut fresh, b"new client");
    let fresh_owner = c.owner_of(&fresh).expect("owner of a new connection");
    assert!(
        new_workers.contains(&fresh_owner),
        "a new client was served by {fresh_owner}, not by the new workers {new_workers:?}"
    );
    drop(fresh);

    drop(held);
    let took = wait_old_gone(&c, &sock, &old_workers, Duration::from_secs(3));
    eprintln!("old workers gone {took:?} after their last connection closed");
    assert!(echo.wait_active(0, Duration::from_secs(2)));
}

// ---------------------------------------------------------------------------
// 3. hard_stop_after
// ---------------------------------------------------------------------------

/// `hard_stop_after = "2s"`: an idle connection that never ends, held by an
/// old worker, is closed about 2 s after the reload (between 1.5 s and 4 s),
/// and the old worker exits; the backend side is closed too.
#[test]
fn hard_stop_after_closes_a_never_ending_connection_and_the_old_worker_exits() {
    let echo = EchoServer::start();
    let sd = Scratch::new();
    let sock = sd.sock();
    let c = Corral::start(&simple_config(2, "2s", &sock, echo.addr));
    let mut held = c.connect();
    echo_roundtrip(&mut held, b"I will never leave");
    let owner = c.owner_of(&held).expect("owner of the held connection");
    let old_workers = show_proc(&sock).worker_pids();

    reload_ok(&c, &sock);
    let t_reload = Instant::now();
    // Still open well before the deadline.
    let mut buf = [0u8; 64];
    assert_eq!(
        data_arrives_within(&mut held, Duration::from_millis(1000), &mut buf),
        None,
        "unexpected data on the idle connection"
    );
    echo_roundtrip(&mut held, b"still here at 1 s");
    let (how, _) = wait_closed(&mut held, Duration::from_secs(6));
    let closed_after = t_reload.elapsed();
    assert_ne!(
        how,
        Closed::StillOpen,
        "the idle connection is still open {closed_after:?} after the reload (hard_stop_after = 2s)"
    );
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after <= Duration::from_secs(4),
        "the idle connection was closed {closed_after:?} after the reload ({how:?}); expected ~2 s"
    );
    let exited = wait_until(Duration::from_secs(1), || !is_alive(owner));
    assert!(
        exited,
        "old worker {owner} still alive {:?} after the reload\n--- stderr ---\n{}",
        t_reload.elapsed(),
        c.stderr_text()
    );
    wait_old_gone(&c, &sock, &old_workers, Duration::from_secs(2));
    assert!(
        echo.wait_active(0, Duration::from_secs(2)),
        "the backend connection of the hard-stopped client is still open"
    );
    let mut s = c.connect();
    echo_roundtrip(&mut s, b"the new generation serves");
}

// ---------------------------------------------------------------------------
// 4. A broken config
// ---------------------------------------------------------------------------

/// The config file is overwritten with a broken one (a misspelt key), then
/// SIGUSR2, SIGHUP and `reload` on the stats socket: the CLI answers
/// `Success=0` with `FILE:LINE:COL: ...`, the log has the error, the master
/// and workers are the same processes, and traffic (a held connection and a
/// connection-per-request load) never notices. The good file back, `reload`
/// answers `Success=1` and new workers replace the old.
#[test]
fn broken_config_reload_changes_nothing_and_the_next_good_one_works() {
    let echo = EchoServer::start();
    let sd = Scratch::new();
    let sock = sd.sock();
    let good = simple_config(2, "10s", &sock, echo.addr);
    let c = Corral::start(&good);
    let master = c.master_pid();
    let workers_before = show_proc(&sock).worker_pids();
    assert_eq!(workers_before.len(), 2);
    let mut held = c.connect();
    echo_roundtrip(&mut held, b"before the broken reload");

    let bad = good.replace("balance = \"roundrobin\"", "balanse = \"roundrobin\"");
    assert_ne!(bad, good);
    let (idx, line) = bad
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("balanse"))
        .unwrap();
    let prefix = format!(
        "{}:{}:{}: ",
        c.config_path.display(),
        idx + 1,
        line.find("balanse").unwrap() + 1
    );
    fs::write(&c.config_path, &bad).unwrap();

    let load = Load::start(c.addr(), 2);
    thread::sleep(Duration::from_millis(200));
    c.signal(Signal::SIGUSR2);
    thread::sleep(Duration::from_millis(400));
    c.signal(Signal::SIGHUP);
    thread::sleep(Duration::from_millis(400));
    let answer = cli(&sock, "reload");
    thread::sleep(Duration::from_millis(400));
    echo_roundtrip(&mut held, b"after the broken reloads");
    let report = load.finish();

    assert!(
        answer.starts_with("Success=0\n--\n"),
        "reload of a broken config answered {answer:?}"
    );
    assert!(
        answer
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains("balanse")),
        "the answer does not locate the error at {prefix:?}: {answer:?}"
    );
    assert!(
        answer.ends_with("\n\n"),
        "answer not terminated: {answer:?}"
    );
    let logged = c
        .stderr_text()
        .lines()
        .filter(|l| l.contains(&prefix))
        .count();
    assert!(
        logged >= 3,
        "expected the error logged once per attempt (3), found {logged}\n--- stderr ---\n{}",
        c.stderr_text()
    );
    assert_clean(&report, 20, "load during broken reloads", &c);

    let p = show_proc(&sock);
    assert_eq!(p.master, master, "{}", p.raw);
    assert_eq!(
        p.worker_pids(),
        workers_before,
        "workers changed:\n{}",
        p.raw
    );
    assert!(p.old.is_empty(), "{}", p.raw);
    assert_eq!(p.reloads, 0, "{}", p.raw);
    assert_eq!(p.failed, 3, "{}", p.raw);
    assert!(is_alive(master));
    assert_eq!(
        c.worker_pids().into_iter().collect::<BTreeSet<_>>(),
        workers_before,
        "the master's children changed"
    );

    fs::write(&c.config_path, &good).unwrap();
    assert_eq!(reload_ok(&c, &sock), 2);
    let p = show_proc(&sock);
    assert_eq!(p.master, master, "{}", p.raw);
    assert_eq!(p.workers.len(), 2, "{}", p.raw);
    assert!(p.worker_pids().is_disjoint(&workers_before), "{}", p.raw);
    echo_roundtrip(&mut held, b"after the good reload");
    drop(held);
    wait_old_gone(&c, &sock, &workers_before, Duration::from_secs(3));
    let mut s = c.connect();
    echo_roundtrip(&mut s, b"new generation");
}

// ---------------------------------------------------------------------------
// 5. Stick tables across reloads
// ---------------------------------------------------------------------------

/// `(conn_cnt, conn_cur)` of `key` in `show table per_ip`.
fn table_counters(sock: &Path, key: &str) -> Option<(u64, u64, String)> {
    let text = cli(sock, "show table per_ip");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == format!("key={key}")))?
        .to_owned();
    let get = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((get("conn_cnt")?, get("conn_cur")?, text))
}

/// Three tracked connections from 127.0.0.7, a reload, three more... five
/// reloads: `show table per_ip` counts exactly 18 for that key.
#[test]
fn stick_table_counters_continue_across_five_reloads() {
    let echo = EchoServer::start();
    let sd = Scratch::new();
    let sock = sd.sock();
    let c = Corral::start(&config(
        free_port(),
        2,
        "10s",
        &sock,
        echo.addr,
        &["tcp-request connection track-sc0 src table per_ip"],
        "\n[table.per_ip]\ntype = \"ip\"\nsize = 1000\nexpire = \"10m\"\nstore = [\"conn_cnt\", \"conn_cur\"]\n",
    ));
    let src = Ipv4Addr::new(127, 0, 0, 7);
    let mut total = 0;
    let mut seen_workers = BTreeSet::new();
    for round in 0..6 {
        for i in 0..3 {
            let mut s = connect_from(src, c.addr()).expect("connect from 127.0.0.7");
            echo_roundtrip(&mut s, format!("round {round} conn {i}").as_bytes());
            if let Some(o) = c.owner_of(&s) {
                seen_workers.insert(o);
            }
            total += 1;
        }
        let counted = wait_until(
            Duration::from_secs(2),
            || matches!(table_counters(&sock, "127.0.0.7"), Some((n, _, _)) if n == total),
        );
        assert!(
            counted,
            "after {total} connections (round {round}) the table says {:?}",
            table_counters(&sock, "127.0.0.7")
        );
        if round < 5 {
            assert_eq!(reload_ok(&c, &sock), round + 2);
        }
    }
    assert_eq!(total, 18);
    let settled = wait_until(Duration::from_secs(2), || {
        matches!(table_counters(&sock, "127.0.0.7"), Some((18, 0, _)))
    });
    let (cnt, cur, text) = table_counters(&sock, "127.0.0.7").expect("no entry for 127.0.0.7");
    assert!(
        settled,
        "after 18 connections over 5 reloads: conn_cnt={cnt} conn_cur={cur}\n{text}"
    );
    assert!(
        text.starts_with("# table: per_ip, type: ip, size:1000, used:1\n"),
        "{text}"
    );
    eprintln!("18 connections served by workers {seen_workers:?}");
    assert_eq!(info_field(&sock, "Generation").as_deref(), Some("6"));
}

// ---------------------------------------------------------------------------
// 6. Binary upgrade
// ---------------------------------------------------------------------------

fn version_of(bin: &Path) -> String {
    let out = retry_text_busy(|| std::process::Command::new(bin).arg("-v").output())
        .unwrap_or_else(|e| panic!("{} -v: {e}", bin.display()));
    assert!(out.status.success(), "{} -v: {:?}", bin.display(), out);
    // The first line; the second is the build info.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().next().unwrap_or("").trim().to_owned()
}

/// A copy of corral runs; a build with another version string (`9.9.9`
/// patched into the version marker) is renamed over it as a package manager
/// does; a reload runs the new binary: same master pid, `show info` and
/// `show proc` say 9.9.9, /proc/PID/exe is the new file, traffic flows, and
/// one more reload still works.
#[test]
fn binary_replaced_on_disk_takes_effect_on_reload() {
    let echo = EchoServer::start();
    let sd = Scratch::new();
    let sock = sd.sock();
    let bin_dir = temp_dir("bin");
    let _cleanup = Scratch(bin_dir.clone());
    let bin = bin_dir.join("corral");
    fs::copy(corral_bin(), &bin).expect("copy the corral binary");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(version_of(&bin), "corral version 0.1.0");

    let c = Corral::start_from(&bin, &[], &simple_config(2, "10s", &sock, echo.addr));
    let master = c.master_pid();
    assert_eq!(info_field(&sock, "Version").as_deref(), Some("0.1.0"));
    let mut held = c.connect();
    echo_roundtrip(&mut held, b"before the upgrade");

    // The "rebuilt" binary: same length, another version in the marker.
    let mut image = fs::read(&bin).unwrap();
    let (from, to) = (b"CORRAL_VERSION=0.1.0", b"CORRAL_VERSION=9.9.9");
    let hits: Vec<usize> = image
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "version marker found at {hits:?}");
    assert_eq!(image[hits[0] + from.len()], 0, "marker not NUL-terminated");
    image[hits[0]..hits[0] + to.len()].copy_from_slice(to);
    let tmp = bin_dir.join(".corral.new");
    fs::write(&tmp, &image).unwrap();
    drop(image);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, &bin).expect("rename the new binary over the running one");
    assert_eq!(version_of(&bin), "corral version 9.9.9");
    // Not yet reloaded: the running master is still the old build.
    assert_eq!(info_field(&sock, "Version").as_deref(), Some("0.1.0"));

    assert_eq!(reload_ok(&c, &sock), 2);
    assert_eq!(
        info_field(&sock, "Version").as_deref(),
        Some("9.9.9"),
        "show info after the upgrade reload"
    );
    assert_eq!(info_field(&sock, "Pid"), Some(master.to_string()));
    let p = show_proc(&sock);
    assert_eq!(p.master, master, "{}", p.raw);
    assert_eq!(p.version, "9.9.9", "{}", p.raw);
    assert!(is_alive(master));
    let exe = fs::read_link(format!("/proc/{master}/exe")).unwrap();
    assert_eq!(exe, bin, "the master runs {exe:?}");
    for w in &p.workers {
        let exe = fs::read_link(format!("/proc/{}/exe", w.pid)).unwrap();
        assert_eq!(exe, bin, "new worker {} runs {exe:?}", w.pid);
    }
    echo_roundtrip(&mut held, b"the old worker still serves me");
    let mut s = c.connect();
    echo_roundtrip(&mut s, b"after the upgrade");
    drop(s);

    // The upgraded master reloads again.
    assert_eq!(reload_ok(&c, &sock), 3);
    assert_eq!(info_field(&sock, "Version").as_deref(), Some("9.9.9"));
    assert_eq!(show_proc(&sock).master, master);
    drop(held);
}

// ---------------------------------------------------------------------------
// 7. Takeover
// ---------------------------------------------------------------------------

/// Instance A serves a connection-per-request load; instance B starts with
/// `--takeover SOCKET` and the same config: no request fails, A's master
/// exits 0 within a few seconds with all its workers, B serves, and B's
/// `show proc` on the (same) stats socket path shows B's pid.
#[test]
fn takeover_under_load_refuses_nothing_and_the_old_instance_exits() {
    let echo = EchoServer::start();
    let sd = Scratch::new();
    let sock = sd.sock();
    let cfg = simple_config(2, "10s", &sock, echo.addr);
    let mut a = Corral::start(&cfg);
    let a_workers = a.worker_pids();
    assert_eq!(show_proc(&sock).master, a.master_pid());

    let load = Load::start(a.addr(), 3);
    thread::sleep(Duration::from_millis(500));
    let before = load.ok();
    assert!(before > 0, "no request got through before the takeover");
    let sock_arg = sock.to_str().unwrap().to_owned();
    let b = Corral::start_from(Path::new(corral_bin()), &["--takeover", &sock_arg], &cfg);
    let t = Instant::now();
    let status = a.wait_exit(Duration::from_secs(5));
    let a_exit_after = t.elapsed();
    thread::sleep(Duration::from_millis(700));
    let report = load.finish();

    let status = status.unwrap_or_else(|| {
        panic!(
            "instance A (pid {}) still running 5 s after the takeover\n--- A stderr ---\n{}\n--- B stderr ---\n{}",
            a.master_pid(),
            a.stderr_text(),
            b.stderr_text()
        )
    });
    assert!(
        status.success(),
        "A exited with {status}\n--- A stderr ---\n{}",
        a.stderr_text()
    );
    eprintln!(
        "A exited {a_exit_after:?} after B was up; {} requests",
        report.ok
    );
    assert!(
        report.failures() == 0,
        "takeover: {} failed request(s): {report:#?}\n--- A stderr ---\n{}\n--- B stderr ---\n{}",
        report.failures(),
        a.stderr_text(),
        b.stderr_text()
    );
    assert!(report.ok > before + 20, "the load stalled: {report:?}");
    let left: Vec<i32> = a_workers.iter().copied().filter(|&p| is_alive(p)).collect();
    assert!(
        wait_until(Duration::from_secs(2), || a_workers
            .iter()
            .all(|&p| !is_alive(p))),
        "A's workers still alive: {left:?}"
    );

    let p = show_proc(&sock);
    assert_eq!(
        p.master,
        b.master_pid(),
        "show proc after takeover:\n{}",
        p.raw
    );
    assert_eq!(
        p.worker_pids(),
        b.worker_pids().into_iter().collect::<BTreeSet<_>>(),
        "{}",
        p.raw
    );
    assert!(is_listening(b.addr()));
    for i in 0..5 {
        let mut s = b.connect();
        echo_roundtrip(&mut s, format!("served by B {i}").as_bytes());
        let owner = b.owner_of(&s).expect("owner");
        assert!(
            b.worker_pids().contains(&owner),
            "served by {owner}, not by B"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. SIGKILL of the master
// ---------------------------------------------------------------------------

/// Pids of live processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
                if pgrp(pid) == Some(pgid) && is_alive(pid) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// After a reload (so the lifeline was handed across exec), a client holds
/// an idle connection and the master is SIGKILLed: the workers notice, stop
/// accepting, and are all gone within hard_stop_after (2 s) + 1 s; the held
/// connection is closed, nothing of corral is left, the port is closed.
#[test]
fn sigkill_of_the_master_leaves_nothing_behind() {
    let echo = EchoServer::start();
    let sd = Scratch::new();
    let sock = sd.sock();
    let mut c = Corral::start(&simple_config(2, "2s", &sock, echo.addr));
    reload_ok(&c, &sock);
    let p = show_proc(&sock);
    let workers = p.worker_pids();
    let gen1: BTreeSet<i32> = p.old_pids();
    wait_old_gone(&c, &sock, &gen1, Duration::from_secs(3));
    assert_eq!(
        c.worker_pids().into_iter().collect::<BTreeSet<_>>(),
        workers
    );
    let mut held = c.connect();
    echo_roundtrip(&mut held, b"held across the master's death");
    let master = c.master_pid();

    kill(Pid::from_raw(master), Signal::SIGKILL).unwrap();
    let t = Instant::now();
    assert!(
        c.wait_exit(Duration::from_secs(1)).is_some(),
        "master survived SIGKILL"
    );
    let gone = wait_until(Duration::from_secs(3), || {
        workers.iter().all(|&w| !is_alive(w))
    });
    let took = t.elapsed();
    assert!(
        gone,
        "workers still alive {took:?} after SIGKILL of the master: {:?}\n--- stderr ---\n{}",
        workers.iter().filter(|&&w| is_alive(w)).collect::<Vec<_>>(),
        c.stderr_text()
    );
    eprintln!("workers gone {took:?} after the master's SIGKILL");
    let members = group_members(master);
    assert!(
        members.is_empty(),
        "corral processes left in its group: {members:?}"
    );
    let (how, _) = wait_closed(&mut held, Duration::from_millis(500));
    assert_ne!(
        how,
        Closed::StillOpen,
        "the held connection outlived corral"
    );
    assert!(!is_listening(c.addr()), "{} is still listening", c.addr());
    assert!(
        TcpStream::connect_timeout(&c.addr(), Duration::from_millis(500)).is_err(),
        "a connection to {} succeeded with corral dead",
        c.addr()
    );
    assert!(echo.wait_active(0, Duration::from_secs(2)));
}
