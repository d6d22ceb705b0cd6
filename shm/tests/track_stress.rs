//! A tracked entry is never evicted, expired or cleared under its tracker.
//!
//! Tracker processes find-or-create entries and track them (use_count and
//! conn_cur up), hold a few, untrack them (down), in a table kept full; other
//! processes insert keys of their own (forcing evictions), run expiry and
//! `clear` the table, all at once. When they stop, every key's conn_cur and
//! use count must equal the number of trackings the trackers still hold on
//! it, and no held entry may have gone: an entry removed between being found
//! and being held would have its slot reused for another key, and the
//! tracker's untrack would then lower *that* key's conn_cur.
//!
//! `harness = false`: the supervisor must be single-threaded when it forks.
//! TRACK_SECS sets the length (default 4 s).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{shared_array, Rng};
use corral_config::{DataType, KeyType, Table};
use corral_shm::freq::now_ms;
use corral_shm::track::{Tracked, Tracker, Tracks};
use corral_shm::{DataTypeName, Segment, StickTable};

const TRACKERS: usize = 3;
const CHURNERS: usize = 2;
/// Keys trackers use; churners use keys from here on.
const KEYS: u32 = 96;
const SIZE: u32 = 64;

struct World {
    t: StickTable<'static>,
    tracks: Tracks,
    stop: &'static [AtomicU64],
    /// Per key: trackings held when the trackers stopped.
    held: &'static [AtomicU64],
    /// Per process: operations done (progress).
    ops: &'static [AtomicU64],
}

fn tracker(w: &World, slot: usize, worker: usize) -> ! {
    let seg = w.t.segment();
    seg.epoch().claim(slot, std::process::id(), 1);
    let mut tr = Tracker::new(w.tracks.clone(), worker);
    let mut rng = Rng((slot as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut mine: Vec<(Tracked, u32)> = Vec::new();
    while w.stop[0].load(Ordering::Relaxed) == 0 {
        let k = (rng.next() % KEYS as u64) as u32;
        let now = now_ms();
        if mine.len() < 8 && !rng.next().is_multiple_of(3) {
            let g = seg.epoch().pin(slot);
            if let Some((t, _)) = tr.track(0, &w.t, &g, slot, &k.to_be_bytes(), now) {
                mine.push((t, k));
            }
        } else if !mine.is_empty() {
            let i = (rng.next() % mine.len() as u64) as usize;
            let (t, k) = mine.swap_remove(i);
            // The entry we hold must still be the key we tracked.
            let e = w.t.entry_at(t.shard, t.slot);
            assert_eq!(
                e.key_copy().unwrap_or_default(),
                k.to_be_bytes(),
                "a tracked entry was reused for another key"
            );
            tr.untrack(&w.t, t);
        }
        w.ops[slot].fetch_add(1, Ordering::Relaxed);
    }
    for (t, k) in &mine {
        let e = w.t.entry_at(t.shard, t.slot);
        assert_eq!(e.key_copy().unwrap_or_default(), k.to_be_bytes());
        w.held[*k as usize].fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: leave without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

fn churner(w: &World, slot: usize) -> ! {
    let seg = w.t.segment();
    seg.epoch().claim(slot, std::process::id(), 1);
    let mut rng = Rng((slot as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut n = 0u64;
    while w.stop[0].load(Ordering::Relaxed) == 0 {
        let k = KEYS + (rng.next() % 1000) as u32;
        let now = now_ms();
        {
            let g = seg.epoch().pin(slot);
            let _ = w.t.get_or_create(&g, slot, &k.to_be_bytes(), now);
        }
        n += 1;
        if n.is_multiple_of(16) {
            w.t.expire_step(slot, now, 64);
        }
        if n.is_multiple_of(500) {
            w.t.clear(slot);
        }
        w.ops[slot].fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: leave without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: this process is single-threaded (harness = false); the child
    // only runs `f`, which never returns (it _exits).
    match unsafe { libc::fork() } {
        0 => {
            f();
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        pid if pid > 0 => pid,
        _ => panic!("fork failed"),
    }
}

fn main() {
    let secs: f64 = std::env::var("TRACK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let def = Table {
        name: "t".into(),
        key: KeyType::Integer,
        key_len: 0,
        size: SIZE,
        expire: Some(Duration::from_millis(20)),
        store: vec![DataType::ConnCur, DataType::ConnCnt],
    };
    let seg: &'static Segment = Box::leak(Box::new(Segment::create().unwrap()));
    let w = World {
        t: StickTable::create(seg, &def).unwrap(),
        tracks: Tracks::create(seg, 1, TRACKERS as u32, 64).unwrap(),
        stop: shared_array(1),
        held: shared_array(KEYS as usize),
        ops: shared_array(TRACKERS + CHURNERS + 1),
    };
    let mut pids = Vec::new();
    for i in 0..TRACKERS {
        let w = &w;
        pids.push(fork(move || tracker(w, i + 1, i)));
    }
    for i in 0..CHURNERS {
        let w = &w;
        pids.push(fork(move || churner(w, TRACKERS + 1 + i)));
    }
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(100));
    }
    w.stop[0].store(1, Ordering::Relaxed);
    let mut failed = 0;
    for pid in pids {
        let mut st = 0;
        // SAFETY: reaping our own children.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 0,
        "a tracker found its entry reused for another key"
    );
    let g = seg.epoch().pin(0);
    let now = now_ms();
    let mut checked = 0;
    for k in 0..KEYS {
        let held = w.held[k as usize].load(Ordering::Relaxed);
        // Held entries never expire: look them up ignoring expiry.
        let e = w.t.lookup(&g, &k.to_be_bytes(), now);
        match e {
            Some(e) => {
                assert_eq!(
                    e.value(DataTypeName::ConnCur, now),
                    Some(held),
                    "key {k}: conn_cur vs trackings held"
                );
                assert_eq!(e.use_count() as u64, held, "key {k}: use count");
                checked += 1;
            }
            None => assert_eq!(held, 0, "key {k}: {held} trackings held, entry gone"),
        }
    }
    let (bad, total) = w.t.check();
    assert!(bad.is_empty(), "{bad:?}");
    let ops: u64 = w.ops.iter().map(|o| o.load(Ordering::Relaxed)).sum();
    println!(
        "track stress: {secs:.0} s, {ops} operations, {checked} keys with entries checked, {total} entries: ok"
    );
    println!("1 passed, 0 failed");
}
