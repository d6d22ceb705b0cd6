//! `show stat`: HAProxy 2.6's CSV over the counter rows in the segment
//! (`corral_shm::stats`), summed over workers. Rows come in HAProxy's
//! order: each frontend's FRONTEND row, then per backend its servers and
//! its BACKEND row. Every row has the header's field count and a trailing
//! comma; fields corral does not know stay empty, as HAProxy leaves them
//! empty where they do not apply.

use std::time::Instant;

use corral_config::{Balance, Config, Mode};
use corral_shm::flags::SharedFlags;
use corral_shm::server_state::{self, ServerRuntime};
use corral_shm::stats::{RowKey, Stat};

use super::history::History;
use super::totals::{Sum, Totals};

/// HAProxy 2.6's static columns, in order, up to `-` (as `show stat`
/// prints them on Debian's haproxy 2.6.12).
pub const COLUMNS: &[&str] = &[
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
    "agg_server_status",
    "agg_server_check_status",
    "agg_check_status",
    "-",
];

/// What a row describes (HAProxy's `type` column and typed output prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjType {
    /// A frontend (`type` 0).
    Frontend,
    /// A backend (`type` 1).
    Backend,
    /// A server (`type` 2).
    Server,
}

impl ObjType {
    /// The `show stat` filter bit (1 frontends, 2 backends, 4 servers).
    pub fn bit(self) -> u32 {
        match self {
            ObjType::Frontend => 1,
            ObjType::Backend => 2,
            ObjType::Server => 4,
        }
    }
}

/// One row of `show stat`: its identity and its fields, by column.
#[derive(Clone, Debug)]
pub struct StatRow {
    /// What it is.
    pub obj: ObjType,
    /// The proxy's stable id.
    pub iid: u32,
    /// The server's stable id within its backend (0 for proxies).
    pub sid: u32,
    /// One string per [`COLUMNS`] entry, empty where nothing applies.
    pub fields: Vec<String>,
}

impl StatRow {
    fn new(obj: ObjType, iid: u32, sid: u32) -> StatRow {
        let mut r = StatRow {
            obj,
            iid,
            sid,
            fields: vec![String::new(); COLUMNS.len()],
        };
        r.set("pid", 1);
        r.set("iid", iid);
        r.set("sid", sid);
        r.set(
            "type",
            match obj {
                ObjType::Frontend => 0,
                ObjType::Backend => 1,
                ObjType::Server => 2,
            },
        );
        r
    }

    /// The field of column `col` ("" if none).
    pub fn get(&self, col: &str) -> &str {
        column(col).map_or("", |i| self.fields[i].as_str())
    }

    fn set(&mut self, col: &str, v: impl ToString) {
        if let Some(i) = column(col) {
            self.fields[i] = v.to_string();
        }
    }

    fn counters(&mut self, s: &Sum, http: bool) {
        self.set("qcur", s.get(Stat::Qcur));
        self.set("qmax", s.get(Stat::Qmax));
        self.set("scur", s.get(Stat::Scur));
        self.set("smax", s.get(Stat::Smax));
        self.set("stot", s.get(Stat::Stot));
        self.set("bin", s.get(Stat::Bin));
        self.set("bout", s.get(Stat::Bout));
        self.set("dresp", s.get(Stat::Dresp));
        self.set("cli_abrt", s.get(Stat::CliAbrt));
        self.set("srv_abrt", s.get(Stat::SrvAbrt));
        self.set("rate_max", s.get(Stat::RateMax));
        self.set("eint", s.get(Stat::Eint));
        if http {
            self.set("hrsp_1xx", s.get(Stat::Hrsp1xx));
            self.set("hrsp_2xx", s.get(Stat::Hrsp2xx));
            self.set("hrsp_3xx", s.get(Stat::Hrsp3xx));
            self.set("hrsp_4xx", s.get(Stat::Hrsp4xx));
            self.set("hrsp_5xx", s.get(Stat::Hrsp5xx));
            self.set("hrsp_other", s.get(Stat::HrspOther));
        }
    }

