//! Epoch-based reclamation across processes.
//!
//! # Why not crossbeam-epoch
//!
//! crossbeam-epoch is the model, but its collector (the global epoch, the list
//! of participants, the garbage bags) lives on one process's heap and its
//! `Atomic<T>` holds pointers. Workers are separate processes that map the
//! segment at different addresses (after a reload), so every piece of the
//! scheme must live *in the segment* and name memory by offsets. The
//! algorithm is the same; the storage is not.
//!
//! # The scheme
//!
//! * A **global epoch** counter.
//! * One **slot per live process** (`pid`, `generation`, and `epoch << 1 |
//!   pinned`). The master assigns a slot before forking a process and clears it
//!   when it reaps the process, so a process killed at any instruction never
//!   keeps the epoch from advancing.
//! * **Pinning**: a reader stores `global << 1 | 1` in its slot, then a SeqCst
//!   fence. Everything it reads until it unpins was reachable at or after that
//!   epoch. Lookups only pin: they never take a lock.
//! * **Advancing**: anyone may move the global epoch from `e` to `e + 1` once
//!   every pinned slot shows `e`.
//! * **Retiring**: a writer unlinks a block (one atomic store) and tags it with
//!   the global epoch `r` it read *after* unlinking. Once the global epoch is
//!   `r + 2`, every process pinned when the block was still reachable has
//!   unpinned, so the block may be reused ([`EpochState::reclaimable`]). The
//!   limbo lists that hold retired blocks are in the segment too (per table
//!   shard), so a retiring process's death loses nothing.
//!
//! Loading the epoch and then publishing the pin is not atomic; that is fine,
//! as in crossbeam: a block retired at `e - 1` was unlinked before the epoch
//! reached `e`, which happened before the pinning process loaded `e`, so that
//! process can no longer reach it.

use crate::primitive::{fence, AtomicU32, AtomicU64, Ordering};

/// Number of process slots in a segment: the workers of two generations
/// during a reload, the master, a takeover, with room to spare.
pub const MAX_PROCS: usize = 256;

/// One process's registration. 64 bytes so two slots never share a cache line.
#[repr(C, align(64))]
pub struct ProcSlot {
    /// The process using this slot (0: free).
    pub pid: AtomicU32,
    /// Config generation of that process (reload count), for `show proc`.
    pub generation: AtomicU32,
    /// `epoch << 1 | pinned`.
    state: AtomicU64,
}

impl ProcSlot {
    #[cfg(any(loom, test))]
    fn new() -> ProcSlot {
        ProcSlot {
            pid: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            state: AtomicU64::new(0),
        }
    }
}

/// The global epoch and the process slots, laid out in the segment.
#[repr(C)]
pub struct EpochState<const N: usize> {
    global: AtomicU64,
    /// One past the highest slot ever used: advancing scans only that far.
    high_water: AtomicU32,
    _pad0: u32,
    _pad: [u64; 6],
    slots: [ProcSlot; N],
}

/// A pinned process: while it lives, blocks it can reach are not reused.
pub struct Guard<'a, const N: usize> {
    state: &'a EpochState<N>,
    slot: usize,
}

impl<const N: usize> Drop for Guard<'_, N> {
    fn drop(&mut self) {
        // Release: every read made while pinned happens before the unpin is seen.
        self.state.slots[self.slot]
            .state
            .store(0, Ordering::Release);
    }
}

impl<'a, const N: usize> Guard<'a, N> {
    /// The epoch this guard pinned.
    pub fn epoch(&self) -> u64 {
        self.state.slots[self.slot].state.load(Ordering::Relaxed) >> 1
    }
}

#[cfg(any(loom, test))]
impl<const N: usize> Default for EpochState<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> EpochState<N> {
    /// A fresh state on the heap (tests and the loom model; the segment
    /// zero-fills its copy instead, which is the same value).
    #[cfg(any(loom, test))]
    pub fn new() -> EpochState<N> {
        EpochState {
            global: AtomicU64::new(0),
            high_water: AtomicU32::new(N as u32),
            _pad0: 0,
            _pad: [0; 6],
            slots: std::array::from_fn(|_| ProcSlot::new()),
        }
    }

    /// The current global epoch.
    pub fn global(&self) -> u64 {
        self.global.load(Ordering::Acquire)
    }

    /// Slot `i` (for `show proc` and the master's bookkeeping).
    pub fn slot(&self, i: usize) -> &ProcSlot {
        &self.slots[i]
    }

    /// Registers `pid` of config `generation` in slot `i` (done by the master
    /// before the process runs, or by the process itself).
    pub fn claim(&self, i: usize, pid: u32, generation: u32) {
        self.high_water.fetch_max(i as u32 + 1, Ordering::AcqRel);
        self.slots[i].state.store(0, Ordering::Relaxed);
        self.slots[i]
            .generation
            .store(generation, Ordering::Relaxed);
        self.slots[i].pid.store(pid, Ordering::Release);
    }

    /// Names `pid` as the process of slot `i`, claimed earlier (by the master,
    /// before forking it). Only the pid changes: the child may already have
    /// pinned the slot, and that pin must stand.
    pub fn set_owner(&self, i: usize, pid: u32) {
        self.slots[i].pid.store(pid, Ordering::Release);
    }

