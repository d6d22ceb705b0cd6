//! Stick tables in the shared segment.
//!
//! # Readers never lock
//!
//! A lookup pins the epoch, hashes the key to a shard and a bucket, and walks
//! the bucket's chain with acquire loads, comparing hash and key bytes of LIVE,
//! unexpired entries. Entries are reused only two epochs after they were
//! unlinked, so whatever a pinned reader reaches stays valid memory holding
//! either the entry it was or a retired copy of it. Walks are bounded by the
//! shard's slot count, so even a corrupted chain cannot loop forever.
//!
//! # Writers lock one shard, briefly
//!
//! Inserting, removing and recycling entries take the shard's [`OwnerLock`].
//! Each step publishes with one atomic store, so the shard is readable at
//! every instruction:
//!
//! * insert: pop a slot (free list, else the never-used bump range, else
//!   reclaim the limbo list) → fill it → store it as its bucket's head;
//! * remove: store the predecessor's link past the entry (unlinked) → push it
//!   on the limbo list tagged with the epoch;
//! * reclaim: move limbo entries whose epoch allows it to the free list.
//!
//! A process killed mid-step leaves at worst a slot that is in no list; the
//! master, which takes over the dead owner's lock, sweeps that shard
//! ([`StickTable::repair_shard`]) and puts such slots in limbo. Counters are
//! atomics in the entry and need no lock.
//!
//! # Budgets
//!
//! Expiry ([`StickTable::expire_step`]) checks a bounded number of slots per
//! call from a shared cursor; eviction when a shard is full samples a bounded
//! number of slots and evicts the least recently updated unused one. No call
//! holds a lock for more than one structural change plus a bounded walk.

mod entry;
pub mod layout;
mod repair;

use std::io;
use std::sync::Arc;

use corral_config::{KeyType, Table};

use crate::epoch::{Guard, MAX_PROCS};
use crate::lock::OwnerLock;
use crate::primitive::{AtomicU32, AtomicU64, Ordering};
use crate::region::{Region, RegionKind};
use crate::segment::Segment;

pub use entry::EntryRef;
pub use layout::{DataTypeName, Layout};
pub use repair::ShardReport;

/// Entry states.
const FREE: u32 = 0;
const LIVE: u32 = 1;
const RETIRED: u32 = 2;

/// Buckets a migration walks under one pin.
const MIGRATE_BUCKETS: u32 = 1024;

/// Slots sampled to pick an eviction victim when a shard is full.
const EVICTION_SAMPLES: u32 = 32;

/// Per-shard bookkeeping, one cache line.
#[repr(C, align(64))]
pub(crate) struct ShardHeader {
    lock: OwnerLock,
    /// Live (linked) entries.
    count: AtomicU32,
    /// Head of the free list (index + 1).
    free_head: AtomicU32,
    /// Head of the limbo list (index + 1), newest first.
    limbo_head: AtomicU32,
    /// Slots below this index have been used at least once.
    bump: AtomicU32,
    /// Next slot the expiry scan looks at.
    cursor: AtomicU32,
    /// Entries evicted because the shard was full.
    evictions: AtomicU64,
}

/// A stick table: its region, and the segment whose epochs protect it.
#[derive(Clone)]
pub struct StickTable<'s> {
    seg: &'s Segment,
    region: Arc<Region>,
    layout: Layout,
    name: String,
}

