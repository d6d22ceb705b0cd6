//! The master process: forks the workers, respawns them when they die, and
//! turns signals into stops.
//!
//! Single-threaded on purpose: it forks, and a forked multi-threaded process
//! can inherit a lock held by a thread that does not exist in the child.
//! Signals reach the loop through signal-hook's self-pipe (registered in mio):
//! no handler does any work.
//!
//! Respawn: a worker that dies while the master is not stopping is replaced.
//! The first replacement is immediate; a worker that dies again within
//! [`STABLE_AFTER`] of its start doubles the delay, up to [`MAX_BACKOFF`], so a
//! worker that cannot start does not make the master spin.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_config::Config;
use corral_worker::WorkerSetup;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::proctitle;
use crate::shared::SharedSegment;

const SIGNALS: Token = Token(0);
/// A worker that lived this long is considered healthy: its next respawn is immediate.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Upper bound of the respawn delay of a crash-looping worker.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// After a hard stop, workers get this long to exit before SIGKILL.
const HARD_STOP_GRACE: Duration = Duration::from_secs(2);

/// One worker position: the process filling it, or when to fill it again.
#[derive(Debug)]
struct Slot {
    id: usize,
    pid: Option<Pid>,
    /// The worker's slot in the segment's epoch table (lock owner id).
    epoch_slot: usize,
    started: Instant,
    respawn_at: Option<Instant>,
    backoff: Duration,
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

/// The master's state.
pub struct Master {
    cfg: Arc<Config>,
    poll: Poll,
    signals: Option<Signals>,
    listeners: Vec<(usize, TcpListener)>,
    /// Workers hold the other end; it reads EOF when the master is gone.
    lifeline_worker_end: OwnedFd,
    lifeline_master_end: OwnedFd,
    slots: Vec<Slot>,
    stopping: Stopping,
    shared: SharedSegment,
}

impl Master {
    /// Sets up signal handling around already-bound listeners.
    pub fn new(
        cfg: Arc<Config>,
        listeners: Vec<(usize, TcpListener)>,
        shared: SharedSegment,
    ) -> io::Result<Master> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let (master_end, worker_end) = UnixStream::pair()?;
        let slots = (1..=cfg.global.workers)
            .map(|id| Slot {
                id,
                pid: None,
                epoch_slot: id,
                started: Instant::now(),
                respawn_at: Some(Instant::now()),
                backoff: Duration::ZERO,
            })
            .collect();
        Ok(Master {
            cfg,
            poll,
            signals: Some(signals),
            listeners,
            lifeline_worker_end: worker_end.into(),
            lifeline_master_end: master_end.into(),
            slots,
            stopping: Stopping::No,
            shared,
        })
    }

