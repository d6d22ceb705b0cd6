//! The server's side of a stream: the request head and body on their way
//! out, the response head on its way back (interim responses, the switch to
//! a tunnel, `http-response` rules, the hop-by-hop rule), and the body.

use corral_http::h1::encode::{self, HopByHop};
use corral_http::h1::{parse_response, Body, Framing, Parsed, Piece, Response, Version};

use super::exchange::Sub;
use super::flow_of;
use super::request::{apply_header, limits, whole_request_in};
use super::samples::HttpSamples;
use super::splicing::SpliceError;
use super::{errors, Phase, Relay};
use crate::access_log::ms;
use crate::attempt::AttemptPhase;
use crate::bufio::{send_pair, Io};
use crate::client::Flow;
use crate::rules::applies;
use crate::tunnel::Tunnel;
use crate::worker::{Worker, PUMP_BUDGET};

/// Bytes queued toward a socket before its source is read no more.
pub(super) const TX_HIGH: usize = 64 * 1024;

/// Bytes read from a server at once for a head, and for body data (once
/// the head is through): larger body reads take fewer calls per byte, and
/// the relay sends them on straight from the read buffer.
const SERVER_READ_HEAD: usize = 16 * 1024;
const SERVER_READ_BODY: usize = 64 * 1024;

/// Bytes a server connection's read buffer holds before the server is read
/// no more: a whole response head and at least one read; for the body
/// (`body`: the head is through) one read, since its framing is parsed as
/// it streams and needs no more in hand.
pub(super) fn server_rx_cap(max_head: usize, body: bool) -> usize {
    if body {
        SERVER_READ_BODY
    } else {
        max_head.max(SERVER_READ_HEAD)
    }
}

/// Body data in hand that is sent straight from its source buffer
/// (behind `queued` bytes of the destination's buffer, in one call) rather
/// than copied into that buffer. Small data behind queued bytes is copied:
/// then pieces (small chunks and their framing) share one send, and a
/// syscall costs more than the copy.
const DIRECT_MIN: usize = 16 * 1024;

/// The body bytes at the start of `src` to send straight (see
/// [`DIRECT_MIN`]), if `body` is in its data and they are worth it.
fn direct_data<'a>(body: &Body, src: &'a [u8], queued: usize) -> Option<&'a [u8]> {
    let left = body.raw_data_left()?;
    let data = &src[..left.min(src.len() as u64) as usize];
    (queued == 0 || data.len() >= DIRECT_MIN).then_some(data)
}

fn server_read(body: bool) -> usize {
    if body {
        SERVER_READ_BODY
    } else {
        SERVER_READ_HEAD
    }
}

