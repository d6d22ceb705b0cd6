//! `show info`: HAProxy's keys in HAProxy's order and positions (those
//! corral has a value for), then corral's own (generation, reloads).

use std::time::{Duration, UNIX_EPOCH};

use corral_shm::stats::{RowKey, Stat};

use super::commands::View;
use super::typed::{InfoField, Tags};

/// `3d 4h05m06s` as HAProxy prints uptimes in `show info`.
pub fn uptime_long(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "{}d {}h{:02}m{:02}s",
        s / 86400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

/// Bytes a default-size pipe holds (the kernel's default with 4 KiB pages).
pub const DEFAULT_PIPE: u64 = 65536;

/// Bytes `pipes` pipes can hold, `grown` of them grown (see
/// `corral_worker::splice`).
fn pipe_bytes(pipes: u64, grown: u64) -> u64 {
    let grown = grown.min(pipes);
    (pipes - grown) * DEFAULT_PIPE + grown * corral_worker::splice::GROWN_SIZE as u64
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".into(), |s| s.trim().to_string())
}

/// The soft limit on open files.
fn ulimit_n() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        0
    }
}

/// Every field, in order.
pub fn fields(v: &View<'_>) -> Vec<InfoField> {
    use corral_worker::counters::*;
    let up = v.master.started.elapsed().unwrap_or_default();
    let totals = v.totals();
    let fe_sum = |s: Stat| -> u64 {
        v.cfg
            .frontends
            .iter()
            .map(|f| totals.of(&RowKey::frontend(&f.name)).get(s))
            .fold(0u64, u64::wrapping_add)
    };
    let cum_req = fe_sum(Stat::ReqTot);
    let cum_conns = v.carried_conns + v.sum(CUM_CONNS);
    let history = v.history.borrow();
    let (conn_rate, _) =
        history.global_rates([fe_sum(Stat::Stot), cum_req], std::time::Instant::now());
    let pool_bytes: u64 = v
        .workers
        .iter()
        .map(|w| {
            w.counter(CLIENT_CONNS) * w.counter(CLIENT_SIZE)
                + w.counter(SERVER_CONNS) * w.counter(SERVER_SIZE)
                + pipe_bytes(
                    w.counter(PIPES_USED) + w.counter(PIPES_FREE),
                    w.counter(PIPES_GROWN),
                )
        })
        .sum();
    let used_bytes: u64 = v
        .workers
        .iter()
        .map(|w| {
            w.counter(CLIENT_CONNS) * w.counter(CLIENT_SIZE)
                + (w.counter(SERVER_CONNS) - w.counter(POOLED_CONNS).min(w.counter(SERVER_CONNS)))
                    * w.counter(SERVER_SIZE)
                + pipe_bytes(
                    w.counter(PIPES_USED),
                    w.counter(PIPES_GROWN)
                        - w.counter(PIPES_GROWN_FREE).min(w.counter(PIPES_GROWN)),
                )
        })
        .sum();
    let listeners: usize = v.cfg.frontends.iter().map(|f| f.bind.len()).sum();
    let cur_conns = v.sum(CUR_CONNS);
    let ulimit = ulimit_n();
    const POS: Tags = ("POS", "str");
    const CGS: Tags = ("CGS", "u32");
    const CLP: Tags = ("CLP", "u32");
    const MGP: Tags = ("MGP", "u32");
    const MCP: Tags = ("MCP", "u32");
    const MMP: Tags = ("MMP", "u32");
    const MRP: Tags = ("MRP", "u32");
    let f = |pos: usize, name: &'static str, tags: Tags, value: String| InfoField {
        pos,
        name,
        tags,
        value,
    };
    vec![
        f(0, "Name", POS, "corral".into()),
        f(1, "Version", POS, crate::version().into()),
        f(2, "Release_date", POS, crate::RELEASE_DATE.into()),
        f(3, "Nbthread", CGS, "1".into()),
        f(4, "Nbproc", CGS, "1".into()),
        f(5, "Process_num", ("KGP", "u32"), "1".into()),
        f(6, "Pid", ("SGP", "u32"), v.master.pid.to_string()),
        f(7, "Uptime", ("MDP", "str"), uptime_long(up)),
        f(8, "Uptime_sec", ("MDP", "u32"), up.as_secs().to_string()),
        f(
            9,
            "Memmax_MB",
            CLP,
            v.cfg.global.memory_limit.map_or(0, |m| m >> 20).to_string(),
        ),
        f(10, "PoolAlloc_MB", MGP, (pool_bytes >> 20).to_string()),
        f(11, "PoolUsed_MB", MGP, (used_bytes >> 20).to_string()),
        f(12, "PoolFailed", MCP, v.sum(PIPE_FAILURES).to_string()),
        f(13, "Ulimit-n", CLP, ulimit.to_string()),
        f(14, "Maxsock", CLP, ulimit.to_string()),
        f(15, "Maxconn", CLP, v.cfg.global.maxconn.to_string()),
        f(16, "Hard_maxconn", CLP, v.cfg.global.maxconn.to_string()),
        f(17, "CurrConns", MGP, cur_conns.to_string()),
        f(18, "CumConns", MCP, cum_conns.to_string()),
        f(19, "CumReq", MCP, cum_req.to_string()),
        f(23, "Maxpipes", CLP, v.sum_current(MAX_PIPES).to_string()),
        f(24, "PipesUsed", MGP, v.sum(PIPES_USED).to_string()),
        f(25, "PipesFree", MGP, v.sum(PIPES_FREE).to_string()),
        f(26, "ConnRate", MRP, conn_rate.to_string()),
        f(27, "ConnRateLimit", CLP, "0".into()),
        f(
            28,
            "MaxConnRate",
            MMP,
            history.max_conn_rate.max(conn_rate).to_string(),
        ),
        f(29, "SessRate", MRP, conn_rate.to_string()),
        f(30, "SessRateLimit", CLP, "0".into()),
        f(
            31,
            "MaxSessRate",
            MRP,
            history.max_sess_rate.max(conn_rate).to_string(),
        ),
        f(
            47,
            "Tasks",
            MGP,
            (v.workers.len() as u64 + v.sum(TIMERS)).to_string(),
        ),
        f(48, "Run_queue", MGP, v.sum(RUN_QUEUE).to_string()),
        f(49, "Idle_pct", ("MaP", "u32"), history.idle_pct.to_string()),
        f(50, "node", ("COS", "str"), hostname()),
        f(52, "Stopping", MGP, u8::from(v.master.draining).to_string()),
        f(53, "Jobs", MGP, (cur_conns + listeners as u64).to_string()),
        f(54, "Unstoppable Jobs", MGP, "0".into()),
        f(55, "Listeners", MGP, listeners.to_string()),
        f(56, "ActivePeers", MGP, "0".into()),
        f(57, "ConnectedPeers", MGP, "0".into()),
        f(
            58,
            "DroppedLogs",
            MGP,
            (v.master_dropped_logs + v.sum(LOG_DROPPED)).to_string(),
        ),
        f(
            61,
            "TotalBytesOut",
            ("MGP", "u64"),
            fe_sum(Stat::Bout).to_string(),
        ),
        f(
            68,
            "PoolAlloc_bytes",
            ("MGP", "u64"),
            pool_bytes.to_string(),
        ),
        f(69, "PoolUsed_bytes", ("MGP", "u64"), used_bytes.to_string()),
        f(
            70,
            "Start_time_sec",
            ("MDP", "u32"),
            v.master
                .started
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                .to_string(),
        ),
        // corral's own, after HAProxy's.
        f(100, "Nbworkers", CGS, v.cfg.global.workers.to_string()),
        f(101, "Generation", MGP, v.master.generation.to_string()),
        f(
            102,
            "Reloads",
            MCP,
            v.master.generation.saturating_sub(1).to_string(),
        ),
        f(103, "FailedReloads", MCP, v.failed_reloads.to_string()),
    ]
}
