//! The driver of an HTTP client connection: each call moves what the
//! sockets' readiness allows, phase by phase, under a per-call bound, then
//! arms the one deadline that matters now.
//!
//! Timeouts, as HAProxy applies them:
//! * `http_request`: a complete head must arrive in time once its first
//!   byte did (408, slowloris); an empty first connection is closed
//!   silently when it runs out;
//! * `http_keep_alive`: idle time between requests, then a silent close (a
//!   408 there would race the client's next request);
//! * `client`: the client stops sending a body or reading the response;
//! * `server`: the server stops answering (504 before the head);
//! * `connect` and `queue`: the attempt's ([`crate::attempt`]);
//! * `tunnel`: after a protocol switch.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::flow_of;
use super::request::{limits, whole_request_in};
use super::{Phase, Stream};
use crate::access_log::{ms, HttpLog};
use crate::attempt::{AttemptPhase, Failure};
use crate::bufio::Io;
use crate::client::Flow;
use crate::server_conn::{idle_usable, reset_on_close};
use crate::tally::{Target, FLUSH_BYTES};
use crate::tcp::CLOSING_RECHECK;
use crate::tunnel::{linger, unacked, Delivery};
use crate::worker::{Worker, PUMP_BUDGET};

/// What a phase step did.
pub(super) enum Step {
    /// Bytes or state moved: step again.
    Moved,
    /// Nothing can move until the next event.
    Still,
    /// The connection is gone.
    Gone,
}

/// What one part of an exchange step did.
pub(super) enum Sub {
    /// Something moved.
    Moved,
    /// Nothing moved.
    Still,
    /// The exchange's shape changed (a local answer, a switch): start the
    /// step over.
    Changed,
    /// The connection is gone.
    Gone,
}

/// The longest interval between two looks at a closing connection's
/// unacknowledged bytes.
const CLOSING_RECHECK_MAX: Duration = Duration::from_secs(1);
/// Steps per call before other connections get a turn.
const STEPS: usize = 64;
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;

impl Worker {
    /// Makes whatever progress client `key`'s sockets allow.
    pub(crate) fn http_advance(&mut self, key: usize) {
        for _ in 0..STEPS {
            let step = match flow_of(&mut self.clients, key).phase {
                Phase::Head => self.http_step_head(key),
                Phase::Exchange => self.http_step_exchange(key),
                Phase::Tunnel => self.http_tunnel(key),
                Phase::Closing => self.http_step_closing(key),
            };
            match step {
                Step::Moved => continue,
                Step::Still => {
                    self.http_tally(key, FLUSH_BYTES);
                    self.http_rearm(key);
                    return;
                }
                Step::Gone => return,
            }
        }
        // Bound reached with work left: next turn.
        self.ready.push(key);
        self.http_tally(key, FLUSH_BYTES);
        self.http_rearm(key);
    }

    /// The current stream's bytes (its own and its tunnel's), in and out.
    fn http_bytes(&self, key: usize) -> Option<(u64, u64)> {
        let Flow::Http(h) = &self.clients.get(key)?.flow else {
            return None;
        };
        let st = h.stream.as_ref()?;
        let (t_in, t_out) = h
            .tunnel
            .as_ref()
            .map_or((0, 0), |t| (t.c2s.bytes, t.s2c.bytes));
        Some((st.bytes_in + t_in, st.bytes_out + t_out))
    }

    /// Adds the current stream's uncounted bytes to the counters once
    /// there are at least `min` of them.
    fn http_tally(&mut self, key: usize, min: u64) {
        let Some((bytes_in, bytes_out)) = self.http_bytes(key) else {
            return;
        };
        let c = &mut self.clients[key];
        let fe = c.frontend;
        let Flow::Http(h) = &mut c.flow else { return };
        let Some(st) = h.stream.as_mut() else { return };
        let Some(d) = st.tally.take(bytes_in, bytes_out, min) else {
            return;
        };
        let srv = st.attempt.as_ref().and_then(|a| a.server).or(st.served_by);
        let to = Target {
            frontend: fe,
            backend: st.backend.map(|b| (b, srv)),
        };
        self.count_bytes(key, to, d);
    }

