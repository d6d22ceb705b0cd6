//! The HTTP cache store: one region per `[cache.NAME]`, shared by every
//! worker of every generation, kept across reloads while its layout holds.
//!
//! # Layout
//!
//! Objects live in fixed-size blocks ([`BLOCK`] bytes). The region is cut
//! into shards (at most 16); a shard owns its entries, its bucket heads, its
//! blocks and their links, and one [`OwnerLock`]. An object's bytes are its
//! key (primary key, then the Vary'd request fields), the response head as
//! the server sent it, then the body, in a chain of the shard's blocks.
//!
//! # Readers never lock, and never read freed memory
//!
//! A lookup pins the epoch and walks a bucket chain, comparing hash, then
//! the full key bytes, of LIVE entries. Unlinked entries go to the shard's
//! limbo list tagged with the epoch; an entry's blocks are reused only once
//! the epoch is two past that tag **and** no process holds a reference to
//! it. A reference is one bit per process slot in the entry (`refs`): a
//! single `fetch_or` records it per process, so when a worker is killed the
//! master clears exactly that worker's bits ([`Cache::recover_from`]) and
//! nothing leaks or is freed under a reader. A reader streaming an object
//! over many loop turns holds its bit, not a pin.
//!
//! # Writers lock one shard, briefly
//!
//! Taking an entry or blocks, publishing, unlinking and reclaiming take the
//! shard's lock; copying bytes into blocks does not (the blocks belong to a
//! WRITING entry nobody else can reach). Each structural step publishes
//! with one store, and the free lists can be rebuilt from the entries'
//! states and the chains ([`repair`]), so a lock the master steals from a
//! dead writer never exposes a half-written object. A store in progress is
//! an entry in state WRITING naming its writer's slot: the master frees a
//! dead writer's ones.

mod read;
mod repair;
mod write;

use std::io;
use std::sync::Arc;

use corral_config::Cache as CacheDef;

use crate::epoch::MAX_PROCS;
use crate::lock::OwnerLock;
use crate::memfd::PAGE;
use crate::primitive::{AtomicU32, AtomicU64, Ordering};
use crate::region::{Region, RegionKind};
use crate::segment::Segment;

pub use read::{vary_key, Cursor, Found, Held, Listed, Object};
pub use repair::Recovered;
pub use write::{Store, StoreMeta};

/// Bytes per block.
pub const BLOCK: u64 = 4096;

/// Variants (Vary) kept per primary key: a new one evicts the oldest.
pub const MAX_VARIANTS: usize = 8;

/// At most this many shards (the lock's granularity).
const MAX_SHARDS: u64 = 16;

/// Entry states.
const FREE: u32 = 0;
const WRITING: u32 = 1;
const LIVE: u32 = 2;
const RETIRED: u32 = 3;

/// The owner of a WRITING entry whose writer died: the next holder of the
/// shard's lock frees it.
const ORPHAN: u32 = u32::MAX;

const MAGIC: u64 = u64::from_le_bytes(*b"CRLcach1");

/// Header flag: entries are taken below the shards' `high` marks.
const HIGH_KEPT: u32 = 1;

/// Per-process counters, one cache line per process slot (one writer each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Count {
    /// Requests looked up.
    Lookups = 0,
    /// Requests answered from the cache.
    Hits = 1,
    /// Objects published.
    Stores = 2,
    /// Objects evicted to make room (or past their freshness).
    Evictions = 3,
    /// Stores given up (too large, no room, the response failed).
    Abandoned = 4,
    /// Bytes sent from the cache.
    HitBytes = 5,
}

const COUNTS: usize = 8;

/// How a cache region is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Shards.
    pub shards: u32,
    /// Entries and blocks per shard.
    pub per_shard: u32,
    /// Buckets per shard (a power of two).
    pub buckets: u32,
}

