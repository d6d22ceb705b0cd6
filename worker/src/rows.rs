//! This worker's cells of the proxy counter rows (see `corral_shm::stats`):
//! what `show stat` sums. Each method is a few plain stores into cells only
//! this worker writes.

use corral_config::Config;
use corral_shm::stats::{Cell, RowKey, Stat, StatsRegion};

/// The rows of this generation, and which are this worker's frontends,
/// backends and servers.
pub struct Rows {
    stats: Option<StatsRegion>,
    column: usize,
    fe: Vec<Option<usize>>,
    be: Vec<Option<usize>>,
    srv: Vec<Vec<Option<usize>>>,
}

impl Rows {
    /// Finds this configuration's rows in `stats` (by name); worker `id`
    /// writes column `id`.
    pub fn new(cfg: &Config, stats: Option<StatsRegion>, id: usize) -> Rows {
        let find = |k: RowKey| stats.as_ref().and_then(|s| s.find(&k));
        let fe = cfg
            .frontends
            .iter()
            .map(|f| find(RowKey::frontend(&f.name)))
            .collect();
        let be = cfg
            .backends
            .iter()
            .map(|b| find(RowKey::backend(&b.name)))
            .collect();
        let srv = cfg
            .backends
            .iter()
            .map(|b| {
                b.servers
                    .iter()
                    .map(|s| find(RowKey::server(&b.name, &s.name)))
                    .collect()
            })
            .collect();
        Rows {
            stats,
            column: id,
            fe,
            be,
            srv,
        }
    }

