//! The master's side of the shared segment: its header and regions, created
//! at the first start, prepared for the next generation before a reload's
//! exec, adopted after it, and cleaned up after every dead process.
//!
//! * **Before the exec** ([`SharedSegment::prepare`]), the running master
//!   does every fallible step of the next generation's shared memory: a
//!   region for each new or changed table (memory committed, entries of the
//!   old definition migrated where the key type matches) and the next
//!   generation's tracking records, health flags and counters. A failure
//!   there aborts the reload with nothing changed.
//! * **After the exec** ([`SharedSegment::adopt`]), the new image maps what
//!   it was handed and, with the same binary, creates nothing. Each region
//!   travels with its [`Role`]: current for the next generation, current for
//!   the previous one, or kept for old workers; so the new image can also
//!   fall back to the previous generation ([`Mode::Revert`]) if its own start
//!   fails.
//! * A table whose definition is unchanged is the very same region: old and
//!   new workers share its entries and counters during the drain. A changed
//!   or removed table's region is kept until no worker of the generations
//!   that used it is left, then dropped; per-generation regions likewise.
//!   Dropping the master's handle unmaps it; the kernel frees the memory once
//!   the last worker that used it has exited.
//! * A segment of another layout version (a binary upgrade that changed it)
//!   cannot be read: the new generation starts with a fresh segment and says
//!   so; the old workers keep the old one, and are *foreign* to the new
//!   segment (their slots and records mean nothing there).
//!
//! When the master reaps a worker it repairs every shard whose lock that
//! worker held, releases its trackings (`conn_cur`, use counts) and clears
//! its epoch slot, so reclamation goes on.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use corral_config::Config;
use corral_shm::cache::Cache;
use corral_shm::flags::SharedFlags;
use corral_shm::stats::{RowKey, Stat, StatsRegion, STAT_WORDS};
use corral_shm::track::{release_dead, Tracks};
use corral_shm::{Region, RegionKind, Segment, StickTable};
use corral_worker::stick::Shared;

/// What a region is to the generations around a reload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// A table of the next generation (prepared before the exec).
    pub next: bool,
    /// A table of the generation that was current before the exec.
    pub prev: bool,
    /// Kept for old workers: drop it once no worker of a generation up to
    /// this one is left (0: not kept for anyone but its own generation).
    pub keep: u32,
}

/// How [`SharedSegment::adopt`] uses what it inherited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Start the next generation (a reload's exec, or a takeover).
    Next,
    /// Go back to the generation that was current before the exec (the new
    /// image could not start the next one).
    Revert,
}

/// One generation's own regions: tracking records, health flags, counters.
#[derive(Clone, Debug)]
pub struct GenRegions {
    /// Tracking records, one array per worker.
    pub tracks: Tracks,
    /// Server health flags, one per server in config order.
    pub health: SharedFlags,
    /// Per-worker counters (see `corral_worker::worker::COUNTERS`).
    pub counters: SharedFlags,
    /// Proxy counter rows (`show stat`), one cell per worker.
    pub stats: StatsRegion,
}

/// The counter rows of a configuration: per frontend, then per backend its
/// servers and itself (HAProxy's order).
pub fn row_keys(cfg: &Config) -> Vec<RowKey> {
    let mut keys: Vec<RowKey> = cfg
        .frontends
        .iter()
        .map(|f| RowKey::frontend(&f.name))
        .collect();
    for b in &cfg.backends {
        keys.extend(b.servers.iter().map(|s| RowKey::server(&b.name, &s.name)));
        keys.push(RowKey::backend(&b.name));
    }
    keys
}

