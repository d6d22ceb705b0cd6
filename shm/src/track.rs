//! Per-process records of tracked entries, so a killed worker's effects undo.
//!
//! A session that tracks an entry (`track-sc0 src table t`) raises its
//! `use_count` (so it neither expires nor is evicted while tracked) and its
//! `conn_cur`. Both must come down when the session ends *whichever way it
//! ends*, including its worker being SIGKILLed. So each process has an array
//! of records in the segment: before raising the counts it writes a
//! `RESERVED` record naming the entry, after raising them it marks it
//! `COUNTED`; when the session ends it lowers them and clears the record. When
//! the master reaps a dead process it walks that process's records and lowers
//! the counts of every `COUNTED` one ([`release_dead`]). A process killed
//! between the two marks leaves one `RESERVED` record whose counts are not
//! touched (at most one entry over-counted by one, never under-counted).
//!
//! A record is one word: table region page (24 bits) | shard (8) | slot (24) | state (8).

use std::io;

use crate::epoch::MAX_PROCS;
use crate::primitive::{AtomicU64, Ordering};
use crate::segment::{RegionKind, Segment};
use crate::table::{DataTypeName, EntryRef, StickTable};

const RESERVED: u64 = 1;
const COUNTED: u64 = 2;
const REGION_NAME: &str = "tracks";

/// The records region: `MAX_PROCS` arrays of `per_proc` words.
#[derive(Clone, Copy)]
pub struct Tracks {
    seg: &'static Segment,
    offset: u64,
    per_proc: u32,
}

/// An entry tracked by a session of this process.
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

fn pack(table_offset: u64, shard: u32, slot: u32, state: u64) -> u64 {
    ((table_offset >> 12) & 0xFF_FFFF) << 40
        | (shard as u64 & 0xFF) << 32
        | (slot as u64 & 0xFF_FFFF) << 8
        | state
}

fn unpack(w: u64) -> (u64, u32, u32, u64) {
    (
        (w >> 40) << 12,
        ((w >> 32) & 0xFF) as u32,
        ((w >> 8) & 0xFF_FFFF) as u32,
        w & 0xFF,
    )
}

impl PartialEq for Tracks {
    fn eq(&self, other: &Tracks) -> bool {
        self.offset == other.offset
    }
}

impl Tracks {
    /// Creates the region, or maps it if a previous generation made one as large.
    pub fn open_or_create(seg: &'static Segment, per_proc: u32) -> io::Result<Tracks> {
        let len = MAX_PROCS as u64 * per_proc as u64 * 8;
        let offset = match seg.find_region(RegionKind::Track, REGION_NAME) {
            Some((off, l, _)) if l == len => off,
            _ => seg.alloc_region(RegionKind::Track, REGION_NAME, len, per_proc as u64)?,
        };
        Ok(Tracks {
            seg,
            offset,
            per_proc,
        })
    }

    /// Every tracking region of the segment (a reload that changed maxconn
    /// leaves the previous one in use by old workers).
    pub fn all(seg: &'static Segment) -> Vec<Tracks> {
        seg.regions(RegionKind::Track, REGION_NAME)
            .map(|(offset, len, _)| Tracks {
                seg,
                offset,
                per_proc: (len / 8 / MAX_PROCS as u64) as u32,
            })
            .collect()
    }

    fn record(&self, proc_slot: usize, i: u32) -> &'static AtomicU64 {
        debug_assert!(proc_slot < MAX_PROCS && i < self.per_proc);
        let off = self.offset + (proc_slot as u64 * self.per_proc as u64 + i as u64) * 8;
        // SAFETY: inside the tracks region, 8-aligned.
        unsafe { self.seg.at(off) }
    }

    /// Clears every record of `proc_slot` (a fresh process taking the slot).
    pub fn reset(&self, proc_slot: usize) {
        for i in 0..self.per_proc {
            let r = self.record(proc_slot, i);
            if r.load(Ordering::Relaxed) != 0 {
                r.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// A process's side of the records: which of its records are free.
pub struct Tracker {
    tracks: Tracks,
    proc_slot: usize,
    free: Vec<u32>,
}

impl Tracker {
    /// The tracker of process slot `proc_slot` (its records must be clear).
    pub fn new(tracks: Tracks, proc_slot: usize) -> Tracker {
        Tracker {
            tracks,
            proc_slot,
            free: (0..tracks.per_proc).rev().collect(),
        }
    }

    /// Starts tracking `e` of `tables[t]`: raises use_count and conn_cur.
    /// `None` if this process has as many tracked entries as its records allow.
    pub fn track(&mut self, t: u16, table: &StickTable<'_>, e: &EntryRef<'_>) -> Option<Tracked> {
        let record = self.free.pop()?;
        let r = self.tracks.record(self.proc_slot, record);
        let base = table_offset(table);
        r.store(
            pack(base, e.shard(), e.index(), RESERVED),
            Ordering::Release,
        );
        e.acquire();
        e.add(DataTypeName::ConnCur, 1);
        r.store(pack(base, e.shard(), e.index(), COUNTED), Ordering::Release);
        Some(Tracked {
            table: t,
            shard: e.shard(),
            slot: e.index(),
            record,
        })
    }

    /// Ends a tracking: lowers conn_cur and use_count, frees the record.
    pub fn untrack(&mut self, table: &StickTable<'_>, tr: Tracked) {
        let e = table.entry_at(tr.shard, tr.slot);
        let r = self.tracks.record(self.proc_slot, tr.record);
        // Back to RESERVED first: killed between here and the end, the master
        // leaves the counts alone (over-count by one at worst, never under).
        r.store(
            (r.load(Ordering::Relaxed) & !0xFF) | RESERVED,
            Ordering::Release,
        );
        e.add(DataTypeName::ConnCur, -1);
        e.release();
        r.store(0, Ordering::Release);
        self.free.push(tr.record);
    }
}

fn table_offset(t: &StickTable<'_>) -> u64 {
    t.region_offset()
}

/// Master side: undoes the tracking of dead process slot `dead` on `tables`.
/// Returns the number of trackings released.
pub fn release_dead(tracks: &Tracks, tables: &[StickTable<'_>], dead: usize) -> u32 {
    let mut n = 0;
    for i in 0..tracks.per_proc {
        let r = tracks.record(dead, i);
        let w = r.load(Ordering::Acquire);
        if w == 0 {
            continue;
        }
        let (off, shard, slot, state) = unpack(w);
        if state == COUNTED {
            if let Some(t) = tables.iter().find(|t| t.region_offset() == off) {
                if shard < t.layout().shards && slot < t.layout().slots {
                    let e = t.entry_at(shard, slot);
                    e.add(DataTypeName::ConnCur, -1);
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
        let w = pack(4096 * 77, 63, 1_000_000, COUNTED);
        assert_eq!(unpack(w), (4096 * 77, 63, 1_000_000, COUNTED));
    }
}
