//! How a master image starts: fresh, as a takeover, or after a reload's exec.
//!
//! After the exec, the new image must never exit: the old workers' lifeline
//! is its process, and its exit would soft-stop every worker (an outage).
//! Everything fallible was done before the exec (validation with this very
//! binary, binds, regions), so the start is normally only adoption. Should it
//! still fail, the image falls back, in order:
//!
//! 1. **Next**: the validated config handed over, at generation + 1.
//! 2. **Revert**: the config the previous image ran, at the same generation:
//!    its workers stay the current ones (respawned if they die), the reload
//!    answers `Success=0` with the reason, and the next reload is taken.
//! 3. **Wait**: neither config can be used (another binary that rejects the
//!    old config, resources exhausted): the workers keep serving as they
//!    are, unmanaged but for reaping; the stats socket answers; the next
//!    reload starts a generation that replaces them. Like HAProxy's master
//!    in wait mode.
//!
//! Every attempt works on duplicates of the inherited fds, so a failed one
//! closes nothing the next one needs (closing a dup of a listening socket
//! leaves the socket open).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_config::{Config, Level, Stats};
use nix::unistd::Pid;

use crate::handoff::{self, Handoff};
use crate::master::{OldWorker, Start, StartOutcome};
use crate::shared::{Mode, Role, SharedSegment};
use crate::{bind, cli, takeover, Options};

/// The fds an exec handed over, each wrapped exactly once.
struct Inherited {
    seg: Option<OwnedFd>,
    regions: Vec<(OwnedFd, Role)>,
    listeners: Vec<(TcpListener, SocketAddr)>,
    stats: Option<UnixListener>,
    next_stats: Option<UnixListener>,
    web: Option<TcpListener>,
    next_web: Option<TcpListener>,
    lifeline: Option<(OwnedFd, OwnedFd)>,
    cli: Option<OwnedFd>,
    config: Option<OwnedFd>,
    prev_config: Option<OwnedFd>,
    /// The workers' control sockets, by pid.
    controls: Vec<(i32, OwnedFd)>,
}

fn dup(fd: &impl AsFd) -> Result<OwnedFd, String> {
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot duplicate an inherited fd: {e}"))
}

/// Wraps the fds a handoff record names, each at most once, and only if it
/// is open: a record naming an fd twice, or one this process does not hold,
/// must not lead to a double close of whatever gets that number later.
struct Wrapper(std::collections::HashSet<i32>);

impl Wrapper {
    fn own(&mut self, fd: i32) -> Option<OwnedFd> {
        // SAFETY: F_GETFD only reads the fd's flags.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
        if !open || fd < 3 || !self.0.insert(fd) {
            log::warn!("handoff record: fd {fd} is not an inherited fd of ours; ignored");
            return None;
        }
        // SAFETY: the previous image named this open fd as ours, and it is
        // wrapped exactly once (the set above).
        Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }
}

impl Inherited {
    fn take(h: &Handoff) -> Inherited {
        let mut w = Wrapper(Default::default());
        Inherited {
            seg: h.segment.and_then(|fd| w.own(fd)),
            regions: h
                .regions
                .iter()
                .filter_map(|&(fd, r)| Some((w.own(fd)?, r)))
                .collect(),
            listeners: h
                .listeners
                .iter()
                .filter_map(|&(fd, a)| Some((TcpListener::from(w.own(fd)?), a)))
                .collect(),
            stats: h.stats.and_then(|fd| Some(UnixListener::from(w.own(fd)?))),
            next_stats: h
                .next_stats
                .and_then(|fd| Some(UnixListener::from(w.own(fd)?))),
            web: h.web.and_then(|fd| Some(TcpListener::from(w.own(fd)?))),
            next_web: h
                .next_web
                .and_then(|fd| Some(TcpListener::from(w.own(fd)?))),
            lifeline: h.lifeline.and_then(|(m, l)| Some((w.own(m)?, w.own(l)?))),
            cli: h.cli_reply.and_then(|fd| w.own(fd)),
            config: h.config.and_then(|fd| w.own(fd)),
            prev_config: h.prev_config.and_then(|fd| w.own(fd)),
            controls: h
                .workers
                .iter()
                .filter_map(|k| Some((k.pid, w.own(k.control?)?)))
                .collect(),
        }
    }

