//! The runtime API as HAProxy's tools use it: exact formats (checked against
//! Debian's HAProxy when it is installed), counters that stay exact across a
//! SIGKILLed worker and a reload, server commands that steer traffic in
//! every worker at once, levels, and a silent client that delays nobody.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::http::{stat_row, Client, Origin};
use common::*;

/// HAProxy 2.6's `show stat` header (Debian's 2.6.12), static columns.
const HAPROXY_26_HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,";

/// HAProxy 2.6's `show info` keys, in its order.
const HAPROXY_26_INFO: &[&str] = &[
    "Name",
    "Version",
    "Release_date",
    "Nbthread",
    "Nbproc",
    "Process_num",
    "Pid",
    "Uptime",
    "Uptime_sec",
    "Memmax_MB",
    "PoolAlloc_MB",
    "PoolUsed_MB",
    "PoolFailed",
    "Ulimit-n",
    "Maxsock",
    "Maxconn",
    "Hard_maxconn",
    "CurrConns",
    "CumConns",
    "CumReq",
    "MaxSslConns",
    "CurrSslConns",
    "CumSslConns",
    "Maxpipes",
    "PipesUsed",
    "PipesFree",
    "ConnRate",
    "ConnRateLimit",
    "MaxConnRate",
    "SessRate",
    "SessRateLimit",
    "MaxSessRate",
    "SslRate",
    "SslRateLimit",
    "MaxSslRate",
    "SslFrontendKeyRate",
    "SslFrontendMaxKeyRate",
    "SslFrontendSessionReuse_pct",
    "SslBackendKeyRate",
    "SslBackendMaxKeyRate",
    "SslCacheLookups",
    "SslCacheMisses",
    "CompressBpsIn",
    "CompressBpsOut",
    "CompressBpsRateLim",
    "Tasks",
    "Run_queue",
    "Idle_pct",
    "node",
    "Stopping",
    "Jobs",
    "Unstoppable Jobs",
    "Listeners",
    "ActivePeers",
    "ConnectedPeers",
    "DroppedLogs",
    "BusyPolling",
    "FailedResolutions",
    "TotalBytesOut",
    "TotalSplicdedBytesOut",
    "BytesOutRate",
    "DebugCommandsIssued",
    "CumRecvLogs",
    "Build info",
    "Memmax_bytes",
    "PoolAlloc_bytes",
    "PoolUsed_bytes",
    "Start_time_sec",
    "Tainted",
];

const SERVERS_STATE_HEADER: &str = "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port";

/// A config: frontend `web`, backend `app` over `servers` (s0, s1...),
/// the stats socket at `level`, `extra` appended to `[backend.app]`.
fn setup(level: &str, workers: usize, servers: &[SocketAddr], extra: &str) -> (String, PathBuf) {
    let sock = temp_dir("api").join("admin.sock");
    let mut s = format!(
        r#"
[global]
workers = {workers}

[stats]
socket = "{}"
level = "{level}"

[defaults]
mode = "http"
timeout = {{ connect = "2s", client = "5s", server = "5s" }}

[frontend.web]
bind = "127.0.0.1:{}"
default_backend = "app"

[table.t]
type = "ip"
size = 1000
store = ["gpc0", "conn_cnt"]

[backend.app]
{extra}
"#,
        sock.display(),
        free_port()
    );
    for (i, a) in servers.iter().enumerate() {
        s.push_str(&format!("server.s{i} = {{ addr = \"{a}\" }}\n"));
    }
    (s, sock)
}

fn cmd(sock: &Path, c: &str) -> String {
    stats_command(sock, c).expect("stats socket")
}

/// One request on its own connection (so workers share them); the name
/// of the server that answered.
fn get_one(addr: SocketAddr) -> String {
    let mut c = Client::connect(addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response(false).expect("a response");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

fn field<'a>(row: &'a std::collections::HashMap<String, String>, k: &str) -> &'a str {
    row.get(k).map(String::as_str).unwrap_or("")
}

