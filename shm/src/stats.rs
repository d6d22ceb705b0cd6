//! Proxy counters in shared memory: one row per frontend, backend and
//! server, keyed by **name**, and in each row one cell per worker of the
//! generation, written only by that worker (plain loads and stores on
//! atomics: no contended read-modify-write on the hot path).
//!
//! The master reads the cells and sums them for `show stat`. Column 0 of
//! each row is the master's: the totals carried from workers that are gone
//! (earlier generations, folded in by name when their last worker exits).
//! A respawned worker takes its predecessor's column and counts on from its
//! values, so nothing counted is lost; gauges (`scur`, `qcur`) of a dead
//! worker are zeroed by the master.
//!
//! The region is per generation (its rows follow that generation's
//! configuration) and lives in the segment like the others, so it outlives
//! the master's exec and the new master still reads the old workers' cells.

use std::io;
use std::sync::Arc;

use crate::primitive::{AtomicU64, Ordering};
use crate::region::{Region, RegionKind};
use crate::segment::Segment;

/// Words per cell.
pub const STAT_WORDS: usize = 64;
const HEADER: u64 = 64;
const KEY_SIZE: u64 = 136;
const NAME: usize = 64;

/// One word of a cell, named after HAProxy's `show stat` column it feeds.
///
/// Words have one of five kinds (see [`Stat::kind`]): worker counters
/// (summed, carried when a worker is gone), worker gauges (summed over live
/// workers), last values (check results: the checking worker's), worker
/// maxima (a worker raises them, the master harvests them into column 0),
/// and master words, kept in column 0 only: maxima and averages the master
/// computes from the sums over time, and the server's runtime state (admin
/// state, weight, address) that every worker reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Stat {
    /// Current sessions (gauge).
    Scur = 0,
    /// Cumulated sessions (frontend: connections; backend, server: streams).
    Stot,
    /// Bytes in (from clients).
    Bin,
    /// Bytes out (to clients).
    Bout,
    /// Requests denied by rules.
    Dreq,
    /// Responses denied.
    Dresp,
    /// Request errors (invalid, timed out).
    Ereq,
    /// Connection errors to servers.
    Econ,
    /// Response errors (invalid, truncated).
    Eresp,
    /// Connection retries.
    Wretr,
    /// Redispatches.
    Wredis,
    /// 1xx responses.
    Hrsp1xx,
    /// 2xx responses.
    Hrsp2xx,
    /// 3xx responses.
    Hrsp3xx,
    /// 4xx responses.
    Hrsp4xx,
    /// 5xx responses.
    Hrsp5xx,
    /// Other responses (none from the server).
    HrspOther,
    /// HTTP requests.
    ReqTot,
    /// Transfers aborted by the client.
    CliAbrt,
    /// Transfers aborted by the server.
    SrvAbrt,
    /// Times the server was selected.
    Lbtot,
    /// Server connections opened.
    Connect,
    /// Server connections reused.
    Reuse,
    /// Sum of queue times, ms.
    QtimeSum,
    /// Sum of connect times, ms.
    CtimeSum,
    /// Sum of response times, ms.
    RtimeSum,
    /// Sum of total times, ms.
    TtimeSum,
    /// Samples in the sums above.
    Timed,
    /// Requests queued now (gauge).
    Qcur,
    /// Connections denied by `tcp-request connection` rules.
    Dcon,
    /// Sessions denied.
    Dses,
    /// Requests answered by corral itself (return, redirect).
    Intercepted,
    /// Failed health checks.
    Chkfail,
    /// UP to DOWN transitions.
    Chkdown,
    /// Unix time of the last state change.
    LastChange,
    /// Last check status (an HAProxy check code, see the worker).
    CheckStatus,
    /// Last check's duration, ms.
    CheckDuration,
    /// Last check's HTTP status (0 for a TCP check).
    CheckCode,
    /// Unix time of the last session (a last value: the latest wins).
    LastSess,
    /// Internal errors.
    Eint,
    /// Longest queue time of one request, ms (worker maximum).
    QtimeMax,
    /// Longest connect time, ms (worker maximum).
    CtimeMax,
    /// Longest response time, ms (worker maximum).
    RtimeMax,
    /// Longest total time, ms (worker maximum).
    TtimeMax,
    /// Most sessions at once, sampled from the sum (master).
    Smax,
    /// Longest queue, sampled from the sum (master).
    Qmax,
    /// Highest sessions per second (master).
    RateMax,
    /// Highest requests per second (master).
    ReqRateMax,
    /// Highest connections per second (master).
    ConnRateMax,
    /// Average queue time over the last requests, ms (master).
    QtimeAvg,
    /// Average connect time, ms (master).
    CtimeAvg,
    /// Average response time, ms (master).
    RtimeAvg,
    /// Average total time, ms (master).
    TtimeAvg,
    /// A server's admin state: [`ADMIN_MAINT`], [`ADMIN_DRAIN`] (master).
    AdminState,
    /// A server's weight set at run time, plus one (0: as configured) (master).
    AdminWeight,
    /// Sequence of the address words: odd while the master writes them.
    AddrSeq,
    /// A server's address set at run time: high 64 bits of the IPv6 form.
    AddrHi,
    /// Low 64 bits (IPv4 as IPv4-mapped IPv6).
    AddrLo,
    /// Port plus one (0: the configured address).
    AddrPort,
    /// Requests looked up in the backend's cache.
    CacheLookups,
    /// Requests answered from it.
    CacheHits,
    /// Reserved.
    Reserved61,
    /// Reserved.
    Reserved62,
    /// Reserved.
    Reserved63,
}

