//! One direction of a proxied TCP connection: bytes from a source socket to a
//! destination socket, with read/write for small messages and splice(2) once
//! the direction carries bulk.
//!
//! **Copy first, splice for bulk.** A direction starts by reading into a
//! 16 KiB buffer: a request or a reply of a few bytes costs one recv and one
//! send, where splice costs two calls plus an EAGAIN for each (a splice is
//! dearer than a copy for small data). The first read that fills the whole
//! buffer marks the direction as bulk; once the buffer has drained, it moves
//! through a pipe with splice, zero-copy, from then on.
//!
//! The state machine, per direction:
//!
//! * **fill**: while the source is readable, nothing is in flight past the
//!   chunk size and no FIN was seen, move bytes from the source into a pipe
//!   (or buffer). A read of 0 is the source's FIN.
//! * **drain**: while bytes are in flight and the destination is writable,
//!   move them out.
//! * **FIN**: once the source's FIN was read *and* everything in flight has
//!   been written, `shutdown(SHUT_WR)` the destination. The other direction is
//!   not touched: a half-closed connection keeps flowing the other way.
//!
//! Readiness is edge-triggered, so a flag (`readable`, `writable`) stays true
//! until the kernel says EAGAIN. One subtlety of splice: EAGAIN from
//! socket → pipe while the pipe holds bytes may mean *the pipe is full* (a pipe
//! holds a bounded number of page slots, not bytes), not that the socket is
//! empty. So the source is marked not-readable only when EAGAIN comes with an
//! empty pipe; otherwise the next drain frees the pipe and the fill is retried.
//! Backpressure follows: when the destination blocks, the pipe stays full and
//! the source is not read, so the sender's TCP window closes. Nothing spins:
//! every exit of [`Half::pump`] without progress waits for a kernel event.

use std::io;
use std::net::Shutdown;
use std::os::fd::RawFd;

use crate::splice::{Moved, Pipe, PipePool};

/// Size of a fallback buffer, like HAProxy's default `tune.bufsize`.
pub const BUF_SIZE: usize = 16 * 1024;

/// Readiness of one socket as last reported by the kernel (edge-triggered).
///
/// A read that returns fewer bytes than asked drained the socket: the next
/// bytes will come with a new edge, so `readable` drops without another
/// read that would only say EAGAIN, unless the kernel already reported the
/// peer's FIN (`read_closed`), which no later edge would announce. Likewise a
/// write that took fewer bytes than offered filled the socket.
#[derive(Debug)]
pub struct Endpoint {
    /// The socket.
    pub fd: RawFd,
    /// Data (or a FIN) may be read without blocking.
    pub readable: bool,
    /// Bytes may be written without blocking.
    pub writable: bool,
    /// The kernel reported the peer's FIN (EPOLLRDHUP): a read will see it.
    pub read_closed: bool,
}

impl Endpoint {
    /// An endpoint with no readiness known yet.
    pub fn new(fd: RawFd) -> Endpoint {
        Endpoint {
            fd,
            readable: false,
            writable: false,
            read_closed: false,
        }
    }
}

/// Fallback buffers lent to directions that cannot splice, bounded like pipes.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Vec<Box<[u8]>>,
}

impl BufPool {
    /// Keeps at most this many idle buffers for reuse; more are freed.
    const MAX_IDLE: usize = 64;

    fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
    }

    fn give(&mut self, buf: Box<[u8]>) {
        if self.free.len() < Self::MAX_IDLE && buf.len() == BUF_SIZE {
            self.free.push(buf);
        }
    }
}

/// The pools a direction borrows from while it has bytes in flight.
#[derive(Debug)]
pub struct Pools {
    /// Kernel pipes for splice.
    pub pipes: PipePool,
    /// Buffers for read/write.
    pub bufs: BufPool,
    /// Bytes moved with splice, for `show info`'s TotalSplicedBytesOut.
    pub spliced_bytes: u64,
}

/// Which socket failed during a pump.
#[derive(Debug)]
pub enum Fault {
    /// Reading the source failed (e.g. the sender reset the connection).
    Source(io::Error),
    /// Writing the destination failed (e.g. the receiver reset or closed).
    Destination(io::Error),
}

