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

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::handoff::{self, Handoff, InheritedWorker, ENV};
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

/// How long the binary on disk may take to check a config.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The arguments the binary on disk checks with: the running command line
/// (so a flag it no longer takes is found now, not after the exec), with
/// `-f FILE` replaced by `-f -` and `-c -q --config-label LABEL` added.
fn check_args(args: &[std::ffi::OsString], label: &str) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = ["-c", "-q", "--config-label", label, "-f", "-"]
        .iter()
        .map(Into::into)
        .collect();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "-f" {
            it.next();
        } else if !(s.starts_with("-f") && s.len() > 2) {
            out.push(a.clone());
        }
    }
    out
}

/// Runs the binary on disk as a config check (see [`check_args`]) with
/// `text` on its stdin: the binary that will run after the exec judges the
/// config and the command line (after a package upgrade, the running parser
/// is the wrong judge). `Err` holds what it printed, or why it could not be
/// asked.
fn check_with_binary(
    exe: &Path,
    args: &[std::ffi::OsString],
    text: &str,
    label: &str,
) -> Result<(), String> {
    let mut child = Command::new(exe)
        .args(check_args(args, label))
        .env_remove(ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {} to check the configuration: {e}",
                exe.display()
            )
        })?;
    let output = collect_output(&mut child, text.as_bytes(), CHECK_TIMEOUT);
    let status = match output.status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not finish checking the configuration within {CHECK_TIMEOUT:?}",
                exe.display()
            ));
        }
    };
    if status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said: Vec<&str> = said
        .lines()
        // Its own summary line and process log lines are not errors.
        .filter(|l| !l.starts_with("corral: ") && !l.starts_with('['))
        .collect();
    if said.is_empty() {
        return Err(format!(
            "{} refused the configuration ({status}) without saying why",
            exe.display()
        ));
    }
    Err(said.join("\n"))
}

struct Collected {
    status: Option<std::process::ExitStatus>,
    stderr: Vec<u8>,
}

