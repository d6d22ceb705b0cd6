//! Server connections: their own slab entries and poll tokens, apart from
//! the client connections they serve.
//!
//! A server connection belongs to one client connection at a time (its
//! `owner`); its events are routed to that owner's flow. Keeping it a
//! separate entry is what lets an HTTP client keep its server connection
//! between requests, switch backends per request, and (later) lets idle
//! server connections wait in a per-worker pool with no owner at all.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use mio::Token;

use crate::bufio::Buf;
use crate::forward::Endpoint;

/// Server connection tokens start here (between the client tokens below
/// and the listeners' above).
pub(crate) const SERVER_BASE: usize = usize::MAX / 8;

/// Bits of the token that carry the connection's serial: a slab entry freed
/// and taken again within one batch of events must not receive the events
/// of the connection it held before (a stale hang-up would fail a connect).
const TAG_BITS: u32 = 16;

/// The poll token of server connection `key` with serial `serial`.
pub(crate) fn server_token(key: usize, serial: u64) -> Token {
    Token(SERVER_BASE + (key << TAG_BITS | (serial as usize & ((1 << TAG_BITS) - 1))))
}

/// A server token's offset (`token - SERVER_BASE`) as the slab key and the
/// serial's tag.
pub(crate) fn token_key(offset: usize) -> (usize, u64) {
    (offset >> TAG_BITS, (offset & ((1 << TAG_BITS) - 1)) as u64)
}

impl ServerConn {
    /// Whether an event's tag (see [`token_key`]) is this connection's.
    pub fn has_tag(&self, tag: u64) -> bool {
        self.serial & ((1 << TAG_BITS) - 1) == tag
    }
}

/// One connection to a server.
pub struct ServerConn {
    /// The socket.
    pub sock: TcpStream,
    /// Its readiness.
    pub ep: Endpoint,
    /// Backend index.
    pub backend: usize,
    /// Server index in the backend.
    pub server: usize,
    /// The client connection served: (client key, client serial).
    pub owner: (usize, u64),
    /// The connect completed (the socket was writable without an error).
    pub connected: bool,
    /// The connect failed (the event reported an error or a hang-up).
    pub refused: bool,
    /// The socket reported an error once connected (a reset).
    pub failed: bool,
    /// Bytes read from the server not yet handled (HTTP).
    pub rx: Buf,
    /// Bytes to write to the server (HTTP).
    pub tx: Buf,
    /// The server's FIN was read.
    pub eof: bool,
    /// Requests sent on this connection.
    pub requests: u32,
    /// Distinguishes this connection from a later one in the same slab entry.
    pub serial: u64,
    /// When it last went idle (into a pool).
    pub idle_since: std::time::Instant,
    /// The poll turn ([`poll_turn`]) it went idle in.
    pub idle_turn: u64,
}

/// Polls this process made (its worker loop counts them): a connection that
/// went idle before the last poll has had any FIN reported that arrived
/// before it.
static POLL_TURN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The current poll turn.
pub fn poll_turn() -> u64 {
    POLL_TURN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one poll (the worker loop, after each epoll_wait).
pub fn count_poll() {
    POLL_TURN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl ServerConn {
    /// A connection being established to server `server` of `backend`.
    pub fn new(
        sock: TcpStream,
        backend: usize,
        server: usize,
        owner: (usize, u64),
        serial: u64,
    ) -> ServerConn {
        let fd = sock.as_raw_fd();
        ServerConn {
            sock,
            ep: Endpoint::new(fd),
            backend,
            server,
            owner,
            connected: false,
            refused: false,
            failed: false,
            rx: Buf::default(),
            tx: Buf::default(),
            eof: false,
            requests: 0,
            serial,
            idle_since: std::time::Instant::now(),
            idle_turn: 0,
        }
    }
}

/// Idle longer than this, a kept connection is peeked before it is reused.
const PEEK_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether a kept (idle) connection can take a request: the server has not
/// closed it, reset it or sent anything since its last response (a
/// non-blocking peek). `quick`: the request could be sent again if the
/// connection turns out closed (idempotent, no body), so the peek may be
/// skipped for a connection just drained.
pub fn idle_usable(s: &mut ServerConn, quick: bool) -> bool {
    if s.eof || s.failed || s.ep.read_closed || !s.rx.is_empty() || !s.tx.is_empty() {
        return false;
    }
    // Drained (a short read or EAGAIN: any byte or FIN since makes an
    // event) and idle for less than any sane keep-alive timeout: usable
    // without a syscall. (The race left, a FIN whose event is not read yet,
    // is what the replay of a request on a reused connection covers.)
    // Only for a request that can be replayed, and only once a poll has
    // run since the connection went idle (a FIN that came with or just
    // after its response has been reported by then).
    if quick && !s.ep.readable && s.idle_turn < poll_turn() && s.idle_since.elapsed() < PEEK_AFTER {
        return true;
    }
    // Otherwise looked at: the server's FIN may be on its way to an event
    // that has not been read yet.
    if peek(s.ep.fd) == Peek::Empty {
        s.ep.readable = false;
        return true;
    }
    // EOF, stray bytes or an error: not a connection to send a request on.
    false
}

/// What a one-byte, non-blocking peek at a socket found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Nothing to read (it would block).
    Empty,
    /// The peer's FIN.
    Eof,
    /// At least one unread byte.
    Bytes,
    /// The socket reported an error (a reset).
    Failed,
}

/// Looks at socket `fd` without taking anything from it.
pub fn peek(fd: std::os::fd::RawFd) -> Peek {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local buffer on a socket the caller holds.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Eof,
        n if n > 0 => Peek::Bytes,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
            Peek::Empty
        }
        _ => Peek::Failed,
    }
}

/// Starts a non-blocking connect to `addr`.
///
/// `data_ready`: the first bytes for the server are already in hand and go
/// out as soon as the connect completes. The last ACK of the handshake is
/// then delayed (TCP_QUICKACK off, like HAProxy's `tcp-smart-connect`) and
/// rides on the first data segment: one packet less per connection. The
/// kernel leaves this delayed-ACK mode when the handshake completes.
/// Without data in hand the ACK goes at once: a server that speaks first
/// must not wait for a delayed ACK to see its connection.
pub fn start_connect(addr: SocketAddr, data_ready: bool) -> std::io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(
        domain,
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    let _ = sock.set_tcp_nodelay(true);
    if data_ready {
        // Failure only costs the saved packet.
        let _ = sock.set_tcp_quickack(false);
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(sock)))
}

/// Turns the socket's quick-ACK mode on or off (TCP_QUICKACK). Off, the
/// ACK of received data waits (up to the delayed-ACK timeout) for data
/// going the other way to ride on; on, a pending ACK leaves at once.
pub fn set_quickack(sock: &impl std::os::fd::AsFd, on: bool) -> std::io::Result<()> {
    socket2::SockRef::from(sock).set_tcp_quickack(on)
}

/// Closes a socket with an RST instead of a FIN (SO_LINGER 0): used to pass
/// an abort on to the other side rather than pretend a clean end.
pub fn reset_on_close(s: &TcpStream) {
    // A failure leaves a normal close: a FIN instead of the reset.
    let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
}