/// FNV-1a over 8-byte words then a splitmix finaliser: fast for 4- and
/// 16-byte keys, good spread for strings.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .wrapping_mul(0x0000_0100_0000_01B3);
    }
    for &x in chunks.remainder() {
        h = (h ^ x as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h ^= b.len() as u64;
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// `a` is strictly after `b` on the wrapping ms clock.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl<'s> StickTable<'s> {
    /// Creates a table region for `def`, its memory committed (master only).
    pub fn create(seg: &'s Segment, def: &Table) -> io::Result<StickTable<'s>> {
        let layout = Layout::of(def);
        let region = Region::create(
            seg,
            RegionKind::Table,
            &def.name,
            layout.region_len(),
            layout.fingerprint(),
            0,
        )?;
        // SAFETY: the region was just created (zeroed, at least TABLE_HEADER
        // bytes of data) and no other process has been told about it yet.
        unsafe { layout.store(region.base()) };
        Ok(StickTable {
            seg,
            region,
            layout,
            name: def.name.clone(),
        })
    }

    /// Maps a table region from the layout stored in it: a region this
    /// process inherited (reload, takeover) whether or not its definition is
    /// the configured one. `None` if the region is not a table.
    pub fn open(seg: &'s Segment, region: Arc<Region>) -> Option<StickTable<'s>> {
        if region.kind() != RegionKind::Table || region.len() < layout::TABLE_HEADER {
            return None;
        }
        // SAFETY: the region's data holds at least TABLE_HEADER bytes written
        // at its creation.
        let layout = unsafe { Layout::load(region.base()) }?;
        if layout.region_len() > region.len() {
            return None;
        }
        let name = region.name().to_string();
        Some(StickTable {
            seg,
            region,
            layout,
            name,
        })
    }

    /// Whether this table is laid out exactly as `def` asks: a reload keeps
    /// the very same region (entries and counters) only then.
    pub fn matches(&self, def: &Table) -> bool {
        let want = Layout::of(def);
        self.name == def.name
            && self.region.fingerprint() == want.fingerprint()
            && self.layout == want
    }

    /// Copies every live entry of `old` (same name, another definition) into
    /// this table when the key types match: key, expiry and the data types
    /// both store, except `conn_cur`: it counts the connections of the old
    /// workers, which end on the old table (copied, it would never come
    /// down). Returns how many entries were copied. `slot` is the caller's
    /// process slot.
    pub fn migrate_from(&self, old: &StickTable<'_>, slot: usize) -> u32 {
        if old.layout.key_type != self.layout.key_type {
            return 0;
        }
        let now = crate::freq::now_ms();
        let mut n = 0;
        let same = std::ptr::eq(old.seg, self.seg);
        let mut at = Some((0, 0));
        while let Some(from) = at {
            // A fresh pin per step: a long walk never holds reclamation back
            // for the other processes. In the same segment the walk's pin
            // covers the inserts too (one pin per slot at a time).
            let old_guard = old.seg.epoch().pin(slot);
            at = old.for_each_from(&old_guard, now, from, MIGRATE_BUCKETS, |e| {
                let Some(key) = e.key_copy() else { return };
                let own;
                let guard = if same {
                    &old_guard
                } else {
                    own = self.seg.epoch().pin(slot);
                    &own
                };
                if let Some(new) = self.get_or_create(guard, slot, &key, now) {
                    new.copy_values_from(&e);
                    n += 1;
                }
            });
        }
        n
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The table's region.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The id of the table's region (stable across reloads).
    pub fn region_id(&self) -> u32 {
        self.region.id()
    }

    /// The entry in slot `i` of shard `s`, whatever its state: for holders of
    /// a tracking (use_count > 0 keeps it from being recycled).
    pub fn entry_at(&self, s: u32, i: u32) -> EntryRef<'_> {
        self.entry(s, i)
    }

    /// The segment whose epochs protect the table.
    pub fn segment(&self) -> &'s Segment {
        self.seg
    }

    fn shard_base(&self, s: u32) -> u64 {
        layout::TABLE_HEADER + s as u64 * self.layout.shard_stride()
    }

    pub(crate) fn shard(&self, s: u32) -> &ShardHeader {
        // SAFETY: shard headers are at 64-aligned offsets inside the region,
        // laid out by `Layout`; all-zero is their initial state.
        unsafe { self.region.at(self.shard_base(s)) }
    }

    pub(crate) fn bucket(&self, s: u32, b: u32) -> &AtomicU32 {
        // SAFETY: bucket `b < buckets` of shard `s`, a u32 array inside the region.
        unsafe {
            self.region
                .at(self.shard_base(s) + self.layout.buckets_off() + b as u64 * 4)
        }
    }

    pub(crate) fn entry(&self, s: u32, i: u32) -> EntryRef<'_> {
        debug_assert!(i < self.layout.slots);
        EntryRef::new(self, s, i, self.shard_base(s) + self.layout.entry_off(i))
    }

    fn locate(&self, key: &[u8]) -> (u64, u32, u32) {
        let h = hash_bytes(key);
        let shard = (((h >> 32) * self.layout.shards as u64) >> 32) as u32;
        let bucket = (h as u32) & (self.layout.buckets - 1);
        (h, shard, bucket)
    }

    /// Encodes a key for this table into `buf`; returns its length.
    /// IPv4 clients of an ipv6 table are stored v4-mapped; IPv6 clients of an
    /// ip table only if they are v4-mapped (else `None`, as HAProxy skips them).
    pub fn encode_addr(&self, ip: std::net::IpAddr, buf: &mut [u8; 16]) -> Option<usize> {
        use std::net::IpAddr;
        match (self.layout.key_type, ip) {
            (KeyType::Ip, IpAddr::V4(a)) => {
                buf[..4].copy_from_slice(&a.octets());
                Some(4)
            }
            (KeyType::Ip, IpAddr::V6(a)) => a.to_ipv4_mapped().map(|v4| {
                buf[..4].copy_from_slice(&v4.octets());
                4
            }),
            (KeyType::Ipv6, IpAddr::V4(a)) => {
                buf.copy_from_slice(&a.to_ipv6_mapped().octets());
                Some(16)
            }
            (KeyType::Ipv6, IpAddr::V6(a)) => {
                buf.copy_from_slice(&a.octets());
                Some(16)
            }
            _ => None,
        }
    }

    /// Finds the live, unexpired entry for `key`. Lock-free; the guard keeps
    /// the entry's memory valid.
    pub fn lookup<'g>(
        &'g self,
        _guard: &'g Guard<'_, MAX_PROCS>,
        key: &[u8],
        now: u32,
    ) -> Option<EntryRef<'g>> {
        let key = &key[..key.len().min(self.layout.key_len as usize)];
        let (h, s, b) = self.locate(key);
        self.find(s, b, h as u32, key, now).map(|(_, e)| e)
    }

    /// Walks chain (s, b); returns (predecessor link index or 0, entry).
    fn find(&self, s: u32, b: u32, h: u32, key: &[u8], now: u32) -> Option<(u32, EntryRef<'_>)> {
        let mut prev = 0;
        let mut link = self.bucket(s, b).load(Ordering::Acquire);
        for _ in 0..=self.layout.slots {
            if link == 0 {
                return None;
            }
            let e = self.entry(s, link - 1);
            if e.hdr().hash.load(Ordering::Relaxed) == h
                && e.hdr().state.load(Ordering::Acquire) == LIVE
                && e.key_eq(key)
                && !e.expired(now)
            {
                return Some((prev, e));
            }
            prev = link;
            link = e.hdr().next.load(Ordering::Acquire);
        }
        None
    }

    /// Finds `key` or creates its entry (refreshing its expiry either way).
    /// `slot` is the caller's process slot (lock owner). `None` when the shard
    /// is full of entries in use and nothing can be evicted: the caller goes
    /// on without tracking, it never fails harder than that.
    pub fn get_or_create<'g>(
        &'g self,
        guard: &'g Guard<'_, MAX_PROCS>,
        slot: usize,
        key: &[u8],
        now: u32,
    ) -> Option<EntryRef<'g>> {
        if let Some(e) = self.lookup(guard, key, now) {
            e.touch(now);
            return Some(e);
        }
        self.get_or_create_held(guard, slot, key, now, |_| {})
    }

    /// Like [`StickTable::get_or_create`], but always under the shard lock,
    /// and `hold(&entry)` runs before the lock is released: a tracker raises
    /// the entry's use count there. Eviction, expiry and `clear table` only
    /// remove an entry whose use count is 0 *under the same lock*, so an
    /// entry held this way can never be removed (and its slot reused for
    /// another key) between being found and being held.
    pub fn get_or_create_held<'g>(
        &'g self,
        _guard: &'g Guard<'_, MAX_PROCS>,
        slot: usize,
        key: &[u8],
        now: u32,
        hold: impl FnOnce(&EntryRef<'g>),
    ) -> Option<EntryRef<'g>> {
        let key = &key[..key.len().min(self.layout.key_len as usize)];
        let (h, s, b) = self.locate(key);
        let shard = self.shard(s);
        let _held = shard.lock.lock(slot);
        if let Some((_, e)) = self.find(s, b, h as u32, key, now) {
            e.touch(now);
            hold(&e);
            return Some(e);
        }
        // An expired entry of the same key is logically gone: retire it first.
        self.remove_expired_in_chain(s, b, now);
        // `size` bounds the whole table; a shard also has its own (larger)
        // cap. Either full: make room in this shard. The table-wide count is
        // a sum over shards, so concurrent inserts of several processes may
        // overshoot `size` by at most one entry each.
        let full = shard.count.load(Ordering::Relaxed) >= self.layout.shard_cap(s)
            || self.len() >= self.layout.size;
        if full && !self.evict_one(s, now) {
            return None;
        }
        let i = self.alloc(s)?;
        let e = self.entry(s, i);
        e.init(h as u32, key, now, self.layout.expire_ms);
        e.hdr()
            .next
            .store(self.bucket(s, b).load(Ordering::Relaxed), Ordering::Relaxed);
        // Held before it is published: no remover can see it unheld.
        hold(&e);
        // Publish: from this store on, readers find the entry fully written.
        self.bucket(s, b).store(i + 1, Ordering::Release);
        shard.count.fetch_add(1, Ordering::Relaxed);
        Some(e)
    }

    /// Pops a slot for a new entry (shard lock held).
    fn alloc(&self, s: u32) -> Option<u32> {
        let shard = self.shard(s);
        for attempt in 0..2 {
            let head = shard.free_head.load(Ordering::Relaxed);
            if head != 0 {
                let next = self.entry(s, head - 1).hdr().link.load(Ordering::Relaxed);
                shard.free_head.store(next, Ordering::Relaxed);
                return Some(head - 1);
            }
            let bump = shard.bump.load(Ordering::Relaxed);
            if bump < self.layout.slots {
                shard.bump.store(bump + 1, Ordering::Relaxed);
                return Some(bump);
            }
            if attempt == 0 {
                self.seg.epoch().try_advance();
                self.reclaim(s);
            }
        }
        None
    }

    /// Moves limbo entries whose epoch allows it to the free list (shard lock
    /// held). Bounded by the shard's slot count.
    fn reclaim(&self, s: u32) {
        let shard = self.shard(s);
        let epoch = self.seg.epoch();
        let mut prev: Option<EntryRef<'_>> = None;
        let mut link = shard.limbo_head.load(Ordering::Relaxed);
        for _ in 0..self.layout.slots {
            if link == 0 {
                break;
            }
            let e = self.entry(s, link - 1);
            let next = e.hdr().link.load(Ordering::Relaxed);
            if epoch.reclaimable(e.hdr().retired.load(Ordering::Relaxed)) {
                // Unlink from limbo, then push on the free list.
                match &prev {
                    Some(p) => p.hdr().link.store(next, Ordering::Relaxed),
                    None => shard.limbo_head.store(next, Ordering::Relaxed),
                }
                e.hdr().state.store(FREE, Ordering::Relaxed);
                e.hdr()
                    .link
                    .store(shard.free_head.load(Ordering::Relaxed), Ordering::Relaxed);
                shard.free_head.store(link, Ordering::Relaxed);
            } else {
                prev = Some(e);
            }
            link = next;
        }
    }

    /// Unlinks entry `e` of chain (s, b) whose predecessor link is `prev` and
    /// retires it (shard lock held).
    fn unlink(&self, s: u32, b: u32, prev: u32, e: &EntryRef<'_>) {
        let next = e.hdr().next.load(Ordering::Relaxed);
        if prev == 0 {
            self.bucket(s, b).store(next, Ordering::Release);
        } else {
            self.entry(s, prev - 1)
                .hdr()
                .next
                .store(next, Ordering::Release);
        }
        self.retire(s, e);
    }

    /// Pushes an unreachable entry on the limbo list, tagged with the epoch read
    /// after it became unreachable.
    pub(crate) fn retire(&self, s: u32, e: &EntryRef<'_>) {
        // Read after the unlink, with the fence that orders the two (the
        // loom model runs this very function).
        let tag = self.seg.epoch().retire_epoch();
        let shard = self.shard(s);
        e.hdr().state.store(RETIRED, Ordering::Relaxed);
        e.hdr().retired.store(tag, Ordering::Relaxed);
        e.hdr()
            .link
            .store(shard.limbo_head.load(Ordering::Relaxed), Ordering::Relaxed);
        shard.limbo_head.store(e.index() + 1, Ordering::Release);
        // Keep the epoch moving as blocks retire, so they are reclaimable by
        // the time the shard needs them (a scan of the used process slots).
        self.seg.epoch().try_advance();
        let _ = shard
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
    }

    fn remove_expired_in_chain(&self, s: u32, b: u32, now: u32) {
        let mut prev = 0;
        let mut link = self.bucket(s, b).load(Ordering::Relaxed);
        for _ in 0..=self.layout.slots {
            if link == 0 {
                return;
            }
            let e = self.entry(s, link - 1);
            let next = e.hdr().next.load(Ordering::Relaxed);
            if e.expired(now) && e.use_count() == 0 {
                self.unlink(s, b, prev, &e);
            } else {
                prev = link;
            }
            link = next;
        }
    }

    /// Removes the entry at (s, i) if it is still linked (shard lock held).
    fn remove_slot(&self, s: u32, i: u32) -> bool {
        let e = self.entry(s, i);
        let Some(key) = e.key_copy() else {
            return false;
        };
        let (_, s2, b) = self.locate(&key);
        debug_assert_eq!(s, s2);
        let mut prev = 0;
        let mut link = self.bucket(s, b).load(Ordering::Relaxed);
        for _ in 0..=self.layout.slots {
            if link == 0 {
                return false;
            }
            if link == i + 1 {
                self.unlink(s, b, prev, &e);
                return true;
            }
            prev = link;
            link = self.entry(s, link - 1).hdr().next.load(Ordering::Relaxed);
        }
        false
    }

    /// Evicts the least recently updated unused entry among a sample of the
    /// shard (shard lock held). False if every sampled entry is in use.
    fn evict_one(&self, s: u32, now: u32) -> bool {
        let shard = self.shard(s);
        let used = shard.bump.load(Ordering::Relaxed);
        if used == 0 {
            return false;
        }
        let start = shard.cursor.fetch_add(EVICTION_SAMPLES, Ordering::Relaxed) % used;
        let mut best: Option<(u32, u32)> = None;
        let step = (used / EVICTION_SAMPLES).max(1);
        for k in 0..EVICTION_SAMPLES.min(used) {
            let i = (start + k * step + k) % used;
            let e = self.entry(s, i);
            if e.hdr().state.load(Ordering::Relaxed) != LIVE || e.use_count() != 0 {
                continue;
            }
            let age = now.wrapping_sub(e.hdr().touched.load(Ordering::Relaxed));
            if best.is_none_or(|(_, a)| age > a) {
                best = Some((i, age));
            }
        }
        // A sample can miss in a shard full of entries in use: fall back to a
        // full scan, bounded by the shard's slots.
        let victim = best.map(|(i, _)| i).or_else(|| {
            (0..used).find(|&i| {
                let e = self.entry(s, i);
                e.hdr().state.load(Ordering::Relaxed) == LIVE && e.use_count() == 0
            })
        });
        match victim {
            Some(i) if self.remove_slot(s, i) => {
                shard.evictions.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Expires up to `budget` slots' worth of entries, continuing where the
    /// last call (of any process) stopped. Returns how many were removed.
    pub fn expire_step(&self, slot: usize, now: u32, budget: u32) -> u32 {
        if self.layout.expire_ms == 0 {
            return 0;
        }
        let mut removed = 0;
        let per_shard = budget.div_ceil(self.layout.shards).max(1);
        for s in 0..self.layout.shards {
            let shard = self.shard(s);
            let used = shard.bump.load(Ordering::Relaxed);
            if used == 0 || shard.count.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let start = shard.cursor.fetch_add(per_shard, Ordering::Relaxed);
            let mut held = None;
            for k in 0..per_shard.min(used) {
                let i = (start + k) % used;
                let e = self.entry(s, i);
                if e.hdr().state.load(Ordering::Relaxed) == LIVE
                    && e.expired(now)
                    && e.use_count() == 0
                {
                    if held.is_none() {
                        held = Some(shard.lock.lock(slot));
                    }
                    if e.expired(now) && e.use_count() == 0 && self.remove_slot(s, i) {
                        removed += 1;
                    }
                }
            }
            if held.is_some() {
                self.reclaim(s);
            }
        }
        removed
    }

    /// Removes every unused entry (`clear table`); entries in use are kept.
    pub fn clear(&self, slot: usize) -> u32 {
        self.clear_matching(slot, |_| true).0
    }

    /// Removes the unused entries `select` picks (`clear table NAME
    /// data.X gt N`). Returns (removed, selected but in use and kept). One
    /// shard lock at a time.
    pub fn clear_matching(
        &self,
        slot: usize,
        select: impl Fn(&EntryRef<'_>) -> bool,
    ) -> (u32, u32) {
        let (mut removed, mut in_use) = (0, 0);
        for s in 0..self.layout.shards {
            let _held = self.shard(s).lock.lock(slot);
            for i in 0..self.shard(s).bump.load(Ordering::Relaxed) {
                let e = self.entry(s, i);
                if e.hdr().state.load(Ordering::Relaxed) != LIVE || !select(&e) {
                    continue;
                }
                if e.use_count() > 0 {
                    in_use += 1;
                } else if self.remove_slot(s, i) {
                    removed += 1;
                }
            }
        }
        (removed, in_use)
    }

    /// Live entries (all shards).
    pub fn len(&self) -> u32 {
        (0..self.layout.shards)
            .map(|s| self.shard(s).count.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether the table holds no live entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries evicted because their shard was full.
    pub fn evictions(&self) -> u64 {
        (0..self.layout.shards)
            .map(|s| self.shard(s).evictions.load(Ordering::Relaxed))
            .sum()
    }

    /// Calls `f` on the live, unexpired entries of up to `buckets` buckets
    /// starting at `from` = (shard, bucket), in order. Returns where to go on,
    /// or `None` once the last bucket was walked. Lock-free: a dump walks a
    /// big table in steps, each under a short pin of its own.
    pub fn for_each_from<'g>(
        &'g self,
        _guard: &'g Guard<'_, MAX_PROCS>,
        now: u32,
        from: (u32, u32),
        buckets: u32,
        mut f: impl FnMut(EntryRef<'g>),
    ) -> Option<(u32, u32)> {
        let (mut s, mut b) = from;
        for _ in 0..buckets.max(1) {
            if s >= self.layout.shards {
                return None;
            }
            let mut link = self.bucket(s, b).load(Ordering::Acquire);
            for _ in 0..=self.layout.slots {
                if link == 0 {
                    break;
                }
                let e = self.entry(s, link - 1);
                link = e.hdr().next.load(Ordering::Acquire);
                if e.hdr().state.load(Ordering::Acquire) == LIVE && !e.expired(now) {
                    f(e);
                }
            }
            b += 1;
            if b >= self.layout.buckets {
                b = 0;
                s += 1;
            }
        }
        (s < self.layout.shards).then_some((s, b))
    }

    /// Calls `f` on every live, unexpired entry (migration, tests). Lock-free.
    pub fn for_each<'g>(
        &'g self,
        guard: &'g Guard<'_, MAX_PROCS>,
        now: u32,
        mut f: impl FnMut(EntryRef<'g>),
    ) {
        let mut at = Some((0, 0));
        while let Some(from) = at {
            at = self.for_each_from(guard, now, from, u32::MAX, &mut f);
        }
    }
}

#[cfg(test)]
mod tests;
