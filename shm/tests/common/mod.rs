//! What the forking stress tests share: memory every forked process sees,
//! and a small deterministic random generator.
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
