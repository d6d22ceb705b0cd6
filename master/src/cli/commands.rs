//! Runtime API commands the master answers itself. Output formats follow
//! HAProxy's (`show info` keys, `show table` lines, `show proc` table) so
//! scripts written for it keep working.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_config::{Config, Level};
use corral_shm::StickTable;

use super::history::History;
use super::stat::{self, StatCtx};
use super::stat_dump::{self, StatDump};
use super::table::{self, TableDump};
use super::totals::Totals;
use super::{info, servers, typed, Client};

/// An answer streamed as the client reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Dump {
    /// `show table NAME`.
    Table(TableDump),
    /// `show stat`.
    Stat(StatDump),
}

impl Dump {
    /// Appends about `want` more bytes; true when complete.
    pub fn step(&mut self, view: &View<'_>, out: &mut Vec<u8>, want: usize) -> bool {
        match self {
            Dump::Table(d) => d.step(view.tables, view.slot, out, want),
            Dump::Stat(d) => d.step(view, out, want),
        }
    }
}

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
    /// A dump streamed as the client reads (`show table NAME`, `show stat`).
    Dump(Dump),
    /// Ask the workers (`show sess`, `show errors`): a query kind of
    /// `corral_worker::query` and its argument.
    Query(u8, String),
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
    /// The HTTP caches, in config order.
    pub caches: &'a [corral_shm::cache::Cache<'static>],
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
    /// Rates, maxima and averages over time.
    pub history: &'a RefCell<History>,
}

