//! corral's control plane: the master process.
//!
//! The master binds every listener ([`bind`]), creates or inherits the shared
//! segment ([`shared`]), forks the workers and respawns them ([`master`]),
//! reloads by re-executing itself with the listeners and segment handed over
//! ([`reload`], [`handoff`]), takes over another instance ([`takeover`],
//! [`fdpass`]), serves the stats socket ([`cli`]), talks to systemd
//! ([`notify`]), names processes ([`proctitle`]) and drops privileges in
//! workers ([`privileges`]). It never touches a client byte.

pub mod bind;
pub mod cli;
pub mod fdpass;
pub mod handoff;
pub mod master;
pub mod notify;
pub mod privileges;
pub mod proctitle;
pub mod reload;
pub mod shared;
pub mod takeover;

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_config::Config;
use nix::unistd::Pid;

use crate::handoff::{Handoff, ENV};
use crate::master::{Master, OldWorker, Start};
use crate::shared::SharedSegment;

/// Release date shown by `show info` (HAProxy's Release_date).
pub const RELEASE_DATE: &str = "2026/11/23";

const fn version_marker() -> [u8; 48] {
    let prefix = b"CORRAL_VERSION=";
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    let mut out = [0u8; 48];
    let mut i = 0;
    while i < prefix.len() {
        out[i] = prefix[i];
        i += 1;
    }
    let mut j = 0;
    while j < v.len() && i + j < 47 {
        out[i + j] = v[j];
        j += 1;
    }
    out
}

/// The version as a marker in the binary's read-only data, read at run time:
/// a build with another version string is a different file on disk, which is
/// what a package upgrade replaces and a reload re-executes.
#[used]
static VERSION_MARKER: [u8; 48] = version_marker();

/// This binary's version (read from [`VERSION_MARKER`], never constant-folded).
pub fn version() -> &'static str {
    let m: &'static [u8; 48] = std::hint::black_box(&VERSION_MARKER);
    let v = &m[15..];
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    std::str::from_utf8(&v[..end]).unwrap_or("unknown")
}

/// What the command line asked of the master.
#[derive(Debug)]
pub struct Options {
    /// Where the configuration came from.
    pub config_path: PathBuf,
    /// Detach from the terminal (`-D`).
    pub daemon: bool,
    /// Where to write the master's pid (`-p`, else `[global] pidfile`).
    pub pidfile: Option<PathBuf>,
    /// Take over the instance behind this stats socket.
    pub takeover: Option<PathBuf>,
    /// The command line as given (re-used when re-executing).
    pub args: Vec<OsString>,
    /// The binary on disk (re-executed on reload).
    pub exe: PathBuf,
}