    /// What servers and backends both have: picks, requests, the time
    /// averages and maxima, connections opened and reused, the last
    /// session.
    fn balanced(&mut self, s: &Sum, http: bool, now_unix: u64) {
        self.set("lbtot", s.get(Stat::Lbtot));
        if http {
            self.set("req_tot", s.get(Stat::Stot));
        }
        self.set("qtime", s.get(Stat::QtimeAvg));
        self.set("ctime", s.get(Stat::CtimeAvg));
        self.set("rtime", s.get(Stat::RtimeAvg));
        self.set("ttime", s.get(Stat::TtimeAvg));
        self.set("qtime_max", s.get(Stat::QtimeMax));
        self.set("ctime_max", s.get(Stat::CtimeMax));
        self.set("rtime_max", s.get(Stat::RtimeMax));
        self.set("ttime_max", s.get(Stat::TtimeMax));
        self.set("connect", s.get(Stat::Connect));
        self.set("reuse", s.get(Stat::Reuse));
        self.set("econ", s.get(Stat::Econ));
        self.set("eresp", s.get(Stat::Eresp));
        self.set("wretr", s.get(Stat::Wretr));
        self.set("wredis", s.get(Stat::Wredis));
        let last = s.get(Stat::LastSess);
        self.set(
            "lastsess",
            if last == 0 {
                -1
            } else {
                now_unix.saturating_sub(last) as i64
            },
        );
    }

    /// The row as a CSV line (HAProxy's quoting: only fields holding a
    /// comma or a double quote are quoted, inner quotes doubled).
    pub fn csv(&self, out: &mut String) {
        for f in &self.fields {
            if f.contains([',', '"', '\n']) {
                out.push('"');
                out.push_str(&f.replace('"', "\"\"").replace('\n', " "));
                out.push('"');
            } else {
                out.push_str(f);
            }
            out.push(',');
        }
        out.push('\n');
    }
}

/// The index of column `name`.
pub fn column(name: &str) -> Option<usize> {
    COLUMNS.iter().position(|c| *c == name)
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    }
}

fn algo(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "roundrobin",
        Balance::LeastConn => "leastconn",
        Balance::Source => "source",
        Balance::Uri => "uri",
        Balance::Hdr => "hdr",
        Balance::First => "first",
        Balance::Random => "random",
    }
}

/// What rows are made from.
pub struct StatCtx<'a> {
    /// The running configuration.
    pub cfg: &'a Config,
    /// The counter rows, indexed.
    pub totals: &'a Totals<'a>,
    /// The current generation's health words.
    pub health: &'a SharedFlags,
    /// Rates.
    pub history: &'a History,
    /// Now, for rates.
    pub now: Instant,
    /// Now, for `lastchg` and `lastsess`.
    pub now_unix: u64,
    /// When the master first started (the `lastchg` of what never changed).
    pub started_unix: u64,
}

/// A server's status as `show stat` prints it.
pub fn server_status(
    checked: bool,
    health: u64,
    rt: ServerRuntime,
    weight: u32,
    rise: u32,
    fall: u32,
) -> String {
    let (up, successes, failures) = corral_worker::health::decode_health(health);
    if rt.maint {
        return "MAINT".into();
    }
    if rt.drain || (weight == 0 && (!checked || up)) {
        return "DRAIN".into();
    }
    if !checked {
        return "no check".into();
    }
    match up {
        true if failures > 0 && failures < fall => format!("UP {}/{fall}", fall - failures),
        true => "UP".into(),
        false if successes > 0 && successes < rise => format!("DOWN {successes}/{rise}"),
        false => "DOWN".into(),
    }
}

/// One object of `show stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Obj {
    /// Frontend `i`.
    Frontend(usize),
    /// Server `s` of backend `b`; `k` is its number across backends (its
    /// health word).
    Server(usize, usize, usize),
    /// Backend `b`'s BACKEND row.
    Backend(usize),
}

/// Every object, in HAProxy's order: each frontend, then per backend its
/// servers and its BACKEND row.
pub fn objects(cfg: &Config) -> Vec<Obj> {
    let mut v: Vec<Obj> = (0..cfg.frontends.len()).map(Obj::Frontend).collect();
    let mut k = 0;
    for (b, be) in cfg.backends.iter().enumerate() {
        for s in 0..be.servers.len() {
            v.push(Obj::Server(b, s, k));
            k += 1;
        }
        v.push(Obj::Backend(b));
    }
    v
}

