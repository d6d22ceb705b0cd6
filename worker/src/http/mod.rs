//! HTTP/1.1 mode: a client connection carries a sequence of **streams**
//! (one request/response exchange each), each routed by the frontend's
//! rules to a backend and a **server connection** of its own slab entry.
//!
//! Layers, so TLS and HTTP/2 slot in without rewriting the stream logic:
//! * the *transport* (plain TCP; TLS later) is the client connection's
//!   socket and its [`crate::bufio::Buf`]s: the codec only sees bytes;
//! * the *codec* ([`corral_http::h1`]) is pure: heads in, [`Request`] /
//!   [`corral_http::h1::Response`] out, and the body framing machine;
//! * the *stream* ([`Stream`]) is what a request needs whatever carried it:
//!   rules, routing, the attempt at a server, the response's way back, the
//!   log line. h1 runs one stream at a time (pipelined requests wait in the
//!   buffer, answered in order); an h2 multiplexer would own many.
//!
//! The driver ([`exchange`]) moves bytes: client → request parser → rules
//! → server buffer → server; server → response parser → client buffer →
//! client; under per-turn byte budgets, never blocking.

mod cached;
mod ending;
mod errors;
mod exchange;
mod request;
mod response;
mod samples;
mod splicing;
mod timeouts;

use std::time::{Duration, Instant, SystemTime};

use corral_http::h1::{Body, Request};

use crate::attempt::Attempt;
use crate::bufio::Buf;
use crate::client::{Client, Flow};
use crate::tunnel::Tunnel;

/// The HTTP flow of client `key` (which must be an HTTP client).
pub(crate) fn flow_of(clients: &mut slab::Slab<Client>, key: usize) -> &mut HttpFlow {
    match &mut clients[key].flow {
        Flow::Http(h) => h,
        Flow::Tcp(_) => unreachable!("an HTTP client"),
    }
}

/// The most bytes an exchange buffers with heads of at most `head` bytes:
/// the client's and the server's input (a head and a read), and what is
/// queued toward each (the high-water mark, a read, a head).
pub fn buffered_bytes(head: usize) -> usize {
    let read = 16 * 1024;
    2 * (head + read) + 2 * (response::TX_HIGH + read + head)
}

/// Where an HTTP client connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request head (idle, or part of one arrived).
    Head,
    /// A stream is being served.
    Exchange,
    /// After a protocol switch (101): bytes both ways, as they are.
    Tunnel,
    /// The last response is being written; then a FIN, and what the client
    /// still sends is discarded until it closes.
    Closing,
    /// On its way to a worker of the new generation ([`crate::handoff`]):
    /// out of this worker's epoll, waiting for the receiver's ack.
    Handing,
}

