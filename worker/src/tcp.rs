//! TCP mode: a backend chosen at accept (`use_backend` on connection
//! samples), one server connection, then a [`Tunnel`] until both FINs; one
//! log line per connection in HAProxy's TCP format.

use std::time::{Duration, Instant};

use crate::access_log::{ms, ConnLog};
use crate::attempt::{Attempt, AttemptPhase, Failure};
use crate::client::{Client, Flow};
use crate::server_conn::reset_on_close;
use crate::tally::{Tally, Target, FLUSH_BYTES};
use crate::tunnel::{Blame, Delivery, Speculation, Tunnel};
use crate::worker::{Worker, PUMP_BUDGET};

/// How long the surviving side of an aborted connection has to take what it
/// is owed and close: then it is reset.
pub(crate) const CLOSING_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a closing connection looks whether the survivor acknowledged
/// everything (no event says so).
pub(crate) const CLOSING_RECHECK: Duration = Duration::from_millis(20);

/// How a connection ended, for the log's termination state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Both sides closed cleanly.
    Clean,
    /// A side reset or failed.
    Abort(Blame),
    /// A side was idle too long.
    Timeout(Blame),
    /// No server could be had.
    NoServer(Failure),
    /// Killed by a hard stop.
    Killed,
}

/// The state of a TCP-mode connection.
pub struct TcpFlow {
    /// The way to a server (`None` before the backend is known).
    pub attempt: Option<Attempt>,
    /// The bytes both ways.
    pub tunnel: Tunnel,
    /// The bytes already in the counters.
    pub tally: Tally,
}

impl TcpFlow {
    /// A new connection's flow.
    pub fn new(splice: bool, now: Instant) -> TcpFlow {
        TcpFlow {
            attempt: None,
            tunnel: Tunnel::new(splice, now),
            tally: Tally::default(),
        }
    }
}

/// The TCP flow of a client known to be one.
fn tcp_ref(c: &Client) -> &TcpFlow {
    match &c.flow {
        Flow::Tcp(t) => t,
        Flow::Http(_) => unreachable!("a TCP client"),
    }
}

macro_rules! tcp {
    ($w:expr, $key:expr) => {
        match &mut $w.clients[$key].flow {
            Flow::Tcp(t) => t,
            Flow::Http(_) => unreachable!("a TCP client"),
        }
    };
}

impl Worker {
    /// Picks the backend (`use_backend`, else the default) and a server.
    pub(crate) fn tcp_start(&mut self, key: usize) {
        let c = &self.clients[key];
        let sock = &c.sock;
        let local_port = || sock.local_addr().map_or(0, |a| a.port());
        let chosen = self
            .sticky
            .choose_backend(&self.cfg, c.frontend, c.peer, local_port, &c.sc);
        let fe = c.frontend;
        let peer = c.peer;
        let Some(be) = chosen.or(self.cfg.frontends[fe].default_backend) else {
            return self.tcp_finish(key, End::NoServer(Failure::NoServer));
        };
        let splice = self.cfg.frontends[fe].splice && self.cfg.backends[be].splice;
        let now = self.now;
        let t = tcp!(self, key);
        t.tunnel.c2s.set_splice(splice);
        t.tunnel.s2c.set_splice(splice);
        t.attempt = Some(Attempt::new(
            be,
            Some(crate::balance::ip_key(peer.ip())),
            now,
        ));
        self.rows.backend_session(be);
        self.assign(key);
    }

    /// Right before a connect: reads what the client sent with its
    /// handshake, so the connect knows whether its last ACK can ride on
    /// those bytes (see `start_connect`). Not earlier: a queued connection
    /// holds no buffer. A read failure shows once the server is connected.
    pub(crate) fn tcp_read_ahead(&mut self, key: usize) {
        let c = &mut self.clients[key];
        if let Flow::Tcp(t) = &mut c.flow {
            let _ = t.tunnel.c2s.fill_once(&mut c.ep, &mut self.pools);
        }
    }

