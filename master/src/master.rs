//! The master process: forks the workers, respawns them when they die, turns
//! signals into stops and reloads, and serves the stats socket.
//!
//! Single-threaded on purpose: it forks, and a forked multi-threaded process
//! can inherit a lock held by a thread that does not exist in the child.
//! Signals reach the loop through signal-hook's self-pipe (registered in mio):
//! no handler does any work.
//!
//! **Generations.** Workers forked for the running config are the *current*
//! generation; after a reload the previous ones are *old* workers, children of
//! the same master (same pid across exec). Each new worker writes its number
//! on the ready pipe once its loop is set up; only when every current worker
//! is ready are the old ones soft-stopped (SIGUSR1), so something always
//! accepts. A new generation that cannot start leaves the old one serving.
//!
//! **Respawn.** A current worker that dies while the master is not stopping is
//! replaced: at once, then with a delay doubling up to [`MAX_BACKOFF`] while it
//! keeps dying within [`STABLE_AFTER`] of its start.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_config::{Config, Level};
use corral_worker::WorkerSetup;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::cli::{self, commands, Client};
use crate::shared::SharedSegment;
use crate::{notify, proctitle};

const SIGNALS: Token = Token(0);
const LIFELINE: Token = Token(1);
const STATS: Token = Token(2);
/// The stats page's listener.
const WEB: Token = Token(4);
/// Stats page connections: `WEB_BASE + key`.
const WEB_BASE: usize = 1 << 40;
/// The process log's fd, polled for writability while its reader stalls.
const PROCESS_LOG: Token = Token(3);
const CLIENT_BASE: usize = 16;
/// A worker that lived this long is considered healthy: its next respawn is immediate.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Upper bound of the respawn delay of a crash-looping worker.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// After a hard stop, workers get this long to exit before SIGKILL.
const HARD_STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a reload's answer waits for soft-stopped workers to say they
/// left the accept queues (a build that does not say it is waited for so long).
const LEFT_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// One worker position of the current generation.
#[derive(Debug)]
pub(crate) struct Slot {
    pub id: usize,
    pub pid: Option<Pid>,
    pub epoch_slot: Option<usize>,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub respawn_at: Option<Instant>,
    pub backoff: Duration,
    pub ready: bool,
    /// The master's end of the worker's control socket (handoff channels).
    pub control: Option<Arc<OwnedFd>>,
}

/// A worker of a previous generation, finishing its connections.
#[derive(Debug, Clone)]
pub struct OldWorker {
    /// Its pid (our child).
    pub pid: Pid,
    /// Its worker number in its generation.
    pub id: usize,
    /// Its epoch slot in the segment.
    pub epoch_slot: usize,
    /// Its config generation.
    pub generation: u32,
    /// When it started.
    pub started_wall: SystemTime,
    /// Soft-stopped already.
    pub draining: bool,
    /// Uses a segment of another layout version (see `handoff::InheritedWorker`).
    pub foreign: bool,
    /// Said it accepts (for a worker taken back as current by a fallback).
    pub ready: bool,
    /// The master's end of its control socket, if it has one.
    pub control: Option<Arc<OwnedFd>>,
}

/// How the master is stopping, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopping {
    No,
    /// Workers drain; the master SIGKILLs stragglers at the deadline.
    Soft(Instant),
    /// Workers were told to exit now; SIGKILL at the deadline.
    Hard(Instant),
}

/// A generation switch in progress: waiting for the new workers to accept.
pub(crate) struct Switch {
    /// The CLI client waiting for the outcome of its `reload`.
    pub reply: Option<usize>,
    /// What the reload did (tables kept, listeners reused...), for the reply.
    pub messages: Vec<String>,
    /// Once the new workers accept: the soft-stopped old workers that have
    /// not yet left the accept queues, and until when to wait for them.
    pub leaving: Option<(Vec<Pid>, Instant)>,
}

/// How a start went, for the waiting CLI client and the log.
#[derive(Debug, Default)]
pub struct StartOutcome {
    /// What the start (or the reload before the exec) did.
    pub messages: Vec<String>,
    /// The reload failed after the exec and this image fell back (see
    /// `start.rs`): the reason, answered as `Success=0`.
    pub failure: Option<String>,
    /// Wait mode: no config to run, spawn nothing.
    pub wait: bool,
}

/// What the master starts from, besides the config.
pub struct Start {
    /// Listening sockets by frontend.
    pub listeners: Vec<(usize, TcpListener)>,
    /// The shared segment.
    pub shared: SharedSegment,
    /// The stats socket, if configured.
    pub stats: Option<UnixListener>,
    /// Stats socket files of other paths, removed once the start is done.
    pub stale_sockets: Vec<PathBuf>,
    /// Lifeline pair inherited from the previous generation.
    pub lifeline: Option<(OwnedFd, OwnedFd)>,
    /// Generation number of this master.
    pub generation: u32,
    /// Reloads that failed before.
    pub failed_reloads: u32,
    /// When the master process first started.
    pub started: SystemTime,
    /// Running workers of this very generation (a fallback to the previous
    /// generation after a failed exec): they take their slots as they are.
    pub current: Vec<OldWorker>,
    /// Workers of previous generations (children inherited across exec).
    pub old: Vec<OldWorker>,
    /// A CLI connection waiting for the outcome of the reload that started us.
    pub reply: Option<Client>,
    /// The stats page's listener (`[stats] http`).
    pub web: Option<std::net::TcpListener>,
    /// How the start went.
    pub outcome: StartOutcome,
    /// The instance we took over: soft-stopped once our workers accept.
    pub takeover_victim: Option<Pid>,
    /// Where the config came from and how we were started (to re-exec).
    pub config_path: PathBuf,
    /// The binary on disk, re-executed on reload.
    pub exe: PathBuf,
    /// The command line, re-used on reload.
    pub args: Vec<OsString>,
    /// The running config's text (handed over as the one to fall back to).
    pub cfg_text: String,
}