impl Worker {
    /// Queues the request head for the server connection (once per
    /// connection), then body bytes as the framing machine accepts them,
    /// and writes what is queued.
    pub(super) fn http_send_request(&mut self, key: usize) -> Sub {
        let now = self.now;
        let splice = self.splices(key);
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Sub::Still;
        };
        let Some(st) = h.stream.as_mut().filter(|s| !s.local) else {
            return Sub::Still;
        };
        let Some((skey, phase)) = st
            .attempt
            .as_ref()
            .and_then(|a| a.conn.map(|k| (k, a.phase)))
        else {
            return Sub::Still;
        };
        let s = &mut self.servers[skey];
        let mut moved = false;
        if st.head_for != Some(s.serial) {
            st.head_for = Some(s.serial);
            s.requests += 1;
            write_request_head(s.tx.tail(), &st.req);
            // A replay: the body bytes the failed connection took go again.
            if let Some(sent) = &st.sent_body {
                s.tx.extend(sent);
            }
            moved = true;
        }
        // The body, validated as it goes: a bad chunk stops it here. Only
        // once connected: bytes queued to a connection that then fails
        // would be lost, and the retry would send the head with a body
        // cut short (the rest parsed by the server as a request).
        while phase == AttemptPhase::Connected
            && s.tx.len() < TX_HIGH
            && !st.req_body.is_done()
            && !st.early_response
            && !st.server_write_failed
            && !h.rx.is_empty()
        {
            // Body data goes from the client's buffer straight to the
            // server, behind what is queued (as responses do, see
            // `http_relay_body`).
            if let Some(data) = direct_data(&st.req_body, h.rx.as_slice(), s.tx.len()) {
                if !s.ep.writable {
                    break;
                }
                let queued = s.tx.len();
                match send_pair(&mut s.ep, s.tx.as_slice(), data) {
                    Io::Done(n) => {
                        s.tx.consume(n.min(queued));
                        let n = n.saturating_sub(queued);
                        st.keep_for_replay(&data[..n]);
                        st.req_body.skip_data(n as u64);
                        h.rx.consume(n);
                        st.bytes_in += n as u64;
                        st.server_active = now;
                        moved = true;
                        continue;
                    }
                    Io::Failed(_) => {
                        // As a failed write below: only the answer matters.
                        st.server_write_failed = true;
                        moved = true;
                    }
                    Io::Blocked | Io::Eof => {}
                }
                break;
            }
            // Chunk framing goes out canonical (see `Body::step_into`).
            let before = s.tx.len();
            match st.req_body.step_into(h.rx.as_slice(), s.tx.tail()) {
                Ok(Piece::Data(n)) | Ok(Piece::Meta(n)) => {
                    st.keep_for_replay(&s.tx.as_slice()[before..]);
                    h.rx.consume(n);
                    st.bytes_in += n as u64;
                    moved = true;
                }
                Ok(Piece::Done) | Ok(Piece::NeedMore) => break,
                Err(e) => {
                    log::debug!("request body from {} refused: {e}", c.peer);
                    let fe = c.frontend;
                    self.rows.frontend_bad_request(fe);
                    self.http_local_error(key, 400, *b"PR");
                    return Sub::Changed;
                }
            }
        }
        // Bulk body data, nothing buffered either side: spliced. (A spliced
        // body cannot be replayed: it is not kept.)
        let buffered = !h.rx.is_empty() || !s.tx.is_empty();
        let splice = splice && !st.keeps_for_replay();
        if phase == AttemptPhase::Connected
            && !st.early_response
            && !st.server_write_failed
            && (h.up.active()
                || (!st.req_body.is_done() && splice && h.up.may_start(&st.req_body, buffered)))
        {
            match h.up.step(
                &mut st.req_body,
                &mut c.ep,
                &mut s.ep,
                &mut self.pools,
                PUMP_BUDGET,
            ) {
                Ok(Some(sp)) => {
                    st.bytes_in += sp.read as u64;
                    if sp.read > 0 {
                        // Spliced bytes are not kept: no replay from now.
                        st.sent_body = None;
                        h.client_active = now;
                    }
                    if sp.written > 0 {
                        st.server_active = now;
                    }
                    if sp.eof {
                        h.client_eof = true;
                    }
                    moved |= sp.moved();
                }
                // No pipe: copied from now on, by the next step.
                Ok(None) => moved = true,
                Err(SpliceError::Source) => {
                    self.http_abort(key, *b"CD");
                    return Sub::Gone;
                }
                Err(SpliceError::Destination) => {
                    // As a failed write: only the server's answer matters.
                    st.server_write_failed = true;
                    h.up.release(&mut self.pools);
                    moved = true;
                }
            }
        }
        if !s.tx.is_empty() {
            if phase == AttemptPhase::Connecting {
                // Speculative: on a near server the handshake is done by now.
                s.ep.writable = true;
            }
            let more = !st.req_body.is_done() && !h.rx.is_empty();
            match s.tx.write_to(&mut s.ep, more) {
                Io::Done(_) => {
                    moved = true;
                    st.server_active = now;
                    if phase == AttemptPhase::Connecting {
                        self.connected(key);
                    }
                }
                Io::Blocked | Io::Eof => {}
                Io::Failed(_) if phase == AttemptPhase::Connecting => {
                    self.connect_failed(key, false);
                    return Sub::Changed;
                }
                Io::Failed(_) => {
                    // The server stopped reading (it may have answered
                    // early): only its answer matters now.
                    st.server_write_failed = true;
                    s.tx.clear();
                    moved = true;
                }
            }
        }
        let h = flow_of(&mut self.clients, key);
        let up_empty = h.up.len == 0;
        let (st, s) = match (&mut h.stream, self.servers.get(skey)) {
            (Some(st), Some(s)) => (st, s),
            _ => return Sub::Changed,
        };
        if st.sent_at.is_none() && st.req_body.is_done() && s.tx.is_empty() && up_empty {
            st.sent_at = Some(now);
        }
        if moved {
            Sub::Moved
        } else {
            Sub::Still
        }
    }

    /// Reads what the server sent, while there is room for it.
    pub(super) fn http_read_server(&mut self, key: usize) -> Sub {
        let now = self.now;
        let max_head = limits(self).max_head;
        let splice = self.splices(key);
        let h = flow_of(&mut self.clients, key);
        let Some(st) = h.stream.as_mut() else {
            return Sub::Still;
        };
        let cap = server_rx_cap(max_head, st.resp_started);
        let Some(skey) = st.connected_server() else {
            return Sub::Still;
        };
        let s = &mut self.servers[skey];
        if h.down.active()
            || (splice && st.resp_started && h.down.leaves_to_splice(&st.resp_body, s.rx.len()))
        {
            // The body splices (or will, once what is buffered is out):
            // the splice reads the server. While the client has bytes to
            // take first, the server is not the one waited for.
            if !h.tx.is_empty() || h.down.len > 0 || !s.rx.is_empty() {
                st.server_active = now;
            }
            return Sub::Still;
        }
        if s.rx.len() >= cap || h.tx.len() >= TX_HIGH {
            // Waiting for the client to read, not for the server: the
            // server's clock starts again when corral reads it again.
            st.server_active = now;
            return Sub::Still;
        }
        if s.eof || !s.ep.readable {
            return Sub::Still;
        }
        let room = cap - s.rx.len();
        match s
            .rx
            .read_from(&mut s.ep, room.min(server_read(st.resp_started)))
        {
            Io::Done(_) => {
                st.server_active = now;
                Sub::Moved
            }
            Io::Eof => {
                s.eof = true;
                Sub::Moved
            }
            Io::Blocked => Sub::Still,
            Io::Failed(_) => {
                s.failed = true;
                Sub::Moved
            }
        }
    }

    /// The response: its head (interim ones passed on, a 101 switching to
    /// a tunnel, the final one through the rules), then its body.
    pub(super) fn http_response(&mut self, key: usize) -> Sub {
        let limits = limits(self);
        let (fe, peer) = (self.clients[key].frontend, self.clients[key].peer);
        let h = flow_of(&mut self.clients, key);
        let Some(st) = h.stream.as_mut() else {
            return Sub::Still;
        };
        let Some(skey) = st.connected_server() else {
            return Sub::Still;
        };
        if st.local {
            return Sub::Still;
        }
        let s = &mut self.servers[skey];
        if st.resp_started {
            return self.http_relay_body(key, skey);
        }
        if s.rx.is_empty() {
            if s.eof || s.failed {
                if self.http_replay(key) {
                    return Sub::Changed;
                }
                return self.http_bad_gateway(
                    key,
                    skey,
                    "the server closed before answering",
                    *b"SH",
                );
            }
            return Sub::Still;
        }
        let head = st.req.method == corral_http::h1::Method::Head;
        let resp = match parse_response(s.rx.as_slice(), &limits, head) {
            Ok(Parsed::Partial) if s.eof || s.failed => {
                return self.http_bad_gateway(
                    key,
                    skey,
                    "the server closed inside its response head",
                    *b"SH",
                );
            }
            Ok(Parsed::Partial) => return Sub::Still,
            Err(rej) => {
                log::debug!("invalid response refused: {rej}");
                if let Some(be) = st.backend {
                    let srv = st.attempt.as_ref().and_then(|a| a.server);
                    self.errors
                        .response(fe, be, srv, peer, rej.reason, s.rx.as_slice());
                }
                return self.http_bad_gateway(key, skey, rej.reason, *b"PH");
            }
            Ok(Parsed::Complete(mut resp, n)) => {
                s.rx.consume(n);
                // As for requests: what the server named in `Connection`
                // ends here, before the rules add fields.
                HopByHop::strip_named(&mut resp.fields);
                resp
            }
        };
        let now = self.now;
        if st.t_response < 0 {
            st.t_response = ms(now - st.sent_at.unwrap_or(now));
        }
        if resp.status == 101 {
            if !st.req.upgrade {
                return self.http_bad_gateway(key, skey, "101 without an upgrade request", *b"PH");
            }
            if !st.req_body.is_done() || !s.tx.is_empty() || h.up.len > 0 {
                // The protocol switches after the request: a 101 while its
                // body is still on its way cannot be told apart from it.
                return self.http_bad_gateway(key, skey, "101 before the request was sent", *b"PH");
            }
            return self.http_switch(key, skey, resp);
        }
        if resp.is_interim() {
            // 100 Continue and the like: a 1.1 client gets them, a 1.0 one
            // would not understand them.
            if st.req.version == Version::Http11 {
                let before = h.tx.len();
                write_response_head(
                    h.tx.tail(),
                    &resp,
                    false,
                    Relay::Verbatim,
                    Version::Http11,
                    false,
                );
                st.bytes_out += (h.tx.len() - before) as u64;
            }
            return Sub::Moved;
        }
        // A Content-Length body from a server still there cannot fail on
        // the way (no chunk framing to reject, no end to find short), so
        // relaying it now never drops the head with an abort.
        let clean = matches!(resp.framing, Framing::Length(_))
            && !self.servers[skey].eof
            && !self.servers[skey].failed;
        self.http_final_head(key, skey, resp);
        if clean {
            // The body read with the head goes out with it: one write and
            // one segment fewer.
            if let Sub::Gone = self.http_relay_body(key, skey) {
                return Sub::Gone;
            }
        }
        Sub::Moved
    }

    /// The final response head: rules, keep-alive decisions, then queued.
    fn http_final_head(&mut self, key: usize, skey: usize, mut resp: Response) {
        // Stored as the server sent it: before the rules.
        self.http_cache_begin(key, &resp);
        let stopping = self.stop_closes(key);
        let head_limits = limits(self);
        let c = &mut self.clients[key];
        let fe = c.frontend;
        let peer = c.peer;
        let Flow::Http(h) = &mut c.flow else { return };
        let Some(st) = h.stream.as_mut() else { return };
        let rs = &self.cfg.frontends[fe].ruleset;
        response_rules(rs, peer, &st.req, &self.sticky, &c.sc, &mut resp);
        let client = st.req.version;
        let relay = if resp.framing == Framing::Chunked && client == Version::Http10 {
            Relay::Dechunk
        } else {
            Relay::Verbatim
        };
        // A body the client could not delimit without the close, or a
        // request whose body the server did not wait for: the connection
        // ends with this exchange.
        st.early_response = !st.req_body.is_done();
        let delimited = match resp.framing {
            Framing::UntilClose => false,
            Framing::Chunked => relay == Relay::Verbatim,
            _ => true,
        };
        // After the client's FIN, the connection goes on only for requests
        // it sent before (pipelined, already here).
        let more_after_fin = h.client_eof && whole_request_in(h.rx.as_slice(), &head_limits);
        st.keep_client = st.req.keep_alive()
            && delimited
            && !st.early_response
            && (!h.client_eof || more_after_fin)
            && !stopping;
        st.keep_server = resp.keep_alive() && !st.early_response && !st.server_write_failed;
        st.relay = relay;
        st.status = Some(resp.status);
        st.resp_started = true;
        st.resp_body = Body::new(resp.framing);
        let before = h.tx.len();
        write_response_head(h.tx.tail(), &resp, !st.keep_client, relay, client, false);
        st.bytes_out += (h.tx.len() - before) as u64;
        let _ = skey;
    }

    /// Moves response body bytes from the server's buffer to the client's,
    /// as the framing machine accepts them.
    fn http_relay_body(&mut self, key: usize, skey: usize) -> Sub {
        let splice = self.splices(key);
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else {
            return Sub::Still;
        };
        let Some(st) = h.stream.as_mut() else {
            return Sub::Still;
        };
        let s = &mut self.servers[skey];
        let mut moved = false;
        while h.tx.len() < TX_HIGH
            && !s.rx.is_empty()
            && !st.resp_body.is_done()
            && !h.down.active()
        {
            // Body data goes from the server's buffer straight to the
            // client, behind what is queued for it (a head, chunk framing)
            // in the same call, not through the client's buffer (a copy
            // per byte saved). What the client does not take waits in the
            // server's buffer: the client is then the one waited for (see
            // `timeouts`).
            if let Some(data) = direct_data(&st.resp_body, s.rx.as_slice(), h.tx.len()) {
                if !c.ep.writable {
                    break;
                }
                let queued = h.tx.len();
                match send_pair(&mut c.ep, h.tx.as_slice(), data) {
                    Io::Done(n) => {
                        h.tx.consume(n.min(queued));
                        let n = n.saturating_sub(queued);
                        super::cached::store_body(&mut self.caches, st, &data[..n]);
                        st.resp_body.skip_data(n as u64);
                        s.rx.consume(n);
                        st.bytes_out += n as u64;
                        h.client_active = self.now;
                        moved = true;
                        continue;
                    }
                    Io::Failed(_) => {
                        self.http_abort(key, *b"CD");
                        return Sub::Gone;
                    }
                    Io::Blocked | Io::Eof => break,
                }
            }
            let before = h.tx.len();
            // Verbatim: chunk framing canonical; Dechunk: payload only.
            let piece = match st.relay {
                Relay::Verbatim => st.resp_body.step_into(s.rx.as_slice(), h.tx.tail()),
                Relay::Dechunk => st.resp_body.step(s.rx.as_slice()).inspect(|p| {
                    if let Piece::Data(n) = p {
                        h.tx.extend(&s.rx.as_slice()[..*n]);
                    }
                }),
            };
            match piece {
                Ok(Piece::Data(n)) => {
                    super::cached::store_body(&mut self.caches, st, &s.rx.as_slice()[..n]);
                    s.rx.consume(n);
                    st.bytes_out += (h.tx.len() - before) as u64;
                    moved = true;
                }
                Ok(Piece::Meta(n)) => {
                    s.rx.consume(n);
                    st.bytes_out += (h.tx.len() - before) as u64;
                    moved = true;
                }
                Ok(Piece::Done) | Ok(Piece::NeedMore) => break,
                Err(e) => {
                    log::debug!("invalid response body: {e}");
                    self.rows
                        .response_error(st.backend, st.attempt.as_ref().and_then(|a| a.server));
                    self.http_abort(key, *b"SD");
                    return Sub::Gone;
                }
            }
        }
        // Bulk body data, nothing buffered either side: spliced.
        let buffered = !s.rx.is_empty() || !h.tx.is_empty();
        if h.down.active() || (splice && h.down.may_start(&st.resp_body, buffered) && !s.eof) {
            match h.down.step(
                &mut st.resp_body,
                &mut s.ep,
                &mut c.ep,
                &mut self.pools,
                PUMP_BUDGET,
            ) {
                Ok(Some(sp)) => {
                    let now = self.now;
                    st.bytes_out += sp.written as u64;
                    if sp.read > 0 {
                        st.server_active = now;
                    }
                    if sp.written > 0 {
                        h.client_active = now;
                    }
                    if sp.eof {
                        s.eof = true;
                    }
                    moved |= sp.moved();
                }
                // No pipe: copied from now on, by the next step.
                Ok(None) => moved = true,
                Err(SpliceError::Source) => s.failed = true,
                Err(SpliceError::Destination) => {
                    self.http_abort(key, *b"CD");
                    return Sub::Gone;
                }
            }
        }
        if !st.resp_body.is_done() && s.rx.is_empty() && h.down.len == 0 && (s.eof || s.failed) {
            if st.resp_body.until_close() && !s.failed {
                let _ = st.resp_body.on_eof();
                st.keep_server = false;
                return Sub::Moved;
            }
            // Truncated: the client cannot be told but by the close.
            self.rows
                .response_error(st.backend, st.attempt.as_ref().and_then(|a| a.server));
            self.http_abort(key, *b"SD");
            return Sub::Gone;
        }
        if moved {
            Sub::Moved
        } else {
            Sub::Still
        }
    }

    /// A reused server connection closed by the server before it answered
    /// (its keep-alive timeout crossed the request): a request that can be
    /// sent again (idempotent, nothing of an answer received, and what was
    /// sent of its body still in corral's hands) goes to a fresh
    /// connection, once. Returns true if it does.
    fn http_replay(&mut self, key: usize) -> bool {
        let h = flow_of(&mut self.clients, key);
        let Some(st) = h.stream.as_mut() else {
            return false;
        };
        let retries = st.backend.map_or(0, |b| self.cfg.backends[b].retries);
        // No byte of an answer yet (not even an interim one), and a retry
        // left: `retries = 0` means none, as for connects.
        let replayable = st
            .attempt
            .as_ref()
            .is_some_and(|a| a.reused && a.retries < retries)
            && !st.resp_started
            && st.status.is_none()
            && st.t_response < 0
            && st.req.method.is_idempotent()
            && (st.sent_body.is_some() || matches!(st.req.framing, Framing::None));
        if !replayable {
            return false;
        }
        st.head_for = None;
        st.sent_at = None;
        st.server_write_failed = false;
        log::debug!("a kept server connection closed before answering: the request goes again");
        self.release_attempt(key, false);
        let Some(a) = self.attempt_mut(key) else {
            return false;
        };
        a.phase = AttemptPhase::Idle;
        a.reused = false;
        // On a new connection: another idle one may be as stale.
        a.reuse = crate::server_pool::Reuse::Own;
        a.t_connect = None;
        a.retries += 1;
        let be = a.backend;
        self.rows.retry(be);
        self.assign(key);
        true
    }

    /// The response cannot be used: 502 if nothing went to the client yet.
    fn http_bad_gateway(&mut self, key: usize, skey: usize, why: &str, term: [u8; 2]) -> Sub {
        log::debug!("bad gateway: {why}");
        let h = flow_of(&mut self.clients, key);
        let (be, srv) = match h.stream.as_ref() {
            Some(st) => (st.backend, st.attempt.as_ref().and_then(|a| a.server)),
            None => (None, None),
        };
        self.rows.response_error(be, srv);
        let _ = skey;
        self.http_local_error(key, 502, term);
        Sub::Changed
    }

    /// `101 Switching Protocols` to an upgrade request: the head goes to
    /// the client, then bytes both ways as they are (`timeout.tunnel`).
    fn http_switch(&mut self, key: usize, skey: usize, resp: Response) -> Sub {
        let now = self.now;
        let h = flow_of(&mut self.clients, key);
        let Some(st) = h.stream.as_mut() else {
            return Sub::Still;
        };
        st.status = Some(101);
        st.resp_started = true;
        st.keep_client = false;
        st.keep_server = false;
        // Everything queued for the client goes through the tunnel now,
        // which counts it as it is written.
        st.bytes_out -= h.tx.len() as u64;
        let mut head = h.tx.take();
        write_response_head(
            &mut head,
            &resp,
            false,
            Relay::Verbatim,
            Version::Http11,
            true,
        );
        let s = &mut self.servers[skey];
        head.extend_from_slice(s.rx.as_slice());
        s.rx.clear();
        let mut t = Tunnel::new(false, now);
        t.s2c.preload(&head, &mut self.pools);
        // Toward the server: what was queued for it and not written yet,
        // then what the client sent after its request; and the client's
        // FIN if it came already.
        let mut up = s.tx.take();
        up.extend_from_slice(h.rx.as_slice());
        t.c2s.preload(&up, &mut self.pools);
        t.c2s.eof = h.client_eof;
        h.rx.clear();
        h.tunnel = Some(t);
        h.phase = Phase::Tunnel;
        // A tunnel's client may send without waiting for an answer (frames
        // in a row): its ACKs go at once, as on a TCP frontend.
        let _ = crate::server_conn::set_quickack(&self.clients[key].sock, true);
        Sub::Changed
    }
}