/// What a pump call achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Bytes written to the destination during this call.
    pub bytes: usize,
    /// The call stopped on its budget with work left: call again next turn.
    pub more: bool,
}

struct Buffer {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

/// One direction's state. See the module docs for the state machine.
pub struct Half {
    pipe: Option<Pipe>,
    /// Bytes in `pipe`.
    in_pipe: usize,
    buf: Option<Buffer>,
    /// Splice allowed (config `splice`, cleared if the kernel refuses it).
    splice: bool,
    /// A read filled the whole buffer: this direction carries bulk, and
    /// splices once its buffer has drained.
    bulk: bool,
    /// The source's FIN has been read.
    pub eof: bool,
    /// The FIN has been forwarded: the destination's write side is shut.
    pub shut: bool,
    /// Bytes written to the destination so far.
    pub bytes: u64,
}

impl Half {
    /// A direction that will use splice when `splice` is true.
    pub fn new(splice: bool) -> Half {
        Half {
            pipe: None,
            in_pipe: 0,
            buf: None,
            splice,
            bulk: false,
            eof: false,
            shut: false,
            bytes: 0,
        }
    }

    /// Allows or forbids splice for this direction (frontend and backend must both allow it).
    pub fn set_splice(&mut self, splice: bool) {
        self.splice = splice;
    }

    /// Queues bytes already read from the source (by an HTTP exchange that
    /// became a tunnel): they go out before anything read later.
    pub fn preload(&mut self, bytes: &[u8], pools: &mut Pools) {
        if bytes.is_empty() {
            return;
        }
        let mut data = if bytes.len() <= BUF_SIZE {
            pools.bufs.take()
        } else {
            vec![0u8; bytes.len()].into_boxed_slice()
        };
        data[..bytes.len()].copy_from_slice(bytes);
        self.buf = Some(Buffer {
            data,
            start: 0,
            end: bytes.len(),
        });
    }

    /// Bytes read from the source and not yet written.
    pub fn in_flight(&self) -> usize {
        self.in_pipe + self.buf.as_ref().map_or(0, |b| b.end - b.start)
    }

    /// Whether this direction is finished: FIN read and forwarded.
    pub fn done(&self) -> bool {
        self.shut
    }