/// The state of one HTTP client connection.
pub struct HttpFlow {
    /// Bytes read from the client, not yet handled.
    pub rx: Buf,
    /// Bytes to write to the client.
    pub tx: Buf,
    /// The exchange in progress.
    pub stream: Option<Box<Stream>>,
    /// The server connection kept from the previous exchange (server
    /// keep-alive), holding no server slot while idle.
    pub idle_server: Option<usize>,
    /// Where the connection is.
    pub phase: Phase,
    /// After a protocol switch.
    pub tunnel: Option<Tunnel>,
    /// Requests served on this connection.
    pub requests: u32,
    /// When the connection became idle (accept, or the end of the last exchange).
    pub idle_since: Instant,
    /// When the first byte of the current request head arrived.
    pub head_since: Option<(Instant, SystemTime)>,
    /// The client's FIN was read.
    pub client_eof: bool,
    /// Last time bytes moved from or to the client.
    pub client_active: Instant,
    /// Our FIN was sent (in [`Phase::Closing`]).
    pub shut: bool,
    /// When [`Phase::Closing`] began, or last saw the client acknowledge
    /// more of what it was sent.
    pub closing_since: Option<Instant>,
    /// Bytes the client had not acknowledged at the last look (Closing).
    pub closing_unacked: usize,
    /// When to look again (acknowledgements make no event), and the
    /// interval, doubled while nothing moves.
    pub closing_check: Option<(Instant, Duration)>,
    /// A handoff to the new generation was refused or failed: this worker
    /// finishes the connection (its next response closes it).
    pub no_handoff: bool,
    /// [`Phase::Closing`] after a request that asked for the close, read
    /// whole, nothing after it, with a small answer: once the answer is
    /// written and a last look finds nothing unread, the socket is closed at
    /// once (a plain FIN), as HAProxy does, without waiting for the
    /// client's FIN. (A client that still sends after that gets a reset;
    /// the bound on the answer's size keeps what it could lose to one
    /// initial window.)
    pub fast_close: bool,
    /// The request body's pipe while it splices (client → server).
    pub up: splicing::BodyPipe,
    /// The response body's pipe while it splices (server → client).
    pub down: splicing::BodyPipe,
    /// Quick ACKs were turned back on for the request being received.
    /// HTTP listeners hand out connections with delayed ACKs (see
    /// `master::bind::apply_listener_options`), and the kernel keeps a
    /// connection whose ACKs ride on its answers in that mode: the ACK of a
    /// request waits for the answer, one packet less. A client that must send
    /// more first (the rest of a head, a body) gets its ACKs at once
    /// ([`HttpFlow::ack_quickly`]), so one that waits for them (Nagle) is
    /// not held up by the delayed-ACK timer. Cleared as each request begins.
    pub quick_acks: bool,
}

impl HttpFlow {
    /// A new connection's flow.
    pub fn new(now: Instant) -> HttpFlow {
        HttpFlow {
            rx: Buf::default(),
            tx: Buf::default(),
            stream: None,
            idle_server: None,
            phase: Phase::Head,
            tunnel: None,
            requests: 0,
            idle_since: now,
            head_since: None,
            client_eof: false,
            client_active: now,
            shut: false,
            closing_since: None,
            closing_unacked: usize::MAX,
            closing_check: None,
            no_handoff: false,
            fast_close: false,
            up: Default::default(),
            down: Default::default(),
            quick_acks: false,
        }
    }

    /// Turns quick ACKs on for this connection, once per request: the
    /// client has more to send before it is answered.
    pub fn ack_quickly(&mut self, sock: &impl std::os::fd::AsFd) {
        if !std::mem::replace(&mut self.quick_acks, true) {
            // A failure only leaves ACKs delayed (at most the kernel's
            // delayed-ACK timeout).
            let _ = crate::server_conn::set_quickack(sock, true);
        }
    }

    /// Enters [`Phase::Closing`]: what is queued goes out, then a FIN; what
    /// the client still sends is discarded.
    pub fn start_closing(&mut self, now: Instant) {
        self.phase = Phase::Closing;
        self.fast_close = false;
        self.closing_since = Some(now);
        self.closing_unacked = usize::MAX;
        self.closing_check = None;
        self.rx.clear();
    }
}

/// How the response body goes to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay {
    /// As received (length, chunked to a 1.1 client, until close).
    Verbatim,
    /// Chunked from the server, raw to an HTTP/1.0 client (which then
    /// learns the end from the close).
    Dechunk,
}

impl Stream {
    /// The server connection of the stream's attempt, once connected.
    pub fn connected_server(&self) -> Option<usize> {
        self.attempt
            .as_ref()
            .filter(|a| a.phase == crate::attempt::AttemptPhase::Connected)
            .and_then(|a| a.conn)
    }

    /// Keeps a copy of request body bytes just queued to the server, so a
    /// replay can send them again; past [`REPLAY_MAX`] bytes the request
    /// can no longer be replayed and the copy is dropped.
    pub fn keep_for_replay(&mut self, bytes: &[u8]) {
        if let Some(sent) = &mut self.sent_body {
            if sent.len() + bytes.len() > REPLAY_MAX {
                self.sent_body = None;
            } else {
                sent.extend_from_slice(bytes);
            }
        }
    }