/// SIGUSR2, then waits until `workers` workers, all new, run.
fn reload_and_wait(c: &Corral, workers: usize) {
    let before = c.worker_pids();
    c.signal(nix::sys::signal::Signal::SIGUSR2);
    wait_for("the reload", Duration::from_secs(15), || {
        let w = c.worker_pids();
        w.len() == workers && w.iter().all(|p| !before.contains(p))
    });
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `show stat`, `show info`, `show servers state` and `show table` in
/// HAProxy's exact formats; typed and JSON parse and agree.
#[test]
fn formats_are_haproxys() {
    let s0 = Origin::start("s0");
    let s1 = Origin::start("s1");
    let (text, sock) = setup("admin", 2, &[s0.addr, s1.addr], "");
    let c = Corral::start(&text);
    for _ in 0..4 {
        get_one(c.addr());
    }
    let csv = cmd(&sock, "show stat");
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert_eq!(header, HAPROXY_26_HEADER);
    let n = header.matches(',').count();
    let rows: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
    let names: Vec<String> = rows
        .iter()
        .map(|r| r.split(',').take(2).collect::<Vec<_>>().join("/"))
        .collect();
    assert_eq!(names, ["web/FRONTEND", "app/s0", "app/s1", "app/BACKEND"]);
    for r in &rows {
        assert_eq!(r.matches(',').count(), n, "field count of {r}");
        assert!(r.ends_with(','), "trailing comma: {r}");
    }
    assert!(csv.ends_with(",\n\n"), "the answer ends with an empty line");

    // show info: HAProxy's keys in HAProxy's order.
    let info = cmd(&sock, "show info");
    let keys: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(k, _)| k))
        .collect();
    let known: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| HAPROXY_26_INFO.contains(k))
        .collect();
    let mut order: Vec<&str> = known.clone();
    order.sort_by_key(|k| HAPROXY_26_INFO.iter().position(|h| h == k));
    assert_eq!(known, order, "keys out of HAProxy's order");
    for k in [
        "Name",
        "Version",
        "Release_date",
        "Nbproc",
        "Process_num",
        "Pid",
        "Uptime",
        "Maxconn",
        "CurrConns",
        "Maxpipes",
        "PipesUsed",
        "Tasks",
        "Run_queue",
        "node",
        "Uptime_sec",
        "Idle_pct",
        "CumConns",
        "CumReq",
        "ConnRate",
        "MaxConnRate",
        "SessRate",
        "MaxSessRate",
        "Memmax_MB",
        "PoolAlloc_MB",
        "PoolUsed_MB",
        "PoolFailed",
        "Ulimit-n",
        "Maxsock",
        "Hard_maxconn",
        "Stopping",
        "Jobs",
        "Listeners",
    ] {
        assert!(known.contains(&k), "show info lacks {k}:\n{info}");
    }
    let value = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap()
            .to_string()
    };
    assert_eq!(value("CumReq"), "4");
    assert!(!value("node").is_empty());

    // typed: `pos.Name.1:TAG:type:value`, same values as the text.
    let typed = cmd(&sock, "show info typed");
    for l in typed.lines().filter(|l| !l.is_empty()) {
        let (head, val) = l.split_once(':').unwrap();
        let parts: Vec<&str> = val.splitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "{l}");
        assert_eq!(parts[0].len(), 3, "tags of {l}");
        assert!(["u32", "u64", "s32", "str"].contains(&parts[1]), "{l}");
        let name = head.split_once('.').unwrap().1.rsplit_once('.').unwrap().0;
        assert!(keys.contains(&name), "{name}");
    }
    let json: serde_json::Value = serde_json::from_str(&cmd(&sock, "show info json")).unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr[0]["field"]["name"], "Name");
    assert_eq!(arr[0]["value"]["value"], "corral");
    let stat_json: serde_json::Value = serde_json::from_str(&cmd(&sock, "show stat json")).unwrap();
    let objs = stat_json.as_array().unwrap();
    assert_eq!(objs.len(), 4);
    let be_stot = objs[3]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"]["name"] == "stot")
        .unwrap();
    assert_eq!(be_stot["value"]["value"], 4);
    assert_eq!(be_stot["objType"], "Backend");
    let typed_stat = cmd(&sock, "show stat typed");
    assert!(
        typed_stat
            .lines()
            .any(|l| l.starts_with("B.") && l.contains(".stot.1:MCP:u64:4")),
        "{typed_stat}"
    );

    // The filter: iid of app, servers only, every sid.
    let be = stat_row(&csv, "app", "BACKEND");
    let iid = field(&be, "iid").to_string();
    let only = cmd(&sock, &format!("show stat {iid} 4 -1"));
    let got: Vec<&str> = only.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(got.len(), 2, "{only}");
    assert!(got.iter().all(|l| l.starts_with("app,s")));
    let one = cmd(&sock, "show stat app 4 2");
    assert_eq!(one.lines().filter(|l| l.starts_with("app,")).count(), 1);
    assert!(one.contains("app,s1,"));

    // show servers state, version 1.
    let st = cmd(&sock, "show servers state");
    let mut sl = st.lines();
    assert_eq!(sl.next(), Some("1"));
    assert_eq!(sl.next(), Some(SERVERS_STATE_HEADER));
    let srows: Vec<Vec<&str>> = sl
        .take_while(|l| !l.is_empty())
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(srows.len(), 2);
    for (i, r) in srows.iter().enumerate() {
        assert_eq!(r.len(), 25, "{r:?}");
        assert_eq!((r[1], r[3]), ("app", format!("s{i}").as_str()));
        assert_eq!(r[4], "127.0.0.1");
        assert_eq!(r[18], [s0.addr, s1.addr][i].port().to_string());
        assert_eq!(
            (r[5], r[6], r[7]),
            ("2", "0", "1"),
            "running, no admin flag, weight 1"
        );
    }
    assert_eq!(
        cmd(&sock, "show servers state nope"),
        "Can't find backend.\n\n"
    );

    // show table: the summary, HAProxy's entry lines, filters.
    cmd(&sock, "set table t key 10.0.0.1 data.gpc0 5");
    cmd(&sock, "set table t key 10.0.0.2 data.gpc0 1");
    let t = cmd(&sock, "show table t");
    assert!(
        t.starts_with("# table: t, type: ip, size:1000, used:2\n"),
        "{t}"
    );
    let line = t.lines().find(|l| l.contains("key=10.0.0.1")).unwrap();
    let re_ok = line.starts_with("0x")
        && line.contains(": key=10.0.0.1 use=0 exp=")
        && line.contains(" shard=")
        && line.contains(" gpc0=5");
    assert!(re_ok, "{line}");
    let f = cmd(&sock, "show table t data.gpc0 gt 3");
    assert!(
        f.contains("key=10.0.0.1") && !f.contains("key=10.0.0.2"),
        "{f}"
    );
    let k = cmd(&sock, "show table t key 10.0.0.2");
    assert!(
        k.contains("key=10.0.0.2") && !k.contains("key=10.0.0.1"),
        "{k}"
    );
    assert!(cmd(&sock, "show table t data.gpc0 zz 3").contains("operator"));
    cmd(&sock, "clear table t data.gpc0 lt 3");
    let after = cmd(&sock, "show table t");
    assert!(
        after.contains("used:1") && after.contains("key=10.0.0.1"),
        "{after}"
    );

    // Beside Debian's HAProxy, when it is here: the same header and keys.
    if let Some(h) = haproxy_outputs() {
        assert_eq!(h.stat_header, header, "HAProxy's own header");
        assert_eq!(h.servers_state_header, SERVERS_STATE_HEADER);
        let hk: Vec<&str> = h.info_keys.iter().map(String::as_str).collect();
        let ours_in_theirs: Vec<&str> = known.iter().copied().filter(|k| hk.contains(k)).collect();
        let mut sorted = ours_in_theirs.clone();
        sorted.sort_by_key(|k| hk.iter().position(|h| h == k));
        assert_eq!(ours_in_theirs, sorted, "order against the running HAProxy");
    } else {
        eprintln!("haproxy not installed: compared with the recorded 2.6 formats only");
    }
    drop(c);
}

