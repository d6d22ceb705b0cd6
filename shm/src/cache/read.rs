//! The reader's side: lookups under a pin, references that outlive it, and
//! cursors that copy an object's bytes out block by block.

use std::marker::PhantomData;

use super::{Cache, Entry, BLOCK, LIVE};
use crate::epoch::{Guard, MAX_PROCS};
use crate::primitive::Ordering;

/// What a lookup found: an object's place and metadata. Its bytes may be
/// read while the guard it came from is held, or through [`Cache::hold`].
#[derive(Debug)]
pub struct Object {
    pub(crate) shard: u32,
    pub(crate) idx: u32,
    first: u32,
    key_len: u32,
    vary_len: u32,
    /// Bytes of the stored response head.
    pub head_len: u32,
    /// Bytes of the stored body.
    pub body_len: u64,
    /// Unix ms when it was stored.
    pub stored_ms: u64,
    /// Unix ms when it stops being fresh.
    pub expires_ms: u64,
    /// Age (s) the response had when it was stored.
    pub age: u32,
    /// Its status code.
    pub status: u16,
}

impl Object {
    /// Where the head starts in the object's bytes.
    pub fn head_at(&self) -> u64 {
        self.key_len as u64 + self.vary_len as u64
    }

    /// One past the last byte (the end of the body).
    pub fn end(&self) -> u64 {
        self.head_at() + self.head_len as u64 + self.body_len
    }

    /// The `Age` to send at unix ms `now` (RFC 9111 §4.2.3): the age it
    /// came with plus its time here.
    pub fn age_at(&self, now: u64) -> u64 {
        self.age as u64 + now.saturating_sub(self.stored_ms) / 1000
    }
}

/// An object found under a pin.
pub struct Found<'g> {
    obj: Object,
    _guard: PhantomData<&'g ()>,
}

impl std::ops::Deref for Found<'_> {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.obj
    }
}

/// A reference to an object recorded in its entry for this process's slot:
/// its blocks stay valid, unpinned, until [`Cache::release`]. A process
/// holds one bit per entry, so the caller counts its own holders of the
/// same entry (see [`Object::key`]).
#[derive(Debug)]
pub struct Held(Object);

impl std::ops::Deref for Held {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.0
    }
}

impl Object {
    /// Identifies the entry (for a caller's count of its own references).
    pub fn key(&self) -> (u32, u32) {
        (self.shard, self.idx)
    }
}

/// A read position in an object's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    /// The block under the cursor (index + 1), 0 past the end.
    block: u32,
    within: u32,
    /// Bytes left to read up to the end the cursor was made for.
    left: u64,
}

impl Cursor {
    /// Bytes left.
    pub fn left(&self) -> u64 {
        self.left
    }
}

