//! The master's side of the shared segment: created before the first fork or
//! inherited from the previous generation, and cleaned up after every dead
//! process.
//!
//! Across a reload (or a takeover) the segment is the same memfd, so:
//! * a table whose definition is unchanged is the very same region: old and
//!   new workers share its entries and counters during the drain;
//! * a changed table gets a new region, filled from the old one where the key
//!   type matches (the log says how many entries moved); the old region is
//!   freed once no worker of the generations that used it is left;
//! * a removed table's region is freed the same way;
//! * a segment of another layout version (a binary upgrade that changed it)
//!   cannot be read: the new generation starts with a fresh segment and says so.
//!
//! When the master reaps a process it repairs every shard whose lock that
//! process held, releases its trackings (`conn_cur`, use counts) and clears its
//! epoch slot, so reclamation goes on.

use std::collections::HashSet;
use std::io;
use std::os::fd::{OwnedFd, RawFd};

use corral_config::Config;
use corral_shm::segment::RegionKind;
use corral_shm::track::{release_dead, Tracks};
use corral_shm::{Segment, StickTable};
use corral_worker::stick::Shared;

/// Headroom for the next generations' regions (the file is sparse).
const GROWTH: u64 = 4;

/// The segment, its tables and tracking records, as the master holds them.
pub struct SharedSegment {
    seg: &'static Segment,
    tables: Vec<StickTable<'static>>,
    /// Tracking regions: the current one first, then older ones still used
    /// by old workers (a reload that changed maxconn made a new one).
    tracks: Vec<Tracks>,
    master_slot: usize,
    generation: u32,
    /// Regions to free once no worker of generation <= the tag is left.
    pending_free: Vec<(u64, u32, String)>,
}

fn per_proc(cfg: &Config) -> u32 {
    let per_worker = cfg
        .global
        .maxconn
        .div_ceil(cfg.global.workers.max(1) as u32);
    per_worker.saturating_mul(3).max(64)
}

fn size_for(cfg: &Config) -> u64 {
    let tables: u64 = cfg
        .tables
        .iter()
        .map(|t| corral_shm::table::Layout::of(t).region_len() + 4096)
        .sum();
    let tracks = corral_shm::epoch::MAX_PROCS as u64 * per_proc(cfg) as u64 * 8;
    (tables + tracks + (1 << 20)) * GROWTH
}

impl SharedSegment {
    /// Creates a fresh segment for `cfg`.
    pub fn create(cfg: &Config, generation: u32) -> io::Result<SharedSegment> {
        // Leaked on purpose: the mapping lives as long as the process.
        let seg: &'static Segment = Box::leak(Box::new(Segment::create(size_for(cfg))?));
        let tables = cfg
            .tables
            .iter()
            .map(|t| StickTable::create(seg, t))
            .collect::<io::Result<Vec<_>>>()?;
        let tracks = Tracks::open_or_create(seg, per_proc(cfg))?;
        let master_slot = seg
            .epoch()
            .claim_free(0, std::process::id(), generation)
            .ok_or_else(|| io::Error::other("no free process slot"))?;
        Ok(SharedSegment {
            seg,
            tables,
            tracks: vec![tracks],
            master_slot,
            generation,
            pending_free: Vec::new(),
        })
    }

    /// Adopts the segment of a previous generation (reload) or instance
    /// (takeover). `messages` gets one line per table decision.
    pub fn inherit(
        cfg: &Config,
        fd: OwnedFd,
        generation: u32,
        messages: &mut Vec<String>,
    ) -> io::Result<SharedSegment> {
        let seg = match Segment::open(fd) {
            Ok(s) => &*Box::leak(Box::new(s)),
            Err(e) => {
                let m = format!(
                    "the previous segment cannot be used ({e}): starting with empty stick tables"
                );
                log::warn!("{m}");
                messages.push(m);
                return SharedSegment::create(cfg, generation);
            }
        };
        // Our previous image (same pid, before the exec) held a slot: free it.
        seg.epoch().release_pid(std::process::id());
        let master_slot = seg
            .epoch()
            .claim_free(0, std::process::id(), generation)
            .ok_or_else(|| io::Error::other("no free process slot in the inherited segment"))?;
        let mut pending_free = Vec::new();
        let mut tables = Vec::new();
        for def in &cfg.tables {
            if let Some(t) = StickTable::open(seg, def) {
                messages.push(format!("table {}: kept ({} entries)", def.name, t.len()));
                tables.push(t);
                continue;
            }
            let old = seg.find_region(RegionKind::Table, &def.name);
            let t = StickTable::create(seg, def)?;
            match old {
                Some((offset, _, _)) => {
                    let moved = old_table(seg, offset, &def.name)
                        .map_or(0, |o| t.migrate_from(&o, master_slot));
                    messages.push(format!(
                        "table {}: definition changed, rebuilt ({moved} entries migrated where the key type matches)",
                        def.name
                    ));
                    pending_free.push((offset, generation - 1, def.name.clone()));
                }
                None => messages.push(format!("table {}: created", def.name)),
            }
            tables.push(t);
        }
        let wanted: HashSet<&str> = cfg.tables.iter().map(|t| t.name.as_str()).collect();
        for (name, offset) in seg.region_names(RegionKind::Table) {
            if !wanted.contains(name.as_str()) {
                messages.push(format!(
                    "table {name}: removed from the configuration, freed once old workers exit"
                ));
                pending_free.push((offset, generation - 1, name));
            }
        }
        for m in messages.iter() {
            log::info!("{m}");
        }
        let current = Tracks::open_or_create(seg, per_proc(cfg))?;
        let mut tracks = vec![current];
        tracks.extend(Tracks::all(seg).into_iter().filter(|t| *t != current));
        Ok(SharedSegment {
            seg,
            tables,
            tracks,
            master_slot,
            generation,
            pending_free,
        })
    }

