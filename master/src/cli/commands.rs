//! Runtime API commands the master answers itself. Output formats follow
//! HAProxy's (`show info` keys, `show table` lines, `show proc` table) so
//! scripts written for it keep working.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_config::{Config, KeyType, Level};
use corral_shm::freq::now_ms;
use corral_shm::table::DataTypeName;
use corral_shm::StickTable;

use super::Client;

/// What the master must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this answer.
    Text(String),
    /// Reload; the answer comes from the next generation.
    Reload,
    /// Hand the listening sockets and the segment over (`_getsocks`).
    GetSocks,
    /// Close the connection.
    Quit,
    /// Nothing to send (e.g. `set timeout cli`, `prompt`).
    Silent,
    /// A dump streamed as the client reads (`show table NAME`).
    Dump(TableDump),
}

/// One process row of `show proc`.
#[derive(Debug, Clone)]
pub struct ProcRow {
    /// Pid.
    pub pid: i32,
    /// Worker number (0 for the master).
    pub id: usize,
    /// Config generation.
    pub generation: u32,
    /// Start time.
    pub started: SystemTime,
    /// Soft-stopped, finishing its connections (workers of an older
    /// generation than the master's are "old workers" in `show proc`). For
    /// the master: a soft stop is under way.
    pub draining: bool,
    /// The worker's published counters (`corral_worker::counters`), empty
    /// when unknown.
    pub counters: Vec<u64>,
    /// Its epoch slot in the segment (`None`: foreign to the master's
    /// segment, or the master itself).
    pub slot: Option<usize>,
}

impl ProcRow {
    /// Counter `k` of this worker (0 when unknown).
    pub fn counter(&self, k: usize) -> u64 {
        self.counters.get(k).copied().unwrap_or(0)
    }
}

/// What the master shows to commands.
pub struct View<'a> {
    /// The running configuration.
    pub cfg: &'a Config,
    /// The stick tables, in config order.
    pub tables: &'a [StickTable<'static>],
    /// The master's own row (generation = current).
    pub master: ProcRow,
    /// Reloads that failed.
    pub failed_reloads: u32,
    /// Workers, current and old.
    pub workers: Vec<ProcRow>,
    /// This master's epoch slot (for `clear table` locks).
    pub slot: usize,
    /// Connections counted by workers that are gone.
    pub carried_conns: u64,
    /// Process log lines the master dropped.
    pub master_dropped_logs: u64,
    /// Counter rows of every generation still held, current first.
    pub stats: Vec<corral_shm::stats::StatsRegion>,
    /// The current generation's server health flags.
    pub health: corral_shm::flags::SharedFlags,
}

impl View<'_> {
    /// Sum of counter `k` over every live worker, current and old.
    fn sum(&self, k: usize) -> u64 {
        self.workers.iter().map(|w| w.counter(k)).sum()
    }

    /// Sum of counter `k` over the current generation's workers.
    fn sum_current(&self, k: usize) -> u64 {
        self.current().map(|w| w.counter(k)).sum()
    }

    /// The current generation's workers, by id.
    fn current(&self) -> impl Iterator<Item = &ProcRow> {
        let g = self.master.generation;
        let mut v: Vec<&ProcRow> = self.workers.iter().filter(|w| w.generation == g).collect();
        v.sort_by_key(|w| w.id);
        v.into_iter()
    }
}

const HELP: &[(&str, &str, Level)] = &[
    (
        "help [<command>]",
        "list matching or all commands",
        Level::User,
    ),
    (
        "prompt [help|n|i|p|timed]*",
        "toggle interactive mode with prompt",
        Level::User,
    ),
    ("quit", "disconnect", Level::User),
    (
        "set timeout cli <delay>",
        "change this session's idle timeout (seconds)",
        Level::User,
    ),
    (
        "show info",
        "report information about the running process",
        Level::User,
    ),
    (
        "show stat",
        "report counters for each proxy and server (CSV)",
        Level::User,
    ),
    (
        "show proc",
        "show the master and its workers, current and old",
        Level::User,
    ),
    (
        "show activity",
        "show per-worker activity counters (accepts, wakeups, timers)",
        Level::User,
    ),
    (
        "show table [<name>]",
        "report table usage stats or dump a table's contents",
        Level::User,
    ),
    (
        "clear table <name>",
        "remove unused entries from a table",
        Level::Admin,
    ),
    (
        "set table <name> key <k> [data.<type> <v>]*",
        "create or update an entry",
        Level::Admin,
    ),
    (
        "reload",
        "reload the configuration (answers Success=1 or 0)",
        Level::Admin,
    ),
    (
        "_getsocks",
        "hand the listeners and segment over (takeover)",
        Level::Admin,
    ),
];