/// `AdminState` bit: maintenance (no traffic, no checks).
pub const ADMIN_MAINT: u64 = 1;
/// `AdminState` bit: drain (no new traffic but persistence; checks go on).
pub const ADMIN_DRAIN: u64 = 2;

/// How the master combines a word across cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Summed over every column; carried when a worker is gone.
    Counter,
    /// Summed over live workers only.
    Gauge,
    /// The check results: the current generation's checking worker's.
    Last,
    /// A time (Unix seconds): the latest anyone wrote, in any generation,
    /// kept in column 0 when a generation goes.
    Latest,
    /// Raised by workers, harvested by the master into column 0; the
    /// largest is the answer.
    Max,
    /// Written by the master in column 0 only.
    Master,
}

/// Every word, in order (`ALL[i] as usize == i`).
pub const ALL: [Stat; STAT_WORDS] = {
    use Stat::*;
    [
        Scur,
        Stot,
        Bin,
        Bout,
        Dreq,
        Dresp,
        Ereq,
        Econ,
        Eresp,
        Wretr,
        Wredis,
        Hrsp1xx,
        Hrsp2xx,
        Hrsp3xx,
        Hrsp4xx,
        Hrsp5xx,
        HrspOther,
        ReqTot,
        CliAbrt,
        SrvAbrt,
        Lbtot,
        Connect,
        Reuse,
        QtimeSum,
        CtimeSum,
        RtimeSum,
        TtimeSum,
        Timed,
        Qcur,
        Dcon,
        Dses,
        Intercepted,
        Chkfail,
        Chkdown,
        LastChange,
        CheckStatus,
        CheckDuration,
        CheckCode,
        LastSess,
        Eint,
        QtimeMax,
        CtimeMax,
        RtimeMax,
        TtimeMax,
        Smax,
        Qmax,
        RateMax,
        ReqRateMax,
        ConnRateMax,
        QtimeAvg,
        CtimeAvg,
        RtimeAvg,
        TtimeAvg,
        AdminState,
        AdminWeight,
        AddrSeq,
        AddrHi,
        AddrLo,
        AddrPort,
        CacheLookups,
        CacheHits,
        Reserved61,
        Reserved62,
        Reserved63,
    ]
};

