//! One proxied TCP connection: a client socket, at most one server socket, and
//! the two directions between them.
//!
//! Phases: **queued** (waiting for a server slot) → **connecting** (a
//! non-blocking connect is in progress; failures retry another server) →
//! **established** (bytes flow both ways until both FINs are forwarded, an
//! error aborts, or the idle timeout fires). The worker owns the transitions
//! that touch shared state (servers, queues, counters: see `dispatch.rs`); this
//! module holds the per-connection state and the forwarding step.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpStream;

use crate::forward::{Endpoint, Fault, Half, Pools};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, no server chosen yet (transient).
    New,
    /// Waiting in the backend queue for a server slot.
    Queued,
    /// Connecting to a server.
    Connecting,
    /// Forwarding bytes.
    Established,
}

/// Which side a termination is blamed on, as in HAProxy's termination state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The client (`C`: abort/reset, `c`: timeout).
    Client,
    /// The server (`S`: abort/refused, `s`: timeout).
    Server,
}

/// One proxied connection.
pub struct Session {
    /// Distinguishes this connection from a later one reusing the slab key.
    pub serial: u64,
    /// The client socket.
    pub client: TcpStream,
    /// The server socket once a connect started.
    pub server: Option<TcpStream>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Frontend index.
    pub frontend: usize,
    /// Backend index, once chosen.
    pub backend: Option<usize>,
    /// Server index in the backend, once chosen (holds a slot while set).
    pub server_idx: Option<usize>,
    /// Current phase.
    pub phase: Phase,
    /// Client readiness.
    pub cli: Endpoint,
    /// Server readiness.
    pub srv: Endpoint,
    /// Client → server.
    pub c2s: Half,
    /// Server → client.
    pub s2c: Half,
    /// Servers whose connect failed for this connection.
    pub tried: Vec<usize>,
    /// Connect attempts made after the first.
    pub retries: u32,
    /// Accept time (monotonic).
    pub accepted: Instant,
    /// Accept time (wall clock, for the log).
    pub accepted_wall: SystemTime,
    /// When the current phase started (queue entry or connect start).
    pub phase_started: Instant,
    /// Time spent in the queue.
    pub t_queue: Option<Duration>,
    /// Time the successful connect took.
    pub t_connect: Option<Duration>,
    /// Last time bytes moved in either direction.
    pub last_activity: Instant,
    /// Stick counters (sc0..sc2) tracked by this connection.
    pub sc: crate::stick::StickCounters,
    /// The deadline this connection armed last; older heap entries are stale.
    pub armed: Option<Instant>,
}

impl Session {
    /// A freshly accepted connection.
    pub fn new(
        serial: u64,
        client: TcpStream,
        peer: SocketAddr,
        frontend: usize,
        splice: bool,
    ) -> Session {
        let now = Instant::now();
        let fd = client.as_raw_fd();
        Session {
            serial,
            client,
            server: None,
            peer,
            frontend,
            backend: None,
            server_idx: None,
            phase: Phase::New,
            cli: Endpoint::new(fd),
            srv: Endpoint::new(-1),
            c2s: Half::new(splice),
            s2c: Half::new(splice),
            tried: Vec::new(),
            retries: 0,
            accepted: now,
            accepted_wall: SystemTime::now(),
            phase_started: now,
            t_queue: None,
            t_connect: None,
            last_activity: now,
            sc: Default::default(),
            armed: None,
        }
    }

    /// Result of the server connect once the socket reported writable or an
    /// error: `Ok(true)` connected, `Ok(false)` still in progress.
    pub fn connect_result(&self) -> io::Result<bool> {
        let Some(server) = &self.server else {
            return Ok(false);
        };
        if let Some(e) = server.take_error()? {
            return Err(e);
        }
        match server.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Forwards in both directions within `budget` bytes each. Returns whether
    /// work is left for another turn, or the side to blame for a failure.
    pub fn forward(
        &mut self,
        pools: &mut Pools,
        budget: usize,
        now: Instant,
    ) -> Result<bool, Blame> {
        let up = self.c2s.pump(&mut self.cli, &mut self.srv, pools, budget);
        let down = self.s2c.pump(&mut self.srv, &mut self.cli, pools, budget);
        let (up, down) = match (up, down) {
            (Ok(u), Ok(d)) => (u, d),
            (Err(Fault::Source(_)), _) | (_, Err(Fault::Destination(_))) => {
                return Err(Blame::Client)
            }
            (Err(Fault::Destination(_)), _) | (_, Err(Fault::Source(_))) => {
                return Err(Blame::Server)
            }
        };
        if up.bytes + down.bytes > 0 {
            self.last_activity = now;
        }
        Ok(up.more || down.more)
    }

    /// Both FINs forwarded and nothing in flight: a clean end.
    pub fn finished(&self) -> bool {
        self.c2s.done() && self.s2c.done()
    }

    /// Gives pipes and buffers back before the connection is dropped.
    pub fn release(&mut self, pools: &mut Pools) {
        self.c2s.release(pools);
        self.s2c.release(pools);
    }
}

/// Closes a socket with an RST instead of a FIN (SO_LINGER 0): used to pass
/// an abort on to the other side rather than pretend a clean end.
pub fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}