fn help(level: Level) -> String {
    let mut s = String::from("The following commands are valid at this level:\n");
    for (usage, desc, need) in HELP {
        if level >= *need {
            let _ = writeln!(s, "  {usage:<32}: {desc}");
        }
    }
    s
}

/// Runs one command for `client`.
pub fn execute(words: &[String], client: &mut Client, view: &View<'_>) -> Outcome {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let need = |lvl: Level| client.level >= lvl;
    match w.as_slice() {
        ["help", ..] => Outcome::Text(help(client.level)),
        ["quit"] => Outcome::Quit,
        ["prompt", rest @ ..] => {
            match rest.first() {
                None => {
                    client.interactive = !client.interactive;
                    client.prompt = client.interactive;
                }
                Some(&"n") => {
                    client.interactive = false;
                    client.prompt = false;
                }
                Some(&"i") => {
                    client.interactive = true;
                    client.prompt = false;
                }
                Some(&"p") | Some(&"timed") => {
                    client.interactive = true;
                    client.prompt = true;
                }
                Some(other) => return Outcome::Text(format!("Unknown prompt mode '{other}'.\n")),
            }
            Outcome::Silent
        }
        ["set", "timeout", "cli", secs] => match secs.parse::<u64>() {
            Ok(n) if n > 0 => {
                client.timeout = Duration::from_secs(n);
                Outcome::Silent
            }
            _ => Outcome::Text("Expects an integer value.\n".into()),
        },
        ["show", "info", ..] => Outcome::Text(show_info(view)),
        ["show", "proc", ..] => Outcome::Text(show_proc(view)),
        ["show", "stat", ..] => {
            Outcome::Text(super::stat::show_stat(view.cfg, &view.stats, &view.health))
        }
        ["show", "activity", ..] => Outcome::Text(show_activity(view)),
        ["show", "table"] => Outcome::Text(table_summaries(view)),
        ["show", "table", name, ..] => match view.tables.iter().position(|t| t.name() == *name) {
            None => Outcome::Text("No such table\n".into()),
            Some(i) if !need(Level::Operator) => Outcome::Text(format!(
                "{}# contents not dumped due to insufficient privileges\n",
                table_summary(&view.tables[i])
            )),
            Some(i) => Outcome::Dump(TableDump::new(i)),
        },
        ["set", "table", ..] if !need(Level::Admin) => Outcome::Text("Permission denied\n".into()),
        ["set", "table", name, "key", key, data @ ..] => {
            match view.tables.iter().find(|t| t.name() == *name) {
                None => Outcome::Text("No such table\n".into()),
                Some(t) => match set_table(t, key, data, view.slot) {
                    Ok(()) => Outcome::Silent,
                    Err(e) => Outcome::Text(format!("{e}\n")),
                },
            }
        }
        ["set", "table", ..] => {
            Outcome::Text("Usage: set table <name> key <k> [data.<type> <value>]*\n".into())
        }
        ["clear", "table", ..] if !need(Level::Admin) => {
            Outcome::Text("Permission denied\n".into())
        }
        ["clear", "table", name] => match view.tables.iter().find(|t| t.name() == *name) {
            None => Outcome::Text("No such table\n".into()),
            Some(t) => {
                t.clear(view.slot);
                Outcome::Silent
            }
        },
        ["reload"] | ["_getsocks"] if !need(Level::Admin) => {
            Outcome::Text("Permission denied\n".into())
        }
        ["reload"] => Outcome::Reload,
        ["_getsocks"] => Outcome::GetSocks,
        [first, ..] => Outcome::Text(format!(
            "Unknown command: '{first}'. Please enter one of the following commands only:\n{}",
            help(client.level)
                .lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join("\n")
        )),
        [] => Outcome::Silent,
    }
}