    fn cell(&self, row: Option<usize>) -> Option<Cell<'_>> {
        self.stats.as_ref()?.cell(row?, self.column)
    }

    fn fe(&self, fe: usize) -> Option<Cell<'_>> {
        self.cell(self.fe.get(fe).copied().flatten())
    }

    fn be(&self, be: usize) -> Option<Cell<'_>> {
        self.cell(self.be.get(be).copied().flatten())
    }

    fn srv(&self, be: usize, srv: usize) -> Option<Cell<'_>> {
        self.cell(self.srv.get(be).and_then(|s| s.get(srv)).copied().flatten())
    }

    /// Server `srv` of `be`'s column-0 cell: the runtime state the master
    /// sets (see `corral_shm::server_state`).
    pub fn server_state(&self, be: usize, srv: usize) -> Option<Cell<'_>> {
        let row = self
            .srv
            .get(be)
            .and_then(|s| s.get(srv))
            .copied()
            .flatten()?;
        self.stats.as_ref()?.cell(row, 0)
    }

    fn each(&self, be: Option<usize>, srv: Option<usize>, f: impl Fn(Cell<'_>)) {
        if let Some(be) = be {
            if let Some(c) = self.be(be) {
                f(c);
            }
            if let Some(c) = srv.and_then(|s| self.srv(be, s)) {
                f(c);
            }
        }
    }

    /// A connection accepted by frontend `fe` (now `cur` open).
    pub fn frontend_session(&self, fe: usize, cur: u32) {
        if let Some(c) = self.fe(fe) {
            c.add(Stat::Stot, 1);
            c.set(Stat::Scur, u64::from(cur));
        }
    }

    /// A connection of frontend `fe` ended (now `cur` open).
    pub fn frontend_left(&self, fe: usize, cur: u32) {
        if let Some(c) = self.fe(fe) {
            c.set(Stat::Scur, u64::from(cur));
        }
    }

    /// A connection closed by `tcp-request connection reject`.
    pub fn frontend_denied_conn(&self, fe: usize) {
        if let Some(c) = self.fe(fe) {
            c.add(Stat::Dcon, 1);
        }
    }

    /// An HTTP request received by frontend `fe`.
    pub fn frontend_request(&self, fe: usize) {
        if let Some(c) = self.fe(fe) {
            c.add(Stat::ReqTot, 1);
        }
    }

    /// A request refused as invalid or timed out (its answer's status is
    /// counted with the other responses).
    pub fn frontend_bad_request(&self, fe: usize) {
        if let Some(c) = self.fe(fe) {
            c.add(Stat::Ereq, 1);
        }
    }

    /// A request denied by a rule.
    pub fn frontend_denied(&self, fe: usize) {
        if let Some(c) = self.fe(fe) {
            c.add(Stat::Dreq, 1);
        }
    }

    /// A request of frontend `fe` looked up in backend `be`'s cache, and
    /// whether it was answered from it.
    pub fn cache_lookup(&self, fe: usize, be: usize, hit: bool) {
        for c in [self.fe(fe), self.be(be)].into_iter().flatten() {
            c.add(Stat::CacheLookups, 1);
            if hit {
                c.add(Stat::CacheHits, 1);
            }
        }
    }

    /// A stream (TCP connection, or HTTP request) sent to backend `be`.
    pub fn backend_session(&self, be: usize) {
        if let Some(c) = self.be(be) {
            c.add(Stat::Stot, 1);
        }
    }

    /// A connection opened to server `srv` of `be` (it was selected).
    pub fn connect(&self, be: usize, srv: usize) {
        self.each(Some(be), Some(srv), |c| {
            c.add(Stat::Connect, 1);
        });
        self.picked(be, srv);
    }

    /// A kept server connection serves another request.
    pub fn reuse(&self, be: usize, srv: usize) {
        self.each(Some(be), Some(srv), |c| {
            c.add(Stat::Reuse, 1);
        });
        self.picked(be, srv);
    }

    /// Server `srv` of `be` got a stream: picks and the last session's time.
    fn picked(&self, be: usize, srv: usize) {
        let now = unix_secs();
        if let Some(c) = self.srv(be, srv) {
            c.add(Stat::Stot, 1);
            c.add(Stat::Lbtot, 1);
            c.set(Stat::LastSess, now);
        }
        if let Some(c) = self.be(be) {
            c.add(Stat::Lbtot, 1);
            c.set(Stat::LastSess, now);
        }
    }

    /// A connect to server `srv` of `be` failed.
    pub fn connect_error(&self, be: usize, srv: usize) {
        self.each(Some(be), Some(srv), |c| c.add(Stat::Econ, 1));
    }

    /// A connect is retried.
    pub fn retry(&self, be: usize) {
        if let Some(c) = self.be(be) {
            c.add(Stat::Wretr, 1);
        }
    }

    /// A response that could not be used, or was cut.
    pub fn response_error(&self, be: Option<usize>, srv: Option<usize>) {
        self.each(be, srv, |c| c.add(Stat::Eresp, 1));
    }

    /// A transfer the client aborted.
    pub fn client_abort(&self, _fe: usize, be: Option<usize>, srv: Option<usize>) {
        self.each(be, srv, |c| c.add(Stat::CliAbrt, 1));
    }

    /// A transfer the server aborted.
    pub fn server_abort(&self, be: Option<usize>, srv: Option<usize>) {
        self.each(be, srv, |c| c.add(Stat::SrvAbrt, 1));
    }

    /// A response (or corral's answer) with `status` for a request of `fe`.
    pub fn response(&self, fe: usize, be: Option<usize>, srv: Option<usize>, status: Option<u16>) {
        let s = hrsp(status);
        if let Some(c) = self.fe(fe) {
            c.add(s, 1);
        }
        self.each(be, srv, |c| c.add(s, 1));
    }

    /// Bytes of a finished stream through frontend `fe`.
    pub fn frontend_bytes(&self, fe: usize, bytes_in: u64, bytes_out: u64) {
        if let Some(c) = self.fe(fe) {
            c.add(Stat::Bin, bytes_in);
            c.add(Stat::Bout, bytes_out);
        }
    }

    /// Bytes of a finished stream through backend `be` (and its server).
    pub fn backend_bytes(&self, be: usize, srv: Option<usize>, bytes_in: u64, bytes_out: u64) {
        self.each(Some(be), srv, |c| {
            c.add(Stat::Bin, bytes_in);
            c.add(Stat::Bout, bytes_out);
        });
    }

    /// A TCP stream's total time, ms.
    pub fn backend_time(&self, be: usize, srv: Option<usize>, total: i64) {
        self.each(Some(be), srv, |c| {
            c.add(Stat::TtimeSum, total.max(0) as u64);
            c.add(Stat::Timed, 1);
            c.raise(Stat::TtimeMax, total.max(0) as u64);
        });
    }

    /// An HTTP stream's queue, connect, response and total times, ms.
    pub fn times(&self, be: usize, srv: Option<usize>, q: i64, ct: i64, r: i64, t: i64) {
        self.each(Some(be), srv, |c| {
            c.add(Stat::QtimeSum, q.max(0) as u64);
            c.add(Stat::CtimeSum, ct.max(0) as u64);
            c.add(Stat::RtimeSum, r.max(0) as u64);
            c.add(Stat::TtimeSum, t.max(0) as u64);
            c.add(Stat::Timed, 1);
            c.raise(Stat::QtimeMax, q.max(0) as u64);
            c.raise(Stat::CtimeMax, ct.max(0) as u64);
            c.raise(Stat::RtimeMax, r.max(0) as u64);
            c.raise(Stat::TtimeMax, t.max(0) as u64);
        });
    }

    /// Current streams of backend `be` and of its server `srv` (gauges),
    /// and queued requests.
    pub fn backend_gauges(&self, be: usize, cur: u32, queued: usize) {
        if let Some(c) = self.be(be) {
            c.set(Stat::Scur, u64::from(cur));
            c.set(Stat::Qcur, queued as u64);
        }
    }

    /// Current streams of server `srv` of `be` (gauge).
    pub fn server_gauge(&self, be: usize, srv: usize, cur: u32) {
        if let Some(c) = self.srv(be, srv) {
            c.set(Stat::Scur, u64::from(cur));
        }
    }

    /// A health check of server `srv` ended: failed or not, a transition
    /// to DOWN or not, its duration.
    pub fn check(
        &self,
        be: usize,
        srv: usize,
        ok: bool,
        went_down: bool,
        changed_at: Option<u64>,
        duration_ms: u64,
    ) {
        if let Some(c) = self.srv(be, srv) {
            c.set(Stat::CheckDuration, duration_ms);
            c.set(Stat::CheckStatus, u64::from(ok) + 1);
            if !ok {
                c.add(Stat::Chkfail, 1);
            }
            if went_down {
                c.add(Stat::Chkdown, 1);
            }
            if let Some(t) = changed_at {
                c.set(Stat::LastChange, t);
            }
        }
    }
}

/// Seconds since the epoch (`lastsess`).
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `hrsp_*` counter of a status.
fn hrsp(status: Option<u16>) -> Stat {
    match status {
        Some(100..=199) => Stat::Hrsp1xx,
        Some(200..=299) => Stat::Hrsp2xx,
        Some(300..=399) => Stat::Hrsp3xx,
        Some(400..=499) => Stat::Hrsp4xx,
        Some(500..=599) => Stat::Hrsp5xx,
        _ => Stat::HrspOther,
    }
}
