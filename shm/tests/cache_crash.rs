//! Crash safety of the shared HTTP cache, with real processes and SIGKILL.
//!
//! Four processes hammer one small cache (lookups that read and check whole
//! objects, some held across an unpinned read as a slow sender does;
//! stores that stream objects in pieces; purges; upkeep) while this
//! supervisor SIGKILLs one of them every ~50 ms, does what the master does
//! for a dead process (`recover_from`, clear its epoch slot) and starts a
//! replacement. Every object read must be exactly the bytes stored under its
//! key (a torn read means a block was reused under a reader). Then: the
//! structure checks clean, and once everything is purged and reclaimed every
//! block is free again (no reference or half store of a killed process
//! leaked).
//!
//! `harness = false`: the supervisor must be single-threaded when it forks.
//! CRASH_SECS sets the length (default 5 s).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{shared_array, Rng};
use corral_config::Cache as CacheDef;
use corral_shm::cache::{key_hash, unix_ms, Cache, StoreMeta};
use corral_shm::Segment;

const PROCS: usize = 4;
const KEYS: u64 = 400;

struct Shared {
    heartbeat: &'static [AtomicU64],
    torn: &'static [AtomicU64],
    hits: &'static [AtomicU64],
}

fn body_of(k: u64) -> Vec<u8> {
    let len = 500 + (k * 7919 % 60_000) as usize;
    (0..len)
        .map(|i| (k as u8).wrapping_mul(31).wrapping_add((i / 3) as u8))
        .collect()
}

fn key_of(k: u64) -> Vec<u8> {
    format!("be\0host\0/obj/{k}").into_bytes()
}

