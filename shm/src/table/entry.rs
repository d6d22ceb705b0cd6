//! One stick-table entry: its header, key bytes and data words, read and
//! updated through atomics only.
//!
//! Key bytes are plain bytes written before the entry is published (the
//! bucket store is a release) and never changed while it is reachable; they
//! are read through volatile byte loads because a *retired* entry a slow
//! reader still walks may be reinitialised only after two epochs, never while
//! that reader is pinned.

use crate::freq::FreqCtr;
use crate::primitive::{AtomicU32, AtomicU64, Ordering};
use crate::table::layout::{period_ms, DataTypeName};
use crate::table::{after, StickTable, FREE, LIVE};

/// The fixed header at the start of every entry (40 bytes).
#[repr(C)]
pub(crate) struct EntryHeader {
    pub state: AtomicU32,
    /// Next entry of the hash chain (index + 1).
    pub next: AtomicU32,
    pub hash: AtomicU32,
    /// Next entry of the free or limbo list (index + 1).
    pub link: AtomicU32,
    /// Expiry tick (0: never).
    pub expire: AtomicU32,
    /// Sessions tracking this entry ("use" in `show table`).
    pub use_count: AtomicU32,
    /// Last update tick (eviction picks the oldest).
    pub touched: AtomicU32,
    pub key_len: AtomicU32,
    /// Epoch at retirement.
    pub retired: AtomicU64,
}

/// A reference to an entry of a mapped table.
#[derive(Clone, Copy)]
pub struct EntryRef<'t> {
    table: &'t StickTable<'t>,
    shard: u32,
    index: u32,
    offset: u64,
}

