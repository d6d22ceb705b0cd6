//! Harness for corral's end-to-end tests.
//!
//! [`Corral`] runs the real binary (`corral -f FILE`) in its own process group
//! with its stdout/stderr captured to files in a private temporary directory,
//! and exposes the master and worker pids and what they cost (CPU ticks, fds,
//! RSS). The backend servers run in threads of the test process on
//! 127.0.0.1:0 listeners that stay bound for the life of the server, so no port
//! race exists for them:
//!
//! - [`EchoServer`]: echoes everything, then closes after the client's FIN.
//! - [`NameServer`]: writes `NAME\n` as soon as it accepts, then echoes; the
//!   client learns which server it reached by reading one line, and may hold
//!   the connection open (leastconn, first, maxconn tests).
//! - [`ChaosServer`]: the client picks the behaviour with a first line:
//!   `ECHO`, `SINK` (read to EOF, answer `LEN HASH`), `SOURCE LEN SEED` (send
//!   LEN bytes, shut down writing, then read the client's answer), `RST N`
//!   (read N bytes then reset), so one backend serves warm-up traffic and
//!   every chaos scenario.
//! - [`SlowServer`]: reads at a fixed rate (backpressure tests).
//!
//! Every server records each connection's end, so a test can assert that a
//! side saw the connection closed promptly.
#![allow(dead_code)]

pub mod cli;
pub mod http;
#[allow(unused_imports)]
pub use cli::*;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

#[allow(unused_imports)]
pub use nix::sys::signal::Signal as Sig;

/// Path of the corral binary built by cargo for these tests.
pub fn corral_bin() -> &'static str {
    env!("CARGO_BIN_EXE_corral")
}

// ---------------------------------------------------------------------------
// Temporary directories and ports
// ---------------------------------------------------------------------------

/// A fresh, uniquely named directory under `std::env::temp_dir()`.
pub fn temp_dir(tag: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "corral-test-{tag}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
///
/// Ports come from below the kernel's ephemeral range (so an outgoing
/// connection of corral or of another test cannot grab the port between this
/// call and corral's bind), from a per-process sequence starting at a random
/// offset (so parallel tests, and parallel test runs, do not pick the same
/// one), and are checked by binding them once.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (lo, hi) = port_range();
    let next = NEXT.get_or_init(|| {
        let seed = std::process::id().wrapping_mul(7919).wrapping_add(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
        AtomicU32::new(seed % (hi - lo))
    });
    for _ in 0..(hi - lo) {
        let port = (lo + next.fetch_add(1, Ordering::Relaxed) % (hi - lo)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && !port_in_proc_net_tcp(port) {
            return port;
        }
    }
    // Fall back to the kernel's choice.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn port_range() -> (u32, u32) {
    let eph_lo = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|x| x.parse::<u32>().ok())
        })
        .unwrap_or(32768);
    if eph_lo > 12000 {
        (10000, eph_lo.min(30000))
    } else {
        (eph_lo.max(1024), 65000)
    }
}

fn port_in_proc_net_tcp(port: u16) -> bool {
    proc_net_tcp()
        .iter()
        .any(|e| e.local.port() == port || e.remote.port() == port)
}

/// A loopback address on which nothing listens (a "server down").
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ---------------------------------------------------------------------------
// /proc helpers
// ---------------------------------------------------------------------------

