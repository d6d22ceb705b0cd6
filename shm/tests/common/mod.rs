//! What the forking stress tests share: memory every forked process sees,
//! a small deterministic random generator, and the deadlock watchdog.
#![allow(dead_code)]

use std::sync::atomic::AtomicU64;

/// `n` zeroed words in an anonymous shared mapping: written by the forked
/// children, read by the supervisor.
pub fn shared_array(n: usize) -> &'static [AtomicU64] {
    // SAFETY: anonymous shared mapping of n u64s, zeroed, never unmapped;
    // AtomicU64 is valid for zeroed memory and the mapping is 8-aligned.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            n * 8,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::slice::from_raw_parts(p as *const AtomicU64, n)
    }
}

/// xorshift64: the same sequence for the same seed (seed must not be 0).
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Fails the test when, over a second, none of processes `1..=procs`
/// raised its heartbeat word: a deadlock (a replacement counts from its
/// own start).
pub struct Watchdog {
    last: Vec<u64>,
    at: std::time::Instant,
}

impl Watchdog {
    /// A watchdog over `heartbeat[1..=procs]`.
    pub fn new(procs: usize) -> Watchdog {
        Watchdog {
            last: vec![0; procs + 1],
            at: std::time::Instant::now(),
        }
    }

    /// Checks once a second; `what` names the run in the failure.
    pub fn check(&mut self, heartbeat: &[AtomicU64], what: &str) {
        if self.at.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        let beats: Vec<u64> = heartbeat
            .iter()
            .map(|b| b.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        let procs = self.last.len() - 1;
        let stalled = (1..=procs).filter(|&s| beats[s] == self.last[s]).count();
        assert!(
            stalled < procs,
            "{what}: no process made progress for 1 s: deadlock"
        );
        self.last = beats;
        self.at = std::time::Instant::now();
    }
}