#[repr(C)]
struct Header {
    magic: u64,
    block: u64,
    shards: u32,
    per_shard: u32,
    buckets: u32,
    /// [`HIGH_KEPT`] when every taker of entries raises the shards' `high`
    /// mark (a region made before that mark existed has 0 here).
    flags: u32,
    /// Which shard the next maintenance turn looks at.
    turn: AtomicU32,
}

/// One entry: an object's metadata. 128 bytes.
#[repr(C, align(64))]
pub(crate) struct Entry {
    state: AtomicU32,
    /// The writer's slot + 1 while WRITING.
    owner: AtomicU32,
    hash: AtomicU64,
    /// Next entry in the bucket chain (index + 1).
    chain: AtomicU32,
    /// Next entry on the free or limbo list (index + 1).
    list: AtomicU32,
    /// First and last block of the object's chain (index + 1).
    first: AtomicU32,
    last: AtomicU32,
    nblocks: AtomicU32,
    key_len: AtomicU32,
    vary_len: AtomicU32,
    head_len: AtomicU32,
    body_len: AtomicU64,
    /// Unix ms when stored.
    stored_ms: AtomicU64,
    /// Unix ms when it stops being fresh.
    expires_ms: AtomicU64,
    /// Unix ms of the last hit (the LRU approximation).
    access_ms: AtomicU64,
    /// Epoch at which it was unlinked.
    retired: AtomicU64,
    /// Age (s) it had when stored.
    age: AtomicU32,
    status: AtomicU32,
    /// One bit per process slot holding a reference.
    refs: [AtomicU64; MAX_PROCS / 64],
}

const ENTRY: u64 = std::mem::size_of::<Entry>() as u64;

/// Per-shard bookkeeping, one cache line.
#[repr(C, align(64))]
pub(crate) struct Shard {
    lock: OwnerLock,
    /// Linked entries.
    live: AtomicU32,
    /// Free entries list head (index + 1).
    free_entry: AtomicU32,
    /// Limbo list, oldest first (index + 1).
    limbo_head: AtomicU32,
    limbo_tail: AtomicU32,
    /// Free blocks list head (index + 1) and length.
    free_block: AtomicU32,
    free_blocks: AtomicU32,
    /// Where eviction sampling goes on.
    cursor: AtomicU32,
    /// One past the highest entry ever taken: sampling scans below it.
    high: AtomicU32,
    /// WRITING entries of dead writers, marked [`ORPHAN`], to free.
    orphans: AtomicU32,
}

/// Byte offsets of the parts of a cache region's data.
#[derive(Clone, Copy, Debug)]
struct Offsets {
    counters: u64,
    shards: u64,
    buckets: u64,
    entries: u64,
    links: u64,
    data: u64,
    end: u64,
}

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Layout {
    /// The layout for `def`: shards big enough for 4 of its largest objects.
    pub fn of(def: &CacheDef) -> Layout {
        let blocks = (def.total_max_size / BLOCK).clamp(1, u32::MAX as u64 / 2);
        let object = def.max_object_size.div_ceil(BLOCK) + 1;
        let shards = (blocks / (4 * object)).clamp(1, MAX_SHARDS);
        let per_shard = (blocks / shards).max(1) as u32;
        Layout {
            shards: shards as u32,
            per_shard,
            buckets: per_shard.next_power_of_two(),
        }
    }

    fn offsets(&self) -> Offsets {
        let s = self.shards as u64;
        let n = s * self.per_shard as u64;
        let counters = PAGE;
        let shards = counters + (MAX_PROCS * 64) as u64;
        let buckets = shards + s * 64;
        let entries = align(buckets + s * self.buckets as u64 * 4, 64);
        let links = entries + n * ENTRY;
        let data = align(links + n * 4, PAGE);
        Offsets {
            counters,
            shards,
            buckets,
            entries,
            links,
            data,
            end: data + n * BLOCK,
        }
    }

    /// Bytes of region data this layout needs.
    pub fn region_len(&self) -> u64 {
        self.offsets().end
    }

    /// What tells two layouts apart.
    pub fn fingerprint(&self) -> u64 {
        crate::table::hash_bytes(
            format!(
                "cache1 {} {} {} {} {}",
                BLOCK, self.shards, self.per_shard, self.buckets, ENTRY
            )
            .as_bytes(),
        )
    }

    /// Blocks in all.
    pub fn blocks(&self) -> u64 {
        self.shards as u64 * self.per_shard as u64
    }
}

