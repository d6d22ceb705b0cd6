//! The writer's side: a store streams an object into blocks of a WRITING
//! entry and publishes it with one store; eviction, reclamation, expiry and
//! purges, each under one shard lock held for one bounded step.

use super::{Cache, Count, Entry, BLOCK, FREE, LIVE, MAX_VARIANTS, ORPHAN, RETIRED, WRITING};
use crate::primitive::Ordering;

/// Entries a maintenance turn or a reclaim looks at, at most.
const RECLAIM_BUDGET: u32 = 32;
/// Entries sampled to choose an eviction victim.
const EVICTION_SAMPLES: u32 = 16;
/// Objects evicted for one allocation at most.
const EVICTIONS_PER_ALLOC: u32 = 16;
/// Entries one eviction sample scans at most (LIVE ones may be sparse).
const SCAN_MAX: u32 = 1024;
/// Blocks taken into a store at once at most.
const TAKE_MAX: u64 = 16;

/// What is known of a response when its store begins.
#[derive(Clone, Copy, Debug)]
pub struct StoreMeta {
    /// Its status.
    pub status: u16,
    /// Unix ms now.
    pub stored_ms: u64,
    /// Unix ms when it stops being fresh.
    pub expires_ms: u64,
    /// The age (s) it arrived with.
    pub age: u32,
}

/// A store in progress: a WRITING entry of this process. It must end with
/// [`Cache::publish`] or [`Cache::abandon`] (if the process dies first, the
/// master abandons it).
#[derive(Debug)]
pub struct Store {
    shard: u32,
    idx: u32,
    /// Bytes written (key, head, body).
    written: u64,
    /// Key and head bytes.
    meta_len: u64,
    /// The most bytes the object may take.
    limit: u64,
    /// Bytes expected in all, when the body's length is known.
    expect: Option<u64>,
    /// Bytes used in the last block.
    within: u64,
}

impl Store {
    /// Body bytes written so far.
    pub fn body_len(&self) -> u64 {
        self.written - self.meta_len
    }
}

