//! Where log lines go, without ever blocking the process that writes them.
//!
//! A stalled log reader (journald under pressure, a log shipper that stopped
//! reading a pipe) must not freeze a worker or the master. So every sink is
//! written without blocking, lines wait in a bounded buffer, and when the
//! buffer is full the newest line is dropped and counted (HAProxy drops log
//! lines too, and counts them). The owner of the sink flushes it once per
//! loop turn, and polls its fd for writability while it is blocked
//! ([`Sink::blocked_fd`]), so waiting lines go out as soon as the reader
//! reads again, and nothing spins meanwhile.
//!
//! Getting a non-blocking fd without touching anyone else's: O_NONBLOCK set
//! on an inherited stdout would change the open file description that the
//! parent shell (and every process sharing it) uses. So:
//! * a **socket** (journald's stdout stream) is written with
//!   `send(MSG_DONTWAIT)`, a per-call flag;
//! * a **pipe, tty or file** is reopened through `/proc/self/fd/N` with
//!   O_NONBLOCK: a new open file description of the same pipe or file;
//! * a **syslog** datagram socket is our own, non-blocking.
//!
//! Lines never interleave with other processes' lines on a pipe: each
//! write(2) is at most PIPE_BUF (4096) bytes of whole lines, which the kernel
//! writes atomically (all or nothing on a non-blocking pipe). Lines longer
//! than that are cut to fit. On a stream socket a write may be partial; the
//! rest follows at the next flush (a line may then be split by another
//! process's write, only when the reader has stalled).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Bytes the kernel writes atomically to a pipe (POSIX PIPE_BUF on Linux).
pub const PIPE_BUF: usize = 4096;
/// Default bound on the bytes waiting for a stalled reader.
pub const DEFAULT_CAPACITY: usize = 64 * 1024;

#[derive(Debug)]
enum Target {
    /// Reopened pipe, tty or file: write(2), non-blocking.
    Stream(OwnedFd),
    /// A pipe or tty that could not be reopened (permissions, a reader gone):
    /// a dup of the shared, blocking fd, written only when poll(2) says a
    /// whole atomic write fits (a pipe with room takes PIPE_BUF at once).
    Polled(OwnedFd),
    /// A connected stream socket: send(MSG_DONTWAIT | MSG_NOSIGNAL).
    Socket(OwnedFd),
    /// A datagram socket (syslog): one non-blocking send per line.
    Datagram(Option<UnixDatagram>),
    /// Nowhere (the target could not be opened): lines are counted as dropped.
    Null,
}

/// A non-blocking, bounded log sink. See the module docs.
#[derive(Debug)]
pub struct Sink {
    target: Target,
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    pos: usize,
    capacity: usize,
    blocked: bool,
    /// Lines dropped: the buffer was full, or the target failed.
    pub dropped: u64,
    /// Lines handed to the kernel.
    pub written: u64,
}

/// What [`classify`] found behind an fd.
#[derive(Debug, PartialEq, Eq)]
enum FdKind {
    Socket,
    Other,
}

fn classify(fd: RawFd) -> io::Result<FdKind> {
    // SAFETY: fstat into a plain-data struct on an fd the caller holds.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
        FdKind::Socket
    } else {
        FdKind::Other
    })
}

fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd the caller holds; the result is checked.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn open_nonblocking(path: &Path, append: bool) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .append(append)
        .create(false)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

impl Sink {
    fn with(target: Target) -> Sink {
        Sink {
            target,
            pending: Vec::new(),
            pos: 0,
            capacity: DEFAULT_CAPACITY,
            blocked: false,
            dropped: 0,
            written: 0,
        }
    }

    /// A sink on this process's fd `fd` (1: stdout, 2: stderr), reopened or
    /// flagged per call so that the shared description stays blocking.
    pub fn std(fd: RawFd) -> io::Result<Sink> {
        let target = match classify(fd)? {
            FdKind::Socket => Target::Socket(dup_cloexec(fd)?),
            FdKind::Other => {
                let path = format!("/proc/self/fd/{fd}");
                match open_nonblocking(Path::new(&path), true) {
                    Ok(f) => Target::Stream(f),
                    Err(_) => Target::Polled(dup_cloexec(fd)?),
                }
            }
        };
        Ok(Sink::with(target))
    }