/// Fields of /proc/PID/stat after the `(comm)`: index 0 is field 3 (state),
/// index 1 is field 4 (ppid), index 11 is utime, index 12 is stime.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = s.rfind(')')?;
    Some(
        s[close + 1..]
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// Parent pid of `pid` (field 4 of /proc/PID/stat).
pub fn ppid(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Process group of `pid` (field 5 of /proc/PID/stat).
pub fn pgrp(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match stat_fields(pid) {
        Some(f) => f.first().map(|s| s != "Z" && s != "X").unwrap_or(false),
        None => false,
    }
}

/// utime + stime of `pid`, in clock ticks (CLK_TCK = 100 here).
pub fn cpu_ticks(pid: i32) -> u64 {
    let f = stat_fields(pid).unwrap_or_default();
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// How many of `pid`'s fds are pipes (a worker keeps idle ones in its
/// splice pool; tests of splicing check `show info`'s PipesUsed instead).
pub fn pipe_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Number of open file descriptors of `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of `pid` in KiB (VmRSS of /proc/PID/status).
pub fn rss_kb(pid: i32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// /proc/PID/comm, trimmed.
pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// /proc/PID/cmdline with NULs turned into spaces.
pub fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .replace('\0', " ")
        .trim()
        .to_owned()
}

/// Live (non-zombie) children of `parent`, found through /proc/*/stat.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(pid) {
                let state = f.first().map(String::as_str).unwrap_or("");
                if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent)
                    && state != "Z"
                    && state != "X"
                {
                    out.push(pid);
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// One row of /proc/net/tcp (IPv4 sockets).
#[derive(Clone, Debug)]
pub struct TcpEntry {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// Kernel state: 0x0A is LISTEN, 0x01 ESTABLISHED.
    pub state: u8,
    pub inode: u64,
}

fn parse_hex_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints the network-order word as a native integer.
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// All IPv4 TCP sockets of this network namespace.
pub fn proc_net_tcp() -> Vec<TcpEntry> {
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(TcpEntry {
                local: parse_hex_addr(f.get(1)?)?,
                remote: parse_hex_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// Whether some socket listens on `addr` (checked without connecting, so a
/// readiness probe never reaches a backend nor moves a balancing algorithm).
pub fn is_listening(addr: SocketAddr) -> bool {
    proc_net_tcp()
        .iter()
        .any(|e| e.state == 0x0A && SocketAddr::V4(e.local) == addr)
}

fn socket_inodes(pid: i32) -> Vec<u64> {
    let mut out = Vec::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(target) = fs::read_link(e.path()) {
                let t = target.to_string_lossy();
                if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if let Ok(n) = n.parse() {
                        out.push(n);
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The corral process
// ---------------------------------------------------------------------------

/// fd counts of the master and of all the workers together, measured when
/// the instance was quiet.
#[derive(Clone, Debug)]
pub struct Baseline {
    pub master_fds: usize,
    pub worker_fds: usize,
    pub workers: usize,
}

/// A running `corral -f FILE`, killed (SIGKILL to workers, master and process
/// group) and reaped on drop.
pub struct Corral {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    child: Child,
    exit: Option<ExitStatus>,
    binds: Vec<SocketAddr>,
    expected_workers: Option<usize>,
    /// Every worker pid seen so far (for cleanup after the master is gone).
    seen_workers: Mutex<Vec<i32>>,
}

impl Corral {
    /// Writes `config` to a fresh temp dir, starts corral on it and waits (5 s
    /// at most) until every frontend address is listening and the configured
    /// number of workers exists. Panics with corral's stderr otherwise.
    pub fn start(config: &str) -> Corral {
        Corral::start_from(std::path::Path::new(corral_bin()), &[], config)
    }

    /// The frontend addresses found in the config's `bind` lines, in order.
    pub fn binds(&self) -> &[SocketAddr] {
        &self.binds
    }

    /// The first frontend address.
    pub fn addr(&self) -> SocketAddr {
        self.binds[0]
    }

    pub fn master_pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Live children of the master (the workers).
    pub fn worker_pids(&self) -> Vec<i32> {
        let pids = children_of(self.master_pid());
        let mut seen = self.seen_workers.lock().unwrap();
        for &p in &pids {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        pids
    }

    /// Master + workers.
    pub fn all_pids(&self) -> Vec<i32> {
        let mut v = vec![self.master_pid()];
        v.extend(self.worker_pids());
        v
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.master_pid()), sig).expect("signal master");
    }

    /// Waits for the master to exit; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exit {
            return Some(st);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything corral wrote to stdout (the default `[global] log`).
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.join("stdout.log")).unwrap_or_default())
            .into_owned()
    }

    /// Everything corral wrote to stderr.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.join("stderr.log")).unwrap_or_default())
            .into_owned()
    }

    /// Waits (up to `timeout`) for the per-connection log line of the client
    /// whose local address is `client`, and parses it.
    pub fn wait_log_line(&self, client: SocketAddr, timeout: Duration) -> LogLine {
        let needle = format!("{client} [");
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(pos) = text.find(&needle) {
                let line = text[pos..].lines().next().unwrap_or("");
                return LogLine::parse(line).unwrap_or_else(|| {
                    panic!("log line for {client} does not parse as a TCP log line: {line:?}")
                });
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line for client {client} after {timeout:?}\n--- stdout ---\n{text}\n--- stderr ---\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects to the first frontend (5 s read/write timeouts).
    pub fn connect(&self) -> TcpStream {
        connect(self.addr())
    }

    /// Sum of utime+stime ticks over master and workers.
    pub fn total_cpu_ticks(&self) -> u64 {
        self.all_pids().into_iter().map(cpu_ticks).sum()
    }

    /// Sum of RSS (KiB) over master and workers.
    pub fn total_rss_kb(&self) -> u64 {
        self.all_pids().into_iter().map(rss_kb).sum()
    }

    /// The worker that holds corral's side of the client connection `client`.
    pub fn owner_of(&self, client: &TcpStream) -> Option<i32> {
        owner_among(client, &self.worker_pids())
    }

    fn fd_snapshot(&self) -> Baseline {
        let workers = self.worker_pids();
        Baseline {
            master_fds: fd_count(self.master_pid()),
            // Pipes a worker keeps in its pool for the next splice are not
            // a leak (`show info`'s PipesUsed says whether any is lent).
            worker_fds: workers.iter().map(|&p| fd_count(p) - pipe_fds(p)).sum(),
            workers: workers.len(),
        }
    }

    /// fd counts once they have been stable for 200 ms (2 s at most).
    pub fn baseline(&self) -> Baseline {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = self.fd_snapshot();
        let mut stable_since = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(50));
            let now = self.fd_snapshot();
            if now.master_fds != last.master_fds
                || now.worker_fds != last.worker_fds
                || now.workers != last.workers
            {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_millis(200)
                || Instant::now() > deadline
            {
                return now;
            }
        }
    }

    /// The check that follows every chaos scenario: within 3 s the fd counts
    /// of the master and of the workers are back to (at most) `base`, and over
    /// the next 3 idle seconds master + workers use < 3 clock ticks (< 1% CPU).
    pub fn assert_quiescent(&self, base: &Baseline) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let now = self.fd_snapshot();
            if now.workers == base.workers
                && now.master_fds <= base.master_fds
                && now.worker_fds <= base.worker_fds
            {
                break;
            }
            if Instant::now() > deadline {
                let detail: Vec<String> = self
                    .all_pids()
                    .into_iter()
                    .map(|p| format!("pid {p}: {} fds: {}", fd_count(p), fd_list(p)))
                    .collect();
                panic!(
                    "fds not back to baseline 3 s after the chaos: baseline {base:?}, now {now:?}\n{}",
                    detail.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        let pids = self.all_pids();
        let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        thread::sleep(Duration::from_secs(3));
        let after: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        for &p in &pids {
            assert!(
                is_alive(p),
                "corral process {p} died during the idle period\n--- stderr ---\n{}",
                self.stderr_text()
            );
        }
        let used: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        assert!(
            used < 3,
            "idle corral used {used} clock ticks in 3 s (>= 1% CPU); per pid {:?}",
            pids.iter()
                .zip(after.iter().zip(&before))
                .map(|(p, (a, b))| (*p, a - b))
                .collect::<Vec<_>>()
        );
    }
}

fn fd_list(pid: i32) -> String {
    let mut v: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    format!(
                        "{}->{}",
                        e.file_name().to_string_lossy(),
                        fs::read_link(e.path())
                            .map(|t| t.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.join(" ")
}

impl Drop for Corral {
    fn drop(&mut self) {
        let master = self.master_pid();
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            for w in children_of(master) {
                let _ = kill(Pid::from_raw(w), Signal::SIGKILL);
            }
            // The master is not reaped yet, so its pid (our process group id)
            // cannot have been reused: the group holds only corral processes.
            let _ = kill(Pid::from_raw(master), Signal::SIGKILL);
            let _ = killpg(Pid::from_raw(master), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        // Workers that outlived their master: only pids seen as its children
        // and still in its process group.
        for &w in self.seen_workers.lock().unwrap().iter() {
            if is_alive(w) && pgrp(w) == Some(master) {
                let _ = kill(Pid::from_raw(w), Signal::SIGKILL);
            }
        }
        if thread::panicking() {
            eprintln!(
                "corral test dir kept: {}\n--- corral stderr (tail) ---\n{}\n--- corral stdout (tail) ---\n{}",
                self.dir.display(),
                tail(&self.stderr_text(), 40),
                tail(&self.log_text(), 40)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Addresses in the `bind = ...` lines of a config (string or array form).
fn parse_binds(config: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in config.lines() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix("bind") else {
            continue;
        };
        if !rest.trim_start().starts_with('=') {
            continue;
        }
        for (i, part) in rest.split('"').enumerate() {
            if i % 2 == 1 {
                if let Ok(a) = part.parse() {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// `workers = N` of `[global]`, if given as an integer ("auto": the core count).
fn parse_workers(config: &str) -> Option<usize> {
    let mut section = String::new();
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            continue;
        }
        if section == "global" {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == "workers" {
                    let v = v.split('#').next().unwrap().trim();
                    if v == "\"auto\"" {
                        return thread::available_parallelism().ok().map(|n| n.get());
                    }
                    return v.parse().ok();
                }
            }
        }
    }
    None
}

/// Runs `corral ARGS...` to completion (10 s at most) and returns its output.
pub fn run_corral(args: &[&str]) -> Output {
    let mut child = Command::new(corral_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corral {args:?} did not exit within 10 s");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

// ---------------------------------------------------------------------------
// HAProxy TCP log lines
// ---------------------------------------------------------------------------

/// One parsed line of the HAProxy TCP log format:
/// `CLIENT_IP:PORT [date] FRONTEND BACKEND/SERVER Tw/Tc/Tt BYTES TERMSTATE
///  actconn/feconn/beconn/srv_conn/retries srv_queue/backend_queue`.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub raw: String,
    pub client: SocketAddr,
    pub date: String,
    pub frontend: String,
    pub backend: String,
    pub server: String,
    pub tw: i64,
    pub tc: i64,
    pub tt: i64,
    pub bytes: u64,
    pub term: String,
    pub actconn: i64,
    pub feconn: i64,
    pub beconn: i64,
    pub srv_conn: i64,
    pub retries: i64,
    pub srv_queue: i64,
    pub backend_queue: i64,
}

fn ints(s: &str, n: usize) -> Option<Vec<i64>> {
    // HAProxy prefixes some values with '+' (logasap); accept it.
    let v: Vec<i64> = s
        .split('/')
        .map(|x| x.trim_start_matches('+').parse::<i64>())
        .collect::<Result<_, _>>()
        .ok()?;
    (v.len() == n).then_some(v)
}

impl LogLine {
    pub fn parse(line: &str) -> Option<LogLine> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 {
            return None;
        }
        let client = f[0].parse().ok()?;
        if !(f[1].starts_with('[') && f[1].ends_with(']')) {
            return None;
        }
        let (backend, server) = f[3].split_once('/')?;
        let t = ints(f[4], 3)?;
        let bytes = f[5].trim_start_matches('+').parse().ok()?;
        let term = f[6].to_owned();
        if term.chars().count() != 2 {
            return None;
        }
        let c = ints(f[7], 5)?;
        let q = ints(f[8], 2)?;
        Some(LogLine {
            raw: line.to_owned(),
            client,
            date: f[1].to_owned(),
            frontend: f[2].to_owned(),
            backend: backend.to_owned(),
            server: server.to_owned(),
            tw: t[0],
            tc: t[1],
            tt: t[2],
            bytes,
            term,
            actconn: c[0],
            feconn: c[1],
            beconn: c[2],
            srv_conn: c[3],
            retries: c[4],
            srv_queue: q[0],
            backend_queue: q[1],
        })
    }
}

// ---------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------

/// Connects to `addr` (2 s connect timeout) with 5 s read/write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.set_nodelay(true);
    s
}