/// Stable numbers for `keys`: a proxy's `iid` and a server's `sid` stay
/// what they were in `prev` (the generation before) for the same name; new
/// ones take the next free number. Without `prev`, numbers follow the
/// config's order (proxies from 1, servers from 1 in each backend).
pub fn row_ids(keys: &[RowKey], prev: Option<&StatsRegion>) -> Vec<u32> {
    use corral_shm::stats::RowKind;
    use std::collections::HashMap;
    let old: HashMap<RowKey, u32> = prev.map_or_else(HashMap::new, |p| {
        (0..p.rows())
            .filter_map(|r| Some((p.key(r)?, p.id(r))))
            .filter(|(_, id)| *id > 0)
            .collect()
    });
    let mut next_iid = old
        .iter()
        .filter(|(k, _)| k.kind != RowKind::Server)
        .map(|(_, id)| *id)
        .max()
        .unwrap_or(0);
    let mut next_sid: HashMap<&str, u32> = HashMap::new();
    for (k, id) in &old {
        if k.kind == RowKind::Server {
            let n = next_sid.entry(k.proxy.as_str()).or_default();
            *n = (*n).max(*id);
        }
    }
    let mut ids = Vec::with_capacity(keys.len());
    for k in keys {
        let id = match old.get(k) {
            Some(&id) => id,
            None if k.kind == RowKind::Server => {
                let n = next_sid.entry(k.proxy.as_str()).or_default();
                *n += 1;
                *n
            }
            None => {
                next_iid += 1;
                next_iid
            }
        };
        ids.push(id);
    }
    ids
}

impl GenRegions {
    fn create(
        seg: &Segment,
        cfg: &Config,
        generation: u32,
        prev: Option<&StatsRegion>,
    ) -> io::Result<GenRegions> {
        let servers = cfg.backends.iter().map(|b| b.servers.len()).sum();
        let workers = cfg.global.workers as u32;
        let keys = row_keys(cfg);
        let ids = row_ids(&keys, prev);
        Ok(GenRegions {
            stats: StatsRegion::create(seg, generation, &keys, &ids, cfg.global.workers)?,
            tracks: Tracks::create(seg, generation, workers, per_worker(cfg))?,
            health: SharedFlags::create(seg, RegionKind::Health, generation, servers)?,
            counters: SharedFlags::create_strided(
                seg,
                RegionKind::Counters,
                generation,
                cfg.global.workers * corral_worker::worker::COUNTERS,
                corral_worker::worker::COUNTERS,
            )?,
        })
    }

    /// Finds generation `generation`'s regions among inherited ones.
    fn find(regions: &[(Arc<Region>, Role)], generation: u32) -> Option<GenRegions> {
        let of = |k: RegionKind| {
            regions
                .iter()
                .find(|(r, _)| r.kind() == k && r.tag() == generation)
                .map(|(r, _)| r.clone())
        };
        Some(GenRegions {
            tracks: Tracks::open(of(RegionKind::Track)?)?,
            health: SharedFlags::open(of(RegionKind::Health)?),
            counters: SharedFlags::open(of(RegionKind::Counters)?),
            stats: StatsRegion::open(of(RegionKind::Stats)?)?,
        })
    }

    /// Like [`GenRegions::find`], for regions made by a build without
    /// counter rows (an upgrade from it): the rows are created here.
    fn find_or_add_stats(
        seg: &Segment,
        cfg: &Config,
        regions: &[(Arc<Region>, Role)],
        generation: u32,
    ) -> io::Result<Option<GenRegions>> {
        if let Some(g) = GenRegions::find(regions, generation) {
            return Ok(Some(g));
        }
        let of = |k: RegionKind| {
            regions
                .iter()
                .find(|(r, _)| r.kind() == k && r.tag() == generation)
                .map(|(r, _)| r.clone())
        };
        let (Some(t), Some(h), Some(c)) = (
            of(RegionKind::Track).and_then(Tracks::open),
            of(RegionKind::Health),
            of(RegionKind::Counters),
        ) else {
            return Ok(None);
        };
        Ok(Some(GenRegions {
            tracks: t,
            health: SharedFlags::open(h),
            counters: SharedFlags::open(c),
            stats: {
                let keys = row_keys(cfg);
                let ids = row_ids(&keys, None);
                StatsRegion::create(seg, generation, &keys, &ids, cfg.global.workers)?
            },
        }))
    }

    fn regions(&self) -> [&Arc<Region>; 4] {
        [
            self.tracks.region(),
            self.health.region(),
            self.counters.region(),
            self.stats.region(),
        ]
    }
}

