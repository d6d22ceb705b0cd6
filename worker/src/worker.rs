//! The worker process: one single-threaded mio loop over the inherited
//! listeners, every proxied connection, the master's pipe and signals.
//!
//! One loop turn: wait for events (or the next deadline), update readiness,
//! advance the connections that got events, accept in bounded batches, give
//! connections that hit their byte budget another turn, fire due deadlines,
//! write the turn's log lines. Every step is bounded, so one busy connection
//! cannot starve the others, and when nothing can progress the worker sleeps
//! in epoll: an idle worker uses no CPU.
//!
//! Stopping: a **soft stop** (SIGUSR1, or the master gone) closes the
//! listeners with close() and lets connections finish, then exits 0; after
//! `hard_stop_after` the rest are killed. A **hard stop** (SIGTERM/SIGINT)
//! closes everything now.

use std::io::{self, Read};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use corral_shm::flags::SharedFlags;
use std::time::{Duration, Instant};

use corral_config::Config;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::access_log::AccessLog;
use crate::balance::Balancer;
use crate::client::{Client, CLIENT_BASE};
use crate::forward::{BufPool, Pools};
use crate::health::{Checks, CHECK_BASE};
use crate::listeners::Listeners;
use crate::server_conn::{ServerConn, SERVER_BASE};
use crate::splice::PipePool;
use crate::timers::Timers;

pub(crate) const MASTER: Token = Token(1);
pub(crate) const SIGNALS: Token = Token(2);
/// The access log's fd, polled for writability while its reader stalls.
pub(crate) const ACCESS_LOG: Token = Token(3);
/// The process log's fd, likewise.
pub(crate) const PROCESS_LOG: Token = Token(4);
/// Listener `i` reports token `LISTENER_BASE + i` (below the checks' tokens).
pub(crate) const LISTENER_BASE: usize = usize::MAX / 4;

/// Connections accepted from one listener per loop turn before others get a turn.
const ACCEPT_BATCH: usize = 64;
/// Bytes one direction may move per turn before other connections get a turn.
pub(crate) const PUMP_BUDGET: usize = 1 << 20;
/// How long listeners stay paused after the process ran out of fds.
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// What the master hands a worker at fork time.
pub struct WorkerSetup {
    /// The configuration (already validated).
    pub config: Arc<Config>,
    /// Listening sockets, each with its frontend index.
    pub listeners: Vec<(usize, TcpListener)>,
    /// The worker end of the lifeline (see [`crate::lifeline`]): EOF means
    /// the master is gone; the worker tells the master it accepts, and that
    /// it left the accept queues on a soft stop.
    pub master_pipe: OwnedFd,
    /// This worker's number (1-based), for logs.
    pub id: usize,
    /// Config generation (reload count + 1), for logs.
    pub generation: u32,
    /// The access log, opened by the master before the fork (it can still
    /// open what the worker, after dropping privileges, could not).
    pub log: AccessLog,
    /// The shared segment: stick tables and tracking records.
    pub shared: crate::stick::Shared,
    /// Server health flags of this generation (0 up, 1 down), one per server
    /// in config order; each is written by the worker that checks the server.
    pub health: SharedFlags,
    /// This generation's per-worker counters ([`COUNTERS`] per worker, worker
    /// `id` at `(id - 1) * COUNTERS`), written by each worker once per loop turn.
    pub counters: SharedFlags,
    /// This generation's proxy counter rows (`show stat`), if the master made them.
    pub stats: Option<corral_shm::stats::StatsRegion>,
    /// The worker end of its control socket: the master sends the handoff
    /// channels on it ([`crate::handoff`]).
    pub control: Option<OwnedFd>,
}

pub use crate::counters::COUNTERS;

/// Per-frontend counters and limits of this worker.
pub(crate) struct FrontendState {
    pub cur: u32,
    pub max: u32,
    pub total: u64,
}

/// Per-backend runtime state of this worker.
pub(crate) struct BackendState {
    pub balancer: Balancer,
    /// Connections waiting for a server slot: (client key, serial).
    pub queue: std::collections::VecDeque<(usize, u64)>,
    pub cur: u32,
}