/// Every row, in HAProxy's order.
pub fn rows(ctx: &StatCtx<'_>) -> Vec<StatRow> {
    objects(ctx.cfg).into_iter().map(|o| row(ctx, o)).collect()
}

/// Seconds since the last change of a row (since the start if none).
fn lastchg(ctx: &StatCtx<'_>, s: &Sum) -> u64 {
    ctx.now_unix.saturating_sub(match s.get(Stat::LastChange) {
        0 => ctx.started_unix,
        t => t,
    })
}

/// A server's runtime state, address and weight, as the master set them.
fn server_runtime(
    ctx: &StatCtx<'_>,
    key: &RowKey,
    srv: &corral_config::Server,
) -> (ServerRuntime, std::net::SocketAddr, u32) {
    let cell = ctx.totals.master_cell(key);
    let rt = cell.map(server_state::read).unwrap_or_default();
    let addr = cell
        .and_then(|c| server_state::read_addr(c).ok().flatten())
        .unwrap_or(srv.addr);
    (rt, addr, rt.weight.unwrap_or(srv.weight))
}

/// The row of `obj`.
pub fn row(ctx: &StatCtx<'_>, obj: Obj) -> StatRow {
    match obj {
        Obj::Frontend(i) => frontend_row(ctx, i),
        Obj::Server(b, s, k) => server_row(ctx, b, s, k),
        Obj::Backend(b) => backend_row(ctx, b),
    }
}

fn frontend_row(ctx: &StatCtx<'_>, i: usize) -> StatRow {
    let (f, t) = (&ctx.cfg.frontends[i], ctx.totals);
    let key = RowKey::frontend(&f.name);
    let s = t.of(&key);
    let mut r = StatRow::new(ObjType::Frontend, t.id(&key), 0);
    let http = f.mode == Mode::Http;
    r.set("pxname", &f.name);
    r.set("svname", "FRONTEND");
    r.counters(&s, http);
    r.set("slim", f.maxconn);
    r.set("dreq", s.get(Stat::Dreq));
    r.set("ereq", s.get(Stat::Ereq));
    r.set("status", "OPEN");
    let (rate, req_rate) = ctx
        .history
        .rates(&key, s.get(Stat::Stot), s.get(Stat::ReqTot), ctx.now);
    r.set("rate", rate);
    r.set("rate_lim", 0);
    if http {
        r.set("req_rate", req_rate);
        r.set("req_rate_max", s.get(Stat::ReqRateMax));
        r.set("req_tot", s.get(Stat::ReqTot));
    }
    r.set("mode", mode(f.mode));
    r.set("conn_rate", rate);
    r.set("conn_rate_max", s.get(Stat::ConnRateMax));
    r.set("conn_tot", s.get(Stat::Stot));
    r.set("intercepted", s.get(Stat::Intercepted));
    if ctx.cfg.frontends[i].mode == corral_config::Mode::Http {
        r.set("cache_lookups", s.get(Stat::CacheLookups));
        r.set("cache_hits", s.get(Stat::CacheHits));
    }
    r.set("dcon", s.get(Stat::Dcon));
    r.set("dses", s.get(Stat::Dses));
    r.set("wrew", 0);
    r
}

