//! HTTP timeouts, as HAProxy applies them:
//! * `http_request`: a complete head must arrive in time once its first
//!   byte did (408, slowloris); an empty first connection is closed
//!   silently when it runs out;
//! * `http_keep_alive`: idle time between requests, then a silent close (a
//!   408 there would race the client's next request);
//! * `client`: the client stops sending a body or reading the response
//!   (not while what it sent waits for a slow server: then `server` runs);
//! * `server`: the server stops answering (504 before the head);
//! * `connect` and `queue`: the attempt's ([`crate::attempt`]);
//! * `tunnel`: after a protocol switch;
//! * the closing linger: `client` without the client acknowledging more.
//!
//! Each connection arms the one deadline that matters now.

use std::time::Instant;

use corral_http::h1::body::ends_within;

use super::exchange::Intake;
use super::flow_of;
use super::Phase;
use crate::attempt::AttemptPhase;
use crate::client::Flow;
use crate::worker::Worker;

impl Worker {
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
                // Body data in the server's buffer, ready to go, waits
                // for the client alone (the relay sends it straight from
                // there, see `http_relay_body`).
                let server_rx = st
                    .connected_server()
                    .map_or(&[][..], |k| self.servers[k].rx.as_slice());
                let held_for_client = st.resp_started
                    && !h.down.active()
                    && st.resp_body.raw_data_left().is_some()
                    && !server_rx.is_empty();
                // The client is waited for while corral would take more of
                // its request; not while what it sent waits for the server
                // (as HAProxy disarms the client timeout while its buffer
                // is full).
                let waiting_client = (!st.request_received(h.rx.as_slice())
                    && self.client_intake(key) != Intake::Full)
                    || !h.tx.is_empty()
                    || h.down.len > 0
                    || held_for_client;
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
                // (Nor while bulk data waits for the client to take what
                // is queued before a splice can start.)
                let splice_waits = self.splices(key)
                    && st.resp_started
                    && (!h.tx.is_empty() || !server_rx.is_empty())
                    && h.down.leaves_to_splice(&st.resp_body, 0);
                // Nor once the rest of the body is in corral's hands: the
                // server owes nothing more (checked last: for small chunks
                // it reads the buffer).
                let reading_server = !(st.resp_started && st.resp_body.is_done())
                    && h.tx.len() < super::response::TX_HIGH
                    && server_rx.len()
                        < super::response::server_rx_cap(
                            super::request::limits(self).max_head,
                            st.resp_started,
                        )
                    && h.down.len == 0
                    && !splice_waits
                    && !(st.resp_started && ends_within(&st.resp_body, server_rx));
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
            Phase::Handing => None,
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
    pub(super) fn http_rearm(&mut self, key: usize) {
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

    /// Soft stop: connections between requests go to the new generation
    /// when a handoff channel exists ([`crate::handoff`]); else idle
    /// keep-alive ones close now. The others go (or close) after their
    /// current exchange.
    pub(crate) fn http_soft_stop(&mut self) {
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            if self.handoff_ready(key) {
                self.hand_off(key);
                continue;
            }
            let idle = match &self.clients[key].flow {
                // A connection that has not sent its first request yet is
                // about to: it is served (then closed).
                Flow::Http(h) => h.phase == Phase::Head && h.rx.is_empty() && h.requests > 0,
                Flow::Tcp(_) => false,
            };
            if idle {
                self.http_finish(key, true);
            }
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