    /// A connect started: the client's first bytes are usually there
    /// already, and on a near server the handshake is done by now. Sent at
    /// once, they save the wakeup for the connect.
    pub(crate) fn tcp_connecting(&mut self, key: usize) {
        let Some(skey) = tcp!(self, key).attempt.as_ref().and_then(|a| a.conn) else {
            return;
        };
        let c = &mut self.clients[key];
        let Flow::Tcp(t) = &mut c.flow else { return };
        let srv = &mut self.servers[skey].ep;
        match t.tunnel.speculate(&mut c.ep, srv, &mut self.pools) {
            Speculation::Connected => self.connected(key),
            Speculation::NotYet => {}
            Speculation::Failed => self.connect_failed(key, false),
        }
    }

    /// The server connection is up: forward from now on.
    pub(crate) fn tcp_established(&mut self, key: usize) {
        let now = self.now;
        tcp!(self, key).tunnel.last_activity = now;
        let deadline = now + self.tcp_idle_timeout(key).0;
        self.arm(key, deadline);
        self.tcp_forward(key);
    }

    /// No server: the connection ends with the reason in its log line.
    pub(crate) fn tcp_no_server(&mut self, key: usize, why: Failure) {
        self.tcp_finish(key, End::NoServer(why));
    }

    /// The client's socket reported a reset.
    pub(crate) fn tcp_client_failed(&mut self, key: usize) {
        let t = tcp!(self, key);
        match t.attempt.as_ref().map(|a| a.phase) {
            Some(AttemptPhase::Connected) if t.tunnel.closing.is_none() => {
                self.tcp_abort(key, Blame::Client)
            }
            Some(AttemptPhase::Connected) => self.tcp_advance(key),
            _ => self.tcp_finish(key, End::Abort(Blame::Client)),
        }
    }

    /// Makes whatever progress the connection's readiness allows.
    pub(crate) fn tcp_advance(&mut self, key: usize) {
        let t = tcp!(self, key);
        let Some(a) = t.attempt.as_ref() else { return };
        match a.phase {
            AttemptPhase::Idle | AttemptPhase::Queued => {}
            AttemptPhase::Connecting => {
                self.check_connect(key);
            }
            AttemptPhase::Connected if t.tunnel.closing.is_some() => self.tcp_deliver(key),
            AttemptPhase::Connected => {
                let failed = a
                    .conn
                    .and_then(|k| self.servers.get(k))
                    .is_some_and(|s| s.failed);
                if failed {
                    return self.tcp_abort(key, Blame::Server);
                }
                self.tcp_forward(key)
            }
        }
    }

    fn tcp_forward(&mut self, key: usize) {
        let now = self.now;
        let c = &mut self.clients[key];
        let Flow::Tcp(t) = &mut c.flow else { return };
        let Some(skey) = t.attempt.as_ref().and_then(|a| a.conn) else {
            return;
        };
        let srv = &mut self.servers[skey].ep;
        match t
            .tunnel
            .forward(&mut c.ep, srv, &mut self.pools, PUMP_BUDGET, now)
        {
            Ok(more) => {
                if t.tunnel.finished() {
                    return self.tcp_finish(key, End::Clean);
                }
                if more {
                    self.ready.push(key);
                }
                let (bytes_in, bytes_out) = (t.tunnel.c2s.bytes, t.tunnel.s2c.bytes);
                if let Some(d) = t.tally.take(bytes_in, bytes_out, FLUSH_BYTES) {
                    let to = Target {
                        frontend: c.frontend,
                        backend: t.attempt.as_ref().map(|a| (a.backend, a.server)),
                    };
                    self.count_bytes(key, to, d);
                }
            }
            Err(blame) => self.tcp_abort(key, blame),
        }
    }