impl Stat {
    /// How the master combines this word.
    pub fn kind(self) -> Kind {
        use Stat::*;
        match self {
            Scur | Qcur => Kind::Gauge,
            CheckStatus | CheckDuration | CheckCode => Kind::Last,
            LastChange | LastSess => Kind::Latest,
            QtimeMax | CtimeMax | RtimeMax | TtimeMax => Kind::Max,
            Smax | Qmax | RateMax | ReqRateMax | ConnRateMax | QtimeAvg | CtimeAvg | RtimeAvg
            | TtimeAvg | AdminState | AdminWeight | AddrSeq | AddrHi | AddrLo | AddrPort => {
                Kind::Master
            }
            Reserved61 | Reserved62 | Reserved63 => Kind::Master,
            _ => Kind::Counter,
        }
    }

    /// Whether the master sums this over live workers only (a gauge).
    pub fn is_gauge(self) -> bool {
        self.kind() == Kind::Gauge
    }

    /// Whether this is a last-value field (check results, times), not summed.
    pub fn is_last_value(self) -> bool {
        matches!(self.kind(), Kind::Last | Kind::Latest)
    }

    /// Whether this is a server's runtime state, kept across
    /// `clear counters all`.
    pub fn is_server_state(self) -> bool {
        use Stat::*;
        matches!(
            self,
            AdminState | AdminWeight | AddrSeq | AddrHi | AddrLo | AddrPort
        )
    }
}

/// What a row counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RowKind {
    /// A frontend.
    Frontend = 1,
    /// A backend.
    Backend = 2,
    /// A server of a backend.
    Server = 3,
}

/// A row's identity: kind, proxy name, server name (empty but for servers).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    /// What it counts.
    pub kind: RowKind,
    /// The frontend's or backend's name.
    pub proxy: String,
    /// The server's name (servers only).
    pub server: String,
}

impl RowKey {
    /// A frontend's row.
    pub fn frontend(name: &str) -> RowKey {
        RowKey {
            kind: RowKind::Frontend,
            proxy: name.into(),
            server: String::new(),
        }
    }

    /// A backend's row.
    pub fn backend(name: &str) -> RowKey {
        RowKey {
            kind: RowKind::Backend,
            proxy: name.into(),
            server: String::new(),
        }
    }

    /// A server's row.
    pub fn server(backend: &str, server: &str) -> RowKey {
        RowKey {
            kind: RowKind::Server,
            proxy: backend.into(),
            server: server.into(),
        }
    }
}

/// One generation's counter rows.
#[derive(Clone, Debug)]
pub struct StatsRegion {
    region: Arc<Region>,
    rows: usize,
    columns: usize,
}

/// One cell: a worker's counters for one row.
#[derive(Clone, Copy)]
pub struct Cell<'a> {
    words: &'a [AtomicU64; STAT_WORDS],
}

