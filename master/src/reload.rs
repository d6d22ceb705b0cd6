//! Reload by re-executing the binary on disk, and fd handover for takeover.
//!
//! Reload (SIGUSR2, SIGHUP, or `reload` on the stats socket):
//!
//! 1. Parse and validate the config file. Invalid: log every error, answer
//!    `Success=0` with them, change nothing.
//! 2. Tell systemd `RELOADING=1`. Block the signals the master handles (a
//!    SIGUSR2 or SIGHUP arriving while the new image has no handler yet would
//!    otherwise kill it); they are delivered once the new master registered
//!    its handlers.
//! 3. Clear close-on-exec on what the next generation inherits (listeners,
//!    segment memfd, stats socket, lifeline, the waiting CLI client), describe
//!    it in `CORRAL_HANDOFF`, and exec the binary on disk: same pid (systemd's
//!    MAINPID stays right), and a package upgrade takes effect.
//! 4. If exec fails, undo 2–3 and answer `Success=0`: the running generation
//!    was never touched.
//!
//! Takeover (`_getsocks`, admin level only): the listeners and the segment's
//! memfd travel over the stats socket with SCM_RIGHTS (see `fdpass.rs`),
//! preceded by one text line per fd saying what it is. The new instance
//! soft-stops this one (SIGUSR1 to our pid) once its workers accept.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use crate::handoff::{Handoff, InheritedWorker, ENV};
use crate::master::Master;
use crate::{fdpass, notify};

/// Signals blocked across exec (the ones the master handles).
const HANDLED: [libc::c_int; 6] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
];

fn sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in HANDLED {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

fn block_signals() {
    let set = sigset();
    // SAFETY: changing this (only) thread's signal mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Unblocks the handled signals (after handlers exist, or after a failed exec).
pub fn unblock_signals() {
    let set = sigset();
    // SAFETY: changing this (only) thread's signal mask.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

fn set_cloexec(fd: RawFd, on: bool) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            let flags = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, flags);
        }
    }
}