fn server_row(ctx: &StatCtx<'_>, b: usize, i: usize, k: usize) -> StatRow {
    let t = ctx.totals;
    let be = &ctx.cfg.backends[b];
    let srv = &be.servers[i];
    let iid = t.id(&RowKey::backend(&be.name));
    let http = be.mode == Mode::Http;
    let key = RowKey::server(&be.name, &srv.name);
    let s = t.of(&key);
    let checked = be.check.is_some() && srv.check;
    let health = ctx.health.get(k);
    let (rt, addr, cur_weight) = server_runtime(ctx, &key, srv);
    let (up, _, _) = corral_worker::health::decode_health(health);
    let mut r = StatRow::new(ObjType::Server, iid, t.id(&key));
    r.set("pxname", &be.name);
    r.set("svname", &srv.name);
    r.counters(&s, http);
    if let Some(m) = srv.maxconn {
        r.set("slim", m);
    }
    let (rise, fall) = be.check.as_ref().map_or((2, 3), |c| (c.rise, c.fall));
    r.set(
        "status",
        server_status(checked, health, rt, cur_weight, rise, fall),
    );
    r.set("weight", cur_weight);
    r.set("act", u8::from(!srv.backup));
    r.set("bck", u8::from(srv.backup));
    if checked {
        r.set("chkfail", s.get(Stat::Chkfail));
        r.set("chkdown", s.get(Stat::Chkdown));
        let status = match (
            s.get(Stat::CheckStatus),
            be.check.as_ref().and_then(|c| c.http.as_ref()),
        ) {
            _ if rt.maint => "",
            (2, Some(_)) => "L7OK",
            (2, None) => "L4OK",
            (1, Some(_)) => "L7STS",
            (1, None) => "L4CON",
            _ => "INI",
        };
        r.set("check_status", status);
        r.set("check_duration", s.get(Stat::CheckDuration));
        if let Some(c) = &be.check {
            r.set("check_rise", c.rise);
            r.set("check_fall", c.fall);
            r.set(
                "check_health",
                if up && !rt.maint {
                    c.rise + c.fall - 1
                } else {
                    0
                },
            );
        }
    }
    r.set("lastchg", lastchg(ctx, &s));
    r.set("downtime", 0);
    let (rate, _) = ctx.history.rates(&key, s.get(Stat::Stot), 0, ctx.now);
    r.set("rate", rate);
    r.balanced(&s, http, ctx.now_unix);
    r.set("addr", addr);
    r.set("mode", mode(be.mode));
    r.set("uweight", cur_weight);
    r
}

fn backend_row(ctx: &StatCtx<'_>, b: usize) -> StatRow {
    let t = ctx.totals;
    let be = &ctx.cfg.backends[b];
    let http = be.mode == Mode::Http;
    let first = ctx.cfg.backends[..b]
        .iter()
        .map(|x| x.servers.len())
        .sum::<usize>();
    let (mut weight, mut act, mut bck, mut usable) = (0, 0, 0, 0);
    for (i, srv) in be.servers.iter().enumerate() {
        let key = RowKey::server(&be.name, &srv.name);
        let checked = be.check.is_some() && srv.check;
        let (up, _, _) = corral_worker::health::decode_health(ctx.health.get(first + i));
        let (rt, _, cur_weight) = server_runtime(ctx, &key, srv);
        if (!checked || up) && !rt.maint {
            usable += 1;
            if !rt.drain {
                if srv.backup {
                    bck += 1;
                } else {
                    act += 1;
                    weight += cur_weight;
                }
            }
        }
    }
    let bkey = RowKey::backend(&be.name);
    let s = t.of(&bkey);
    let mut r = StatRow::new(ObjType::Backend, t.id(&bkey), 0);
    r.set("pxname", &be.name);
    r.set("svname", "BACKEND");
    r.counters(&s, http);
    r.set("dreq", s.get(Stat::Dreq));
    r.set("status", if usable > 0 { "UP" } else { "DOWN" });
    r.set("weight", weight);
    r.set("act", act);
    r.set("bck", bck);
    r.set("lastchg", lastchg(ctx, &s));
    r.set("downtime", 0);
    let (rate, _) = ctx.history.rates(&bkey, s.get(Stat::Stot), 0, ctx.now);
    r.set("rate", rate);
    r.balanced(&s, http, ctx.now_unix);
    r.set("mode", mode(be.mode));
    r.set("algo", algo(be.balance));
    r.set("uweight", weight);
    r.set("agg_server_status", 0);
    if http {
        r.set("cache_lookups", s.get(Stat::CacheLookups));
        r.set("cache_hits", s.get(Stat::CacheHits));
    }
    r
}

/// The CSV header line.
pub fn csv_header() -> String {
    let mut out = String::from("# ");
    for c in COLUMNS {
        out.push_str(c);
        out.push(',');
    }
    out.push('\n');
    out
}

/// The whole CSV, header first.
pub fn csv(rows: &[StatRow]) -> String {
    let mut out = csv_header();
    for r in rows {
        r.csv(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_haproxy_26s() {
        let golden = "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-";
        assert_eq!(COLUMNS.join(","), golden);
    }
}
