//! `show stat`: HAProxy 2.6's CSV over the counter rows in the segment
//! (`corral_shm::stats`), summed over workers. Rows come in HAProxy's
//! order: each frontend's FRONTEND row, then per backend its servers and
//! its BACKEND row. Every row has the header's field count and a trailing
//! comma; fields corral does not know stay empty, as HAProxy leaves them
//! empty where they do not apply.

use corral_config::{Balance, Config, Mode};
use corral_shm::flags::SharedFlags;
use corral_shm::stats::{RowKey, Stat, StatsRegion, STAT_WORDS};

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

/// The summed cells of one row.
struct Sum([u64; STAT_WORDS]);

impl Sum {
    fn get(&self, s: Stat) -> u64 {
        self.0[s as usize]
    }

    fn avg(&self, s: Stat) -> u64 {
        let n = self.get(Stat::Timed);
        self.get(s).checked_div(n).unwrap_or(0)
    }
}

/// `key`'s totals: every column of the current generation's rows (the
/// carried column 0 holds what gone workers counted), plus the worker
/// columns of older generations still running.
fn total(stats: &[StatsRegion], key: &RowKey) -> Sum {
    let mut out = [0u64; STAT_WORDS];
    for (i, s) in stats.iter().enumerate() {
        let Some(row) = s.find(key) else { continue };
        let from = if i == 0 { 0 } else { 1 };
        s.sum(row, from..s.columns(), &mut out);
    }
    // Last values (check results) are the current generation's: the one
    // worker that checks the server wrote them.
    for w in [
        Stat::LastChange,
        Stat::CheckStatus,
        Stat::CheckDuration,
        Stat::CheckCode,
    ] {
        out[w as usize] = stats
            .first()
            .and_then(|s| {
                let row = s.find(key)?;
                (1..s.columns())
                    .filter_map(|c| s.cell(row, c).map(|c| c.get(w)))
                    .max()
            })
            .unwrap_or(0);
    }
    Sum(out)
}

/// One row's fields, by column name.
struct Row {
    fields: Vec<String>,
}

impl Row {
    fn new() -> Row {
        Row {
            fields: vec![String::new(); COLUMNS.len()],
        }
    }

    fn set(&mut self, col: &str, v: impl ToString) {
        if let Some(i) = COLUMNS.iter().position(|c| *c == col) {
            self.fields[i] = v.to_string();
        }
    }

