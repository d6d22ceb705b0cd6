//! The worker's use of the shared stick tables: tracking rules, rule
//! conditions on stick counters, and persistence (`stick = { on = "src" }`).
//!
//! * `tcp-request connection` rules run on accept, in order: `track-scN`
//!   finds or creates the client's entry, raises `conn_cnt`, `conn_rate` and
//!   (through a tracking record, see `corral_shm::track`) `conn_cur`; later
//!   rules see those values, so `reject if { sc0_conn_cnt gt 50 }` rejects the
//!   51st connection of a source, as HAProxy does (rejected connections count).
//! * When the connection ends, whichever way, the byte counters are added and
//!   the tracking is released (`conn_cur` comes down).
//! * Persistence: the first server a client reaches is stored in its entry
//!   (`server_id`, with a hash of the server's name so a reordered backend
//!   after a reload does not send clients to the wrong server); later
//!   connections go to that server while it is usable.

use std::net::SocketAddr;

use corral_config::{AclRef, Config, Fetch, RuleSet, ScData, TcpAction};
use corral_shm::freq::now_ms;
use corral_shm::table::DataTypeName;
use corral_shm::track::{Tracked, Tracker, Tracks};
use corral_shm::{EntryRef, Segment, StickTable};

use crate::rules::{applies, Samples};

/// Shared state a worker gets from the master.
pub struct Shared {
    /// The segment.
    pub seg: &'static Segment,
    /// Stick tables, in `Config::tables` order.
    pub tables: Vec<StickTable<'static>>,
    /// HTTP caches, in `Config::caches` order.
    pub caches: Vec<corral_shm::cache::Cache<'static>>,
    /// This generation's tracking records.
    pub tracks: Tracks,
    /// This worker's array in `tracks` (its id - 1).
    pub worker: usize,
    /// This process's epoch slot (also its lock-owner id).
    pub slot: usize,
}

/// Stick counters of one session: sc0, sc1, sc2.
#[derive(Default, Debug)]
pub struct StickCounters {
    tracked: [Option<Tracked>; 3],
}

impl StickCounters {
    /// Whether slot `slot` tracks an entry.
    pub fn is_tracked(&self, slot: u8) -> bool {
        self.tracked.get(slot as usize).is_some_and(Option::is_some)
    }
}

/// What a `track-scN` key is, for the table's type.
#[derive(Debug)]
pub enum TrackValue<'a> {
    /// An address (ip and ipv6 tables).
    Addr(std::net::IpAddr),
    /// Bytes (string tables; longer keys are cut to the table's key length).
    Bytes(&'a [u8]),
}

/// Expiry work per table per loop turn (entries looked at).
const EXPIRE_BUDGET: u32 = 64;

/// What the tcp-request connection rules decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection.
    Accept,
    /// Close it now.
    Reject,
}

struct ConnSamples<'a> {
    peer: SocketAddr,
    local_port: u16,
    entries: [Option<EntryRef<'a>>; 3],
    now: u32,
}

fn data_name(what: ScData) -> DataTypeName {
    match what {
        ScData::ConnCur => DataTypeName::ConnCur,
        ScData::ConnCnt => DataTypeName::ConnCnt,
        ScData::ConnRate => DataTypeName::ConnRate,
        ScData::HttpReqCnt => DataTypeName::HttpReqCnt,
        ScData::HttpReqRate => DataTypeName::HttpReqRate,
        ScData::HttpErrCnt => DataTypeName::HttpErrCnt,
        ScData::HttpErrRate => DataTypeName::HttpErrRate,
        ScData::Gpc0 => DataTypeName::Gpc0,
        ScData::Gpc0Rate => DataTypeName::Gpc0Rate,
        ScData::BytesInCnt => DataTypeName::BytesInCnt,
        ScData::BytesOutCnt => DataTypeName::BytesOutCnt,
    }
}