/// `3d 4h05m06s` as HAProxy prints uptimes in `show info`.
fn uptime_long(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "{}d {}h{:02}m{:02}s",
        s / 86400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

/// `0d00h05m12s` as `show proc` prints them.
fn uptime_short(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "{}d{:02}h{:02}m{:02}s",
        s / 86400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".into(), |s| s.trim().to_string())
}

fn show_info(v: &View<'_>) -> String {
    use corral_worker::counters::*;
    let up = v.master.started.elapsed().unwrap_or_default();
    let fields: Vec<(&str, String)> = vec![
        ("Name", "corral".into()),
        ("Version", crate::version().into()),
        ("Release_date", crate::RELEASE_DATE.into()),
        ("Nbthread", "1".into()),
        ("Nbproc", "1".into()),
        ("Process_num", "1".into()),
        ("Pid", v.master.pid.to_string()),
        ("Uptime", uptime_long(up)),
        ("Uptime_sec", up.as_secs().to_string()),
        ("Maxconn", v.cfg.global.maxconn.to_string()),
        ("Hard_maxconn", v.cfg.global.maxconn.to_string()),
        ("CurrConns", v.sum(CUR_CONNS).to_string()),
        ("CumConns", (v.carried_conns + v.sum(CUM_CONNS)).to_string()),
        ("Maxpipes", v.sum_current(MAX_PIPES).to_string()),
        ("PipesUsed", v.sum(PIPES_USED).to_string()),
        ("PipesFree", v.sum(PIPES_FREE).to_string()),
        ("Nbworkers", v.cfg.global.workers.to_string()),
        ("Generation", v.master.generation.to_string()),
        ("Reloads", v.master.generation.saturating_sub(1).to_string()),
        ("FailedReloads", v.failed_reloads.to_string()),
        ("Tasks", v.workers.len().to_string()),
        ("Run_queue", v.sum(RUN_QUEUE).to_string()),
        ("node", hostname()),
        ("Stopping", u8::from(v.master.draining).to_string()),
        (
            "DroppedLogs",
            (v.master_dropped_logs + v.sum(LOG_DROPPED)).to_string(),
        ),
        (
            "Listeners",
            v.cfg
                .frontends
                .iter()
                .map(|f| f.bind.len())
                .sum::<usize>()
                .to_string(),
        ),
        (
            "Start_time_sec",
            v.master
                .started
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                .to_string(),
        ),
    ];
    let mut s = String::new();
    for (k, val) in fields {
        let _ = writeln!(s, "{k}: {val}");
    }
    s
}

/// `show activity` as HAProxy prints it with one column per thread: here
/// one per worker of the current generation (`name: total [ w1 w2 ... ]`).
fn show_activity(v: &View<'_>) -> String {
    use corral_worker::counters::*;
    let rows: Vec<&ProcRow> = v.current().collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "thread_id: 1 (1..{})", rows.len().max(1));
    let _ = writeln!(s, "date_now: {}.{:06}", now.as_secs(), now.subsec_micros());
    for (name, k) in [
        ("loops", LOOPS),
        ("accepted", ACCEPTED),
        ("accept_empty", ACCEPT_EMPTY),
        ("curr_conns", CUR_CONNS),
        ("run_queue", RUN_QUEUE),
        ("timers", TIMERS),
        ("log_dropped", LOG_DROPPED),
    ] {
        let vals: Vec<u64> = rows.iter().map(|w| w.counter(k)).collect();
        let total: u64 = vals.iter().sum();
        if vals.len() <= 1 {
            let _ = writeln!(s, "{name}: {total}");
        } else {
            let each: Vec<String> = vals.iter().map(u64::to_string).collect();
            let _ = writeln!(s, "{name}: {total} [ {} ]", each.join(" "));
        }
    }
    s
}