/// Starts the master (fresh, after a reload's exec, or as a takeover) and
/// runs it; returns the exit status.
pub fn run(cfg: Config, opts: Options) -> i32 {
    raise_fd_limit(&cfg);
    let handoff = std::env::var(ENV).ok();
    std::env::remove_var(ENV);
    let start = match handoff {
        Some(h) => match Handoff::decode(&h) {
            Ok(h) => from_handoff(&cfg, &opts, h),
            Err(e) => Err(format!("bad {ENV} from the previous generation: {e}")),
        },
        None => fresh(&cfg, &opts),
    };
    let start = match start {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let pidfile = opts.pidfile.clone().or_else(|| cfg.global.pidfile.clone());
    let code = match Master::new(Arc::new(cfg), start) {
        Ok(mut m) => m.run(),
        Err(e) => {
            log::error!("cannot start the master: {e}");
            1
        }
    };
    if let Some(path) = &pidfile {
        let _ = std::fs::remove_file(path);
    }
    code
}

fn base_start(
    opts: &Options,
    shared: SharedSegment,
    listeners: Vec<(usize, TcpListener)>,
) -> Start {
    Start {
        listeners,
        shared,
        stats: None,
        lifeline: None,
        generation: 1,
        failed_reloads: 0,
        started: SystemTime::now(),
        old: Vec::new(),
        reply: None,
        messages: Vec::new(),
        takeover_victim: None,
        config_path: opts.config_path.clone(),
        exe: opts.exe.clone(),
        args: opts.args.clone(),
    }
}

/// A first start, or a takeover of another instance.
fn fresh(cfg: &Config, opts: &Options) -> Result<Start, String> {
    let mut messages = Vec::new();
    let (inherited, shared, victim) = match &opts.takeover {
        Some(sock) => {
            let taken = takeover::fetch(sock).map_err(|e| format!("takeover failed: {e}"))?;
            log::info!(
                "took {} listener(s) and the shared segment over from pid {}",
                taken.listeners.len(),
                taken.pid
            );
            let shared = SharedSegment::inherit(cfg, taken.segment, 1, &mut messages)
                .map_err(|e| format!("cannot use the inherited segment: {e}"))?;
            (taken.listeners, shared, Some(taken.pid))
        }
        None => {
            let shared = SharedSegment::create(cfg, 1)
                .map_err(|e| format!("cannot create the shared segment: {e}"))?;
            (Vec::new(), shared, None)
        }
    };
    let listeners = bind::bind_all(cfg, inherited, &mut messages).map_err(|e| e.to_string())?;
    let stats =
        match &cfg.stats {
            Some(s) => {
                if victim.is_some() {
                    // Replace the previous instance's socket file: it keeps its
                    // own listening fd until it exits.
                    let _ = std::fs::remove_file(&s.socket);
                }
                Some(cli::bind(s).map_err(|e| {
                    format!("cannot bind the stats socket {}: {e}", s.socket.display())
                })?)
            }
            None => None,
        };
    if opts.daemon {
        daemonize().map_err(|e| format!("cannot daemonize: {e}"))?;
    }
    if let Some(path) = opts.pidfile.clone().or_else(|| cfg.global.pidfile.clone()) {
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pidfile {}: {e}", path.display()))?;
    }
    log::info!(
        "corral {} starting: {} worker(s), {} listener(s), config {}",
        version(),
        cfg.global.workers,
        listeners.len(),
        opts.config_path.display()
    );
    let mut start = base_start(opts, shared, listeners);
    start.stats = stats;
    start.messages = messages;
    start.takeover_victim = victim;
    Ok(start)
}

/// The start of a new generation after a reload's exec.
fn from_handoff(cfg: &Config, opts: &Options, h: Handoff) -> Result<Start, String> {
    // SAFETY (all from_raw_fd below): the previous generation names these fds
    // in the handoff record as ours; each is wrapped exactly once.
    let own = |fd: i32| unsafe { OwnedFd::from_raw_fd(fd) };
    let generation = h.generation + 1;
    let mut messages = Vec::new();
    let shared = match h.segment {
        Some(fd) => SharedSegment::inherit(cfg, own(fd), generation, &mut messages),
        None => SharedSegment::create(cfg, generation),
    }
    .map_err(|e| format!("cannot set the shared segment up: {e}"))?;
    let inherited: Vec<(TcpListener, std::net::SocketAddr)> = h
        .listeners
        .iter()
        .map(|&(fd, addr)| (TcpListener::from(own(fd)), addr))
        .collect();
    let listeners = bind::bind_all(cfg, inherited, &mut messages).map_err(|e| e.to_string())?;
    let stats = match (&cfg.stats, h.stats) {
        (Some(s), Some(fd)) => {
            let l = cli::adopt(fd).map_err(|e| e.to_string())?;
            let same = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p == s.socket))
                .unwrap_or(false);
            if same {
                std::fs::set_permissions(
                    &s.socket,
                    std::os::unix::fs::PermissionsExt::from_mode(s.mode),
                )
                .map_err(|e| e.to_string())?;
                Some(l)
            } else {
                drop(l);
                messages.push(format!("stats socket moved to {}", s.socket.display()));
                Some(cli::bind(s).map_err(|e| e.to_string())?)
            }
        }
        (Some(s), None) => Some(cli::bind(s).map_err(|e| e.to_string())?),
        (None, Some(fd)) => {
            drop(own(fd));
            None
        }
        (None, None) => None,
    };
    let level = cfg
        .stats
        .as_ref()
        .map_or(corral_config::Level::Admin, |s| s.level);
    let reply = h.cli_reply.and_then(|fd| cli::adopt_client(fd, level).ok());
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    let old = h
        .workers
        .iter()
        .map(|w| OldWorker {
            pid: Pid::from_raw(w.pid),
            id: w.id,
            epoch_slot: w.epoch_slot,
            generation: w.generation,
            started_wall: at(w.started_ms),
            draining: w.draining,
        })
        .collect();
    log::info!(
        "corral {} generation {generation}: {} worker(s), {} listener(s), {} old worker(s) to stop once ready",
        version(),
        cfg.global.workers,
        listeners.len(),
        h.workers.len()
    );
    let mut start = base_start(opts, shared, listeners);
    start.stats = stats;
    start.lifeline = h.lifeline.map(|(m, w)| (own(m), own(w)));
    start.generation = generation;
    start.failed_reloads = h.failed_reloads;
    start.started = at(h.master_started_ms);
    start.old = old;
    start.reply = reply;
    start.messages = messages;
    start.takeover_victim = h.victim.map(Pid::from_raw);
    Ok(start)
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit: each connection needs
/// two sockets (and pipes while splicing). Warns when maxconn cannot fit.
fn raise_fd_limit(cfg: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let per_worker = (cfg.global.maxconn as u64).div_ceil(cfg.global.workers.max(1) as u64);
    let needed = per_worker * 2 + 64;
    if hard < needed {
        log::warn!(
            "the fd limit ({hard}) is below what maxconn {} needs per worker ({needed}): \
             accepts will pause when fds run out",
            cfg.global.maxconn
        );
    }
}

/// Detaches from the terminal: fork (the parent exits), new session, stdio to /dev/null.
fn daemonize() -> std::io::Result<()> {
    use nix::unistd::{fork, setsid, ForkResult};
    // SAFETY: called before any thread or worker exists.
    match unsafe { fork() }.map_err(std::io::Error::from)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(std::io::Error::from)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard fds, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    Ok(())
}