/// Copies the carried column (0) of `from` into `to`, row by row by name.
fn carry_column(from: &StatsRegion, to: &StatsRegion) {
    for row in 0..from.rows() {
        let (Some(key), Some(src)) = (from.key(row), from.cell(row, 0)) else {
            continue;
        };
        let Some(dst) = to.find(&key).and_then(|r| to.cell(r, 0)) else {
            continue;
        };
        for i in 0..STAT_WORDS {
            dst.set_word(i, src.word(i));
        }
    }
}

/// Adds the worker columns of `from` (a generation that is gone) to the
/// carried column of `to`, by name. Gauges and last values are not carried.
fn fold_workers(from: &StatsRegion, to: &StatsRegion) {
    for row in 0..from.rows() {
        let Some(key) = from.key(row) else { continue };
        let Some(dst) = to.find(&key).and_then(|r| to.cell(r, 0)) else {
            continue;
        };
        let mut sum = [0u64; STAT_WORDS];
        from.sum(row, 1..from.columns(), &mut sum);
        for (i, v) in sum.iter().enumerate() {
            if is_carried(i) {
                dst.add_word(i, *v);
            }
        }
        // Maxima and times are kept as the largest, never added.
        for s in corral_shm::stats::ALL {
            if matches!(
                s.kind(),
                corral_shm::stats::Kind::Max | corral_shm::stats::Kind::Latest
            ) {
                let m = (1..from.columns())
                    .filter_map(|c| from.cell(row, c).map(|c| c.get(s)))
                    .max()
                    .unwrap_or(0);
                dst.raise(s, m);
            }
        }
    }
}

/// Whether word `i` of a cell is a counter (carried), not a gauge, a last
/// value, a maximum or a master word.
fn is_carried(i: usize) -> bool {
    corral_shm::stats::ALL
        .get(i)
        .is_some_and(|s| s.kind() == corral_shm::stats::Kind::Counter)
}

/// Words per worker in counter regions made before the row size was
/// recorded.
const OLD_COUNTERS: usize = 12;

/// Records each worker may hold: three trackings per connection (sc0-sc2).
fn per_worker(cfg: &Config) -> u32 {
    let per_worker = cfg
        .global
        .maxconn
        .div_ceil(cfg.global.workers.max(1) as u32);
    per_worker.saturating_mul(3).max(64)
}

/// The next generation's regions, made before the exec.
pub struct Prepared {
    tables: Vec<StickTable<'static>>,
    caches: Vec<Cache<'static>>,
    gen: GenRegions,
    /// One line per table decision, for the reload's answer and the log.
    pub messages: Vec<String>,
}

/// The segment, its regions and the master's slot, as the master holds them.
pub struct SharedSegment {
    seg: &'static Segment,
    master_slot: usize,
    generation: u32,
    /// Tables of the running config, in config order.
    tables: Vec<StickTable<'static>>,
    /// Caches of the running config, in config order.
    caches: Vec<Cache<'static>>,
    /// The running generation's own regions.
    gen: GenRegions,
    /// Regions old workers still use, with the newest generation using them.
    retired: Vec<(Arc<Region>, u32)>,
    /// Connections counted by workers that are gone.
    carried_conns: u64,
}

fn leak(seg: Segment) -> &'static Segment {
    // Leaked on purpose: the header lives as long as the process image.
    Box::leak(Box::new(seg))
}

fn claim_master_slot(seg: &Segment, generation: u32) -> io::Result<usize> {
    // Our previous image (same pid, before the exec) held a slot: free it.
    seg.epoch().release_pid(std::process::id());
    seg.epoch()
        .claim_free(0, std::process::id(), generation)
        .ok_or_else(|| io::Error::other("no free process slot in the shared segment"))
}

fn kept(role: Role) -> Option<u32> {
    (role.keep > 0).then_some(role.keep)
}

impl SharedSegment {
    /// Creates a fresh segment for `cfg`.
    pub fn create(cfg: &Config, generation: u32) -> io::Result<SharedSegment> {
        let seg = leak(Segment::create()?);
        let tables = cfg
            .tables
            .iter()
            .map(|t| StickTable::create(seg, t))
            .collect::<io::Result<Vec<_>>>()?;
        let caches = cfg
            .caches
            .iter()
            .map(|c| Cache::create(seg, c))
            .collect::<io::Result<Vec<_>>>()?;
        let gen = GenRegions::create(seg, cfg, generation, None)?;
        let master_slot = claim_master_slot(seg, generation)?;
        Ok(SharedSegment {
            seg,
            master_slot,
            generation,
            tables,
            caches,
            gen,
            retired: Vec::new(),
            carried_conns: 0,
        })
    }

