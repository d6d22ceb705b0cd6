//! Active health checks: a server that stops answering leaves the rotation
//! after `fall` failed checks and comes back after `rise` good ones.
//!
//! A check is a non-blocking TCP connect (layer 4) or, with `http = "GET
//! /path"`, a request whose status line must be 2xx or 3xx (layer 7), bounded
//! by `timeout.check`. Checks of one server are never concurrent.
//! Transitions are logged like HAProxy's
//! `Server be/s is DOWN, reason: ...`.
//!
//! Checks are spread over workers: server number `k` (counting servers
//! across backends in config order) is checked by worker `k mod N`, which
//! publishes the result in a flag every worker of the generation reads
//! (`corral_shm::flags`), so a backend sees one check per interval whatever
//! the number of workers, and one log line per transition.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use corral_config::Config;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// Health-check tokens start here, above every session token a worker can reach.
pub const CHECK_BASE: usize = usize::MAX / 2;

/// One check in progress.
struct Probe {
    stream: TcpStream,
    started: Instant,
    connected: bool,
    sent: bool,
    reply: Vec<u8>,
}

/// A checked server.
struct Target {
    backend: usize,
    server: usize,
    next: Instant,
    probe: Option<Probe>,
    successes: u32,
    failures: u32,
    up: bool,
    /// In maintenance (`disable server`): not checked until enabled.
    paused: bool,
    /// The address set at run time (`set server addr`).
    addr: Option<std::net::SocketAddr>,
}

/// A state change to apply to the balancer: (backend, server, up).
pub type Transition = (usize, usize, bool);

/// Every checked server of a worker.
pub struct Checks {
    targets: Vec<Target>,
    /// Checks finished since the last [`Checks::take_results`]: (backend,
    /// server, passed, duration).
    results: Vec<(usize, usize, bool, Duration)>,
}

impl Checks {
    /// The servers this worker checks: those of backends with `check`, whose
    /// own `check` is not false, and whose number is this worker's share
    /// (`k mod workers == worker_id - 1`).
    pub fn new(cfg: &Config, worker_id: usize) -> Checks {
        let now = Instant::now();
        let workers = cfg.global.workers.max(1);
        let mut targets = Vec::new();
        for (b, be) in cfg.backends.iter().enumerate() {
            let Some(check) = &be.check else { continue };
            for (s, srv) in be.servers.iter().enumerate() {
                if !srv.check || server_number(cfg, b, s) % workers != worker_id.max(1) - 1 {
                    continue;
                }
                // Spread the first checks over the interval so they do not all fire at once.
                let n = targets.len() as u32 + worker_id as u32;
                let offset = check.interval.mul_f64(f64::from(n % 16) / 16.0);
                targets.push(Target {
                    backend: b,
                    server: s,
                    next: now + offset,
                    probe: None,
                    successes: 0,
                    failures: 0,
                    up: true,
                    paused: false,
                    addr: None,
                });
            }
        }
        Checks {
            targets,
            results: Vec::new(),
        }
    }

    /// The checks finished since the last call: (backend, server, passed,
    /// duration), for the counter rows.
    pub fn take_results(&mut self) -> Vec<(usize, usize, bool, Duration)> {
        std::mem::take(&mut self.results)
    }

    /// Server `s` of backend `b` is in maintenance or not, and its
    /// address: a server in maintenance is not checked (a check in
    /// progress is dropped), and comes back through its checks.
    pub fn set_runtime(
        &mut self,
        registry: &Registry,
        b: usize,
        s: usize,
        paused: bool,
        addr: Option<std::net::SocketAddr>,
    ) {
        let now = Instant::now();
        for t in &mut self.targets {
            if t.backend != b || t.server != s {
                continue;
            }
            if paused && !t.paused {
                if let Some(mut p) = t.probe.take() {
                    let _ = registry.deregister(&mut p.stream);
                }
            }
            if !paused && t.paused {
                t.next = now;
            }
            t.paused = paused;
            t.addr = addr;
        }
    }

