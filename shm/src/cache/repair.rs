//! After a process dies: its references dropped, its stores in progress
//! freed, and any shard whose lock it held rebuilt; plus the consistency
//! check the tests run on a cache region.
//!
//! A shard's free lists are derived data: every entry's state and every
//! chain say where each entry and block belongs. So a shard whose writer
//! died mid-step is repaired by recomputing them: reachable entries stay
//! (no committed object is lost), an unlinked entry not yet retired is
//! retired (a reader may still hold it, so it waits for the epochs), a
//! dead writer's WRITING entry is freed (it was never visible), and every
//! block no chain owns is free.

use super::{Cache, BLOCK, FREE, LIVE, ORPHAN, RETIRED, WRITING};
use crate::primitive::Ordering;

const NOWHERE: u8 = 0;
const REACHABLE: u8 = 1;
const IN_LIMBO: u8 = 2;
const ON_FREE: u8 = 3;

/// What [`Cache::recover_from`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Shards the dead process held locked, rebuilt.
    pub shards: u32,
    /// References it held, dropped.
    pub refs: u32,
    /// Its stores in progress, freed.
    pub stores: u32,
}

impl Cache<'_> {
    /// Master side, when the process of slot `dead` is gone (`master` is the
    /// master's own slot): rebuilds the shards it held locked, clears its
    /// reference bits and frees its stores in progress. Never waits for a
    /// lock: a store in a shard someone else holds is marked [`ORPHAN`]
    /// and freed by the lock's next holder.
    pub fn recover_from(&self, dead: usize, master: usize) -> Recovered {
        let mut r = Recovered::default();
        for s in 0..self.layout.shards {
            if let Some(_held) = self.shard(s).lock.steal_from(dead, master) {
                self.rebuild(s, Some(dead));
                r.shards += 1;
            }
        }
        let bit = 1u64 << (dead % 64);
        for s in 0..self.layout.shards {
            let mut marked = 0;
            // Entries above the high mark were never taken: no bit, no store.
            for i in 0..self.high(s) {
                let e = self.entry(s, i);
                let w = &e.refs[dead / 64 % e.refs.len()];
                if w.load(Ordering::Relaxed) & bit != 0 {
                    w.fetch_and(!bit, Ordering::Release);
                    r.refs += 1;
                }
                if e.state.load(Ordering::Acquire) == WRITING
                    && e.owner
                        .compare_exchange(
                            dead as u32 + 1,
                            ORPHAN,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    marked += 1;
                }
            }
            if marked > 0 {
                r.stores += marked;
                self.shard(s).orphans.fetch_add(marked, Ordering::Release);
                if let Some(_held) = self.shard(s).lock.try_lock(master) {
                    self.free_orphans(s);
                }
            }
        }
        r
    }

    /// Takes shard `s`'s lock for `slot` (the master: `clear cache`,
    /// `check cache`) within about 50 ms: a holder whose process is gone
    /// (even not yet reaped) is relieved and its shard rebuilt. `None` if a
    /// live process kept it that long (a stopped one).
    pub(crate) fn lock_bounded(&self, s: u32, slot: usize) -> Option<crate::lock::Held<'_>> {
        let lock = &self.shard(s).lock;
        for n in 0..1000u32 {
            if let Some(h) = lock.try_lock(slot) {
                return Some(h);
            }
            if let Some(owner) = lock.owner() {
                if owner != slot && !self.alive(owner) {
                    if let Some(h) = lock.steal_from(owner, slot) {
                        self.rebuild(s, Some(owner));
                        return Some(h);
                    }
                }
            }
            if n < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        None
    }

    /// Whether the process of slot `slot` still runs.
    fn alive(&self, slot: usize) -> bool {
        if slot >= crate::epoch::MAX_PROCS {
            return false;
        }
        let pid = self.seg.epoch().slot(slot).pid.load(Ordering::Acquire);
        if pid == 0 {
            return false;
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return false;
        }
        // A zombie (dead, not reaped yet) still answers kill(0).
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
            // Unreadable: only a readable Z or X state says dead.
            Err(_) => true,
        }
    }

    /// Recomputes shard `s`'s lists from the entries' states and chains
    /// (lock held, or a region nobody else sees yet). `dead`: the slot whose
    /// WRITING entries are freed (besides any whose process is gone).
    pub(crate) fn rebuild(&self, s: u32, dead: Option<usize>) {
        let n = self.layout.per_shard;
        let sh = self.shard(s);
        let mut marks = vec![NOWHERE; n as usize];
        let mut live = 0;
        for b in 0..self.layout.buckets {
            let mut pred = self.bucket(s, b);
            let mut steps = 0;
            loop {
                let link = pred.load(Ordering::Relaxed);
                if link == 0 {
                    break;
                }
                let bad = link > n
                    || steps >= n
                    || marks[(link - 1) as usize] != NOWHERE
                    || self.entry(s, link - 1).state.load(Ordering::Relaxed) != LIVE;
                if bad {
                    // Cannot happen with single-store steps; cut the chain
                    // rather than follow a loop.
                    pred.store(0, Ordering::Release);
                    break;
                }
                steps += 1;
                marks[(link - 1) as usize] = REACHABLE;
                live += 1;
                pred = &self.entry(s, link - 1).chain;
            }
        }
        // Limbo: the list as it was (epoch order), then anything unlinked
        // but not on it.
        let mut limbo = Vec::new();
        let mut link = sh.limbo_head.load(Ordering::Relaxed);
        while link != 0 && link <= n && limbo.len() < n as usize {
            let i = link - 1;
            if marks[i as usize] != NOWHERE
                || self.entry(s, i).state.load(Ordering::Relaxed) != RETIRED
            {
                break;
            }
            marks[i as usize] = IN_LIMBO;
            limbo.push(i);
            link = self.entry(s, i).list.load(Ordering::Relaxed);
        }
        let mut free = Vec::new();
        // Whether each writer slot is gone, asked once per slot (no /proc
        // read per entry under the lock).
        let mut gone_slots: std::collections::HashMap<u32, bool> = Default::default();
        for i in 0..n {
            if marks[i as usize] != NOWHERE {
                continue;
            }
            let e = self.entry(s, i);
            match e.state.load(Ordering::Relaxed) {
                LIVE | RETIRED => {
                    e.state.store(RETIRED, Ordering::Release);
                    e.retired
                        .store(self.seg.epoch().retire_epoch(), Ordering::Relaxed);
                    marks[i as usize] = IN_LIMBO;
                    limbo.push(i);
                }
                WRITING => {
                    let owner = e.owner.load(Ordering::Relaxed) as usize;
                    let gone = owner == 0
                        || dead == Some(owner - 1)
                        || *gone_slots
                            .entry(owner as u32)
                            .or_insert_with(|| !self.alive(owner - 1));
                    if gone {
                        e.owner.store(0, Ordering::Relaxed);
                        e.state.store(FREE, Ordering::Release);
                        e.first.store(0, Ordering::Relaxed);
                        free.push(i);
                    }
                }
                _ => {
                    e.first.store(0, Ordering::Relaxed);
                    free.push(i);
                }
            }
        }
        for (k, &i) in limbo.iter().enumerate() {
            let next = limbo.get(k + 1).map_or(0, |j| j + 1);
            self.entry(s, i).list.store(next, Ordering::Relaxed);
        }
        sh.limbo_head
            .store(limbo.first().map_or(0, |i| i + 1), Ordering::Relaxed);
        sh.limbo_tail
            .store(limbo.last().map_or(0, |i| i + 1), Ordering::Relaxed);
        for (k, &i) in free.iter().enumerate() {
            let next = free.get(k + 1).map_or(0, |j| j + 1);
            self.entry(s, i).list.store(next, Ordering::Relaxed);
        }
        sh.free_entry
            .store(free.first().map_or(0, |i| i + 1), Ordering::Relaxed);
        // Blocks: those of every entry still holding a chain are used.
        let mut used = vec![false; n as usize];
        for i in 0..n {
            let e = self.entry(s, i);
            let st = e.state.load(Ordering::Relaxed);
            if st == FREE {
                e.first.store(0, Ordering::Relaxed);
                e.last.store(0, Ordering::Relaxed);
                e.nblocks.store(0, Ordering::Relaxed);
                continue;
            }
            let mut count = 0;
            let mut pred_block = 0;
            let mut b = e.first.load(Ordering::Relaxed);
            while b != 0 {
                if b > n || used[(b - 1) as usize] {
                    // A chain into a used block: cut it.
                    match pred_block {
                        0 => e.first.store(0, Ordering::Relaxed),
                        p => self.link(s, p - 1).store(0, Ordering::Relaxed),
                    }
                    break;
                }
                used[(b - 1) as usize] = true;
                count += 1;
                pred_block = b;
                b = self.link(s, b - 1).load(Ordering::Relaxed);
            }
            e.nblocks.store(count, Ordering::Relaxed);
            if st != WRITING {
                e.last.store(pred_block, Ordering::Relaxed);
            }
        }
        let mut head = 0;
        let mut nfree = 0;
        for b in (0..n).rev() {
            if !used[b as usize] {
                self.link(s, b).store(head, Ordering::Relaxed);
                head = b + 1;
                nfree += 1;
            }
        }
        sh.free_block.store(head, Ordering::Relaxed);
        sh.free_blocks.store(nfree, Ordering::Relaxed);
        sh.live.store(live, Ordering::Relaxed);
    }

    /// Checks every shard's invariants (taking each lock with `slot`):
    /// every entry and block in exactly one place, chains of the right
    /// length, keys in their buckets, counts right. Empty when sound.
    pub fn check(&self, slot: usize) -> Vec<String> {
        let mut errors = Vec::new();
        let n = self.layout.per_shard;
        for s in 0..self.layout.shards {
            let sh = self.shard(s);
            let Some(_held) = self.lock_bounded(s, slot) else {
                errors.push(format!(
                    "shard {s}: its lock stayed busy (a stopped process?)"
                ));
                continue;
            };
            let mut marks = vec![NOWHERE; n as usize];
            let mut err = |m: String| errors.push(format!("shard {s}: {m}"));
            let mut reachable = 0;
            for b in 0..self.layout.buckets {
                let mut link = self.bucket(s, b).load(Ordering::Relaxed);
                let mut steps = 0;
                while link != 0 {
                    if link > n || steps > n {
                        err(format!("bucket {b}: bad link {link}"));
                        break;
                    }
                    let i = link - 1;
                    steps += 1;
                    let e = self.entry(s, i);
                    if marks[i as usize] != NOWHERE {
                        err(format!("entry {i} reachable twice"));
                        break;
                    }
                    marks[i as usize] = REACHABLE;
                    reachable += 1;
                    if e.state.load(Ordering::Relaxed) != LIVE {
                        err(format!("reachable entry {i} is not live"));
                    }
                    let hash = e.hash.load(Ordering::Relaxed);
                    if self.locate(hash) != (s, b) {
                        err(format!("entry {i} in bucket {b}, its hash says otherwise"));
                    }
                    let o = self.object(s, i, e);
                    let mut key = Vec::new();
                    self.copy(&o, 0, e.key_len.load(Ordering::Relaxed) as u64, &mut key);
                    if super::key_hash(&key) != hash {
                        err(format!("entry {i}: its key does not hash to its hash"));
                    }
                    let cap = e.nblocks.load(Ordering::Relaxed) as u64 * BLOCK;
                    if cap < o.end() || o.end() + BLOCK <= cap {
                        err(format!(
                            "entry {i}: {} bytes in {} blocks",
                            o.end(),
                            e.nblocks.load(Ordering::Relaxed)
                        ));
                    }
                    link = e.chain.load(Ordering::Relaxed);
                }
            }
            if sh.live.load(Ordering::Relaxed) != reachable {
                err(format!(
                    "live count {} but {reachable} reachable",
                    sh.live.load(Ordering::Relaxed)
                ));
            }
            for (head, want, what) in [
                (sh.limbo_head.load(Ordering::Relaxed), RETIRED, IN_LIMBO),
                (sh.free_entry.load(Ordering::Relaxed), FREE, ON_FREE),
            ] {
                let mut link = head;
                let mut steps = 0;
                while link != 0 {
                    if link > n || steps > n {
                        err(format!("list {what}: bad link {link}"));
                        break;
                    }
                    steps += 1;
                    let i = link - 1;
                    if marks[i as usize] != NOWHERE {
                        err(format!(
                            "entry {i} on list {what} and in place {}",
                            marks[i as usize]
                        ));
                        break;
                    }
                    marks[i as usize] = what;
                    if self.entry(s, i).state.load(Ordering::Relaxed) != want {
                        err(format!(
                            "entry {i} on list {what} in state {}",
                            self.entry(s, i).state.load(Ordering::Relaxed)
                        ));
                    }
                    link = self.entry(s, i).list.load(Ordering::Relaxed);
                }
            }
            let mut used = vec![false; n as usize];
            for i in 0..n {
                let e = self.entry(s, i);
                let st = e.state.load(Ordering::Relaxed);
                if marks[i as usize] == NOWHERE && st != WRITING {
                    err(format!("entry {i} (state {st}) is in no place"));
                }
                let mut b = e.first.load(Ordering::Relaxed);
                let mut count = 0;
                while b != 0 {
                    if b > n || used[(b - 1) as usize] {
                        err(format!("entry {i}: block {b} bad or used twice"));
                        break;
                    }
                    used[(b - 1) as usize] = true;
                    count += 1;
                    b = self.link(s, b - 1).load(Ordering::Relaxed);
                }
                if count != e.nblocks.load(Ordering::Relaxed) && st != WRITING {
                    err(format!(
                        "entry {i}: chain of {count}, nblocks {}",
                        e.nblocks.load(Ordering::Relaxed)
                    ));
                }
            }
            let mut b = sh.free_block.load(Ordering::Relaxed);
            let mut nfree = 0;
            while b != 0 {
                if b > n || used[(b - 1) as usize] {
                    err(format!("free block {b} bad or used"));
                    break;
                }
                used[(b - 1) as usize] = true;
                nfree += 1;
                b = self.link(s, b - 1).load(Ordering::Relaxed);
            }
            if nfree != sh.free_blocks.load(Ordering::Relaxed) {
                err(format!(
                    "{nfree} free blocks listed, count says {}",
                    sh.free_blocks.load(Ordering::Relaxed)
                ));
            }
            if let Some(b) = used.iter().position(|u| !u) {
                err(format!("block {b} is in no place"));
            }
        }
        errors
    }
}
