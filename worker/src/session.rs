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
    /// One side failed (see [`Session::closing`]): what was read from it is
    /// being delivered to the other side, which then gets a FIN, not a
    /// reset.
    Closing,
}

/// What a speculative send during a connect found (see [`Session::speculate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speculation {
    /// The server took bytes: it is connected.
    Connected,
    /// Nothing to send, or the connect is still in progress.
    NotYet,
    /// The connect failed (refused, unreachable).
    Failed,
}

/// Where a closing connection's delivery stands (see [`Session::deliver`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The survivor got everything and may be closed without a reset.
    Done,
    /// Work is left that can be done now (a budget ran out): next turn.
    More,
    /// Waiting for the survivor: its next event, or its acknowledgements.
    Wait,
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
    /// The deadline this connection armed last (the one timer it holds).
    pub armed: Option<Instant>,
    /// In [`Phase::Closing`]: the side that failed, and whether the other
    /// side was closed cleanly (FIN after everything owed to it).
    pub closing: Option<Blame>,
    /// The surviving side got its FIN after all it was owed: close it
    /// without a reset.
    pub graceful: bool,
    /// The server connect was refused (the event reported an error).
    pub connect_refused: bool,
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
            closing: None,
            graceful: false,
            connect_refused: false,
        }
    }

    /// While the server connect is in progress: reads what the client sent
    /// (if its socket is readable) and tries to send it to the server.
    /// No FIN is forwarded here: that waits for the connection.
    pub fn speculate(&mut self, pools: &mut Pools) -> Speculation {
        if self.c2s.fill_once(&mut self.cli, pools).is_err() {
            // The client's failure shows once established.
            return Speculation::NotYet;
        }
        if self.c2s.in_flight() == 0 {
            return Speculation::NotYet;
        }
        self.srv.writable = true;
        match self.c2s.drain_once(&mut self.srv, pools) {
            Ok(n) if n > 0 => Speculation::Connected,
            Ok(_) => {
                self.srv.writable = false;
                Speculation::NotYet
            }
            Err(_) => Speculation::Failed,
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
        let up_last = self.s2c.done();
        let up = self
            .c2s
            .pump(&mut self.cli, &mut self.srv, pools, budget, up_last);
        let down_last = self.c2s.done();
        let down = self
            .s2c
            .pump(&mut self.srv, &mut self.cli, pools, budget, down_last);
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

    /// One side failed: from now on only what was read from it goes on, to
    /// the other side, then a FIN (see [`Session::deliver`]). The failed
    /// side's endpoint is dead to the pumps; what was owed *to* it is dropped.
    pub fn abort_side(&mut self, failed: Blame, pools: &mut Pools) {
        self.phase = Phase::Closing;
        self.closing = Some(failed);
        let (away, dead) = match failed {
            Blame::Server => (&mut self.c2s, &mut self.srv),
            Blame::Client => (&mut self.s2c, &mut self.cli),
        };
        // What the failed side's socket still holds (a reset peer's data
        // stays readable until the reset) is read to its end...
        dead.readable = true;
        dead.read_closed = true;
        // ...and nothing more goes to it.
        away.release(pools);
        away.eof = true;
        away.shut = true;
        dead.writable = false;
    }

    /// In [`Phase::Closing`]: writes what the surviving side is owed, sends
    /// it a FIN, then discards what it still sends until its FIN or until
    /// it has acknowledged everything (so the close, which resets a socket
    /// with unread input, cannot throw away bytes it was owed). `Ok(true)`
    /// once it is done, `Ok(false)` to be called again (on its next event,
    /// or soon: acknowledgements make no event), `Err` if it failed too.
    pub fn deliver(&mut self, pools: &mut Pools, budget: usize) -> Result<Delivery, Blame> {
        let Some(failed) = self.closing else {
            return Ok(Delivery::Done);
        };
        let (toward, src, dst, survivor) = match failed {
            Blame::Server => (&mut self.s2c, &mut self.srv, &mut self.cli, Blame::Client),
            Blame::Client => (&mut self.c2s, &mut self.cli, &mut self.srv, Blame::Server),
        };
        while !toward.done() {
            match toward.pump(src, dst, pools, budget, false) {
                Ok(_) if toward.done() => break,
                // Its budget is spent: more next turn, not after a timer.
                Ok(p) if p.more => return Ok(Delivery::More),
                Ok(_) => return Ok(Delivery::Wait),
                // The failed side's end: deliver what was read, then the FIN.
                Err(Fault::Source(_)) => {
                    toward.eof = true;
                    src.readable = false;
                }
                Err(Fault::Destination(_)) => return Err(survivor),
            }
        }
        // Everything it was owed is acknowledged: a close loses nothing now,
        // whatever it still sends.
        if unacked(dst.fd) == 0 {
            self.graceful = true;
            return Ok(Delivery::Done);
        }
        // FIN sent, not all acknowledged: discard what the survivor still
        // sends (unread input would make the close a reset), a budget's worth
        // per turn, until its FIN.
        let mut scratch = [0u8; 4096];
        let mut discarded = 0;
        while dst.readable {
            if discarded >= budget {
                return Ok(Delivery::More);
            }
            // SAFETY: reading into a local buffer from the survivor's socket.
            let n = unsafe { libc::read(dst.fd, scratch.as_mut_ptr().cast(), scratch.len()) };
            match n {
                0 => {
                    self.graceful = true;
                    return Ok(Delivery::Done);
                }
                n if n > 0 => discarded += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => dst.readable = false,
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(survivor),
                    }
                }
            }
        }
        Ok(Delivery::Wait)
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

/// Bytes written to socket `fd` and not yet acknowledged by the peer
/// (SIOCOUTQ); 0 if unknown.
fn unacked(fd: std::os::fd::RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int for a TCP socket we hold.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        0
    } else {
        n.max(0) as usize
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