/// Connects to `dst` from `src` (bind-before-connect, kernel-chosen port).
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    use nix::sys::socket::{
        bind, connect as nconnect, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let SocketAddr::V4(dst) = dst else {
        return Err(io::Error::other("IPv4 only"));
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    nconnect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Reads one `\n`-terminated line (without the newline), byte by byte so
/// nothing after it is consumed.
pub fn read_line(s: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {:?}", String::from_utf8_lossy(&out)),
                ))
            }
            _ if b[0] == b'\n' => return Ok(String::from_utf8_lossy(&out).into_owned()),
            _ => out.push(b[0]),
        }
        if out.len() > 4096 {
            return Err(io::Error::other("line too long"));
        }
    }
}

/// Connects through `addr` to a [`NameServer`] and returns the server's name.
pub fn name_via(addr: SocketAddr) -> String {
    let mut s = connect(addr);
    read_line(&mut s).unwrap_or_else(|e| panic!("reading server name via {addr}: {e}"))
}

/// Like [`name_via`], but `None` when the connection closes before a name.
pub fn try_name_via(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    read_line(&mut s).ok()
}

/// Sends `msg` and expects it echoed back in full.
pub fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write to proxy");
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).expect("read echo from proxy");
    assert_eq!(got, msg, "echo differs");
}