    fn http_step_head(&mut self, key: usize) -> Step {
        let cap = limits(self).max_head;
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Step::Gone;
        };
        let mut moved = false;
        if !h.client_eof && c.ep.readable && h.rx.len() < cap {
            let room = (cap - h.rx.len()).min(READ_CHUNK);
            match h.rx.read_from(&mut c.ep, room) {
                Io::Done(_) => {
                    let now = Instant::now();
                    h.client_active = now;
                    if h.head_since.is_none() {
                        h.head_since = Some((now, std::time::SystemTime::now()));
                    }
                    moved = true;
                }
                Io::Eof => {
                    h.client_eof = true;
                    moved = true;
                }
                Io::Blocked => {}
                Io::Failed(_) => {
                    if h.rx.is_empty() {
                        self.http_finish(key, false);
                    } else {
                        self.http_refused(key, None, *b"CR");
                    }
                    return Step::Gone;
                }
            }
        }
        match self.http_head(key) {
            Step::Still if moved => Step::Moved,
            s => s,
        }
    }

    fn http_step_exchange(&mut self, key: usize) -> Step {
        let h = flow_of(&mut self.clients, key);
        if h.client_eof
            && h.stream
                .as_ref()
                .is_some_and(|s| !s.request_received(h.rx.as_slice()))
        {
            // The FIN came before the request was whole (read with its
            // head, or before it began): nothing more of it will come.
            self.http_abort(key, *b"CD");
            return Step::Gone;
        }
        let mut moved = false;
        macro_rules! sub {
            ($e:expr) => {
                match $e {
                    Sub::Moved => moved = true,
                    Sub::Still => {}
                    Sub::Changed => return Step::Moved,
                    Sub::Gone => return Step::Gone,
                }
            };
        }
        sub!(self.http_connect_progress(key));
        sub!(self.http_send_request(key));
        sub!(self.http_read_client(key));
        sub!(self.http_read_server(key));
        sub!(self.http_response(key));
        sub!(self.http_write_client(key));
        sub!(self.http_end_check(key));
        if moved {
            Step::Moved
        } else {
            Step::Still
        }
    }

    /// A connecting attempt whose socket reported its outcome.
    fn http_connect_progress(&mut self, key: usize) -> Sub {
        let connecting = flow_of(&mut self.clients, key)
            .stream
            .as_ref()
            .and_then(|s| s.attempt.as_ref())
            .is_some_and(|a| a.phase == AttemptPhase::Connecting);
        if connecting && self.check_connect(key) {
            Sub::Changed
        } else {
            Sub::Still
        }
    }

    /// Reads the client during an exchange: the request body, pipelined
    /// requests (kept for later), or its FIN.
    fn http_read_client(&mut self, key: usize) -> Sub {
        let cap = limits(self).max_head.max(READ_CHUNK);
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Sub::Gone;
        };
        if h.client_eof || !c.ep.readable || h.rx.len() >= cap {
            return Sub::Still;
        }
        let room = (cap - h.rx.len()).min(READ_CHUNK);
        match h.rx.read_from(&mut c.ep, room) {
            Io::Done(_) => {
                h.client_active = Instant::now();
                Sub::Moved
            }
            Io::Eof => {
                h.client_eof = true;
                let st = h.stream.as_ref();
                if st.is_some_and(|s| !s.request_received(h.rx.as_slice())) {
                    // Gone before its request was whole (a body all
                    // received is still served: a half-close is no abort).
                    self.http_abort(key, *b"CD");
                    return Sub::Gone;
                }
                Sub::Moved
            }
            Io::Blocked => Sub::Still,
            Io::Failed(_) => {
                let waiting = h.stream.as_ref().is_some_and(|s| !s.resp_started);
                self.http_abort(key, if waiting { *b"CH" } else { *b"CD" });
                Sub::Gone
            }
        }
    }

    /// Writes what is queued for the client.
    fn http_write_client(&mut self, key: usize) -> Sub {
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Sub::Gone;
        };
        if h.tx.is_empty() || !c.ep.writable {
            return Sub::Still;
        }
        match h.tx.write_to(&mut c.ep, false) {
            Io::Done(_) => {
                h.client_active = Instant::now();
                Sub::Moved
            }
            Io::Failed(_) => {
                self.http_abort(key, *b"CD");
                Sub::Gone
            }
            _ => Sub::Still,
        }
    }

    /// The response is complete and written: the stream ends; the
    /// connection waits for the next request or closes.
    fn http_end_check(&mut self, key: usize) -> Sub {
        let h = flow_of(&mut self.clients, key);
        let done = h
            .stream
            .as_ref()
            .is_some_and(|s| s.resp_started && s.resp_body.is_done())
            && h.tx.is_empty();
        if !done {
            return Sub::Still;
        }
        let st = h.stream.take().expect("checked");
        self.http_end_stream(key, st);
        Sub::Changed
    }

    /// Logs and counts a finished stream, keeps or closes its server
    /// connection, and moves the client connection on.
    fn http_end_stream(&mut self, key: usize, mut st: Box<Stream>) {
        let now = Instant::now();
        // The server connection: kept for the next request if it is clean.
        // (The stream is out of the flow: its slot is given back here, its
        // server index kept for the log line.)
        if let Some(a) = st.attempt.as_mut() {
            let keep = st.keep_server
                && st.req_body.is_done()
                && a.conn.is_some_and(|k| {
                    self.servers
                        .get(k)
                        .is_some_and(|s| s.tx.is_empty() && s.rx.is_empty() && !s.eof && !s.failed)
                });
            let conn = a.conn.take();
            if let Some(i) = a.server {
                let be = a.backend;
                self.backends[be].balancer.release(i);
                self.backends[be].cur -= 1;
                self.offer_slots(be);
            }
            if let Some(k) = conn {
                if keep {
                    if let Some(old) = flow_of(&mut self.clients, key).idle_server.replace(k) {
                        self.close_server(old, false);
                    }
                } else {
                    self.close_server(k, false);
                }
            }
        }
        let keep_client = st.keep_client;
        self.http_close_stream(key, st);
        let stopping = self.stopping();
        let head_limits = limits(self);
        let Flow::Http(h) = &mut self.clients[key].flow else {
            return;
        };
        // After the client's FIN, only whole requests already here are
        // served.
        let go_on = !h.client_eof || whole_request_in(h.rx.as_slice(), &head_limits);
        if keep_client && !stopping && go_on {
            h.phase = Phase::Head;
            h.idle_since = now;
            if !h.rx.is_empty() {
                // A pipelined request is already here: its head is timed.
                h.head_since = Some((now, std::time::SystemTime::now()));
            }
            h.rx.shrink_if_empty();
            h.tx.shrink_if_empty();
        } else {
            h.start_closing(now);
        }
    }

    /// A stream is over (its server side given back): counted, logged
    /// once it left the counters (as HAProxy does), its trackings released.
    pub(super) fn http_close_stream(&mut self, key: usize, st: Box<Stream>) {
        self.http_count(key, &st);
        self.http_log(key, &st, Instant::now());
        let c = &mut self.clients[key];
        for slot in 0..3u8 {
            if st.tracked_here[slot as usize] {
                self.sticky.release_slot(&mut c.sc, slot);
            }
        }
    }

    /// The stream's log line.
    fn http_log(&mut self, key: usize, st: &Stream, now: Instant) {
        let c = &self.clients[key];
        let fe = c.frontend;
        let (backend, server, srv_conn, beconn, backend_queue) = match st.backend {
            Some(be) => {
                let b = &self.backends[be];
                let srv = st.attempt.as_ref().and_then(|a| a.server).or(st.served_by);
                (
                    self.cfg.backends[be].name.as_str(),
                    srv.map_or("<NOSRV>", |i| {
                        self.cfg.backends[be].servers[i].name.as_str()
                    }),
                    srv.map_or(0, |i| b.balancer.servers[i].cur),
                    b.cur,
                    b.queue.len(),
                )
            }
            None => (self.cfg.frontends[fe].name.as_str(), "<NOSRV>", 0, 0, 0),
        };
        let bytes_out = st.bytes_out
            + match &c.flow {
                Flow::Http(h) => h.tunnel.as_ref().map_or(0, |t| t.s2c.bytes),
                Flow::Tcp(_) => 0,
            };
        let a = st.attempt.as_ref();
        self.log.log_http(&HttpLog {
            client: c.peer,
            started: st.started_wall,
            frontend: &self.cfg.frontends[fe].name,
            backend,
            server,
            t_request: st.t_head,
            t_queue: a.map_or(-1, |a| a.t_queue_ms()),
            t_connect: a.map_or(-1, |a| a.t_connect_ms()),
            t_response: st.t_response,
            t_active: ms(now - st.started),
            status: st.status.map_or(-1, i32::from),
            bytes_out,
            term: st.term,
            actconn: self.cur,
            feconn: self.frontends[fe].cur,
            beconn,
            srv_conn,
            retries: a.map_or(0, |a| a.retries),
            backend_queue,
            request: Some((
                st.req.method_str(),
                st.req.target(),
                st.req.version.as_str(),
            )),
        });
    }

    /// The stream's counters: status classes, bytes, times, stick tables.
    fn http_count(&mut self, key: usize, st: &Stream) {
        let c = &self.clients[key];
        let fe = c.frontend;
        let srv = st.attempt.as_ref().and_then(|a| a.server).or(st.served_by);
        let status = st.status;
        self.rows.response(fe, st.backend, srv, status);
        let (t_in, t_out) = match &c.flow {
            Flow::Http(h) => h
                .tunnel
                .as_ref()
                .map_or((0, 0), |t| (t.c2s.bytes, t.s2c.bytes)),
            Flow::Tcp(_) => (0, 0),
        };
        // What was not counted while the bytes flowed.
        let mut tally = st.tally;
        if let Some(d) = tally.take(st.bytes_in + t_in, st.bytes_out + t_out, 0) {
            let to = Target {
                frontend: fe,
                backend: st.backend.map(|b| (b, srv)),
            };
            self.count_bytes(key, to, d);
        }
        let c = &self.clients[key];
        if let Some(be) = st.backend {
            let a = st.attempt.as_ref();
            self.rows.times(
                be,
                srv,
                a.map_or(0, |a| a.t_queue_ms().max(0)),
                a.map_or(0, |a| a.t_connect_ms().max(0)),
                st.t_response.max(0),
                ms(Instant::now() - st.started),
            );
        }
        if status.is_some_and(|s| (400..500).contains(&s)) {
            self.sticky.count_error(&c.sc);
        }
    }

    /// [`Phase::Closing`]: the last bytes out, a FIN, then what the client
    /// still sends is discarded until it closes or acknowledged all (so the
    /// close cannot reset away the answer).
    fn http_step_closing(&mut self, key: usize) -> Step {
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Step::Gone;
        };
        if !h.tx.is_empty() {
            match h.tx.write_to(&mut c.ep, false) {
                Io::Done(_) => {
                    h.closing_since = Some(Instant::now());
                    return Step::Moved;
                }
                Io::Failed(_) => {
                    self.http_finish(key, false);
                    return Step::Gone;
                }
                _ => return Step::Still,
            }
        }
        if !h.shut {
            h.shut = true;
            let _ = crate::forward::shutdown(c.ep.fd, Shutdown::Write);
        }
        if h.client_eof {
            self.http_finish(key, true);
            return Step::Gone;
        }
        match linger(&mut c.ep, PUMP_BUDGET) {
            Ok(Delivery::Done) => {
                self.http_finish(key, true);
                Step::Gone
            }
            Ok(Delivery::More) => Step::Moved,
            Ok(Delivery::Wait) => {
                // Acknowledgements make no event: look again, sooner while
                // the client takes what it is sent, and give up only after
                // `timeout client` without progress.
                let now = Instant::now();
                let queued = unacked(c.ep.fd);
                let wait = match h.closing_check {
                    _ if queued < h.closing_unacked => {
                        h.closing_since = Some(now);
                        CLOSING_RECHECK
                    }
                    Some((_, w)) => (w * 2).min(CLOSING_RECHECK_MAX),
                    None => CLOSING_RECHECK,
                };
                h.closing_unacked = queued;
                h.closing_check = Some((now + wait, wait));
                Step::Still
            }
            Err(_) => {
                self.http_finish(key, false);
                Step::Gone
            }
        }
    }

    /// [`Phase::Tunnel`]: bytes both ways until both FINs.
    fn http_tunnel(&mut self, key: usize) -> Step {
        let now = Instant::now();
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Step::Gone;
        };
        let skey = h
            .stream
            .as_ref()
            .and_then(|s| s.attempt.as_ref())
            .and_then(|a| a.conn);
        let (Some(t), Some(s)) = (
            h.tunnel.as_mut(),
            skey.and_then(|k| self.servers.get_mut(k)),
        ) else {
            self.http_abort(key, *b"SD");
            return Step::Gone;
        };
        match t.forward(&mut c.ep, &mut s.ep, &mut self.pools, PUMP_BUDGET, now) {
            Ok(more) => {
                if t.finished() {
                    self.http_end_tunnel(key, *b"--");
                    Step::Gone
                } else if more {
                    Step::Moved
                } else {
                    Step::Still
                }
            }
            Err(blame) => {
                let term = match blame {
                    crate::tunnel::Blame::Client => *b"CD",
                    crate::tunnel::Blame::Server => *b"SD",
                };
                self.http_end_tunnel(key, term);
                Step::Gone
            }
        }
    }

    /// A tunnel ended: its request's log line, then the connection closes.
    fn http_end_tunnel(&mut self, key: usize, term: [u8; 2]) {
        let now = Instant::now();
        let h = flow_of(&mut self.clients, key);
        if let Some(st) = h.stream.as_mut() {
            st.term = term;
        }
        if let Some(st) = flow_of(&mut self.clients, key).stream.take() {
            self.http_log(key, &st, now);
            self.http_count(key, &st);
            flow_of(&mut self.clients, key).stream = Some(st);
        }
        let clean = term == *b"--";
        self.http_finish(key, clean);
    }

    /// The current stream (if any) ends abnormally with `term`: it is
    /// logged and the connection is reset.
    pub(super) fn http_abort(&mut self, key: usize, term: [u8; 2]) {
        let now = Instant::now();
        if let Some(mut st) = flow_of(&mut self.clients, key).stream.take() {
            st.term = term;
            let c = &self.clients[key];
            let fe = c.frontend;
            match term[0] {
                b'C' | b'c' => self.rows.client_abort(
                    fe,
                    st.backend,
                    st.attempt.as_ref().and_then(|a| a.server),
                ),
                b'S' | b's' => self
                    .rows
                    .server_abort(st.backend, st.attempt.as_ref().and_then(|a| a.server)),
                _ => {}
            }
            self.http_log(key, &st, now);
            self.http_count(key, &st);
            flow_of(&mut self.clients, key).stream = Some(st);
        }
        self.http_finish(key, false);
    }

    /// Closes the connection (an RST unless `graceful`) and everything it
    /// holds: its attempt, kept server connection, tunnel, trackings.
    pub(crate) fn http_finish(&mut self, key: usize, graceful: bool) {
        self.disarm(key);
        self.release_attempt(key, !graceful);
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else { return };
        let idle = h.idle_server.take();
        if let Some(mut t) = h.tunnel.take() {
            t.release(&mut self.pools);
        }
        if let Some(st) = h.stream.take() {
            for slot in 0..3u8 {
                if st.tracked_here[slot as usize] {
                    self.sticky.release_slot(&mut c.sc, slot);
                }
            }
        }
        if !graceful {
            reset_on_close(&c.sock);
        }
        if let Some(k) = idle {
            self.close_server(k, false);
        }
        let mut c = self.clients.remove(key);
        // Bytes were added per request.
        self.sticky.release(&mut c.sc, 0, 0);
        let fe = c.frontend;
        drop(c);
        self.leave(fe);
    }

    /// If server connection `skey` is one client `key` keeps idle and it
    /// can no longer serve (the server closed it, reset it, or wrote out of
    /// turn), closes it and forgets it. Returns true if it did.
    pub(crate) fn drop_if_idle(&mut self, key: usize, skey: usize) -> bool {
        let Flow::Http(h) = &mut self.clients[key].flow else {
            return false;
        };
        let kept = h.idle_server == Some(skey)
            || h.stream
                .as_ref()
                .and_then(|s| s.attempt.as_ref())
                .is_some_and(|a| a.idle == Some(skey));
        if !kept || self.servers.get_mut(skey).is_some_and(idle_usable) {
            return false;
        }
        let Flow::Http(h) = &mut self.clients[key].flow else {
            return false;
        };
        let idle = if h.idle_server == Some(skey) {
            h.idle_server.take()
        } else {
            h.stream
                .as_mut()
                .and_then(|s| s.attempt.as_mut())
                .filter(|a| a.idle == Some(skey))
                .and_then(|a| a.idle.take())
        };
        match idle {
            Some(k) => {
                self.close_server(k, false);
                true
            }
            None => false,
        }
    }

    /// No server for the current request: corral answers.
    pub(crate) fn http_no_server(&mut self, key: usize, why: Failure) {
        let (status, term) = match why {
            Failure::NoServer => (503, *b"SC"),
            Failure::ConnectFailed => (502, *b"SC"),
            Failure::ConnectTimeout => (502, *b"sC"),
            Failure::QueueTimeout => (503, *b"sQ"),
        };
        self.http_local_error(key, status, term);
    }

    /// The client's socket reported a reset.
    pub(crate) fn http_client_failed(&mut self, key: usize) {
        let h = flow_of(&mut self.clients, key);
        let term = match (&h.stream, h.phase) {
            (_, Phase::Tunnel) => *b"CD",
            (Some(s), _) if !s.resp_started => *b"CH",
            _ => *b"CD",
        };
        if h.stream.is_none() && h.phase != Phase::Tunnel {
            return self.http_finish(key, false);
        }
        self.http_abort(key, term);
    }

    /// Hard stop.
    pub(crate) fn http_kill(&mut self, key: usize) {
        let phase = flow_of(&mut self.clients, key).phase;
        let at = match phase {
            Phase::Head => b'R',
            Phase::Exchange => b'D',
            Phase::Tunnel | Phase::Closing => b'D',
        };
        self.http_abort(key, [b'K', at]);
    }

    /// The one deadline that matters for client `key` now, and what
    /// happens when it passes.
    fn http_due(&self, key: usize) -> Option<(Instant, Due)> {
        let c = &self.clients[key];
        let Flow::Http(h) = &c.flow else { return None };
        let fe = &self.cfg.frontends[c.frontend].timeouts;
        match h.phase {
            Phase::Head => Some(match h.head_since {
                Some((t, _)) => (t + fe.http_request, Due::RequestTimeout),
                None if h.requests == 0 => (h.idle_since + fe.http_request, Due::Idle),
                None => (h.idle_since + fe.http_keep_alive, Due::Idle),
            }),
            Phase::Exchange => {
                if let Some(at) = self.attempt_due(key) {
                    return Some((at, Due::Attempt));
                }
                let st = h.stream.as_ref()?;
                let be = st.backend.map(|b| &self.cfg.backends[b].timeouts);
                let waiting_client = !st.request_received(h.rx.as_slice()) || !h.tx.is_empty();
                let connected = st
                    .attempt
                    .as_ref()
                    .is_some_and(|a| a.phase == AttemptPhase::Connected);
                let mut due: Option<(Instant, Due)> = None;
                let mut consider = |at: Instant, what: Due| {
                    if due.is_none_or(|(d, _)| at < d) {
                        due = Some((at, what));
                    }
                };
                if waiting_client {
                    consider(h.client_active + fe.client, Due::Client);
                }
                // The server is waited for only while corral would read it:
                // not once the response is in, nor while the client is
                // slow to take it.
                let reading_server = !(st.resp_started && st.resp_body.is_done())
                    && h.tx.len() < super::response::TX_HIGH;
                if let (Some(be), true) = (be, connected && !st.local && reading_server) {
                    consider(st.server_active + be.server, Due::Server);
                }
                due
            }
            Phase::Tunnel => {
                let t = h.tunnel.as_ref()?;
                let st = h.stream.as_ref()?;
                let be = st.backend.map_or(fe, |b| &self.cfg.backends[b].timeouts);
                let idle = be.tunnel.unwrap_or(fe.client.min(be.server));
                Some((t.last_activity + idle, Due::Tunnel))
            }
            Phase::Closing => {
                let since = h.closing_since.unwrap_or(c.accepted);
                let give_up = since + fe.client;
                let check = h.closing_check.map_or(give_up, |(at, _)| at);
                Some((check.min(give_up), Due::Closing))
            }
        }
    }

    /// Arms the connection's deadline (only if it moved earlier: a later
    /// one is re-armed when the earlier fires).
    fn http_rearm(&mut self, key: usize) {
        if let Some((at, _)) = self.http_due(key) {
            self.arm_at_most(key, at);
        }
    }

    /// A deadline armed for client `key` is due.
    pub(crate) fn http_deadline(&mut self, key: usize, now: Instant) {
        if self.attempt_deadline(key, now) {
            if self.clients.contains(key) {
                self.http_advance(key);
            }
            return;
        }
        let Some((at, due)) = self.http_due(key) else {
            return;
        };
        if now < at {
            return self.arm(key, at);
        }
        match due {
            Due::Idle => self.http_finish(key, true),
            Due::RequestTimeout => {
                let rej = corral_http::h1::Reject {
                    status: 408,
                    reason: "request head timeout",
                };
                self.http_refused(key, Some(rej), *b"cR");
                self.http_advance(key);
            }
            Due::Attempt => self.http_advance(key),
            Due::Client => {
                let started = flow_of(&mut self.clients, key)
                    .stream
                    .as_ref()
                    .is_some_and(|s| s.resp_started);
                if started {
                    self.http_abort(key, *b"cD");
                } else {
                    self.http_local_error(key, 408, *b"cD");
                    self.http_advance(key);
                }
            }
            Due::Server => {
                let started = flow_of(&mut self.clients, key)
                    .stream
                    .as_ref()
                    .is_some_and(|s| s.resp_started);
                if started {
                    self.http_abort(key, *b"sD");
                } else {
                    self.http_local_error(key, 504, *b"sH");
                    self.http_advance(key);
                }
            }
            Due::Tunnel => self.http_end_tunnel(key, *b"cD"),
            Due::Closing => {
                let fe = self.clients[key].frontend;
                let limit = self.cfg.frontends[fe].timeouts.client;
                let since = flow_of(&mut self.clients, key).closing_since.unwrap_or(now);
                if now >= since + limit {
                    // Nothing acknowledged for `timeout client`: reset.
                    self.http_finish(key, false);
                } else {
                    self.http_advance(key);
                }
            }
        }
    }

    /// Soft stop: idle keep-alive connections close now; the others close
    /// after their current exchange.
    pub(crate) fn http_soft_stop(&mut self) {
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| match &c.flow {
                // A connection that has not sent its first request yet is
                // about to: it is served (then closed).
                Flow::Http(h) => h.phase == Phase::Head && h.rx.is_empty() && h.requests > 0,
                Flow::Tcp(_) => false,
            })
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            self.http_finish(key, true);
        }
    }
}

/// What a passed deadline means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Idle between requests (or before the first byte): a silent close.
    Idle,
    /// A head started and did not complete: 408.
    RequestTimeout,
    /// The attempt's queue or connect timeout.
    Attempt,
    /// The client stopped sending or reading.
    Client,
    /// The server stopped answering.
    Server,
    /// A tunnel was idle.
    Tunnel,
    /// The closing linger is over, or due for a look.
    Closing,
}