    /// Before a reload's exec: makes the next generation's regions for
    /// `cfg`. Tables whose definition is unchanged are kept as they are;
    /// new or changed ones get a committed region (a changed one filled from
    /// the current one). Errors leave everything as it was.
    pub fn prepare(&self, cfg: &Config) -> io::Result<Prepared> {
        let mut messages = Vec::new();
        let mut tables = Vec::new();
        for def in &cfg.tables {
            if let Some(t) = self.tables.iter().find(|t| t.matches(def)) {
                messages.push(format!("table {}: kept ({} entries)", def.name, t.len()));
                tables.push(t.clone());
                continue;
            }
            let t = StickTable::create(self.seg, def)?;
            match self.tables.iter().find(|t| t.name() == def.name) {
                Some(old) => {
                    let moved = t.migrate_from(old, self.master_slot);
                    messages.push(format!(
                        "table {}: definition changed, rebuilt ({moved} entries migrated where the key type matches; conn_cur starts at 0)",
                        def.name
                    ));
                }
                None => messages.push(format!("table {}: created", def.name)),
            }
            tables.push(t);
        }
        for t in &self.tables {
            if !cfg.tables.iter().any(|d| d.name == t.name()) {
                messages.push(format!(
                    "table {}: removed from the configuration, freed once old workers exit",
                    t.name()
                ));
            }
        }
        let caches = crate::shared_caches::prepare(self.seg, &self.caches, cfg, &mut messages)?;
        let gen = GenRegions::create(self.seg, cfg, self.generation + 1, Some(&self.gen.stats))?;
        // What earlier generations counted carries on, by name.
        carry_column(&self.gen.stats, &gen.stats);
        Ok(Prepared {
            tables,
            caches,
            gen,
            messages,
        })
    }

    /// Every region to hand across the exec, with its role (`next`: what
    /// `prepare` made).
    pub fn handoff(&self, next: Option<&Prepared>) -> Vec<(RawFd, Role)> {
        let mut out: Vec<(Arc<Region>, Role)> = Vec::new();
        fn add(out: &mut Vec<(Arc<Region>, Role)>, r: &Arc<Region>, f: impl Fn(&mut Role)) {
            match out.iter_mut().find(|(x, _)| Arc::ptr_eq(x, r)) {
                Some((_, role)) => f(role),
                None => {
                    let mut role = Role::default();
                    f(&mut role);
                    out.push((r.clone(), role));
                }
            }
        }
        for t in &self.tables {
            add(&mut out, t.region(), |r| r.prev = true);
        }
        for c in &self.caches {
            add(&mut out, c.region(), |r| r.prev = true);
        }
        for r in self.gen.regions() {
            add(&mut out, r, |_| {});
        }
        for (r, keep) in &self.retired {
            add(&mut out, r, |role| role.keep = *keep);
        }
        if let Some(p) = next {
            for t in &p.tables {
                add(&mut out, t.region(), |r| r.next = true);
            }
            for c in &p.caches {
                add(&mut out, c.region(), |r| r.next = true);
            }
            for r in p.gen.regions() {
                add(&mut out, r, |_| {});
            }
        }
        out.into_iter().map(|(r, role)| (r.fd(), role)).collect()
    }

