//! A request head arrives: parse it, run the frontend's `http-request`
//! rules, pick the backend, and either answer locally or get a server.

use std::time::{Instant, SystemTime};

use corral_config::{Balance, HeaderAction, HttpRequestAction, TrackKey};
use corral_http::h1::encode::HopByHop;
use corral_http::h1::{
    body, parse_request, Body, Framing, Limits, Parsed, Reject, Request, Version,
};

use super::errors;
use super::exchange::Step;
use super::samples::HttpSamples;
use super::{flow_of, Phase, Relay, Stream};
use crate::access_log::ms;
use crate::attempt::{Attempt, AttemptPhase};
use crate::client::Flow;
use crate::rules::applies;
use crate::server_conn::{idle_usable, set_quickack};
use crate::stick::TrackValue;
use crate::worker::Worker;

/// What the `http-request` rules decided.
enum Verdict {
    /// Go on to a backend.
    Continue,
    /// `deny`: answer with this status.
    Deny(u16),
    /// `return`.
    Return {
        status: u16,
        content_type: Option<String>,
        body: Option<String>,
    },
    /// `redirect`.
    Redirect(corral_config::Redirect),
}

/// Whether `rx` starts with a whole request (head and body), or with a
/// head that will be refused (answered, then closed): what a client that
/// already sent its FIN can still be served.
pub(super) fn whole_request_in(rx: &[u8], limits: &Limits) -> bool {
    match parse_request(rx, limits) {
        Ok(Parsed::Complete(req, n)) => body::ends_within(&Body::new(req.framing), &rx[n..]),
        Ok(Parsed::Partial) => false,
        Err(_) => true,
    }
}

/// The head limits of the configuration.
pub(super) fn limits(w: &Worker) -> Limits {
    let l = w.cfg.global.http_limits;
    Limits {
        max_head: l.max_head,
        max_headers: l.max_headers,
    }
}

impl Worker {
    /// In [`Phase::Head`]: parses what the client sent so far.
    pub(super) fn http_head(&mut self, key: usize) -> Step {
        let limits = limits(self);
        let h = flow_of(&mut self.clients, key);
        // Empty lines before a request line are ignored (RFC 9112 §2.2:
        // some clients send a CRLF after a POST body); they start no head
        // and its timer.
        let blank =
            h.rx.as_slice()
                .chunks_exact(2)
                .take_while(|p| *p == b"\r\n")
                .count();
        if blank > 0 {
            h.rx.consume(2 * blank);
            if h.rx.is_empty() {
                h.head_since = None;
            }
            let fe = self.clients[key].frontend;
            self.rows.frontend_bytes(fe, 2 * blank as u64, 0);
        }
        let h = flow_of(&mut self.clients, key);
        if h.rx.is_empty() {
            if h.client_eof {
                // Closed between requests (or before the first): no log,
                // as HAProxy with nothing received; a FIN back (what was
                // sent last may still be on its way).
                self.http_finish(key, true);
                return Step::Gone;
            }
            return Step::Still;
        }
        match parse_request(h.rx.as_slice(), &limits) {
            Ok(Parsed::Partial) => {
                if h.client_eof {
                    // Gone in the middle of a head: nothing to answer.
                    self.http_refused(key, None, *b"CR");
                    return Step::Gone;
                }
                let c = &mut self.clients[key];
                if let Flow::Http(h) = &mut c.flow {
                    h.ack_quickly(&c.sock);
                }
                Step::Still
            }
            Err(rej) => {
                self.http_refused(key, Some(rej), *b"PR");
                Step::Moved
            }
            Ok(Parsed::Complete(req, n)) => {
                let h = flow_of(&mut self.clients, key);
                h.rx.consume(n);
                self.http_begin(key, req, n);
                Step::Moved
            }
        }
    }