/// Whether any byte arrives on `s` within `wait` (`false` on timeout).
/// Panics on EOF or error: the connection must stay open.
pub fn data_arrives_within(s: &mut TcpStream, wait: Duration, buf: &mut [u8]) -> Option<usize> {
    s.set_read_timeout(Some(wait)).unwrap();
    let r = s.read(buf);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match r {
        Ok(0) => panic!("connection closed while waiting for data"),
        Ok(n) => Some(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("connection failed while waiting for data: {e}"),
    }
}

/// How a read-until-closed ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// FIN: read returned 0.
    Eof,
    /// RST or another error.
    Reset,
    /// Nothing happened before the timeout.
    StillOpen,
}

/// Reads (and discards) until the peer closes or `timeout` passes.
pub fn wait_closed(s: &mut TcpStream, timeout: Duration) -> (Closed, Duration) {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (Closed::StillOpen, start.elapsed());
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (Closed::Eof, start.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (Closed::StillOpen, start.elapsed())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return (Closed::Reset, start.elapsed()),
        }
    }
}

/// Closes `s` with an RST (SO_LINGER 0, then close).
pub fn reset(s: TcpStream) {
    set_linger_zero(&s);
    drop(s);
}

pub fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_LINGER");
}

// ---------------------------------------------------------------------------
// Data: deterministic pseudo-random bytes and a streaming 64-bit checksum
// ---------------------------------------------------------------------------