    /// After an exec or for a takeover: adopts the segment header `seg` and
    /// the `inherited` regions for `cfg` at `generation`. With [`Mode::Next`]
    /// the tables are the `next` ones (or, with another binary or in a
    /// takeover, rebuilt from same-named ones); with [`Mode::Revert`] they
    /// are the `prev` ones. A header of another layout version starts a
    /// fresh segment (`Ok((seg, true))`: the old workers are foreign to it).
    pub fn adopt(
        cfg: &Config,
        seg: OwnedFd,
        inherited: Vec<(OwnedFd, Role)>,
        generation: u32,
        mode: Mode,
        messages: &mut Vec<String>,
    ) -> io::Result<(SharedSegment, bool)> {
        let seg = match Segment::open(seg) {
            Ok(s) => leak(s),
            Err(e) => {
                let m = format!(
                    "the previous segment cannot be used ({e}): starting with empty stick tables"
                );
                log::warn!("{m}");
                messages.push(m);
                return Ok((SharedSegment::create(cfg, generation)?, true));
            }
        };
        let mut regions: Vec<(Arc<Region>, Role)> = Vec::new();
        for (fd, role) in inherited {
            match Region::open(fd) {
                Ok(r) => regions.push((r, role)),
                Err(e) => log::warn!("an inherited region cannot be used ({e}): dropped"),
            }
        }
        let prev_gen = match mode {
            Mode::Next => generation.saturating_sub(1),
            Mode::Revert => generation,
        };
        // Our slot first: the migrations below pin it (slot 0 may be another
        // master's during a takeover).
        let master_slot = claim_master_slot(seg, generation)?;
        let mut tables = Vec::new();
        for def in &cfg.tables {
            let wanted = |role: Role| match mode {
                Mode::Next => role.next,
                Mode::Revert => role.prev,
            };
            let open = |pick: &dyn Fn(&Region, Role) -> bool| {
                regions
                    .iter()
                    .filter(|(r, role)| r.kind() == RegionKind::Table && pick(r, *role))
                    .filter_map(|(r, _)| StickTable::open(seg, r.clone()))
                    .find(|t| t.matches(def))
            };
            // The table prepared for us; else (a takeover, or a binary whose
            // layout differs from the one that prepared it) any region of
            // this exact definition.
            let found = open(&|_, role| wanted(role)).or_else(|| open(&|_, _| true));
            if let Some(t) = found {
                if mode == Mode::Next
                    && !regions
                        .iter()
                        .any(|(r, role)| role.next && Arc::ptr_eq(r, t.region()))
                {
                    messages.push(format!("table {}: kept ({} entries)", def.name, t.len()));
                }
                tables.push(t);
                continue;
            }
            let t = StickTable::create(seg, def)?;
            let old = regions
                .iter()
                .filter(|(r, _)| r.kind() == RegionKind::Table && r.name() == def.name)
                .filter_map(|(r, _)| StickTable::open(seg, r.clone()))
                .max_by_key(|t| t.region_id());
            match old {
                Some(old) => {
                    let moved = t.migrate_from(&old, master_slot);
                    messages.push(format!(
                        "table {}: definition changed, rebuilt ({moved} entries migrated where the key type matches; conn_cur starts at 0)",
                        def.name
                    ));
                }
                None => messages.push(format!("table {}: created", def.name)),
            }
            tables.push(t);
        }
        let caches = crate::shared_caches::adopt(seg, cfg, &regions, mode, messages)?;
        let gen = match GenRegions::find_or_add_stats(seg, cfg, &regions, generation)? {
            Some(g) => g,
            None => GenRegions::create(seg, cfg, generation, None)?,
        };
        let mut retired = Vec::new();
        for (r, role) in regions {
            let used = tables.iter().any(|t| Arc::ptr_eq(t.region(), &r))
                || caches.iter().any(|c| Arc::ptr_eq(c.region(), &r))
                || gen.regions().iter().any(|g| Arc::ptr_eq(g, &r));
            if used {
                continue;
            }
            // Who may still use it: old workers up to the generation it
            // belonged to. Regions of a failed next generation: nobody.
            let keep = match r.kind() {
                RegionKind::Table | RegionKind::Cache => {
                    if role.prev {
                        Some(prev_gen.max(role.keep))
                    } else {
                        kept(role)
                    }
                }
                _ if r.tag() <= prev_gen => Some(r.tag().max(role.keep)),
                _ => None,
            };
            if let Some(keep) = keep.filter(|&k| k > 0) {
                retired.push((r, keep));
            }
        }
        for m in messages.iter() {
            log::info!("{m}");
        }
        Ok((
            SharedSegment {
                seg,
                master_slot,
                generation,
                tables,
                caches,
                gen,
                retired,
                carried_conns: 0,
            },
            false,
        ))
    }