    /// A head that cannot be served: `rej`'s status (none if the client
    /// left), `<BADREQ>` in the log, counters, then the connection closes.
    pub(super) fn http_refused(&mut self, key: usize, rej: Option<Reject>, term: [u8; 2]) {
        let now = self.now;
        let c = &mut self.clients[key];
        let fe = c.frontend;
        let Flow::Http(h) = &mut c.flow else { return };
        let (started, started_wall) = h.head_since.take().unwrap_or((now, SystemTime::now()));
        let mut bytes = 0;
        if let Some(r) = &rej {
            self.errors.request(fe, c.peer, r.reason, h.rx.as_slice());
        }
        if let Some(r) = rej {
            let before = h.tx.len();
            errors::error_response(h.tx.tail(), r.status, true, Version::Http11, false);
            bytes = (h.tx.len() - before) as u64;
            log::debug!("refused a request from {}: {r}", c.peer);
        }
        h.start_closing(now);
        self.sticky.count_request(&self.clients[key].sc);
        self.sticky.count_error(&self.clients[key].sc);
        self.rows.frontend_request(fe);
        self.rows.frontend_bad_request(fe);
        if let Some(r) = rej {
            self.rows.response(fe, None, None, Some(r.status));
        }
        let c = &self.clients[key];
        self.log.log_http(&crate::access_log::HttpLog {
            client: c.peer,
            started: started_wall,
            frontend: &self.cfg.frontends[fe].name,
            backend: &self.cfg.frontends[fe].name,
            server: "<NOSRV>",
            t_request: -1,
            t_queue: -1,
            t_connect: -1,
            t_response: -1,
            t_active: ms(now - started),
            status: rej.map_or(-1, |r| i32::from(r.status)),
            bytes_out: bytes,
            term,
            actconn: self.cur,
            feconn: self.frontends[fe].cur,
            beconn: 0,
            srv_conn: 0,
            retries: 0,
            backend_queue: 0,
            request: None,
        });
        if rej.is_none() {
            // The client left mid-head: nothing to answer, and nothing of
            // ours to reset away (its input was all read).
            self.http_finish(key, true);
        }
    }

    /// A complete request head: a stream begins.
    fn http_begin(&mut self, key: usize, mut req: Request, head_len: usize) {
        let now = self.now;
        let c = &mut self.clients[key];
        let fe = c.frontend;
        let peer = c.peer;
        let Flow::Http(h) = &mut c.flow else { return };
        // A body still to come: the client may wait for the ACK of what it
        // sent (see HttpFlow::quick_acks). The next request starts afresh.
        let whole = match req.framing {
            Framing::None => true,
            Framing::Length(n) => n <= h.rx.len() as u64,
            _ => false,
        };
        if !whole {
            // Even if a partial head turned them on: an answer sent since
            // (a 100 Continue) may have made the kernel delay them again.
            let _ = set_quickack(&c.sock, true);
        }
        h.quick_acks = false;
        let (started, started_wall) = h.head_since.take().unwrap_or((now, SystemTime::now()));
        h.requests += 1;
        h.phase = Phase::Exchange;
        self.sticky.count_request(&c.sc);
        self.rows.frontend_request(fe);
        // An absolute-form target's authority is the request's host
        // (RFC 9112 §3.2.2): Host says so too, for the rules and the server.
        if req.is_absolute_form() {
            let authority = req.host().unwrap_or("").to_string();
            req.fields.replace_value("host", authority.as_bytes());
        }
        // Fields the client named in `Connection` end here, before rules
        // add fields of the same names.
        HopByHop::strip_named(&mut req.fields);
        // Rules, on the head as received; header actions edit it.
        let local_port = if self.sticky.reads_dst_port(fe) {
            c.sock.local_addr().map_or(0, |a| a.port())
        } else {
            0
        };
        let mut tracked_here = [false; 3];
        let rs = &self.cfg.frontends[fe].ruleset;
        let mut verdict = Verdict::Continue;
        for rule in &rs.http_request {
            let holds = {
                let s = HttpSamples {
                    peer,
                    local_port,
                    req: &req,
                    sticky: &self.sticky,
                    sc: &c.sc,
                };
                applies(rs, rule.cond.as_ref(), &s)
            };
            if !holds {
                continue;
            }
            match &rule.action {
                HttpRequestAction::Track(t) => {
                    let value = match &t.key {
                        TrackKey::Src => Some(TrackValue::Addr(peer.ip())),
                        TrackKey::ReqHdr(n) => req.fields.get(n).map(TrackValue::Bytes),
                        TrackKey::Path => Some(TrackValue::Bytes(req.path().as_bytes())),
                        TrackKey::Url => Some(TrackValue::Bytes(req.target().as_bytes())),
                    };
                    if let Some(v) = value {
                        if self.sticky.track_request(&mut c.sc, t.slot, t.table, v) {
                            tracked_here[t.slot as usize] = true;
                        }
                    }
                }
                HttpRequestAction::IncGpc0 { slot } => self.sticky.inc_gpc0(&c.sc, *slot),
                HttpRequestAction::Header(a) => apply_header(&mut req.fields, a),
                HttpRequestAction::Deny { status } => {
                    verdict = Verdict::Deny(*status);
                    break;
                }
                HttpRequestAction::Return {
                    status,
                    content_type,
                    body,
                } => {
                    verdict = Verdict::Return {
                        status: *status,
                        content_type: content_type.clone(),
                        body: body.clone(),
                    };
                    break;
                }
                HttpRequestAction::Redirect(r) => {
                    verdict = Verdict::Redirect(r.clone());
                    break;
                }
            }
        }
        let framing = req.framing;
        let sent_body = (req.method.is_idempotent() && framing != Framing::None).then(Vec::new);
        let stream = Stream {
            req,
            backend: None,
            attempt: None,
            req_body: Body::new(framing),
            head_for: None,
            bytes_in: head_len as u64,
            status: None,
            resp_started: false,
            resp_body: Body::new(Framing::None),
            relay: Relay::Verbatim,
            early_response: false,
            local: false,
            keep_client: false,
            keep_server: false,
            server_write_failed: false,
            bytes_out: 0,
            started,
            started_wall,
            t_head: ms(now - started),
            sent_at: None,
            t_response: -1,
            server_active: now,
            term: *b"--",
            tracked_here,
            refused: None,
            served_by: None,
            tally: Default::default(),
            sent_body,
            cache: None,
            from_cache: false,
            trailing: false,
        };
        let Flow::Http(h) = &mut self.clients[key].flow else {
            return;
        };
        h.stream = Some(Box::new(stream));
        // A chunked body's bytes that came with the head are checked before
        // anything is forwarded: a bad chunk never reaches a server.
        if framing == Framing::Chunked {
            let mut check = Body::new(Framing::Chunked);
            if let Err(e) = body::scan(&mut check, h.rx.as_slice(), &mut Vec::new()) {
                log::debug!("refused a chunked request body: {e}");
                self.rows.frontend_bad_request(fe);
                return self.http_local_error(key, 400, *b"PR");
            }
        }
        match verdict {
            Verdict::Continue => {}
            Verdict::Deny(status) => {
                self.rows.frontend_denied(fe);
                return self.http_local(key, status, *b"PR", |out, req, close| {
                    errors::error_response(out, status, close, req.version, is_head(req))
                });
            }
            Verdict::Return {
                status,
                content_type,
                body,
            } => {
                return self.http_local(key, status, *b"LR", |out, req, close| {
                    errors::return_response(
                        out,
                        status,
                        content_type.as_deref(),
                        body.as_deref(),
                        close,
                        req.version,
                        is_head(req),
                    )
                });
            }
            Verdict::Redirect(r) => {
                return self.http_local(key, r.code, *b"LR", |out, req, close| {
                    errors::redirect_response(out, &r, req, close)
                });
            }
        }
        self.http_route(key);
    }

