//! Short writer locks whose word names their owner.
//!
//! A lock word is 0 when free and `slot + 1` when held, where `slot` is the
//! holder's process slot in the epoch table. If the holder is killed at any
//! instruction, the master (which reaps it and knows its slot) finds every
//! lock word naming that slot, repairs what the holder may have left half
//! done, and releases it ([`OwnerLock::release_if_owned_by`]). Nothing can
//! deadlock on a dead process for longer than the master takes to reap it.
//!
//! Locks are held only for a structural change of one shard (link, unlink,
//! move between lists): no I/O and no waiting under a lock. Waiters spin
//! briefly, then yield the CPU, so a waiter never burns a core for long.

use crate::primitive::{AtomicU32, Ordering};

/// Spins before the first sched_yield: a holder normally finishes in well
/// under a microsecond.
const SPINS_BEFORE_YIELD: u32 = 64;

/// A lock word in the segment.
#[repr(transparent)]
pub struct OwnerLock(AtomicU32);

/// Proof that the lock is held; releases it on drop.
pub struct Held<'a> {
    lock: &'a OwnerLock,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.lock.0.store(0, Ordering::Release);
    }
}

impl OwnerLock {
    /// Takes the lock for process slot `slot`, waiting as long as it takes.
    pub fn lock(&self, slot: usize) -> Held<'_> {
        let me = slot as u32 + 1;
        let mut spins = 0u32;
        loop {
            if self.0.load(Ordering::Relaxed) == 0
                && self
                    .0
                    .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Held { lock: self };
            }
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Takes the lock only if it is free right now.
    pub fn try_lock(&self, slot: usize) -> Option<Held<'_>> {
        let me = slot as u32 + 1;
        self.0
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Held { lock: self })
    }

    /// The slot holding the lock, if any.
    pub fn owner(&self) -> Option<usize> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            n => Some(n as usize - 1),
        }
    }

    /// Transfers a lock held by dead slot `dead` to slot `to` (the master),
    /// which then repairs and releases it. Returns the guard if `dead` held it.
    pub fn steal_from(&self, dead: usize, to: usize) -> Option<Held<'_>> {
        self.0
            .compare_exchange(
                dead as u32 + 1,
                to as u32 + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| Held { lock: self })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn owner_is_recorded_and_a_dead_owner_can_be_relieved() {
        let l = OwnerLock(AtomicU32::new(0));
        let g = l.lock(5);
        assert_eq!(l.owner(), Some(5));
        assert!(l.try_lock(1).is_none());
        std::mem::forget(g); // holder dies
        assert!(
            l.steal_from(4, 0).is_none(),
            "only the named owner's lock is taken"
        );
        let master = l.steal_from(5, 0).expect("dead owner's lock");
        assert_eq!(l.owner(), Some(0));
        drop(master);
        assert_eq!(l.owner(), None);
    }
}