impl Cache<'_> {
    /// Looks `primary` (hash `hash`) up: the fresh LIVE object whose key is
    /// exactly `primary` and whose Vary'd fields have, in this request, the
    /// values `vary_of(name)` gives. Full keys are compared, never hashes
    /// only.
    pub fn lookup<'g>(
        &'g self,
        _guard: &'g Guard<'_, MAX_PROCS>,
        primary: &[u8],
        hash: u64,
        vary_of: &dyn Fn(&[u8]) -> Vec<u8>,
        now_ms: u64,
    ) -> Option<Found<'g>> {
        let (s, b) = self.locate(hash);
        let mut link = self.bucket(s, b).load(Ordering::Acquire);
        let mut steps = 0;
        let mut key = Vec::new();
        while link != 0 && steps < self.layout.per_shard {
            steps += 1;
            let i = link - 1;
            if i >= self.layout.per_shard {
                return None;
            }
            let e = self.entry(s, i);
            link = e.chain.load(Ordering::Acquire);
            if e.state.load(Ordering::Acquire) != LIVE
                || e.hash.load(Ordering::Relaxed) != hash
                || e.key_len.load(Ordering::Relaxed) as usize != primary.len()
                || e.expires_ms.load(Ordering::Relaxed) <= now_ms
            {
                continue;
            }
            let obj = self.object(s, i, e);
            key.clear();
            self.copy(&obj, 0, obj.head_at(), &mut key);
            if key.len() as u64 != obj.head_at()
                || &key[..primary.len()] != primary
                || !vary_matches(&key[primary.len()..], vary_of)
            {
                continue;
            }
            // Freshness read again after the key: the entry was LIVE
            // throughout (it cannot be reused while we are pinned).
            return Some(Found {
                obj,
                _guard: PhantomData,
            });
        }
        None
    }

    pub(crate) fn object(&self, s: u32, i: u32, e: &Entry) -> Object {
        Object {
            shard: s,
            idx: i,
            first: e.first.load(Ordering::Acquire),
            key_len: e.key_len.load(Ordering::Relaxed),
            vary_len: e.vary_len.load(Ordering::Relaxed),
            head_len: e.head_len.load(Ordering::Relaxed),
            body_len: e.body_len.load(Ordering::Relaxed),
            stored_ms: e.stored_ms.load(Ordering::Relaxed),
            expires_ms: e.expires_ms.load(Ordering::Relaxed),
            age: e.age.load(Ordering::Relaxed),
            status: e.status.load(Ordering::Relaxed) as u16,
        }
    }

    /// Marks a hit: the LRU approximation's clock.
    pub fn touch(&self, obj: &Object, now_ms: u64) {
        self.entry(obj.shard, obj.idx)
            .access_ms
            .store(now_ms, Ordering::Relaxed);
    }

    /// Records a reference of process slot `slot` to `found`, so its bytes
    /// stay valid after the pin. The caller must not already hold one to
    /// the same entry (one bit per process).
    pub fn hold(&self, slot: usize, found: Found<'_>) -> Held {
        let e = self.entry(found.shard, found.idx);
        // Made while pinned, so before any reclaimer can look (see the
        // module docs): AcqRel orders it with the reads that follow.
        e.refs[slot / 64 % e.refs.len()].fetch_or(1 << (slot % 64), Ordering::AcqRel);
        Held(found.obj)
    }

    /// Drops the reference `held` of process slot `slot`.
    pub fn release(&self, slot: usize, held: Held) {
        let e = self.entry(held.shard, held.idx);
        // Release: every read of its bytes happens before a reclaimer sees 0.
        e.refs[slot / 64 % e.refs.len()].fetch_and(!(1 << (slot % 64)), Ordering::Release);
    }

    /// A cursor over `obj`'s bytes `from..to`.
    pub fn cursor(&self, obj: &Object, from: u64, to: u64) -> Cursor {
        let mut block = obj.first;
        let mut skip = from;
        let mut n = 0;
        while skip >= BLOCK && block != 0 && n < self.layout.per_shard {
            block = self.link(obj.shard, block - 1).load(Ordering::Acquire);
            skip -= BLOCK;
            n += 1;
        }
        Cursor {
            block,
            within: skip as u32,
            left: to.saturating_sub(from),
        }
    }

    /// Appends up to `max` bytes at `cur` to `out`; returns how many.
    /// `obj` must be pinned or held.
    pub fn read(&self, obj: &Object, cur: &mut Cursor, out: &mut Vec<u8>, max: usize) -> usize {
        let mut done = 0;
        while cur.left > 0 && done < max && cur.block != 0 {
            let b = cur.block - 1;
            if b >= self.layout.per_shard {
                cur.left = 0;
                break;
            }
            let room = (BLOCK - cur.within as u64)
                .min(cur.left)
                .min((max - done) as u64) as usize;
            // SAFETY: block `b` belongs to `obj`, which is pinned or held:
            // its bytes were written before it was published and are not
            // reused until both end (module docs); `within + room` stays
            // inside the block.
            let bytes = unsafe {
                std::slice::from_raw_parts(self.block(obj.shard, b).add(cur.within as usize), room)
            };
            out.extend_from_slice(bytes);
            done += room;
            cur.left -= room as u64;
            cur.within += room as u32;
            if cur.within as u64 == BLOCK {
                cur.block = self.link(obj.shard, b).load(Ordering::Acquire);
                cur.within = 0;
            }
        }
        done
    }

    /// Appends `obj`'s bytes `from..to` to `out`.
    pub(crate) fn copy(&self, obj: &Object, from: u64, to: u64, out: &mut Vec<u8>) {
        let mut c = self.cursor(obj, from, to);
        self.read(obj, &mut c, out, usize::MAX);
    }

    /// `obj`'s stored response head (pinned or held).
    pub fn head(&self, obj: &Object) -> Vec<u8> {
        let mut out = Vec::with_capacity(obj.head_len as usize);
        self.copy(
            obj,
            obj.head_at(),
            obj.head_at() + obj.head_len as u64,
            &mut out,
        );
        out
    }
}

/// Whether the stored Vary part (`name\0value\0`...) matches the request.
fn vary_matches(stored: &[u8], vary_of: &dyn Fn(&[u8]) -> Vec<u8>) -> bool {
    let mut parts = stored.split(|&b| b == 0);
    loop {
        let Some(name) = parts.next() else {
            return true;
        };
        if name.is_empty() {
            return true;
        }
        let Some(value) = parts.next() else {
            return false;
        };
        if vary_of(name) != value {
            return false;
        }
    }
}

/// Encodes the Vary part of a key: each `(name, value)` as `name\0value\0`
/// (names lowercased by the caller, values normalised).
pub fn vary_key(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.extend_from_slice(n);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// One listed object (`show cache`).
#[derive(Clone, Debug)]
pub struct Listed {
    /// Shard and entry.
    pub entry: (u32, u32),
    /// Its key hash.
    pub hash: u64,
    /// Its primary key.
    pub primary: Vec<u8>,
    /// Bytes stored (key, head, body).
    pub size: u64,
    /// Blocks it takes.
    pub blocks: u32,
    /// Processes holding a reference.
    pub refs: u32,
    /// Unix ms when it stops being fresh.
    pub expires_ms: u64,
    /// Its status.
    pub status: u16,
}

impl Cache<'_> {
    /// Up to `max` objects that can be hit, in shard and entry order.
    pub fn list(&self, slot: usize, max: usize) -> Vec<Listed> {
        let mut out = Vec::new();
        for s in 0..self.layout.shards {
            for i in 0..self.high(s) {
                if out.len() >= max {
                    return out;
                }
                let g = self.seg.epoch().pin(slot);
                let e = self.entry(s, i);
                if e.state.load(Ordering::Acquire) != LIVE {
                    continue;
                }
                let o = self.object(s, i, e);
                let mut primary = Vec::new();
                self.copy(
                    &o,
                    0,
                    e.key_len.load(Ordering::Relaxed) as u64,
                    &mut primary,
                );
                out.push(Listed {
                    entry: (s, i),
                    hash: e.hash.load(Ordering::Relaxed),
                    primary,
                    size: o.end(),
                    blocks: e.nblocks.load(Ordering::Relaxed),
                    refs: e
                        .refs
                        .iter()
                        .map(|w| w.load(Ordering::Relaxed).count_ones())
                        .sum(),
                    expires_ms: o.expires_ms,
                    status: o.status,
                });
                drop(g);
            }
        }
        out
    }
}