    /// A duplicate of worker `pid`'s control socket, if it has one.
    fn control(&self, pid: i32) -> Option<std::sync::Arc<OwnedFd>> {
        let fd = self.controls.iter().find(|(p, _)| *p == pid)?;
        dup(&fd.1).ok().map(std::sync::Arc::new)
    }

    fn listeners(&self) -> Result<Vec<(TcpListener, SocketAddr)>, String> {
        self.listeners
            .iter()
            .map(|(l, a)| Ok((TcpListener::from(dup(l)?), *a)))
            .collect()
    }

    fn regions(&self) -> Result<Vec<(OwnedFd, Role)>, String> {
        self.regions
            .iter()
            .map(|(fd, r)| Ok((dup(fd)?, *r)))
            .collect()
    }

    fn lifeline(&self) -> Result<Option<(OwnedFd, OwnedFd)>, String> {
        self.lifeline
            .as_ref()
            .map(|(m, w)| Ok((dup(m)?, dup(w)?)))
            .transpose()
    }
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A fresh start (no handoff): from the config file, or taking over the
/// instance behind `opts.takeover`. Errors end the process (nothing serves yet).
pub fn fresh(cfg: &Config, text: String, opts: &Options) -> Result<Start, String> {
    let mut messages = Vec::new();
    let mut taken_web = None;
    let (inherited, shared, victim) = match &opts.takeover {
        Some(sock) => {
            let taken = takeover::fetch(sock).map_err(|e| format!("takeover failed: {e}"))?;
            log::info!(
                "took {} listener(s), the shared segment and {} region(s) over from pid {}",
                taken.listeners.len(),
                taken.regions.len(),
                taken.pid
            );
            let regions = taken
                .regions
                .into_iter()
                .map(|fd| {
                    (
                        fd,
                        Role {
                            prev: true,
                            ..Role::default()
                        },
                    )
                })
                .collect();
            let (mut shared, _) =
                SharedSegment::adopt(cfg, taken.segment, regions, 1, Mode::Next, &mut messages)
                    .map_err(|e| format!("cannot use the inherited segment: {e}"))?;
            // The other instance's workers are not ours: nothing of its to keep.
            shared.free_unused(None);
            taken_web = taken.web;
            (taken.listeners, shared, Some(taken.pid))
        }
        None => {
            let shared = SharedSegment::create(cfg, 1)
                .map_err(|e| format!("cannot create the shared segment: {e}"))?;
            (Vec::new(), shared, None)
        }
    };
    let listeners = bind::bind_all(cfg, inherited, &mut messages).map_err(|e| e.to_string())?;
    // The stats page before the socket: a failure here must leave a
    // running instance's socket (a takeover's victim) in place. A
    // takeover's victim hands its page listener over with the others.
    let web = match cfg.stats.as_ref().and_then(|s| s.http) {
        Some(a) => match taken_web.take() {
            Some((l, at)) if at == a => Some(l),
            _ => Some(
                crate::web::bind(a)
                    .map_err(|e| format!("cannot bind the stats page to {a}: {e}"))?,
            ),
        },
        None => None,
    };
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
        crate::daemonize().map_err(|e| format!("cannot daemonize: {e}"))?;
    }
    if let Some(path) = opts.pidfile.clone().or_else(|| cfg.global.pidfile.clone()) {
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pidfile {}: {e}", path.display()))?;
    }
    log::info!(
        "corral {} starting: {} worker(s), {} listener(s), config {}",
        crate::version(),
        cfg.global.workers,
        listeners.len(),
        opts.config_path.display()
    );
    bind::apply_listener_options(cfg, &listeners)?;
    let mut start = Start::new(opts, shared, listeners, text);
    start.stats = stats;
    start.web = web;
    start.outcome.messages = messages;
    start.takeover_victim = victim;
    Ok(start)
}

