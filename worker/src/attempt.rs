//! Getting a server for a client's request (HTTP) or connection (TCP): pick
//! one (persistence, then the algorithm), wait in the backend queue when
//! every candidate is full, connect, retry another server on failure. The
//! same for both modes; each flow says what happens once connected or when
//! no server can be had ([`Worker::attempt_connected`],
//! [`Worker::attempt_failed`]).
//!
//! Invariants kept here:
//! * an attempt holds a server slot (`server` is `Some`) exactly while it is
//!   connecting or connected, and [`Worker::release_attempt`] gives it back;
//! * each freed slot is offered to the backend queue at once;
//! * a server connection has one owner, and its events reach that owner.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::Interest;

use crate::balance::Pick;
use crate::client::Flow;
use crate::server_conn::{
    idle_usable, reset_on_close, server_token, start_connect, token_key, ServerConn,
};
use crate::worker::Worker;

/// Where an attempt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptPhase {
    /// No server yet (transient, or between retries).
    Idle,
    /// Waiting in the backend queue for a server slot.
    Queued,
    /// Connecting to a server.
    Connecting,
    /// The server connection is up.
    Connected,
}

/// Why no server could be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No server is usable (all down, or the backend is empty).
    NoServer,
    /// Every connect failed (refused, unreachable) after the retries.
    ConnectFailed,
    /// The connect timeout fired on the last attempt.
    ConnectTimeout,
    /// The queue timeout fired.
    QueueTimeout,
}

/// One client's way to a server of `backend`.
#[derive(Debug)]
pub struct Attempt {
    /// Backend index.
    pub backend: usize,
    /// Server index while a slot is held.
    pub server: Option<usize>,
    /// The server connection, once a connect started (key in `Worker::servers`).
    pub conn: Option<usize>,
    /// Current phase.
    pub phase: AttemptPhase,
    /// Servers whose connect failed for this attempt.
    pub tried: Vec<usize>,
    /// Connect attempts made after the first.
    pub retries: u32,
    /// When the current phase started (queue entry or connect start).
    pub since: Instant,
    /// Time spent in the queue.
    pub t_queue: Option<Duration>,
    /// Time the successful connect took (0 for a reused connection).
    pub t_connect: Option<Duration>,
    /// The key hashed by `source`, `uri` and `hdr()` balancing (`None`:
    /// round robin for `hdr()` without the header).
    pub hash: Option<u64>,
    /// The connection was reused from an earlier request.
    pub reused: bool,
    /// A kept server connection of the client (HTTP keep-alive) that serves
    /// this attempt if the balancer picks its server.
    pub idle: Option<usize>,
    /// Which pooled connections of the picked server it may take.
    pub reuse: crate::server_pool::Reuse,
}

impl Attempt {
    /// A fresh attempt on `backend`.
    pub fn new(backend: usize, hash: Option<u64>, now: Instant) -> Attempt {
        Attempt {
            backend,
            server: None,
            conn: None,
            phase: AttemptPhase::Idle,
            tried: Vec::new(),
            retries: 0,
            since: now,
            t_queue: None,
            t_connect: None,
            hash,
            reused: false,
            idle: None,
            reuse: crate::server_pool::Reuse::Own,
        }
    }

    /// HAProxy's `%Tw`: queue time, 0 when not queued, -1 without a server.
    pub fn t_queue_ms(&self) -> i64 {
        match self.t_queue {
            Some(t) => crate::access_log::ms(t),
            None if self.server.is_some() || self.t_connect.is_some() => 0,
            None => -1,
        }
    }

    /// HAProxy's `%Tc`: connect time, -1 if never connected.
    pub fn t_connect_ms(&self) -> i64 {
        self.t_connect.map_or(-1, crate::access_log::ms)
    }
}

impl Worker {
    /// The attempt of client `key`'s flow, if one is under way.
    pub(crate) fn attempt_mut(&mut self, key: usize) -> Option<&mut Attempt> {
        match &mut self.clients.get_mut(key)?.flow {
            Flow::Tcp(t) => t.attempt.as_mut(),
            Flow::Http(h) => h.stream.as_mut().and_then(|s| s.attempt.as_mut()),
        }
    }

    /// Whether client `key`'s request could be sent again on a new
    /// connection if a reused one turns out closed (idempotent, no body):
    /// only then may reuse skip the peek (see `idle_usable`).
    fn replayable_request(&self, key: usize) -> bool {
        match self.clients.get(key).map(|c| &c.flow) {
            Some(Flow::Http(h)) => h.stream.as_ref().is_some_and(|s| {
                s.req.method.is_idempotent() && s.req.framing == corral_http::h1::Framing::None
            }),
            _ => false,
        }
    }

