//! Recovery after a writer died holding a shard lock, and the consistency
//! checker the crash tests use.
//!
//! Every slot of a shard below its bump mark must be in exactly one place:
//! reachable from a bucket (and LIVE), on the free list, or on the limbo list.
//! A writer killed between two of its single-store steps can leave one slot in
//! *no* place (popped but not yet published, unlinked but not yet retired, or
//! between limbo and free list). [`StickTable::repair_shard`] finds such slots
//! by marking the three places and retires the rest; it never frees a slot
//! directly, because a reader may still hold it, and it leaves every reachable
//! entry alone, so no committed entry is lost.

use crate::primitive::Ordering;
use crate::table::{StickTable, LIVE};

/// What a walk of one shard found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShardReport {
    /// Entries reachable from buckets.
    pub reachable: u32,
    /// Slots on the free list.
    pub free: u32,
    /// Slots on the limbo list.
    pub limbo: u32,
    /// Used slots in no list at all (leaked by a dead writer).
    pub orphans: u32,
    /// Problems that must never happen (a slot in two places, a reachable
    /// non-LIVE entry, a chain longer than the shard, a key in the wrong bucket).
    pub errors: Vec<String>,
}

const NOWHERE: u8 = 0;
const REACHABLE: u8 = 1;
const ON_FREE: u8 = 2;
const ON_LIMBO: u8 = 3;

impl StickTable<'_> {
    fn mark(&self, s: u32) -> (Vec<u8>, ShardReport) {
        let used = self
            .shard(s)
            .bump
            .load(Ordering::Acquire)
            .min(self.layout.slots);
        let mut marks = vec![NOWHERE; self.layout.slots as usize];
        let mut r = ShardReport::default();
        let mut put = |i: u32, what: u8, r: &mut ShardReport| {
            if i >= used {
                r.errors.push(format!("shard {s}: link to unused slot {i}"));
                return false;
            }
            let m = &mut marks[i as usize];
            if *m != NOWHERE {
                r.errors.push(format!(
                    "shard {s}: slot {i} in two places ({} and {what})",
                    *m
                ));
                return false;
            }
            *m = what;
            true
        };
        for b in 0..self.layout.buckets {
            let mut link = self.bucket(s, b).load(Ordering::Acquire);
            while link != 0 {
                let i = link - 1;
                if !put(i, REACHABLE, &mut r) {
                    break;
                }
                r.reachable += 1;
                let e = self.entry(s, i);
                if e.hdr().state.load(Ordering::Acquire) != LIVE {
                    r.errors
                        .push(format!("shard {s}: reachable slot {i} is not live"));
                }
                if let Some(key) = e.key_copy() {
                    let (_, s2, b2) = self.locate(&key);
                    if (s2, b2) != (s, b) {
                        r.errors.push(format!(
                            "shard {s}: slot {i} is in bucket {b}, its key hashes to {s2}/{b2}"
                        ));
                    }
                }
                link = e.hdr().next.load(Ordering::Acquire);
            }
        }
        for (head, what) in [
            (self.shard(s).free_head.load(Ordering::Acquire), ON_FREE),
            (self.shard(s).limbo_head.load(Ordering::Acquire), ON_LIMBO),
        ] {
            let mut link = head;
            while link != 0 {
                if !put(link - 1, what, &mut r) {
                    break;
                }
                if what == ON_FREE {
                    r.free += 1;
                } else {
                    r.limbo += 1;
                }
                link = self.entry(s, link - 1).hdr().link.load(Ordering::Acquire);
            }
        }
        r.orphans = marks[..used as usize]
            .iter()
            .filter(|&&m| m == NOWHERE)
            .count() as u32;
        (marks, r)
    }

    /// Checks shard `s` without changing it (tests, `-c`-style audits).
    pub fn check_shard(&self, s: u32) -> ShardReport {
        self.mark(s).1
    }

    /// Checks every shard; returns the reports that are not clean (orphans
    /// count as not clean) and the total of reachable entries.
    pub fn check(&self) -> (Vec<ShardReport>, u32) {
        let mut bad = Vec::new();
        let mut total = 0;
        for s in 0..self.layout.shards {
            let r = self.check_shard(s);
            total += r.reachable;
            if !r.errors.is_empty() || r.orphans > 0 {
                bad.push(r);
            }
        }
        (bad, total)
    }

    /// Repairs shard `s` after its lock holder died. The caller holds the lock
    /// (taken over with `steal_from`). Orphans are retired; the live count is
    /// recomputed.
    pub fn repair_shard(&self, s: u32) -> ShardReport {
        let (marks, report) = self.mark(s);
        let used = self
            .shard(s)
            .bump
            .load(Ordering::Acquire)
            .min(self.layout.slots);
        for i in 0..used {
            if marks[i as usize] == NOWHERE {
                let e = self.entry(s, i);
                self.retire(s, &e);
            }
        }
        self.shard(s)
            .count
            .store(report.reachable, Ordering::Release);
        report
    }

    /// Master side of a process death: for every shard whose lock names
    /// `dead`, take the lock as `master`, repair the shard, release it.
    /// Returns the number of shards repaired.
    pub fn recover_from(&self, dead: usize, master: usize) -> u32 {
        let mut n = 0;
        for s in 0..self.layout.shards {
            if let Some(_held) = self.shard(s).lock.steal_from(dead, master) {
                self.repair_shard(s);
                n += 1;
            }
        }
        n
    }
}