impl<'t> EntryRef<'t> {
    pub(crate) fn new(
        table: &'t StickTable<'t>,
        shard: u32,
        index: u32,
        offset: u64,
    ) -> EntryRef<'t> {
        EntryRef {
            table,
            shard,
            index,
            offset,
        }
    }

    pub(crate) fn hdr(&self) -> &'t EntryHeader {
        // SAFETY: `offset` is an entry slot of the table's region (8-aligned,
        // entry_size bytes), whose first 40 bytes are an EntryHeader.
        unsafe { self.table.region().at(self.offset) }
    }

    /// The entry's shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The entry's slot index in its shard.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// A stable id for `show table` (`0x...`): shard and slot.
    pub fn id(&self) -> u64 {
        (self.shard as u64) << 32 | self.index as u64
    }

    fn key_ptr(&self) -> *const u8 {
        // SAFETY: the key area lies inside the entry slot.
        unsafe {
            self.table
                .region()
                .base()
                .add((self.offset + self.table.layout().key_off as u64) as usize)
        }
    }

    /// Whether the stored key equals `key` (already cut to key_len).
    pub(crate) fn key_eq(&self, key: &[u8]) -> bool {
        if self.hdr().key_len.load(Ordering::Relaxed) as usize != key.len() {
            return false;
        }
        let p = self.key_ptr();
        // SAFETY: key_len <= layout.key_len bytes of the key area; volatile
        // because another process may recycle a retired slot we still read.
        key.iter()
            .enumerate()
            .all(|(i, &b)| unsafe { std::ptr::read_volatile(p.add(i)) } == b)
    }

    /// A copy of the key bytes.
    pub fn key_copy(&self) -> Option<Vec<u8>> {
        let n = self.hdr().key_len.load(Ordering::Relaxed) as usize;
        if n > self.table.layout().key_len as usize {
            return None;
        }
        let p = self.key_ptr();
        // SAFETY: as in key_eq.
        Some(
            (0..n)
                .map(|i| unsafe { std::ptr::read_volatile(p.add(i)) })
                .collect(),
        )
    }

    /// Fills a free slot for `key` (shard lock held, not yet published).
    pub(crate) fn init(&self, hash: u32, key: &[u8], now: u32, expire_ms: u32) {
        let h = self.hdr();
        let p = self.key_ptr() as *mut u8;
        // SAFETY: the slot is unreachable by readers (free or never used) and
        // its key area holds layout.key_len >= key.len() bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(key.as_ptr(), p, key.len());
            std::ptr::write_bytes(
                p.add(key.len()),
                0,
                self.table.layout().key_len as usize - key.len(),
            );
        }
        for &(dt, off) in &self.table.layout().data {
            let words = if DataTypeName::of(dt).is_rate() { 2 } else { 1 };
            for w in 0..words {
                self.word(off + 8 * w).store(0, Ordering::Relaxed);
            }
        }
        h.hash.store(hash, Ordering::Relaxed);
        h.key_len.store(key.len() as u32, Ordering::Relaxed);
        h.use_count.store(0, Ordering::Relaxed);
        h.link.store(0, Ordering::Relaxed);
        h.touched.store(now, Ordering::Relaxed);
        h.expire.store(
            if expire_ms == 0 {
                0
            } else {
                now.wrapping_add(expire_ms).max(1)
            },
            Ordering::Relaxed,
        );
        h.state.store(LIVE, Ordering::Release);
    }

    /// Whether the entry's expiry date has passed and nothing tracks it: an
    /// entry in use never expires (as in HAProxy), so a new connection of a
    /// client with a long-lived one finds the same entry instead of
    /// creating a second one for the same key.
    pub fn expired(&self, now: u32) -> bool {
        let exp = self.hdr().expire.load(Ordering::Relaxed);
        exp != 0 && !after(exp, now) && self.use_count() == 0
    }

    /// Milliseconds until expiry (None: never expires).
    pub fn expires_in(&self, now: u32) -> Option<u32> {
        let exp = self.hdr().expire.load(Ordering::Relaxed);
        (exp != 0).then(|| {
            if after(exp, now) {
                exp.wrapping_sub(now)
            } else {
                0
            }
        })
    }

    /// Refreshes the expiry date and the LRU clock, as an update does.
    pub fn touch(&self, now: u32) {
        let h = self.hdr();
        let e = self.table.layout().expire_ms;
        if e != 0 {
            h.expire
                .store(now.wrapping_add(e).max(1), Ordering::Relaxed);
        }
        h.touched.store(now, Ordering::Relaxed);
    }

    /// Sessions currently tracking this entry.
    pub fn use_count(&self) -> u32 {
        self.hdr().use_count.load(Ordering::Relaxed)
    }

    /// One more session tracks the entry (it will not expire or be evicted).
    pub fn acquire(&self) {
        self.hdr().use_count.fetch_add(1, Ordering::AcqRel);
    }

    /// A tracking session ended.
    pub fn release(&self) {
        let _ = self
            .hdr()
            .use_count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |c| c.checked_sub(1));
    }

    /// Whether the slot holds a live entry (not freed or retired).
    pub fn is_live(&self) -> bool {
        let s = self.hdr().state.load(Ordering::Acquire);
        s == LIVE && s != FREE
    }

    fn word(&self, off: u32) -> &'t AtomicU64 {
        // SAFETY: data words are 8-aligned inside the entry slot.
        unsafe { self.table.region().at(self.offset + off as u64) }
    }

    /// The counter of data type `dt` if the table stores it (not for rates).
    pub fn counter(&self, dt: DataTypeName) -> Option<&'t AtomicU64> {
        debug_assert!(!dt.is_rate());
        let (off, _) = self.table.layout().data_off(dt)?;
        Some(self.word(off))
    }

    /// The rate counter of `dt` with its period in ms, if stored.
    pub fn rate(&self, dt: DataTypeName) -> Option<(&'t FreqCtr, u32)> {
        debug_assert!(dt.is_rate());
        let (off, period) = self.table.layout().data_off(dt)?;
        // SAFETY: a rate occupies two 8-aligned words at `off`: a FreqCtr.
        Some((
            unsafe { self.table.region().at(self.offset + off as u64) },
            period,
        ))
    }

    /// Adds `n` to a counter (saturating at 0 for negative `n`) if stored.
    pub fn add(&self, dt: DataTypeName, n: i64) {
        if let Some(c) = self.counter(dt) {
            if n >= 0 {
                c.fetch_add(n as u64, Ordering::Relaxed);
            } else {
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n.unsigned_abs()))
                });
            }
        }
    }

    /// Records `n` events on a rate if stored.
    pub fn add_rate(&self, dt: DataTypeName, now: u32, n: u32) {
        if let Some((f, period)) = self.rate(dt) {
            f.add(now, period, n);
        }
    }

    /// The current value of a data type as `show table` and ACLs see it:
    /// counters as they are, rates per their period at `now`.
    pub fn value(&self, dt: DataTypeName, now: u32) -> Option<u64> {
        if dt.is_rate() {
            self.rate(dt).map(|(f, p)| f.read(now, p) as u64)
        } else {
            self.counter(dt).map(|c| c.load(Ordering::Relaxed))
        }
    }

    /// Copies the data types both entries store (a table rebuilt by a
    /// reload), except `conn_cur` (see [`StickTable::migrate_from`]).
    pub fn copy_values_from(&self, old: &EntryRef<'_>) {
        for &(dt, _) in &self.table.layout().data {
            let name = DataTypeName::of(dt);
            if name == DataTypeName::ConnCur {
                continue;
            }
            if name.is_rate() {
                if let (Some((to, _)), Some((from, _))) = (self.rate(name), old.rate(name)) {
                    to.copy_from(from);
                }
            } else if let (Some(to), Some(from)) = (self.counter(name), old.counter(name)) {
                to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// The stored data types with their current values, in declaration order:
    /// `(name, period_ms, value)`.
    pub fn values(&self, now: u32) -> Vec<(DataTypeName, u32, u64)> {
        self.table
            .layout()
            .data
            .iter()
            .map(|&(dt, _)| {
                let name = DataTypeName::of(dt);
                (name, period_ms(dt), self.value(name, now).unwrap_or(0))
            })
            .collect()
    }
}