/// xorshift64* generator: deterministic bytes from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rem.len();
            rem.copy_from_slice(&v[..n]);
        }
    }
}

/// An FNV-style streaming checksum over 64-bit words (order- and
/// chunking-independent: the same bytes give the same sum however they were
/// split into reads).
#[derive(Clone)]
pub struct Checksum {
    h: u64,
    pending: [u8; 8],
    npending: usize,
    len: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Self::new()
    }
}

impl Checksum {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    pub fn new() -> Checksum {
        Checksum {
            h: 0xCBF2_9CE4_8422_2325,
            pending: [0; 8],
            npending: 0,
            len: 0,
        }
    }
    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(Self::PRIME).rotate_left(23);
    }
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.npending > 0 {
            let take = (8 - self.npending).min(data.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&data[..take]);
            self.npending += take;
            data = &data[take..];
            if self.npending < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.pending);
            self.word(w);
            self.npending = 0;
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rem = chunks.remainder();
        self.pending[..rem.len()].copy_from_slice(rem);
        self.npending = rem.len();
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(&self) -> u64 {
        let mut c = self.clone();
        let mut last = [0u8; 8];
        last[..c.npending].copy_from_slice(&c.pending[..c.npending]);
        c.word(u64::from_le_bytes(last));
        c.word(c.len);
        c.h
    }
}

/// Checksum of `len` bytes generated from `seed`.
pub fn checksum_of_stream(seed: u64, len: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; 65536];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        sum.update(&buf[..n]);
        left -= n as u64;
    }
    sum.finish()
}

/// Writes `len` bytes from `seed` to `w`; returns their checksum.
pub fn write_stream(w: &mut impl Write, seed: u64, len: u64) -> io::Result<u64> {
    let mut rng = Rng::new(seed);
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; 65536];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        sum.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(sum.finish())
}

/// Reads until EOF; returns (length, checksum).
pub fn read_to_end_sum(r: &mut impl Read) -> io::Result<(u64, u64)> {
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok((sum.len(), sum.finish())),
            Ok(n) => sum.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads exactly `len` bytes; returns their checksum.
pub fn read_exact_sum(r: &mut impl Read, len: u64) -> io::Result<u64> {
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; 65536];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        let got = r.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF after {} of {len} bytes", len - left),
            ));
        }
        sum.update(&buf[..got]);
        left -= got as u64;
    }
    Ok(sum.finish())
}

// ---------------------------------------------------------------------------
// Backend servers
// ---------------------------------------------------------------------------

/// Counters every server keeps.
#[derive(Default)]
pub struct ServerStats {
    /// Connections accepted so far.
    pub conns: AtomicUsize,
    /// Connections whose handler has not finished yet.
    pub active: AtomicUsize,
    /// When each connection's handler finished, in order.
    pub ended: Mutex<Vec<Instant>>,
}