/// The start of a new image after a reload's exec. Never fails: see the
/// module docs for the fallbacks.
pub fn after_exec(h: Handoff, opts: &Options) -> (Config, Start) {
    for p in &h.problems {
        log::warn!("handoff record: {p}");
    }
    let mut inh = Inherited::take(&h);
    let read = |fd: Option<OwnedFd>| -> Option<String> {
        handoff::read_text(fd?)
            .map_err(|e| log::error!("cannot read a config handed over: {e}"))
            .ok()
    };
    // A version-0 record carries no text: the file is read (once, here).
    let next_text = match (h.config, inh.config.take()) {
        (Some(_), fd) => read(fd),
        (None, _) => std::fs::read_to_string(&opts.config_path).ok(),
    };
    let prev_text = read(inh.prev_config.take());
    let label = opts.config_path.display().to_string();
    let parse = |text: &Option<String>| -> Result<(Config, String), String> {
        let text = text
            .clone()
            .ok_or("no configuration text was handed over")?;
        corral_config::parse(&text, &label)
            .map(|c| (c, text))
            .map_err(|e| e.to_string())
    };
    let next = parse(&next_text).and_then(|(cfg, text)| {
        let start = attempt(&cfg, text, &h, &inh, opts, Mode::Next)?;
        Ok((cfg, start))
    });
    let failure = match next {
        Ok(done) => return done,
        Err(e) => e,
    };
    log::error!(
        "reload failed after the exec: {failure}; going back to the previous configuration"
    );
    let back = parse(&prev_text).and_then(|(cfg, text)| {
        let mut start = attempt(&cfg, text, &h, &inh, opts, Mode::Revert)?;
        start.outcome.failure = Some(format!(
            "{failure}\nthe previous configuration stays (generation {})",
            h.generation
        ));
        Ok((cfg, start))
    });
    match back {
        Ok(done) => done,
        Err(e2) => {
            log::error!(
                "the previous configuration cannot be restored either ({e2}): \
                 waiting; the running workers keep serving"
            );
            wait_mode(&h, inh, opts, format!("{failure}\n{e2}"))
        }
    }
}

/// Tests make the start after an exec fail: debug builds read
/// `CORRAL_TEST_FAIL_AFTER_EXEC`, the path of a file holding `next` (the new
/// configuration's start fails) or `both` (the fallback fails too).
fn injected_failure(mode: Mode) -> Result<(), String> {
    #[cfg(debug_assertions)]
    if let Some(what) = std::env::var_os("CORRAL_TEST_FAIL_AFTER_EXEC")
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        let what = what.trim();
        if what == "both" || (what == "next" && mode == Mode::Next) {
            return Err(format!("a failure injected by the test ({what})"));
        }
    }
    let _ = mode;
    Ok(())
}