    fn counters(&mut self, s: &Sum, http: bool) {
        self.set("qcur", s.get(Stat::Qcur));
        self.set("qmax", 0);
        self.set("scur", s.get(Stat::Scur));
        self.set("stot", s.get(Stat::Stot));
        self.set("bin", s.get(Stat::Bin));
        self.set("bout", s.get(Stat::Bout));
        self.set("dresp", s.get(Stat::Dresp));
        self.set("cli_abrt", s.get(Stat::CliAbrt));
        self.set("srv_abrt", s.get(Stat::SrvAbrt));
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
    /// averages, connections opened and reused.
    fn balanced(&mut self, s: &Sum, http: bool) {
        self.set("lbtot", s.get(Stat::Lbtot));
        if http {
            self.set("req_tot", s.get(Stat::Stot));
        }
        self.set("qtime", s.avg(Stat::QtimeSum));
        self.set("ctime", s.avg(Stat::CtimeSum));
        self.set("rtime", s.avg(Stat::RtimeSum));
        self.set("ttime", s.avg(Stat::TtimeSum));
        self.set("connect", s.get(Stat::Connect));
        self.set("reuse", s.get(Stat::Reuse));
    }

    fn line(&self, out: &mut String) {
        for f in &self.fields {
            out.push_str(f);
            out.push(',');
        }
        out.push('\n');
    }
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

/// The CSV, header first.
pub fn show_stat(cfg: &Config, stats: &[StatsRegion], health: &SharedFlags) -> String {
    let mut out = String::from("# ");
    out.push_str(&COLUMNS.join(","));
    out.push_str(",\n");
    let mut iid = 0;
    for f in &cfg.frontends {
        iid += 1;
        let s = total(stats, &RowKey::frontend(&f.name));
        let mut r = Row::new();
        r.set("pxname", &f.name);
        r.set("svname", "FRONTEND");
        r.counters(&s, f.mode == Mode::Http);
        r.set("slim", f.maxconn);
        r.set("dreq", s.get(Stat::Dreq));
        r.set("ereq", s.get(Stat::Ereq));
        r.set("status", "OPEN");
        r.set("pid", 1);
        r.set("iid", iid);
        r.set("sid", 0);
        r.set("type", 0);
        if f.mode == Mode::Http {
            r.set("req_tot", s.get(Stat::ReqTot));
        }
        r.set("mode", mode(f.mode));
        r.set("conn_tot", s.get(Stat::Stot));
        r.set("intercepted", s.get(Stat::Intercepted));
        r.set("dcon", s.get(Stat::Dcon));
        r.set("dses", s.get(Stat::Dses));
        r.set("wrew", 0);
        r.line(&mut out);
    }
    let mut flag = 0;
    for b in &cfg.backends {
        iid += 1;
        let http = b.mode == Mode::Http;
        let (mut up, mut weight, mut act, mut bck) = (0, 0, 0, 0);
        for (sid, srv) in b.servers.iter().enumerate() {
            let s = total(stats, &RowKey::server(&b.name, &srv.name));
            let checked = b.check.is_some() && srv.check;
            let is_up = health.get(flag) == 0;
            flag += 1;
            let mut r = Row::new();
            r.set("pxname", &b.name);
            r.set("svname", &srv.name);
            r.counters(&s, http);
            if let Some(m) = srv.maxconn {
                r.set("slim", m);
            }
            r.set("econ", s.get(Stat::Econ));
            r.set("eresp", s.get(Stat::Eresp));
            r.set("wretr", s.get(Stat::Wretr));
            r.set("wredis", s.get(Stat::Wredis));
            let status = match (checked, is_up) {
                (false, _) => "no check",
                (true, true) => "UP",
                (true, false) => "DOWN",
            };
            r.set("status", status);
            r.set("weight", srv.weight);
            r.set("act", u8::from(!srv.backup));
            r.set("bck", u8::from(srv.backup));
            if checked {
                r.set("chkfail", s.get(Stat::Chkfail));
                r.set("chkdown", s.get(Stat::Chkdown));
                let status = match (
                    s.get(Stat::CheckStatus),
                    b.check.as_ref().and_then(|c| c.http.as_ref()),
                ) {
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
                    r.set("check_health", if is_up { c.rise + c.fall - 1 } else { 0 });
                }
            }
            r.set("lastchg", 0);
            r.set("pid", 1);
            r.set("iid", iid);
            r.set("sid", sid + 1);
            r.set("type", 2);
            r.balanced(&s, http);
            r.set("addr", srv.addr);
            r.set("mode", mode(b.mode));
            r.set("uweight", srv.weight);
            r.line(&mut out);
            if !checked || is_up {
                up += 1;
                if srv.backup {
                    bck += 1;
                } else {
                    act += 1;
                    weight += srv.weight;
                }
            }
        }
        let s = total(stats, &RowKey::backend(&b.name));
        let mut r = Row::new();
        r.set("pxname", &b.name);
        r.set("svname", "BACKEND");
        r.counters(&s, http);
        r.set("dreq", s.get(Stat::Dreq));
        r.set("econ", s.get(Stat::Econ));
        r.set("eresp", s.get(Stat::Eresp));
        r.set("wretr", s.get(Stat::Wretr));
        r.set("wredis", s.get(Stat::Wredis));
        r.set("status", if up > 0 { "UP" } else { "DOWN" });
        r.set("weight", weight);
        r.set("act", act);
        r.set("bck", bck);
        r.set("lastchg", 0);
        r.set("downtime", 0);
        r.set("pid", 1);
        r.set("iid", iid);
        r.set("sid", 0);
        r.set("type", 1);
        r.balanced(&s, http);
        r.set("mode", mode(b.mode));
        r.set("algo", algo(b.balance));
        r.set("uweight", weight);
        r.line(&mut out);
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
