//! The worker's handle on the shared HTTP caches: which backend uses which
//! cache, this process's references to objects it is still sending (one
//! bit per entry in the segment, counted here), and the per-turn upkeep.

use std::collections::HashMap;

use corral_config::Config;
use corral_shm::cache::{Cache, Count, Cursor, Held, Store};
use corral_shm::Segment;

/// A stream's use of the cache.
pub enum CacheUse {
    /// A miss whose response may be stored under this key.
    Candidate {
        /// The cache (index in `Config::caches`).
        cache: usize,
        /// The primary key (backend, host, target).
        primary: Vec<u8>,
        /// Its hash.
        hash: u64,
        /// The request's fields as the lookup saw them (before fields the
        /// proxy adds for the server), for the Vary'd values.
        fields: Box<corral_http::h1::Fields>,
    },
    /// The response is being stored as it streams to the client.
    Storing {
        /// The cache.
        cache: usize,
        /// The store in progress.
        store: Store,
    },
    /// A stored body is being sent (too large for one copy).
    Sending {
        /// The cache.
        cache: usize,
        /// The object's entry, held by this process.
        entry: (u32, u32),
        /// Where the copy is.
        cursor: Cursor,
    },
}

/// The caches as a worker uses them.
pub struct Caches {
    caches: Vec<Cache<'static>>,
    /// Per backend: its cache.
    by_backend: Vec<Option<usize>>,
    seg: &'static Segment,
    slot: usize,
    /// This process's references: (cache, entry) → (holders, the held object).
    held: HashMap<(usize, (u32, u32)), (u32, Held)>,
    turn: u32,
}

impl Caches {
    /// The caches of `cfg`, mapped in `caches` (config order).
    pub fn new(
        cfg: &Config,
        caches: Vec<Cache<'static>>,
        seg: &'static Segment,
        slot: usize,
    ) -> Caches {
        let by_backend = cfg
            .backends
            .iter()
            .map(|b| {
                b.cache
                    .as_deref()
                    .and_then(|n| cfg.caches.iter().position(|c| c.name == n))
                    .filter(|&i| i < caches.len())
            })
            .collect();
        Caches {
            caches,
            by_backend,
            seg,
            slot,
            held: HashMap::new(),
            turn: 0,
        }
    }

    /// The cache backend `be` uses.
    pub fn of_backend(&self, be: usize) -> Option<usize> {
        self.by_backend.get(be).copied().flatten()
    }

    /// Cache `i`.
    pub fn get(&self, i: usize) -> &Cache<'static> {
        &self.caches[i]
    }

    /// This process's epoch slot.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The segment (for pins).
    pub fn seg(&self) -> &'static Segment {
        self.seg
    }

    /// Counts on cache `i`.
    pub fn count(&self, i: usize, c: Count, n: u64) {
        self.caches[i].count(self.slot, c, n);
    }

    /// Keeps a reference to `found` for a sender; returns the entry id.
    pub fn hold(&mut self, i: usize, found: corral_shm::cache::Found<'_>) -> (u32, u32) {
        let id = found.key();
        match self.held.get_mut(&(i, id)) {
            Some((n, _)) => *n += 1,
            None => {
                let h = self.caches[i].hold(self.slot, found);
                self.held.insert((i, id), (1, h));
            }
        }
        id
    }

    /// Copies up to `max` bytes of held object `entry` at `cur` to `out`.
    pub fn read(
        &self,
        i: usize,
        entry: (u32, u32),
        cur: &mut Cursor,
        out: &mut Vec<u8>,
        max: usize,
    ) -> usize {
        match self.held.get(&(i, entry)) {
            Some((_, h)) => self.caches[i].read(h, cur, out, max),
            None => 0,
        }
    }

    /// A sender is done with `entry`.
    pub fn unhold(&mut self, i: usize, entry: (u32, u32)) {
        if let Some((n, _)) = self.held.get_mut(&(i, entry)) {
            *n -= 1;
            if *n == 0 {
                let (_, h) = self.held.remove(&(i, entry)).expect("present");
                self.caches[i].release(self.slot, h);
            }
        }
    }

    /// Ends a stream's use: a complete store is published (when
    /// `complete`), any other abandoned; a reference is dropped.
    pub fn settle(&mut self, u: CacheUse, complete: bool) {
        match u {
            CacheUse::Candidate { .. } => {}
            CacheUse::Storing { cache, store } => {
                if complete {
                    self.caches[cache].publish(self.slot, store);
                } else {
                    self.caches[cache].abandon(self.slot, store);
                }
            }
            CacheUse::Sending { cache, entry, .. } => self.unhold(cache, entry),
        }
    }

    /// One loop turn's upkeep on one shard of each cache.
    pub fn maintain(&mut self) {
        if self.caches.is_empty() {
            return;
        }
        self.turn = self.turn.wrapping_add(1);
        let now = corral_shm::cache::unix_ms();
        for c in &self.caches {
            c.maintain(self.slot, self.turn, now);
        }
    }
}
