//! Per-worker records of tracked entries, so a killed worker's effects undo.
//!
//! A session that tracks an entry (`track-sc0 src table t`) raises its
//! `use_count` (so it neither expires nor is evicted while tracked) and its
//! `conn_cur`. Both must come down when the session ends *whichever way it
//! ends*, including its worker being SIGKILLed. So each worker has an array
//! of records in its generation's tracks region, each naming an entry and
//! saying what this worker raised on it:
//!
//! * `RESERVED`: nothing yet (or nothing any more);
//! * `HELD`: the use count;
//! * `COUNTED`: the use count and `conn_cur`.
//!
//! Tracking, under the entry's shard lock (see
//! [`StickTable::get_or_create_held`]: the entry cannot be removed in
//! between): RESERVED, raise the use count, HELD; then raise `conn_cur`,
//! COUNTED. Untracking: HELD, lower `conn_cur`, RESERVED, lower the use
//! count, clear. When the master reaps a dead worker it undoes what each of
//! its records says ([`release_dead`]). A kill between a count and the
//! record's next state can leave one entry over-counted by one (a use count
//! that keeps it in the table until the next restart, or a `conn_cur`),
//! never under-counted: an under-count could let another tracker's entry be
//! removed under it.
//!
//! One region per generation, one array per worker of the generation (worker
//! `id` uses array `id - 1`): a respawned worker takes over the array of the
//! one it replaces, after the master released it.
//!
//! A record is one word: table region id (24 bits) | shard (8) | slot (24) | state (8).

use std::io;
use std::sync::Arc;

use crate::epoch::{Guard, MAX_PROCS};
use crate::primitive::{AtomicU64, Ordering};
use crate::region::{Region, RegionKind};
use crate::segment::Segment;
use crate::table::{DataTypeName, EntryRef, StickTable};

const RESERVED: u64 = 1;
const COUNTED: u64 = 2;
const HELD: u64 = 3;

/// One generation's records: `workers` arrays of `per_worker` words.
#[derive(Clone, Debug)]
pub struct Tracks {
    region: Arc<Region>,
    per_worker: u32,
    workers: u32,
}

/// An entry tracked by a session of this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// Index of the table in the worker's table list.
    pub table: u16,
    /// Entry's shard.
    pub shard: u32,
    /// Entry's slot.
    pub slot: u32,
    record: u32,
}

fn pack(table_id: u32, shard: u32, slot: u32, state: u64) -> u64 {
    (table_id as u64 & 0xFF_FFFF) << 40
        | (shard as u64 & 0xFF) << 32
        | (slot as u64 & 0xFF_FFFF) << 8
        | state
}

fn unpack(w: u64) -> (u32, u32, u32, u64) {
    (
        (w >> 40) as u32,
        ((w >> 32) & 0xFF) as u32,
        ((w >> 8) & 0xFF_FFFF) as u32,
        w & 0xFF,
    )
}

impl Tracks {
    /// Creates generation `generation`'s records: `per_worker` for each of
    /// `workers` workers, memory committed.
    pub fn create(
        seg: &Segment,
        generation: u32,
        workers: u32,
        per_worker: u32,
    ) -> io::Result<Tracks> {
        let workers = workers.max(1);
        let len = workers as u64 * per_worker as u64 * 8;
        let region = Region::create(
            seg,
            RegionKind::Track,
            "tracks",
            len,
            per_worker as u64,
            generation,
        )?;
        Ok(Tracks {
            region,
            per_worker,
            workers,
        })
    }

    /// The records of an inherited tracks region.
    pub fn open(region: Arc<Region>) -> Option<Tracks> {
        if region.kind() != RegionKind::Track || region.fingerprint() == 0 {
            return None;
        }
        let per_worker = region.fingerprint().min(u32::MAX as u64) as u32;
        let workers = (region.len() / 8 / per_worker as u64) as u32;
        Some(Tracks {
            region,
            per_worker,
            workers,
        })
    }

    /// The region holding the records.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The generation these records belong to.
    pub fn generation(&self) -> u32 {
        self.region.tag()
    }

    fn record(&self, worker: usize, i: u32) -> Option<&AtomicU64> {
        if worker >= self.workers as usize || i >= self.per_worker {
            return None;
        }
        let off = (worker as u64 * self.per_worker as u64 + i as u64) * 8;
        // SAFETY: inside the tracks region (bounds checked above), 8-aligned.
        Some(unsafe { self.region.at(off) })
    }

