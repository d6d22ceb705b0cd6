//! The end of an HTTP stream and of its connection: counting (as the bytes
//! flow and at the end), the log line, the server connection kept or
//! closed, the closing linger, aborts and the final close.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::exchange::Step;
use super::flow_of;
use super::request::{limits, whole_request_in};
use super::{Phase, Stream};
use corral_config::HttpReuse;

use crate::access_log::{ms, HttpLog};
use crate::attempt::Failure;
use crate::bufio::Io;
use crate::client::Flow;
use crate::server_conn::{idle_usable, peek, reset_on_close, Peek};
use crate::tally::Target;
use crate::tcp::CLOSING_RECHECK;
use crate::tunnel::{linger, unacked, Delivery};
use crate::worker::{Worker, PUMP_BUDGET};

/// The longest interval between two looks at a closing connection's
/// unacknowledged bytes.
const CLOSING_RECHECK_MAX: Duration = Duration::from_secs(1);

impl Worker {
    /// The current stream's bytes (its own and its tunnel's), in and out.
    pub(super) fn http_bytes(&self, key: usize) -> Option<(u64, u64)> {
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
    pub(super) fn http_tally(&mut self, key: usize, min: u64) {
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

    /// Logs and counts a finished stream, keeps or closes its server
    /// connection, and moves the client connection on.
    pub(super) fn http_end_stream(&mut self, key: usize, mut st: Box<Stream>) {
        let now = self.now;
        // The server connection: kept for the next request if it is clean.
        // (The stream is out of the flow: its slot is given back here, its
        // server index kept for the log line.)
        // Request body bytes still in a pipe never reached the server: it
        // waits for them, so its connection cannot carry another request.
        let body_sent = flow_of(&mut self.clients, key).up.len == 0;
        if let Some(a) = st.attempt.as_mut() {
            let keep = st.keep_server
                && st.req_body.is_done()
                && body_sent
                && a.conn.is_some_and(|k| {
                    self.servers
                        .get(k)
                        .is_some_and(|s| s.tx.is_empty() && s.rx.is_empty() && !s.eof && !s.failed)
                });
            let conn = a.conn.take();
            if let Some(k) = conn {
                let shared = self.cfg.backends[a.backend].http_reuse != HttpReuse::Never;
                if !keep || self.stopping() {
                    self.close_server(k, false);
                } else if shared {
                    // Any client of this worker may take it now.
                    if !self.server_pools.put(&self.cfg, &mut self.servers, k, now) {
                        self.close_server(k, false);
                    }
                } else if let Some(old) = flow_of(&mut self.clients, key).idle_server.replace(k) {
                    self.close_server(old, false);
                }
            }
            // The slot is offered once the connection is pooled: a queued
            // request then takes that connection instead of opening one.
            if let Some(i) = a.server {
                let be = a.backend;
                self.backends[be].balancer.release(i);
                self.backends[be].cur -= 1;
                self.offer_slots(be);
            }
        }
        let keep_client = st.keep_client;
        // The fast close: the request asked for it, was read whole, nothing
        // followed it, and the answer fits in about one initial window.
        let asked_close = !st.req.keep_alive()
            && st.req_body.is_done()
            && !st.trailing
            && st.bytes_out <= FAST_CLOSE_MAX;
        self.http_close_stream(key, st);
        let h = flow_of(&mut self.clients, key);
        // (The response's is empty by now; the request's may hold a tail
        // the server did not wait for: its connection was closed above.)
        h.up.release(&mut self.pools);
        h.down.release(&mut self.pools);
        h.up.reset();
        h.down.reset();
        let stopping = self.stop_closes(key);
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
            if self.handoff_ready(key) {
                // Soft-stopping: the next request is the new generation's.
                self.hand_off(key);
            }
        } else {
            let nothing_after = h.rx.is_empty() && !h.no_handoff;
            h.start_closing(now);
            h.fast_close = asked_close && nothing_after;
        }
    }

    /// A stream is over (its server side given back): counted, logged
    /// once it left the counters (as HAProxy does), its trackings released.
    pub(super) fn http_close_stream(&mut self, key: usize, mut st: Box<Stream>) {
        // A store is published only if the response ended whole.
        let whole = st.term == *b"--";
        self.http_cache_settle(&mut st, whole);
        self.http_count(key, &st);
        self.http_log(key, &st, self.now);
        let c = &mut self.clients[key];
        for slot in 0..3u8 {
            if st.tracked_here[slot as usize] {
                self.sticky.release_slot(&mut c.sc, slot);
            }
        }
    }

    /// The stream's log line.
    pub(super) fn http_log(&mut self, key: usize, st: &Stream, now: Instant) {
        let c = &self.clients[key];
        let fe = c.frontend;
        let (backend, server, srv_conn, beconn, backend_queue) = match st.backend {
            Some(be) => {
                let b = &self.backends[be];
                let srv = st.attempt.as_ref().and_then(|a| a.server).or(st.served_by);
                (
                    self.cfg.backends[be].name.as_str(),
                    srv.map_or(if st.from_cache { "<CACHE>" } else { "<NOSRV>" }, |i| {
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
    pub(super) fn http_count(&mut self, key: usize, st: &Stream) {
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
                ms(self.now - st.started),
            );
        }
        if status.is_some_and(|s| (400..500).contains(&s)) {
            self.sticky.count_error(&c.sc);
        }
    }

    /// [`Phase::Closing`]: the last bytes out, a FIN, then what the client
    /// still sends is discarded until it closes or acknowledged all (so the
    /// close cannot reset away the answer).
    pub(super) fn http_step_closing(&mut self, key: usize) -> Step {
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
        if h.fast_close {
            h.fast_close = false;
            // Everything is in the kernel: close() sends it, then the FIN,
            // unless a byte is unread (close would reset): one last look.
            // (EOF or nothing: close() then sends a FIN, not a reset.)
            if matches!(peek(c.ep.fd), Peek::Empty | Peek::Eof) {
                self.http_finish(key, true);
                return Step::Gone;
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
                let now = self.now;
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

    /// A tunnel ended: its request's log line, then the connection closes.
    pub(super) fn http_end_tunnel(&mut self, key: usize, term: [u8; 2]) {
        let now = self.now;
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
        let now = self.now;
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
        h.up.release(&mut self.pools);
        h.down.release(&mut self.pools);
        if let Some(mut st) = h.stream.take() {
            if let Some(u) = st.cache.take() {
                self.caches.settle(u, false);
            }
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
        if !kept
            || self
                .servers
                .get_mut(skey)
                .is_some_and(|s| idle_usable(s, false))
        {
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
            Phase::Handing => {
                // The receiver may hold it already: ours closes quietly.
                let mut c = self.clients.remove(key);
                self.sticky.release(&mut c.sc, 0, 0);
                let fe = c.frontend;
                drop(c);
                return self.leave(fe);
            }
            Phase::Head => b'R',
            Phase::Exchange => b'D',
            Phase::Tunnel | Phase::Closing => b'D',
        };
        self.http_abort(key, [b'K', at]);
    }
}

/// Answers at most this large may take the fast close (about one initial
/// congestion window: what a late client byte's reset could still cut).
const FAST_CLOSE_MAX: u64 = 16 * 1024;