    /// A sink appending to the file at `path` (created if needed).
    pub fn file(path: &Path) -> io::Result<Sink> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Sink::with(Target::Stream(f.into())))
    }

    /// A sink sending one datagram per line to the local syslog socket.
    /// Without a syslog daemon, lines are counted as dropped.
    pub fn syslog() -> Sink {
        let sock = UnixDatagram::unbound().ok().and_then(|s| {
            s.connect("/dev/log").ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        });
        Sink::with(Target::Datagram(sock))
    }

    /// A sink that drops everything (counted).
    pub fn null() -> Sink {
        Sink::with(Target::Null)
    }

    /// Bounds the bytes waiting for a stalled reader.
    pub fn set_capacity(&mut self, bytes: usize) {
        self.capacity = bytes.max(PIPE_BUF);
    }

    /// Whether lines go out one datagram each (syslog): no buffering.
    pub fn is_datagram(&self) -> bool {
        matches!(self.target, Target::Datagram(_))
    }

    /// Queues one line (without its newline; one is added). A line longer
    /// than fits one atomic write is cut; a line that does not fit in the
    /// buffer is dropped and counted.
    pub fn push_line(&mut self, line: &[u8]) {
        let line = &line[..line.len().min(PIPE_BUF - 1)];
        match &self.target {
            Target::Datagram(sock) => {
                let sent = sock.as_ref().is_some_and(|s| s.send(line).is_ok());
                if sent {
                    self.written += 1;
                } else {
                    self.dropped += 1;
                }
                return;
            }
            Target::Null => {
                self.dropped += 1;
                return;
            }
            _ => {}
        }
        if self.pos > 0 && self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
        }
        if self.pending.len() - self.pos + line.len() + 1 > self.capacity {
            self.dropped += 1;
            return;
        }
        if self.pos > self.capacity {
            // Reclaim what was written so the buffer stays bounded.
            self.pending.drain(..self.pos);
            self.pos = 0;
        }
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
    }

    /// Bytes waiting.
    pub fn pending(&self) -> usize {
        self.pending.len() - self.pos
    }

    /// Writes what the target takes now, never blocking. Call once per loop
    /// turn, and when [`Sink::blocked_fd`] polls writable.
    pub fn flush(&mut self) {
        self.blocked = false;
        while self.pos < self.pending.len() {
            let rest = &self.pending[self.pos..];
            // Whole lines, at most PIPE_BUF bytes: one atomic write.
            let window = &rest[..rest.len().min(PIPE_BUF)];
            let chunk = match window.iter().rposition(|&b| b == b'\n') {
                Some(i) => &window[..=i],
                None => window,
            };
            let r = match &self.target {
                Target::Stream(fd) => write(fd.as_raw_fd(), chunk),
                Target::Polled(fd) if writable_now(fd.as_raw_fd()) => write(fd.as_raw_fd(), chunk),
                Target::Polled(_) => Err(io::ErrorKind::WouldBlock.into()),
                Target::Socket(fd) => send(fd.as_raw_fd(), chunk),
                _ => Ok(chunk.len()),
            };
            match r {
                Ok(n) => {
                    self.written += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                    self.pos += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    break;
                }
                Err(_) => {
                    // The reader is gone or the disk is full: what waits is lost.
                    self.dropped += rest.iter().filter(|&&b| b == b'\n').count() as u64;
                    self.pos = self.pending.len();
                }
            }
        }
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
        }
    }

    /// The fd to poll for writability, while a flush is waiting on it.
    pub fn blocked_fd(&self) -> Option<RawFd> {
        if !self.blocked {
            return None;
        }
        match &self.target {
            Target::Stream(fd) | Target::Socket(fd) | Target::Polled(fd) => Some(fd.as_raw_fd()),
            _ => None,
        }
    }

    /// Forgets what waits (a forked child: the parent writes its own lines).
    pub fn discard_pending(&mut self) {
        self.pending.clear();
        self.pos = 0;
    }
}

