//! Crash safety of the shared stick tables, with real processes and SIGKILL.
//!
//! Four processes hammer one table (inserts, lookups, counter updates, expiry,
//! eviction) while this supervisor SIGKILLs one of them every ~50 ms, does what
//! the master does for a dead process (repair the shards whose lock it held,
//! clear its epoch slot) and starts a replacement. Then a checker walks the
//! segment: every entry reachable once, no slot in two places or in none, and
//! (in the model phase, without eviction or expiry) every key's counter equal
//! to a model kept beside it, give or take the kills that landed between the
//! counter update and the model update.
//!
//! `harness = false`: the supervisor must be single-threaded when it forks.
//! CRASH_SECS sets each phase's length (default 5 s per phase, 10 s in all).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{shared_array, Rng};
use corral_config::{DataType, KeyType, Table};
use corral_shm::freq::now_ms;
use corral_shm::{DataTypeName, Segment, StickTable};

const PROCS: usize = 4;

struct Shared {
    model: &'static [AtomicU64],
    heartbeat: &'static [AtomicU64],
    /// Reads that found an entry holding another key's value: a slot reused
    /// under a pinned reader.
    torn: &'static [AtomicU64],
}

/// Each entry's server_id encodes its key (key + 1; 0 until first set).
fn tag(k: u32) -> u64 {
    k as u64 + 1
}

fn child(t: &StickTable<'static>, slot: usize, keys: u32, sh: &Shared, model: bool) -> ! {
    let seg = t.segment();
    seg.epoch().claim(slot, std::process::id(), 1);
    let mut rng = Rng(std::process::id() as u64 * 0x9E37_79B9 + 1);
    let mut n = 0u64;
    loop {
        let k = (rng.next() % keys as u64) as u32;
        let now = now_ms();
        {
            let g = seg.epoch().pin(slot);
            if let Some(e) = t.get_or_create(&g, slot, &k.to_be_bytes(), now) {
                if let Some(id) = e.counter(DataTypeName::ServerId) {
                    id.store(tag(k), Ordering::Relaxed);
                }
                e.add(DataTypeName::Gpc0, 1);
                if model {
                    sh.model[k as usize].fetch_add(1, Ordering::Relaxed);
                }
                e.add_rate(DataTypeName::ConnRate, now, 1);
            }
        }
        for _ in 0..4 {
            let g = seg.epoch().pin(slot);
            let k = (rng.next() % keys as u64) as u32;
            if let Some(e) = t.lookup(&g, &k.to_be_bytes(), now) {
                let _ = e.value(DataTypeName::Gpc0, now);
                // Still pinned: whatever happens to the entry meanwhile, its
                // slot must not become another key's.
                for _ in 0..8 {
                    let id = e.value(DataTypeName::ServerId, now).unwrap_or(0);
                    let key = e.key_copy().unwrap_or_default();
                    if (id != 0 && id != tag(k)) || key != k.to_be_bytes() {
                        sh.torn[0].fetch_add(1, Ordering::Relaxed);
                    }
                    std::hint::spin_loop();
                }
            }
        }
        n += 1;
        if n.is_multiple_of(64) {
            t.expire_step(slot, now, 32);
            sh.heartbeat[slot].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn spawn(t: &StickTable<'static>, slot: usize, keys: u32, sh: &Shared, model: bool) -> libc::pid_t {
    // SAFETY: this process is single-threaded (harness = false); the child
    // only runs `child`, which never returns.
    match unsafe { libc::fork() } {
        0 => child(t, slot, keys, sh, model),
        pid if pid > 0 => pid,
        _ => panic!("fork failed"),
    }
}

fn kill_and_recover(t: &StickTable<'static>, pid: libc::pid_t, slot: usize) -> u32 {
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
    let repaired = t.recover_from(slot, 0);
    t.segment().epoch().clear(slot);
    repaired
}

fn phase(name: &str, size: u32, keys: u32, expire: Option<Duration>, secs: f64) {
    let model = expire.is_none() && size >= keys;
    let def = Table {
        name: name.into(),
        key: KeyType::Integer,
        key_len: 0,
        size,
        expire,
        store: vec![
            DataType::ConnRate(Duration::from_secs(1)),
            DataType::Gpc0,
            DataType::ServerId,
        ],
    };
    let seg: &'static Segment = Box::leak(Box::new(Segment::create().unwrap()));
    let t: &'static StickTable<'static> =
        Box::leak(Box::new(StickTable::create(seg, &def).unwrap()));
    let sh = Shared {
        model: shared_array(keys as usize),
        heartbeat: shared_array(PROCS + 1),
        torn: shared_array(1),
    };
    let mut pids: Vec<libc::pid_t> = (1..=PROCS).map(|s| spawn(t, s, keys, &sh, model)).collect();
    let mut rng = Rng(0xC0FFEE);
    let (mut kills, mut repairs) = (0u64, 0u32);
    let start = Instant::now();
    let mut watchdog = common::Watchdog::new(PROCS);
    while start.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 40));
        let victim = (rng.next() % PROCS as u64) as usize;
        repairs += kill_and_recover(t, pids[victim], victim + 1);
        kills += 1;
        pids[victim] = spawn(t, victim + 1, keys, &sh, model);
        watchdog.check(sh.heartbeat, name);
    }
    for (i, &pid) in pids.iter().enumerate() {
        repairs += kill_and_recover(t, pid, i + 1);
    }
    let torn = sh.torn[0].load(Ordering::Relaxed);
    assert_eq!(
        torn, 0,
        "{name}: {torn} reads saw a slot reused for another key under a pinned reader"
    );
    let (bad, total) = t.check();
    assert!(
        bad.is_empty(),
        "{name}: inconsistent shards after {kills} kills: {bad:?}"
    );
    assert!(
        total <= size,
        "{name}: {total} entries in a table of size {size}"
    );
    let mut checked = 0;
    if model {
        let g = seg.epoch().pin(0);
        let now = now_ms();
        for k in 0..keys {
            let m = sh.model[k as usize].load(Ordering::Relaxed);
            let v = t
                .lookup(&g, &k.to_be_bytes(), now)
                .and_then(|e| e.value(DataTypeName::Gpc0, now));
            match v {
                Some(v) => {
                    assert!(
                        v >= m && v <= m + kills,
                        "{name}: key {k}: counter {v}, model {m}, kills {kills}"
                    );
                    checked += 1;
                }
                None => assert_eq!(
                    m, 0,
                    "{name}: key {k} counted {m} times in the model but lost from the table"
                ),
            }
        }
    }
    let inserts: u64 = sh
        .heartbeat
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .sum::<u64>()
        * 64;
    println!(
        "crash phase {name}: {secs:.0} s, {kills} SIGKILLs, {repairs} shard repairs, ~{inserts} updates, {total} entries, {checked} keys checked against the model: ok"
    );
}

fn main() {
    let secs: f64 = std::env::var("CRASH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    phase("model", 20_000, 5_000, None, secs);
    phase("churn", 500, 5_000, Some(Duration::from_millis(50)), secs);
    println!("2 passed, 0 failed");
}