    /// Picks the backend (`use_backend` on the request, else the default),
    /// then a server: the kept connection when it suits, else the balancer.
    fn http_route(&mut self, key: usize) {
        let now = self.now;
        let c = &mut self.clients[key];
        let fe = c.frontend;
        let peer = c.peer;
        let Flow::Http(h) = &mut c.flow else { return };
        let st = h.stream.as_mut().expect("a stream");
        let rs = &self.cfg.frontends[fe].ruleset;
        let local_port = if self.sticky.reads_dst_port(fe) {
            c.sock.local_addr().map_or(0, |a| a.port())
        } else {
            0
        };
        let chosen = {
            let s = HttpSamples {
                peer,
                local_port,
                req: &st.req,
                sticky: &self.sticky,
                sc: &c.sc,
            };
            rs.use_backend
                .iter()
                .find(|u| applies(rs, u.cond.as_ref(), &s))
                .map(|u| u.backend)
        };
        let Some(be) = chosen.or(self.cfg.frontends[fe].default_backend) else {
            return self.http_local_error(key, 503, *b"SC");
        };
        st.backend = Some(be);
        if self.http_cache_lookup(key, be) {
            return;
        }
        let Flow::Http(h) = &mut self.clients[key].flow else {
            return;
        };
        let st = h.stream.as_mut().expect("a stream");
        let backend = &self.cfg.backends[be];
        if backend.forwardfor || self.cfg.frontends[fe].forwardfor {
            st.req
                .fields
                .add("X-Forwarded-For", peer.ip().to_string().as_bytes());
        }
        let hash = match backend.balance {
            Balance::Source => Some(crate::balance::ip_key(peer.ip())),
            Balance::Uri => Some(corral_shm::table::hash_bytes(st.req.path().as_bytes())),
            Balance::Hdr => backend
                .hash_header
                .as_deref()
                .and_then(|n| st.req.fields.get(n))
                .map(corral_shm::table::hash_bytes),
            _ => None,
        };
        let hashed = (hash.is_some()
            && matches!(
                backend.balance,
                Balance::Source | Balance::Uri | Balance::Hdr
            ))
            || backend.stick.is_some();
        let mut attempt = Attempt::new(be, hash, now);
        attempt.reuse = crate::server_pool::Reuse::of(backend.http_reuse, h.requests);
        st.attempt = Some(attempt);
        self.rows.backend_session(be);
        // The connection kept from the last exchange: with a hashing
        // balancer (or persistence) it serves the request only if the key
        // picks its server; otherwise it is preferred while its server may
        // take the request (HAProxy's prefer-last-server).
        if let Some(skey) = h.idle_server.take() {
            let quick = st.req.method.is_idempotent() && st.req.framing == Framing::None;
            let (usable, free) = self.servers.get_mut(skey).map_or((false, false), |s| {
                let b = &self.backends[be].balancer;
                let clean = s.backend == be && idle_usable(s, quick);
                (
                    clean && b.usable(s.server),
                    clean && b.usable(s.server) && b.servers[s.server].has_slot(),
                )
            });
            if !usable {
                self.close_server(skey, false);
            } else if free && !hashed {
                return self.reuse(key, skey);
            } else {
                self.attempt_mut(key).expect("just set").idle = Some(skey);
            }
        }
        self.assign(key);
    }