    /// Whether client `key` has bytes for the server already read: an HTTP
    /// request's head (parsed before any connect), or what a TCP client
    /// sent before the connect started.
    fn request_in_hand(&self, key: usize) -> bool {
        match self.clients.get(key).map(|c| &c.flow) {
            Some(Flow::Http(_)) => true,
            Some(Flow::Tcp(t)) => t.tunnel.c2s.in_flight() > 0,
            None => false,
        }
    }

    fn attempt_ref(&self, key: usize) -> Option<&Attempt> {
        match &self.clients.get(key)?.flow {
            Flow::Tcp(t) => t.attempt.as_ref(),
            Flow::Http(h) => h.stream.as_ref().and_then(|s| s.attempt.as_ref()),
        }
    }

    /// Chooses a server for the attempt of client `key` and connects, queues,
    /// or fails it.
    pub(crate) fn assign(&mut self, key: usize) {
        let Some(a) = self.attempt_ref(key) else {
            return;
        };
        let be = a.backend;
        let pick = match self.persistent_server(key, be) {
            Some(p) => p,
            None => {
                let a = self.attempt_ref(key).expect("checked");
                let (hash, tried) = (a.hash, a.tried.clone());
                self.backends[be].balancer.pick(hash, &tried)
            }
        };
        match pick {
            Pick::Server(i) => self.connect(key, i),
            Pick::Full => {
                let serial = self.clients[key].serial;
                let now = self.now;
                let at = {
                    let a = self.attempt_mut(key).expect("checked");
                    if a.phase == AttemptPhase::Queued {
                        return;
                    }
                    a.phase = AttemptPhase::Queued;
                    a.since = now;
                    a.since
                };
                self.backends[be].queue.push_back((key, serial));
                let at = at + self.cfg.backends[be].timeouts.queue;
                self.arm_at_most(key, at);
            }
            Pick::NoServer => self.attempt_failed(key, Failure::NoServer),
        }
    }

    /// The server this client sticks to, if persistence applies and the
    /// server is usable (first try only: a failed connect redispatches).
    fn persistent_server(&self, key: usize, be: usize) -> Option<Pick> {
        let a = self.attempt_ref(key)?;
        if !a.tried.is_empty() || self.cfg.backends[be].stick.is_none() {
            return None;
        }
        let peer = self.clients[key].peer;
        let i = self.sticky.sticky_server(&self.cfg, be, peer)?;
        let b = &self.backends[be].balancer;
        if !b.persists(i) {
            return None;
        }
        Some(if b.servers[i].has_slot() {
            Pick::Server(i)
        } else {
            Pick::Full
        })
    }

    /// Takes a slot on server `i` and starts connecting to it, or reuses
    /// the client's kept connection to it.
    fn connect(&mut self, key: usize, i: usize) {
        let now = self.now;
        let serial = self.clients[key].serial;
        let a = self.attempt_mut(key).expect("an attempt");
        let be = a.backend;
        let reuse = a.reuse;
        if a.phase == AttemptPhase::Queued {
            a.t_queue = Some(now - a.since);
        }
        let quick = self.replayable_request(key);
        let a = self.attempt_mut(key).expect("an attempt");
        if let Some(skey) = a.idle.take() {
            let fits = self
                .servers
                .get_mut(skey)
                .is_some_and(|s| s.backend == be && s.server == i && idle_usable(s, quick));
            if fits {
                return self.reuse(key, skey);
            }
            self.close_server(skey, false);
        }
        if let Some(skey) = self
            .server_pools
            .take(&mut self.servers, be, i, reuse, quick)
        {
            self.servers[skey].owner = (key, serial);
            return self.reuse(key, skey);
        }
        let a = self.attempt_mut(key).expect("an attempt");
        a.server = Some(i);
        a.phase = AttemptPhase::Connecting;
        a.since = now;
        self.backends[be].balancer.acquire(i);
        self.backends[be].cur += 1;
        self.rows.connect(be, i);
        let at = now + self.cfg.backends[be].timeouts.connect;
        self.arm_at_most(key, at);
        let addr = self.backends[be].balancer.servers[i].addr;
        if let Flow::Tcp(_) = self.clients[key].flow {
            self.tcp_read_ahead(key);
        }
        let sock = match start_connect(addr, self.request_in_hand(key)) {
            Ok(s) => s,
            Err(_) => return self.connect_failed(key, false),
        };
        let entry = self.servers.vacant_entry();
        let skey = entry.key();
        self.serial += 1;
        let mut conn = ServerConn::new(sock, be, i, (key, serial), self.serial);
        if let Err(e) = self.poll.registry().register(
            &mut conn.sock,
            server_token(skey, self.serial),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register a server connection: {e}");
            return self.connect_failed(key, false);
        }
        debug_assert_eq!(conn.sock.as_raw_fd(), conn.ep.fd);
        entry.insert(conn);
        self.attempt_mut(key).expect("an attempt").conn = Some(skey);
        self.attempt_started(key);
    }

