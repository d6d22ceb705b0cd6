//! Kernel pipes for zero-copy forwarding, and the bounded pool that lends them.
//!
//! splice(2) moves pages socket → pipe → socket without copying them through
//! user space. A pipe is only needed while bytes are in flight, so a direction
//! borrows one from the [`PipePool`] when it has something to move and gives it
//! back as soon as the pipe is empty again: an idle connection holds no pipe
//! and no pipe fds, which keeps 4 000 idle connections at 2 fds each.
//!
//! **Pipes grow for long transfers.** A pipe starts at the kernel's default
//! (16 page slots: 64 KiB with 4 KiB pages). A direction that has carried,
//! or has ahead, [`GROW_AT`] bytes takes a grown pipe the next time it takes
//! one: an idle grown pipe, or one grown now to [`GROWN_SIZE`]
//! (F_SETPIPE_SZ), so each splice call moves up to twice as much. On
//! loopback bulk TCP that took the proxy's CPU per GB from 0.187 to 0.150 s
//! at the same throughput (`bench/tcp.sh`, 6 runs each, interleaved).
//! 256 KiB saved more CPU but its bursts tipped the loopback transfer into
//! its slow state (stop 23 of the notes) in 3 runs of 6, so not more. Grown
//! pipes stay grown in the pool, kept for
//! long transfers, and at most [`GROWN_MAX`] are alive at once over all
//! workers: the kernel charges every pipe's slots to its user
//! (`pipe-user-pages-soft`, 16 384 pages by default), and past that limit an
//! unprivileged user's new pipes get 2 slots, so big pipes for all would
//! starve the many. A pipe already at least that big (64 KiB pages) is
//! left alone.
//!
//! The pool is bounded (`maxpipes`, like HAProxy's): when it is exhausted a
//! direction falls back to read/write through a buffer for that round rather
//! than failing. A pipe returned with bytes still inside (a connection aborted
//! mid-transfer) is closed, never reused, so no byte can leak into another
//! connection.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A direction that has moved this many bytes gets a grown pipe.
pub const GROW_AT: u64 = 256 * 1024;

/// Bytes a grown pipe holds.
pub const GROWN_SIZE: usize = 128 * 1024;

/// Grown pipes alive at once, shared out over the workers: 64 pipes of 32
/// page slots are 2 048 pages, an eighth of the kernel's default per-user
/// soft limit (a reload's two generations make a quarter).
pub const GROWN_MAX: usize = 64;

/// Bytes a pipe holds when the kernel does not say (its default).
const DEFAULT_SIZE: usize = 64 * 1024;

/// One kernel pipe: the read end and the write end.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes it holds (F_GETPIPE_SZ).
    capacity: usize,
    /// A grow was tried (done or refused): never tried twice.
    grow_tried: bool,
    /// It was grown: counted in the pool's `grown`.
    grown: bool,
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
        let mut p = Pipe {
            read,
            write,
            capacity: DEFAULT_SIZE,
            grow_tried: false,
            grown: false,
        };
        p.capacity = p.size().unwrap_or(DEFAULT_SIZE);
        Ok(p)
    }

    /// The pipe's size as the kernel reports it.
    fn size(&self) -> Option<usize> {
        // SAFETY: fcntl on a pipe fd we own.
        let n = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        (n > 0).then_some(n as usize)
    }

    /// Bytes the pipe holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
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
    /// Idle pipes of the kernel's default size (or less).
    free: Vec<Pipe>,
    /// Idle grown pipes, kept for long transfers.
    free_grown: Vec<Pipe>,
    /// Pipes currently lent out.
    used: usize,
    /// Cap on pipes alive at once (lent + free).
    max: usize,
    /// Grown pipes alive (lent + free), at most `grown_max`.
    grown: usize,
    grown_max: usize,
    /// Pipe creations that failed (fd or memory limits): the caller used read/write instead.
    pub failures: u64,
}

impl PipePool {
    /// A pool that keeps at most `max` pipes alive, for one of `workers`
    /// workers: its share of [`GROWN_MAX`] may be grown (at least 4).
    pub fn new(max: usize, workers: usize) -> PipePool {
        PipePool::with_grown_max(max, (GROWN_MAX / workers.max(1)).max(4))
    }

    /// [`PipePool::new`] with `grown_max` grown pipes at most.
    pub fn with_grown_max(max: usize, grown_max: usize) -> PipePool {
        PipePool {
            free: Vec::new(),
            free_grown: Vec::new(),
            used: 0,
            max,
            grown: 0,
            grown_max,
            failures: 0,
        }
    }

    /// Lends a pipe, or `None` when the pool is exhausted or the kernel refused
    /// a new one: the caller then forwards through a buffer. A default-size
    /// pipe if one is idle: grown ones are kept for long transfers.
    pub fn take(&mut self) -> Option<Pipe> {
        self.lend(false)
    }

    fn lend(&mut self, long: bool) -> Option<Pipe> {
        let (first, second) = if long {
            (&mut self.free_grown, &mut self.free)
        } else {
            (&mut self.free, &mut self.free_grown)
        };
        if let Some(p) = first.pop().or_else(|| second.pop()) {
            self.used += 1;
            return Some(p);
        }
        if self.used >= self.max {
            return None;
        }
        match Pipe::new() {
            Ok(p) => {
                self.used += 1;
                Some(p)
            }
            Err(_) => {
                self.failures += 1;
                None
            }
        }
    }