impl Samples for ConnSamples<'_> {
    fn src(&self) -> std::net::IpAddr {
        self.peer.ip()
    }
    fn dst_port(&self) -> u16 {
        self.local_port
    }
    fn path(&self) -> Option<&str> {
        None
    }
    fn url(&self) -> Option<&str> {
        None
    }
    fn method(&self) -> Option<&str> {
        None
    }
    fn header(&self, _name: &str) -> Option<&str> {
        None
    }
    fn sc_value(&self, slot: u8, what: ScData) -> Option<i64> {
        let e = self.entries.get(slot as usize)?.as_ref()?;
        e.value(data_name(what), self.now)
            .map(|v| v.min(i64::MAX as u64) as i64)
    }
}

/// The worker's side of the shared tables.
pub struct Sticky {
    shared: Shared,
    tracker: Tracker,
    /// Per frontend: whether any rule reads `dst_port` (a getsockname per
    /// connection is paid only then).
    dst_port: Vec<bool>,
}

/// Whether any ACL of the rule set, named or anonymous, fetches `dst_port`.
fn reads_dst_port(rs: &RuleSet) -> bool {
    let named = rs
        .acls
        .iter()
        .flat_map(|a| &a.tests)
        .any(|t| t.fetch == Fetch::DstPort);
    let conds = rs
        .tcp_connection
        .iter()
        .filter_map(|r| r.cond.as_ref())
        .chain(rs.use_backend.iter().filter_map(|u| u.cond.as_ref()))
        .chain(rs.http_request.iter().filter_map(|r| r.cond.as_ref()))
        .chain(rs.http_response.iter().filter_map(|r| r.cond.as_ref()));
    named
        || conds
            .flat_map(|c| c.or_terms.iter().flatten())
            .any(|t| matches!(&t.acl, AclRef::Anonymous(test) if test.fetch == Fetch::DstPort))
}

impl Sticky {
    /// Takes the shared state; the process's tracking records start clear.
    pub fn new(cfg: &Config, shared: Shared) -> Sticky {
        shared.tracks.reset(shared.worker);
        let tracker = Tracker::new(shared.tracks.clone(), shared.worker);
        let dst_port = cfg
            .frontends
            .iter()
            .map(|f| reads_dst_port(&f.ruleset))
            .collect();
        Sticky {
            shared,
            tracker,
            dst_port,
        }
    }

    fn entries(&self, sc: &StickCounters) -> [Option<EntryRef<'_>>; 3] {
        std::array::from_fn(|i| {
            sc.tracked[i].map(|t| self.shared.tables[t.table as usize].entry_at(t.shard, t.slot))
        })
    }

    /// Runs frontend `fe`'s tcp-request connection rules for a new connection.
    pub fn tcp_connection(
        &mut self,
        cfg: &Config,
        fe: usize,
        peer: SocketAddr,
        local_port: impl Fn() -> u16,
        sc: &mut StickCounters,
    ) -> Verdict {
        let rs = &cfg.frontends[fe].ruleset;
        if rs.tcp_connection.is_empty() {
            return Verdict::Accept;
        }
        let now = now_ms();
        let port = if self.dst_port[fe] { local_port() } else { 0 };
        for rule in &rs.tcp_connection {
            let holds = {
                let s = ConnSamples {
                    peer,
                    local_port: port,
                    entries: self.entries(sc),
                    now,
                };
                applies(rs, rule.cond.as_ref(), &s)
            };
            if !holds {
                continue;
            }
            match &rule.action {
                TcpAction::Accept => return Verdict::Accept,
                TcpAction::Reject => return Verdict::Reject,
                TcpAction::Track(t) => {
                    let slot = t.slot as usize;
                    if sc.tracked[slot].is_none() {
                        sc.tracked[slot] = self.track(t.table, peer, now);
                    }
                }
                TcpAction::IncGpc0 { slot } => {
                    if let Some(e) = &self.entries(sc)[*slot as usize] {
                        e.add(DataTypeName::Gpc0, 1);
                        e.add_rate(DataTypeName::Gpc0Rate, now, 1);
                        e.touch(now);
                    }
                }
            }
        }
        Verdict::Accept
    }

