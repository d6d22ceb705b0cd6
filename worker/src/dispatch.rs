//! A connection's way through the worker: accepted → server chosen (or
//! queued) → connected (with retries and redispatch) → forwarded → ended and
//! logged. These are the transitions that touch state shared between
//! connections (server slots, queues, counters), so they live on [`Worker`].
//!
//! Invariants kept here:
//! * a session holds a server slot (`server_idx` is `Some`) exactly while it is
//!   connecting or established, and [`Worker::finish`] gives it back;
//! * every accepted socket ends in [`Worker::finish`], which logs one line and
//!   updates every counter, whatever the way out (clean end, abort, timeout,
//!   hard stop);
//! * each freed server slot is offered to the backend queue at once.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::access_log::{ms, ConnLog};
use crate::balance::Pick;
use crate::listeners::Accepted;
use crate::session::{reset_on_close, Blame, Delivery, Phase, Session, Speculation};
use crate::stick::Verdict;
use crate::worker::{Worker, PUMP_BUDGET, SESSION_BASE};

/// How long the surviving side of an aborted connection has to take what it
/// is owed and close: then it is reset.
const CLOSING_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a closing connection looks whether the survivor acknowledged
/// everything (no event says so).
const CLOSING_RECHECK: Duration = Duration::from_millis(20);

/// How a connection ended, for the log's termination state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Both sides closed cleanly.
    Clean,
    /// A side reset or failed.
    Abort(Blame),
    /// A side was idle too long.
    Timeout(Blame),
    /// No server could be reached (refused, unreachable) after the retries.
    ConnectFailed,
    /// The connect timeout fired on the last attempt.
    ConnectTimeout,
    /// The queue timeout fired.
    QueueTimeout,
    /// No server is usable, or the frontend has no backend.
    NoServer,
    /// Killed by a hard stop.
    Killed,
}

fn client_token(key: usize) -> Token {
    Token(SESSION_BASE + 2 * key)
}

fn server_token(key: usize) -> Token {
    Token(SESSION_BASE + 2 * key + 1)
}