    /// The segment header's memfd (handed to the next generation).
    pub fn fd(&self) -> RawFd {
        self.seg.fd()
    }

    /// The tables of the running config, in config order.
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

    /// Process slots free in the segment (the next generation needs one per
    /// worker while the old workers keep theirs).
    pub fn free_slots(&self) -> usize {
        self.seg.epoch().free_slots()
    }

    /// Frees epoch slot `slot` (claimed for a worker whose fork failed).
    pub fn clear_slot(&self, slot: usize) {
        self.seg.epoch().clear(slot);
    }

    /// Names the forked worker `pid` as the process of epoch slot `slot`
    /// (only the pid: the child may already have pinned the slot).
    pub fn register(&self, slot: usize, pid: u32) {
        self.seg.epoch().set_owner(slot, pid);
    }

    /// What a forked worker `id` in epoch slot `slot` gets.
    pub fn for_worker(&self, slot: usize, id: usize) -> Shared {
        Shared {
            seg: self.seg,
            tables: self.tables.clone(),
            caches: self.caches.clone(),
            tracks: self.gen.tracks.clone(),
            worker: id.max(1) - 1,
            slot,
        }
    }

    /// This generation's health flags.
    pub fn health(&self) -> &SharedFlags {
        &self.gen.health
    }

    /// The counters region of `generation`, if still held.
    pub fn counters_of(&self, generation: u32) -> Option<SharedFlags> {
        if generation == self.generation {
            return Some(self.gen.counters.clone());
        }
        self.retired
            .iter()
            .find(|(r, _)| r.kind() == RegionKind::Counters && r.tag() == generation)
            .map(|(r, _)| SharedFlags::open(r.clone()))
    }

    /// Counter `k` of worker `id` of `generation` (0 if unknown): rows as
    /// the region's creator laid them out (a binary upgrade may have
    /// changed the row size; a word the creator did not have reads 0).
    pub fn worker_counter(&self, generation: u32, id: usize, k: usize) -> u64 {
        let Some(c) = self.counters_of(generation) else {
            return 0;
        };
        let stride = self.stride_of(generation, &c);
        if k >= stride {
            return 0;
        }
        c.get((id.max(1) - 1) * stride + k)
    }

    /// Counters `0..n` of worker `id` of `generation` (empty if unknown).
    pub fn worker_counters(&self, generation: u32, id: usize, n: usize) -> Vec<u64> {
        let Some(c) = self.counters_of(generation) else {
            return Vec::new();
        };
        let stride = self.stride_of(generation, &c);
        let base = (id.max(1) - 1) * stride;
        (0..n)
            .map(|k| if k < stride { c.get(base + k) } else { 0 })
            .collect()
    }

    /// Sets counter `k` of worker `id` of `generation`.
    pub fn set_worker_counter(&self, generation: u32, id: usize, k: usize, v: u64) {
        if let Some(c) = self.counters_of(generation) {
            let stride = self.stride_of(generation, &c);
            if k < stride {
                c.set((id.max(1) - 1) * stride + k, v);
            }
        }
    }

    /// Words per worker in `generation`'s counters: as recorded, else its
    /// length over that generation's worker count (its counter rows have
    /// a column per worker), else the first builds' 12.
    fn stride_of(&self, generation: u32, c: &SharedFlags) -> usize {
        c.stride()
            .or_else(|| {
                let s = self
                    .all_stats()
                    .into_iter()
                    .find(|s| s.generation() == generation)?;
                let workers = s.columns().checked_sub(1).filter(|&w| w > 0)?;
                Some(c.len() / workers)
            })
            .unwrap_or(OLD_COUNTERS)
    }

    /// This generation's counters region.
    pub fn counters(&self) -> &SharedFlags {
        &self.gen.counters
    }

    /// This generation's counter rows.
    pub fn stats(&self) -> &StatsRegion {
        &self.gen.stats
    }

    /// Every generation's counter rows still held, current first.
    pub fn all_stats(&self) -> Vec<StatsRegion> {
        let mut all = vec![self.gen.stats.clone()];
        all.extend(
            self.retired
                .iter()
                .filter_map(|(r, _)| StatsRegion::open(r.clone())),
        );
        all
    }

