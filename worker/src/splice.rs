//! Kernel pipes for zero-copy forwarding, and the bounded pool that lends them.
//!
//! splice(2) moves pages socket → pipe → socket without copying them through
//! user space. A pipe is only needed while bytes are in flight, so a direction
//! borrows one from the [`PipePool`] when it has something to move and gives it
//! back as soon as the pipe is empty again: an idle connection holds no pipe
//! and no pipe fds, which keeps 4 000 idle connections at 2 fds each.
//!
//! The pool is bounded (`maxpipes`, like HAProxy's): when it is exhausted a
//! direction falls back to read/write through a buffer for that round rather
//! than failing. A pipe returned with bytes still inside (a connection aborted
//! mid-transfer) is closed, never reused, so no byte can leak into another
//! connection.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One kernel pipe: the read end and the write end.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// Creates a non-blocking, close-on-exec pipe.
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }
}

/// What one splice call did.
#[derive(Debug, PartialEq, Eq)]
pub enum Moved {
    /// This many bytes moved (never 0).
    Bytes(usize),
    /// The source reached end of stream (a FIN was read).
    Eof,
    /// Nothing could move now: the source is empty or the destination is full.
    WouldBlock,
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Moved> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: plain syscall on fds owned by the caller; null offsets are
        // required for sockets and pipes.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n > 0 {
            return Ok(Moved::Bytes(n as usize));
        }
        if n == 0 {
            return Ok(Moved::Eof);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Moved::WouldBlock),
            _ => return Err(err),
        }
    }
}

impl Pipe {
    /// Moves up to `len` bytes from socket `src` into the pipe.
    pub fn fill_from(&self, src: RawFd, len: usize) -> io::Result<Moved> {
        splice(src, self.write.as_raw_fd(), len)
    }

    /// Moves up to `len` bytes from the pipe to socket `dst`.
    ///
    /// `Moved::Eof` cannot happen while the caller only asks for bytes it
    /// knows are in the pipe.
    pub fn drain_to(&self, dst: RawFd, len: usize) -> io::Result<Moved> {
        splice(self.read.as_raw_fd(), dst, len)
    }
}

/// A bounded pool of pipes shared by every connection of a worker.
#[derive(Debug)]
pub struct PipePool {
    free: Vec<Pipe>,
    /// Pipes currently lent out.
    used: usize,
    /// Cap on pipes alive at once (lent + free).
    max: usize,
    /// Requested pipe capacity in bytes (F_SETPIPE_SZ), 0 for the kernel default.
    size: usize,
    /// Bytes one pipe holds (read back with F_GETPIPE_SZ).
    capacity: usize,
    /// Pipe creations that failed (fd or memory limits): the caller used read/write instead.
    pub failures: u64,
}

impl PipePool {
    /// A pool that keeps at most `max` pipes alive, each of `size` bytes (0: kernel default).
    pub fn new(max: usize, size: usize) -> PipePool {
        PipePool {
            free: Vec::new(),
            used: 0,
            max,
            size,
            capacity: if size > 0 { size } else { 65536 },
            failures: 0,
        }
    }

    /// Lends a pipe, or `None` when the pool is exhausted or the kernel refused
    /// a new one: the caller then forwards through a buffer.
    pub fn take(&mut self) -> Option<Pipe> {
        if let Some(p) = self.free.pop() {
            self.used += 1;
            return Some(p);
        }
        if self.used >= self.max {
            return None;
        }
        match Pipe::new() {
            Ok(p) => {
                if self.size > 0 {
                    // SAFETY: fcntl on a pipe fd we own; failure only leaves the default size.
                    unsafe {
                        libc::fcntl(
                            p.write.as_raw_fd(),
                            libc::F_SETPIPE_SZ,
                            self.size as libc::c_int,
                        )
                    };
                }
                // SAFETY: fcntl on a pipe fd we own.
                let cap = unsafe { libc::fcntl(p.write.as_raw_fd(), libc::F_GETPIPE_SZ) };
                if cap > 0 {
                    self.capacity = cap as usize;
                }
                self.used += 1;
                Some(p)
            }
            Err(_) => {
                self.failures += 1;
                None
            }
        }
    }

    /// Gives a pipe back. `empty` says whether every byte put in was taken
    /// out; a pipe with leftovers is closed instead of reused.
    pub fn give(&mut self, pipe: Pipe, empty: bool) {
        self.used -= 1;
        if empty {
            self.free.push(pipe);
        }
    }

    /// Bytes one pipe holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The pool's bound (`maxpipes`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Pipes lent out right now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Pipes idle in the pool.
    pub fn free(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn pool_is_bounded_and_reuses_empty_pipes() {
        let mut pool = PipePool::new(2, 0);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(pool.take().is_none(), "a third pipe exceeds maxpipes");
        pool.give(a, true);
        assert_eq!(pool.free(), 1);
        pool.give(b, false);
        assert_eq!(
            pool.free(),
            1,
            "a pipe with leftovers is closed, not pooled"
        );
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn splice_moves_bytes_and_sees_eof() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let pipe = Pipe::new().unwrap();
        assert_eq!(
            pipe.fill_from(b.as_raw_fd(), 4096).unwrap(),
            Moved::WouldBlock
        );
        a.write_all(b"hello").unwrap();
        assert_eq!(
            pipe.fill_from(b.as_raw_fd(), 4096).unwrap(),
            Moved::Bytes(5)
        );
        assert_eq!(pipe.drain_to(c.as_raw_fd(), 5).unwrap(), Moved::Bytes(5));
        let mut got = [0u8; 5];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        drop(a);
        assert_eq!(pipe.fill_from(b.as_raw_fd(), 4096).unwrap(), Moved::Eof);
    }
}