    /// Client `key`'s attempt takes an idle server connection `skey` (its
    /// own kept one, or a pooled one; to a server that has a slot):
    /// connected at once.
    pub(crate) fn reuse(&mut self, key: usize, skey: usize) {
        let i = self.servers[skey].server;
        let a = self.attempt_mut(key).expect("an attempt");
        let be = a.backend;
        a.server = Some(i);
        a.conn = Some(skey);
        a.phase = AttemptPhase::Connected;
        a.t_connect = Some(Duration::ZERO);
        a.reused = true;
        self.backends[be].balancer.acquire(i);
        self.backends[be].cur += 1;
        self.rows.reuse(be, i);
        // No event will say so: the flow goes on now if its own loop
        // called this, else next turn.
        self.wake(key);
    }

    /// The connect of client `key`'s attempt completed.
    pub(crate) fn connected(&mut self, key: usize) {
        let now = self.now;
        let a = self.attempt_mut(key).expect("an attempt");
        a.t_connect = Some(now - a.since);
        a.phase = AttemptPhase::Connected;
        let (be, i, skey) = (a.backend, a.server, a.conn);
        if let Some(s) = skey.and_then(|k| self.servers.get_mut(k)) {
            s.connected = true;
            s.ep.writable = true;
        }
        if let Some(i) = i {
            let peer = self.clients[key].peer;
            self.sticky.learn_server(&self.cfg, be, i, peer);
        }
        self.attempt_connected(key);
    }

    /// A connect failed (refused, unreachable, timed out): retry on another
    /// server while retries remain, else the flow is told.
    pub(crate) fn connect_failed(&mut self, key: usize, timed_out: bool) {
        self.drop_attempt_conn(key, false);
        let a = self.attempt_mut(key).expect("an attempt");
        let be = a.backend;
        if let Some(i) = a.server.take() {
            if !a.tried.contains(&i) {
                a.tried.push(i);
            }
            self.backends[be].balancer.release(i);
            self.backends[be].cur -= 1;
            self.rows.connect_error(be, i);
        }
        let retries = self.cfg.backends[be].retries;
        let a = self.attempt_mut(key).expect("an attempt");
        if a.retries >= retries {
            let why = if timed_out {
                Failure::ConnectTimeout
            } else {
                Failure::ConnectFailed
            };
            self.attempt_failed(key, why);
        } else {
            a.retries += 1;
            a.phase = AttemptPhase::Idle;
            self.rows.retry(be);
            self.assign(key);
        }
        self.offer_slots(be);
    }

    /// Closes the server connection of client `key`'s attempt, if any
    /// (`reset`: with an RST).
    pub(crate) fn drop_attempt_conn(&mut self, key: usize, reset: bool) {
        let Some(skey) = self.attempt_mut(key).and_then(|a| a.conn.take()) else {
            return;
        };
        self.close_server(skey, reset);
    }

    /// Closes server connection `skey` (no deregister: the close takes the
    /// fd out of the poller, nothing else holds it).
    pub(crate) fn close_server(&mut self, skey: usize, reset: bool) {
        if let Some(s) = self.servers.try_remove(skey) {
            if reset {
                reset_on_close(&s.sock);
            }
        }
    }

    /// Gives back what client `key`'s attempt holds: its slot (offered to
    /// the queue) and, unless kept by the caller beforehand, its connection.
    pub(crate) fn release_attempt(&mut self, key: usize, reset: bool) {
        // Out of the backend queue, so it counts no more in `qcur` and
        // `%bq`, and a later attempt of the same client queues anew.
        if let Some(a) = self
            .attempt_ref(key)
            .filter(|a| a.phase == AttemptPhase::Queued)
        {
            let be = a.backend;
            let serial = self.clients[key].serial;
            self.backends[be].queue.retain(|&e| e != (key, serial));
        }
        self.drop_attempt_conn(key, reset);
        if let Some(skey) = self.attempt_mut(key).and_then(|a| a.idle.take()) {
            self.close_server(skey, false);
        }
        self.release_slot(key);
    }

    /// Gives back the server slot of client `key`'s attempt, if it holds one.
    pub(crate) fn release_slot(&mut self, key: usize) {
        let Some(a) = self.attempt_mut(key) else {
            return;
        };
        let be = a.backend;
        if let Some(i) = a.server.take() {
            self.backends[be].balancer.release(i);
            self.backends[be].cur -= 1;
            self.offer_slots(be);
        }
    }

