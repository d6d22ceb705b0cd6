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
    /// generation than the master's are "old workers" in `show proc`).
    pub draining: bool,
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
    /// Connections open in the current generation's workers.
    pub curr_conns: u64,
    /// Connections accepted by the current generation's workers.
    pub cum_conns: u64,
    /// Pipes lent out for splicing.
    pub pipes_used: u64,
    /// Idle pooled pipes.
    pub pipes_free: u64,
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
        "show proc",
        "show the master and its workers, current and old",
        Level::User,
    ),
    (
        "show table [<name>]",
        "report table usage stats or dump a table's contents",
        Level::User,
    ),
    (
        "clear table <name> [key <k>]",
        "remove unused entries from a table",
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
        ["show", "table"] => Outcome::Text(table_summaries(view)),
        ["show", "table", name, ..] => {
            Outcome::Text(match view.tables.iter().find(|t| t.name() == *name) {
                None => "No such table\n".into(),
                Some(t) if !need(Level::Operator) => {
                    format!(
                        "{}# contents not dumped due to insufficient privileges\n",
                        table_summary(t)
                    )
                }
                Some(t) => dump_table(t, view.slot),
            })
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
        ("CurrConns", v.curr_conns.to_string()),
        ("CumConns", v.cum_conns.to_string()),
        ("Maxpipes", (v.cfg.global.maxconn / 2).to_string()),
        ("PipesUsed", v.pipes_used.to_string()),
        ("PipesFree", v.pipes_free.to_string()),
        ("Nbworkers", v.cfg.global.workers.to_string()),
        ("Generation", v.master.generation.to_string()),
        ("Reloads", v.master.generation.saturating_sub(1).to_string()),
        ("FailedReloads", v.failed_reloads.to_string()),
        ("Tasks", v.workers.len().to_string()),
        ("Run_queue", "0".into()),
        ("node", hostname()),
        ("Stopping", "0".into()),
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
                "{:<16} {:<15} {:<15} {:<15} {} gen={} id={}{}",
                w.pid,
                "worker",
                m.generation.saturating_sub(w.generation),
                uptime_short(w.started.elapsed().unwrap_or_default()),
                crate::version(),
                w.generation,
                w.id,
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

/// `show table NAME`: the summary line, then one line per live entry.
fn dump_table(t: &StickTable<'_>, slot: usize) -> String {
    let mut s = table_summary(t);
    let seg = t.segment();
    let now = now_ms();
    let guard = seg.epoch().pin(slot);
    t.for_each(&guard, now, |e| {
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
    });
    s
}