    fn track(&mut self, table: usize, peer: SocketAddr, now: u32) -> Option<Tracked> {
        let t = &self.shared.tables[table];
        let mut key = [0u8; 16];
        let n = t.encode_addr(peer.ip(), &mut key)?;
        let guard = self.shared.seg.epoch().pin(self.shared.slot);
        let (tracked, e) =
            self.tracker
                .track(table as u16, t, &guard, self.shared.slot, &key[..n], now)?;
        e.add(DataTypeName::ConnCnt, 1);
        e.add_rate(DataTypeName::ConnRate, now, 1);
        Some(tracked)
    }

    /// Ends every tracking of a session, adding its byte counts.
    pub fn release(&mut self, sc: &mut StickCounters, bytes_in: u64, bytes_out: u64) {
        let now = now_ms();
        for t in sc.tracked.iter_mut().filter_map(Option::take) {
            let table = &self.shared.tables[t.table as usize];
            let e = table.entry_at(t.shard, t.slot);
            add_bytes(&e, now, bytes_in, bytes_out);
            e.touch(now);
            self.tracker.untrack(table, t);
        }
    }

    /// The server a client sticks to in backend `be`, if any and still configured.
    pub fn sticky_server(&self, cfg: &Config, be: usize, peer: SocketAddr) -> Option<usize> {
        let stick = cfg.backends[be].stick.as_ref()?;
        let t = self.table(cfg, &stick.table)?;
        let mut key = [0u8; 16];
        let n = t.encode_addr(peer.ip(), &mut key)?;
        let guard = self.shared.seg.epoch().pin(self.shared.slot);
        let v = t
            .lookup(&guard, &key[..n], now_ms())?
            .value(DataTypeName::ServerId, now_ms())?;
        decode_server(cfg, be, v)
    }