    /// Moves as many bytes as the kernel allows, up to `budget` bytes, then
    /// forwards a FIN if one is due. Updates the endpoints' readiness.
    /// `last`: the other direction is done, so the connection closes as soon
    /// as this FIN is due, and close(2) sends it (no shutdown call).
    pub fn pump(
        &mut self,
        src: &mut Endpoint,
        dst: &mut Endpoint,
        pools: &mut Pools,
        budget: usize,
        last: bool,
    ) -> Result<Pumped, Fault> {
        let mut out = Pumped::default();
        loop {
            if out.bytes >= budget {
                out.more = true;
                break;
            }
            let mut progress = self.fill(src, pools)?;
            if progress && src.read_closed && src.readable && !self.eof && self.buf.is_some() {
                // The peer's FIN is known to follow: read it now, so the
                // data goes out with the FIN in one segment (below).
                progress |= self.fill(src, pools)?;
            }
            let n = self.drain(dst, pools)?;
            out.bytes += n;
            progress |= n > 0;
            if self.in_flight() == 0 {
                // Nothing in flight: buffer and pipe go back to the pools
                // (a bulk direction then fills the pipe next).
                self.release(pools);
                if self.eof && !self.shut {
                    if !last {
                        // ENOTCONN: the peer is already fully gone; nothing
                        // to tell it.
                        let _ = shutdown(dst.fd, Shutdown::Write);
                    }
                    self.shut = true;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        Ok(out)
    }

    /// One fill step (see the module docs), for a speculative read.
    pub(crate) fn fill_once(
        &mut self,
        src: &mut Endpoint,
        pools: &mut Pools,
    ) -> Result<bool, Fault> {
        self.fill(src, pools)
    }

    /// One drain step, for a speculative write; `Ok(0)` with the
    /// destination no longer writable means it would block.
    pub(crate) fn drain_once(
        &mut self,
        dst: &mut Endpoint,
        pools: &mut Pools,
    ) -> Result<usize, Fault> {
        self.drain(dst, pools)
    }

    /// Gives pipe and buffer back; called when nothing is in flight or the
    /// connection is being torn down (then leftovers make the pipe unusable).
    pub fn release(&mut self, pools: &mut Pools) {
        if let Some(p) = self.pipe.take() {
            pools.pipes.give(p, self.in_pipe == 0);
            self.in_pipe = 0;
        }
        if let Some(b) = self.buf.take() {
            pools.bufs.give(b.data);
        }
    }

    fn fill(&mut self, src: &mut Endpoint, pools: &mut Pools) -> Result<bool, Fault> {
        if self.eof || !src.readable {
            return Ok(false);
        }
        if self.buf.is_none() && self.splice && self.bulk {
            if self.pipe.is_none() {
                self.pipe = pools.pipes.take_for(self.bytes);
            }
            if let Some(pipe) = &self.pipe {
                let room = pipe.capacity().saturating_sub(self.in_pipe);
                if room == 0 {
                    return Ok(false);
                }
                match pipe.fill_from(src.fd, room) {
                    Ok(Moved::Bytes(n)) => {
                        self.in_pipe += n;
                        return Ok(true);
                    }
                    Ok(Moved::Eof) => {
                        self.eof = true;
                        return Ok(true);
                    }
                    Ok(Moved::WouldBlock) => {
                        // With bytes in the pipe, EAGAIN may mean "pipe full":
                        // keep the source readable and retry after a drain.
                        if self.in_pipe == 0 {
                            src.readable = false;
                        }
                        return Ok(false);
                    }
                    Err(e) if splice_refused(&e) => {
                        self.splice = false;
                        if self.in_pipe == 0 {
                            self.release(pools);
                        } else {
                            return Ok(false);
                        }
                    }
                    Err(e) => return Err(Fault::Source(e)),
                }
            }
        }
        if self.in_pipe > 0 {
            return Ok(false);
        }
        let buf = self.buf.get_or_insert_with(|| Buffer {
            data: pools.bufs.take(),
            start: 0,
            end: 0,
        });
        if buf.start == buf.end {
            buf.start = 0;
            buf.end = 0;
        }
        if buf.end == buf.data.len() {
            return Ok(false);
        }
        let want = buf.data.len() - buf.end;
        match read(src.fd, &mut buf.data[buf.end..]) {
            Ok(0) => {
                self.eof = true;
                Ok(true)
            }
            Ok(n) => {
                buf.end += n;
                if n == buf.data.len() {
                    // A whole buffer at once: bulk, splice from now on.
                    self.bulk = true;
                }
                if n < want && !src.read_closed {
                    // Drained: the next bytes come with a new edge.
                    src.readable = false;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                src.readable = false;
                Ok(false)
            }
            Err(e) => Err(Fault::Source(e)),
        }
    }

    fn drain(&mut self, dst: &mut Endpoint, pools: &mut Pools) -> Result<usize, Fault> {
        if !dst.writable {
            return Ok(0);
        }
        if let Some(pipe) = &self.pipe {
            if self.in_pipe == 0 {
                return Ok(0);
            }
            return match pipe.drain_to(dst.fd, self.in_pipe) {
                Ok(Moved::Bytes(n)) => {
                    self.in_pipe -= n;
                    self.bytes += n as u64;
                    pools.spliced_bytes += n as u64;
                    Ok(n)
                }
                Ok(Moved::WouldBlock) => {
                    dst.writable = false;
                    Ok(0)
                }
                Ok(Moved::Eof) => Ok(0),
                Err(e) => Err(Fault::Destination(e)),
            };
        }
        let Some(buf) = &mut self.buf else {
            return Ok(0);
        };
        if buf.start == buf.end {
            return Ok(0);
        }
        let offered = buf.end - buf.start;
        // The source's FIN came with the data: hold the data (MSG_MORE) so
        // the FIN that follows at once (shutdown or close) rides in the
        // same segment. One segment less, sent and received.
        let more = self.eof;
        match send(dst.fd, &buf.data[buf.start..buf.end], more) {
            Ok(n) => {
                buf.start += n;
                self.bytes += n as u64;
                if n < offered {
                    // The socket is full: wait for the next writable edge.
                    dst.writable = false;
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                dst.writable = false;
                Ok(0)
            }
            Err(e) => Err(Fault::Destination(e)),
        }
    }
}

/// The kernel cannot splice between these fds: use read/write instead.
fn splice_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn send(fd: RawFd, buf: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    loop {
        // SAFETY: `buf` is a valid readable slice; MSG_NOSIGNAL avoids SIGPIPE.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// shutdown(2) on a raw fd.
pub fn shutdown(fd: RawFd, how: Shutdown) -> io::Result<()> {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: plain syscall on an fd owned by the caller.
    if unsafe { libc::shutdown(fd, how) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn pools() -> Pools {
        Pools {
            pipes: PipePool::new(4, 1),
            bufs: BufPool::default(),
            spliced_bytes: 0,
        }
    }

    /// Runs one direction over socket pairs: `a` writes into the proxy's source,
    /// the proxy writes into `d`.
    fn roundtrip(splice: bool) {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let mut src = Endpoint::new(b.as_raw_fd());
        let mut dst = Endpoint::new(c.as_raw_fd());
        let mut pools = pools();
        let mut half = Half::new(splice);
        half.bulk = splice; // as if a full buffer had been read: splice now
        a.write_all(b"ping").unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        // As the poller reports it: readable, with the peer's FIN (RDHUP).
        src.readable = true;
        src.read_closed = true;
        dst.writable = true;
        let r = half
            .pump(&mut src, &mut dst, &mut pools, usize::MAX, false)
            .ok()
            .unwrap();
        assert_eq!(r.bytes, 4);
        assert!(half.eof && half.shut, "FIN forwarded once drained");
        let mut got = Vec::new();
        d.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ping");
        assert_eq!(pools.pipes.used(), 0, "pipe given back when empty");
    }

    #[test]
    fn splice_direction_forwards_bytes_then_fin() {
        roundtrip(true);
    }

    #[test]
    fn buffer_direction_forwards_bytes_then_fin() {
        roundtrip(false);
    }

    #[test]
    fn blocked_destination_stops_reading_source() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let mut src = Endpoint::new(b.as_raw_fd());
        let mut dst = Endpoint::new(c.as_raw_fd());
        let mut pools = pools();
        let mut half = Half::new(false);
        a.write_all(&[7u8; 100]).unwrap();
        src.readable = true;
        dst.writable = false;
        let r = half
            .pump(&mut src, &mut dst, &mut pools, usize::MAX, false)
            .ok()
            .unwrap();
        assert_eq!(r.bytes, 0);
        assert_eq!(
            half.in_flight(),
            100,
            "read once into the buffer, then wait"
        );
        assert!(!half.shut);
    }
}

#[cfg(test)]
mod bulk_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A small message is copied (one read, one write, no pipe); a full
    /// buffer's worth switches the direction to splice.
    #[test]
    fn small_messages_are_copied_and_bulk_is_spliced() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let mut src = Endpoint::new(b.as_raw_fd());
        let mut dst = Endpoint::new(c.as_raw_fd());
        let mut pools = Pools {
            pipes: PipePool::new(4, 1),
            bufs: BufPool::default(),
            spliced_bytes: 0,
        };
        let mut half = Half::new(true);
        a.write_all(b"x").unwrap();
        src.readable = true;
        dst.writable = true;
        half.pump(&mut src, &mut dst, &mut pools, usize::MAX, false)
            .ok()
            .unwrap();
        assert!(
            !src.readable,
            "a short read drained the socket: no EAGAIN read"
        );
        assert_eq!(pools.spliced_bytes, 0, "one byte is copied, not spliced");
        let mut got = [0u8; 1];
        d.read_exact(&mut got).unwrap();
        assert!(!half.bulk);
        // Bulk: more than a buffer at once.
        let big = vec![7u8; 3 * BUF_SIZE];
        a.write_all(&big).unwrap();
        src.readable = true;
        half.pump(&mut src, &mut dst, &mut pools, usize::MAX, false)
            .ok()
            .unwrap();
        assert!(half.bulk, "a full buffer marks the direction as bulk");
        assert!(pools.spliced_bytes > 0, "the rest went through the pipe");
        let mut all = vec![0u8; big.len()];
        d.read_exact(&mut all).unwrap();
        assert_eq!(all, big);
    }
}