impl Start {
    /// A start of generation 1 with nothing inherited.
    pub fn new(
        opts: &crate::Options,
        shared: SharedSegment,
        listeners: Vec<(usize, TcpListener)>,
        cfg_text: String,
    ) -> Start {
        Start {
            listeners,
            shared,
            stats: None,
            stale_sockets: Vec::new(),
            lifeline: None,
            generation: 1,
            failed_reloads: 0,
            started: SystemTime::now(),
            current: Vec::new(),
            old: Vec::new(),
            reply: None,
            web: None,
            outcome: StartOutcome::default(),
            takeover_victim: None,
            config_path: opts.config_path.clone(),
            exe: opts.exe.clone(),
            args: opts.args.clone(),
            cfg_text,
        }
    }
}

/// What the loop needs besides the start.
struct LoopParts {
    poll: Poll,
    signals: Signals,
    lifeline: Option<(OwnedFd, OwnedFd)>,
}

/// The master's state.
pub struct Master {
    pub(crate) cfg: Arc<Config>,
    pub(crate) poll: Poll,
    pub(crate) signals: Option<Signals>,
    pub(crate) listeners: Vec<(usize, TcpListener)>,
    pub(crate) lifeline: (OwnedFd, OwnedFd),
    pub(crate) slots: Vec<Slot>,
    pub(crate) old: Vec<OldWorker>,
    stopping: Stopping,
    pub(crate) shared: SharedSegment,
    pub(crate) generation: u32,
    pub(crate) failed_reloads: u32,
    pub(crate) started: SystemTime,
    pub(crate) stats: Option<UnixListener>,
    pub(crate) clients: Slab<Client>,
    pub(crate) switch: Option<Switch>,
    pub(crate) takeover_victim: Option<Pid>,
    announced_ready: bool,
    pub(crate) config_path: PathBuf,
    pub(crate) exe: PathBuf,
    pub(crate) args: Vec<OsString>,
    /// The running config's text (the fallback handed to the next image).
    pub(crate) cfg_text: String,
    /// Wait mode (see `start.rs`): no config of ours runs, spawn nothing.
    pub(crate) waiting: bool,
    /// The process log's fd while lines wait on it.
    log_poll: corral_worker::log_sink::BlockedPoll,
    /// Clients with work that can go on now (a dump the socket keeps up with).
    runnable: Vec<usize>,
    /// Rates, maxima and averages the master computes over time.
    pub(crate) history: std::cell::RefCell<cli::history::History>,
    /// The stats page's listener and its connections.
    pub(crate) web: Option<std::net::TcpListener>,
    web_clients: Slab<crate::web::WebClient>,
    /// Queries to the workers in flight (`show sess`, `show errors`).
    pub(crate) queries: Vec<crate::queries::Pending>,
    /// The last query id.
    pub(crate) next_query: u32,
}

fn client_token(key: usize) -> Token {
    Token(CLIENT_BASE + key)
}