/// An accept loop in a thread; one thread per connection runs `handler`.
/// Dropping or [`Acceptor::stop`]ping it closes the listening socket, so the
/// port refuses connections (a "server down"); open connections go on.
pub struct Acceptor {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Handler = Arc<dyn Fn(TcpStream, &ServerStats) + Send + Sync>;

impl Acceptor {
    fn spawn(bind: SocketAddr, stats: Arc<ServerStats>, handler: Handler) -> io::Result<Acceptor> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stop2) = (stats.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
                        let _ = s.set_nodelay(true);
                        st.conns.fetch_add(1, Ordering::SeqCst);
                        st.active.fetch_add(1, Ordering::SeqCst);
                        let (h, st2) = (handler.clone(), st.clone());
                        thread::spawn(move || {
                            h(s, &st2);
                            st2.ended.lock().unwrap().push(Instant::now());
                            st2.active.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Acceptor {
            addr,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// Closes the listening socket: new connections are refused.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn conns(&self) -> usize {
        self.stats.conns.load(Ordering::SeqCst)
    }

    pub fn active(&self) -> usize {
        self.stats.active.load(Ordering::SeqCst)
    }

    /// Waits until `active()` == `n`; false on timeout.
    pub fn wait_active(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.active() == n {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.active() == n
    }

    /// Waits until `ended` has `n` entries and returns them.
    pub fn wait_ended(&self, n: usize, timeout: Duration) -> Option<Vec<Instant>> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let e = self.stats.ended.lock().unwrap();
                if e.len() >= n {
                    return Some(e.clone());
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn echo_loop(s: &mut TcpStream) {
    let mut buf = vec![0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Echoes everything; after the client's FIN it closes.
pub struct EchoServer(pub Acceptor);

impl EchoServer {
    pub fn start() -> EchoServer {
        let h: Handler = Arc::new(|mut s, _| echo_loop(&mut s));
        EchoServer(Acceptor::spawn(loopback0(), Arc::default(), h).expect("echo server"))
    }
}

impl std::ops::Deref for EchoServer {
    type Target = Acceptor;
    fn deref(&self) -> &Acceptor {
        &self.0
    }
}
impl std::ops::DerefMut for EchoServer {
    fn deref_mut(&mut self) -> &mut Acceptor {
        &mut self.0
    }
}

/// Writes `NAME\n` on accept, then echoes until the client's FIN.
pub struct NameServer {
    pub name: String,
    pub acceptor: Acceptor,
}

impl NameServer {
    pub fn start(name: &str) -> NameServer {
        Self::start_on(name, loopback0()).expect("name server")
    }

    /// Binds a given address (e.g. to bring a stopped server back on its port).
    pub fn start_on(name: &str, addr: SocketAddr) -> io::Result<NameServer> {
        let line = format!("{name}\n");
        let h: Handler = Arc::new(move |mut s, _| {
            if s.write_all(line.as_bytes()).is_ok() {
                echo_loop(&mut s);
            }
        });
        Ok(NameServer {
            name: name.to_owned(),
            acceptor: Acceptor::spawn(addr, Arc::default(), h)?,
        })
    }
}

impl std::ops::Deref for NameServer {
    type Target = Acceptor;
    fn deref(&self) -> &Acceptor {
        &self.acceptor
    }
}
impl std::ops::DerefMut for NameServer {
    fn deref_mut(&mut self) -> &mut Acceptor {
        &mut self.acceptor
    }
}

/// Reads at `rate` bytes per second; counts what it has read.
pub struct SlowServer {
    pub acceptor: Acceptor,
    pub bytes_read: Arc<AtomicU64>,
}

impl SlowServer {
    pub fn start(rate: u64) -> SlowServer {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let counter = bytes_read.clone();
        let h: Handler = Arc::new(move |mut s, _| {
            let start = Instant::now();
            let mut total = 0u64;
            let mut buf = vec![0u8; 16384];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        total += n as u64;
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                        let due = start + Duration::from_secs_f64(total as f64 / rate as f64);
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                    }
                }
            }
        });
        SlowServer {
            acceptor: Acceptor::spawn(loopback0(), Arc::default(), h).expect("slow server"),
            bytes_read,
        }
    }
}

impl std::ops::Deref for SlowServer {
    type Target = Acceptor;
    fn deref(&self) -> &Acceptor {
        &self.acceptor
    }
}

/// What a [`ChaosServer`] connection did.
#[derive(Clone, Debug, Default)]
pub struct ChaosRecord {
    /// The command line the client sent.
    pub command: String,
    /// SINK: bytes read and their checksum.
    pub sink: Option<(u64, u64)>,
    /// SOURCE: what the client sent after the server's FIN.
    pub answer: Vec<u8>,
    /// RST: when the server reset the connection.
    pub reset_at: Option<Instant>,
    /// When the handler finished (the server saw the connection end).
    pub ended_at: Option<Instant>,
    /// ECHO: bytes echoed.
    pub echoed: u64,
}

/// A server whose behaviour the client chooses with its first line:
///
/// - `ECHO`: echo until the client's FIN, then close.
/// - `SINK`: read to EOF, then answer `LEN HASH\n` (HASH in hex) and close.
/// - `SOURCE LEN SEED`: send LEN bytes of [`Rng`]`(SEED)`, shut down writing,
///   read whatever the client sends until its FIN (kept in `answer`), close.
/// - `RST N`: read N bytes, then close with an RST.
pub struct ChaosServer {
    pub acceptor: Acceptor,
    pub records: Arc<Mutex<Vec<ChaosRecord>>>,
}

impl ChaosServer {
    pub fn start() -> ChaosServer {
        let records: Arc<Mutex<Vec<ChaosRecord>>> = Arc::default();
        let recs = records.clone();
        let h: Handler = Arc::new(move |mut s, _| {
            let mut rec = ChaosRecord::default();
            if let Ok(cmd) = read_line(&mut s) {
                rec.command = cmd.clone();
                chaos_session(&mut s, &cmd, &mut rec);
            }
            drop(s);
            rec.ended_at = Some(Instant::now());
            recs.lock().unwrap().push(rec);
        });
        ChaosServer {
            acceptor: Acceptor::spawn(loopback0(), Arc::default(), h).expect("chaos server"),
            records,
        }
    }

    /// Waits until `n` connections have ended and returns their records.
    pub fn wait_records(&self, n: usize, timeout: Duration) -> Vec<ChaosRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let r = self.records.lock().unwrap();
                if r.len() >= n {
                    return r.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "chaos server: {} connection(s) ended after {timeout:?}, expected {n}; records: {:?}",
                    self.records.lock().unwrap().len(),
                    self.records.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl std::ops::Deref for ChaosServer {
    type Target = Acceptor;
    fn deref(&self) -> &Acceptor {
        &self.acceptor
    }
}

fn chaos_session(s: &mut TcpStream, cmd: &str, rec: &mut ChaosRecord) {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        ["ECHO"] => {
            let mut buf = vec![0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        rec.echoed += n as u64;
                    }
                    Err(_) => return,
                }
            }
            let _ = s.shutdown(Shutdown::Write);
        }
        ["SINK"] => {
            if let Ok((len, sum)) = read_to_end_sum(s) {
                rec.sink = Some((len, sum));
                let _ = s.write_all(format!("{len} {sum:016x}\n").as_bytes());
            }
        }
        ["SOURCE", len, seed] => {
            let (Ok(len), Ok(seed)) = (len.parse::<u64>(), seed.parse::<u64>()) else {
                return;
            };
            if write_stream(s, seed, len).is_err() {
                return;
            }
            let _ = s.shutdown(Shutdown::Write);
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if rec.answer.len() < 1 << 20 {
                            rec.answer.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
        }
        ["RST", n] => {
            let Ok(n) = n.parse::<u64>() else { return };
            let mut left = n;
            let mut buf = vec![0u8; 65536];
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                match s.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => left -= k as u64,
                }
            }
            set_linger_zero(s);
            rec.reset_at = Some(Instant::now());
        }
        _ => {}
    }
}

fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Waits until `f()` holds (polling every 5 ms); false on timeout.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Starting corral from another binary or with extra arguments
// ---------------------------------------------------------------------------

/// How [`Corral::launch`] starts corral.
pub struct Launch<'a> {
    /// The binary (default: the one cargo built).
    pub bin: &'a std::path::Path,
    /// Arguments before `-f FILE`.
    pub args: &'a [&'a str],
    /// The config text.
    pub config: &'a str,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
    /// stdout is a pipe nobody reads (a stalled log reader), not a file.
    pub stdout_pipe: bool,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            bin: std::path::Path::new(corral_bin()),
            args: &[],
            config: "",
            env: &[],
            stdout_pipe: false,
        }
    }
}

