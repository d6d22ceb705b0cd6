//! A small array of flags shared by the processes forked from one master
//! generation: server health (up/down) decided by the one worker that checks
//! a server, read by every worker that balances over it; and each worker's
//! counters (current and cumulated connections, pipes), summed by the master
//! for `show info`.
//!
//! An anonymous MAP_SHARED mapping created before forking: no name, no fd,
//! gone when the last process of the generation exits. Each flag has a
//! single writer (the worker in charge of that server), every other process
//! only reads it, so plain atomic loads and stores suffice. Zero (the
//! initial state) means "up", as a server starts up until checks say
//! otherwise.

use std::io;

use crate::primitive::{AtomicU64, Ordering};

/// Flags shared across the fork of one generation.
pub struct SharedFlags {
    base: *const AtomicU64,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics; it is
// never unmapped while a process of the generation runs.
unsafe impl Send for SharedFlags {}
// SAFETY: as above.
unsafe impl Sync for SharedFlags {}

impl SharedFlags {
    /// Maps `len` zeroed flags (at least one page).
    pub fn new(len: usize) -> io::Result<SharedFlags> {
        let bytes = (len.max(1) * 8).div_ceil(4096) * 4096;
        // SAFETY: anonymous shared mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedFlags {
            base: p as *const AtomicU64,
            len,
        })
    }

    fn flag(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "flag {i} of {}", self.len);
        // SAFETY: `i < len` flags of a live, zero-initialised, page-aligned mapping.
        unsafe { &*self.base.add(i) }
    }

    /// Reads flag `i`.
    pub fn get(&self, i: usize) -> u64 {
        self.flag(i).load(Ordering::Acquire)
    }

    /// Sets flag `i` (by its single writer).
    pub fn set(&self, i: usize, v: u64) {
        self.flag(i).store(v, Ordering::Release);
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_flag_set_in_a_child_is_seen_by_the_parent() {
        let f = SharedFlags::new(10).unwrap();
        assert_eq!(f.get(7), 0);
        // SAFETY: the child only stores a flag and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            f.set(7, 1);
            // SAFETY: leave without running the test harness's destructors.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        assert_eq!(f.get(7), 1);
    }
}
