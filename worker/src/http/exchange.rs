//! The driver of an HTTP client connection: each call moves what the
//! sockets' readiness allows, phase by phase, under a per-call bound, then
//! arms the one deadline that matters now.

//! (the deadlines in [`super::timeouts`], the end of a stream in
//! [`super::ending`]).

use super::flow_of;
use super::request::limits;
use super::Phase;
use crate::attempt::AttemptPhase;
use crate::bufio::Io;
use crate::client::Flow;
use crate::tally::FLUSH_BYTES;
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

/// How an exchange takes the client's next bytes ([`Worker::client_intake`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Intake {
    /// Read into its buffer, at most this many bytes.
    Read(usize),
    /// Spliced by the request body's pipe.
    Splice,
    /// Not taken: the buffer or the pipe is full, or a splice waits for
    /// what is buffered to reach the server.
    Full,
}

/// Steps per call before other connections get a turn.
const STEPS: usize = 64;
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;

impl Worker {
    /// Makes whatever progress client `key`'s sockets allow.
    pub(crate) fn http_advance(&mut self, key: usize) {
        let outer = self.advancing.replace(key);
        self.http_drive(key);
        self.advancing = outer;
    }

    fn http_drive(&mut self, key: usize) {
        for _ in 0..STEPS {
            let step = match flow_of(&mut self.clients, key).phase {
                // Not this worker's to touch until the receiver answers.
                Phase::Handing => return,
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
                    let now = self.now;
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
        sub!(self.http_cache_send(key));
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

    /// How client `key`'s bytes would be taken during an exchange, were
    /// they there: read into its buffer, spliced, or not at all because
    /// what it sent before waits for the server.
    pub(super) fn client_intake(&self, key: usize) -> Intake {
        let Some(Flow::Http(h)) = self.clients.get(key).map(|c| &c.flow) else {
            return Intake::Full;
        };
        if h.up.active() {
            return if h.up.blocked() {
                Intake::Full
            } else {
                Intake::Splice
            };
        }
        let bulk = self.splices(key)
            && h.stream.as_ref().is_some_and(|s| {
                !s.keeps_for_replay() && h.up.leaves_to_splice(&s.req_body, h.rx.len())
            });
        if bulk {
            // A splice starts once nothing is buffered on either side, and
            // never to a server that stopped taking the request.
            let st = h.stream.as_ref();
            let server_tx = st
                .and_then(|s| s.connected_server())
                .map_or(0, |k| self.servers[k].tx.len());
            let failed = st.is_some_and(|s| s.server_write_failed);
            return if h.rx.is_empty() && server_tx == 0 && !failed {
                Intake::Splice
            } else {
                Intake::Full
            };
        }
        let cap = limits(self).max_head.max(READ_CHUNK);
        if h.rx.len() < cap {
            Intake::Read(cap - h.rx.len())
        } else {
            Intake::Full
        }
    }

    /// Reads the client during an exchange: the request body, pipelined
    /// requests (kept for later), or its FIN.
    fn http_read_client(&mut self, key: usize) -> Sub {
        let now = self.now;
        // (A splicing body, or one about to, is read by the splice.)
        let Intake::Read(room) = self.client_intake(key) else {
            return Sub::Still;
        };
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Sub::Gone;
        };
        if h.client_eof || !c.ep.readable {
            return Sub::Still;
        }
        let room = room.min(READ_CHUNK);
        match h.rx.read_from(&mut c.ep, room) {
            Io::Done(_) => {
                h.client_active = now;
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
        let now = self.now;
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Sub::Gone;
        };
        if h.tx.is_empty() || !c.ep.writable {
            return Sub::Still;
        }
        match h.tx.write_to(&mut c.ep, false) {
            Io::Done(_) => {
                h.client_active = now;
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
        let done = h.stream.as_ref().is_some_and(|s| {
            s.resp_started
                && s.resp_body.is_done()
                && !matches!(s.cache, Some(crate::cache::CacheUse::Sending { .. }))
        }) && h.tx.is_empty()
            && h.down.len == 0;
        if !done {
            return Sub::Still;
        }
        let st = h.stream.take().expect("checked");
        self.http_end_stream(key, st);
        Sub::Changed
    }

    /// [`Phase::Tunnel`]: bytes both ways until both FINs.
    fn http_tunnel(&mut self, key: usize) -> Step {
        let now = self.now;
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
}