/// Signals a worker reacts to, set by signal-hook's handlers.
struct SignalFlags {
    soft: Arc<AtomicBool>,
    hard: Arc<AtomicBool>,
    pipe: UnixStream,
}

/// The worker's whole state.
pub struct Worker {
    pub(crate) cfg: Arc<Config>,
    pub(crate) poll: Poll,
    pub(crate) listeners: Listeners,
    pub(crate) clients: Slab<Client>,
    pub(crate) servers: Slab<ServerConn>,
    /// Idle server connections any client may take (`http_reuse`).
    pub(crate) server_pools: crate::server_pool::ServerPools,
    /// This worker's cells of the proxy counter rows.
    pub(crate) rows: crate::rows::Rows,
    pub(crate) frontends: Vec<FrontendState>,
    pub(crate) backends: Vec<BackendState>,
    pub(crate) pools: Pools,
    pub(crate) timers: Timers,
    pub(crate) log: AccessLog,
    /// Client connections with work left after their budget, served next turn.
    pub(crate) ready: Vec<usize>,
    /// The shared HTTP caches.
    pub(crate) caches: crate::cache::Caches,
    /// The client connection whose driver is running now (its own loop
    /// sees what changed; others are woken through `ready`).
    pub(crate) advancing: Option<usize>,
    pub(crate) serial: u64,
    /// Concurrent connections of this worker, and its share of global maxconn.
    pub(crate) cur: u32,
    pub(crate) max: u32,
    /// Listeners that reported connections this turn, or have more waiting.
    accept_pending: Vec<usize>,
    /// Activity counters published for `show activity`.
    pub(crate) activity: crate::counters::Activity,
    /// Naps between polls under load (see [`crate::nap`]).
    napper: crate::nap::Napper,
    /// The clock of the data path: read when the poll returns and again
    /// when timers fire, rather than at every step of every connection
    /// (HAProxy's `now_ms` is per loop too). Steps in between see the same
    /// time; a turn is bounded by its budgets.
    pub(crate) now: Instant,
    /// The last refused request per frontend and response per backend.
    pub(crate) errors: crate::query::ErrorLog,
    /// Answers to the master's queries, being sent.
    pub(crate) answers: crate::query::Answers,
    /// Log fds registered for writability (access log, process log).
    log_polled: [crate::log_sink::BlockedPoll; 2],
    fd_pause_until: Option<Instant>,
    stop_deadline: Option<Instant>,
    master: UnixStream,
    signals: SignalFlags,
    pub(crate) sticky: crate::stick::Sticky,
    /// Handoff channels and connections on their way ([`crate::handoff`]).
    pub(crate) handoff: crate::handoff::Handoff,
    /// Connections closed by `tcp-request connection reject`, per frontend.
    pub(crate) denied: Vec<u64>,
    checks: Checks,
    transitions: Vec<crate::health::Transition>,
    health: SharedFlags,
    counters: SharedFlags,
    pub(crate) id: usize,
}

impl Worker {
    /// Client `key`'s state changed outside its own driver (a queue
    /// slot, another connection's event, a timer): it runs next turn. From
    /// inside its driver nothing is needed, the loop goes on by itself.
    pub(crate) fn wake(&mut self, key: usize) {
        if self.advancing != Some(key) {
            self.ready.push(key);
        }
    }