fn show_proc(v: &View<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "#{:<15} {:<15} {:<15} {:<15} <version>",
        "<PID>", "<type>", "<reloads>", "<uptime>"
    );
    let m = &v.master;
    let _ = writeln!(
        s,
        "{:<16} {:<15} {:<15} {:<15} {}",
        m.pid,
        "master",
        format!(
            "{} [failed: {}]",
            m.generation.saturating_sub(1),
            v.failed_reloads
        ),
        uptime_short(m.started.elapsed().unwrap_or_default()),
        crate::version()
    );
    for (title, old) in [("# workers", false), ("# old workers", true)] {
        let _ = writeln!(s, "{title}");
        for w in v
            .workers
            .iter()
            .filter(|w| (w.generation < m.generation) == old)
        {
            let _ = writeln!(
                s,
                "{:<16} {:<15} {:<15} {:<15} {} gen={} id={} {}{}",
                w.pid,
                "worker",
                m.generation.saturating_sub(w.generation),
                uptime_short(w.started.elapsed().unwrap_or_default()),
                crate::version(),
                w.generation,
                w.id,
                w.slot
                    .map_or_else(|| "foreign".to_string(), |n| format!("slot={n}")),
                if w.draining { " draining" } else { "" }
            );
        }
    }
    s
}

fn table_summary(t: &StickTable<'_>) -> String {
    let l = t.layout();
    format!(
        "# table: {}, type: {}, size:{}, used:{}\n",
        t.name(),
        l.key_type.as_str(),
        l.size,
        t.len()
    )
}

fn table_summaries(v: &View<'_>) -> String {
    v.tables.iter().map(|t| table_summary(t)).collect()
}

fn format_key(k: KeyType, b: &[u8]) -> String {
    match (k, b.len()) {
        (KeyType::Ip, 4) => Ipv4Addr::from(<[u8; 4]>::try_from(b).expect("4 bytes")).to_string(),
        (KeyType::Ipv6, 16) => {
            Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes")).to_string()
        }
        (KeyType::Integer, 4) => u32::from_be_bytes(b.try_into().expect("4 bytes")).to_string(),
        (KeyType::String, _) => String::from_utf8_lossy(b).into_owned(),
        _ => b.iter().map(|x| format!("{x:02X}")).collect(),
    }
}

/// Buckets walked per pin: bounds how long a dump keeps retired entries
/// from being reused, and how much it writes at a time.
const DUMP_BUCKETS: u32 = 256;
/// Buckets walked per step of a dump (then other clients get a turn).
pub const DUMP_STEP_BUCKETS: u32 = 16 * 1024;

/// `show table NAME`, streamed: the summary line, then one line per live
/// entry, produced a few buckets at a time as the client reads, so a dump
/// of a 1 M-entry table neither stalls the master loop nor holds its whole
/// text in memory. Entries added behind the cursor during the dump may be
/// missed (as in HAProxy, a dump is not a snapshot).
#[derive(Debug, PartialEq, Eq)]
pub struct TableDump {
    table: usize,
    cursor: Option<(u32, u32)>,
}

impl TableDump {
    fn new(table: usize) -> TableDump {
        TableDump {
            table,
            cursor: None,
        }
    }

