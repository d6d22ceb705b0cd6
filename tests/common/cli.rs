//! The stats socket as the tests drive it: one command per connection (as
//! socat does), `reload` with its `Success=` answer, `show info` fields and
//! `show proc` parsed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{is_alive, stats_command, wait_until, Corral};

pub fn cli(sock: &Path, cmd: &str) -> String {
    stats_command(sock, cmd)
        .unwrap_or_else(|e| panic!("stats socket {}: {cmd}: {e}", sock.display()))
}

/// `reload` on the stats socket; asserts `Success=1` and returns the new
/// generation.
pub fn reload_ok(c: &Corral, sock: &Path) -> u32 {
    let t = Instant::now();
    let answer = cli(sock, "reload");
    assert!(
        answer.starts_with("Success=1\n--\ngeneration "),
        "reload answered {answer:?} after {:?}\n--- stderr ---\n{}",
        t.elapsed(),
        c.stderr_text()
    );
    assert!(
        answer.ends_with("\n\n"),
        "reload answer not terminated: {answer:?}"
    );
    answer["Success=1\n--\ngeneration ".len()..]
        .lines()
        .next()
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("no generation number in {answer:?}"))
}

/// `Key: value` of `show info`.
pub fn info_field(sock: &Path, key: &str) -> Option<String> {
    let text = cli(sock, "show info");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_owned))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcWorker {
    pub pid: i32,
    pub generation: u32,
    pub id: usize,
    pub draining: bool,
    /// Its epoch slot (`None`: foreign to the master's segment).
    pub slot: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ProcView {
    pub master: i32,
    pub reloads: u32,
    pub failed: u32,
    pub version: String,
    pub workers: Vec<ProcWorker>,
    pub old: Vec<ProcWorker>,
    pub raw: String,
}

impl ProcView {
    pub fn worker_pids(&self) -> BTreeSet<i32> {
        self.workers.iter().map(|w| w.pid).collect()
    }
    pub fn old_pids(&self) -> BTreeSet<i32> {
        self.old.iter().map(|w| w.pid).collect()
    }
}

/// Parses `show proc`.
pub fn show_proc(sock: &Path) -> ProcView {
    let raw = cli(sock, "show proc");
    let mut view = ProcView {
        master: 0,
        reloads: 0,
        failed: 0,
        version: String::new(),
        workers: Vec::new(),
        old: Vec::new(),
        raw: raw.clone(),
    };
    let mut section = 0; // 0: master, 1: workers, 2: old workers
    for line in raw.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [] => {}
            [h, ..] if h.starts_with("#<PID>") => {}
            ["#", "workers"] => section = 1,
            ["#", "old", "workers"] => section = 2,
            [pid, "master", reloads, "[failed:", failed, _uptime, version] => {
                assert_eq!(section, 0, "master row out of place in {raw:?}");
                view.master = pid.parse().expect("master pid");
                view.reloads = reloads.parse().expect("reloads");
                view.failed = failed.trim_end_matches(']').parse().expect("failed");
                view.version = version.to_string();
            }
            [pid, "worker", _reloads, _uptime, _version, gen, id, rest @ ..] => {
                let w = ProcWorker {
                    pid: pid.parse().expect("worker pid"),
                    generation: gen
                        .strip_prefix("gen=")
                        .and_then(|g| g.parse().ok())
                        .unwrap_or_else(|| panic!("bad gen in {line:?}")),
                    id: id
                        .strip_prefix("id=")
                        .and_then(|g| g.parse().ok())
                        .unwrap_or_else(|| panic!("bad id in {line:?}")),
                    draining: rest.contains(&"draining"),
                    slot: rest
                        .iter()
                        .find_map(|r| r.strip_prefix("slot="))
                        .and_then(|n| n.parse().ok()),
                };
                match section {
                    1 => view.workers.push(w),
                    2 => view.old.push(w),
                    _ => panic!("worker row before '# workers' in {raw:?}"),
                }
            }
            _ => panic!("unexpected show proc line {line:?} in {raw:?}"),
        }
    }
    assert_ne!(view.master, 0, "no master row in show proc: {raw:?}");
    view
}

/// Waits until `show proc` lists no old worker and every pid of `old` is
/// gone; returns how long that took, or panics with the state.
pub fn wait_old_gone(c: &Corral, sock: &Path, old: &BTreeSet<i32>, timeout: Duration) -> Duration {
    let t = Instant::now();
    let done = wait_until(timeout, || {
        old.iter().all(|&p| !is_alive(p)) && show_proc(sock).old.is_empty()
    });
    assert!(
        done,
        "old workers {old:?} not gone after {timeout:?}: alive {:?}, show proc:\n{}\n--- stderr ---\n{}",
        old.iter().filter(|&&p| is_alive(p)).collect::<Vec<_>>(),
        show_proc(sock).raw,
        c.stderr_text()
    );
    t.elapsed()
}

/// One line of `show activity`: the total and the per-worker values.
pub fn activity(sock: &Path, name: &str) -> (u64, Vec<u64>) {
    let text = cli(sock, "show activity");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in show activity:\n{text}"));
    let mut words = line.split_whitespace();
    let total = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let each = words.filter_map(|w| w.parse().ok()).collect();
    (total, each)
}