    /// Readiness for server connection `skey`: recorded, then its owner
    /// makes what progress it can.
    pub(crate) fn on_server_event(&mut self, offset: usize, ev: &Event) {
        let (skey, tag) = token_key(offset);
        let Some(s) = self.servers.get_mut(skey).filter(|s| s.has_tag(tag)) else {
            return;
        };
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            s.ep.readable = true;
        }
        if ev.is_read_closed() {
            s.ep.read_closed = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            s.ep.writable = true;
        }
        if !s.connected && (ev.is_error() || ev.is_write_closed()) {
            // Refused or unreachable: the kernel says so with the event.
            s.refused = true;
        }
        if s.connected && ev.is_error() && matches!(s.sock.take_error(), Ok(Some(_))) {
            s.failed = true;
        }
        let (owner, serial) = s.owner;
        let stirred = ev.is_readable() || ev.is_read_closed() || ev.is_error();
        if s.owner == crate::server_pool::POOLED {
            if stirred {
                self.server_pools.on_event(&mut self.servers, skey);
            }
            return;
        }
        if self.clients.get(owner).is_some_and(|c| c.serial == serial) {
            if stirred && self.drop_if_idle(owner, skey) {
                // A kept connection the server closed (or wrote to out of
                // turn) is dropped now, never reused.
                return;
            }
            self.advance(owner);
        } else {
            // An orphan (its client is gone): nothing will use it.
            self.close_server(skey, false);
        }
    }

    /// For a connecting attempt: the connect's outcome, if the server
    /// connection's readiness tells it. Returns true if it moved on.
    pub(crate) fn check_connect(&mut self, key: usize) -> bool {
        let Some(a) = self.attempt_ref(key) else {
            return false;
        };
        if a.phase != AttemptPhase::Connecting {
            return false;
        }
        let Some(s) = a.conn.and_then(|k| self.servers.get(k)) else {
            return false;
        };
        if s.refused {
            self.connect_failed(key, false);
            return true;
        }
        // Writable without an error: connected (no getsockopt or
        // getpeername needed, the event says it).
        if s.ep.writable {
            self.connected(key);
            return true;
        }
        false
    }

    /// Gives freed server slots of backend `be` to clients in its queue.
    pub(crate) fn offer_slots(&mut self, be: usize) {
        while let Some(&(key, serial)) = self.backends[be].queue.front() {
            let waiting = self.clients.get(key).is_some_and(|c| c.serial == serial)
                && self
                    .attempt_ref(key)
                    .is_some_and(|a| a.phase == AttemptPhase::Queued && a.backend == be);
            if !waiting {
                self.backends[be].queue.pop_front();
                continue;
            }
            let a = self.attempt_ref(key).expect("checked");
            let (hash, tried) = (a.hash, a.tried.clone());
            match self.backends[be].balancer.pick(hash, &tried) {
                Pick::Full => return,
                Pick::Server(i) => {
                    self.backends[be].queue.pop_front();
                    self.connect(key, i);
                }
                Pick::NoServer => {
                    self.backends[be].queue.pop_front();
                    self.attempt_failed(key, Failure::NoServer);
                }
            }
        }
    }

    /// An attempt's deadline may be due: the queue or connect timeout.
    /// Returns true if it acted.
    pub(crate) fn attempt_deadline(&mut self, key: usize, now: Instant) -> bool {
        let Some(a) = self.attempt_ref(key) else {
            return false;
        };
        let t = &self.cfg.backends[a.backend].timeouts;
        match a.phase {
            AttemptPhase::Queued if now >= a.since + t.queue => {
                self.attempt_failed(key, Failure::QueueTimeout);
                true
            }
            AttemptPhase::Connecting if now >= a.since + t.connect => {
                self.connect_failed(key, true);
                true
            }
            _ => false,
        }
    }

    /// The next deadline of client `key`'s attempt (queue or connect).
    pub(crate) fn attempt_due(&self, key: usize) -> Option<Instant> {
        let a = self.attempt_ref(key)?;
        let t = &self.cfg.backends[a.backend].timeouts;
        match a.phase {
            AttemptPhase::Queued => Some(a.since + t.queue),
            AttemptPhase::Connecting => Some(a.since + t.connect),
            _ => None,
        }
    }

    /// The flow of client `key` just started a connect: it may send at once.
    /// (An HTTP flow's own loop sends the request head speculatively when
    /// it started the connect; a connect started for a queued request is
    /// announced by its writable event.)
    fn attempt_started(&mut self, key: usize) {
        if let Flow::Tcp(_) = self.clients[key].flow {
            self.tcp_connecting(key)
        }
    }

    /// The flow of client `key` has its server connection. (An HTTP flow
    /// finds out in its own loop, which is what saw it.)
    fn attempt_connected(&mut self, key: usize) {
        if let Flow::Tcp(_) = self.clients[key].flow {
            self.tcp_established(key)
        }
    }

    /// No server could be had for client `key`.
    fn attempt_failed(&mut self, key: usize, why: Failure) {
        match self.clients[key].flow {
            Flow::Tcp(_) => self.tcp_no_server(key, why),
            Flow::Http(_) => self.http_no_server(key, why),
        }
    }
}