    /// Whether the request body is copied (not spliced) so that a replay
    /// can send it again: an idempotent request whose body fits in
    /// [`REPLAY_MAX`] (a chunked one until it outgrows it).
    pub fn keeps_for_replay(&self) -> bool {
        let Some(sent) = &self.sent_body else {
            return false;
        };
        match self.req_body.remaining() {
            Some(n) => sent.len() as u64 + n <= REPLAY_MAX as u64,
            None => true,
        }
    }

    /// Whether nothing more of the request is needed from the client: its
    /// body is done, not wanted (an early or local answer), or all in
    /// `rx`, received and not yet forwarded.
    pub fn request_received(&self, rx: &[u8]) -> bool {
        self.req_body.is_done()
            || self.early_response
            || self.local
            || corral_http::h1::body::ends_within(&self.req_body, rx)
    }
}

/// One request/response exchange.
pub struct Stream {
    /// The request head, after the rules edited it.
    pub req: Request,
    /// The backend chosen, if any.
    pub backend: Option<usize>,
    /// The way to a server, once one is wanted.
    pub attempt: Option<Attempt>,
    /// The request body's framing state.
    pub req_body: Body,
    /// The server connection (its serial) the request head was queued for.
    pub head_for: Option<u64>,
    /// Bytes received from the client for this request (head and body).
    pub bytes_in: u64,
    /// The response's status once its head is in (or the local answer's).
    pub status: Option<u16>,
    /// The final response head was queued to the client.
    pub resp_started: bool,
    /// The response body's framing state.
    pub resp_body: Body,
    /// How the response body is relayed.
    pub relay: Relay,
    /// The server answered before the request body was read: the rest of
    /// it is not forwarded.
    pub early_response: bool,
    /// The answer is corral's own (deny, return, redirect, error).
    pub local: bool,
    /// The client connection stays open after this exchange.
    pub keep_client: bool,
    /// The server connection can serve another request after this one.
    pub keep_server: bool,
    /// Writing to the server failed: only its answer is awaited.
    pub server_write_failed: bool,
    /// Bytes queued to the client for this exchange.
    pub bytes_out: u64,
    /// When the request started (first byte of its head).
    pub started: Instant,
    /// The same, wall clock (`%tr`).
    pub started_wall: SystemTime,
    /// Time to receive the head (`%TR`).
    pub t_head: i64,
    /// When the request was fully sent to the server (or the head, while
    /// the body streams): the start of `%Tr`.
    pub sent_at: Option<Instant>,
    /// Time from the request sent to the response head (`%Tr`).
    pub t_response: i64,
    /// Last time the server side moved bytes.
    pub server_active: Instant,
    /// HAProxy's termination state (first two characters of `%tsc`).
    pub term: [u8; 2],
    /// The stick counter slots tracked by this request only.
    pub tracked_here: [bool; 3],
    /// Why the request or response was refused, for the process log.
    pub refused: Option<&'static str>,
    /// The server that had the request, kept for the log once its slot is
    /// given back.
    pub served_by: Option<usize>,
    /// The stream's bytes already in the counters.
    pub tally: crate::tally::Tally,
    /// The request body as queued to the server (canonical framing), kept
    /// while the request may be replayed: an idempotent request whose body
    /// has not outgrown [`REPLAY_MAX`]. `None`: not replayable with a body.
    pub sent_body: Option<Vec<u8>>,
    /// The stream's use of the backend's cache: a miss to store, a store
    /// in progress, or a hit's body being sent.
    pub cache: Option<crate::cache::CacheUse>,
    /// Answered from the cache (`<CACHE>` in the log; no forced close).
    pub from_cache: bool,
    /// Bytes followed the request when a closing local answer dropped them
    /// (so the connection gets the careful close, not the fast one).
    pub trailing: bool,
}

/// The most request body bytes kept for a replay: a larger body is never
/// replayed (it is no longer all in corral's buffer).
pub const REPLAY_MAX: usize = 64 * 1024;