/// One way to start from what was inherited, on duplicates of its fds.
fn attempt(
    cfg: &Config,
    text: String,
    h: &Handoff,
    inh: &Inherited,
    opts: &Options,
    mode: Mode,
) -> Result<Start, String> {
    injected_failure(mode)?;
    let generation = match mode {
        Mode::Next => h.generation + 1,
        Mode::Revert => h.generation.max(1),
    };
    let mut messages = if mode == Mode::Next {
        h.messages.clone()
    } else {
        Vec::new()
    };
    let (mut shared, foreign) = match &inh.seg {
        Some(seg) => SharedSegment::adopt(
            cfg,
            dup(seg)?,
            inh.regions()?,
            generation,
            mode,
            &mut messages,
        ),
        // No segment to adopt: the old workers' slots mean nothing in this one.
        None => SharedSegment::create(cfg, generation).map(|s| (s, true)),
    }
    .map_err(|e| format!("cannot set the shared segment up: {e}"))?;
    shared.carry_conns(h.carried_conns);
    let mut ignored = Vec::new();
    let listeners = bind::bind_all(
        cfg,
        inh.listeners()?,
        if mode == Mode::Next {
            &mut messages
        } else {
            &mut ignored
        },
    )
    .map_err(|e| e.to_string())?;
    bind::apply_listener_options(cfg, &listeners)?;
    // The socket of this config: inherited as it is, or bound before the
    // exec at its new path (`next_stats`); the one not used is closed, and
    // its file removed once this start is sure to go on.
    let candidates = [&inh.stats, &inh.next_stats];
    let stats = match &cfg.stats {
        Some(s) => match candidates
            .iter()
            .copied()
            .flatten()
            .find(|l| same_path(l, s))
        {
            Some(l) => {
                std::fs::set_permissions(
                    &s.socket,
                    std::os::unix::fs::PermissionsExt::from_mode(s.mode),
                )
                .map_err(|e| format!("stats socket {}: {e}", s.socket.display()))?;
                Some(cli::adopt(dup(l)?).map_err(|e| e.to_string())?)
            }
            None => Some(cli::bind(s).map_err(|e| {
                format!("cannot bind the stats socket {}: {e}", s.socket.display())
            })?),
        },
        None => None,
    };
    let stale_sockets = candidates
        .iter()
        .copied()
        .flatten()
        .filter(|l| cfg.stats.as_ref().is_none_or(|s| !same_path(l, s)))
        .filter_map(|l| Some(l.local_addr().ok()?.as_pathname()?.to_path_buf()))
        .collect();
    // The stats page: its listener inherited as it is, or bound before the
    // exec at its new address; binding here is the fallback of a record
    // without it (a failure leaves the page off, said in the log).
    let web = match cfg.stats.as_ref().and_then(|s| s.http) {
        None => None,
        Some(a) => match [&inh.web, &inh.next_web]
            .into_iter()
            .flatten()
            .find(|l| l.local_addr().ok() == Some(a))
        {
            Some(l) => Some(TcpListener::from(dup(l)?)),
            None => crate::web::bind(a)
                .map_err(|e| log::error!("stats page: cannot bind {a}: {e}"))
                .ok(),
        },
    };
    let level = cfg.stats.as_ref().map_or(Level::Admin, |s| s.level);
    let reply = match &inh.cli {
        Some(fd) => cli::adopt_client(dup(fd)?, level).ok(),
        None => None,
    };
    let mut current = Vec::new();
    let mut old = Vec::new();
    for w in &h.workers {
        let o = OldWorker {
            pid: Pid::from_raw(w.pid),
            id: w.id,
            epoch_slot: w.epoch_slot,
            generation: w.generation,
            started_wall: at(w.started_ms),
            draining: w.draining,
            foreign: w.foreign || foreign,
            ready: w.ready,
            control: inh.control(w.pid),
        };
        if mode == Mode::Revert && w.generation == generation && !w.draining {
            current.push(o);
        } else {
            old.push(o);
        }
    }
    log::info!(
        "corral {} generation {generation}{}: {} worker(s), {} listener(s), {} old worker(s)",
        crate::version(),
        if mode == Mode::Revert {
            " (previous configuration)"
        } else {
            ""
        },
        cfg.global.workers,
        listeners.len(),
        old.len()
    );
    let mut start = Start::new(opts, shared, listeners, text);
    start.stats = stats;
    start.web = web;
    start.stale_sockets = stale_sockets;
    start.lifeline = inh.lifeline()?;
    start.generation = generation;
    start.failed_reloads = h.failed_reloads + u32::from(mode == Mode::Revert);
    start.started = at(h.master_started_ms);
    start.current = current;
    start.old = old;
    start.reply = reply;
    start.outcome.messages = messages;
    start.takeover_victim = h.victim.map(Pid::from_raw);
    Ok(start)
}