    /// Clears every record of worker index `worker` (a fresh worker taking it).
    pub fn reset(&self, worker: usize) {
        for i in 0..self.per_worker {
            if let Some(r) = self.record(worker, i) {
                if r.load(Ordering::Relaxed) != 0 {
                    r.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A worker's side of the records: which of its records are free.
pub struct Tracker {
    tracks: Tracks,
    worker: usize,
    free: Vec<u32>,
}

impl Tracker {
    /// The tracker of worker index `worker` (`id - 1`); its records must be clear.
    pub fn new(tracks: Tracks, worker: usize) -> Tracker {
        let n = if worker < tracks.workers as usize {
            tracks.per_worker
        } else {
            0
        };
        Tracker {
            tracks,
            worker,
            free: (0..n).rev().collect(),
        }
    }

    /// Finds or creates `key`'s entry in `tables[t]` and tracks it: raises
    /// use_count (under the shard lock) and conn_cur. `None` if the table is
    /// full of entries in use, or this worker has as many tracked entries as
    /// its records allow.
    pub fn track<'g>(
        &mut self,
        t: u16,
        table: &'g StickTable<'_>,
        guard: &'g Guard<'_, MAX_PROCS>,
        slot: usize,
        key: &[u8],
        now: u32,
    ) -> Option<(Tracked, EntryRef<'g>)> {
        let record = *self.free.last()?;
        let r = self.tracks.record(self.worker, record)?;
        let id = table.region_id();
        let e = table.get_or_create_held(guard, slot, key, now, |e| {
            r.store(pack(id, e.shard(), e.index(), RESERVED), Ordering::Release);
            e.acquire();
            r.store(pack(id, e.shard(), e.index(), HELD), Ordering::Release);
        })?;
        self.free.pop();
        e.add(DataTypeName::ConnCur, 1);
        r.store(pack(id, e.shard(), e.index(), COUNTED), Ordering::Release);
        Some((
            Tracked {
                table: t,
                shard: e.shard(),
                slot: e.index(),
                record,
            },
            e,
        ))
    }

    /// Ends a tracking: lowers conn_cur and use_count, frees the record.
    pub fn untrack(&mut self, table: &StickTable<'_>, tr: Tracked) {
        let e = table.entry_at(tr.shard, tr.slot);
        if let Some(r) = self.tracks.record(self.worker, tr.record) {
            // Each state before the count it undoes: killed anywhere here,
            // the master never lowers a count twice (see the module docs).
            let named = r.load(Ordering::Relaxed) & !0xFF;
            r.store(named | HELD, Ordering::Release);
            e.add(DataTypeName::ConnCur, -1);
            r.store(named | RESERVED, Ordering::Release);
            e.release();
            r.store(0, Ordering::Release);
            self.free.push(tr.record);
        }
    }

    /// Records in use (sessions tracking an entry).
    pub fn in_use(&self) -> usize {
        self.tracks.per_worker as usize - self.free.len().min(self.tracks.per_worker as usize)
    }
}

/// Master side: undoes the trackings of dead worker index `worker` on
/// `tables` (every table region its generation may have used). Returns the
/// number of trackings released.
pub fn release_dead(tracks: &Tracks, tables: &[StickTable<'_>], worker: usize) -> u32 {
    let mut n = 0;
    for i in 0..tracks.per_worker {
        let Some(r) = tracks.record(worker, i) else {
            break;
        };
        let w = r.load(Ordering::Acquire);
        if w == 0 {
            continue;
        }
        let (id, shard, slot, state) = unpack(w);
        if state == COUNTED || state == HELD {
            if let Some(t) = tables.iter().find(|t| t.region_id() & 0xFF_FFFF == id) {
                if shard < t.layout().shards && slot < t.layout().slots {
                    let e = t.entry_at(shard, slot);
                    if state == COUNTED {
                        e.add(DataTypeName::ConnCur, -1);
                    }
                    e.release();
                    n += 1;
                }
            }
        }
        r.store(0, Ordering::Release);
    }
    n
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip() {
        let w = pack(77, 63, 1_000_000, COUNTED);
        assert_eq!(unpack(w), (77, 63, 1_000_000, COUNTED));
    }
}