    /// Builds the worker's loop around the inherited sockets.
    pub fn new(setup: WorkerSetup) -> io::Result<Worker> {
        let cfg = setup.config;
        let poll_naps = cfg.global.poll_naps;
        let n = cfg.global.workers.max(1) as u32;
        // Worker `id` of `n` gets `max / n`, plus one for the first `max % n`
        // workers: the shares add up to exactly `max`. A worker at its share
        // leaves the exclusive wait queue, so the kernel hands new connections
        // to workers with room: the cap holds for the whole instance.
        let idx = (setup.id.max(1) - 1) as u32;
        let share = |max: u32| max / n + u32::from(idx < max % n);
        let poll = Poll::new()?;
        let listeners = Listeners::new(setup.listeners, poll.as_raw_fd(), LISTENER_BASE)?;
        let master = UnixStream::from(setup.master_pipe);
        master.set_nonblocking(true)?;
        poll.registry().register(
            &mut SourceFd(&master.as_raw_fd()),
            MASTER,
            Interest::READABLE,
        )?;
        let handoff = crate::handoff::Handoff::new(setup.control);
        if let Some(fd) = handoff.control_fd() {
            // Writable too: a long answer to a query waits for room.
            poll.registry().register(
                &mut SourceFd(&fd),
                crate::handoff::CONTROL,
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        let signals = register_signals()?;
        poll.registry().register(
            &mut SourceFd(&signals.pipe.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let mut max = share(cfg.global.maxconn);
        if let Some(limit) = cfg.global.memory_limit {
            // Like `haproxy -m`: derive a connection cap from the memory budget,
            // so a full worker refuses new work instead of failing an allocation.
            let per_conn = per_conn_memory(&cfg);
            let budget = limit / n as u64;
            max = max.min((budget / per_conn).max(1) as u32);
        }
        let seed = (std::process::id() as u64) << 32 ^ setup.id as u64;
        let backends = cfg
            .backends
            .iter()
            .map(|b| BackendState {
                balancer: Balancer::new(b, seed),
                queue: Default::default(),
                cur: 0,
            })
            .collect();
        let frontends = cfg
            .frontends
            .iter()
            .map(|f| FrontendState {
                cur: 0,
                max: share(f.maxconn),
                total: 0,
            })
            .collect();
        let cfg_for_checks = cfg.clone();
        let mut w = Worker {
            log: setup.log,
            pools: Pools {
                pipes: PipePool::new((max as usize / 2).max(16), cfg.global.workers),
                bufs: BufPool::default(),
                spliced_bytes: 0,
            },
            cfg,
            poll,
            listeners,
            clients: Slab::new(),
            servers: Slab::new(),
            server_pools: crate::server_pool::ServerPools::new(&cfg_for_checks),
            rows: crate::rows::Rows::new(&cfg_for_checks, setup.stats, setup.id),
            frontends,
            backends,
            timers: Timers::default(),
            ready: Vec::new(),
            caches: crate::cache::Caches::new(
                &cfg_for_checks,
                setup.shared.caches.clone(),
                setup.shared.seg,
                setup.shared.slot,
            ),
            advancing: None,
            serial: 0,
            cur: 0,
            max,
            accept_pending: Vec::new(),
            activity: Default::default(),
            napper: crate::nap::Napper::new(poll_naps),
            now: Instant::now(),
            errors: Default::default(),
            answers: Default::default(),
            log_polled: Default::default(),
            fd_pause_until: None,
            stop_deadline: None,
            master,
            signals,
            sticky: crate::stick::Sticky::new(&cfg_for_checks, setup.shared),
            handoff,
            denied: vec![0; cfg_for_checks.frontends.len()],
            checks: Checks::new(&cfg_for_checks, setup.id),
            transitions: Vec::new(),
            health: setup.health,
            counters: setup.counters,
            id: setup.id,
        };
        let health = w.health.clone();
        w.checks.resume(&w.cfg, |k| health.get(k));
        w.resume_listeners();
        Ok(w)
    }

    /// Runs until stopped; returns the process exit status.
    pub fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(1024);
        if self.cfg.global.poll_naps {
            crate::nap::tighten_timer_slack();
        }
        // Visible before the first event (an idle worker may wait long).
        self.publish_counters();
        let mut turn_start = Instant::now();
        loop {
            let now = Instant::now();
            let timeout = if !self.accept_pending.is_empty() || !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else {
                [
                    self.timers.next(),
                    self.fd_pause_until,
                    self.stop_deadline,
                    self.checks.next_deadline(&self.cfg),
                    self.server_pools.next_deadline(),
                ]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(now))
            };
            self.activity.busy_us += (now - turn_start).as_micros() as u64;
            if let Err(e) = self.wait(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.id);
                    return 1;
                }
            }
            turn_start = Instant::now();
            self.napper.waited(turn_start - now);
            self.now = turn_start;
            self.activity.loops += 1;
            crate::server_conn::count_poll();
            // Health decided by other workers applies before any dispatch.
            self.sync_servers();
            for ev in events.iter() {
                match ev.token() {
                    MASTER => self.on_master_pipe(),
                    crate::handoff::CONTROL => {
                        self.on_control();
                        self.flush_answers();
                    }
                    SIGNALS => self.on_signal(),
                    ACCESS_LOG | PROCESS_LOG => {} // flushed below
                    Token(t) if t >= CHECK_BASE => self.checks.on_event(
                        Token(t),
                        &self.cfg,
                        self.poll.registry(),
                        &mut self.transitions,
                    ),
                    Token(t) if t >= LISTENER_BASE => {
                        if let Some(i) = self.listeners.index_of(t) {
                            if !self.accept_pending.contains(&i) {
                                self.accept_pending.push(i);
                            }
                        }
                    }
                    Token(t) if t >= SERVER_BASE => self.on_server_event(t - SERVER_BASE, ev),
                    Token(t) if t >= crate::handoff::HANDOFF_BASE => {
                        self.on_handoff_event(t - crate::handoff::HANDOFF_BASE)
                    }
                    Token(t) if t >= CLIENT_BASE => self.on_client_event(t - CLIENT_BASE, ev),
                    Token(_) => {}
                }
            }
            if self.signals.hard.load(Ordering::Relaxed) {
                self.kill_all();
                self.flush_logs();
                return 0;
            }
            for i in std::mem::take(&mut self.accept_pending) {
                if i < self.listeners.len() && self.listeners.is_active(i) {
                    self.accept_from(i);
                }
            }
            let again = std::mem::take(&mut self.ready);
            for key in again {
                if self.clients.contains(key) {
                    self.advance(key);
                }
            }
            self.fire_timers();
            self.flush_handoffs();
            self.flush_answers();
            self.sticky.maintain();
            self.caches.maintain();
            self.flush_logs();
            self.publish_counters();
            if let Some(deadline) = self.stop_deadline {
                if self.clients.is_empty() {
                    let (handed, kept) = (self.handoff.handed, self.handoff.kept);
                    if handed + kept > 0 {
                        log::info!(
                            "worker {}: {handed} connection(s) handed over to the new generation, {kept} finished here",
                            self.id
                        );
                        self.flush_logs();
                    }
                    return 0;
                }
                if Instant::now() >= deadline {
                    log::warn!(
                        "worker {}: hard_stop_after reached, closing {} connection(s)",
                        self.id,
                        self.clients.len()
                    );
                    self.kill_all();
                    self.flush_logs();
                    return 0;
                }
            }
        }
    }