    /// Appends at least `want` bytes (or the rest) to `out`. Returns true
    /// when the dump is complete.
    pub fn step(
        &mut self,
        tables: &[StickTable<'static>],
        slot: usize,
        out: &mut Vec<u8>,
        want: usize,
    ) -> bool {
        let Some(t) = tables.get(self.table) else {
            return true;
        };
        let start = out.len();
        let mut cursor = match self.cursor {
            Some(c) => c,
            None => {
                out.extend_from_slice(table_summary(t).as_bytes());
                (0, 0)
            }
        };
        let now = now_ms();
        let mut line = String::new();
        let mut walked = 0;
        while out.len() - start < want && walked < DUMP_STEP_BUCKETS {
            walked += DUMP_BUCKETS;
            let guard = t.segment().epoch().pin(slot);
            let next = t.for_each_from(&guard, now, cursor, DUMP_BUCKETS, |e| {
                line.clear();
                entry_line(t, &e, now, &mut line);
                out.extend_from_slice(line.as_bytes());
            });
            drop(guard);
            match next {
                Some(c) => cursor = c,
                None => {
                    self.cursor = Some(cursor);
                    return true;
                }
            }
        }
        self.cursor = Some(cursor);
        false
    }
}

fn entry_line(t: &StickTable<'_>, e: &corral_shm::EntryRef<'_>, now: u32, s: &mut String) {
    let key = e.key_copy().unwrap_or_default();
    let _ = write!(
        s,
        "0x{:x}: key={} use={} exp={} shard={}",
        e.id(),
        format_key(t.layout().key_type, &key),
        e.use_count(),
        e.expires_in(now).unwrap_or(0),
        e.shard()
    );
    for (name, period, value) in e.values(now) {
        let value = if name == DataTypeName::ServerId {
            value & 0xFFFF_FFFF
        } else {
            value
        };
        if period > 0 {
            let _ = write!(s, " {}({period})={value}", name.as_str());
        } else {
            let _ = write!(s, " {}={value}", name.as_str());
        }
    }
    s.push('\n');
}

/// Parses a key as `show table` prints it for this table's type.
fn parse_key(k: KeyType, text: &str, key_len: usize) -> Option<Vec<u8>> {
    match k {
        KeyType::Ip => text.parse::<Ipv4Addr>().ok().map(|a| a.octets().to_vec()),
        KeyType::Ipv6 => match text.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V6(a) => Some(a.octets().to_vec()),
            std::net::IpAddr::V4(a) => Some(a.to_ipv6_mapped().octets().to_vec()),
        },
        KeyType::Integer => text.parse::<u32>().ok().map(|n| n.to_be_bytes().to_vec()),
        KeyType::String => (text.len() <= key_len).then(|| text.as_bytes().to_vec()),
        KeyType::Binary => {
            let hex = text.as_bytes();
            if !hex.len().is_multiple_of(2)
                || hex.len() / 2 > key_len
                || !hex.iter().all(u8::is_ascii_hexdigit)
            {
                return None;
            }
            hex.chunks(2)
                .map(|d| {
                    let v = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    Some(v(d[0]) << 4 | v(d[1]))
                })
                .collect()
        }
    }
}

/// `set table NAME key K [data.TYPE VALUE]...`: creates the entry if needed
/// and sets the given counters (rates cannot be set).
fn set_table(t: &StickTable<'static>, key: &str, data: &[&str], slot: usize) -> Result<(), String> {
    let layout = t.layout();
    let key = parse_key(layout.key_type, key, layout.key_len as usize).ok_or_else(|| {
        format!(
            "Invalid key for a table of type {}",
            layout.key_type.as_str()
        )
    })?;
    if !data.len().is_multiple_of(2) {
        return Err("Usage: set table <name> key <k> [data.<type> <value>]*".into());
    }
    let mut sets = Vec::new();
    for pair in data.chunks(2) {
        let Some(name) = pair[0].strip_prefix("data.") else {
            return Err(format!("Unexpected '{}': expected data.<type>", pair[0]));
        };
        let dt = DataTypeName::parse(name).ok_or_else(|| format!("Unknown data type '{name}'"))?;
        if dt.is_rate() {
            return Err(format!("'{name}' is a rate: it cannot be set"));
        }
        if layout.data_off(dt).is_none() {
            return Err(format!("Data type '{name}' not stored in this table"));
        }
        let v: u64 = pair[1]
            .parse()
            .map_err(|_| format!("Invalid value '{}' for {name}", pair[1]))?;
        sets.push((dt, v));
    }
    let now = now_ms();
    let guard = t.segment().epoch().pin(slot);
    let e = t
        .get_or_create(&guard, slot, &key, now)
        .ok_or("The table is full of entries in use")?;
    for (dt, v) in sets {
        if let Some(c) = e.counter(dt) {
            c.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}
