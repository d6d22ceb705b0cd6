//! Client connections: the accepted socket, its readiness, who it is, and
//! the flow that serves it: a TCP tunnel ([`crate::tcp`]) or HTTP/1.1
//! exchanges ([`crate::http`]). The transport is plain TCP today; a TLS
//! transport would sit here, under the flow, which only sees plaintext
//! through [`crate::bufio`] and [`crate::forward`].
//!
//! Every accepted socket ends in its flow's finish, which logs and updates
//! every counter whatever the way out.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use corral_config::Mode;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::forward::Endpoint;
use crate::http::HttpFlow;
use crate::listeners::Accepted;
use crate::server_conn::reset_on_close;
use crate::stick::{StickCounters, Verdict};
use crate::tcp::TcpFlow;
use crate::worker::Worker;

/// Client connection `key` reports `CLIENT_BASE + key`.
pub(crate) const CLIENT_BASE: usize = 16;

pub(crate) fn client_token(key: usize) -> Token {
    Token(CLIENT_BASE + key)
}

/// What serves a client connection.
// The TCP flow is kept inline: boxing it would cost an allocation per TCP
// connection, and the slab entry is as large as the largest variant anyway.
#[allow(clippy::large_enum_variant)]
pub enum Flow {
    /// Bytes as they are, to one server.
    Tcp(TcpFlow),
    /// HTTP/1.1 requests, each to the backend its rules pick.
    Http(Box<HttpFlow>),
}

/// One accepted client connection.
pub struct Client {
    /// Distinguishes this connection from a later one reusing the slab key.
    pub serial: u64,
    /// The socket.
    pub sock: TcpStream,
    /// Its readiness.
    pub ep: Endpoint,
    /// The client's address.
    pub peer: SocketAddr,
    /// Frontend index.
    pub frontend: usize,
    /// Accept time (monotonic).
    pub accepted: Instant,
    /// Accept time (wall clock, for the log).
    pub accepted_wall: SystemTime,
    /// Stick counters (sc0..sc2) tracked by this connection.
    pub sc: StickCounters,
    /// The deadline this connection armed last (the one timer it holds).
    pub armed: Option<Instant>,
    /// What serves it.
    pub flow: Flow,
}