    /// Claims the first free slot at or after `from` for `pid` (compare-and-
    /// swap on the pid, so two masters sharing a segment during a takeover
    /// never take the same slot). `None` when all are taken.
    pub fn claim_free(&self, from: usize, pid: u32, generation: u32) -> Option<usize> {
        for i in from..N {
            if self.slots[i]
                .pid
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.claim(i, pid, generation);
                return Some(i);
            }
        }
        None
    }

    /// Slots no process holds.
    pub fn free_slots(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.pid.load(Ordering::Acquire) == 0)
            .count()
    }

    /// Frees every slot registered to `pid`: a master re-executed for a
    /// reload keeps its pid, and its previous image's slot must not leak.
    pub fn release_pid(&self, pid: u32) {
        for i in 0..N {
            if self.slots[i].pid.load(Ordering::Acquire) == pid {
                self.clear(i);
            }
        }
    }

    /// Frees slot `i` of a dead process: unpins it so the epoch can advance.
    pub fn clear(&self, i: usize) {
        self.slots[i].state.store(0, Ordering::Release);
        self.slots[i].pid.store(0, Ordering::Release);
    }

    /// Pins slot `i`: see the module docs. One pin per slot at a time.
    pub fn pin(&self, i: usize) -> Guard<'_, N> {
        if self.high_water.load(Ordering::Relaxed) <= i as u32 {
            self.high_water.fetch_max(i as u32 + 1, Ordering::AcqRel);
        }
        let e = self.global.load(Ordering::Relaxed);
        self.slots[i].state.store(e << 1 | 1, Ordering::Relaxed);
        // The pin must be visible to any advancer before this process loads
        // any shared link: otherwise an advancer could miss the pin and let a
        // block we are about to read be reused.
        fence(Ordering::SeqCst);
        Guard {
            state: self,
            slot: i,
        }
    }

    /// Tries to move the global epoch forward; returns the epoch after the attempt.
    pub fn try_advance(&self) -> u64 {
        let e = self.global.load(Ordering::Relaxed);
        // Pairs with the fence in `pin`: a pin stored before this fence is
        // seen by the loads below.
        fence(Ordering::SeqCst);
        let hw = (self.high_water.load(Ordering::Acquire) as usize).min(N);
        for slot in &self.slots[..hw] {
            let s = slot.state.load(Ordering::Relaxed);
            if s & 1 == 1 && s >> 1 != e {
                return e;
            }
        }
        // Acquire: reads done by processes that unpinned happen before any
        // reuse that follows this advance.
        fence(Ordering::Acquire);
        match self
            .global
            .compare_exchange(e, e + 1, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => e + 1,
            Err(now) => now,
        }
    }

    /// The epoch to tag a block with, read *after* the caller unlinked it (a
    /// publishing store): the block may be reused once the global epoch is
    /// two past it ([`EpochState::reclaimable`]). Every retirement (the
    /// tables' included) goes through here, and the loom model drives it.
    pub fn retire_epoch(&self) -> u64 {
        // The unlink (a store) must be visible before the epoch is read (a
        // load): otherwise the tag could be an epoch at which a reader can
        // still reach the block, and it would be reused one epoch too early.
        // Pairs with the fence in `pin` (a reader's pin store, then its loads
        // of links) and the one in `try_advance`.
        fence(Ordering::SeqCst);
        self.global()
    }

    /// Whether a block retired at epoch `retired` may be reused now.
    pub fn reclaimable(&self, retired: u64) -> bool {
        self.global() >= retired + 2
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_laggard_blocks_advance_until_it_unpins() {
        let s: EpochState<4> = EpochState::new();
        assert_eq!(s.try_advance(), 1);
        let g = s.pin(0);
        assert_eq!(g.epoch(), 1);
        assert_eq!(
            s.try_advance(),
            2,
            "pinned at the current epoch: may advance once"
        );
        assert_eq!(s.try_advance(), 2, "now the pin lags: stuck");
        assert!(!s.reclaimable(1));
        drop(g);
        assert_eq!(s.try_advance(), 3);
        assert!(s.reclaimable(1));
    }

    #[test]
    fn naming_a_forked_child_keeps_the_pin_it_already_made() {
        let s: EpochState<4> = EpochState::new();
        let slot = s.claim_free(1, 100, 1).unwrap();
        let g = s.pin(slot); // the child pins before the master names it
        s.set_owner(slot, 4242);
        assert_eq!(s.slot(slot).pid.load(Ordering::Relaxed), 4242);
        let e = g.epoch();
        assert_eq!(s.try_advance(), e + 1, "pinned at the current epoch");
        assert_eq!(s.try_advance(), e + 1, "the pin still holds the epoch back");
        drop(g);
    }

    #[test]
    fn clearing_a_dead_process_slot_unblocks_the_epoch() {
        let s: EpochState<4> = EpochState::new();
        s.claim(2, 1234, 1);
        std::mem::forget(s.pin(2)); // the process dies pinned
        s.try_advance();
        let stuck = s.try_advance();
        assert_eq!(s.try_advance(), stuck);
        s.clear(2);
        assert_eq!(s.try_advance(), stuck + 1);
        assert_eq!(s.slot(2).pid.load(Ordering::Relaxed), 0);
    }
}
