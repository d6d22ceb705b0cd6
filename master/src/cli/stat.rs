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

/// Every row, in HAProxy's order: each frontend, then per backend its
/// servers and its BACKEND row.
pub fn rows(ctx: &StatCtx<'_>) -> Vec<StatRow> {
    let (cfg, t) = (ctx.cfg, ctx.totals);
    let mut out = Vec::new();
    let lastchg = |s: &Sum| {
        ctx.now_unix.saturating_sub(match s.get(Stat::LastChange) {
            0 => ctx.started_unix,
            t => t,
        })
    };
    for f in &cfg.frontends {
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
        let (rate, req_rate) =
            ctx.history
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
        r.set("dcon", s.get(Stat::Dcon));
        r.set("dses", s.get(Stat::Dses));
        r.set("wrew", 0);
        out.push(r);
    }
    let mut flag = 0;
    for b in &cfg.backends {
        let bkey = RowKey::backend(&b.name);
        let iid = t.id(&bkey);
        let http = b.mode == Mode::Http;
        let (mut weight, mut act, mut bck, mut usable) = (0, 0, 0, 0);
        for srv in &b.servers {
            let key = RowKey::server(&b.name, &srv.name);
            let s = t.of(&key);
            let checked = b.check.is_some() && srv.check;
            let health = ctx.health.get(flag);
            flag += 1;
            let rt = t
                .master_cell(&key)
                .map(server_state::read)
                .unwrap_or_default();
            let addr = t
                .master_cell(&key)
                .and_then(|c| server_state::read_addr(c).ok().flatten())
                .unwrap_or(srv.addr);
            let cur_weight = rt.weight.unwrap_or(srv.weight);
            let (up, _, _) = corral_worker::health::decode_health(health);
            let mut r = StatRow::new(ObjType::Server, iid, t.id(&key));
            r.set("pxname", &b.name);
            r.set("svname", &srv.name);
            r.counters(&s, http);
            if let Some(m) = srv.maxconn {
                r.set("slim", m);
            }
            let (rise, fall) = b.check.as_ref().map_or((2, 3), |c| (c.rise, c.fall));
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
                    b.check.as_ref().and_then(|c| c.http.as_ref()),
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
                if let Some(c) = &b.check {
                    r.set("check_rise", c.rise);
                    r.set("check_fall", c.fall);
                    r.set("check_health", if up { c.rise + c.fall - 1 } else { 0 });
                }
            }
            r.set("lastchg", lastchg(&s));
            r.set("downtime", 0);
            let (rate, _) = ctx.history.rates(&key, s.get(Stat::Stot), 0, ctx.now);
            r.set("rate", rate);
            r.balanced(&s, http, ctx.now_unix);
            r.set("addr", addr);
            r.set("mode", mode(b.mode));
            r.set("uweight", cur_weight);
            r.set("agg_server_status", 0);
            out.push(r);
            let in_service = (!checked || up) && !rt.maint;
            if in_service {
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
        let s = t.of(&bkey);
        let mut r = StatRow::new(ObjType::Backend, iid, 0);
        r.set("pxname", &b.name);
        r.set("svname", "BACKEND");
        r.counters(&s, http);
        r.set("dreq", s.get(Stat::Dreq));
        r.set("status", if usable > 0 { "UP" } else { "DOWN" });
        r.set("weight", weight);
        r.set("act", act);
        r.set("bck", bck);
        r.set("lastchg", lastchg(&s));
        r.set("downtime", 0);
        let (rate, _) = ctx.history.rates(&bkey, s.get(Stat::Stot), 0, ctx.now);
        r.set("rate", rate);
        r.balanced(&s, http, ctx.now_unix);
        r.set("mode", mode(b.mode));
        r.set("algo", algo(b.balance));
        r.set("uweight", weight);
        out.push(r);
    }
    out
}

/// `show stat`'s optional filter: `<iid|proxy> <type> <sid>`, with -1 for
/// "all" (HAProxy's syntax; type is a mask: 1 frontends, 2 backends, 4
/// servers).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this proxy (by id or name).
    pub proxy: Option<ProxySel>,
    /// Kinds of rows to keep (bits of [`ObjType::bit`]); 0 keeps all.
    pub types: u32,
    /// Only this server id.
    pub sid: Option<u32>,
    /// `up`: only servers that are up (and proxies).
    pub up_only: bool,
    /// `no-maint`: drop servers in maintenance.
    pub no_maint: bool,
}

/// A proxy named by id or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxySel {
    /// `iid`.
    Id(u32),
    /// `pxname`.
    Name(String),
}

/// How `show stat` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// HAProxy's CSV.
    #[default]
    Csv,
    /// `typed`: one field per line.
    Typed,
    /// `json`.
    Json,
}

/// Parses `show stat`'s arguments (after `show stat`).
pub fn parse_args(args: &[&str]) -> Result<(Filter, Format), String> {
    let mut f = Filter::default();
    let mut fmt = Format::Csv;
    let mut rest = args;
    if rest.len() >= 3 && !matches!(rest[0], "typed" | "json" | "up" | "no-maint" | "desc") {
        f.proxy = match rest[0] {
            "-1" => None,
            p => Some(match p.parse::<u32>() {
                Ok(n) => ProxySel::Id(n),
                Err(_) => ProxySel::Name(p.to_string()),
            }),
        };
        f.types = match rest[1].parse::<i64>() {
            Ok(-1) => 0,
            Ok(n) if (0..=7).contains(&n) => n as u32,
            _ => return Err("Invalid type: expects a bit mask of 1, 2 and 4, or -1.".into()),
        };
        f.sid = match rest[2].parse::<i64>() {
            Ok(-1) => None,
            Ok(n) if n >= 0 => Some(n as u32),
            _ => return Err("Invalid server id: expects a number or -1.".into()),
        };
        rest = &rest[3..];
    }
    for a in rest {
        match *a {
            "typed" => fmt = Format::Typed,
            "json" => fmt = Format::Json,
            "up" => f.up_only = true,
            "no-maint" => f.no_maint = true,
            "desc" => {}
            other => return Err(format!("Unknown argument '{other}': expects [{{<iid>|<proxy>}} <type> <sid>] [typed|json] [up|no-maint]")),
        }
    }
    Ok((f, fmt))
}

impl Filter {
    /// Whether `r` passes.
    pub fn keeps(&self, r: &StatRow) -> bool {
        if let Some(p) = &self.proxy {
            let ok = match p {
                ProxySel::Id(n) => r.iid == *n,
                ProxySel::Name(n) => r.get("pxname") == n,
            };
            if !ok {
                return false;
            }
        }
        if self.types != 0 && self.types & r.obj.bit() == 0 {
            return false;
        }
        if r.obj == ObjType::Server {
            if self.sid.is_some_and(|s| s != r.sid) {
                return false;
            }
            let status = r.get("status");
            if self.no_maint && status == "MAINT" {
                return false;
            }
            if self.up_only && !(status.starts_with("UP") || status == "no check") {
                return false;
            }
        }
        true
    }
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
pub fn csv(rows: &[StatRow], filter: &Filter) -> String {
    let mut out = csv_header();
    for r in rows.iter().filter(|r| filter.keeps(r)) {
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