fn child(c: &Cache<'static>, seg: &'static Segment, slot: usize, sh: &Shared) -> ! {
    seg.epoch().claim(slot, std::process::id(), 1);
    let mut rng = Rng(std::process::id() as u64 * 0x9E37_79B9 + 7);
    let mut n = 0u64;
    loop {
        let k = rng.next() % KEYS;
        let key = key_of(k);
        let want = body_of(k);
        let now = unix_ms();
        let found = {
            let g = seg.epoch().pin(slot);
            match c.lookup(&g, &key, key_hash(&key), &|_| Vec::new(), now) {
                Some(f) if rng.next().is_multiple_of(2) => {
                    // Read under the pin.
                    let mut b = Vec::new();
                    let mut cur = c.cursor(&f, f.head_at() + f.head_len as u64, f.end());
                    c.read(&f, &mut cur, &mut b, usize::MAX);
                    if b != want {
                        sh.torn[0].fetch_add(1, Ordering::Relaxed);
                    }
                    sh.hits[0].fetch_add(1, Ordering::Relaxed);
                    None
                }
                // Held, then read unpinned in pieces (a slow sender).
                Some(f) => Some(c.hold(slot, f)),
                None => None,
            }
        };
        if let Some(h) = found {
            let mut b = Vec::new();
            let mut cur = c.cursor(&h, h.head_at() + h.head_len as u64, h.end());
            while c.read(&h, &mut cur, &mut b, 4096) > 0 {
                // As a sender waiting for its client: kills land here.
                spin(5_000);
            }
            if b != want {
                sh.torn[0].fetch_add(1, Ordering::Relaxed);
            }
            sh.hits[0].fetch_add(1, Ordering::Relaxed);
            c.release(slot, h);
        } else {
            let meta = StoreMeta {
                status: 200,
                stored_ms: now,
                expires_ms: now + 60_000,
                age: 0,
            };
            let body = rng.next().is_multiple_of(2);
            let expect = body.then_some(want.len() as u64);
            if let Some(mut st) = c.begin_store(
                slot,
                &key,
                key_hash(&key),
                b"",
                b"HEAD",
                expect,
                1 << 20,
                meta,
            ) {
                let mut ok = true;
                for piece in want.chunks(3000) {
                    // As a response arriving in pieces: kills land mid-store.
                    spin(5_000);
                    if !c.append(slot, &mut st, piece) {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    c.publish(slot, st);
                } else {
                    c.abandon(slot, st);
                }
            }
        }
        if rng.next().is_multiple_of(50) {
            let victim = key_of(rng.next() % KEYS);
            let _ = c.purge(slot, &|p| p == victim.as_slice());
        }
        n += 1;
        c.maintain(slot, n as u32, now);
        seg.epoch().try_advance();
        if n.is_multiple_of(16) {
            sh.heartbeat[slot].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn spin(n: u32) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

fn spawn(c: &Cache<'static>, seg: &'static Segment, slot: usize, sh: &Shared) -> libc::pid_t {
    // SAFETY: this process is single-threaded (harness = false); the child
    // only runs `child`, which never returns.
    match unsafe { libc::fork() } {
        0 => child(c, seg, slot, sh),
        pid if pid > 0 => pid,
        _ => panic!("fork failed"),
    }
}

fn kill_and_recover(c: &Cache<'static>, seg: &Segment, pid: libc::pid_t, slot: usize) -> u32 {
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
    let r = c.recover_from(slot, 0);
    seg.epoch().clear(slot);
    r.shards + r.refs + r.stores
}

fn main() {
    let secs: f64 = std::env::var("CRASH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let seg: &'static Segment = Box::leak(Box::new(Segment::create().unwrap()));
    seg.epoch().claim(0, std::process::id(), 1);
    let def = CacheDef {
        name: "crash".into(),
        total_max_size: 2 << 20,
        max_object_size: 64 << 10,
        max_age: Duration::from_secs(60),
        process_vary: false,
    };
    let c: &'static Cache<'static> = Box::leak(Box::new(Cache::create(seg, &def).unwrap()));
    let sh = Shared {
        heartbeat: shared_array(PROCS + 1),
        torn: shared_array(1),
        hits: shared_array(1),
    };
    let mut pids: Vec<libc::pid_t> = (1..=PROCS).map(|s| spawn(c, seg, s, &sh)).collect();
    let mut rng = Rng(0xCAC4E);
    let (mut kills, mut undone) = (0u64, 0u32);
    let start = Instant::now();
    let mut watchdog = common::Watchdog::new(PROCS);
    while start.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 40));
        let victim = (rng.next() % PROCS as u64) as usize;
        undone += kill_and_recover(c, seg, pids[victim], victim + 1);
        kills += 1;
        pids[victim] = spawn(c, seg, victim + 1, &sh);
        watchdog.check(sh.heartbeat, "cache");
    }
    for (i, &pid) in pids.iter().enumerate() {
        undone += kill_and_recover(c, seg, pid, i + 1);
    }
    let torn = sh.torn[0].load(Ordering::Relaxed);
    let hits = sh.hits[0].load(Ordering::Relaxed);
    assert_eq!(
        torn, 0,
        "{torn} of {hits} reads saw bytes that were not their key's object"
    );
    assert!(hits > 100, "the cache was hit ({hits})");
    let errors = c.check(0);
    assert!(
        errors.is_empty(),
        "inconsistent after {kills} kills: {errors:?}"
    );
    let s = c.summary();
    // Everything purged and reclaimed: every block comes back.
    c.purge(0, &|_| true).expect("no lock is held");
    for t in 0..10_000u32 {
        seg.epoch().try_advance();
        c.maintain(0, t, unix_ms());
    }
    let after = c.summary();
    assert_eq!(
        after.free_blocks, after.blocks,
        "blocks leaked after {kills} kills ({} of {} free)",
        after.free_blocks, after.blocks
    );
    assert!(c.check(0).is_empty());
    println!(
        "cache crash: {secs:.0} s, {kills} SIGKILLs, {undone} undone (locks, references, stores), {hits} hits checked, {} stores, {} evictions, {} abandoned: ok",
        s.get(corral_shm::cache::Count::Stores),
        s.get(corral_shm::cache::Count::Evictions),
        s.get(corral_shm::cache::Count::Abandoned),
    );
    println!("1 passed, 0 failed");
}