impl Worker {
    /// Takes charge of a freshly accepted client socket.
    pub(crate) fn on_accepted(&mut self, fe: usize, acc: Accepted) {
        // TCP_NODELAY comes from the listener (set once by the master).
        let std_stream = std::net::TcpStream::from(acc.fd);
        let mut client = TcpStream::from_std(std_stream);
        self.serial += 1;
        let frontend = &self.cfg.frontends[fe];
        let splice = frontend.splice;
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut client,
            client_token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register a client connection: {e}");
            return; // dropping `client` closes it; nothing was counted yet
        }
        let mut session = Session::new(self.serial, client, acc.peer, fe, splice);
        // Speculative: a client that speaks first has usually spoken by the
        // time it is accepted (one read, instead of a wakeup for it).
        session.cli.readable = true;
        entry.insert(session);
        self.cur += 1;
        self.frontends[fe].cur += 1;
        self.frontends[fe].total += 1;
        if self.cur >= self.max || self.frontends[fe].cur >= self.frontends[fe].max {
            // At the cap: leave the wait queue now, so the next connection's
            // wakeup goes to a worker with room instead of stranding here.
            self.pause_for_maxconn();
        }
        let s = &mut self.sessions[key];
        let client = &s.client;
        let local_port = || client.local_addr().map_or(0, |a| a.port());
        let verdict = self
            .sticky
            .tcp_connection(&self.cfg, fe, s.peer, local_port, &mut s.sc);
        if verdict == Verdict::Reject {
            return self.reject(key);
        }
        self.dispatch(key);
    }

    /// `tcp-request connection reject`: close at once with an RST and no log
    /// line (as HAProxy), counted per frontend.
    fn reject(&mut self, key: usize) {
        let mut s = self.sessions.remove(key);
        if let Some(at) = s.armed {
            self.timers.cancel(at, key, s.serial);
        }
        reset_on_close(&s.client);
        self.sticky.release(&mut s.sc, 0, 0);
        self.cur -= 1;
        self.frontends[s.frontend].cur -= 1;
        self.denied[s.frontend] += 1;
        drop(s);
        self.resume_listeners();
    }

    /// Chooses a server for a new or retried connection and connects, queues
    /// it, or fails it.
    fn dispatch(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        let chosen = s.backend.or_else(|| {
            let client = &s.client;
            let local_port = || client.local_addr().map_or(0, |a| a.port());
            self.sticky
                .choose_backend(&self.cfg, s.frontend, s.peer, local_port, &s.sc)
        });
        let Some(be) = chosen.or(self.cfg.frontends[s.frontend].default_backend) else {
            return self.finish(key, End::NoServer);
        };
        if s.backend.is_none() {
            s.backend = Some(be);
            let splice = self.cfg.frontends[s.frontend].splice && self.cfg.backends[be].splice;
            s.c2s.set_splice(splice);
            s.s2c.set_splice(splice);
        }
        let pick = match self.persistent_server(key, be) {
            Some(p) => p,
            None => {
                let s = &self.sessions[key];
                self.backends[be].balancer.pick(s.peer.ip(), &s.tried)
            }
        };
        match pick {
            Pick::Server(i) => self.connect(key, be, i),
            Pick::Full => {
                let s = &mut self.sessions[key];
                if s.phase != Phase::Queued {
                    s.phase = Phase::Queued;
                    s.phase_started = Instant::now();
                    self.backends[be].queue.push_back((key, s.serial));
                    let at = s.phase_started + self.cfg.backends[be].timeouts.queue;
                    self.arm(key, at);
                }
            }
            Pick::NoServer => self.finish(key, End::NoServer),
        }
    }

    /// The server this client sticks to, if persistence applies and the
    /// server is usable (first attempt only: a failed connect redispatches).
    fn persistent_server(&self, key: usize, be: usize) -> Option<Pick> {
        let s = &self.sessions[key];
        if !s.tried.is_empty() || self.cfg.backends[be].stick.is_none() {
            return None;
        }
        let i = self.sticky.sticky_server(&self.cfg, be, s.peer)?;
        let b = &self.backends[be].balancer;
        if !b.servers[i].up {
            return None;
        }
        Some(if b.servers[i].has_slot() {
            Pick::Server(i)
        } else {
            Pick::Full
        })
    }

    fn connect(&mut self, key: usize, be: usize, i: usize) {
        let addr = self.cfg.backends[be].servers[i].addr;
        self.backends[be].balancer.acquire(i);
        self.backends[be].cur += 1;
        let now = Instant::now();
        let s = &mut self.sessions[key];
        if s.phase == Phase::Queued {
            s.t_queue = Some(now - s.phase_started);
        }
        s.server_idx = Some(i);
        s.phase = Phase::Connecting;
        s.phase_started = now;
        s.srv = crate::forward::Endpoint::new(-1);
        s.connect_refused = false;
        let at = now + self.cfg.backends[be].timeouts.connect;
        self.timers.arm(at, key, s.serial, s.armed.replace(at));
        match start_connect(addr) {
            Ok(mut stream) => {
                s.srv.fd = stream.as_raw_fd();
                if let Err(e) = self.poll.registry().register(
                    &mut stream,
                    server_token(key),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    log::warn!("cannot register a server connection: {e}");
                    s.server = Some(stream);
                    return self.connect_failed(key, false);
                }
                s.server = Some(stream);
                // Speculative: the client's first bytes are usually there
                // already, and on a near server the handshake is done by
                // now. Sent at once, they save the wakeup for the connect.
                match s.speculate(&mut self.pools) {
                    Speculation::Connected => self.establish(key),
                    Speculation::NotYet => {}
                    Speculation::Failed => self.connect_failed(key, false),
                }
            }
            Err(_) => self.connect_failed(key, false),
        }
    }

    /// The server connection is up: forward from now on.
    fn establish(&mut self, key: usize) {
        let now = Instant::now();
        let s = &mut self.sessions[key];
        s.t_connect = Some(now - s.phase_started);
        s.phase = Phase::Established;
        s.srv.writable = true;
        if let (Some(be), Some(i)) = (s.backend, s.server_idx) {
            self.sticky.learn_server(&self.cfg, be, i, s.peer);
        }
        let s = &mut self.sessions[key];
        s.last_activity = now;
        let deadline = now + self.idle_timeout(key).0;
        self.arm(key, deadline);
        self.forward(key);
    }

    /// A connect failed (refused, unreachable, timed out): retry on another
    /// server while retries remain, else end the connection.
    fn connect_failed(&mut self, key: usize, timed_out: bool) {
        let be = self.sessions[key]
            .backend
            .expect("connecting implies a backend");
        self.drop_server(key);
        let retries = self.cfg.backends[be].retries;
        let s = &mut self.sessions[key];
        if let Some(i) = s.server_idx.take() {
            if !s.tried.contains(&i) {
                s.tried.push(i);
            }
            self.backends[be].balancer.release(i);
            self.backends[be].cur -= 1;
        }
        if s.retries >= retries {
            let end = if timed_out {
                End::ConnectTimeout
            } else {
                End::ConnectFailed
            };
            return self.finish(key, end);
        }
        s.retries += 1;
        s.phase = Phase::New;
        self.dispatch(key);
        self.offer_slots(be);
    }

    /// Deregisters and closes the server socket of a session, if any.
    fn drop_server(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        if let Some(mut server) = s.server.take() {
            let _ = self.poll.registry().deregister(&mut server);
        }
        s.srv.fd = -1;
    }

    /// Readiness for one of a session's sockets.
    pub(crate) fn on_session_event(&mut self, t: usize, ev: &Event) {
        let (key, is_server) = (t / 2, t % 2 == 1);
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let ep = if is_server { &mut s.srv } else { &mut s.cli };
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            ep.readable = true;
        }
        if ev.is_read_closed() {
            ep.read_closed = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            ep.writable = true;
        }
        if is_server && s.phase == Phase::Connecting && (ev.is_error() || ev.is_write_closed()) {
            // Refused or unreachable: the kernel says so with the event.
            s.connect_refused = true;
        }
        if ev.is_error() && s.phase == Phase::Established {
            let sock = if is_server {
                s.server.as_ref()
            } else {
                Some(&s.client)
            };
            if let Some(Ok(Some(_))) = sock.map(|x| x.take_error()) {
                let blame = if is_server {
                    Blame::Server
                } else {
                    Blame::Client
                };
                return self.abort(key, blame);
            }
        }
        if !is_server && ev.is_error() && matches!(s.phase, Phase::Queued | Phase::Connecting) {
            return self.finish(key, End::Abort(Blame::Client));
        }
        self.advance(key);
    }

    /// Makes whatever progress the session's readiness allows.
    pub(crate) fn advance(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        match s.phase {
            Phase::New | Phase::Queued => {}
            Phase::Connecting => {
                if s.connect_refused {
                    return self.connect_failed(key, false);
                }
                // Writable without an error: connected (no getsockopt or
                // getpeername needed, the event says it).
                if s.srv.writable {
                    self.establish(key);
                }
            }
            Phase::Established => self.forward(key),
            Phase::Closing => self.deliver(key),
        }
    }

    /// A side of an established connection failed: the other side still
    /// gets what was read for it, then a FIN (HAProxy does the same); only
    /// a side that fails too, or the closing deadline, resets it.
    fn abort(&mut self, key: usize, failed: Blame) {
        let s = &mut self.sessions[key];
        // Stop polling the failed side; its socket closes at the end.
        let dead = match failed {
            Blame::Client => Some(&mut s.client),
            Blame::Server => s.server.as_mut(),
        };
        if let Some(dead) = dead {
            let _ = self.poll.registry().deregister(dead);
        }
        s.abort_side(failed, &mut self.pools);
        s.phase_started = Instant::now();
        self.deliver(key);
    }

    /// One step of [`Worker::abort`]'s delivery.
    fn deliver(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        let failed = s.closing.unwrap_or(Blame::Client);
        match s.deliver(&mut self.pools, PUMP_BUDGET) {
            Ok(Delivery::Done) => self.finish(key, End::Abort(failed)),
            Ok(Delivery::More) => self.ready.push(key),
            Ok(Delivery::Wait) => {
                // Acknowledgements make no event: look again soon, until
                // the closing deadline (then the survivor is reset).
                let s = &self.sessions[key];
                let soon = Instant::now() + CLOSING_RECHECK;
                let deadline = s.phase_started + CLOSING_TIMEOUT;
                if s.armed.is_none_or(|a| a > soon) {
                    self.arm(key, soon.min(deadline));
                }
            }
            Err(_) => {
                self.sessions[key].graceful = false;
                self.finish(key, End::Abort(failed));
            }
        }
    }

    fn forward(&mut self, key: usize) {
        let now = Instant::now();
        let s = &mut self.sessions[key];
        match s.forward(&mut self.pools, PUMP_BUDGET, now) {
            Ok(more) => {
                if s.finished() {
                    self.finish(key, End::Clean);
                } else if more {
                    self.ready.push(key);
                }
            }
            Err(blame) => self.abort(key, blame),
        }
    }

    /// The inactivity timeout of an established connection and who is blamed
    /// when it fires: `timeout tunnel` when configured, else the shorter of
    /// client and server (activity either way refreshes both, as in HAProxy).
    fn idle_timeout(&self, key: usize) -> (Duration, Blame) {
        let s = &self.sessions[key];
        let fe = &self.cfg.frontends[s.frontend].timeouts;
        let be = s.backend.map_or(fe, |b| &self.cfg.backends[b].timeouts);
        if let Some(t) = be.tunnel {
            return (t, Blame::Client);
        }
        if fe.client <= be.server {
            (fe.client, Blame::Client)
        } else {
            (be.server, Blame::Server)
        }
    }

    /// Arms `at` as the session's one live deadline (earlier entries go stale).
    fn arm(&mut self, key: usize, at: Instant) {
        let s = &mut self.sessions[key];
        self.timers.arm(at, key, s.serial, s.armed.replace(at));
    }

    /// A deadline armed for this session is due: act if it is real, re-arm if
    /// activity moved it.
    pub(crate) fn on_deadline(&mut self, key: usize, now: Instant) {
        let s = &self.sessions[key];
        let Some(be) = s.backend else { return };
        let timeouts = &self.cfg.backends[be].timeouts;
        match s.phase {
            Phase::New => {}
            Phase::Queued => {
                if now >= s.phase_started + timeouts.queue {
                    self.finish(key, End::QueueTimeout);
                }
            }
            Phase::Connecting => {
                if now >= s.phase_started + timeouts.connect {
                    self.connect_failed(key, true);
                }
            }
            Phase::Closing => {
                if now >= s.phase_started + CLOSING_TIMEOUT {
                    // The survivor would not take what it was owed: reset it.
                    let failed = s.closing.unwrap_or(Blame::Client);
                    self.finish(key, End::Abort(failed));
                } else {
                    self.deliver(key);
                }
            }
            Phase::Established => {
                let (idle, blame) = self.idle_timeout(key);
                let s = &self.sessions[key];
                let due = s.last_activity + idle;
                if now >= due {
                    self.finish(key, End::Timeout(blame));
                } else {
                    self.arm(key, due);
                }
            }
        }
    }

    /// Gives a freed server slot of backend `be` to connections in its queue.
    pub(crate) fn offer_slots(&mut self, be: usize) {
        while let Some(&(key, serial)) = self.backends[be].queue.front() {
            let Some(s) = self
                .sessions
                .get(key)
                .filter(|s| s.serial == serial && s.phase == Phase::Queued)
            else {
                self.backends[be].queue.pop_front();
                continue;
            };
            match self.backends[be].balancer.pick(s.peer.ip(), &s.tried) {
                Pick::Full => return,
                Pick::Server(i) => {
                    self.backends[be].queue.pop_front();
                    self.connect(key, be, i);
                }
                Pick::NoServer => {
                    self.backends[be].queue.pop_front();
                    self.finish(key, End::NoServer);
                }
            }
        }
    }

    /// Ends a connection: closes both sockets (with RST on abort), frees its
    /// slot and counters, logs its line.
    pub(crate) fn finish(&mut self, key: usize, end: End) {
        let mut s = self.sessions.remove(key);
        if let Some(at) = s.armed {
            self.timers.cancel(at, key, s.serial);
        }
        s.release(&mut self.pools);
        self.sticky.release(&mut s.sc, s.c2s.bytes, s.s2c.bytes);
        // No deregister: closing the sockets (below, on drop) takes them out
        // of the poller, one epoll_ctl each saved. Nothing else holds these
        // fds (workers never fork), so the close is the last reference.
        if matches!(end, End::Abort(_) | End::Timeout(_) | End::Killed) && !s.graceful {
            reset_on_close(&s.client);
            if let Some(server) = &s.server {
                reset_on_close(server);
            }
        }
        // Counters are logged before this connection leaves them, as HAProxy does.
        let (backend_name, server_name, srv_conn, beconn, backend_queue) = match s.backend {
            Some(be) => {
                let b = &self.backends[be];
                let srv_conn = s.server_idx.map_or(0, |i| b.balancer.servers[i].cur);
                let name = s.server_idx.map_or("<NOSRV>", |i| {
                    self.cfg.backends[be].servers[i].name.as_str()
                });
                (
                    self.cfg.backends[be].name.as_str(),
                    name,
                    srv_conn,
                    b.cur,
                    b.queue.len(),
                )
            }
            None => ("-", "<NOSRV>", 0, 0, 0),
        };
        let now = Instant::now();
        self.log.log(&ConnLog {
            client: s.peer,
            accepted: s.accepted_wall,
            frontend: &self.cfg.frontends[s.frontend].name,
            backend: backend_name,
            server: server_name,
            t_queue: s
                .t_queue
                .map_or(if s.server_idx.is_some() { 0 } else { -1 }, ms),
            t_connect: s.t_connect.map_or(-1, ms),
            t_total: ms(now - s.accepted),
            bytes_out: s.s2c.bytes,
            term: termination_state(end, s.phase),
            actconn: self.cur,
            feconn: self.frontends[s.frontend].cur,
            beconn,
            srv_conn,
            retries: s.retries,
            backend_queue,
        });
        self.cur -= 1;
        self.frontends[s.frontend].cur -= 1;
        if let (Some(be), Some(i)) = (s.backend, s.server_idx) {
            self.backends[be].balancer.release(i);
            self.backends[be].cur -= 1;
        }
        let backend = s.backend;
        drop(s);
        if let Some(be) = backend {
            self.offer_slots(be);
        }
        self.resume_listeners();
    }

    /// Hard stop: ends every connection now.
    pub(crate) fn kill_all(&mut self) {
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            if self.sessions.contains(key) {
                self.finish(key, End::Killed);
            }
        }
    }
}

/// HAProxy's two-character termination state: who ended the connection and
/// in which phase.
fn termination_state(end: End, phase: Phase) -> [u8; 2] {
    let at = match phase {
        Phase::New => b'R',
        Phase::Queued => b'Q',
        Phase::Connecting => b'C',
        Phase::Established | Phase::Closing => b'D',
    };
    match end {
        End::Clean => *b"--",
        End::Abort(Blame::Client) => [b'C', at],
        End::Abort(Blame::Server) => [b'S', at],
        End::Timeout(Blame::Client) => [b'c', at],
        End::Timeout(Blame::Server) => [b's', at],
        End::ConnectFailed => *b"SC",
        End::ConnectTimeout => *b"sC",
        End::QueueTimeout => *b"sQ",
        End::NoServer => *b"SC",
        End::Killed => [b'K', at],
    }
}

/// Starts a non-blocking connect to `addr`.
fn start_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(
        domain,
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    let _ = sock.set_tcp_nodelay(true);
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(sock)))
}