impl Master {
    /// The poller, signals, ready pipe and (for a first start) lifeline.
    fn loop_parts(start: &Start) -> io::Result<LoopParts> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        if let Some(l) = &start.stats {
            poll.registry()
                .register(&mut SourceFd(&l.as_raw_fd()), STATS, Interest::READABLE)?;
        }
        let lifeline = match &start.lifeline {
            Some(_) => None,
            None => {
                let (m, w) = UnixStream::pair()?;
                Some((m.into(), w.into()))
            }
        };
        // Workers' messages arrive on the master's end of the lifeline.
        let master_end = match (&start.lifeline, &lifeline) {
            (Some((m, _)), _) | (None, Some((m, _))) => m.as_raw_fd(),
            (None, None) => -1,
        };
        set_nonblocking(master_end)?;
        poll.registry()
            .register(&mut SourceFd(&master_end), LIFELINE, Interest::READABLE)?;
        Ok(LoopParts {
            poll,
            signals,
            lifeline,
        })
    }

    /// Sets up signals, the ready pipe and the stats socket around a start.
    /// On failure (out of fds) the start is given back, untouched.
    pub fn new(cfg: Arc<Config>, mut start: Start) -> Result<Master, Box<(io::Error, Start)>> {
        let parts = match Master::loop_parts(&start) {
            Ok(p) => p,
            Err(e) => return Err(Box::new((e, start))),
        };
        let lifeline = match start.lifeline.take().or(parts.lifeline) {
            Some(pair) => pair,
            None => {
                return Err(Box::new((
                    io::Error::other("no lifeline socket pair"),
                    start,
                )))
            }
        };
        // Signals blocked across the exec that started us are delivered now.
        crate::reload::unblock_signals();
        let LoopParts { poll, signals, .. } = parts;
        let now = Instant::now();
        let slots: Vec<Slot> = (1..=cfg.global.workers)
            .map(|id| match start.current.iter().find(|w| w.id == id) {
                // A running worker of this generation (a fallback after a
                // failed exec) keeps its slot, and its readiness: the
                // older generation is stopped only once it accepts.
                Some(w) => Slot {
                    id,
                    pid: Some(w.pid),
                    epoch_slot: Some(w.epoch_slot),
                    started: now,
                    started_wall: w.started_wall,
                    respawn_at: None,
                    backoff: Duration::ZERO,
                    ready: w.ready,
                    control: w.control.clone(),
                },
                None => Slot {
                    id,
                    pid: None,
                    epoch_slot: None,
                    started: now,
                    started_wall: SystemTime::now(),
                    respawn_at: Some(now),
                    backoff: Duration::ZERO,
                    ready: false,
                    control: None,
                },
            })
            .collect();
        for path in &start.stale_sockets {
            let _ = std::fs::remove_file(path);
        }
        let mut old = start.old;
        // Running workers of this generation beyond its worker count (none
        // today) are old workers.
        old.extend(
            start
                .current
                .into_iter()
                .filter(|w| !slots.iter().any(|s| s.pid == Some(w.pid))),
        );
        let mut m = Master {
            cfg,
            poll,
            signals: Some(signals),
            listeners: start.listeners,
            lifeline,
            slots,
            old,
            stopping: Stopping::No,
            shared: start.shared,
            generation: start.generation,
            failed_reloads: start.failed_reloads,
            started: start.started,
            stats: start.stats,
            clients: Slab::new(),
            switch: None,
            takeover_victim: start.takeover_victim,
            announced_ready: false,
            config_path: start.config_path,
            exe: start.exe,
            args: start.args,
            cfg_text: start.cfg_text,
            waiting: start.outcome.wait,
            log_poll: Default::default(),
            runnable: Vec::new(),
            history: std::cell::RefCell::new(cli::history::History::new(start.generation == 1)),
            web: start.web,
            web_clients: Slab::new(),
            queries: Vec::new(),
            // Ids of this image start apart from the previous one's (old
            // workers may still be answering its queries).
            next_query: start.generation.wrapping_mul(1 << 20),
        };
        for s in &m.slots {
            if let (Some(pid), Some(c)) = (s.pid, &s.control) {
                m.watch_control(pid.as_raw(), c.as_ref());
            }
        }
        for o in &m.old {
            if let Some(c) = &o.control {
                m.watch_control(o.pid.as_raw(), c.as_ref());
            }
        }
        if let Some(l) = &m.web {
            if let Err(e) =
                m.poll
                    .registry()
                    .register(&mut SourceFd(&l.as_raw_fd()), WEB, Interest::READABLE)
            {
                log::warn!("stats page: cannot watch its listener: {e}");
            }
        }
        let oldest = m.old.iter().map(|o| o.generation).min();
        m.shared.free_unused(oldest);
        let reply = start.reply.map(|c| m.add_client(c));
        match start.outcome.failure {
            Some(why) => {
                // The reload failed after the exec: say so now. Old workers
                // not yet stopped are stopped once the current ones accept
                // (a fallback); in wait mode nothing replaces them.
                if let Some(key) = reply {
                    m.answer_and_close(key, &format!("Success=0\n--\n{why}\n"));
                }
                if !m.waiting {
                    m.switch = Some(Switch {
                        reply: None,
                        messages: Vec::new(),
                        leaving: None,
                    });
                } else {
                    notify::notify("READY=1");
                }
            }
            None => {
                m.switch = Some(Switch {
                    reply,
                    messages: start.outcome.messages,
                    leaving: None,
                })
            }
        }
        Ok(m)
    }

    /// Runs until stopped; returns the exit status.
    pub fn run(&mut self) -> i32 {
        proctitle::set(&format!("corral: master (gen {})", self.generation));
        let mut events = Events::with_capacity(64);
        // Old workers may have exited while we were being exec'd.
        self.reap();
        loop {
            if self.stopping == Stopping::No {
                self.spawn_due();
            }
            self.complete_switch();
            if self.stopping != Stopping::No
                && self.slots.iter().all(|s| s.pid.is_none())
                && self.old.is_empty()
            {
                log::info!("all workers exited; master exiting");
                self.shared.release_master_slot();
                return 0;
            }
            let timeout = if self.runnable.is_empty() {
                self.next_deadline()
                    .map(|t| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("master: poll failed: {e}");
                    return 1;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS | PROCESS_LOG => {}
                    LIFELINE => self.on_lifeline(),
                    STATS => self.accept_clients(),
                    WEB => self.accept_web(),
                    Token(t) if t >= WEB_BASE => self.on_web(t - WEB_BASE),
                    Token(t) if t >= crate::queries::CONTROL_BASE => {
                        self.on_control_event((t - crate::queries::CONTROL_BASE) as i32)
                    }
                    Token(t) => self.on_client(t - CLIENT_BASE),
                }
            }
            let pending: Vec<i32> = self
                .signals
                .as_mut()
                .map(|s| s.pending().collect())
                .unwrap_or_default();
            for sig in pending {
                match sig {
                    SIGCHLD => {}
                    SIGTERM | SIGINT => self.hard_stop(),
                    SIGUSR1 => self.soft_stop(),
                    SIGUSR2 | SIGHUP => self.reload(None),
                    _ => {}
                }
            }
            for key in std::mem::take(&mut self.runnable) {
                self.run_client(key);
            }
            // A child may have exited between the signal and now: reap anyway.
            self.reap();
            self.expire_clients();
            self.sample_counters();
            corral_worker::process_log::flush();
            self.log_poll.sync(
                self.poll.registry(),
                PROCESS_LOG,
                corral_worker::process_log::blocked_fd(),
            );
            match self.stopping {
                Stopping::Soft(t) | Stopping::Hard(t) if Instant::now() >= t => {
                    let pids: Vec<Pid> = self
                        .slots
                        .iter()
                        .filter_map(|s| s.pid)
                        .chain(self.old.iter().map(|o| o.pid))
                        .collect();
                    for pid in pids {
                        log::warn!("worker (pid {pid}) did not exit in time: SIGKILL");
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                    self.stopping = Stopping::Hard(Instant::now() + HARD_STOP_GRACE);
                }
                _ => {}
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let stop = match self.stopping {
            Stopping::No => None,
            Stopping::Soft(t) | Stopping::Hard(t) => Some(t),
        };
        let respawn = if self.stopping == Stopping::No {
            self.slots.iter().filter_map(|s| s.respawn_at).min()
        } else {
            None
        };
        let clients = self
            .clients
            .iter()
            .filter_map(|(_, c)| c.last.checked_add(c.timeout))
            .chain(
                self.web_clients
                    .iter()
                    .map(|(_, c)| c.last + crate::web::TIMEOUT),
            )
            .min();
        let leaving = self
            .switch
            .as_ref()
            .and_then(|s| s.leaving.as_ref())
            .map(|(_, until)| *until);
        let tick = (!self.waiting).then(|| self.history.borrow().next_deadline());
        [stop, respawn, clients, leaving, tick, self.query_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn spawn_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].pid.is_some() || self.slots[i].respawn_at.is_none_or(|t| t > now) {
                continue;
            }
            let Some(epoch_slot) = self.shared.claim_slot() else {
                log::error!(
                    "worker {} not started: all {} process slots of the shared segment are taken \
                     (old workers still draining after many reloads? lower hard_stop_after); retrying in {:?}",
                    self.slots[i].id,
                    corral_shm::epoch::MAX_PROCS,
                    MAX_BACKOFF
                );
                self.slots[i].respawn_at = Some(now + MAX_BACKOFF);
                continue;
            };
            self.slots[i].epoch_slot = Some(epoch_slot);
            self.slots[i].ready = false;
            match self.spawn(i) {
                Ok(pid) => {
                    self.shared.register(epoch_slot, pid.as_raw() as u32);
                    let s = &mut self.slots[i];
                    log::info!(
                        "worker {} started (pid {pid}, generation {})",
                        s.id,
                        self.generation
                    );
                    s.pid = Some(pid);
                    s.started = now;
                    s.started_wall = SystemTime::now();
                    s.respawn_at = None;
                }
                Err(e) => {
                    self.shared.clear_slot(epoch_slot);
                    let s = &mut self.slots[i];
                    s.backoff = next_backoff(s.backoff);
                    s.respawn_at = Some(now + s.backoff);
                    log::error!(
                        "cannot fork worker {}: {e}; retrying in {:?}",
                        s.id,
                        s.backoff
                    );
                }
            }
        }
    }

    fn spawn(&mut self, i: usize) -> Result<Pid, String> {
        // Opened here, with the master's privileges, and inherited.
        let log = corral_worker::access_log::AccessLog::open(&self.cfg.global.log)
            .map_err(|e| format!("cannot open the access log: {e}"))?;
        // The control socket: the master sends handoff channels on it.
        let (ours, theirs) = corral_worker::handoff::fdmsg::pair()
            .map_err(|e| format!("cannot make a control socket: {e}"))?;
        // SAFETY: the master is single-threaded, so the child inherits no lock
        // held by another thread; the child only runs the worker and exits.
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Parent { child } => {
                self.watch_control(child.as_raw(), &ours);
                self.slots[i].control = Some(Arc::new(ours));
                Ok(child)
            }
            ForkResult::Child => {
                drop(ours);
                let code = self.become_worker(i, log, theirs);
                std::process::exit(code);
            }
        }
    }

    /// In the forked child: shed the master's state, become worker slot `i`.
    fn become_worker(
        &mut self,
        i: usize,
        log: corral_worker::access_log::AccessLog,
        control: OwnedFd,
    ) -> i32 {
        let id = self.slots[i].id;
        // A stop signal sent now waits (blocked) for the worker's handlers:
        // between dropping the master's and registering the worker's, it
        // would be lost.
        corral_worker::worker::block_stop_signals(true);
        corral_worker::process_log::after_fork();
        // Dropping the master's Signals unregisters its handlers in this
        // process (the worker registers its own) and closes its self-pipe.
        drop(self.signals.take());
        // SAFETY: closing fds of the master's poller, lifeline end and ready
        // pipe read end, which this process never uses; nothing that drops
        // later owns them (the child leaves through process::exit).
        unsafe {
            libc::close(self.poll.as_raw_fd());
            libc::close(self.lifeline.0.as_raw_fd());
            if let Some(l) = &self.stats {
                libc::close(l.as_raw_fd());
            }
            for (_, c) in self.clients.iter() {
                libc::close(c.stream.as_raw_fd());
            }
        }
        // The stats page's listener and connections are the master's: a
        // worker holding them would keep an old port listening, or a
        // connection the master closed open.
        self.web = None;
        self.web_clients.clear();
        // The master's ends of the other workers' control sockets.
        for s in &mut self.slots {
            s.control = None;
        }
        for o in &mut self.old {
            o.control = None;
        }
        self.shared.drop_retired();
        proctitle::set(&format!("corral: worker {id} (gen {})", self.generation));
        if let Err(e) = crate::privileges::drop_to(&self.cfg.global) {
            log::error!("worker {id}: {e}");
            return 1;
        }
        let Ok(lifeline) = self.lifeline.1.try_clone() else {
            log::error!("worker {id}: cannot duplicate the lifeline");
            return 1;
        };
        let Some(epoch_slot) = self.slots[i].epoch_slot else {
            log::error!("worker {id}: no process slot");
            return 1;
        };
        corral_worker::run(WorkerSetup {
            config: self.cfg.clone(),
            listeners: std::mem::take(&mut self.listeners),
            master_pipe: lifeline,
            id,
            generation: self.generation,
            log,
            shared: self.shared.for_worker(epoch_slot, id),
            health: self.shared.health().clone(),
            counters: self.shared.counters().clone(),
            stats: Some(self.shared.stats().clone()),
            control: Some(control),
        })
    }

    /// Reads the workers' messages on the lifeline (see
    /// `corral_worker::lifeline`): who accepts, who left the accept queues.
    fn on_lifeline(&mut self) {
        use corral_worker::lifeline::{decode, Message, MESSAGE_LEN};
        let mut buf = [0u8; 64 * MESSAGE_LEN];
        loop {
            // SAFETY: reading into our buffer from our end of the pair.
            let n = unsafe {
                libc::read(
                    self.lifeline.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n <= 0 {
                return;
            }
            for (pid, msg) in decode(&buf[..n as usize]) {
                let pid = Pid::from_raw(pid);
                match msg {
                    Message::Ready => {
                        if let Some(s) = self.slots.iter_mut().find(|s| s.pid == Some(pid)) {
                            s.ready = true;
                        }
                    }
                    Message::LeftQueue => {
                        if let Some((left, _)) =
                            self.switch.as_mut().and_then(|sw| sw.leaving.as_mut())
                        {
                            left.retain(|&p| p != pid);
                        }
                    }
                }
            }
        }
    }

    /// Once every current worker accepts: soft-stop the old ones; once they
    /// left the accept queues (or [`LEFT_QUEUE_WAIT`] passed), answer the
    /// reload and tell systemd. After the answer, every new connection goes
    /// to the new generation.
    fn complete_switch(&mut self) {
        if self.switch.as_ref().is_some_and(|sw| sw.leaving.is_none())
            && self.slots.iter().all(|s| s.ready && s.pid.is_some())
        {
            self.connect_handoff();
        }
        let Some(sw) = self.switch.as_mut() else {
            return;
        };
        if sw.leaving.is_none() {
            if !self.slots.iter().all(|s| s.ready && s.pid.is_some()) {
                return;
            }
            let mut stopped = Vec::new();
            for o in self.old.iter_mut().filter(|o| !o.draining) {
                let _ = kill(o.pid, Signal::SIGUSR1);
                o.draining = true;
                stopped.push(o.pid);
            }
            if let Some(victim) = self.takeover_victim.take() {
                log::info!("taking over: soft-stopping the previous instance (pid {victim})");
                let _ = kill(victim, Signal::SIGUSR1);
            }
            if !stopped.is_empty() {
                log::info!(
                    "generation {} accepting; {} old worker(s) soft-stopped",
                    self.generation,
                    stopped.len()
                );
            }
            sw.leaving = Some((stopped, Instant::now() + LEFT_QUEUE_WAIT));
        }
        let old = &self.old;
        let Some((left, until)) = sw.leaving.as_mut() else {
            return;
        };
        // A worker that exited has left too.
        left.retain(|p| old.iter().any(|o| o.pid == *p));
        if !left.is_empty() && Instant::now() < *until {
            return;
        }
        let sw = self.switch.take().expect("checked");
        notify::notify("READY=1");
        self.announced_ready = true;
        if let Some(key) = sw.reply {
            let mut text = format!("Success=1\n--\ngeneration {}\n", self.generation);
            for m in &sw.messages {
                text.push_str(m);
                text.push('\n');
            }
            self.answer_and_close(key, &text);
        }
    }

    /// Before the old workers are soft-stopped: one socket pair per (old
    /// worker, new worker), its ends sent over their control sockets, so
    /// the old workers can hand their idle client connections over (see
    /// `corral_worker::handoff`). Best effort: a worker without a control
    /// socket (a build before it, a foreign segment) closes them instead.
    fn connect_handoff(&mut self) {
        use corral_worker::handoff::{fdmsg, wire};
        let receivers: Vec<Arc<OwnedFd>> = self
            .slots
            .iter()
            .filter_map(|s| s.control.clone())
            .collect();
        let mut made = 0;
        for o in self.old.iter().filter(|o| !o.foreign) {
            let Some(sender) = &o.control else { continue };
            for r in &receivers {
                let Ok((a, b)) = fdmsg::pair() else { continue };
                let inbox = wire::channel(true, self.generation);
                let outbox = wire::channel(false, self.generation);
                if fdmsg::send(r.as_raw_fd(), &inbox, &[b.as_raw_fd()]).is_ok()
                    && fdmsg::send(sender.as_raw_fd(), &outbox, &[a.as_raw_fd()]).is_ok()
                {
                    made += 1;
                }
            }
        }
        if made > 0 {
            log::info!(
                "{made} handoff channel(s) from old workers to generation {}",
                self.generation
            );
        }
    }

    /// Collects every exited child and schedules replacements.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let (pid, what) = match status {
                WaitStatus::Exited(pid, code) => (pid, format!("exited with status {code}")),
                WaitStatus::Signaled(pid, sig, core) => (
                    pid,
                    format!(
                        "killed by signal {sig}{}",
                        if core { " (core dumped)" } else { "" }
                    ),
                ),
                _ => continue,
            };
            // What it sent before exiting is read first.
            self.on_control_event(pid.as_raw());
            self.query_worker_gone(pid.as_raw());
            if let Some(pos) = self.old.iter().position(|o| o.pid == pid) {
                let o = self.old.remove(pos);
                // A foreign worker's slot and records are in another segment.
                if !o.foreign {
                    self.carry_counts(o.generation, o.id);
                    self.shared.recover(o.epoch_slot, o.generation, o.id);
                }
                log::info!(
                    "old worker {} of generation {} (pid {pid}) {what}",
                    o.id,
                    o.generation
                );
                let oldest = self.old.iter().map(|o| o.generation).min();
                self.shared.free_unused(oldest);
                continue;
            }
            let Some(slot) = self.slots.iter_mut().find(|s| s.pid == Some(pid)) else {
                continue;
            };
            slot.pid = None;
            slot.ready = false;
            slot.control = None;
            let (id, epoch_slot) = (slot.id, slot.epoch_slot.take());
            self.carry_counts(self.generation, id);
            if let Some(e) = epoch_slot {
                self.shared.recover(e, self.generation, id);
            }
            let Some(slot) = self.slots.iter_mut().find(|s| s.id == id) else {
                continue;
            };
            let now = Instant::now();
            if self.stopping != Stopping::No {
                log::info!("worker {} (pid {pid}) {what}", slot.id);
                continue;
            }
            slot.backoff = if now - slot.started >= STABLE_AFTER {
                Duration::ZERO
            } else {
                next_backoff(slot.backoff)
            };
            slot.respawn_at = Some(now + slot.backoff);
            log::warn!(
                "worker {} (pid {pid}) {what}; respawning in {:?}",
                slot.id,
                slot.backoff
            );
            let id = slot.id;
            if let Some(key) = self.switch.as_ref().and_then(|s| s.reply) {
                if !self.old.is_empty() {
                    self.switch.as_mut().expect("checked").reply = None;
                    self.answer_and_close(
                        key,
                        &format!(
                            "Success=0\n--\nworker {} of the new generation {what} before accepting; \
                             the previous generation keeps serving while it is retried\n",
                            id
                        ),
                    );
                }
            }
        }
    }

    /// Keeps what a worker that is gone counted (its row is reused by the
    /// one that replaces it).
    fn carry_counts(&mut self, generation: u32, id: usize) {
        use corral_worker::counters::CUM_CONNS;
        self.shared.worker_gone(generation, id);
        let n = self.shared.worker_counter(generation, id, CUM_CONNS);
        self.shared.set_worker_counter(generation, id, CUM_CONNS, 0);
        self.shared.carry_conns(n);
    }

    fn signal_all(&self, sig: Signal) {
        for pid in self
            .slots
            .iter()
            .filter_map(|s| s.pid)
            .chain(self.old.iter().map(|o| o.pid))
        {
            let _ = kill(pid, sig);
        }
    }

    /// SIGUSR1: workers stop accepting and drain; the master exits after them.
    fn soft_stop(&mut self) {
        if self.stopping != Stopping::No {
            return;
        }
        log::info!("soft stop: workers stop accepting and finish their connections");
        notify::notify("STOPPING=1");
        self.listeners.clear();
        self.signal_all(Signal::SIGUSR1);
        for o in &mut self.old {
            o.draining = true;
        }
        let deadline = Instant::now() + self.cfg.global.hard_stop_after + HARD_STOP_GRACE;
        self.stopping = Stopping::Soft(deadline);
    }

    /// SIGTERM/SIGINT: workers close everything now.
    fn hard_stop(&mut self) {
        if matches!(self.stopping, Stopping::Hard(_)) {
            return;
        }
        log::info!("hard stop: closing all connections");
        notify::notify("STOPPING=1");
        self.listeners.clear();
        self.signal_all(Signal::SIGTERM);
        self.stopping = Stopping::Hard(Instant::now() + HARD_STOP_GRACE);
    }

    /// Whether a soft or hard stop is under way (a reload is refused then).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping != Stopping::No
    }

    // ---- stats socket -------------------------------------------------

    fn level(&self) -> Level {
        self.cfg.stats.as_ref().map_or(Level::Operator, |s| s.level)
    }

    pub(crate) fn add_client(&mut self, c: Client) -> usize {
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let fd = c.stream.as_raw_fd();
        entry.insert(c);
        let _ = self.poll.registry().register(
            &mut SourceFd(&fd),
            client_token(key),
            Interest::READABLE | Interest::WRITABLE,
        );
        key
    }

    fn accept_clients(&mut self) {
        loop {
            let accepted = match &self.stats {
                Some(l) => l.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    // A bound on what clients can make the master hold: a
                    // new client beyond it is told and closed.
                    if self.clients.len() >= cli::MAX_CLIENTS {
                        // Full: the least recently active client goes (so
                        // idle sessions cannot lock an operator out), but
                        // never one waiting for its reload's outcome.
                        let reply = self.switch.as_ref().and_then(|s| s.reply);
                        let oldest = self
                            .clients
                            .iter()
                            .filter(|(k, _)| Some(*k) != reply)
                            .min_by_key(|(_, c)| c.last)
                            .map(|(k, _)| k);
                        match oldest {
                            Some(k) => self.drop_client(k),
                            None => {
                                let mut stream = stream;
                                let _ = stream.set_nonblocking(true);
                                let _ =
                                    std::io::Write::write(&mut stream, b"Too many clients.\n\n");
                                continue;
                            }
                        }
                    }
                    if let Ok(c) = Client::new(stream, self.level()) {
                        self.add_client(c);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("stats socket accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn drop_client(&mut self, key: usize) {
        // Its query's answer must not go to the next client of this key.
        self.queries.retain(|q| q.client() != key);
        if let Some(c) = self.clients.try_remove(key) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&c.stream.as_raw_fd()));
        }
    }

    /// Sends `text` as the whole answer to client `key`, then closes it.
    pub(crate) fn answer_and_close(&mut self, key: usize, text: &str) {
        if let Some(c) = self.clients.get_mut(key) {
            c.prompt = false;
            c.answer(text);
            c.closing = true;
            if matches!(c.flush(), Ok(true) | Err(_)) {
                self.drop_client(key);
            }
        }
    }

    fn on_client(&mut self, key: usize) {
        if self.switch.as_ref().and_then(|s| s.reply) == Some(key) {
            // Waiting for the outcome of its reload: its EOF (socat shuts
            // its write side) must not close it before the answer.
            return;
        }
        match self.clients.get_mut(key).map(|c| c.read_input()) {
            Some(Ok(())) => {}
            Some(Err(_)) => return self.drop_client(key),
            None => return,
        }
        self.run_client(key);
    }

    /// Runs what the client queued, in order, streaming a dump as the
    /// client reads: a dump produces only while little output waits, and the
    /// commands after it wait for it. Never blocks on the client.
    fn run_client(&mut self, key: usize) {
        loop {
            let Some(c) = self.clients.get_mut(key) else {
                return;
            };
            if c.querying {
                // Its answer is being gathered from the workers.
                return;
            }
            if c.dump.is_some() {
                if c.pending() >= cli::LOW_WATER {
                    match c.flush() {
                        Ok(_) if c.pending() < cli::LOW_WATER => {}
                        Ok(_) => return, // the next writable event resumes
                        Err(_) => return self.drop_client(key),
                    }
                }
                // One step, then the others' turn: a client that reads as
                // fast as we write must not hold the loop for the whole dump.
                let mut dump = c.dump.take().expect("checked");
                let mut out = std::mem::take(c.output_mut());
                let done = { dump.step(&self.view(), &mut out, cli::LOW_WATER) };
                let c = &mut self.clients[key];
                *c.output_mut() = out;
                if done {
                    c.answer("");
                    continue;
                }
                c.dump = Some(dump);
                match c.flush() {
                    Err(_) => return self.drop_client(key),
                    Ok(_) if c.pending() < cli::LOW_WATER => {
                        if !self.runnable.contains(&key) {
                            self.runnable.push(key);
                        }
                        return;
                    }
                    Ok(_) => return,
                }
            }
            if c.queue.is_empty() && c.input_pending {
                if c.read_input().is_err() {
                    return self.drop_client(key);
                }
                continue;
            }
            let Some(item) = c.queue.pop_front() else {
                break;
            };
            match item {
                cli::Item::LineStart => c.line_was_interactive = c.interactive,
                cli::Item::LineEnd => {
                    if !c.line_was_interactive && !c.interactive {
                        // Non-interactive: one line, then the connection closes.
                        if !c.has_output() {
                            c.answer("");
                        }
                        c.closing = true;
                        c.queue.clear();
                    }
                }
                cli::Item::Command(words) => {
                    let outcome = {
                        // Disjoint borrows: the view reads the master's fields,
                        // the command may change the client's mode.
                        let view = view_of(
                            &self.cfg,
                            &self.shared,
                            &self.slots,
                            &self.old,
                            self.generation,
                            self.failed_reloads,
                            self.started,
                            self.stopping != Stopping::No,
                            &self.history,
                        );
                        commands::execute(&words, &mut self.clients[key], &view)
                    };
                    let c = &mut self.clients[key];
                    match outcome {
                        commands::Outcome::Text(t) => c.answer(&t),
                        // Every command's answer ends with the empty line
                        // (or the prompt), even an empty answer.
                        commands::Outcome::Silent => c.answer(""),
                        commands::Outcome::Dump(d) => c.dump = Some(d),
                        commands::Outcome::Quit => {
                            c.closing = true;
                            c.queue.clear();
                        }
                        commands::Outcome::Reload => {
                            c.queue.clear();
                            self.reload(Some(key));
                            return;
                        }
                        commands::Outcome::GetSocks => {
                            self.give_sockets(key);
                            return;
                        }
                        commands::Outcome::Query(what, arg) => {
                            if !self.start_query(key, what, &arg) {
                                // No worker to ask: an empty answer.
                                let c = &mut self.clients[key];
                                c.answer(&crate::queries::empty_answer(what));
                            }
                            continue;
                        }
                    }
                }
            }
        }
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.eof && c.queue.is_empty() && c.dump.is_none() {
            c.closing = true;
        }
        match c.flush() {
            Ok(true) if c.closing => self.drop_client(key),
            Err(_) => self.drop_client(key),
            _ => {}
        }
    }

    /// Once a second: the sample rates and maxima are computed from
    /// (see `cli::history`).
    fn sample_counters(&mut self) {
        let now = Instant::now();
        if self.waiting || now < self.history.borrow().next_deadline() {
            return;
        }
        use corral_worker::counters::{BUSY_US, LOOPS};
        let live: Vec<usize> = self
            .slots
            .iter()
            .filter(|s| s.pid.is_some())
            .map(|s| s.id)
            .collect();
        let busy: u64 = live
            .iter()
            .map(|&id| self.shared.worker_counter(self.generation, id, BUSY_US))
            .sum();
        let loops: u64 = self
            .slots
            .iter()
            .filter(|s| s.pid.is_some())
            .map(|s| (self.generation, s.id))
            .chain(
                self.old
                    .iter()
                    .filter(|o| !o.foreign)
                    .map(|o| (o.generation, o.id)),
            )
            .map(|(g, id)| self.shared.worker_counter(g, id, LOOPS))
            .fold(0u64, u64::wrapping_add);
        let busy = (busy, live.len());
        if self.history.borrow_mut().idle_tick(busy, loops, now) {
            return;
        }
        let stats = self.shared.all_stats();
        let totals = cli::totals::Totals::new(&stats);
        let keys = crate::shared::row_keys(&self.cfg);
        self.history
            .borrow_mut()
            .tick(&totals, &keys, busy, loops, now);
    }

    // ---- stats page ---------------------------------------------------

    fn accept_web(&mut self) {
        loop {
            let accepted = match &self.web {
                Some(l) => l.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    if self.web_clients.len() >= crate::web::MAX_CLIENTS {
                        // Full: the oldest goes (a slow client cannot lock
                        // everyone else out).
                        if let Some(k) = self
                            .web_clients
                            .iter()
                            .min_by_key(|(_, c)| c.since)
                            .map(|(k, _)| k)
                        {
                            self.web_clients.remove(k);
                        }
                    }
                    let Ok(c) = crate::web::WebClient::new(stream) else {
                        continue;
                    };
                    let fd = c.stream().as_raw_fd();
                    let key = self.web_clients.insert(c);
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut SourceFd(&fd),
                            Token(WEB_BASE + key),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.web_clients.remove(key);
                        continue;
                    }
                    // Data may already be there: edge-triggered.
                    self.on_web(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("stats page accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn on_web(&mut self, key: usize) {
        let Some(c) = self.web_clients.get_mut(key) else {
            return;
        };
        match c.read_head() {
            Err(_) => {
                self.web_clients.remove(key);
                return;
            }
            Ok(Some(head)) => {
                let answer = crate::web::answer(&head, &self.view());
                self.web_clients[key].answer(answer);
            }
            Ok(None) => {}
        }
        match self.web_clients[key].flush() {
            Ok(true) | Err(_) => {
                self.web_clients.remove(key);
            }
            Ok(false) => {}
        }
    }

    /// What the commands, dumps and the stats page show.
    fn view(&self) -> commands::View<'_> {
        view_of(
            &self.cfg,
            &self.shared,
            &self.slots,
            &self.old,
            self.generation,
            self.failed_reloads,
            self.started,
            self.stopping != Stopping::No,
            &self.history,
        )
    }

    /// Client `key` may go on with its queued commands (its query was
    /// answered): on the next loop turn.
    pub(crate) fn run_client_again(&mut self, key: usize) {
        if !self.runnable.contains(&key) {
            self.runnable.push(key);
        }
    }

    fn expire_clients(&mut self) {
        self.finish_queries(true);
        let now = Instant::now();
        let idle_web: Vec<usize> = self
            .web_clients
            .iter()
            .filter(|(_, c)| now >= c.last + crate::web::TIMEOUT)
            .map(|(k, _)| k)
            .collect();
        for key in idle_web {
            self.web_clients.remove(key);
        }
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.last.checked_add(c.timeout).is_some_and(|t| now >= t))
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            if self.switch.as_ref().and_then(|s| s.reply) != Some(key) {
                self.drop_client(key);
            }
        }
    }
}