/// Writes `input` to a child's stdin, reads its stdout (discarded) and
/// stderr (kept, up to 1 MiB) until they close, then reaps it; gives up at
/// `timeout` (status `None`). Single-threaded (the master forks): one
/// poll(2) over the three pipes, stdin written without blocking.
fn collect_output(child: &mut std::process::Child, input: &[u8], timeout: Duration) -> Collected {
    let deadline = Instant::now() + timeout;
    let mut stderr = Vec::new();
    let mut stdin = child.stdin.take();
    if let Some(i) = &stdin {
        // SAFETY: fcntl on our end of the child's stdin pipe.
        unsafe {
            let fl = libc::fcntl(i.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(i.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let mut written = 0;
    let mut pipes: [Option<Box<dyn ReadFd>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
    ];
    while pipes.iter().any(Option::is_some) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Collected {
                status: None,
                stderr,
            };
        }
        if written == input.len() {
            stdin = None; // EOF for the child
        }
        let mut fds: Vec<libc::pollfd> = pipes
            .iter()
            .map(|p| libc::pollfd {
                fd: p.as_ref().map_or(-1, |p| p.fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        fds.push(libc::pollfd {
            fd: stdin.as_ref().map_or(-1, |i| i.as_raw_fd()),
            events: libc::POLLOUT,
            revents: 0,
        });
        // SAFETY: `fds` is a valid array of pollfd (negative fds are ignored).
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                left.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
        if fds[2].revents != 0 {
            if let Some(i) = stdin.as_mut() {
                match i.write(&input[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The child is gone or closed stdin: its status says why.
                    Err(_) => written = input.len(),
                }
            }
        }
        let mut buf = [0u8; 4096];
        for (i, p) in pipes.iter_mut().enumerate() {
            if fds[i].revents == 0 {
                continue;
            }
            match p.as_mut().map(|r| r.read(&mut buf)) {
                Some(Ok(n)) if n > 0 => {
                    if i == 1 && stderr.len() < 1 << 20 {
                        stderr.extend_from_slice(&buf[..n]);
                    }
                }
                _ => *p = None,
            }
        }
    }
    drop(stdin);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return Collected {
                    status: Some(st),
                    stderr,
                }
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                return Collected {
                    status: None,
                    stderr,
                }
            }
        }
    }
}

/// A child's output pipe: readable, with an fd to poll.
trait ReadFd: Read {
    fn fd(&self) -> RawFd;
}

impl<T: Read + AsRawFd> ReadFd for T {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
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
        let label = self.config_path.display().to_string();
        // Read once: what is checked is exactly what the next image runs.
        let text = match std::fs::read_to_string(&self.config_path) {
            Ok(t) => t,
            Err(e) => {
                let m = format!("{label}:0:0: cannot read the configuration: {e}");
                log::error!("reload aborted: {m}; the running configuration stays");
                return fail(self, format!("{m}\n"));
            }
        };
        let new_cfg = match corral_config::parse(&text, &label) {
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
        if let Err(said) = check_with_binary(&self.exe, &self.args, &text, &label) {
            log::error!(
                "reload aborted: {} rejects the configuration: {said}; the running one stays",
                self.exe.display()
            );
            return fail(self, format!("{said}\n"));
        }
        // The new workers need process slots while the old ones drain.
        let free = self.shared.free_slots();
        if free < new_cfg.global.workers {
            let m = format!(
                "not enough process slots for {} new worker(s): {free} free of {}, the rest held by \
                 workers still draining (wait for them, or lower hard_stop_after)",
                new_cfg.global.workers,
                corral_shm::epoch::MAX_PROCS
            );
            log::error!("reload aborted: {m}; the running configuration stays");
            return fail(self, format!("{m}\n"));
        }
        // Bind new addresses here, before exec: a failure (address in use,
        // permission) aborts the reload while the running generation is intact.
        let bound: Vec<std::net::SocketAddr> = self
            .listeners
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect();
        let mut messages = Vec::new();
        let mut prebound: Vec<(std::net::TcpListener, std::net::SocketAddr)> = Vec::new();
        for fe in &new_cfg.frontends {
            for &addr in &fe.bind {
                if bound.contains(&addr) || prebound.iter().any(|(_, a)| *a == addr) {
                    continue;
                }
                match crate::bind::listen(addr, fe.backlog) {
                    Ok(l) => {
                        messages.push(format!("listener {addr} (frontend {}): bound", fe.name));
                        prebound.push((l, addr));
                    }
                    Err(e) => {
                        let m = format!("cannot bind frontend '{}' to {addr}: {e}", fe.name);
                        log::error!("reload aborted: {m}; the running configuration stays");
                        return fail(self, format!("{m}\n"));
                    }
                }
            }
        }
        // A stats socket at a new path is bound now too.
        let current_path = self
            .stats
            .as_ref()
            .and_then(|l| l.local_addr().ok()?.as_pathname().map(Path::to_path_buf));
        let next_stats = match &new_cfg.stats {
            Some(s) if current_path.as_deref() != Some(s.socket.as_path()) => {
                match crate::cli::bind(s) {
                    Ok(l) => {
                        messages.push(format!("stats socket moved to {}", s.socket.display()));
                        Some(l)
                    }
                    Err(e) => {
                        let m = format!("cannot bind the stats socket {}: {e}", s.socket.display());
                        log::error!("reload aborted: {m}; the running configuration stays");
                        return fail(self, format!("{m}\n"));
                    }
                }
            }
            _ => None,
        };
        let unbind_next_stats = |l: Option<std::os::unix::net::UnixListener>| {
            if let Some(p) = l
                .as_ref()
                .and_then(|l| l.local_addr().ok()?.as_pathname().map(Path::to_path_buf))
            {
                let _ = std::fs::remove_file(p);
            }
        };
        // So is the stats page at a new address.
        let current_web = self.web.as_ref().and_then(|l| l.local_addr().ok());
        let next_web = match new_cfg.stats.as_ref().and_then(|s| s.http) {
            Some(a) if current_web != Some(a) => match crate::web::bind(a) {
                Ok(l) => {
                    messages.push(format!("stats page moved to http://{a}/"));
                    Some(l)
                }
                Err(e) => {
                    let m = format!("cannot bind the stats page to {a}: {e}");
                    log::error!("reload aborted: {m}; the running configuration stays");
                    unbind_next_stats(next_stats);
                    return fail(self, format!("{m}\n"));
                }
            },
            _ => None,
        };
        // And the socket's owner and group, which may have changed.
        if let Some(s) = &new_cfg.stats {
            if current_path.as_deref() == Some(s.socket.as_path()) {
                if let Err(e) = crate::cli::set_owner(s) {
                    let m = format!("stats socket {}: {e}", s.socket.display());
                    log::error!("reload aborted: {m}; the running configuration stays");
                    unbind_next_stats(next_stats);
                    return fail(self, format!("{m}\n"));
                }
            }
        }
        // The next generation's shared memory, committed now.
        let prepared = match self.shared.prepare(&new_cfg) {
            Ok(p) => p,
            Err(e) => {
                let m = format!("cannot prepare the shared memory of the new configuration: {e}");
                log::error!("reload aborted: {m}; the running configuration stays");
                unbind_next_stats(next_stats);
                return fail(self, format!("{m}\n"));
            }
        };
        messages.extend(prepared.messages.iter().cloned());
        let texts =
            handoff::text_fd(&text).and_then(|n| Ok((n, handoff::text_fd(&self.cfg_text)?)));
        let (next_text, prev_text) = match texts {
            Ok(t) => t,
            Err(e) => {
                let m = format!("cannot hand the configuration over: {e}");
                log::error!("reload aborted: {m}; the running configuration stays");
                unbind_next_stats(next_stats);
                return fail(self, format!("{m}\n"));
            }
        };
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
                    foreign: false,
                    ready: s.ready,
                    control: s.control.as_ref().map(|c| c.as_raw_fd()),
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
            foreign: o.foreign,
            ready: true,
            control: o.control.as_ref().map(|c| c.as_raw_fd()),
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
            version: handoff::VERSION,
            generation: self.generation,
            failed_reloads: self.failed_reloads,
            master_started_ms: ms_since_epoch(self.started),
            segment: Some(self.shared.fd()),
            regions: self.shared.handoff(Some(&prepared)),
            listeners: self
                .listeners
                .iter()
                .filter_map(|(_, l)| Some((l.as_raw_fd(), l.local_addr().ok()?)))
                .collect(),
            stats: self.stats.as_ref().map(|l| l.as_raw_fd()),
            next_stats: next_stats.as_ref().map(|l| l.as_raw_fd()),
            stats_level: self.cfg.stats.as_ref().map(|s| s.level),
            web: self.web.as_ref().map(|l| l.as_raw_fd()),
            next_web: next_web.as_ref().map(|l| l.as_raw_fd()),
            lifeline: Some((self.lifeline.0.as_raw_fd(), self.lifeline.1.as_raw_fd())),
            cli_reply: reply
                .and_then(|k| self.clients.get(k))
                .map(|c| c.stream.as_raw_fd()),
            workers,
            victim: self.takeover_victim.map(|p| p.as_raw()),
            config: Some(next_text.as_raw_fd()),
            prev_config: Some(prev_text.as_raw_fd()),
            messages,
            carried_conns: self.shared.carried_conns(),
            config_path: Some(self.config_path.display().to_string()),
            problems: Vec::new(),
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
        corral_worker::process_log::flush();
        let err = Command::new(&self.exe)
            .args(self.args.iter().skip(1))
            .env(ENV, handoff.encode())
            .exec();
        // Still here: exec failed, and nothing else changed. What was made
        // for the next generation is dropped (regions unmapped, the new
        // sockets closed).
        for &fd in &fds {
            set_cloexec(fd, true);
        }
        if let Some(c) = reply.and_then(|k| self.clients.get(k)) {
            let _ = c.stream.set_nonblocking(true);
        }
        unblock_signals();
        drop(prepared);
        drop(prebound);
        drop(next_web);
        unbind_next_stats(next_stats);
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
        for t in self.shared.tables() {
            text.push_str(&format!("region {}\n", t.name()));
            fds.push(t.region().fd());
        }
        if let Some(l) = &self.web {
            if let Ok(addr) = l.local_addr() {
                text.push_str(&format!("page {addr}\n"));
                fds.push(l.as_raw_fd());
            }
        }
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
                "handed {} listener(s), the segment and {} table(s) over to a new instance",
                self.listeners.len(),
                self.shared.tables().len()
            ),
            Err(e) => log::warn!("fd handover failed: {e}"),
        }
        self.answer_and_close(key, "");
    }
}

#[cfg(test)]
mod tests {
    use super::check_args;

    #[test]
    fn the_check_runs_the_real_command_line_on_stdin() {
        let args: Vec<std::ffi::OsString> =
            ["corral", "-f", "/etc/c.toml", "-p", "/run/p", "-fother"]
                .iter()
                .map(Into::into)
                .collect();
        let got: Vec<String> = check_args(&args, "/etc/c.toml")
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "-c",
                "-q",
                "--config-label",
                "/etc/c.toml",
                "-f",
                "-",
                "-p",
                "/run/p"
            ]
        );
    }
}