impl Worker {
    /// Whether client `key`'s current stream may splice its bodies: the
    /// frontend's and the backend's `splice`.
    pub(super) fn splices(&self, key: usize) -> bool {
        let Some(c) = self.clients.get(key) else {
            return false;
        };
        let Flow::Http(h) = &c.flow else { return false };
        // A response being stored is copied: its bytes go to the cache too.
        self.cfg.frontends[c.frontend].splice
            && h.stream.as_ref().is_some_and(|s| {
                s.backend.is_some_and(|b| self.cfg.backends[b].splice)
                    && !matches!(s.cache, Some(crate::cache::CacheUse::Storing { .. }))
            })
    }
}

/// The request head toward a server: HTTP/1.1, hop-by-hop fields removed
/// (an upgrade keeps `Upgrade` and says `Connection: upgrade`), the Host of
/// an absolute-form target made its authority.
fn write_request_head(out: &mut Vec<u8>, req: &corral_http::h1::Request) {
    encode::request_line(out, req.method_str(), req.target(), Version::Http11);
    let hop = HopByHop::fixed(req.upgrade);
    let absolute = req.is_absolute_form();
    let mut host_written = false;
    for (n, v) in req.fields.iter() {
        if hop.strips(n) || encode::is_framing_field(n) {
            continue;
        }
        if n.eq_ignore_ascii_case(b"host") {
            if host_written {
                continue;
            }
            host_written = true;
            if absolute {
                encode::field(out, n, req.host().unwrap_or("").as_bytes());
                continue;
            }
        }
        encode::field(out, n, v);
    }
    if !host_written {
        // An absolute-form target's authority, or (an HTTP/1.0 request
        // without Host) an empty Host: HTTP/1.1 requires the field.
        encode::field(out, b"Host", req.host().unwrap_or("").as_bytes());
    }
    encode::framing_fields(out, req.framing, &req.fields);
    if req.upgrade {
        encode::field(out, b"Connection", b"upgrade");
    }
    encode::end_head(out);
}