struct HaproxyOutputs {
    stat_header: String,
    servers_state_header: String,
    info_keys: Vec<String>,
}

/// Runs Debian's haproxy on a loopback config and reads its formats.
fn haproxy_outputs() -> Option<HaproxyOutputs> {
    let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let dir = temp_dir("haproxy");
    let sock = dir.join("h.sock");
    let cfg = dir.join("h.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  stats socket {} level admin\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\nfrontend web\n  bind 127.0.0.1:{}\n  default_backend app\nbackend app\n  server s0 127.0.0.1:{}\n",
            sock.display(),
            free_port(),
            free_port()
        ),
    )
    .ok()?;
    let mut child = std::process::Command::new(bin)
        .arg("-f")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let end = Instant::now() + Duration::from_secs(5);
    while UnixStream::connect(&sock).is_err() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stat = stats_command(&sock, "show stat").ok();
    let state = stats_command(&sock, "show servers state").ok();
    let info = stats_command(&sock, "show info").ok();
    let _ = child.kill();
    let _ = child.wait();
    let stat = stat?;
    let header = stat.lines().next()?;
    // Static columns up to `-` (module columns follow in HAProxy).
    let cut = header.find(",-,")? + 3;
    Some(HaproxyOutputs {
        stat_header: header[..cut].to_string(),
        servers_state_header: state?.lines().nth(1)?.to_string(),
        info_keys: info?
            .lines()
            .filter_map(|l| l.split_once(": ").map(|(k, _)| k.to_string()))
            .collect(),
    })
}

