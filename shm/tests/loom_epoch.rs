//! The epoch scheme under loom: threads stand in for processes, and loom
//! explores their interleavings. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p corral-shm --test loom_epoch --release`.
//!
//! The writer does what a stick table does to an entry: unlink it with one
//! publishing store, tag it with [`EpochState::retire_epoch`] (the function
//! `StickTable::retire` calls), advance, and reuse it once
//! [`EpochState::reclaimable`] says so. The property: a block a reader
//! reached while pinned is never reused before that reader unpins, and a
//! block nobody can reach is eventually reusable. Removing the fence in
//! `retire_epoch` (or the one in `pin`) makes the first test fail.
#![cfg(loom)]

use corral_shm::epoch::EpochState;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

struct World {
    epoch: EpochState<2>,
    /// Which of two blocks is reachable.
    current: AtomicUsize,
    /// Set when a block is reused (its memory handed to someone else).
    reused: [AtomicBool; 2],
}

/// Two blocks, block 0 reachable, nothing reused, no process pinned.
fn world() -> Arc<World> {
    Arc::new(World {
        epoch: EpochState::new(),
        current: AtomicUsize::new(0),
        reused: [AtomicBool::new(false), AtomicBool::new(false)],
    })
}

/// The writer (slot 1) retires block 0 as the table does, then advances and
/// reuses it when allowed.
fn retire_and_reuse(w: &World) {
    // Unlink: the bucket's store that publishes the chain without block 0.
    w.current.store(1, Ordering::Release);
    let tag = w.epoch.retire_epoch();
    for _ in 0..3 {
        w.epoch.try_advance();
        if w.epoch.reclaimable(tag) {
            w.reused[0].store(true, Ordering::Release);
            return;
        }
    }
}

#[test]
fn a_block_is_not_reused_while_a_pinned_reader_may_hold_it() {
    loom::model(|| {
        let w = world();
        let r = w.clone();
        let reader = thread::spawn(move || {
            let g = r.epoch.pin(0);
            let b = r.current.load(Ordering::Acquire);
            // Still pinned: the block we reached must not have been reused.
            assert!(
                !r.reused[b].load(Ordering::Acquire),
                "block {b} reused under a pinned reader"
            );
            drop(g);
        });
        retire_and_reuse(&w);
        reader.join().unwrap();
    });
}

/// The interleaving the fence in `retire_epoch` exists for: the epoch
/// advances (here by the reader itself, as a table's insert does) between
/// the writer's unlink and its reading of the tag, and the reader pins at
/// the new epoch. Without the fence the writer may read the old epoch as
/// its tag while its unlink is not yet visible to the reader, and reuse the
/// block one epoch too early.
#[test]
fn the_epoch_advancing_during_a_retirement_changes_nothing() {
    loom::model(|| {
        let w = world();
        let r = w.clone();
        let reader = thread::spawn(move || {
            r.epoch.try_advance();
            let g = r.epoch.pin(0);
            let b = r.current.load(Ordering::Acquire);
            assert!(
                !r.reused[b].load(Ordering::Acquire),
                "block {b} reused under a pinned reader"
            );
            drop(g);
        });
        retire_and_reuse(&w);
        reader.join().unwrap();
    });
}

#[test]
fn an_unpinned_world_reclaims() {
    loom::model(|| {
        let w = world();
        let r = w.clone();
        let t = thread::spawn(move || {
            let _g = r.epoch.pin(0);
        });
        t.join().unwrap();
        let retired_at = w.epoch.retire_epoch();
        w.epoch.try_advance();
        w.epoch.try_advance();
        assert!(w.epoch.reclaimable(retired_at));
    });
}