    /// Records that the client reached server `srv` of backend `be`.
    pub fn learn_server(&self, cfg: &Config, be: usize, srv: usize, peer: SocketAddr) {
        let Some(stick) = cfg.backends[be].stick.as_ref() else {
            return;
        };
        let Some(t) = self.table(cfg, &stick.table) else {
            return;
        };
        let mut key = [0u8; 16];
        let Some(n) = t.encode_addr(peer.ip(), &mut key) else {
            return;
        };
        let now = now_ms();
        let guard = self.shared.seg.epoch().pin(self.shared.slot);
        if let Some(e) = t.get_or_create(&guard, self.shared.slot, &key[..n], now) {
            if let Some(c) = e.counter(DataTypeName::ServerId) {
                c.store(
                    encode_server(cfg, be, srv),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
    }

    fn table(&self, cfg: &Config, name: &str) -> Option<&StickTable<'static>> {
        let i = cfg.tables.iter().position(|t| t.name == name)?;
        self.shared.tables.get(i)
    }

    /// The backend chosen by frontend `fe`'s `use_backend` rules, if one applies.
    pub fn choose_backend(
        &self,
        cfg: &Config,
        fe: usize,
        peer: SocketAddr,
        local_port: impl Fn() -> u16,
        sc: &StickCounters,
    ) -> Option<usize> {
        let rs = &cfg.frontends[fe].ruleset;
        if rs.use_backend.is_empty() {
            return None;
        }
        let s = ConnSamples {
            peer,
            local_port: if self.dst_port[fe] { local_port() } else { 0 },
            entries: self.entries(sc),
            now: now_ms(),
        };
        rs.use_backend
            .iter()
            .find(|u| applies(rs, u.cond.as_ref(), &s))
            .map(|u| u.backend)
    }

    /// Counter `what` of the entry tracked in `sc`'s slot `slot`.
    pub fn sc_value(&self, sc: &StickCounters, slot: u8, what: ScData) -> Option<i64> {
        let t = sc.tracked.get(slot as usize)?.as_ref()?;
        let e = self.shared.tables[t.table as usize].entry_at(t.shard, t.slot);
        e.value(data_name(what), now_ms())
            .map(|v| v.min(i64::MAX as u64) as i64)
    }

    /// Whether frontend `fe`'s rules read `dst_port` (worth a getsockname).
    pub fn reads_dst_port(&self, fe: usize) -> bool {
        self.dst_port.get(fe).copied().unwrap_or(false)
    }

    /// `http-request track-scN`: tracks `key` in `table` in slot `slot`
    /// unless the slot tracks something already; the request counts on the
    /// new entry. Returns whether it tracked now (the caller releases it at
    /// the end of the request).
    pub fn track_request(
        &mut self,
        sc: &mut StickCounters,
        slot: u8,
        table: usize,
        key: TrackValue<'_>,
    ) -> bool {
        let slot = slot as usize;
        if slot >= 3 || sc.tracked[slot].is_some() {
            return false;
        }
        let t = &self.shared.tables[table];
        let mut buf = [0u8; 16];
        let bytes: &[u8] = match key {
            TrackValue::Addr(ip) => match t.encode_addr(ip, &mut buf) {
                Some(n) => &buf[..n],
                None => return false,
            },
            TrackValue::Bytes(b) => &b[..b.len().min(t.layout().key_len as usize)],
        };
        if bytes.is_empty() {
            return false;
        }
        let now = now_ms();
        let guard = self.shared.seg.epoch().pin(self.shared.slot);
        let Some((tracked, e)) =
            self.tracker
                .track(table as u16, t, &guard, self.shared.slot, bytes, now)
        else {
            return false;
        };
        e.add(DataTypeName::HttpReqCnt, 1);
        e.add_rate(DataTypeName::HttpReqRate, now, 1);
        e.touch(now);
        sc.tracked[slot] = Some(tracked);
        true
    }

    /// A new request on a connection: it counts on every entry tracked so
    /// far (`http_req_cnt`, `http_req_rate`).
    pub fn count_request(&self, sc: &StickCounters) {
        self.add_http(sc, DataTypeName::HttpReqCnt, DataTypeName::HttpReqRate);
    }

    /// A request that ended in an error (a 4xx, or refused as invalid):
    /// `http_err_cnt`, `http_err_rate` on every tracked entry.
    pub fn count_error(&self, sc: &StickCounters) {
        self.add_http(sc, DataTypeName::HttpErrCnt, DataTypeName::HttpErrRate);
    }

    fn add_http(&self, sc: &StickCounters, cnt: DataTypeName, rate: DataTypeName) {
        let now = now_ms();
        for e in self.entries(sc).into_iter().flatten() {
            e.add(cnt, 1);
            e.add_rate(rate, now, 1);
            e.touch(now);
        }
    }

    /// `sc-inc-gpc0(N)` on the entry tracked in slot `slot`.
    pub fn inc_gpc0(&self, sc: &StickCounters, slot: u8) {
        if let Some(e) = self.entries(sc).get(slot as usize).and_then(Option::as_ref) {
            let now = now_ms();
            e.add(DataTypeName::Gpc0, 1);
            e.add_rate(DataTypeName::Gpc0Rate, now, 1);
            e.touch(now);
        }
    }

    /// Adds bytes that flowed to every tracked entry (`bytes_in_cnt`,
    /// `bytes_out_cnt` and their rates), as they flow.
    pub fn add_bytes(&self, sc: &StickCounters, bytes_in: u64, bytes_out: u64) {
        if bytes_in == 0 && bytes_out == 0 {
            return;
        }
        let now = now_ms();
        for e in self.entries(sc).into_iter().flatten() {
            add_bytes(&e, now, bytes_in, bytes_out);
        }
    }

    /// The entries a connection tracks, by table name and key, to travel
    /// with it to another worker.
    pub fn tracked_keys(&self, sc: &StickCounters) -> Vec<crate::handoff::wire::TrackedKey> {
        sc.tracked
            .iter()
            .enumerate()
            .filter_map(|(slot, t)| {
                let t = t.as_ref()?;
                let table = &self.shared.tables[t.table as usize];
                let key = table.entry_at(t.shard, t.slot).key_copy()?;
                Some(crate::handoff::wire::TrackedKey {
                    slot: slot as u8,
                    table: table.name().to_string(),
                    key,
                })
            })
            .collect()
    }

    /// Tracks the entries a handed-over connection tracked in its old
    /// worker: `conn_cur` counts it here (the old worker releases its own
    /// tracking once this one holds), `conn_cnt` does not count it again.
    pub fn adopt(
        &mut self,
        cfg: &Config,
        sc: &mut StickCounters,
        keys: &[crate::handoff::wire::TrackedKey],
    ) {
        let now = now_ms();
        for k in keys {
            let slot = k.slot as usize;
            if slot >= 3 || sc.tracked[slot].is_some() {
                continue;
            }
            let Some(idx) = cfg.tables.iter().position(|t| t.name == k.table) else {
                continue;
            };
            let t = &self.shared.tables[idx];
            if k.key.is_empty() || k.key.len() > t.layout().key_len as usize {
                continue;
            }
            let guard = self.shared.seg.epoch().pin(self.shared.slot);
            if let Some((tracked, e)) =
                self.tracker
                    .track(idx as u16, t, &guard, self.shared.slot, &k.key, now)
            {
                e.touch(now);
                sc.tracked[slot] = Some(tracked);
            }
        }
    }

    /// Ends the tracking of slot `slot` only (a request's own tracking).
    pub fn release_slot(&mut self, sc: &mut StickCounters, slot: u8) {
        if let Some(t) = sc.tracked.get_mut(slot as usize).and_then(Option::take) {
            let table = &self.shared.tables[t.table as usize];
            table.entry_at(t.shard, t.slot).touch(now_ms());
            self.tracker.untrack(table, t);
        }
    }

    /// One loop turn's share of expiry on every table.
    pub fn maintain(&self) {
        let now = now_ms();
        for t in &self.shared.tables {
            t.expire_step(self.shared.slot, now, EXPIRE_BUDGET);
        }
    }
}

fn add_bytes(e: &EntryRef<'_>, now: u32, bytes_in: u64, bytes_out: u64) {
    e.add(DataTypeName::BytesInCnt, bytes_in as i64);
    e.add(DataTypeName::BytesOutCnt, bytes_out as i64);
    e.add_rate(
        DataTypeName::BytesInRate,
        now,
        bytes_in.min(u32::MAX as u64) as u32,
    );
    e.add_rate(
        DataTypeName::BytesOutRate,
        now,
        bytes_out.min(u32::MAX as u64) as u32,
    );
}

fn name_hash(name: &str) -> u64 {
    corral_shm::table::hash_bytes(name.as_bytes()) & 0xFFFF_FFFF
}

/// `server_id` as stored: name hash (high 32 bits) | server index + 1.
fn encode_server(cfg: &Config, be: usize, srv: usize) -> u64 {
    name_hash(&cfg.backends[be].servers[srv].name) << 32 | (srv as u64 + 1)
}

fn decode_server(cfg: &Config, be: usize, v: u64) -> Option<usize> {
    let servers = &cfg.backends[be].servers;
    let (hash, idx) = (v >> 32, (v & 0xFFFF_FFFF) as usize);
    if idx == 0 {
        return None;
    }
    if servers
        .get(idx - 1)
        .is_some_and(|s| name_hash(&s.name) == hash)
    {
        return Some(idx - 1);
    }
    servers.iter().position(|s| name_hash(&s.name) == hash)
}