impl Cell<'_> {
    /// Adds `n` (by the cell's single writer).
    pub fn add(&self, s: Stat, n: u64) {
        let w = &self.words[s as usize];
        w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets a gauge or a last value (by the cell's single writer).
    pub fn set(&self, s: Stat, v: u64) {
        self.words[s as usize].store(v, Ordering::Relaxed);
    }

    /// Raises a maximum to `v` (by the cell's single writer; the master
    /// may take it at any time with [`Cell::take`], hence the RMW).
    pub fn raise(&self, s: Stat, v: u64) {
        let w = &self.words[s as usize];
        if w.load(Ordering::Relaxed) < v {
            w.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// Takes a maximum, leaving 0 (the master's harvest).
    pub fn take(&self, s: Stat) -> u64 {
        self.words[s as usize].swap(0, Ordering::Relaxed)
    }

    /// Reads a word.
    pub fn get(&self, s: Stat) -> u64 {
        self.words[s as usize].load(Ordering::Relaxed)
    }

    /// Reads word `i` (0 beyond the cell).
    pub fn word(&self, i: usize) -> u64 {
        self.words.get(i).map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Adds word `i` of `other` to this cell (the master's fold).
    pub fn add_word(&self, i: usize, v: u64) {
        if let Some(w) = self.words.get(i) {
            w.store(w.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
        }
    }

    /// Sets word `i`.
    pub fn set_word(&self, i: usize, v: u64) {
        if let Some(w) = self.words.get(i) {
            w.store(v, Ordering::Relaxed);
        }
    }
}

fn cells_offset(rows: usize) -> u64 {
    (HEADER + rows as u64 * KEY_SIZE).div_ceil(64) * 64
}

impl StatsRegion {
    /// Creates the rows `keys` with `workers` worker columns (plus the
    /// carried column 0), all zero. `ids[i]` is row `i`'s stable number
    /// (`iid` for proxies, `sid` for servers); missing ids are 0.
    pub fn create(
        seg: &Segment,
        generation: u32,
        keys: &[RowKey],
        ids: &[u32],
        workers: usize,
    ) -> io::Result<StatsRegion> {
        let rows = keys.len();
        let columns = workers + 1;
        let len = cells_offset(rows) + (rows * columns * STAT_WORDS * 8) as u64;
        let region = Region::create(
            seg,
            RegionKind::Stats,
            RegionKind::Stats.as_str(),
            len,
            STAT_WORDS as u64,
            generation,
        )?;
        let base = region.base();
        // SAFETY: the region is new, page-aligned and at least `len` bytes;
        // nobody else maps it yet, so plain writes of its header and keys
        // are published by the fork or the fd passing that follows.
        unsafe {
            let head = base as *mut u64;
            head.write(rows as u64);
            head.add(1).write(columns as u64);
            head.add(2).write(STAT_WORDS as u64);
            for (i, k) in keys.iter().enumerate() {
                let p = base.add((HEADER + i as u64 * KEY_SIZE) as usize);
                let (pn, sn) = (k.proxy.len().min(NAME - 1), k.server.len().min(NAME - 1));
                p.write(k.kind as u8);
                p.add(1).write(pn as u8);
                p.add(2).write(sn as u8);
                let id = ids.get(i).copied().unwrap_or(0).to_le_bytes();
                std::ptr::copy_nonoverlapping(id.as_ptr(), p.add(4), 4);
                std::ptr::copy_nonoverlapping(k.proxy.as_ptr(), p.add(8), pn);
                std::ptr::copy_nonoverlapping(k.server.as_ptr(), p.add(8 + NAME), sn);
            }
        }
        Ok(StatsRegion {
            region,
            rows,
            columns,
        })
    }

    /// The rows of an inherited region (`None` if it is not one, or its
    /// cells are not this build's size).
    pub fn open(region: Arc<Region>) -> Option<StatsRegion> {
        if region.kind() != RegionKind::Stats || region.fingerprint() != STAT_WORDS as u64 {
            return None;
        }
        if region.len() < HEADER {
            return None;
        }
        // SAFETY: the header's first words are u64s, 8-aligned in the data.
        let (rows, columns) = unsafe {
            (
                region.at::<AtomicU64>(0).load(Ordering::Relaxed) as usize,
                region.at::<AtomicU64>(8).load(Ordering::Relaxed) as usize,
            )
        };
        let need = cells_offset(rows)
            .checked_add((rows as u64).checked_mul((columns * STAT_WORDS * 8) as u64)?)?;
        if need > region.len() || columns == 0 {
            return None;
        }
        Some(StatsRegion {
            region,
            rows,
            columns,
        })
    }

    /// The region, to hand over.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The generation it belongs to.
    pub fn generation(&self) -> u32 {
        self.region.tag()
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (workers + 1).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Row `row`'s key.
    pub fn key(&self, row: usize) -> Option<RowKey> {
        if row >= self.rows {
            return None;
        }
        let base = self.region.base();
        // SAFETY: the key of an existing row lies in the data; its bytes
        // were written before the region was published and never change.
        let (kind, proxy, server) = unsafe {
            let p = base.add((HEADER + row as u64 * KEY_SIZE) as usize);
            let kind = p.read();
            let (pn, sn) = (
                (p.add(1).read() as usize).min(NAME - 1),
                (p.add(2).read() as usize).min(NAME - 1),
            );
            let proxy = std::slice::from_raw_parts(p.add(8), pn).to_vec();
            let server = std::slice::from_raw_parts(p.add(8 + NAME), sn).to_vec();
            (kind, proxy, server)
        };
        let kind = match kind {
            1 => RowKind::Frontend,
            2 => RowKind::Backend,
            3 => RowKind::Server,
            _ => return None,
        };
        Some(RowKey {
            kind,
            proxy: String::from_utf8_lossy(&proxy).into_owned(),
            server: String::from_utf8_lossy(&server).into_owned(),
        })
    }

    /// Row `row`'s stable number (0 if none was given).
    pub fn id(&self, row: usize) -> u32 {
        if row >= self.rows {
            return 0;
        }
        let mut b = [0u8; 4];
        // SAFETY: like `key`: four bytes of an existing row's key, written
        // before publication.
        unsafe {
            let p = self
                .region
                .base()
                .add((HEADER + row as u64 * KEY_SIZE) as usize);
            std::ptr::copy_nonoverlapping(p.add(4), b.as_mut_ptr(), 4);
        }
        u32::from_le_bytes(b)
    }

    /// Every row's key, by key: one pass, for lookups of many rows.
    pub fn index(&self) -> std::collections::HashMap<RowKey, usize> {
        (0..self.rows)
            .filter_map(|r| Some((self.key(r)?, r)))
            .collect()
    }

    /// The row of `key`, if there is one.
    pub fn find(&self, key: &RowKey) -> Option<usize> {
        (0..self.rows).find(|&r| self.key(r).as_ref() == Some(key))
    }

    /// Row `row`'s cell of column `col` (0: carried; worker `id`: column `id`).
    pub fn cell(&self, row: usize, col: usize) -> Option<Cell<'_>> {
        if row >= self.rows || col >= self.columns {
            return None;
        }
        let off = cells_offset(self.rows) + ((row * self.columns + col) * STAT_WORDS * 8) as u64;
        // SAFETY: the cell lies in the data (checked at create/open), is
        // 8-aligned, and made of atomics valid when zeroed.
        let words = unsafe { self.region.at::<[AtomicU64; STAT_WORDS]>(off) };
        Some(Cell { words })
    }

    /// The sum of row `row` over columns `cols` into `out` (gauges and last
    /// values included: the caller picks which to keep).
    pub fn sum(&self, row: usize, cols: std::ops::Range<usize>, out: &mut [u64; STAT_WORDS]) {
        for col in cols {
            if let Some(c) = self.cell(row, col) {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = o.wrapping_add(c.word(i));
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_keys_and_cells_their_writer() {
        let seg = Segment::create().unwrap();
        let keys = vec![
            RowKey::frontend("web"),
            RowKey::backend("app"),
            RowKey::server("app", "s1"),
        ];
        let s = StatsRegion::create(&seg, 3, &keys, &[7, 8, 9], 2).unwrap();
        assert_eq!((s.rows(), s.columns(), s.generation()), (3, 3, 3));
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(s.key(i).as_ref(), Some(k));
            assert_eq!(s.find(k), Some(i));
        }
        // SAFETY: the child only adds to its cell and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let c = s.cell(2, 1).unwrap();
            for _ in 0..100 {
                c.add(Stat::Stot, 1);
            }
            // SAFETY: leave without the test harness's destructors.
            unsafe { libc::_exit(0) };
        }
        s.cell(2, 2).unwrap().add(Stat::Stot, 5);
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        let mut sum = [0; STAT_WORDS];
        s.sum(2, 0..s.columns(), &mut sum);
        assert_eq!(sum[Stat::Stot as usize], 105);
        assert!(s.cell(3, 0).is_none() && s.cell(0, 3).is_none());
        assert_eq!((s.id(0), s.id(2), s.id(3)), (7, 9, 0));
        let again = StatsRegion::open(s.region().clone()).unwrap();
        assert_eq!(again.key(1), Some(RowKey::backend("app")));
    }
}
