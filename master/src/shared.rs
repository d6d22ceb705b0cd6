//! The master's side of the shared segment: created before the first fork,
//! sized for the configured tables, and cleaned up after every dead process.
//!
//! Epoch slot 0 is the master's; worker `n` uses slot `n`. When the master
//! reaps a worker it does what the segment's crash-safety relies on: repairs
//! every shard whose lock the worker held, releases the worker's trackings
//! (so `conn_cur` and use counts come down) and clears its epoch slot (so
//! reclamation goes on).

use std::io;

use corral_config::Config;
use corral_shm::track::{release_dead, Tracks};
use corral_shm::{Segment, StickTable};
use corral_worker::stick::Shared;

/// The master's own epoch slot.
pub const MASTER_SLOT: usize = 0;
/// Headroom for the next generations' regions (the file is sparse).
const GROWTH: u64 = 4;

/// The segment, its tables and tracking records, as the master holds them.
pub struct SharedSegment {
    seg: &'static Segment,
    tables: Vec<StickTable<'static>>,
    tracks: Tracks,
    generation: u32,
}

impl SharedSegment {
    /// Creates the segment for `cfg` (tables in config order).
    pub fn create(cfg: &Config) -> io::Result<SharedSegment> {
        let per_worker = cfg
            .global
            .maxconn
            .div_ceil(cfg.global.workers.max(1) as u32);
        let per_proc = per_worker.saturating_mul(3).max(64);
        let tables_len: u64 = cfg
            .tables
            .iter()
            .map(|t| corral_shm::table::Layout::of(t).region_len() + 4096)
            .sum();
        let tracks_len = corral_shm::epoch::MAX_PROCS as u64 * per_proc as u64 * 8;
        let size = (tables_len + tracks_len + (1 << 20)) * GROWTH;
        // Leaked on purpose: the mapping lives as long as the process.
        let seg: &'static Segment = Box::leak(Box::new(Segment::create(size)?));
        let tables = cfg
            .tables
            .iter()
            .map(|t| StickTable::create(seg, t))
            .collect::<io::Result<Vec<_>>>()?;
        let tracks = Tracks::open_or_create(seg, per_proc)?;
        seg.epoch().claim(MASTER_SLOT, std::process::id(), 1);
        Ok(SharedSegment {
            seg,
            tables,
            tracks,
            generation: 1,
        })
    }

    /// Records the pid now using epoch slot `slot`.
    pub fn register(&self, slot: usize, pid: u32) {
        self.seg.epoch().claim(slot, pid, self.generation);
    }

    /// What a forked worker in epoch slot `slot` gets.
    pub fn for_worker(&self, slot: usize) -> Shared {
        Shared {
            seg: self.seg,
            tables: self.tables.clone(),
            tracks: self.tracks,
            slot,
        }
    }

    /// Cleans up after the process of epoch slot `slot` (worker `id`) died.
    pub fn recover(&self, slot: usize, id: usize) {
        let repaired: u32 = self
            .tables
            .iter()
            .map(|t| t.recover_from(slot, MASTER_SLOT))
            .sum();
        let released = release_dead(&self.tracks, &self.tables, slot);
        self.seg.epoch().clear(slot);
        if repaired > 0 || released > 0 {
            log::warn!(
                "worker {id}: repaired {repaired} stick-table shard(s) it held locked, released {released} tracked entr(ies)"
            );
        }
    }
}