    /// Waits for events, for at most `timeout`: naps first while events
    /// come thick and fast ([`crate::nap`]), then `epoll_wait`.
    fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let span = self.napper.span(timeout);
        if span.is_zero() {
            return self.poll.poll(events, timeout);
        }
        // Naps are timed by the clock, not counted: a nap may oversleep.
        let start = Instant::now();
        let mut now = start;
        while now + crate::nap::NAP <= start + span {
            self.poll.poll(events, Some(Duration::ZERO))?;
            if !events.is_empty() {
                return Ok(());
            }
            std::thread::sleep(crate::nap::NAP);
            self.activity.naps += 1;
            now = Instant::now();
        }
        let left = timeout.map(|t| t.saturating_sub(now - start));
        self.poll.poll(events, left)
    }

    /// Writes the turn's log lines without blocking; a log whose reader
    /// stalls is polled for writability until its lines are out.
    fn flush_logs(&mut self) {
        self.log.flush();
        crate::process_log::flush();
        let reg = self.poll.registry();
        self.log_polled[0].sync(reg, ACCESS_LOG, self.log.blocked_fd());
        self.log_polled[1].sync(reg, PROCESS_LOG, crate::process_log::blocked_fd());
    }

    fn on_master_pipe(&mut self) {
        let mut buf = [0u8; 64];
        loop {
            match (&self.master).read(&mut buf) {
                Ok(0) => {
                    log::warn!("worker {}: master is gone, soft-stopping", self.id);
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&self.master.as_raw_fd()));
                    self.soft_stop();
                    return;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.soft_stop();
                    return;
                }
            }
        }
    }

    fn on_signal(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.signals.pipe).read(&mut buf), Ok(n) if n > 0) {}
        if self.signals.soft.swap(false, Ordering::Relaxed) {
            self.soft_stop();
        }
    }

    /// Sends `msg` to the master on the lifeline (never blocks).
    pub fn tell_master(&self, msg: crate::lifeline::Message) {
        crate::lifeline::send(self.master.as_raw_fd(), msg);
    }

    /// Stops accepting and lets open connections finish, up to hard_stop_after.
    pub(crate) fn soft_stop(&mut self) {
        if self.stop_deadline.is_some() {
            return;
        }
        // The master sent the handoff channels before the signal.
        self.on_control();
        self.drain_listeners();
        self.listeners.close_all();
        self.tell_master(crate::lifeline::Message::LeftQueue);
        self.accept_pending.clear();
        self.stop_deadline = Some(Instant::now() + self.cfg.global.hard_stop_after);
        // Idle HTTP keep-alive connections close now; busy ones after
        // their exchange (their response says `Connection: close`).
        self.http_soft_stop();
        self.server_pools.clear(&mut self.servers);
        // Queued connections will never get a slot from a new accept, but they
        // still get one when a connection ends: they keep their place.
        log::info!(
            "worker {}: soft stop, {} connection(s) to drain",
            self.id,
            self.clients.len()
        );
    }

    /// Whether this worker is soft-stopping (responses then close).
    pub(crate) fn stopping(&self) -> bool {
        self.stop_deadline.is_some()
    }

    /// Before closing the listeners on a soft stop: leave the exclusive wait
    /// queues first (no new wakeup can land here), then accept what is
    /// already queued. The kernel wakes one exclusive waiter per connection;
    /// a connection whose wakeup landed here would otherwise sit in the queue
    /// until the next connection wakes another worker.
    fn drain_listeners(&mut self) {
        for i in 0..self.listeners.len() {
            self.listeners.pause(i);
        }
        for i in 0..self.listeners.len() {
            let fe = self.listeners.get(i).frontend;
            while self.cur < self.max && self.frontends[fe].cur < self.frontends[fe].max {
                match self.listeners.accept(i) {
                    Ok(Some(acc)) => self.on_accepted(fe, acc),
                    _ => break,
                }
            }
        }
    }

    fn accept_from(&mut self, i: usize) {
        let fe = self.listeners.get(i).frontend;
        for n in 0..ACCEPT_BATCH {
            if self.cur >= self.max || self.frontends[fe].cur >= self.frontends[fe].max {
                self.pause_for_maxconn();
                return;
            }
            match self.listeners.accept(i) {
                Ok(Some(acc)) => {
                    self.activity.accepted += 1;
                    self.on_accepted(fe, acc)
                }
                Ok(None) => {
                    if n == 0 {
                        // Woken for a connection another worker took.
                        self.activity.accept_empty += 1;
                    }
                    return;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE)
                            | Some(libc::ENFILE)
                            | Some(libc::ENOBUFS)
                            | Some(libc::ENOMEM)
                    ) =>
                {
                    log::warn!(
                        "worker {}: accept failed ({e}); pausing listeners for {:?}",
                        self.id,
                        FD_EXHAUSTED_PAUSE
                    );
                    for j in 0..self.listeners.len() {
                        self.listeners.pause(j);
                    }
                    self.fd_pause_until = Some(Instant::now() + FD_EXHAUSTED_PAUSE);
                    return;
                }
                Err(e) => {
                    log::warn!("worker {}: accept failed: {e}", self.id);
                    return;
                }
            }
        }
        // Batch bound hit: more may be waiting; come back next turn.
        self.accept_pending.push(i);
    }

    /// Pauses listeners whose frontend (or the whole worker) is at maxconn.
    pub(crate) fn pause_for_maxconn(&mut self) {
        for j in 0..self.listeners.len() {
            let fe = self.listeners.get(j).frontend;
            if self.cur >= self.max || self.frontends[fe].cur >= self.frontends[fe].max {
                self.listeners.pause(j);
            }
        }
    }

    /// Resumes listeners that are below their limits again.
    pub(crate) fn resume_listeners(&mut self) {
        if self.stop_deadline.is_some() || self.fd_pause_until.is_some() {
            return;
        }
        for j in 0..self.listeners.len() {
            let fe = self.listeners.get(j).frontend;
            if !self.listeners.is_active(j)
                && self.cur < self.max
                && self.frontends[fe].cur < self.frontends[fe].max
            {
                // Connections queued while it was paused are reported by the
                // level-triggered registration at the next poll.
                if let Err(e) = self.listeners.resume(j) {
                    log::error!("worker {}: cannot resume listener: {e}", self.id);
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        // The turn's clock catches up: a deadline re-armed from a handler
        // (`self.now + interval`) must land after the `now` that pops them,
        // or a turn that ran long would pop it again at once, forever.
        self.now = now;
        if self.fd_pause_until.is_some_and(|t| t <= now) {
            self.fd_pause_until = None;
            self.resume_listeners();
        }
        self.checks
            .on_timer(&self.cfg, self.poll.registry(), now, &mut self.transitions);
        let changed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let transitions = std::mem::take(&mut self.transitions);
        for (be, server, ok, took) in self.checks.take_results() {
            if let Some(w) = self.checks.health_word(be, server) {
                let k = crate::health::server_number(&self.cfg, be, server);
                self.health.set(k, w);
            }
            let went = transitions
                .iter()
                .find(|t| t.0 == be && t.1 == server)
                .map(|t| t.2);
            self.rows.check(
                be,
                server,
                ok,
                went == Some(false),
                went.map(|_| changed_at),
                took.as_millis() as u64,
            );
        }
        self.sync_servers();
        self.server_pools.purge(&self.cfg, &mut self.servers, now);
        while let Some((key, serial, at)) = self.timers.pop_due(now) {
            if let Some(s) = self
                .clients
                .get_mut(key)
                .filter(|s| s.serial == serial && s.armed == Some(at))
            {
                s.armed = None; // popped: the set no longer holds it
                self.on_deadline(key, now);
            }
        }
    }
}

impl Worker {
    /// Publishes this worker's counters for `show info` and `show activity`
    /// (a dozen plain stores a turn, each word written by this worker only).
    fn publish_counters(&self) {
        use crate::counters::*;
        let base = (self.id.max(1) - 1) * COUNTERS;
        let total: u64 = self.frontends.iter().map(|f| f.total).sum();
        let set = |k: usize, v: u64| self.counters.set(base + k, v);
        set(CUR_CONNS, self.cur as u64);
        set(CUM_CONNS, total);
        set(PIPES_USED, self.pools.pipes.used() as u64);
        set(PIPES_FREE, self.pools.pipes.free() as u64);
        set(MAX_PIPES, self.pools.pipes.max() as u64);
        set(PIPES_GROWN, self.pools.pipes.grown() as u64);
        set(PIPES_GROWN_FREE, self.pools.pipes.grown_free() as u64);
        set(PIPE_FAILURES, self.pools.pipes.failures);
        set(RUN_QUEUE, self.ready.len() as u64);
        set(STOPPING, u64::from(self.stop_deadline.is_some()));
        set(ACCEPTED, self.activity.accepted);
        set(ACCEPT_EMPTY, self.activity.accept_empty);
        set(LOOPS, self.activity.loops);
        set(BUSY_US, self.activity.busy_us);
        set(NAPS, self.activity.naps);
        set(CLIENT_CONNS, self.clients.len() as u64);
        set(SERVER_CONNS, self.servers.len() as u64);
        set(POOLED_CONNS, self.server_pools.len() as u64);
        set(CLIENT_SIZE, std::mem::size_of::<Client>() as u64);
        set(SERVER_SIZE, std::mem::size_of::<ServerConn>() as u64);
        set(TIMERS, self.timers.len() as u64);
        set(
            LOG_DROPPED,
            self.log.dropped() + crate::process_log::dropped(),
        );
        for (i, f) in self.frontends.iter().enumerate() {
            self.rows.frontend_left(i, f.cur);
        }
        for (be, b) in self.backends.iter().enumerate() {
            self.rows.backend_gauges(be, b.cur, b.queue.len());
            for (i, s) in b.balancer.servers.iter().enumerate() {
                self.rows.server_gauge(be, i, s.cur);
            }
        }
    }

    /// Copies the shared server state into the balancers: the health
    /// flags (one load per server) and what the master set through the
    /// stats socket (admin state, weight, address: three loads per server).
    /// Once per loop turn, before any dispatch, so a change applies to the
    /// next request everywhere. A server that came back gets the queue.
    fn sync_servers(&mut self) {
        use corral_shm::server_state;
        let mut k = 0;
        for be in 0..self.backends.len() {
            let mut came_up = false;
            for s in 0..self.backends[be].balancer.servers.len() {
                let (up, _, _) = crate::health::decode_health(self.health.get(k));
                k += 1;
                let state = self.rows.server_state(be, s);
                let rt = state.map(server_state::read).unwrap_or_default();
                let seq = state.map_or(0, server_state::addr_seq);
                let configured = &self.cfg.backends[be].servers[s];
                let srv = &mut self.backends[be].balancer.servers[s];
                let was_usable = srv.up && !srv.maint && !srv.drain && srv.weight > 0;
                srv.up = up;
                srv.weight = rt.weight.unwrap_or(configured.weight);
                let paused_changed = srv.maint != rt.maint;
                srv.maint = rt.maint;
                srv.drain = rt.drain;
                came_up |= !was_usable && srv.up && !srv.maint && !srv.drain && srv.weight > 0;
                let mut addr_changed = false;
                if seq != srv.addr_seq {
                    if let Some(Ok(a)) = state.map(server_state::read_addr) {
                        let a = a.unwrap_or(configured.addr);
                        addr_changed = a != srv.addr;
                        srv.addr = a;
                        srv.addr_seq = seq;
                    }
                }
                if paused_changed || addr_changed {
                    let (maint, addr) = (srv.maint, srv.addr);
                    let rt_addr = (addr != configured.addr).then_some(addr);
                    self.checks
                        .set_runtime(self.poll.registry(), be, s, maint, rt_addr);
                }
                if addr_changed {
                    self.server_pools.drop_server(&mut self.servers, be, s);
                }
            }
            if came_up {
                self.offer_slots(be);
            }
        }
    }
}

/// The most memory one client connection can hold (with its server
/// connection), for the cap `memory_limit` implies: a TCP tunnel's two
/// buffers, or an HTTP exchange's four bounded buffers and the copy of a
/// body kept for a replay. (Pooled server connections hold no buffer.)
fn per_conn_memory(cfg: &Config) -> u64 {
    let tcp = std::mem::size_of::<Client>() + 2 * crate::forward::BUF_SIZE + 1024;
    let http = if cfg
        .frontends
        .iter()
        .any(|f| f.mode == corral_config::Mode::Http)
    {
        let head = cfg.global.http_limits.max_head.max(16 * 1024);
        tcp + std::mem::size_of::<crate::http::HttpFlow>()
            + std::mem::size_of::<ServerConn>()
            + crate::http::buffered_bytes(head)
            + crate::http::REPLAY_MAX
    } else {
        0
    };
    tcp.max(http) as u64
}

/// Blocks (or unblocks) the signals that stop a worker: the master's child
/// blocks them until the worker's handlers are in place, so none is lost.
pub fn block_stop_signals(block: bool) {
    // SAFETY: sigset_t is plain data set up by sigemptyset/sigaddset; this
    // changes only the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, s);
        }
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

fn register_signals() -> io::Result<SignalFlags> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    let soft = Arc::new(AtomicBool::new(false));
    let hard = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGUSR1, soft.clone())?;
    signal_hook::flag::register(SIGTERM, hard.clone())?;
    signal_hook::flag::register(SIGINT, hard.clone())?;
    for sig in [SIGUSR1, SIGTERM, SIGINT] {
        signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
    }
    // Handlers in place: what arrived meanwhile is delivered now.
    block_stop_signals(false);
    Ok(SignalFlags {
        soft,
        hard,
        pipe: read,
    })
}