/// 100 requests over 2 workers count exactly 100, and stay exactly 100
/// after one worker is SIGKILLed and after a reload.
#[test]
fn counters_stay_exact_across_a_killed_worker_and_a_reload() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("admin", 2, &[s0.addr], "");
    let c = Corral::start(&text);
    for _ in 0..100 {
        get_one(c.addr());
    }
    let check = |n: &str, when: &str| {
        // A worker counts a request once its response is written: the
        // last one may be counted a moment after the client has it.
        let settled = Instant::now() + Duration::from_secs(2);
        let mut csv = cmd(&sock, "show stat");
        while field(&stat_row(&csv, "app", "BACKEND"), "hrsp_2xx") != n && Instant::now() < settled
        {
            std::thread::sleep(Duration::from_millis(20));
            csv = cmd(&sock, "show stat");
        }
        let be = stat_row(&csv, "app", "BACKEND");
        assert_eq!(field(&be, "stot"), n, "backend stot {when}");
        assert_eq!(field(&be, "hrsp_2xx"), n, "backend hrsp_2xx {when}");
        let srv = stat_row(&csv, "app", "s0");
        assert_eq!(field(&srv, "hrsp_2xx"), n, "server hrsp_2xx {when}");
        let fe = stat_row(&csv, "web", "FRONTEND");
        assert_eq!(field(&fe, "req_tot"), n, "frontend req_tot {when}");
        assert_eq!(field(&fe, "hrsp_2xx"), n, "frontend hrsp_2xx {when}");
    };
    check("100", "after the load");
    let counts: Vec<u64> = c.worker_pids().iter().map(|_| 0).collect();
    assert_eq!(counts.len(), 2);
    let victim = c.worker_pids()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the respawn", Duration::from_secs(10), || {
        let w = c.worker_pids();
        w.len() == 2 && !w.contains(&victim)
    });
    check("100", "after a worker was SIGKILLed");
    reload_and_wait(&c, 2);
    check("100", "after a reload");
    for _ in 0..10 {
        get_one(c.addr());
    }
    check("110", "after 10 more");
    // clear counters all: zero, counting on, and still zero-based after a
    // reload.
    cmd(&sock, "clear counters all");
    check("0", "after clear counters all");
    for _ in 0..5 {
        get_one(c.addr());
    }
    check("5", "after 5 more");
    reload_and_wait(&c, 2);
    check("5", "after clear and a reload");
}

/// `disable server` stops new traffic to it within one request, in every
/// worker; drain; weights change the split; `set server addr` moves
/// traffic; the state survives a reload; a server in maintenance is not
/// checked.
#[test]
fn server_commands_steer_traffic_everywhere() {
    let s0 = Origin::start("s0");
    let s1 = Origin::start("s1");
    let elsewhere = Origin::start("elsewhere");
    let (text, sock) = setup(
        "admin",
        2,
        &[s0.addr, s1.addr],
        "check = { interval = \"200ms\" }",
    );
    let c = Corral::start(&text);
    let spread = |n: usize| {
        let mut v = std::collections::HashMap::<String, usize>::new();
        for _ in 0..n {
            *v.entry(get_one(c.addr())).or_default() += 1;
        }
        v
    };
    let first = spread(20);
    // Each worker balances its own connections: both servers serve.
    assert!(
        first.get("s0") >= Some(&7) && first.get("s1") >= Some(&7),
        "{first:?}"
    );
    assert_eq!(cmd(&sock, "disable server app/s0"), "\n");
    let after = spread(40);
    assert_eq!(
        after.get("s1"),
        Some(&40),
        "every request after disable: {after:?}"
    );
    let csv = cmd(&sock, "show stat");
    assert_eq!(field(&stat_row(&csv, "app", "s0"), "status"), "MAINT");
    // No checks in maintenance.
    let checks = s0.conns.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        s0.conns.load(std::sync::atomic::Ordering::Relaxed),
        checks,
        "a server in maintenance was checked"
    );
    // Drain the other, ready the first: everything to s0.
    cmd(&sock, "set server app/s1 state drain");
    cmd(&sock, "set server app/s0 state ready");
    let drained = spread(20);
    assert_eq!(drained.get("s0"), Some(&20), "{drained:?}");
    assert_eq!(
        field(&stat_row(&cmd(&sock, "show stat"), "app", "s1"), "status"),
        "DRAIN"
    );
    cmd(&sock, "set server app/s1 state ready");
    // Weights 3:1.
    cmd(&sock, "set weight app/s0 3");
    assert_eq!(cmd(&sock, "get weight app/s0"), "3 (initial 1)\n\n");
    let w = spread(80);
    let (a, b) = (
        w.get("s0").copied().unwrap_or(0),
        w.get("s1").copied().unwrap_or(0),
    );
    assert!(
        (55..=65).contains(&a) && a + b == 80,
        "3:1 split, got {w:?}"
    );
    cmd(&sock, "set server app/s0 weight 100%");
    assert_eq!(cmd(&sock, "get weight app/s0"), "1 (initial 1)\n\n");
    // Move s1 elsewhere.
    let ans = cmd(
        &sock,
        &format!(
            "set server app/s1 addr 127.0.0.1 port {}",
            elsewhere.addr.port()
        ),
    );
    assert!(
        ans.starts_with("IP changed from '127.0.0.1' to '127.0.0.1', port changed from"),
        "{ans}"
    );
    let moved = spread(20);
    assert!(
        moved.get("s0") >= Some(&7)
            && moved.get("elsewhere") >= Some(&7)
            && !moved.contains_key("s1"),
        "{moved:?}"
    );
    // State survives a reload.
    cmd(&sock, "disable server app/s0");
    reload_and_wait(&c, 2);
    let kept = spread(10);
    assert_eq!(kept.get("elsewhere"), Some(&10), "after a reload: {kept:?}");
    let st = cmd(&sock, "show servers state app");
    let s0row: Vec<&str> = st.lines().nth(2).unwrap().split(' ').collect();
    assert_eq!(s0row[6], "1", "s0 still in forced maintenance: {st}");
    // Errors as HAProxy words them.
    assert_eq!(cmd(&sock, "get weight app/zz"), "No such server.\n\n");
    assert_eq!(cmd(&sock, "get weight zz/s0"), "No such backend.\n\n");
    assert_eq!(
        cmd(&sock, "get weight app"),
        "Require 'backend/server'.\n\n"
    );
    assert_eq!(
        cmd(&sock, "set weight app/s0 300"),
        "Absolute weight can only be between 0 and 256 inclusive.\n\n"
    );
    assert!(cmd(&sock, "set server app/s0 state bogus")
        .contains("expects 'ready', 'drain' and 'maint'"));
}