    /// Runs until stopped; returns the exit status.
    pub fn run(&mut self) -> i32 {
        proctitle::set("corral: master");
        let mut events = Events::with_capacity(16);
        loop {
            if self.stopping == Stopping::No {
                self.spawn_due();
            }
            if self.stopping != Stopping::No && self.slots.iter().all(|s| s.pid.is_none()) {
                log::info!("all workers exited; master exiting");
                return 0;
            }
            let now = Instant::now();
            let next = match self.stopping {
                Stopping::No => self.slots.iter().filter_map(|s| s.respawn_at).min(),
                Stopping::Soft(t) | Stopping::Hard(t) => Some(t),
            };
            let timeout = next.map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("master: poll failed: {e}");
                    return 1;
                }
            }
            let pending: Vec<i32> = self
                .signals
                .as_mut()
                .map(|s| s.pending().collect())
                .unwrap_or_default();
            for sig in pending {
                match sig {
                    SIGCHLD => self.reap(),
                    SIGTERM | SIGINT => self.hard_stop(),
                    SIGUSR1 => self.soft_stop(),
                    SIGUSR2 | SIGHUP => log::warn!(
                        "reload requested, but reload is not available in this version yet"
                    ),
                    _ => {}
                }
            }
            // A child may have exited between the signal and now: reap anyway.
            self.reap();
            match self.stopping {
                Stopping::Soft(t) | Stopping::Hard(t) if Instant::now() >= t => {
                    for s in self.slots.iter().filter(|s| s.pid.is_some()) {
                        log::warn!(
                            "worker {} (pid {}) did not exit in time: SIGKILL",
                            s.id,
                            s.pid.unwrap()
                        );
                        let _ = kill(s.pid.unwrap(), Signal::SIGKILL);
                    }
                    self.stopping = Stopping::Hard(Instant::now() + HARD_STOP_GRACE);
                }
                _ => {}
            }
        }
    }

    fn spawn_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].pid.is_none() && self.slots[i].respawn_at.is_some_and(|t| t <= now) {
                match self.spawn(i) {
                    Ok(pid) => {
                        let s = &mut self.slots[i];
                        self.shared.register(s.epoch_slot, pid.as_raw() as u32);
                        log::info!("worker {} started (pid {pid})", s.id);
                        s.pid = Some(pid);
                        s.started = now;
                        s.respawn_at = None;
                    }
                    Err(e) => {
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
    }

    fn spawn(&mut self, i: usize) -> nix::Result<Pid> {
        // SAFETY: the master is single-threaded, so the child inherits no lock
        // held by another thread; the child only runs the worker and exits.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                let id = self.slots[i].id;
                let code = self.become_worker(id);
                std::process::exit(code);
            }
        }
    }

    /// In the forked child: shed the master's state, become worker `id`.
    fn become_worker(&mut self, id: usize) -> i32 {
        // Dropping the master's Signals unregisters its handlers in this
        // process (the worker registers its own) and closes its self-pipe.
        drop(self.signals.take());
        // SAFETY: closing fds of the master's poller and lifeline that this
        // process will never use; they are not owned by anything that drops later
        // (the child leaves through process::exit).
        unsafe {
            libc::close(self.poll.as_raw_fd());
            libc::close(self.lifeline_master_end.as_raw_fd());
        }
        proctitle::set(&format!("corral: worker {id}"));
        if let Err(e) = crate::privileges::drop_to(&self.cfg.global) {
            log::error!("worker {id}: {e}");
            return 1;
        }
        let lifeline = match self.lifeline_worker_end.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                log::error!("worker {id}: {e}");
                return 1;
            }
        };
        let epoch_slot = self
            .slots
            .iter()
            .find(|s| s.id == id)
            .map_or(id, |s| s.epoch_slot);
        corral_worker::run(WorkerSetup {
            config: self.cfg.clone(),
            listeners: std::mem::take(&mut self.listeners),
            master_pipe: lifeline,
            id,
            shared: self.shared.for_worker(epoch_slot),
        })
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
            let Some(slot) = self.slots.iter_mut().find(|s| s.pid == Some(pid)) else {
                continue;
            };
            slot.pid = None;
            self.shared.recover(slot.epoch_slot, slot.id);
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
        }
    }

    fn signal_workers(&self, sig: Signal) {
        for s in &self.slots {
            if let Some(pid) = s.pid {
                let _ = kill(pid, sig);
            }
        }
    }

    /// SIGUSR1: workers stop accepting and drain; the master exits after them.
    fn soft_stop(&mut self) {
        if self.stopping != Stopping::No {
            return;
        }
        log::info!("soft stop: workers stop accepting and finish their connections");
        self.close_listeners();
        self.signal_workers(Signal::SIGUSR1);
        let deadline = Instant::now() + self.cfg.global.hard_stop_after + HARD_STOP_GRACE;
        self.stopping = Stopping::Soft(deadline);
    }

    /// SIGTERM/SIGINT: workers close everything now.
    fn hard_stop(&mut self) {
        if matches!(self.stopping, Stopping::Hard(_)) {
            return;
        }
        log::info!("hard stop: closing all connections");
        self.close_listeners();
        self.signal_workers(Signal::SIGTERM);
        self.stopping = Stopping::Hard(Instant::now() + HARD_STOP_GRACE);
    }

    fn close_listeners(&mut self) {
        self.listeners.clear();
    }
}

fn next_backoff(prev: Duration) -> Duration {
    if prev.is_zero() {
        Duration::from_millis(100)
    } else {
        (prev * 2).min(MAX_BACKOFF)
    }
}
