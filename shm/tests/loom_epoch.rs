//! The epoch scheme under loom: threads stand in for processes, and loom
//! explores their interleavings. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p corral-shm --test loom_epoch --release`.
//!
//! The property: a block a reader reached while pinned is never reused before
//! that reader unpins, and a block nobody can reach is eventually reusable.
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
        // Writer (slot 1): unlink block 0 by publishing block 1, retire 0.
        w.current.store(1, Ordering::Release);
        let retired_at = w.epoch.global();
        for _ in 0..3 {
            let _g = w.epoch.pin(1);
            drop(_g);
            w.epoch.try_advance();
        }
        if w.epoch.reclaimable(retired_at) {
            w.reused[0].store(true, Ordering::Release);
        }
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
        let retired_at = w.epoch.global();
        w.epoch.try_advance();
        w.epoch.try_advance();
        assert!(w.epoch.reclaimable(retired_at));
    });
}