    /// Answers the current stream with corral's error page for `status`
    /// (the connection closes after it).
    pub(super) fn http_local_error(&mut self, key: usize, status: u16, term: [u8; 2]) {
        self.http_local(key, status, term, |out, req, close| {
            errors::error_response(out, status, close, req.version, is_head(req))
        });
    }

    /// Answers the current stream with corral's own response, written by
    /// `write(out, request, close)`. The server side, if any, is dropped.
    pub(super) fn http_local(
        &mut self,
        key: usize,
        status: u16,
        term: [u8; 2],
        write: impl FnOnce(&mut Vec<u8>, &Request, bool),
    ) {
        if let Some(st) = flow_of(&mut self.clients, key).stream.as_mut() {
            st.served_by = st.attempt.as_ref().and_then(|a| a.server).or(st.served_by);
        }
        self.release_attempt(key, true);
        // The attempt is over: no queue entry or deadline of it may act on
        // an answered request.
        if let Some(a) = self.attempt_mut(key) {
            a.phase = AttemptPhase::Idle;
        }
        // The answer may be made while another connection's event is
        // handled (a slot offered to the queue, a failed retry): then this
        // connection's own loop sends it next turn.
        self.wake(key);
        let stopping = self.stop_closes(key);
        let head_limits = limits(self);
        let c = &mut self.clients[key];
        let Flow::Http(h) = &mut c.flow else { return };
        let Some(st) = h.stream.as_mut() else { return };
        if st.resp_started && h.down.len > 0 {
            // Spliced bytes in flight cannot be followed by a clean close.
            return self.http_abort(key, term);
        }
        if st.resp_started {
            // Part of a response went out: nothing else can be said. The
            // stream is logged and the connection closes after what is
            // queued.
            st.term = term;
            st.keep_client = false;
            let st = h.stream.take().expect("checked");
            h.start_closing(Instant::now());
            self.http_close_stream(key, st);
            return;
        }
        // Keep the connection only if what remains of the request is known:
        // no body, or a body already read whole.
        let body_read = st.req_body.is_done()
            || st
                .req_body
                .remaining()
                .is_some_and(|n| n <= h.rx.len() as u64);
        // After the client's FIN, only if a whole request follows this one.
        let fin_only = h.client_eof && {
            let rest = st.req_body.remaining().unwrap_or(0) as usize;
            !whole_request_in(h.rx.as_slice().get(rest..).unwrap_or(&[]), &head_limits)
        };
        let close =
            status >= 400 && !matches!(status, 401 | 403 | 404 | 407 | 429) && !st.from_cache
                || !st.req.keep_alive()
                || !body_read
                || fin_only
                || stopping;
        if !close {
            if let Some(n) = st.req_body.remaining() {
                h.rx.consume(n as usize);
                st.bytes_in += n;
            }
        }
        let before = h.tx.len();
        write(h.tx.tail(), &st.req, close);
        st.bytes_out += (h.tx.len() - before) as u64;
        st.status = Some(status);
        st.local = true;
        st.resp_started = true;
        st.resp_body = Body::new(Framing::None);
        st.keep_client = !close;
        st.term = term;
        if close {
            st.trailing = !h.rx.is_empty();
            h.rx.clear();
        }
    }
}

/// Whether the answer to `req` carries no body (RFC 9110 §9.3.2).
fn is_head(req: &Request) -> bool {
    req.method == corral_http::h1::Method::Head
}

/// `set-header`, `add-header`, `del-header` on a head's fields.
pub(super) fn apply_header(fields: &mut corral_http::h1::Fields, a: &HeaderAction) {
    match a {
        HeaderAction::Set { name, value } => fields.set(name, value.as_bytes()),
        HeaderAction::Add { name, value } => fields.add(name, value.as_bytes()),
        HeaderAction::Del { name } => {
            fields.remove(name);
        }
    }
}