/// The rows of `show proc` / `show activity` and the sums of `show info`,
/// from the workers' counters: gauges over live workers only, cumulative
/// counts with what workers that are gone counted.
#[allow(clippy::too_many_arguments)]
fn view_of<'a>(
    cfg: &'a Config,
    shared: &'a SharedSegment,
    slots: &[Slot],
    old: &[OldWorker],
    generation: u32,
    failed_reloads: u32,
    started: SystemTime,
    stopping: bool,
    history: &'a std::cell::RefCell<cli::history::History>,
) -> commands::View<'a> {
    let n = corral_worker::worker::COUNTERS;
    let words = |generation: u32, id: usize, foreign: bool| -> Vec<u64> {
        if foreign {
            return Vec::new();
        }
        shared.worker_counters(generation, id, n)
    };
    let mut workers: Vec<commands::ProcRow> = slots
        .iter()
        .filter_map(|s| {
            s.pid.map(|pid| commands::ProcRow {
                pid: pid.as_raw(),
                id: s.id,
                generation,
                started: s.started_wall,
                draining: false,
                counters: words(generation, s.id, false),
                slot: s.epoch_slot,
            })
        })
        .collect();
    workers.extend(old.iter().map(|o| commands::ProcRow {
        pid: o.pid.as_raw(),
        id: o.id,
        generation: o.generation,
        started: o.started_wall,
        draining: o.draining,
        counters: words(o.generation, o.id, o.foreign),
        slot: (!o.foreign).then_some(o.epoch_slot),
    }));
    commands::View {
        cfg,
        tables: shared.tables(),
        caches: shared.caches(),
        master: commands::ProcRow {
            pid: std::process::id() as i32,
            id: 0,
            generation,
            started,
            draining: stopping,
            counters: Vec::new(),
            slot: None,
        },
        failed_reloads,
        workers,
        slot: shared.master_slot(),
        carried_conns: shared.carried_conns(),
        master_dropped_logs: corral_worker::process_log::dropped(),
        stats: shared.all_stats(),
        health: shared.health().clone(),
        history,
    }
}

fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd this process holds.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn next_backoff(prev: Duration) -> Duration {
    if prev.is_zero() {
        Duration::from_millis(100)
    } else {
        (prev * 2).min(MAX_BACKOFF)
    }
}