fn same_path(l: &UnixListener, s: &Stats) -> bool {
    l.local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p == s.socket))
        .unwrap_or(false)
}

/// Neither config can be used: keep the workers and the stats socket, spawn
/// nothing, take the next reload.
fn wait_mode(h: &Handoff, inh: Inherited, opts: &Options, why: String) -> (Config, Start) {
    let mut cfg = corral_config::parse("", "wait-mode").unwrap_or_else(|_| empty_config());
    cfg.global.workers = 0;
    cfg.tables.clear();
    cfg.stats = inh.stats.as_ref().and_then(|l| {
        let path = l.local_addr().ok()?.as_pathname()?.to_path_buf();
        Some(Stats {
            socket: path,
            mode: 0o660,
            user: None,
            group: None,
            level: h.stats_level.unwrap_or(Level::Admin),
            http: None,
        })
    });
    // Keep the segment and every region: the old workers use them, and the
    // master must still repair what a dying one held (locks, trackings).
    // With no config of ours, every table region is kept for them.
    let adopted = inh.seg.as_ref().ok_or(()).and_then(|seg| {
        let (seg, regions) = (dup(seg).map_err(|_| ())?, inh.regions().map_err(|_| ())?);
        SharedSegment::adopt(
            &cfg,
            seg,
            regions,
            h.generation,
            Mode::Revert,
            &mut Vec::new(),
        )
        .map_err(|e| log::error!("wait mode: the inherited segment cannot be adopted ({e})"))
    });
    let (shared, foreign) = match adopted {
        Ok(s) => s,
        Err(()) => loop {
            match SharedSegment::create(&cfg, h.generation) {
                Ok(s) => break (s, true),
                Err(e) => {
                    // Nothing else to fall back to: wait for memory to come back.
                    log::error!("wait mode: cannot map a segment ({e}); retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        },
    };
    // The listeners stay ours (the workers serve on them, and the next
    // reload hands them to its generation); no frontend uses them here.
    let controls: Vec<_> = h.workers.iter().map(|w| inh.control(w.pid)).collect();
    let listeners = inh.listeners.into_iter().map(|(l, _)| (0, l)).collect();
    let mut start = Start::new(opts, shared, listeners, String::new());
    start.stats = inh.stats.or(inh.next_stats);
    start.lifeline = inh.lifeline;
    start.generation = h.generation;
    start.failed_reloads = h.failed_reloads + 1;
    start.started = at(h.master_started_ms);
    start.old = h
        .workers
        .iter()
        .zip(controls)
        .map(|(w, control)| OldWorker {
            pid: Pid::from_raw(w.pid),
            id: w.id,
            epoch_slot: w.epoch_slot,
            generation: w.generation,
            started_wall: at(w.started_ms),
            draining: w.draining,
            foreign: w.foreign || foreign,
            ready: w.ready,
            control,
        })
        .collect();
    start.reply = inh
        .cli
        .and_then(|fd| cli::adopt_client(fd, h.stats_level.unwrap_or(Level::Admin)).ok());
    start.outcome = StartOutcome {
        messages: Vec::new(),
        failure: Some(format!(
            "{why}\nwait mode: the running workers keep serving; fix the configuration and reload"
        )),
        wait: true,
    };
    (cfg, start)
}

/// A config with nothing in it, if even the empty text is refused.
fn empty_config() -> Config {
    Config {
        global: corral_config::Global {
            workers: 0,
            maxconn: 1,
            hard_stop_after: Duration::from_secs(30),
            memory_limit: None,
            user: None,
            group: None,
            pidfile: None,
            log: corral_config::LogTarget::Stderr,
            http_limits: Default::default(),
            poll_naps: true,
        },
        stats: None,
        frontends: Vec::new(),
        backends: Vec::new(),
        tables: Vec::new(),
        caches: Vec::new(),
    }
}