    /// A side of an established connection failed: the other side still
    /// gets what was read for it, then a FIN (HAProxy does the same); only
    /// a side that fails too, or the closing deadline, resets it.
    fn tcp_abort(&mut self, key: usize, failed: Blame) {
        let c = &mut self.clients[key];
        let Flow::Tcp(t) = &mut c.flow else { return };
        let Some(skey) = t.attempt.as_ref().and_then(|a| a.conn) else {
            return self.tcp_finish(key, End::Abort(failed));
        };
        let s = &mut self.servers[skey];
        // Stop polling the failed side; its socket closes at the end.
        let _ = match failed {
            Blame::Client => self.poll.registry().deregister(&mut c.sock),
            Blame::Server => self.poll.registry().deregister(&mut s.sock),
        };
        t.tunnel
            .abort_side(failed, &mut c.ep, &mut s.ep, &mut self.pools);
        self.tcp_deliver(key);
    }

    /// One step of [`Worker::tcp_abort`]'s delivery.
    fn tcp_deliver(&mut self, key: usize) {
        let c = &mut self.clients[key];
        let Flow::Tcp(t) = &mut c.flow else { return };
        let failed = t.tunnel.closing.unwrap_or(Blame::Client);
        let Some(skey) = t.attempt.as_ref().and_then(|a| a.conn) else {
            return self.tcp_finish(key, End::Abort(failed));
        };
        let srv = &mut self.servers[skey].ep;
        match t
            .tunnel
            .deliver(&mut c.ep, srv, &mut self.pools, PUMP_BUDGET)
        {
            Ok(Delivery::Done) => self.tcp_finish(key, End::Abort(failed)),
            Ok(Delivery::More) => self.ready.push(key),
            Ok(Delivery::Wait) => {
                // Acknowledgements make no event: look again soon, until
                // the closing deadline (then the survivor is reset).
                let soon = self.now + CLOSING_RECHECK;
                let since = t.tunnel.closing_since.unwrap_or_else(Instant::now);
                self.arm_at_most(key, soon.min(since + CLOSING_TIMEOUT));
            }
            Err(_) => {
                t.tunnel.graceful = false;
                self.tcp_finish(key, End::Abort(failed));
            }
        }
    }

    /// The inactivity timeout of an established connection and who is blamed
    /// when it fires: `timeout tunnel` when configured, else the shorter of
    /// client and server (activity either way refreshes both, as in HAProxy).
    fn tcp_idle_timeout(&self, key: usize) -> (Duration, Blame) {
        let c = &self.clients[key];
        let fe = &self.cfg.frontends[c.frontend].timeouts;
        let be = match &c.flow {
            Flow::Tcp(t) => t.attempt.as_ref().map(|a| a.backend),
            Flow::Http(_) => None,
        };
        let be = be.map_or(fe, |b| &self.cfg.backends[b].timeouts);
        if let Some(t) = be.tunnel {
            return (t, Blame::Client);
        }
        if fe.client <= be.server {
            (fe.client, Blame::Client)
        } else {
            (be.server, Blame::Server)
        }
    }

    /// A deadline armed for this connection is due: act if it is real,
    /// re-arm if activity moved it.
    pub(crate) fn tcp_deadline(&mut self, key: usize, now: Instant) {
        if self.attempt_deadline(key, now) {
            return;
        }
        if let Some(at) = self.attempt_due(key) {
            return self.arm(key, at);
        }
        let t = tcp!(self, key);
        let connected = t
            .attempt
            .as_ref()
            .is_some_and(|a| a.phase == AttemptPhase::Connected);
        if !connected {
            return;
        }
        if let Some(since) = t.tunnel.closing_since {
            if now >= since + CLOSING_TIMEOUT {
                // The survivor would not take what it was owed: reset it.
                let failed = t.tunnel.closing.unwrap_or(Blame::Client);
                self.tcp_finish(key, End::Abort(failed));
            } else {
                self.tcp_deliver(key);
            }
            return;
        }
        let last = t.tunnel.last_activity;
        let (idle, blame) = self.tcp_idle_timeout(key);
        let due = last + idle;
        if now >= due {
            self.tcp_finish(key, End::Timeout(blame));
        } else {
            self.arm(key, due);
        }
    }

    /// Hard stop.
    pub(crate) fn tcp_kill(&mut self, key: usize) {
        self.tcp_finish(key, End::Killed);
    }