/// Levels refuse what they must; a client that connects and sends nothing
/// does not delay another's answer.
#[test]
fn levels_hold_and_a_silent_client_delays_nobody() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("user", 1, &[s0.addr], "");
    let c = Corral::start(&text);
    for denied in [
        "disable server app/s0",
        "set weight app/s0 2",
        "set server app/s0 state maint",
        "clear counters",
        "clear counters all",
        "clear table t",
        "set table t key 1.2.3.4 data.gpc0 1",
        "reload",
    ] {
        assert_eq!(cmd(&sock, denied), "Permission denied\n\n", "{denied}");
    }
    assert!(cmd(&sock, "show stat").starts_with("# pxname"));
    assert!(cmd(&sock, "get weight app/s0").starts_with("1 (initial 1)"));
    assert!(cmd(&sock, "show table t").contains("insufficient privileges"));
    // Operator: clear counters, not all.
    let op = text.replace("level = \"user\"", "level = \"operator\"");
    let c2 = {
        drop(c);
        Corral::start(&op)
    };
    assert_eq!(cmd(&sock, "clear counters"), "\n");
    assert_eq!(cmd(&sock, "clear counters all"), "Permission denied\n\n");
    assert_eq!(cmd(&sock, "disable server app/s0"), "Permission denied\n\n");
    // Silent clients hold nobody up.
    let silent: Vec<UnixStream> = (0..10)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let t = Instant::now();
    let info = cmd(&sock, "show info");
    let took = t.elapsed();
    assert!(info.contains("Name: corral"));
    assert!(
        took < Duration::from_millis(200),
        "show info took {took:?} beside silent clients"
    );
    // One that asks for a lot and never reads, either.
    let mut hog = UnixStream::connect(&sock).unwrap();
    hog.write_all(b"show stat;show stat;show stat;show stat;show info;show stat json\n")
        .unwrap();
    let t = Instant::now();
    assert!(cmd(&sock, "show info").contains("Pid: "));
    assert!(t.elapsed() < Duration::from_millis(200));
    drop(silent);
    let mut buf = Vec::new();
    hog.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    hog.read_to_end(&mut buf).unwrap();
    assert!(buf.len() > 1000, "the hog still gets its answer");
    drop(c2);
}

/// Maxima and rates come from the summed counters: five connections held
/// at once over two workers give smax 5 on the frontend.
#[test]
fn maxima_are_taken_from_the_sums() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("admin", 2, &[s0.addr], "");
    let c = Corral::start(&text);
    let held: Vec<std::net::TcpStream> = (0..5).map(|_| c.connect()).collect();
    wait_for("5 sessions", Duration::from_secs(5), || {
        field(
            &stat_row(&cmd(&sock, "show stat"), "web", "FRONTEND"),
            "scur",
        ) == "5"
    });
    drop(held);
    wait_for("0 sessions", Duration::from_secs(5), || {
        field(
            &stat_row(&cmd(&sock, "show stat"), "web", "FRONTEND"),
            "scur",
        ) == "0"
    });
    let fe = stat_row(&cmd(&sock, "show stat"), "web", "FRONTEND");
    assert_eq!(field(&fe, "smax"), "5", "{fe:?}");
    assert!(field(&fe, "rate_max").parse::<u64>().unwrap() >= 1);
    cmd(&sock, "clear counters");
    let fe = stat_row(&cmd(&sock, "show stat"), "web", "FRONTEND");
    assert_eq!(field(&fe, "smax"), "0", "clear counters resets maxima");
    assert_eq!(field(&fe, "stot"), "5", "but not the totals");
}