    /// [`PipePool::take`] for a direction that has moved (or has ahead)
    /// `moved` bytes: from [`GROW_AT`] on it gets a grown pipe, an idle one
    /// or one grown now if the cap allows (see the module docs).
    pub fn take_for(&mut self, moved: u64) -> Option<Pipe> {
        let long = moved >= GROW_AT;
        let mut p = self.lend(long)?;
        if long && !p.grow_tried && p.capacity < GROWN_SIZE && self.grown < self.grown_max {
            p.grow_tried = true;
            // SAFETY: fcntl on a pipe fd we own. Refused (EPERM past the
            // user's pipe limits, or the size above pipe-max-size), the
            // pipe keeps its size; it is then not tried again.
            unsafe {
                libc::fcntl(
                    p.write.as_raw_fd(),
                    libc::F_SETPIPE_SZ,
                    GROWN_SIZE as libc::c_int,
                )
            };
            let before = p.capacity;
            p.capacity = p.size().unwrap_or(before);
            if p.capacity > before {
                p.grown = true;
                self.grown += 1;
            }
        }
        Some(p)
    }

    /// Grown pipes alive.
    pub fn grown(&self) -> usize {
        self.grown
    }

    /// Grown pipes idle in the pool.
    pub fn grown_free(&self) -> usize {
        self.free_grown.len()
    }

    /// Gives a pipe back. `empty` says whether every byte put in was taken
    /// out; a pipe with leftovers is closed instead of reused.
    pub fn give(&mut self, pipe: Pipe, empty: bool) {
        self.used -= 1;
        if !empty {
            if pipe.grown {
                // Closed with leftovers: one grown pipe less.
                self.grown -= 1;
            }
        } else if pipe.grown {
            self.free_grown.push(pipe);
        } else {
            self.free.push(pipe);
        }
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
        self.free.len() + self.free_grown.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn pool_is_bounded_and_reuses_empty_pipes() {
        let mut pool = PipePool::new(2, 1);
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

    /// Whether this kernel lets this user grow a pipe to [`GROWN_SIZE`]
    /// from a smaller default (4 KiB pages, under the user's pipe limits).
    fn can_grow() -> bool {
        let p = Pipe::new().unwrap();
        // SAFETY: fcntl on a pipe fd we own.
        let n = unsafe { libc::fcntl(p.write.as_raw_fd(), libc::F_SETPIPE_SZ, GROWN_SIZE as i32) };
        let ok = p.capacity < GROWN_SIZE && n == GROWN_SIZE as i32;
        if !ok {
            eprintln!(
                "SKIPPED: this kernel does not grow a pipe from {} to {GROWN_SIZE}",
                p.capacity
            );
        }
        ok
    }

    #[test]
    fn long_transfers_get_grown_pipes_within_a_cap() {
        if !can_grow() {
            return;
        }
        let mut pool = PipePool::with_grown_max(4, 1);
        let short = pool.take_for(GROW_AT - 1).unwrap();
        let default = short.capacity();
        assert_eq!(Some(default), short.size());
        assert!(default < GROWN_SIZE, "a short transfer keeps the default");
        let long = pool.take_for(GROW_AT).unwrap();
        assert_eq!(long.capacity(), GROWN_SIZE);
        assert_eq!(
            Some(long.capacity()),
            long.size(),
            "the kernel's own figure"
        );
        assert_eq!(pool.grown(), 1);
        let capped = pool.take_for(GROW_AT).unwrap();
        assert_eq!(capped.capacity(), default, "over the cap: not grown");
        // Idle, a grown pipe is kept for the next long transfer, and short
        // ones get a default pipe first, whatever came back last.
        pool.give(long, true);
        pool.give(short, true);
        assert_eq!(pool.grown(), 1);
        let again = pool.take_for(GROW_AT).unwrap();
        assert_eq!(again.capacity(), GROWN_SIZE, "the idle grown pipe");
        pool.give(again, true);
        let small = pool.take().unwrap();
        assert_eq!(
            small.capacity(),
            default,
            "a short one takes a default pipe"
        );
        // Closed with leftovers, a grown pipe is counted out, and the next
        // long transfer may grow one again.
        let again = pool.take_for(GROW_AT).unwrap();
        pool.give(again, false);
        assert_eq!(pool.grown(), 0);
        pool.give(small, true);
        let regrown = pool.take_for(GROW_AT).unwrap();
        assert_eq!(regrown.capacity(), GROWN_SIZE);
        assert_eq!(pool.grown(), 1);
        pool.give(regrown, true);
        pool.give(capped, true);
        assert_eq!((pool.used(), pool.free()), (0, 2));
    }

    #[test]
    fn the_grown_cap_is_shared_out_over_the_workers() {
        assert_eq!(PipePool::new(16, 1).grown_max, GROWN_MAX);
        assert_eq!(PipePool::new(16, 4).grown_max, GROWN_MAX / 4);
        assert_eq!(PipePool::new(16, 64).grown_max, 4, "at least 4 each");
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