impl Corral {
    /// Like [`Corral::start`], but runs `bin` (e.g. a copy of the corral
    /// binary that a test later replaces on disk) as `bin ARGS... -f FILE`
    /// (e.g. `--takeover SOCKET`). Same readiness wait (every frontend
    /// address listening and the configured number of workers, 5 s at most),
    /// same cleanup on drop.
    pub fn start_from(bin: &std::path::Path, args: &[&str], config: &str) -> Corral {
        Corral::launch(Launch {
            bin,
            args,
            config,
            ..Launch::default()
        })
    }

    /// Like [`Corral::start`], with extra environment variables (the
    /// debug-build test knobs: `CORRAL_TEST_SHM_LIMIT`, ...).
    pub fn start_env(config: &str, env: &[(&str, &str)]) -> Corral {
        Corral::launch(Launch {
            config,
            env,
            ..Launch::default()
        })
    }

    /// Starts corral as `l` says; same readiness wait and cleanup as
    /// [`Corral::start`].
    pub fn launch(l: Launch<'_>) -> Corral {
        let bin = l.bin;
        let args = l.args;
        let config = l.config;
        let dir = temp_dir("run");
        let config_path = dir.join("corral.toml");
        fs::write(&config_path, config).expect("write config");
        let stdout = if l.stdout_pipe {
            Stdio::piped()
        } else {
            Stdio::from(File::create(dir.join("stdout.log")).expect("stdout file"))
        };
        let stderr = File::create(dir.join("stderr.log")).expect("stderr file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .arg("-f")
            .arg(&config_path)
            .current_dir(&dir)
            .env("RUST_BACKTRACE", "1")
            .envs(l.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(stderr))
            .process_group(0);
        let child = retry_text_busy(|| cmd.spawn())
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut c = Corral {
            dir,
            config_path,
            child,
            exit: None,
            binds: parse_binds(config),
            expected_workers: parse_workers(config),
            seen_workers: Mutex::new(Vec::new()),
        };
        assert!(!c.binds.is_empty(), "test config has no frontend bind");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(st)) = c.child.try_wait() {
                c.exit = Some(st);
                panic!(
                    "{} {args:?} exited during startup with {st}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    bin.display(),
                    c.stderr_text(),
                    c.log_text()
                );
            }
            let listening = c.binds.iter().all(|a| is_listening(*a));
            let workers = c.worker_pids().len();
            let enough = match c.expected_workers {
                Some(n) => workers == n,
                None => workers >= 1,
            };
            if listening && enough {
                return c;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} {args:?} not ready after 5 s (listening: {listening}, workers: {workers}, expected {:?})\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    bin.display(),
                    c.expected_workers,
                    c.stderr_text(),
                    c.log_text()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Which of `pids` holds the proxy side of `client` (2 s at most).
pub fn owner_among(client: &TcpStream, pids: &[i32]) -> Option<i32> {
    let (SocketAddr::V4(local), SocketAddr::V4(peer)) =
        (client.local_addr().ok()?, client.peer_addr().ok()?)
    else {
        return None;
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let inode = proc_net_tcp()
            .into_iter()
            .find(|e| e.local == peer && e.remote == local && e.inode != 0)
            .map(|e| e.inode);
        if let Some(inode) = inode {
            for &w in pids {
                if socket_inodes(w).contains(&inode) {
                    return Some(w);
                }
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one command to a stats socket (non-interactive: `CMD\n`, then
/// shutdown of the write side) and returns the whole answer, read to EOF
/// (10 s timeouts).
pub fn stats_command(socket: &std::path::Path, cmd: &str) -> io::Result<String> {
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Whether tool `bin` is installed; without it the test is skipped, or
/// fails under `CORRAL_REQUIRE_TOOLS` (as CI sets it).
pub fn have(bin: &str) -> bool {
    let found = ["/usr/bin", "/usr/sbin", "/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(bin).exists());
    if !found {
        assert!(
            std::env::var_os("CORRAL_REQUIRE_TOOLS").is_none(),
            "{bin} is required (CORRAL_REQUIRE_TOOLS) but not installed"
        );
        eprintln!("SKIPPED: {bin} is not installed");
    }
    found
}

/// Whether strace can run (see [`have`]).
pub fn have_strace() -> bool {
    have("strace")
}

/// Runs `start` (a spawn) again while it fails with ETXTBSY, for 2 s at
/// most. A binary a test has just written is "busy" while any process holds
/// it open for writing, and a child that another test thread forks in that
/// moment holds the write fd until its own exec closes it.
pub fn retry_text_busy<T>(mut start: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match start() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Whether this kernel lets this user grow a default pipe to 128 KiB (4 KiB
/// pages, under the user's pipe limits); if not, the test is skipped.
pub fn pipes_grow() -> bool {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-int array; both fds are closed below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fcntl and close on the pipe just made.
    let (default, grown) = unsafe {
        let d = libc::fcntl(fds[1], libc::F_GETPIPE_SZ);
        let g = libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 128 * 1024);
        libc::close(fds[0]);
        libc::close(fds[1]);
        (d, g)
    };
    let ok = default < 128 * 1024 && grown == 128 * 1024;
    if !ok {
        eprintln!("SKIPPED: pipes of {default} bytes do not grow to 128 KiB here");
    }
    ok
}

/// The byte counts the splice calls of an strace output returned (failed
/// calls, `= -1 EAGAIN`, left out).
pub fn splice_results(trace: &str) -> Vec<u64> {
    trace
        .lines()
        .filter(|l| l.contains("splice("))
        .filter_map(|l| l.rsplit(" = ").next()?.trim().parse().ok())
        .collect()
}

/// What `strace -f -e trace=CALLS` saw process `pid` do while `load` ran.
pub fn strace_during(pid: i32, calls: &str, load: impl FnOnce()) -> String {
    let out = temp_dir("strace").join("strace.txt");
    /// Detaches strace when dropped, also when the load panics (else it
    /// would stay attached to the worker, slowing the tests after).
    struct Tracer(std::process::Child);
    impl Drop for Tracer {
        fn drop(&mut self) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
    let st = Tracer(
        Command::new("strace")
            .args(["-f", "-e", &format!("trace={calls}"), "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("strace"),
    );
    thread::sleep(Duration::from_millis(500));
    load();
    thread::sleep(Duration::from_millis(200));
    drop(st);
    fs::read_to_string(&out).unwrap_or_default()
}

/// A connection to `addr` whose receive buffer is as small as the kernel
/// allows (SO_RCVBUF set before the handshake, so the window is small from
/// the start).
pub fn small_rcvbuf_connect(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh socket fd, owned by the TcpStream made from it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let v: libc::c_int = 4096;
    // SAFETY: valid fd and option pointer/length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    let SocketAddr::V4(a) = addr else {
        panic!("v4")
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: valid fd and sockaddr_in.
    let r = unsafe {
        libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    assert_eq!(r, 0, "connect");
    // SAFETY: we own fd.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// The kernel's TCP_INFO for socket `s` (segments in, packets unacked...).
pub fn tcp_info(s: &impl AsRawFd) -> libc::tcp_info {
    // SAFETY: tcp_info is plain integers, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a local we own.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info
}

/// The segments a server socket received up to and including a whole
/// request head, from accept to `\r\n\r\n`; then it answers 200 and closes.
pub fn segments_for_a_request(l: &TcpListener) -> u32 {
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed before a whole head");
        got.extend_from_slice(&b[..n]);
    }
    let segs = tcp_info(&s).tcpi_segs_in;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        .unwrap();
    segs
}