    /// Ends a connection: closes both sockets (with RST on abort), frees its
    /// slot and counters, logs its line.
    pub(crate) fn tcp_finish(&mut self, key: usize, end: End) {
        self.disarm(key);
        let reset = {
            let t = tcp!(self, key);
            t.tunnel.release(&mut self.pools);
            matches!(end, End::Abort(_) | End::Timeout(_) | End::Killed) && !t.tunnel.graceful
        };
        let c = &mut self.clients[key];
        let Flow::Tcp(t) = &mut c.flow else { return };
        let fe = c.frontend;
        let (bytes_in, bytes_out) = (t.tunnel.c2s.bytes, t.tunnel.s2c.bytes);
        // What the counters did not get while the bytes flowed.
        let (d_in, d_out) = t.tally.take(bytes_in, bytes_out, 0).unwrap_or((0, 0));
        let (c, t) = (&self.clients[key], tcp_ref(&self.clients[key]));
        // Counters are logged before this connection leaves them, as HAProxy does.
        let (backend_name, server_name, srv_conn, beconn, backend_queue) = match &t.attempt {
            Some(a) => {
                let b = &self.backends[a.backend];
                let srv_conn = a.server.map_or(0, |i| b.balancer.servers[i].cur);
                let name = a.server.map_or("<NOSRV>", |i| {
                    self.cfg.backends[a.backend].servers[i].name.as_str()
                });
                (
                    self.cfg.backends[a.backend].name.as_str(),
                    name,
                    srv_conn,
                    b.cur,
                    b.queue.len(),
                )
            }
            None => ("-", "<NOSRV>", 0, 0, 0),
        };
        let now = self.now;
        let phase = t.attempt.as_ref().map_or(AttemptPhase::Idle, |a| a.phase);
        let closing = t.tunnel.closing.is_some();
        self.log.log(&ConnLog {
            client: c.peer,
            accepted: c.accepted_wall,
            frontend: &self.cfg.frontends[fe].name,
            backend: backend_name,
            server: server_name,
            t_queue: t.attempt.as_ref().map_or(-1, |a| a.t_queue_ms()),
            t_connect: t.attempt.as_ref().map_or(-1, |a| a.t_connect_ms()),
            t_total: ms(now - c.accepted),
            bytes_out,
            term: termination_state(end, phase, closing),
            actconn: self.cur,
            feconn: self.frontends[fe].cur,
            beconn,
            srv_conn,
            retries: t.attempt.as_ref().map_or(0, |a| a.retries),
            backend_queue,
        });
        let target = t.attempt.as_ref().map(|a| (a.backend, a.server));
        self.rows.frontend_bytes(fe, d_in, d_out);
        if let Some((be, srv)) = target {
            self.rows.backend_bytes(be, srv, d_in, d_out);
            self.rows.backend_time(be, srv, ms(now - c.accepted));
        }
        if reset {
            reset_on_close(&c.sock);
        }
        self.release_attempt(key, reset);
        let mut c = self.clients.remove(key);
        self.sticky.release(&mut c.sc, d_in, d_out);
        drop(c);
        self.leave(fe);
    }
}

/// HAProxy's two-character termination state: who ended the connection and
/// in which phase.
fn termination_state(end: End, phase: AttemptPhase, _closing: bool) -> [u8; 2] {
    let at = match phase {
        AttemptPhase::Idle => b'R',
        AttemptPhase::Queued => b'Q',
        AttemptPhase::Connecting => b'C',
        AttemptPhase::Connected => b'D',
    };
    match end {
        End::Clean => *b"--",
        End::Abort(Blame::Client) => [b'C', at],
        End::Abort(Blame::Server) => [b'S', at],
        End::Timeout(Blame::Client) => [b'c', at],
        End::Timeout(Blame::Server) => [b's', at],
        End::NoServer(Failure::ConnectFailed | Failure::NoServer) => *b"SC",
        End::NoServer(Failure::ConnectTimeout) => *b"sC",
        End::NoServer(Failure::QueueTimeout) => *b"sQ",
        End::Killed => [b'K', at],
    }
}