    /// Takes over the state the shared health words hold (`word(k)` for
    /// server number `k`): a worker respawned in place of the checking one
    /// goes on from DOWN, not from a fresh UP that would send traffic to a
    /// dead server until `fall` checks fail again.
    pub fn resume(&mut self, cfg: &Config, word: impl Fn(usize) -> u64) {
        for t in &mut self.targets {
            let (up, successes, failures) =
                decode_health(word(server_number(cfg, t.backend, t.server)));
            t.up = up;
            t.successes = successes;
            t.failures = failures;
        }
    }

    /// Server `s` of backend `b`'s health word, if this worker checks it.
    pub fn health_word(&self, b: usize, s: usize) -> Option<u64> {
        self.targets
            .iter()
            .find(|t| t.backend == b && t.server == s)
            .map(|t| encode_health(t.up, t.successes, t.failures))
    }

    /// The next moment a check must start or time out.
    pub fn next_deadline(&self, cfg: &Config) -> Option<Instant> {
        self.targets
            .iter()
            .filter(|t| !t.paused)
            .map(|t| match &t.probe {
                Some(p) => p.started + cfg.backends[t.backend].timeouts.check,
                None => t.next,
            })
            .min()
    }

    /// Starts due checks and fails timed-out ones.
    pub fn on_timer(
        &mut self,
        cfg: &Config,
        registry: &Registry,
        now: Instant,
        out: &mut Vec<Transition>,
    ) {
        for i in 0..self.targets.len() {
            let t = &mut self.targets[i];
            let timeout = cfg.backends[t.backend].timeouts.check;
            match &t.probe {
                Some(p) if now >= p.started + timeout => {
                    let what = if p.connected {
                        "Layer7 timeout"
                    } else {
                        "Layer4 timeout"
                    };
                    self.finish(i, cfg, registry, Err(what.to_string()), out);
                }
                None if now >= t.next && !t.paused => {
                    let addr = t
                        .addr
                        .unwrap_or(cfg.backends[t.backend].servers[t.server].addr);
                    match connect(addr) {
                        Ok(mut stream) => {
                            let token = Token(CHECK_BASE + i);
                            if registry
                                .register(
                                    &mut stream,
                                    token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_ok()
                            {
                                t.probe = Some(Probe {
                                    stream,
                                    started: now,
                                    connected: false,
                                    sent: false,
                                    reply: Vec::new(),
                                });
                            }
                        }
                        Err(e) => self.finish(
                            i,
                            cfg,
                            registry,
                            Err(format!("Layer4 connection problem: {e}")),
                            out,
                        ),
                    }
                }
                _ => {}
            }
        }
    }

    /// Readiness on check `token`.
    pub fn on_event(
        &mut self,
        token: Token,
        cfg: &Config,
        registry: &Registry,
        out: &mut Vec<Transition>,
    ) {
        let i = token.0 - CHECK_BASE;
        let Some(t) = self.targets.get_mut(i) else {
            return;
        };
        let http = cfg.backends[t.backend]
            .check
            .as_ref()
            .and_then(|c| c.http.clone());
        let Some(p) = t.probe.as_mut() else { return };
        let result = step(
            p,
            http.as_deref(),
            &cfg.backends[t.backend].servers[t.server].addr.to_string(),
        );
        match result {
            Ok(None) => {}
            Ok(Some(())) => self.finish(i, cfg, registry, Ok(()), out),
            Err(e) => self.finish(i, cfg, registry, Err(e), out),
        }
    }

    fn finish(
        &mut self,
        i: usize,
        cfg: &Config,
        registry: &Registry,
        result: Result<(), String>,
        out: &mut Vec<Transition>,
    ) {
        let t = &mut self.targets[i];
        let check = cfg.backends[t.backend]
            .check
            .as_ref()
            .expect("checked backends have a check");
        let duration = t
            .probe
            .as_ref()
            .map_or(Duration::ZERO, |p| p.started.elapsed());
        if let Some(mut p) = t.probe.take() {
            let _ = registry.deregister(&mut p.stream);
        }
        t.next = Instant::now() + check.interval;
        self.results
            .push((t.backend, t.server, result.is_ok(), duration));
        let name = format!(
            "{}/{}",
            cfg.backends[t.backend].name, cfg.backends[t.backend].servers[t.server].name
        );
        match result {
            Ok(()) => {
                t.failures = 0;
                t.successes += 1;
                if !t.up && t.successes >= check.rise {
                    t.up = true;
                    log::warn!(
                        "Server {name} is UP, reason: check succeeded, check duration: {}ms",
                        duration.as_millis()
                    );
                    out.push((t.backend, t.server, true));
                }
            }
            Err(reason) => {
                t.successes = 0;
                t.failures += 1;
                if t.up && t.failures >= check.fall {
                    t.up = false;
                    log::warn!(
                        "Server {name} is DOWN, reason: {reason}, check duration: {}ms",
                        duration.as_millis()
                    );
                    out.push((t.backend, t.server, false));
                }
            }
        }
    }
}

/// A server's health word (see `corral_shm::flags`): bit 0 set when down,
/// then the checks in a row that passed (bits 8..16) and failed (16..24),
/// for `show stat`'s `UP 1/3` and `DOWN 1/2`. Zero is up with no history.
pub fn encode_health(up: bool, successes: u32, failures: u32) -> u64 {
    u64::from(!up) | u64::from(successes.min(255)) << 8 | u64::from(failures.min(255)) << 16
}

/// The parts of a health word: (up, successes, failures).
pub fn decode_health(v: u64) -> (bool, u32, u32) {
    (v & 1 == 0, (v >> 8 & 0xFF) as u32, (v >> 16 & 0xFF) as u32)
}

/// The number of server `s` of backend `b`, counting servers across backends
/// in config order: the index of its health flag.
pub fn server_number(cfg: &Config, b: usize, s: usize) -> usize {
    cfg.backends[..b]
        .iter()
        .map(|be| be.servers.len())
        .sum::<usize>()
        + s
}

/// Advances one probe: `Ok(Some(()))` passed, `Ok(None)` not done yet.
fn step(p: &mut Probe, http: Option<&str>, host: &str) -> Result<Option<()>, String> {
    if !p.connected {
        if let Ok(Some(e)) | Err(e) = p.stream.take_error() {
            return Err(format!("Layer4 connection problem: {e}"));
        }
        match p.stream.peer_addr() {
            Ok(_) => p.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
            Err(e) => return Err(format!("Layer4 connection problem: {e}")),
        }
    }
    let Some(line) = http else {
        return Ok(Some(()));
    };
    if !p.sent {
        let line = if line.split_whitespace().count() >= 3 {
            line.to_string()
        } else {
            format!("{line} HTTP/1.0")
        };
        let req = format!(
            "{line}\r\nHost: {host}\r\nUser-Agent: corral-check\r\nConnection: close\r\n\r\n"
        );
        match p.stream.write(req.as_bytes()) {
            Ok(_) => p.sent = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(format!("Layer7 socket error: {e}")),
        }
    }
    let mut buf = [0u8; 512];
    loop {
        match p.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                p.reply.extend_from_slice(&buf[..n]);
                if p.reply.contains(&b'\n') || p.reply.len() > 4096 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(format!("Layer7 socket error: {e}")),
        }
    }
    let status_line = String::from_utf8_lossy(&p.reply);
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=399) => Ok(Some(())),
        Some(c) => Err(format!("Layer7 wrong status, code: {c}")),
        None => Err("Layer7 invalid response".to_string()),
    }
}

fn connect(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}