fn ms_since_epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl Master {
    /// Reloads; `reply` is the CLI client that asked (it gets the outcome).
    pub(crate) fn reload(&mut self, reply: Option<usize>) {
        let fail = |m: &mut Master, text: String| {
            m.failed_reloads += 1;
            if let Some(key) = reply {
                m.answer_and_close(key, &format!("Success=0\n--\n{text}"));
            }
        };
        if self.is_stopping() {
            log::warn!("reload ignored: the master is stopping");
            return fail(self, "the master is stopping\n".into());
        }
        log::info!("reload requested: checking {}", self.config_path.display());
        let new_cfg = match corral_config::load(&self.config_path) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors.iter() {
                    log::error!("{e}");
                }
                log::error!(
                    "reload aborted: the configuration has {} error(s); the running one stays",
                    errors.len()
                );
                return fail(self, format!("{errors}\n"));
            }
        };
        // Bind new addresses here, before exec: a failure (address in use,
        // permission) aborts the reload while the running generation is intact.
        let bound: Vec<std::net::SocketAddr> = self
            .listeners
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect();
        let mut prebound: Vec<(std::net::TcpListener, std::net::SocketAddr)> = Vec::new();
        for fe in &new_cfg.frontends {
            for &addr in &fe.bind {
                if bound.contains(&addr) || prebound.iter().any(|(_, a)| *a == addr) {
                    continue;
                }
                match crate::bind::listen(addr, fe.backlog) {
                    Ok(l) => prebound.push((l, addr)),
                    Err(e) => {
                        let m = format!("cannot bind frontend '{}' to {addr}: {e}", fe.name);
                        log::error!("reload aborted: {m}; the running configuration stays");
                        return fail(self, format!("{m}\n"));
                    }
                }
            }
        }
        notify::reloading();
        let mut workers: Vec<InheritedWorker> = self
            .slots
            .iter()
            .filter_map(|s| {
                Some(InheritedWorker {
                    pid: s.pid?.as_raw(),
                    id: s.id,
                    epoch_slot: s.epoch_slot?,
                    generation: self.generation,
                    started_ms: ms_since_epoch(s.started_wall),
                    draining: false,
                })
            })
            .collect();
        workers.extend(self.old.iter().map(|o| InheritedWorker {
            pid: o.pid.as_raw(),
            id: o.id,
            epoch_slot: o.epoch_slot,
            generation: o.generation,
            started_ms: ms_since_epoch(o.started_wall),
            draining: o.draining,
        }));
        // A reload still waiting for its workers is superseded by this one:
        // answer its client now (only one waiting client crosses the exec).
        if let Some(pending) = self
            .switch
            .as_ref()
            .and_then(|s| s.reply)
            .filter(|&k| Some(k) != reply)
        {
            if let Some(sw) = self.switch.as_mut() {
                sw.reply = None;
            }
            let text = format!(
                "Success=1\n--\ngeneration {} (superseded by a newer reload before all its workers accepted)\n",
                self.generation
            );
            self.answer_and_close(pending, &text);
        }
        let mut handoff = Handoff {
            generation: self.generation,
            failed_reloads: self.failed_reloads,
            master_started_ms: ms_since_epoch(self.started),
            segment: Some(self.shared.fd()),
            listeners: self
                .listeners
                .iter()
                .filter_map(|(_, l)| Some((l.as_raw_fd(), l.local_addr().ok()?)))
                .collect(),
            stats: self.stats.as_ref().map(|l| l.as_raw_fd()),
            lifeline: Some((self.lifeline.0.as_raw_fd(), self.lifeline.1.as_raw_fd())),
            cli_reply: reply
                .and_then(|k| self.clients.get(k))
                .map(|c| c.stream.as_raw_fd()),
            workers,
            victim: self.takeover_victim.map(|p| p.as_raw()),
        };
        handoff
            .listeners
            .extend(prebound.iter().map(|(l, a)| (l.as_raw_fd(), *a)));
        let fds = handoff.fds();
        block_signals();
        for &fd in &fds {
            set_cloexec(fd, false);
        }
        if let Some(key) = reply {
            // The answer comes from the next generation: blocking writes there.
            if let Some(c) = self.clients.get(key) {
                let _ = c.stream.set_nonblocking(false);
            }
        }
        log::info!(
            "re-executing {} (generation {} → {})",
            self.exe.display(),
            self.generation,
            self.generation + 1
        );
        let err = Command::new(&self.exe)
            .args(self.args.iter().skip(1))
            .env(ENV, handoff.encode())
            .exec();
        // Still here: exec failed, and nothing else changed.
        for &fd in &fds {
            set_cloexec(fd, true);
        }
        if let Some(c) = reply.and_then(|k| self.clients.get(k)) {
            let _ = c.stream.set_nonblocking(true);
        }
        unblock_signals();
        notify::notify("READY=1");
        log::error!(
            "reload failed: cannot execute {}: {err}; the running generation stays",
            self.exe.display()
        );
        fail(
            self,
            format!("cannot execute {}: {err}\n", self.exe.display()),
        );
    }

    /// `_getsocks`: sends the listeners and the segment to a new instance.
    pub(crate) fn give_sockets(&mut self, key: usize) {
        let mut fds: Vec<RawFd> = Vec::new();
        let mut text = format!("corral-fds pid={}\n", std::process::id());
        for (_, l) in &self.listeners {
            if let Ok(addr) = l.local_addr() {
                text.push_str(&format!("listener {addr}\n"));
                fds.push(l.as_raw_fd());
            }
        }
        text.push_str("segment\n");
        fds.push(self.shared.fd());
        text.push_str("end\n");
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let _ = c.stream.set_nonblocking(false);
        let _ = c.stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = c.stream.set_write_timeout(Some(Duration::from_secs(5)));
        let sent = c
            .stream
            .write_all(text.as_bytes())
            .and_then(|_| fdpass::send_fds(&mut c.stream, &fds));
        match sent {
            Ok(()) => log::info!(
                "handed {} listener(s) and the segment over to a new instance",
                fds.len() - 1
            ),
            Err(e) => log::warn!("fd handover failed: {e}"),
        }
        self.answer_and_close(key, "");
    }
}