/// `show sess` lists every worker's connections (asked over the control
/// sockets); `show errors` shows the last refused request of each worker
/// with its bytes and the fault's position; a worker that cannot answer
/// (stopped) does not hang the answer.
#[test]
fn sessions_and_errors_come_from_every_worker() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("admin", 2, &[s0.addr], "");
    let c = Corral::start(&text);
    // Connections in both workers: an idle worker may take them all, so
    // the first one's taker is stopped while the others connect.
    let mut held: Vec<std::net::TcpStream> = vec![c.connect()];
    let first = c.owner_of(&held[0]).expect("an owner");
    let stop = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), sig).unwrap();
    stop(nix::sys::signal::Signal::SIGSTOP);
    held.extend((0..5).map(|_| c.connect()));
    std::thread::sleep(Duration::from_millis(100));
    stop(nix::sys::signal::Signal::SIGCONT);
    let n = held.len().to_string();
    let ports: Vec<u16> = held
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    wait_for("the sessions", Duration::from_secs(5), || {
        field(
            &stat_row(&cmd(&sock, "show stat"), "web", "FRONTEND"),
            "scur",
        ) == n
    });
    let sess = cmd(&sock, "show sess");
    for p in &ports {
        let line = sess
            .lines()
            .find(|l| l.contains(&format!("src=127.0.0.1:{p} ")))
            .unwrap_or_else(|| panic!("no session from port {p}:\n{sess}"));
        assert!(
            line.starts_with("0x") && line.contains(" fe=web "),
            "{line}"
        );
    }
    let workers: std::collections::HashSet<&str> = sess
        .lines()
        .filter_map(|l| l.split(" worker=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(workers.len(), 2, "both workers answered: {sess}");
    drop(held);
    // Malformed requests on their own connections; each worker keeps the
    // last one per frontend (as HAProxy), so each is looked at in turn.
    let total = |errors: &str| -> u64 {
        errors
            .lines()
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let r = common::http::request(c.addr(), b"GET\x01 / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    let errors = cmd(&sock, "show errors");
    assert!(errors.starts_with("Total events captured on ["), "{errors}");
    assert_eq!(total(&errors), 1, "{errors}");
    assert!(errors.contains("frontend web"), "{errors}");
    assert!(
        errors.contains("  00000  GET\\x01 / HTTP/1.1\\r\\n"),
        "{errors}"
    );
    assert!(errors.contains("error at position 3"), "{errors}");
    let two_cl = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(common::http::request(c.addr(), two_cl).unwrap().status, 400);
    let errors = cmd(&sock, "show errors");
    assert_eq!(total(&errors), 2, "{errors}");
    assert!(errors.contains("Content-Length: 2\\r\\n"), "{errors}");
    assert!(errors.contains("error at position 25"), "{errors}");
    let only_resp = cmd(&sock, "show errors web response");
    assert!(!only_resp.contains("GET"), "{only_resp}");
    // Operator level at least.
    let (user_text, user_sock) = setup("user", 1, &[s0.addr], "");
    drop(c);
    let u = Corral::start(&user_text);
    assert_eq!(cmd(&user_sock, "show sess"), "Permission denied\n\n");
    assert_eq!(cmd(&user_sock, "show errors"), "Permission denied\n\n");
    // A stopped worker: the answer comes at the timeout, naming it.
    let (t2, sock2) = setup("admin", 2, &[s0.addr], "");
    drop(u);
    let c2 = Corral::start(&t2);
    let frozen = c2.worker_pids()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(frozen),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let t = Instant::now();
    let sess = cmd(&sock2, "show sess");
    let took = t.elapsed();
    let fast = Instant::now();
    let info = cmd(&sock2, "show info");
    assert!(info.contains("Name: corral") && fast.elapsed() < Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(frozen),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    assert!(sess.contains("did not answer in time"), "{sess}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

/// A config with `n` servers in one backend (nothing listens on them) and
/// the stats page on `page`.
fn big_setup(n: usize, page: SocketAddr) -> (String, PathBuf) {
    let servers: Vec<SocketAddr> = (0..n)
        .map(|i| {
            format!("127.0.0.{}:{}", 2 + i / 60000, 1024 + i % 60000)
                .parse()
                .unwrap()
        })
        .collect();
    let (mut text, sock) = setup("admin", 2, &servers, "");
    text = text.replace(
        "level = \"admin\"",
        &format!("level = \"admin\"\nhttp = \"{page}\""),
    );
    (text, sock)
}

/// What the review found, each in its adversarial form: a huge `set
/// timeout cli`; silent clients asking for big answers (the master's memory
/// stays bounded, others are answered, extra clients are refused); an idle
/// master with thousands of rows uses no CPU; a takeover with the stats
/// page; a page moved by a reload leaves nothing listening on the old
/// port; the answer to a dropped client's query goes to nobody else; a
/// long query argument is answered at once.
#[test]
fn bounds_hold_against_hostile_clients() {
    let page: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (text, sock) = big_setup(3000, page);
    let c = Corral::start(&text);
    let master = c.master_pid();
    // A timeout the Instant arithmetic would overflow on.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"prompt\nset timeout cli 18446744073709551615\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(is_alive(master), "the master died of a timeout");
    assert!(cmd(&sock, "show info").contains("Name: corral"));
    drop(s);
    // Silent hogs asking for a big JSON dump.
    let json_len = cmd(&sock, "show stat json").len();
    assert!(json_len > 10 << 20, "the dump is big: {json_len}");
    let rss0 = rss_kb(master);
    let hogs: Vec<UnixStream> = (0..20)
        .map(|_| {
            let mut h = UnixStream::connect(&sock).unwrap();
            h.write_all(b"show stat json\n").unwrap();
            h
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert!(cmd(&sock, "show info").contains("Pid: "));
    // Debug build, other tests running beside: a blocked loop would take
    // as long as the hogs' whole answers (seconds), not this.
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "show info took {:?}",
        t.elapsed()
    );
    let rss1 = rss_kb(master);
    assert!(
        rss1 < rss0 + 20 * 1024 * 2,
        "20 silent readers of a {json_len}-byte answer: master RSS {rss0} -> {rss1} KiB"
    );
    // Beyond the client bound, the least recently active client goes: a
    // crowd of idle sessions (even with a year's timeout) cannot lock an
    // operator out.
    let mut first = UnixStream::connect(&sock).unwrap();
    first
        .write_all(b"prompt\nset timeout cli 31536000\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let more: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let t = Instant::now();
    assert!(
        cmd(&sock, "show info").contains("Pid: "),
        "an operator is locked out"
    );
    assert!(t.elapsed() < Duration::from_millis(1000));
    first
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut got = Vec::new();
    let _ = first.read_to_end(&mut got);
    assert!(
        got.ends_with(b"> "),
        "the oldest idle client was closed after its prompt"
    );
    drop(more);
    drop(hogs);
    std::thread::sleep(Duration::from_millis(300));
    // Idle: 3000 rows, no traffic, no clients: no CPU (after the one
    // sample that follows the last activity).
    std::thread::sleep(Duration::from_millis(1500));
    let before = cpu_ticks(master);
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_ticks(master) - before;
    assert!(
        used <= 1,
        "an idle master used {used} ticks (10 ms each) in 4 s"
    );
    // A long argument to a query is answered at once.
    let t = Instant::now();
    let long = format!("show errors {}", "x".repeat(3000));
    assert!(cmd(&sock, &long).starts_with("Total events"));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    // The page moves with a reload; the old port is closed by everyone.
    let page2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let moved = text.replace(&page.to_string(), &page2.to_string());
    let cfg_path = c.config_path.clone();
    std::fs::write(&cfg_path, &moved).unwrap();
    let r = cmd(&sock, "reload");
    assert!(r.starts_with("Success=1"), "{r}");
    wait_for("the page on its new port", Duration::from_secs(10), || {
        is_listening(page2)
    });
    wait_for("the old port closed", Duration::from_secs(10), || {
        !is_listening(page)
    });
    drop(c);
}

/// The answer to a query whose client went away is dropped, not given to
/// the next client that gets the same slot.
#[test]
fn a_dropped_clients_query_answer_goes_to_nobody() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("admin", 2, &[s0.addr], "");
    let c = Corral::start(&text);
    let w = c.worker_pids()[0];
    let pid = nix::unistd::Pid::from_raw(w);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut a = UnixStream::connect(&sock).unwrap();
    a.write_all(b"prompt\nset timeout cli 1\nshow errors\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    let info = cmd(&sock, "show info");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(info.contains("Name: corral"), "{info}");
    assert!(!info.contains("Total events"), "B got A's answer: {info}");
    drop(a);
}

/// A server found DOWN stays DOWN when the worker that checks it is
/// killed: its replacement goes on from the shared state.
#[test]
fn a_down_server_stays_down_when_its_checker_dies() {
    let up = Origin::start("s0");
    let dead = dead_addr();
    let (text, sock) = setup(
        "admin",
        2,
        &[up.addr, dead],
        "check = { interval = \"200ms\", fall = 3, rise = 2 }",
    );
    let c = Corral::start(&text);
    let status = || field(&stat_row(&cmd(&sock, "show stat"), "app", "s1"), "status").to_string();
    wait_for("s1 DOWN", Duration::from_secs(10), || status() == "DOWN");
    for w in c.worker_pids() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(w),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let st = status();
        assert!(
            !st.starts_with("UP"),
            "a dead server came back {st} after its checker died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("the workers back", Duration::from_secs(10), || {
        c.worker_pids().len() == 2
    });
    for _ in 0..10 {
        assert_eq!(get_one(c.addr()), "s0", "traffic went to the dead server");
    }
}

/// Times (lastsess, lastchg) survive a reload.
#[test]
fn times_survive_a_reload() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("admin", 1, &[s0.addr], "");
    let c = Corral::start(&text);
    get_one(c.addr());
    let before = field(&stat_row(&cmd(&sock, "show stat"), "app", "s0"), "lastsess").to_string();
    assert_ne!(before, "-1");
    let r = cmd(&sock, "reload");
    assert!(r.starts_with("Success=1"), "{r}");
    let after = field(&stat_row(&cmd(&sock, "show stat"), "app", "s0"), "lastsess").to_string();
    assert_ne!(after, "-1", "lastsess lost at the reload");
    drop(c);
}

/// `--takeover` of an instance that serves the stats page: the new one
/// binds beside it, takes over, and the page then comes from the new one.
#[test]
fn a_takeover_keeps_the_stats_page() {
    let page: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (text, sock) = big_setup(2, page);
    let mut a = Corral::start(&text);
    let sock_arg = sock.to_str().unwrap().to_owned();
    let b = Corral::start_from(Path::new(corral_bin()), &["--takeover", &sock_arg], &text);
    let status = a.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the old instance: {status:?}\n{}\n{}",
        a.stderr_text(),
        b.stderr_text()
    );
    let info = cmd(&sock, "show info");
    assert!(info.contains(&format!("Pid: {}", b.master_pid())), "{info}");
    let r = common::http::request(page, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("corral_process_workers 2"));
}

/// `corral --reload -f FILE` (what the packaged unit's ExecReload runs):
/// waits for the outcome, exit 0 on success; a reload the running
/// instance refuses (a port taken) exits 1 with the reason, and the
/// instance goes on serving; a config this binary refuses exits 1 before
/// asking.
#[test]
fn the_reload_client_reports_the_outcome() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("admin", 1, &[s0.addr], "");
    let c = Corral::start(&text);
    let path = c.config_path.clone();
    let run = |p: &Path| {
        std::process::Command::new(corral_bin())
            .args(["--reload", "-f"])
            .arg(p)
            .output()
            .unwrap()
    };
    let ok = run(&path);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(out.starts_with("Success=1"), "{out}");
    assert!(cmd(&sock, "show info").contains("Generation: 2"));
    // A port another process holds: the running instance refuses.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = text.replace(
        "default_backend = \"app\"",
        &format!(
            "default_backend = \"app\"\n\n[frontend.extra]\nbind = \"{}\"\ndefault_backend = \"app\"",
            taken.local_addr().unwrap()
        ),
    );
    std::fs::write(&path, &busy).unwrap();
    let bad = run(&path);
    let out = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(
        out.starts_with("Success=0") && out.contains("cannot bind"),
        "{out}"
    );
    assert_eq!(get_one(c.addr()), "s0", "still serving");
    // A config this binary refuses: no question asked.
    std::fs::write(&path, "[global]\nworkers = 0\n").unwrap();
    let refused = run(&path);
    assert_eq!(refused.status.code(), Some(1));
    let info = cmd(&sock, "show info");
    assert!(
        info.contains("Generation: 2") && info.contains("FailedReloads: 1\n"),
        "no reload was tried: {info}"
    );
    drop(taken);
}

/// A burst after an idle spell is rated over its own second, not over the
/// spell (the master samples nothing while idle).
#[test]
fn a_burst_after_idle_is_rated_over_its_second() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("admin", 2, &[s0.addr], "");
    let c = Corral::start(&text);
    std::thread::sleep(Duration::from_millis(3500));
    for _ in 0..40 {
        get_one(c.addr());
    }
    std::thread::sleep(Duration::from_millis(1200));
    let fe = stat_row(&cmd(&sock, "show stat"), "web", "FRONTEND");
    let max: u64 = field(&fe, "rate_max").parse().unwrap();
    assert!(
        max >= 30,
        "40 requests in well under a second after 3.5 s idle: rate_max {max}"
    );
}

/// When the socket cannot reload (level below admin), `corral --reload`
/// falls back to SIGUSR2 to `$MAINPID` (what systemd gives ExecReload) and
/// says the outcome is not waited for; the reload happens.
#[test]
fn the_reload_client_falls_back_to_the_signal() {
    let s0 = Origin::start("s0");
    let (text, sock) = setup("operator", 1, &[s0.addr], "");
    let c = Corral::start(&text);
    let out = std::process::Command::new(corral_bin())
        .args(["--reload", "-f"])
        .arg(&c.config_path)
        .env("MAINPID", c.master_pid().to_string())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("SIGUSR2 sent"), "{said}");
    wait_for("the reload", Duration::from_secs(10), || {
        cmd(&sock, "show info").contains("Generation: 2")
    });
    let none = std::process::Command::new(corral_bin())
        .args(["--reload", "-f"])
        .arg(&c.config_path)
        .env_remove("MAINPID")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1), "no pid known: {none:?}");
}