/// Whether a write of at most PIPE_BUF bytes to `fd` cannot block now.
fn writable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLOUT != 0 }
}

/// Keeps a blocked sink's fd registered (edge-triggered, writable) in a
/// poller while lines wait on it, and only then.
#[derive(Debug, Default)]
pub struct BlockedPoll(Option<RawFd>);

impl BlockedPoll {
    /// Registers `want` (the sink's [`Sink::blocked_fd`]) under `token`, or
    /// deregisters what no longer waits.
    pub fn sync(&mut self, registry: &mio::Registry, token: mio::Token, want: Option<RawFd>) {
        if want == self.0 {
            return;
        }
        if let Some(fd) = self.0.take() {
            let _ = registry.deregister(&mut mio::unix::SourceFd(&fd));
        }
        if let Some(fd) = want {
            if registry
                .register(
                    &mut mio::unix::SourceFd(&fd),
                    token,
                    mio::Interest::WRITABLE,
                )
                .is_ok()
            {
                self.0 = Some(fd);
            }
        }
    }
}

fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid readable slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid readable slice; the flags make this call
        // non-blocking and keep SIGPIPE away, without changing the fd.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two ends.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 made two fds nobody else owns.
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                OwnedFd::from_raw_fd(fds[1]),
            )
        }
    }

    #[test]
    fn a_stalled_pipe_never_blocks_and_drops_what_does_not_fit() {
        let (mut reader, w) = pipe();
        // The writer's own description stays blocking: only the sink's is not.
        let mut sink = Sink::with(Target::Stream(
            open_nonblocking(Path::new(&format!("/proc/self/fd/{}", w.as_raw_fd())), true).unwrap(),
        ));
        sink.set_capacity(16 * 1024);
        let line = [b'x'; 99];
        for _ in 0..10_000 {
            sink.push_line(&line);
            sink.flush();
        }
        assert!(sink.dropped > 0, "the buffer is bounded");
        assert!(sink.blocked_fd().is_some(), "waiting on the pipe");
        // SAFETY: fcntl on our fd.
        let flags = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(
            flags & libc::O_NONBLOCK,
            0,
            "the shared description is untouched"
        );
        // The reader comes back: every line that was kept arrives whole.
        let mut got = Vec::new();
        reader.set_nonblocking(true).ok();
        loop {
            sink.flush();
            let mut buf = [0u8; 65536];
            match reader.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ if sink.pending() == 0 => break,
                _ => {}
            }
        }
        assert!(got
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .all(|l| l == line));
        assert_eq!(
            got.len() as u64 / 100,
            sink.written,
            "what was written is what arrived"
        );
        assert_eq!(sink.written + sink.dropped, 10_000);
    }

    #[test]
    fn lines_longer_than_an_atomic_write_are_cut() {
        let (mut reader, w) = pipe();
        let mut sink = Sink::with(Target::Stream(w));
        sink.push_line(&[b'y'; 10_000]);
        sink.flush();
        let mut buf = vec![0u8; 8192];
        let n = reader.read(&mut buf).unwrap();
        assert_eq!(n, PIPE_BUF);
        assert_eq!(buf[n - 1], b'\n');
    }

    trait NonBlocking {
        fn set_nonblocking(&mut self, on: bool) -> io::Result<()>;
    }
    impl NonBlocking for std::fs::File {
        fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
            // SAFETY: fcntl on our own read end.
            unsafe {
                let fl = libc::fcntl(self.as_raw_fd(), libc::F_GETFL);
                let fl = if on {
                    fl | libc::O_NONBLOCK
                } else {
                    fl & !libc::O_NONBLOCK
                };
                libc::fcntl(self.as_raw_fd(), libc::F_SETFL, fl);
            }
            Ok(())
        }
    }
}
