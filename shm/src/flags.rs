//! A small array of 64-bit words shared by one generation's processes: server
//! health (up/down) decided by the one worker that checks a server, read by
//! every worker that balances over it; and each worker's counters, written by
//! that worker once per loop turn and summed by the master.
//!
//! Each word has a single writer and is read by the others, so plain atomic
//! loads and stores suffice. Zero (the initial state) means "up" for health,
//! as a server starts up until checks say otherwise.
//!
//! The words live in a [`Region`] tagged with the generation, so they survive
//! the master's exec: after a reload the new master still reads the counters
//! of the old workers that drain, and a master that falls back to the
//! previous generation keeps its health flags.

use std::io;
use std::sync::Arc;

use crate::primitive::{AtomicU64, Ordering};
use crate::region::{Region, RegionKind};
use crate::segment::Segment;

/// Where the row size sits in a region's fingerprint (above the length).
const STRIDE_SHIFT: u32 = 48;

/// Words shared by one generation.
#[derive(Clone, Debug)]
pub struct SharedFlags {
    region: Arc<Region>,
    len: usize,
}

impl SharedFlags {
    /// Creates `len` zeroed words of `kind` for `generation`.
    pub fn create(
        seg: &Segment,
        kind: RegionKind,
        generation: u32,
        len: usize,
    ) -> io::Result<SharedFlags> {
        Self::create_strided(seg, kind, generation, len, 0)
    }

    /// Creates `len` zeroed words in rows of `stride` words (one row per
    /// worker), the stride recorded in the region so that a build with
    /// another row size reads it right ([`SharedFlags::stride`]).
    pub fn create_strided(
        seg: &Segment,
        kind: RegionKind,
        generation: u32,
        len: usize,
        stride: usize,
    ) -> io::Result<SharedFlags> {
        let region = Region::create(
            seg,
            kind,
            kind.as_str(),
            (len.max(1) * 8) as u64,
            len as u64 | (stride as u64) << STRIDE_SHIFT,
            generation,
        )?;
        Ok(SharedFlags { region, len })
    }

    /// The words of an inherited region.
    pub fn open(region: Arc<Region>) -> SharedFlags {
        let words = region.fingerprint() & ((1 << STRIDE_SHIFT) - 1);
        let len = (region.len() / 8).min(words) as usize;
        SharedFlags { region, len }
    }

    /// Words per row, if the creator recorded it (builds before it did
    /// used rows of 12 words for the worker counters).
    pub fn stride(&self) -> Option<usize> {
        match (self.region.fingerprint() >> STRIDE_SHIFT) as usize {
            0 => None,
            n => Some(n),
        }
    }

    /// The region holding the words.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    fn flag(&self, i: usize) -> Option<&AtomicU64> {
        // SAFETY: `i < len` words of a zero-initialised, page-aligned region.
        (i < self.len).then(|| unsafe { self.region.at(i as u64 * 8) })
    }

    /// Reads word `i` (0 if out of range).
    pub fn get(&self, i: usize) -> u64 {
        self.flag(i).map_or(0, |f| f.load(Ordering::Acquire))
    }

    /// Sets word `i` (by its single writer; ignored if out of range).
    pub fn set(&self, i: usize, v: u64) {
        if let Some(f) = self.flag(i) {
            f.store(v, Ordering::Release);
        }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_flag_set_in_a_child_is_seen_by_the_parent() {
        let seg = Segment::create().unwrap();
        let f = SharedFlags::create(&seg, RegionKind::Health, 1, 10).unwrap();
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
        assert_eq!(f.get(10), 0, "out of range reads 0, never panics");
        f.set(10, 1);
    }
}