    /// The segment's memfd (handed to the next generation).
    pub fn fd(&self) -> RawFd {
        self.seg.fd()
    }

    /// The tables, in config order.
    pub fn tables(&self) -> &[StickTable<'static>] {
        &self.tables
    }

    /// The master's epoch slot.
    pub fn master_slot(&self) -> usize {
        self.master_slot
    }

    /// Claims a free epoch slot for a worker about to be forked.
    pub fn claim_slot(&self) -> Option<usize> {
        self.seg
            .epoch()
            .claim_free(1, std::process::id(), self.generation)
    }

    /// Records the pid now using epoch slot `slot`.
    pub fn register(&self, slot: usize, pid: u32) {
        self.seg.epoch().claim(slot, pid, self.generation);
    }

    /// What a forked worker in epoch slot `slot` gets.
    pub fn for_worker(&self, slot: usize) -> Shared {
        Shared {
            seg: self.seg,
            tables: self.tables.clone(),
            tracks: self.tracks[0],
            slot,
        }
    }

    /// Cleans up after the process of epoch slot `slot` (worker `id`) died.
    pub fn recover(&self, slot: usize, id: usize) {
        let mut all: Vec<StickTable<'static>> = self.tables.clone();
        all.extend(
            self.pending_free
                .iter()
                .filter_map(|(off, _, name)| old_table(self.seg, *off, name)),
        );
        let repaired: u32 = all
            .iter()
            .map(|t| t.recover_from(slot, self.master_slot))
            .sum();
        let released: u32 = self
            .tracks
            .iter()
            .map(|tr| release_dead(tr, &all, slot))
            .sum();
        self.seg.epoch().clear(slot);
        if repaired > 0 || released > 0 {
            log::warn!(
                "worker {id}: repaired {repaired} stick-table shard(s) it held locked, released {released} tracked entr(ies)"
            );
        }
    }

    /// Frees regions of removed or rebuilt tables once no worker of the
    /// generations that used them is left (`oldest`: oldest live old generation).
    pub fn free_unused(&mut self, oldest: Option<u32>) {
        let seg = self.seg;
        self.pending_free.retain(|(offset, gen, name)| {
            if oldest.is_some_and(|g| g <= *gen) {
                return true;
            }
            log::info!("table {name}: old region freed");
            seg.free_region(*offset);
            false
        });
    }

    /// Gives the master's epoch slot back (at exit).
    pub fn release_master_slot(&self) {
        self.seg.epoch().clear(self.master_slot);
    }
}

/// A table region of a previous definition, mapped with the layout it was
/// created with (recovered from its fingerprint is not possible, so the
/// region's own header is not needed: only the generic walk is used).
fn old_table(seg: &'static Segment, offset: u64, name: &str) -> Option<StickTable<'static>> {
    StickTable::open_region(seg, offset, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};

    /// A master re-executed for a reload keeps its pid: each generation must
    /// free its previous image's slot, or ~250 reloads exhaust the segment.
    #[test]
    fn reloads_do_not_leak_the_master_slot() {
        let cfg = corral_config::parse(
            "[frontend.f]\nbind = \"127.0.0.1:1\"\nmode = \"tcp\"\ndefault_backend = \"b\"\n\
             [backend.b]\nmode = \"tcp\"\nserver.a = { addr = \"127.0.0.1:2\" }\n",
            "t.toml",
        )
        .unwrap();
        let mut gen = SharedSegment::create(&cfg, 1).unwrap();
        for g in 2..=300 {
            // SAFETY: dup of the memfd we hold, handed to inherit as exec would.
            let fd = unsafe { OwnedFd::from_raw_fd(libc::dup(gen.seg.fd().as_raw_fd())) };
            gen = SharedSegment::inherit(&cfg, fd, g, &mut Vec::new())
                .expect("a free slot after many reloads");
        }
        let me = std::process::id();
        let held = (0..corral_shm::epoch::MAX_PROCS)
            .filter(|&i| {
                gen.seg
                    .epoch()
                    .slot(i)
                    .pid
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == me
            })
            .count();
        assert_eq!(
            held, 1,
            "the master holds exactly one slot after 299 reloads"
        );
    }
}