impl View<'_> {
    /// The counter rows, indexed for this query.
    pub fn totals(&self) -> Totals<'_> {
        Totals::new(&self.stats)
    }

    /// Folds what happened since the last look into maxima and averages
    /// (every query that shows them does this first).
    pub fn observe(&self, totals: &Totals<'_>) {
        let keys = crate::shared::row_keys(self.cfg);
        self.history
            .borrow_mut()
            .observe(totals, &keys, Instant::now());
    }

    /// `show stat`'s rows (all of them: the page and `/metrics`).
    pub fn stat_rows(&self) -> Vec<stat::StatRow> {
        self.observe(&self.totals());
        self.with_stat_ctx(stat::rows)
    }

    /// Runs `f` with what `show stat`'s rows are made from.
    pub fn with_stat_ctx<R>(&self, f: impl FnOnce(&StatCtx<'_>) -> R) -> R {
        let totals = self.totals();
        let history = self.history.borrow();
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        f(&StatCtx {
            cfg: self.cfg,
            totals: &totals,
            health: &self.health,
            history: &history,
            now: Instant::now(),
            now_unix: unix(SystemTime::now()),
            started_unix: unix(self.master.started),
        })
    }

    /// Sum of counter `k` over every live worker, current and old.
    pub fn sum(&self, k: usize) -> u64 {
        self.workers.iter().map(|w| w.counter(k)).sum()
    }

    /// Sum of counter `k` over the current generation's workers.
    pub fn sum_current(&self, k: usize) -> u64 {
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
        "show info [typed|json]",
        "report information about the running process",
        Level::User,
    ),
    (
        "show stat [<iid|px> <type> <sid>] [typed|json] [up|no-maint]",
        "report counters for each proxy and server",
        Level::User,
    ),
    (
        "show servers state [<backend>]",
        "dump volatile server information",
        Level::User,
    ),
    (
        "get weight <bk>/<srv>",
        "report a server's current weight",
        Level::User,
    ),
    (
        "show proc",
        "show the master and its workers, current and old",
        Level::User,
    ),
    (
        "show activity",
        "show per-worker activity counters",
        Level::User,
    ),
    (
        "show pools",
        "report the workers' connection and pipe pools",
        Level::User,
    ),
    (
        "show table [<name> [<filter>]]",
        "report table usage stats or dump a table's contents",
        Level::User,
    ),
    (
        "show cache [<name>]",
        "show the HTTP caches: blocks, objects, hits, misses, stores, evictions",
        Level::User,
    ),
    (
        "clear cache <name> [uri <uri>]",
        "remove every object of a cache, or those of one URI",
        Level::Admin,
    ),
    (
        "check cache <name>",
        "verify a cache's structure (every block and object in one place)",
        Level::Admin,
    ),
    (
        "clear counters [all]",
        "clear max statistics counters (or all counters)",
        Level::Operator,
    ),
    (
        "clear table <name> [<filter>]",
        "remove unused entries from a table (filter: data/key)",
        Level::Admin,
    ),
    (
        "set table <name> key <k> [data.<type> <v>]*",
        "create or update an entry",
        Level::Admin,
    ),
    (
        "disable server <bk>/<srv>",
        "put a server in maintenance",
        Level::Admin,
    ),
    (
        "enable server <bk>/<srv>",
        "take a server out of maintenance",
        Level::Admin,
    ),
    (
        "set server <bk>/<srv> state|weight|addr ...",
        "change a server's state, weight or address",
        Level::Admin,
    ),
    (
        "set weight <bk>/<srv> <weight>[%]",
        "change a server's weight",
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

/// The level a command needs, by its first words.
fn level_needed(w: &[&str]) -> Level {
    match w {
        ["clear", "counters", "all", ..] => Level::Admin,
        ["clear", "counters", ..] | ["show", "sess" | "errors", ..] => Level::Operator,
        ["clear", "table" | "cache", ..]
        | ["check", "cache", ..]
        | ["set", "table", ..]
        | ["disable" | "enable", "server", ..]
        | ["set", "server" | "weight", ..]
        | ["reload"]
        | ["_getsocks"] => Level::Admin,
        _ => Level::User,
    }
}

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
    if client.level < level_needed(&w) {
        return Outcome::Text("Permission denied\n".into());
    }
    let need = |lvl: Level| client.level >= lvl;
    let text = |r: Result<String, String>| match r {
        Ok(t) if t.is_empty() => Outcome::Silent,
        Ok(t) => Outcome::Text(t),
        Err(e) => Outcome::Text(format!("{e}\n")),
    };
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
                // At most a year: an Instant plus any larger could overflow.
                client.timeout = Duration::from_secs(n.min(365 * 86400));
                Outcome::Silent
            }
            _ => Outcome::Text("Expects an integer value.\n".into()),
        },
        ["show", "info", rest @ ..] => {
            let fields = info::fields(view);
            Outcome::Text(if rest.contains(&"json") {
                typed::info_json(&fields)
            } else if rest.contains(&"typed") {
                typed::info_typed(&fields)
            } else {
                typed::info_text(&fields)
            })
        }
        ["show", "proc", ..] => Outcome::Text(show_proc(view)),
        ["show", "stat", rest @ ..] => match stat_dump::parse_args(rest) {
            Err(e) => Outcome::Text(format!("{e}\n")),
            Ok((filter, fmt)) => {
                view.observe(&view.totals());
                Outcome::Dump(Dump::Stat(StatDump::new(filter, fmt)))
            }
        },
        ["show", "servers", "state", rest @ ..] => {
            let totals = view.totals();
            let started = view
                .master
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            text(servers::show_state(
                view.cfg,
                &totals,
                &view.health,
                rest.first().copied(),
                started,
            ))
        }
        ["show", "activity", ..] => Outcome::Text(show_activity(view)),
        ["show", "pools", ..] => Outcome::Text(show_pools(view)),
        ["show", "sess", ..] => Outcome::Query(corral_worker::query::SHOW_SESS, String::new()),
        ["show", "errors", rest @ ..] => {
            Outcome::Query(corral_worker::query::SHOW_ERRORS, rest.join(" "))
        }
        ["show", "table"] => Outcome::Text(table::table_summaries(view.tables)),
        ["show", "table", name, filter @ ..] => {
            match view.tables.iter().position(|t| t.name() == *name) {
                None => Outcome::Text("No such table\n".into()),
                Some(i) if !need(Level::Operator) => Outcome::Text(format!(
                    "{}# contents not dumped due to insufficient privileges\n",
                    table::table_summary(&view.tables[i])
                )),
                Some(i) => match table::Filter::parse(&view.tables[i], filter) {
                    Ok(f) => Outcome::Dump(Dump::Table(TableDump::new(i, f))),
                    Err(e) => Outcome::Text(format!("{e}\n")),
                },
            }
        }
        ["set", "table", name, "key", key, data @ ..] => {
            match view.tables.iter().find(|t| t.name() == *name) {
                None => Outcome::Text("No such table\n".into()),
                Some(t) => text(table::set_table(t, key, data, view.slot).map(|()| String::new())),
            }
        }
        ["set", "table", ..] => {
            Outcome::Text("Usage: set table <name> key <k> [data.<type> <value>]*\n".into())
        }
        ["clear", "table", name, filter @ ..] => {
            match view.tables.iter().find(|t| t.name() == *name) {
                None => Outcome::Text("No such table\n".into()),
                Some(t) => text(table::clear_table(t, filter, view.slot)),
            }
        }
        ["clear", "table"] => Outcome::Text("Usage: clear table <name> [<filter>]\n".into()),
        ["show", "cache", rest @ ..] => Outcome::Text(super::cache::show_cache(
            view.caches,
            rest.first().copied(),
            view.slot,
        )),
        ["check", "cache", name] => {
            Outcome::Text(super::cache::check_cache(view.caches, name, view.slot))
        }
        ["clear", "cache", rest @ ..] => {
            Outcome::Text(super::cache::clear_cache(view.caches, rest, view.slot))
        }
        ["clear", "counters", rest @ ..] => {
            clear_counters(view, rest == ["all"]);
            Outcome::Silent
        }
        ["reload"] => Outcome::Reload,
        ["_getsocks"] => Outcome::GetSocks,
        [first, ..] => {
            let totals = view.totals();
            match servers::execute(&w, view.cfg, &totals) {
                Some(r) => text(r),
                None => Outcome::Text(format!(
                    "Unknown command: '{first}'. Please enter one of the following commands only:\n{}",
                    help(client.level)
                        .lines()
                        .skip(1)
                        .collect::<Vec<_>>()
                        .join("\n")
                )),
            }
        }
        [] => Outcome::Silent,
    }
}

