//! A tunnel: bytes both ways between a client and a server connection, as
//! they are, until both FINs are forwarded. TCP mode is a tunnel from the
//! connect on; HTTP becomes one after a protocol switch (101, WebSocket).
//!
//! When one side fails, the other still gets what was read for it and then
//! a FIN ([`Tunnel::abort_side`], [`Tunnel::deliver`]): only a side that
//! fails too, or the closing deadline, resets it.

use std::io;
use std::time::Instant;

use crate::forward::{Endpoint, Fault, Half, Pools};

/// What a speculative send during a connect found (see [`Tunnel::speculate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speculation {
    /// The server took bytes: it is connected.
    Connected,
    /// Nothing to send, or the connect is still in progress.
    NotYet,
    /// The connect failed (refused, unreachable).
    Failed,
}

/// Where a closing tunnel's delivery stands (see [`Tunnel::deliver`]).
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

/// The two directions of a tunnel and how it is ending.
pub struct Tunnel {
    /// Client → server.
    pub c2s: Half,
    /// Server → client.
    pub s2c: Half,
    /// One side failed: the side, while what the other is owed is delivered.
    pub closing: Option<Blame>,
    /// The surviving side got its FIN after all it was owed: close it
    /// without a reset.
    pub graceful: bool,
    /// Last time bytes moved in either direction.
    pub last_activity: Instant,
    /// When the closing delivery started.
    pub closing_since: Option<Instant>,
}

impl Tunnel {
    /// A tunnel whose directions splice when `splice` is true.
    pub fn new(splice: bool, now: Instant) -> Tunnel {
        Tunnel {
            c2s: Half::new(splice),
            s2c: Half::new(splice),
            closing: None,
            graceful: false,
            last_activity: now,
            closing_since: None,
        }
    }

    /// While the server connect is in progress: reads what the client sent
    /// (if its socket is readable) and tries to send it to the server.
    /// No FIN is forwarded here: that waits for the connection.
    pub fn speculate(
        &mut self,
        cli: &mut Endpoint,
        srv: &mut Endpoint,
        pools: &mut Pools,
    ) -> Speculation {
        if self.c2s.fill_once(cli, pools).is_err() {
            // The client's failure shows once established.
            return Speculation::NotYet;
        }
        if self.c2s.in_flight() == 0 {
            return Speculation::NotYet;
        }
        srv.writable = true;
        match self.c2s.drain_once(srv, pools) {
            Ok(n) if n > 0 => Speculation::Connected,
            Ok(_) => {
                srv.writable = false;
                Speculation::NotYet
            }
            Err(_) => Speculation::Failed,
        }
    }

    /// Forwards in both directions within `budget` bytes each. Returns whether
    /// work is left for another turn, or the side to blame for a failure.
    pub fn forward(
        &mut self,
        cli: &mut Endpoint,
        srv: &mut Endpoint,
        pools: &mut Pools,
        budget: usize,
        now: Instant,
    ) -> Result<bool, Blame> {
        let up_last = self.s2c.done();
        let up = self.c2s.pump(cli, srv, pools, budget, up_last);
        let down_last = self.c2s.done();
        let down = self.s2c.pump(srv, cli, pools, budget, down_last);
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
    /// the other side, then a FIN (see [`Tunnel::deliver`]). The failed
    /// side's endpoint is dead to the pumps; what was owed *to* it is dropped.
    pub fn abort_side(
        &mut self,
        failed: Blame,
        cli: &mut Endpoint,
        srv: &mut Endpoint,
        pools: &mut Pools,
    ) {
        self.closing = Some(failed);
        self.closing_since = Some(Instant::now());
        let (away, dead) = match failed {
            Blame::Server => (&mut self.c2s, srv),
            Blame::Client => (&mut self.s2c, cli),
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

    /// While closing: writes what the surviving side is owed, sends it a
    /// FIN, then discards what it still sends until its FIN or until it has
    /// acknowledged everything (so the close, which resets a socket with
    /// unread input, cannot throw away bytes it was owed).
    pub fn deliver(
        &mut self,
        cli: &mut Endpoint,
        srv: &mut Endpoint,
        pools: &mut Pools,
        budget: usize,
    ) -> Result<Delivery, Blame> {
        let Some(failed) = self.closing else {
            return Ok(Delivery::Done);
        };
        let (toward, src, dst, survivor) = match failed {
            Blame::Server => (&mut self.s2c, srv, cli, Blame::Client),
            Blame::Client => (&mut self.c2s, cli, srv, Blame::Server),
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
        match linger(dst, budget) {
            Ok(Delivery::Done) => {
                self.graceful = true;
                Ok(Delivery::Done)
            }
            Ok(d) => Ok(d),
            Err(_) => Err(survivor),
        }
    }

    /// Both FINs forwarded and nothing in flight: a clean end.
    pub fn finished(&self) -> bool {
        self.c2s.done() && self.s2c.done()
    }

    /// Gives pipes and buffers back before the tunnel is dropped.
    pub fn release(&mut self, pools: &mut Pools) {
        self.c2s.release(pools);
        self.s2c.release(pools);
    }
}

/// After a FIN was sent to `ep`: done once the peer acknowledged everything
/// (a close then loses nothing, whatever it still sends) or sent its own
/// FIN; meanwhile what it sends is read and discarded (unread input would
/// make the close a reset), `budget` bytes per call.
pub fn linger(ep: &mut Endpoint, budget: usize) -> io::Result<Delivery> {
    if unacked(ep.fd) == 0 {
        return Ok(Delivery::Done);
    }
    let mut scratch = [0u8; 4096];
    let mut discarded = 0;
    while ep.readable {
        if discarded >= budget {
            return Ok(Delivery::More);
        }
        // SAFETY: reading into a local buffer from a socket we hold.
        let n = unsafe { libc::recv(ep.fd, scratch.as_mut_ptr().cast(), scratch.len(), 0) };
        match n {
            0 => return Ok(Delivery::Done),
            n if n > 0 => discarded += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => ep.readable = false,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(Delivery::Wait)
}

/// Bytes written to socket `fd` and not yet acknowledged by the peer
/// (SIOCOUTQ); 0 if unknown.
pub(crate) fn unacked(fd: std::os::fd::RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int for a TCP socket we hold.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        0
    } else {
        n.max(0) as usize
    }
}