impl Cache<'_> {
    /// Begins storing an object whose key is `primary` + `vary` and whose
    /// response head is `head`, for process slot `slot`. `body` is the
    /// body's length when known; `limit` the most bytes the whole object
    /// may take. `None` (counted as abandoned) if it cannot be stored.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_store(
        &self,
        slot: usize,
        primary: &[u8],
        hash: u64,
        vary: &[u8],
        head: &[u8],
        body: Option<u64>,
        limit: u64,
        meta: StoreMeta,
    ) -> Option<Store> {
        let meta_len = (primary.len() + vary.len() + head.len()) as u64;
        let expect = body.map(|b| b + meta_len);
        // At most half a shard: a store never empties its shard.
        let limit = limit.min(self.layout.per_shard as u64 * BLOCK / 2);
        if expect.unwrap_or(meta_len) > limit {
            self.count(slot, Count::Abandoned, 1);
            return None;
        }
        let (s, _) = self.locate(hash);
        let idx = {
            let sh = self.shard(s);
            let _held = sh.lock.lock(slot);
            if sh.free_entry.load(Ordering::Relaxed) == 0 {
                self.make_room(s, slot, 0, true);
            }
            let head_link = sh.free_entry.load(Ordering::Relaxed);
            if head_link == 0 {
                drop(_held);
                self.count(slot, Count::Abandoned, 1);
                return None;
            }
            let i = head_link - 1;
            let e = self.entry(s, i);
            sh.high.fetch_max(i + 1, Ordering::Release);
            sh.free_entry
                .store(e.list.load(Ordering::Relaxed), Ordering::Relaxed);
            e.list.store(0, Ordering::Relaxed);
            e.first.store(0, Ordering::Relaxed);
            e.last.store(0, Ordering::Relaxed);
            e.nblocks.store(0, Ordering::Relaxed);
            e.hash.store(hash, Ordering::Relaxed);
            e.key_len.store(primary.len() as u32, Ordering::Relaxed);
            e.vary_len.store(vary.len() as u32, Ordering::Relaxed);
            e.head_len.store(head.len() as u32, Ordering::Relaxed);
            e.body_len.store(0, Ordering::Relaxed);
            e.stored_ms.store(meta.stored_ms, Ordering::Relaxed);
            e.expires_ms.store(meta.expires_ms, Ordering::Relaxed);
            e.access_ms.store(meta.stored_ms, Ordering::Relaxed);
            e.age.store(meta.age, Ordering::Relaxed);
            e.status.store(meta.status as u32, Ordering::Relaxed);
            e.owner.store(slot as u32 + 1, Ordering::Relaxed);
            e.state.store(WRITING, Ordering::Release);
            i
        };
        let mut st = Store {
            shard: s,
            idx,
            written: 0,
            meta_len,
            limit,
            expect,
            within: BLOCK,
        };
        for part in [primary, vary, head] {
            if !self.write_bytes(slot, &mut st, part) {
                self.abandon(slot, st);
                return None;
            }
        }
        Some(st)
    }

    /// Appends body bytes. `false`: the store was abandoned (too large, or
    /// no room) and is over.
    pub fn append(&self, slot: usize, st: &mut Store, bytes: &[u8]) -> bool {
        if st.written + bytes.len() as u64 > st.limit {
            return false;
        }
        self.write_bytes(slot, st, bytes)
    }

    fn write_bytes(&self, slot: usize, st: &mut Store, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if st.within == BLOCK {
                let left = st.expect.map_or(0, |e| e.saturating_sub(st.written));
                let want = left
                    .max(bytes.len() as u64)
                    .div_ceil(BLOCK)
                    .clamp(1, TAKE_MAX) as u32;
                if !self.take_blocks(slot, st, want) {
                    return false;
                }
                st.within = 0;
            }
            let e = self.entry(st.shard, st.idx);
            let last = e.last.load(Ordering::Relaxed);
            if last == 0 {
                return false;
            }
            let n = ((BLOCK - st.within) as usize).min(bytes.len());
            // SAFETY: the last block of our WRITING entry: nobody else reads
            // or writes it until it is published; `within + n <= BLOCK`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.block(st.shard, last - 1).add(st.within as usize),
                    n,
                )
            };
            st.within += n as u64;
            st.written += n as u64;
            bytes = &bytes[n..];
            if st.within == BLOCK {
                // Blocks taken ahead: move on to the next in the chain.
                let next = self.link(st.shard, last - 1).load(Ordering::Relaxed);
                if next != 0 {
                    e.last.store(next, Ordering::Relaxed);
                    st.within = 0;
                }
            }
        }
        true
    }

    /// Takes `want` blocks into `st`'s chain (under the shard lock),
    /// evicting if need be. The chain's `last` stays on the block being
    /// filled; the taken ones follow it.
    fn take_blocks(&self, slot: usize, st: &mut Store, want: u32) -> bool {
        let s = st.shard;
        let sh = self.shard(s);
        let _held = sh.lock.lock(slot);
        if sh.free_blocks.load(Ordering::Relaxed) < want {
            self.make_room(s, slot, want, false);
        }
        let avail = sh.free_blocks.load(Ordering::Relaxed);
        if avail == 0 {
            return false;
        }
        let e = self.entry(s, st.idx);
        // The block being filled is the chain's end; new ones go after it.
        let mut tail = e.last.load(Ordering::Relaxed);
        while tail != 0 {
            let next = self.link(s, tail - 1).load(Ordering::Relaxed);
            if next == 0 {
                break;
            }
            tail = next;
        }
        let mut first_new = 0;
        for _ in 0..want.min(avail) {
            let b = sh.free_block.load(Ordering::Relaxed);
            if b == 0 || b > self.layout.per_shard {
                break;
            }
            sh.free_block.store(
                self.link(s, b - 1).load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            self.link(s, b - 1).store(0, Ordering::Relaxed);
            sh.free_blocks.fetch_sub(1, Ordering::Relaxed);
            if tail == 0 {
                e.first.store(b, Ordering::Relaxed);
            } else {
                self.link(s, tail - 1).store(b, Ordering::Release);
            }
            tail = b;
            e.nblocks.fetch_add(1, Ordering::Relaxed);
            if first_new == 0 {
                first_new = b;
            }
        }
        if first_new == 0 {
            return false;
        }
        e.last.store(first_new, Ordering::Relaxed);
        true
    }

    /// Publishes `st` (the whole body was written): replaces the entry of
    /// the same key, bounds the variants, then links it with one store.
    pub fn publish(&self, slot: usize, st: Store) -> bool {
        let s = st.shard;
        let sh = self.shard(s);
        let e = self.entry(s, st.idx);
        let held = sh.lock.lock(slot);
        e.body_len
            .store(st.written - st.meta_len, Ordering::Relaxed);
        // The chain's last block is its end again (blocks taken ahead but
        // not filled go back).
        self.trim_chain(s, st.idx, st.written);
        let mine = self.object(s, st.idx, e);
        let mut my_key = Vec::new();
        self.copy(&mine, 0, mine.head_at(), &mut my_key);
        let key_len = e.key_len.load(Ordering::Relaxed) as usize;
        let my_names = vary_names(&my_key[key_len.min(my_key.len())..]);
        let hash = e.hash.load(Ordering::Relaxed);
        let (_, b) = self.locate(hash);
        let mut variants: Vec<(u64, u32)> = Vec::new();
        self.unlink_where(s, b, &mut |i, other| {
            if other.hash.load(Ordering::Relaxed) != hash
                || other.key_len.load(Ordering::Relaxed) as usize != key_len
            {
                return false;
            }
            let o = self.object(s, i, other);
            let mut k = Vec::new();
            self.copy(&o, 0, o.head_at(), &mut k);
            if k.len() < key_len || k[..key_len] != my_key[..key_len] {
                return false;
            }
            // Same resource: the same variant, or a Vary that changed, is
            // replaced; another variant stays.
            if k == my_key || vary_names(&k[key_len..]) != my_names {
                return true;
            }
            variants.push((other.stored_ms.load(Ordering::Relaxed), i));
            false
        });
        if variants.len() >= MAX_VARIANTS {
            variants.sort_unstable();
            let drop: Vec<u32> = variants[..=variants.len() - MAX_VARIANTS]
                .iter()
                .map(|v| v.1)
                .collect();
            self.unlink_where(s, b, &mut |i, _| drop.contains(&i));
        }
        e.owner.store(0, Ordering::Relaxed);
        e.state.store(LIVE, Ordering::Release);
        e.chain
            .store(self.bucket(s, b).load(Ordering::Relaxed), Ordering::Relaxed);
        // The publishing store.
        self.bucket(s, b).store(st.idx + 1, Ordering::Release);
        sh.live.fetch_add(1, Ordering::Relaxed);
        drop(held);
        self.count(slot, Count::Stores, 1);
        true
    }

    /// Gives back blocks after the one holding byte `len - 1`.
    fn trim_chain(&self, s: u32, i: u32, len: u64) {
        let e = self.entry(s, i);
        let keep = len.div_ceil(BLOCK).max(1) as u32;
        let mut b = e.first.load(Ordering::Relaxed);
        let mut n = 1;
        while b != 0 && n < keep {
            b = self.link(s, b - 1).load(Ordering::Relaxed);
            n += 1;
        }
        if b == 0 {
            return;
        }
        let rest = self.link(s, b - 1).load(Ordering::Relaxed);
        e.last.store(b, Ordering::Relaxed);
        if rest == 0 {
            return;
        }
        self.link(s, b - 1).store(0, Ordering::Relaxed);
        e.nblocks.store(n, Ordering::Relaxed);
        // `rest` .. its end go to the free list.
        self.push_free_blocks(s, rest);
    }

    /// Gives `st` up: its blocks and entry go back (nobody could see them).
    pub fn abandon(&self, slot: usize, st: Store) {
        let sh = self.shard(st.shard);
        let _held = sh.lock.lock(slot);
        self.free_unpublished(st.shard, st.idx);
        drop(_held);
        self.count(slot, Count::Abandoned, 1);
    }

    /// Frees a WRITING entry (lock held): never published, so never read.
    pub(crate) fn free_unpublished(&self, s: u32, i: u32) {
        let e = self.entry(s, i);
        if e.state.load(Ordering::Relaxed) != WRITING {
            return;
        }
        self.free_chain(s, e);
        e.owner.store(0, Ordering::Relaxed);
        e.state.store(FREE, Ordering::Release);
        self.push_free_entry(s, i);
    }

    fn push_free_entry(&self, s: u32, i: u32) {
        let sh = self.shard(s);
        self.entry(s, i)
            .list
            .store(sh.free_entry.load(Ordering::Relaxed), Ordering::Relaxed);
        sh.free_entry.store(i + 1, Ordering::Relaxed);
    }

    /// Puts an entry's whole chain on the free list (lock held). The chain
    /// is detached from the entry first: killed in between, its blocks are
    /// in no place, which a rebuild frees (the other order would make the
    /// entry's chain run on into the free list).
    fn free_chain(&self, s: u32, e: &Entry) {
        let first = e.first.load(Ordering::Relaxed);
        e.first.store(0, Ordering::Relaxed);
        e.last.store(0, Ordering::Relaxed);
        e.nblocks.store(0, Ordering::Relaxed);
        self.push_free_blocks(s, first);
    }

    /// Puts the detached chain starting at block `first` (index + 1; 0:
    /// none) on the free list with one splice (lock held).
    fn push_free_blocks(&self, s: u32, first: u32) {
        if first == 0 || first > self.layout.per_shard {
            return;
        }
        let sh = self.shard(s);
        let mut end = first;
        let mut n = 1;
        loop {
            let next = self.link(s, end - 1).load(Ordering::Relaxed);
            if next == 0 || next > self.layout.per_shard || n > self.layout.per_shard {
                break;
            }
            end = next;
            n += 1;
        }
        self.link(s, end - 1)
            .store(sh.free_block.load(Ordering::Relaxed), Ordering::Relaxed);
        sh.free_block.store(first, Ordering::Relaxed);
        sh.free_blocks.fetch_add(n, Ordering::Relaxed);
    }

    /// Unlinks, from bucket `b` of shard `s`, the LIVE entries `pick`
    /// chooses, and retires them (lock held). Returns how many.
    pub(crate) fn unlink_where(
        &self,
        s: u32,
        b: u32,
        pick: &mut dyn FnMut(u32, &Entry) -> bool,
    ) -> u32 {
        let mut n = 0;
        let mut pred = self.bucket(s, b);
        let mut steps = 0;
        loop {
            let link = pred.load(Ordering::Relaxed);
            if link == 0 || link > self.layout.per_shard || steps > self.layout.per_shard {
                break;
            }
            steps += 1;
            let e = self.entry(s, link - 1);
            if e.state.load(Ordering::Relaxed) == LIVE && pick(link - 1, e) {
                // The unlinking store: readers at `e` still follow its chain.
                pred.store(e.chain.load(Ordering::Relaxed), Ordering::Release);
                self.retire(s, link - 1);
                n += 1;
                continue;
            }
            pred = &e.chain;
        }
        n
    }

    /// Moves an unlinked entry to the limbo list (lock held).
    fn retire(&self, s: u32, i: u32) {
        let sh = self.shard(s);
        let e = self.entry(s, i);
        e.state.store(RETIRED, Ordering::Release);
        e.retired
            .store(self.seg.epoch().retire_epoch(), Ordering::Relaxed);
        e.list.store(0, Ordering::Relaxed);
        match sh.limbo_tail.load(Ordering::Relaxed) {
            0 => sh.limbo_head.store(i + 1, Ordering::Relaxed),
            t => self.entry(s, t - 1).list.store(i + 1, Ordering::Relaxed),
        }
        sh.limbo_tail.store(i + 1, Ordering::Relaxed);
        let _ = sh
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Frees limbo entries whose epoch allows it and that nobody holds
    /// (lock held); a held one goes to the back. Returns how many.
    fn reclaim(&self, s: u32, budget: u32) -> u32 {
        let sh = self.shard(s);
        let mut freed = 0;
        for _ in 0..budget {
            let h = sh.limbo_head.load(Ordering::Relaxed);
            if h == 0 || h > self.layout.per_shard {
                break;
            }
            let e = self.entry(s, h - 1);
            if !self
                .seg
                .epoch()
                .reclaimable(e.retired.load(Ordering::Relaxed))
            {
                break;
            }
            let next = e.list.load(Ordering::Relaxed);
            sh.limbo_head.store(next, Ordering::Relaxed);
            if next == 0 {
                sh.limbo_tail.store(0, Ordering::Relaxed);
            }
            // Acquire: pairs with the holders' releasing fetch_and.
            if e.refs.iter().any(|w| w.load(Ordering::Acquire) != 0) {
                e.list.store(0, Ordering::Relaxed);
                match sh.limbo_tail.load(Ordering::Relaxed) {
                    0 => sh.limbo_head.store(h, Ordering::Relaxed),
                    t => self.entry(s, t - 1).list.store(h, Ordering::Relaxed),
                }
                sh.limbo_tail.store(h, Ordering::Relaxed);
                if next == 0 {
                    break;
                }
                continue;
            }
            self.free_chain(s, e);
            e.state.store(FREE, Ordering::Release);
            self.push_free_entry(s, h - 1);
            freed += 1;
        }
        freed
    }

    /// Evicts until `blocks` blocks (or an entry) are free, within budget
    /// (lock held). Evicted blocks come back two epochs later, so it also
    /// tries to move the epoch on and reclaims.
    fn make_room(&self, s: u32, slot: usize, blocks: u32, entry: bool) {
        let sh = self.shard(s);
        self.free_orphans(s);
        self.reclaim(s, RECLAIM_BUDGET);
        // Evicted objects free their blocks only after the epochs: evict
        // just enough that those blocks cover the shortfall.
        let (mut coming_blocks, mut coming_entries) = (0u32, 0u32);
        let enough = |cb: u32, ce: u32| {
            sh.free_blocks.load(Ordering::Relaxed) + cb >= blocks
                && (!entry || sh.free_entry.load(Ordering::Relaxed) != 0 || ce > 0)
        };
        let now = crate::cache::unix_ms();
        let mut evicted = 0;
        while !enough(coming_blocks, coming_entries) && evicted < EVICTIONS_PER_ALLOC {
            match self.evict_one(s, slot, now) {
                Some(n) => {
                    coming_blocks += n;
                    coming_entries += 1;
                }
                None => break,
            }
            evicted += 1;
        }
        if !enough(0, 0) {
            for _ in 0..2 {
                self.seg.epoch().try_advance();
            }
            self.reclaim(s, RECLAIM_BUDGET);
        }
    }

    /// Evicts the least recently hit of a sample of LIVE entries, an
    /// expired one first (lock held). Returns its blocks, `None` if the
    /// sample found none. Scans at most [`SCAN_MAX`] entries, below the
    /// highest ever used.
    fn evict_one(&self, s: u32, slot: usize, now_ms: u64) -> Option<u32> {
        let sh = self.shard(s);
        let (n, start) = self.sample_range(s);
        let mut best: Option<(u64, u32)> = None;
        let mut looked = 0;
        let mut i = start;
        for _ in 0..n.min(SCAN_MAX) {
            let e = self.entry(s, i);
            // An object being sent gives its blocks back only when the send
            // ends: not a victim that makes room now.
            let held = e.refs.iter().any(|w| w.load(Ordering::Relaxed) != 0);
            if e.state.load(Ordering::Relaxed) == LIVE && !held {
                let t = if e.expires_ms.load(Ordering::Relaxed) <= now_ms {
                    0
                } else {
                    e.access_ms.load(Ordering::Relaxed)
                };
                if best.is_none_or(|(bt, _)| t < bt) {
                    best = Some((t, i));
                }
                looked += 1;
                if looked >= EVICTION_SAMPLES {
                    break;
                }
            }
            i = (i + 1) % n;
        }
        sh.cursor.store((i + 1) % n, Ordering::Relaxed);
        let (_, victim) = best?;
        let e = self.entry(s, victim);
        let blocks = e.nblocks.load(Ordering::Relaxed);
        let (_, b) = self.locate(e.hash.load(Ordering::Relaxed));
        let gone = self.unlink_where(s, b, &mut |i, _| i == victim);
        if gone == 0 {
            return None;
        }
        self.count(slot, Count::Evictions, gone as u64);
        Some(blocks)
    }

    /// Frees the WRITING entries of dead writers marked [`ORPHAN`] by the
    /// master (lock held).
    pub(crate) fn free_orphans(&self, s: u32) {
        let sh = self.shard(s);
        // One read-and-reset: an orphan counted after it is found next time.
        if sh.orphans.swap(0, Ordering::AcqRel) == 0 {
            return;
        }
        for i in 0..self.high(s) {
            let e = self.entry(s, i);
            if e.state.load(Ordering::Relaxed) == WRITING
                && e.owner.load(Ordering::Acquire) == ORPHAN
            {
                self.free_unpublished(s, i);
            }
        }
    }

    /// One loop turn's share of upkeep on shard `turn % shards`: reclaim,
    /// expired objects out, and a little free room kept ahead of stores.
    /// Never waits for the lock. Cheap when there is nothing to do.
    pub fn maintain(&self, slot: usize, turn: u32, now_ms: u64) {
        let s = turn % self.layout.shards;
        let sh = self.shard(s);
        let limbo =
            sh.limbo_head.load(Ordering::Relaxed) != 0 || sh.orphans.load(Ordering::Relaxed) != 0;
        let low_water = (self.layout.per_shard / 16).max(1);
        let low = sh.free_blocks.load(Ordering::Relaxed) < low_water
            && sh.live.load(Ordering::Relaxed) > 0;
        if limbo {
            self.seg.epoch().try_advance();
        }
        // Every shard's turn comes; one in 16 of its turns samples expiry.
        let expire =
            sh.live.load(Ordering::Relaxed) > 0 && (turn / self.layout.shards).is_multiple_of(16);
        if !limbo && !low && !expire {
            return;
        }
        let Some(_held) = sh.lock.try_lock(slot) else {
            return;
        };
        self.free_orphans(s);
        self.reclaim(s, RECLAIM_BUDGET);
        if expire {
            self.expire_some(s, slot, now_ms);
        }
        if low {
            self.evict_one(s, slot, now_ms);
        }
    }

    /// The entries sampling scans (those below the high mark) and where the
    /// shard's cursor is among them.
    fn sample_range(&self, s: u32) -> (u32, u32) {
        let n = self.high(s).max(1);
        (n, self.shard(s).cursor.load(Ordering::Relaxed) % n)
    }

    /// Unlinks expired entries among the next samples (lock held).
    fn expire_some(&self, s: u32, slot: usize, now_ms: u64) {
        let sh = self.shard(s);
        let (n, start) = self.sample_range(s);
        for k in 0..EVICTION_SAMPLES.min(n) {
            let i = (start + k) % n;
            let e = self.entry(s, i);
            if e.state.load(Ordering::Relaxed) == LIVE
                && e.expires_ms.load(Ordering::Relaxed) <= now_ms
            {
                let (_, b) = self.locate(e.hash.load(Ordering::Relaxed));
                let gone = self.unlink_where(s, b, &mut |j, _| j == i);
                self.count(slot, Count::Evictions, gone as u64);
            }
        }
        sh.cursor
            .store((start + EVICTION_SAMPLES) % n, Ordering::Relaxed);
    }

    /// Removes every object whose primary key `pick` chooses (`clear
    /// cache`), one bucket per lock. Returns how many; `Err` with how many
    /// if a shard's lock stayed busy (a stopped process holds it).
    pub fn purge(&self, slot: usize, pick: &dyn Fn(&[u8]) -> bool) -> Result<u64, u64> {
        let mut n = 0;
        for s in 0..self.layout.shards {
            for b in 0..self.layout.buckets {
                if self.bucket(s, b).load(Ordering::Acquire) == 0 {
                    continue;
                }
                let Some(_held) = self.lock_bounded(s, slot) else {
                    return Err(n);
                };
                n += self.unlink_where(s, b, &mut |i, e| {
                    let o = self.object(s, i, e);
                    let mut k = Vec::new();
                    self.copy(&o, 0, e.key_len.load(Ordering::Relaxed) as u64, &mut k);
                    pick(&k)
                }) as u64;
            }
        }
        Ok(n)
    }
}

/// The field names of a stored Vary part (`name\0value\0`...).
fn vary_names(part: &[u8]) -> Vec<&[u8]> {
    part.split(|&b| b == 0)
        .step_by(2)
        .filter(|n| !n.is_empty())
        .collect()
}