/// Runs the frontend's `http-response` rules on `resp` (a server's answer
/// or a cache hit alike).
pub(super) fn response_rules(
    rs: &corral_config::RuleSet,
    peer: std::net::SocketAddr,
    req: &corral_http::h1::Request,
    sticky: &crate::stick::Sticky,
    sc: &crate::stick::StickCounters,
    resp: &mut Response,
) {
    for rule in &rs.http_response {
        let s = HttpSamples {
            peer,
            local_port: 0,
            req,
            sticky,
            sc,
        };
        if applies(rs, rule.cond.as_ref(), &s) {
            apply_header(&mut resp.fields, &rule.action);
        }
    }
}

/// A response head toward the client.
pub(super) fn write_response_head(
    out: &mut Vec<u8>,
    resp: &Response,
    close: bool,
    relay: Relay,
    client: Version,
    switching: bool,
) {
    encode::status_line(out, Version::Http11, resp.status, resp.reason());
    let hop = HopByHop::fixed(switching);
    let no_body_codes = resp.status < 200 || resp.status == 204 || resp.status == 304;
    // A body framed by length or chunks gets its framing fields written
    // from the framing read (chunked only when relayed as it is); a
    // bodiless answer (HEAD, 304) keeps the Content-Length it describes.
    let framed = match resp.framing {
        Framing::Length(_) => true,
        Framing::Chunked => relay == Relay::Verbatim,
        Framing::None | Framing::UntilClose => false,
    };
    for (n, v) in resp.fields.iter() {
        if hop.strips(n) {
            continue;
        }
        if (framed || resp.framing == Framing::Chunked) && encode::is_framing_field(n) {
            continue;
        }
        let te = n.eq_ignore_ascii_case(b"transfer-encoding");
        if te && (relay == Relay::Dechunk || no_body_codes) {
            continue;
        }
        if no_body_codes && resp.status != 304 && n.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        encode::field(out, n, v);
    }
    if framed {
        encode::framing_fields(out, resp.framing, &resp.fields);
    }
    if switching {
        encode::field(out, b"Connection", b"upgrade");
    } else if !resp.is_interim() {
        errors::connection_field(out, close, client);
    }
    encode::end_head(out);
}