    /// Worker `id` of `generation` is gone: its gauges no longer hold (its
    /// counters stay, for the worker that replaces it or the fold).
    pub fn worker_gone(&self, generation: u32, id: usize) {
        let Some(s) = self
            .all_stats()
            .into_iter()
            .find(|s| s.generation() == generation)
        else {
            return;
        };
        for row in 0..s.rows() {
            if let Some(c) = s.cell(row, id) {
                c.set(Stat::Scur, 0);
                c.set(Stat::Qcur, 0);
            }
        }
    }

    /// Connections counted by workers that are gone.
    pub fn carried_conns(&self) -> u64 {
        self.carried_conns
    }

    /// Adds connections counted by a worker that is gone (or carried over
    /// from the previous image).
    pub fn carry_conns(&mut self, n: u64) {
        self.carried_conns += n;
    }

    /// The caches of the running config, in config order.
    pub fn caches(&self) -> &[Cache<'static>] {
        &self.caches
    }

    /// Every cache region still held: the running ones, then those only
    /// old workers use.
    fn all_caches(&self) -> Vec<Cache<'static>> {
        let mut all = self.caches.clone();
        all.extend(
            self.retired
                .iter()
                .filter(|(r, _)| r.kind() == RegionKind::Cache)
                .filter_map(|(r, _)| Cache::open(self.seg, r.clone())),
        );
        all
    }

    fn all_tables(&self) -> Vec<StickTable<'static>> {
        let mut all = self.tables.clone();
        all.extend(
            self.retired
                .iter()
                .filter(|(r, _)| r.kind() == RegionKind::Table)
                .filter_map(|(r, _)| StickTable::open(self.seg, r.clone())),
        );
        all
    }

    /// Cleans up after the process of epoch slot `slot` (worker `id` of
    /// `generation`) died.
    pub fn recover(&self, slot: usize, generation: u32, id: usize) {
        let all = self.all_tables();
        let repaired: u32 = all
            .iter()
            .map(|t| t.recover_from(slot, self.master_slot))
            .sum();
        let tracks = if generation == self.generation {
            Some(self.gen.tracks.clone())
        } else {
            self.retired
                .iter()
                .find(|(r, _)| r.kind() == RegionKind::Track && r.tag() == generation)
                .and_then(|(r, _)| Tracks::open(r.clone()))
        };
        let released = tracks.map_or(0, |tr| release_dead(&tr, &all, id.max(1) - 1));
        for c in self.all_caches() {
            let r = c.recover_from(slot, self.master_slot);
            if r != Default::default() {
                log::warn!(
                    "worker {id}: cache {}: rebuilt {} shard(s) it held locked, dropped {} reference(s), freed {} unfinished store(s)",
                    c.name(),
                    r.shards,
                    r.refs,
                    r.stores
                );
            }
        }
        self.seg.epoch().clear(slot);
        if repaired > 0 || released > 0 {
            log::warn!(
                "worker {id}: repaired {repaired} stick-table shard(s) it held locked, released {released} tracked entr(ies)"
            );
        }
    }

    /// Drops regions no worker uses any more: kept for generations up to
    /// `keep`, and `oldest` (the oldest old generation still running) is
    /// newer, or no old worker is left.
    pub fn free_unused(&mut self, oldest: Option<u32>) {
        let current = self.gen.stats.clone();
        self.retired.retain(|(r, keep)| {
            if oldest.is_some_and(|g| g <= *keep) {
                return true;
            }
            if let Some(old) = StatsRegion::open(r.clone()) {
                // Its workers are gone: what they counted is carried.
                fold_workers(&old, &current);
            }
            if r.kind() == RegionKind::Table {
                log::info!("table {}: old region freed", r.name());
            }
            if r.kind() == RegionKind::Cache {
                log::info!("cache {}: old region freed", r.name());
            }
            false
        });
    }

    /// In a forked worker: lets go of the regions only old workers use (the
    /// child got the master's mappings and fds at fork), so their memory is
    /// freed when those old workers exit, not when this worker does.
    pub fn drop_retired(&mut self) {
        self.retired.clear();
    }

    /// Gives the master's epoch slot back (at exit).
    pub fn release_master_slot(&self) {
        self.seg.epoch().clear(self.master_slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn cfg(table_size: u32, workers: usize) -> Config {
        corral_config::parse(
            &format!(
                "[global]\nworkers = {workers}\n\
                 [frontend.f]\nbind = \"127.0.0.1:1\"\nmode = \"tcp\"\ndefault_backend = \"b\"\n\
                 rules = [\"tcp-request connection track-sc0 src table t\"]\n\
                 [backend.b]\nmode = \"tcp\"\nserver.a = {{ addr = \"127.0.0.1:2\" }}\n\
                 [table.t]\ntype = \"ip\"\nsize = {table_size}\nstore = [\"conn_cnt\"]\n"
            ),
            "t.toml",
        )
        .unwrap()
    }

    fn dup(fd: RawFd) -> OwnedFd {
        // SAFETY: dup of an fd we hold, handed over as an exec would.
        unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) }
    }

    /// What an exec hands over: the header and every region with its role.
    fn exec(
        s: &SharedSegment,
        p: Option<&Prepared>,
        cfg: &Config,
        generation: u32,
        mode: Mode,
    ) -> SharedSegment {
        let regions = s
            .handoff(p)
            .into_iter()
            .map(|(fd, role)| (dup(fd), role))
            .collect();
        let (next, foreign) =
            SharedSegment::adopt(cfg, dup(s.fd()), regions, generation, mode, &mut Vec::new())
                .unwrap();
        assert!(!foreign);
        next
    }

    /// A master re-executed for a reload keeps its pid: each generation must
    /// free its previous image's slot, or ~250 reloads exhaust the segment.
    #[test]
    fn reloads_do_not_leak_the_master_slot_or_regions() {
        let mut gen = SharedSegment::create(&cfg(1000, 1), 1).unwrap();
        for g in 2..=300u32 {
            // Every other reload changes the table: a new region each time.
            let c = cfg(1000 + (g % 2) * 10, 1 + (g as usize % 3));
            let p = gen.prepare(&c).unwrap();
            let mut next = exec(&gen, Some(&p), &c, g, Mode::Next);
            drop(p);
            next.free_unused(None); // no old worker left
            gen = next;
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
        assert!(gen.retired.is_empty(), "{:?}", gen.retired);
    }

    #[test]
    fn a_changed_table_is_migrated_before_the_exec_and_the_old_one_kept_for_old_workers() {
        let c1 = cfg(1000, 2);
        let s = SharedSegment::create(&c1, 1).unwrap();
        {
            let g = s.seg.epoch().pin(s.master_slot);
            let e = s.tables[0]
                .get_or_create(
                    &g,
                    s.master_slot,
                    &[127, 0, 0, 7],
                    corral_shm::freq::now_ms(),
                )
                .unwrap();
            e.add(corral_shm::DataTypeName::ConnCnt, 18);
        }
        let c2 = cfg(2000, 2);
        let p = s.prepare(&c2).unwrap();
        assert!(
            p.messages[0].contains("1 entries migrated"),
            "{:?}",
            p.messages
        );
        let mut next = exec(&s, Some(&p), &c2, 2, Mode::Next);
        assert_eq!(next.tables[0].layout().size, 2000);
        assert_eq!(next.tables[0].region_id(), p.tables[0].region_id());
        assert_eq!(next.tables[0].len(), 1);
        next.free_unused(Some(1));
        assert_eq!(
            next.retired.len(),
            5,
            "old table + gen 1's tracks, health, counters, counter rows"
        );
        next.free_unused(None);
        assert!(next.retired.is_empty());
    }

    #[test]
    fn a_failed_next_generation_reverts_to_the_previous_tables() {
        let c1 = cfg(1000, 1);
        let s = SharedSegment::create(&c1, 3).unwrap();
        let c2 = cfg(5000, 1);
        let p = s.prepare(&c2).unwrap();
        let back = exec(&s, Some(&p), &c1, 3, Mode::Revert);
        assert_eq!(back.tables[0].region_id(), s.tables[0].region_id());
        assert!(
            back.retired.is_empty(),
            "the regions prepared for the failed generation are dropped: {:?}",
            back.retired
        );
        assert_eq!(back.gen.tracks.generation(), 3);
    }
}