/// A cache store: its region and the segment whose epochs protect it.
#[derive(Clone)]
pub struct Cache<'s> {
    seg: &'s Segment,
    region: Arc<Region>,
    layout: Layout,
    off: Offsets,
    name: String,
}

impl std::fmt::Debug for Cache<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({} {:?})", self.name, self.layout)
    }
}

/// A snapshot of a cache's state and counters, for `show cache`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Blocks in all.
    pub blocks: u64,
    /// Blocks on the free lists.
    pub free_blocks: u64,
    /// Objects that can be hit.
    pub entries: u64,
    /// Counters summed over every process that ever used the cache.
    pub counts: [u64; COUNTS],
}

impl Summary {
    /// Counter `c`.
    pub fn get(&self, c: Count) -> u64 {
        self.counts[c as usize]
    }
}

impl<'s> Cache<'s> {
    /// Creates the region for `def` with every entry and block free
    /// (master only, before any other process is told of it).
    pub fn create(seg: &'s Segment, def: &CacheDef) -> io::Result<Cache<'s>> {
        let layout = Layout::of(def);
        let region = Region::create(
            seg,
            RegionKind::Cache,
            &def.name,
            layout.region_len(),
            layout.fingerprint(),
            0,
        )?;
        let c = Cache {
            seg,
            region,
            layout,
            off: layout.offsets(),
            name: def.name.clone(),
        };
        // SAFETY: offset 0 of the data is the page reserved for the header;
        // nobody else sees the region yet.
        unsafe {
            std::ptr::write(
                c.region.base() as *mut Header,
                Header {
                    magic: MAGIC,
                    block: BLOCK,
                    shards: layout.shards,
                    per_shard: layout.per_shard,
                    buckets: layout.buckets,
                    flags: HIGH_KEPT,
                    turn: AtomicU32::new(0),
                },
            )
        };
        for s in 0..layout.shards {
            c.rebuild(s, None);
        }
        Ok(c)
    }

    /// Maps an inherited cache region. `None` if it is not one this build
    /// can read.
    pub fn open(seg: &'s Segment, region: Arc<Region>) -> Option<Cache<'s>> {
        if region.kind() != RegionKind::Cache || region.len() < PAGE {
            return None;
        }
        // SAFETY: the region holds at least the header page, written at
        // its creation.
        let h = unsafe { &*(region.base() as *const Header) };
        if h.magic != MAGIC || h.block != BLOCK || h.shards == 0 || h.per_shard == 0 {
            return None;
        }
        let layout = Layout {
            shards: h.shards,
            per_shard: h.per_shard,
            buckets: h.buckets,
        };
        if !layout.buckets.is_power_of_two()
            || layout.region_len() > region.len()
            || layout.fingerprint() != region.fingerprint()
        {
            return None;
        }
        let name = region.name().to_string();
        let c = Cache {
            seg,
            region,
            layout,
            off: layout.offsets(),
            name,
        };
        if h.flags & HIGH_KEPT == 0 {
            // Made by a build that kept no mark (and whose workers may
            // still take entries): every scan covers the whole shard.
            for s in 0..layout.shards {
                c.shard(s)
                    .high
                    .fetch_max(layout.per_shard, Ordering::AcqRel);
            }
        }
        Some(c)
    }

    /// Whether this region is laid out as `def` asks (then a reload keeps it).
    pub fn matches(&self, def: &CacheDef) -> bool {
        self.name == def.name && self.layout == Layout::of(def)
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its region.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Its layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Adds `n` to counter `c` of process slot `slot`.
    pub fn count(&self, slot: usize, c: Count, n: u64) {
        let w = self.counter(slot, c);
        // One writer per slot: a load and a store, no contended RMW.
        w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    fn counter(&self, slot: usize, c: Count) -> &AtomicU64 {
        let off = self.off.counters + (slot % MAX_PROCS) as u64 * 64 + c as u64 * 8;
        // SAFETY: inside the counters area (MAX_PROCS lines of 8 words).
        unsafe { self.region.at(off) }
    }

    /// The cache's state and counters.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            blocks: self.layout.blocks(),
            ..Default::default()
        };
        for sh in 0..self.layout.shards {
            let h = self.shard(sh);
            s.free_blocks += h.free_blocks.load(Ordering::Relaxed) as u64;
            s.entries += h.live.load(Ordering::Relaxed) as u64;
        }
        for slot in 0..MAX_PROCS {
            for (i, v) in s.counts.iter_mut().enumerate().take(6) {
                let off = self.off.counters + slot as u64 * 64 + i as u64 * 8;
                // SAFETY: inside the counters area.
                let w: &AtomicU64 = unsafe { self.region.at(off) };
                *v = v.wrapping_add(w.load(Ordering::Relaxed));
            }
        }
        s
    }

    pub(crate) fn shard(&self, s: u32) -> &Shard {
        debug_assert!(s < self.layout.shards);
        // SAFETY: inside the shard headers area, 64-aligned.
        unsafe { self.region.at(self.off.shards + s as u64 * 64) }
    }

    /// One past the highest entry of shard `s` ever taken: scans of its
    /// entries stop there.
    pub(crate) fn high(&self, s: u32) -> u32 {
        self.shard(s)
            .high
            .load(Ordering::Acquire)
            .min(self.layout.per_shard)
    }

    pub(crate) fn bucket(&self, s: u32, b: u32) -> &AtomicU32 {
        let i = s as u64 * self.layout.buckets as u64 + b as u64;
        // SAFETY: inside the buckets area (b < buckets, s < shards).
        unsafe { self.region.at(self.off.buckets + i * 4) }
    }

    pub(crate) fn entry(&self, s: u32, i: u32) -> &Entry {
        debug_assert!(i < self.layout.per_shard);
        let i = s as u64 * self.layout.per_shard as u64 + i as u64;
        // SAFETY: inside the entries area, 64-aligned.
        unsafe { self.region.at(self.off.entries + i * ENTRY) }
    }

    /// The link after block `b` of shard `s` (index + 1; 0 ends the chain).
    pub(crate) fn link(&self, s: u32, b: u32) -> &AtomicU32 {
        let i = s as u64 * self.layout.per_shard as u64 + b as u64;
        // SAFETY: inside the links area.
        unsafe { self.region.at(self.off.links + i * 4) }
    }

    /// Block `b` of shard `s`.
    pub(crate) fn block(&self, s: u32, b: u32) -> *mut u8 {
        let i = s as u64 * self.layout.per_shard as u64 + b as u64;
        // SAFETY: inside the data area (b < per_shard, s < shards).
        unsafe { self.region.base().add((self.off.data + i * BLOCK) as usize) }
    }

    /// Shard and bucket of a key hash.
    pub(crate) fn locate(&self, hash: u64) -> (u32, u32) {
        (
            ((hash >> 40) % self.layout.shards as u64) as u32,
            (hash as u32) & (self.layout.buckets - 1),
        )
    }
}

/// The hash a primary key is indexed by.
pub fn key_hash(primary: &[u8]) -> u64 {
    crate::table::hash_bytes(primary)
}

/// Wall-clock milliseconds since the Unix epoch (freshness is wall time:
/// `Expires` and `Date` are).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