/// `clear counters`: the maxima the master keeps (and the workers'
/// per-request ones); with `all`, every counter too. Counters have one
/// writer each (a worker), so they are cleared by offsetting them in the
/// master's column 0: the total then reads 0 and counts on from there,
/// and the offset carries across reloads like the rest of column 0.
/// Server state (admin, weight, address) and gauges stay.
fn clear_counters(view: &View<'_>, all: bool) {
    use corral_shm::stats::{Kind, ALL};
    let totals = view.totals();
    view.observe(&totals);
    let keys = crate::shared::row_keys(view.cfg);
    for k in &keys {
        let Some(m) = totals.master_cell(k) else {
            continue;
        };
        let sum = totals.of(k);
        for st in ALL {
            let i = st as usize;
            match st.kind() {
                Kind::Max => m.set_word(i, 0),
                Kind::Master if !st.is_server_state() && all => m.set_word(i, 0),
                Kind::Master
                    if matches!(
                        st,
                        corral_shm::stats::Stat::Smax
                            | corral_shm::stats::Stat::Qmax
                            | corral_shm::stats::Stat::RateMax
                            | corral_shm::stats::Stat::ReqRateMax
                            | corral_shm::stats::Stat::ConnRateMax
                    ) =>
                {
                    m.set_word(i, 0)
                }
                Kind::Counter if all => m.set_word(i, m.word(i).wrapping_sub(sum.0[i])),
                _ => {}
            }
        }
    }
    let mut h = view.history.borrow_mut();
    if all {
        h.reset();
    } else {
        h.max_conn_rate = 0;
        h.max_sess_rate = 0;
    }
}

/// `show pools`, HAProxy's layout over what the workers hold: client and
/// server connection state, idle server connections, pipes.
fn show_pools(v: &View<'_>) -> String {
    use corral_worker::counters::*;
    let sum = |k: usize| v.sum(k);
    let size = |k: usize| v.workers.iter().map(|w| w.counter(k)).max().unwrap_or(0);
    let grown_used = sum(PIPES_GROWN).saturating_sub(sum(PIPES_GROWN_FREE));
    let pools = [
        (
            "client_conn",
            size(CLIENT_SIZE),
            sum(CLIENT_CONNS),
            sum(CLIENT_CONNS),
            0,
        ),
        (
            "server_conn",
            size(SERVER_SIZE),
            sum(SERVER_CONNS),
            sum(SERVER_CONNS).saturating_sub(sum(POOLED_CONNS)),
            0,
        ),
        (
            "pipe",
            super::info::DEFAULT_PIPE,
            (sum(PIPES_USED) + sum(PIPES_FREE)).saturating_sub(sum(PIPES_GROWN)),
            sum(PIPES_USED).saturating_sub(grown_used),
            // Refused pipes are counted once, on the default pool (the
            // kernel makes pipes at its default size).
            sum(PIPE_FAILURES),
        ),
        (
            "pipe_grown",
            corral_worker::splice::GROWN_SIZE as u64,
            sum(PIPES_GROWN),
            grown_used,
            0,
        ),
    ];
    let users = v.workers.len();
    let mut s = String::from("Dumping pools usage. Use SIGQUIT to flush them.\n");
    let (mut alloc, mut used) = (0, 0);
    for (name, sz, n, u, failed) in pools {
        let _ = writeln!(
            s,
            "  - Pool {name} ({sz} bytes) : {n} allocated ({} bytes), {u} used, {failed} failures, {users} users",
            n * sz
        );
        alloc += n * sz;
        used += u * sz;
    }
    let _ = writeln!(
        s,
        "Total: {} pools, {alloc} bytes allocated, {used} used.",
        pools.len()
    );
    s
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
        ("naps", NAPS),
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