impl Worker {
    /// Takes charge of a freshly accepted client socket.
    pub(crate) fn on_accepted(&mut self, fe: usize, acc: Accepted) {
        // TCP_NODELAY comes from the listener (set once by the master).
        let std_stream = std::net::TcpStream::from(acc.fd);
        let mut sock = TcpStream::from_std(std_stream);
        self.serial += 1;
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            client_token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register a client connection: {e}");
            return; // dropping `sock` closes it; nothing was counted yet
        }
        let now = self.now;
        let frontend = &self.cfg.frontends[fe];
        let flow = match frontend.mode {
            Mode::Tcp => Flow::Tcp(TcpFlow::new(frontend.splice, now)),
            Mode::Http => Flow::Http(Box::new(HttpFlow::new(now))),
        };
        let mut ep = Endpoint::new(std::os::fd::AsRawFd::as_raw_fd(&sock));
        // Speculative: a client that speaks first has usually spoken by the
        // time it is accepted (one read, instead of a wakeup for it).
        ep.readable = true;
        entry.insert(Client {
            serial: self.serial,
            sock,
            ep,
            peer: acc.peer,
            frontend: fe,
            accepted: now,
            accepted_wall: SystemTime::now(),
            sc: Default::default(),
            armed: None,
            flow,
        });
        self.cur += 1;
        self.frontends[fe].cur += 1;
        self.frontends[fe].total += 1;
        self.rows.frontend_session(fe, self.frontends[fe].cur);
        if self.cur >= self.max || self.frontends[fe].cur >= self.frontends[fe].max {
            // At the cap: leave the wait queue now, so the next connection's
            // wakeup goes to a worker with room instead of stranding here.
            self.pause_for_maxconn();
        }
        let c = &mut self.clients[key];
        let sock = &c.sock;
        let local_port = || sock.local_addr().map_or(0, |a| a.port());
        let verdict = self
            .sticky
            .tcp_connection(&self.cfg, fe, c.peer, local_port, &mut c.sc);
        if verdict == Verdict::Reject {
            return self.reject(key);
        }
        match self.clients[key].flow {
            Flow::Tcp(_) => self.tcp_start(key),
            Flow::Http(_) => self.advance(key),
        }
    }

    /// Takes a client connection handed over by an older worker (see
    /// [`crate::handoff`]): registered and counted like an accepted one,
    /// but not as a new session. Returns its key.
    pub(crate) fn adopt_client(
        &mut self,
        sock: std::net::TcpStream,
        peer: SocketAddr,
        fe: usize,
        accepted: Instant,
        accepted_wall: SystemTime,
        flow: Flow,
    ) -> Option<usize> {
        let mut sock = TcpStream::from_std(sock);
        self.serial += 1;
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(
                &mut sock,
                client_token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .ok()?;
        let mut ep = Endpoint::new(std::os::fd::AsRawFd::as_raw_fd(&sock));
        ep.readable = true;
        ep.writable = true;
        entry.insert(Client {
            serial: self.serial,
            sock,
            ep,
            peer,
            frontend: fe,
            accepted,
            accepted_wall,
            sc: Default::default(),
            armed: None,
            flow,
        });
        self.cur += 1;
        self.frontends[fe].cur += 1;
        if self.cur >= self.max || self.frontends[fe].cur >= self.frontends[fe].max {
            self.pause_for_maxconn();
        }
        Some(key)
    }

    /// `tcp-request connection reject`: close at once with an RST and no log
    /// line (as HAProxy), counted per frontend.
    fn reject(&mut self, key: usize) {
        let mut c = self.clients.remove(key);
        if let Some(at) = c.armed {
            self.timers.cancel(at, key, c.serial);
        }
        reset_on_close(&c.sock);
        self.sticky.release(&mut c.sc, 0, 0);
        self.leave(c.frontend);
        self.denied[c.frontend] += 1;
        self.rows.frontend_denied_conn(c.frontend);
    }

    /// The bookkeeping of a client connection that is gone.
    pub(crate) fn leave(&mut self, fe: usize) {
        self.cur -= 1;
        self.frontends[fe].cur -= 1;
        self.resume_listeners();
    }

    /// Readiness for client connection `key`.
    pub(crate) fn on_client_event(&mut self, key: usize, ev: &Event) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            c.ep.readable = true;
        }
        if ev.is_read_closed() {
            c.ep.read_closed = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            c.ep.writable = true;
        }
        if ev.is_error() && matches!(c.sock.take_error(), Ok(Some(_))) {
            return self.client_failed(key);
        }
        self.advance(key);
    }

    /// The client's socket reported an error (a reset).
    fn client_failed(&mut self, key: usize) {
        match self.clients[key].flow {
            Flow::Tcp(_) => self.tcp_client_failed(key),
            Flow::Http(_) => self.http_client_failed(key),
        }
    }

    /// Makes whatever progress client `key`'s readiness allows.
    pub(crate) fn advance(&mut self, key: usize) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        match c.flow {
            Flow::Tcp(_) => self.tcp_advance(key),
            Flow::Http(_) => self.http_advance(key),
        }
    }

    /// A deadline armed for client `key` is due: its flow acts if it is
    /// real and re-arms if activity moved it.
    pub(crate) fn on_deadline(&mut self, key: usize, now: Instant) {
        match self.clients[key].flow {
            Flow::Tcp(_) => self.tcp_deadline(key, now),
            Flow::Http(_) => self.http_deadline(key, now),
        }
    }

    /// Arms `at` as client `key`'s one live deadline (the earlier entry goes).
    pub(crate) fn arm(&mut self, key: usize, at: Instant) {
        let c = &mut self.clients[key];
        if c.armed == Some(at) {
            return;
        }
        self.timers.arm(at, key, c.serial, c.armed.replace(at));
    }

    /// Arms `at` unless an earlier deadline is armed already (it will
    /// re-arm for the later one when it fires).
    pub(crate) fn arm_at_most(&mut self, key: usize, at: Instant) {
        if self.clients[key].armed.is_none_or(|a| a > at) {
            self.arm(key, at);
        }
    }

    /// Takes client `key`'s deadline out (its connection ends).
    pub(crate) fn disarm(&mut self, key: usize) {
        let c = &mut self.clients[key];
        if let Some(at) = c.armed.take() {
            self.timers.cancel(at, key, c.serial);
        }
    }

    /// Hard stop: ends every connection now.
    pub(crate) fn kill_all(&mut self) {
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            if !self.clients.contains(key) {
                continue;
            }
            match self.clients[key].flow {
                Flow::Tcp(_) => self.tcp_kill(key),
                Flow::Http(_) => self.http_kill(key),
            }
        }
    }
}
