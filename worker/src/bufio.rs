//! Byte buffers between a socket and the HTTP codec, and the reads and
//! writes that fill and drain them under edge-triggered readiness.
//!
//! A [`Buf`] is a vector with a consumed prefix: bytes are appended at the
//! end and consumed from the front; the prefix is reclaimed when it passes
//! half the buffer, and an empty buffer gives its memory back between
//! requests ([`Buf::shrink_if_empty`]), so an idle keep-alive connection
//! holds none.
//!
//! The memory of a buffer given up (between requests, or dropped) goes to a
//! small per-thread spare list that the next read takes from, so a
//! keep-alive connection does not pay a malloc and a free per buffer per
//! request (HAProxy's buffer pools do the same). The list is bounded
//! ([`SPARE_MAX`] buffers of [`SPARE_MIN_CAP`] to [`SPARE_MAX_CAP`] bytes):
//! an idle worker keeps at most that.
//!
//! The readiness rules are those of [`crate::forward`]: a read that
//! returns less than asked drained the socket (unless the peer's FIN is
//! known to follow), a write that takes less than offered filled it.

use std::cell::RefCell;
use std::io;

use crate::forward::Endpoint;

/// Spare buffers kept per thread (each worker is one thread).
const SPARE_MAX: usize = 32;
/// Smaller buffers are not worth keeping (malloc's per-thread cache serves
/// them fast) and would be grown again by the first read.
const SPARE_MIN_CAP: usize = 16 * 1024;
/// Larger buffers (a head or a body that made one grow) are freed.
const SPARE_MAX_CAP: usize = 128 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Memory for a buffer about to read `want` bytes: a spare of at least
/// that and at most twice that (a small read never pins a large buffer),
/// or none (the read then allocates).
fn spare_take(want: usize) -> Vec<u8> {
    SPARE
        .try_with(|s| {
            let mut s = s.borrow_mut();
            let fit = s
                .iter()
                .rposition(|v| (want..=want.saturating_mul(2)).contains(&v.capacity()))?;
            Some(s.swap_remove(fit))
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps an emptied buffer's memory for the next one, within the bounds.
/// (Not while the thread is exiting: the list is gone, the memory is freed.)
fn spare_give(mut v: Vec<u8>) {
    if !(SPARE_MIN_CAP..=SPARE_MAX_CAP).contains(&v.capacity()) {
        return;
    }
    v.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_MAX {
            s.push(v);
        }
    });
}

/// A growable byte queue.
#[derive(Debug, Default)]
pub struct Buf {
    data: Vec<u8>,
    start: usize,
}

impl Buf {
    /// The bytes not consumed yet.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// How many bytes are queued.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the first `n` queued bytes.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.data.len());
        if self.start >= self.data.len() {
            // Emptied mid-stream: the memory stays for the next bytes (a
            // write buffer refilled at once would otherwise grow again).
            self.data.clear();
            self.start = 0;
        } else if self.start > 4096 && self.start * 2 > self.data.len() {
            self.data.drain(..self.start);
            self.start = 0;
        }
    }

    /// Appends bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// The vector to append to directly (encoders write here).
    pub fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Drops everything queued, and the memory (to the spare list).
    pub fn clear(&mut self) {
        spare_give(std::mem::take(&mut self.data));
        self.start = 0;
    }

    /// Gives up the memory of an empty buffer (to the spare list).
    pub fn shrink_if_empty(&mut self) {
        if self.is_empty() && self.data.capacity() > 0 {
            spare_give(std::mem::take(&mut self.data));
            self.start = 0;
        }
    }

    /// Takes the queued bytes out, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.data);
        v.drain(..self.start);
        self.start = 0;
        v
    }

    /// Reads once from `ep` into the buffer, at most `max` bytes.
    pub fn read_from(&mut self, ep: &mut Endpoint, max: usize) -> Io {
        if max == 0 {
            return Io::Blocked;
        }
        if self.data.capacity() == 0 {
            self.data = spare_take(max);
        }
        self.data.reserve(max);
        let spare = self.data.spare_capacity_mut();
        let want = max.min(spare.len());
        loop {
            // SAFETY: reading into the vector's spare capacity, `want`
            // bytes of it; only the bytes the kernel wrote are then
            // counted as initialised (set_len below).
            let n = unsafe { libc::recv(ep.fd, spare.as_mut_ptr().cast(), want, 0) };
            if n > 0 {
                let n = n as usize;
                // SAFETY: the kernel initialised `n` bytes past len.
                unsafe { self.data.set_len(self.data.len() + n) };
                if n < want && !ep.read_closed {
                    ep.readable = false;
                }
                return Io::Done(n);
            }
            if n == 0 {
                ep.readable = false;
                return Io::Eof;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    ep.readable = false;
                    return Io::Blocked;
                }
                _ => return Io::Failed(e),
            }
        }
    }

    /// Writes queued bytes to `ep` until it blocks or the buffer is empty.
    /// `more`: more bytes follow at once (MSG_MORE, so a head and the start
    /// of a body share a segment).
    pub fn write_to(&mut self, ep: &mut Endpoint, more: bool) -> Io {
        let mut total = 0;
        while !self.is_empty() && ep.writable {
            match send_once(ep, self.as_slice(), more) {
                Io::Done(n) => {
                    self.consume(n);
                    total += n;
                }
                Io::Failed(e) => return Io::Failed(e),
                _ => {}
            }
        }
        if total > 0 {
            Io::Done(total)
        } else {
            Io::Blocked
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        spare_give(std::mem::take(&mut self.data));
    }
}

/// One send(2) of `bytes` to `ep` (MSG_MORE with `more`): `Done(n)` with
/// the bytes the socket took (fewer than offered clears `ep.writable`),
/// `Blocked` when it took none. Lets a caller send straight from a buffer
/// it does not own, consuming only what went.
pub fn send_once(ep: &mut Endpoint, bytes: &[u8], more: bool) -> Io {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    loop {
        // SAFETY: sending from a live slice of `bytes.len()` bytes.
        let n = unsafe { libc::send(ep.fd, bytes.as_ptr().cast(), bytes.len(), flags) };
        if let Some(io) = sent(ep, n, bytes.len()) {
            return io;
        }
    }
}

/// [`send_once`] of `first` then `second` in one sendmsg(2): bytes queued
/// in a buffer (a head, chunk framing) and data that follows them in
/// another go out in order in one call, neither copied into the other.
/// `Done(n)` counts from the start of `first`.
pub fn send_pair(ep: &mut Endpoint, first: &[u8], second: &[u8]) -> Io {
    if first.is_empty() {
        return send_once(ep, second, false);
    }
    let iov = [
        libc::iovec {
            iov_base: first.as_ptr() as *mut libc::c_void,
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_ptr() as *mut libc::c_void,
            iov_len: second.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is a valid empty message (no name, no
    // control data); only its vector is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    loop {
        // SAFETY: `msg` points at `iov`, two live slices of the lengths
        // given; sendmsg only reads them.
        let n = unsafe { libc::sendmsg(ep.fd, &msg, libc::MSG_NOSIGNAL) };
        if let Some(io) = sent(ep, n, first.len() + second.len()) {
            return io;
        }
    }
}

/// What a send call's result `n` (of `offered` bytes) means for `ep`;
/// `None`: interrupted, call again.
fn sent(ep: &mut Endpoint, n: isize, offered: usize) -> Option<Io> {
    if n >= 0 {
        let n = n as usize;
        if n < offered {
            ep.writable = false;
        }
        return Some(if n > 0 { Io::Done(n) } else { Io::Blocked });
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => {
            ep.writable = false;
            Some(Io::Blocked)
        }
        _ => Some(Io::Failed(e)),
    }
}

/// What one read or write did.
#[derive(Debug)]
pub enum Io {
    /// Moved this many bytes.
    Done(usize),
    /// Nothing moved: the socket would block (or there was nothing to do).
    Blocked,
    /// The peer's FIN (reads only).
    Eof,
    /// The socket failed (a reset, a broken pipe).
    Failed(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_and_reclaim() {
        let mut b = Buf::default();
        b.extend(&[1u8; 10000]);
        b.consume(6000);
        assert_eq!(b.len(), 4000);
        assert_eq!(b.as_slice().len(), 4000);
        b.extend(b"xy");
        assert_eq!(&b.as_slice()[4000..], b"xy");
        b.consume(4002);
        assert!(b.is_empty());
        b.shrink_if_empty();
        assert_eq!(b.take(), Vec::<u8>::new());
    }

    /// `n` bytes read into `b` from a socket (recv needs one).
    fn read_n(b: &mut Buf, n: usize) {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut w, r) = std::os::unix::net::UnixStream::pair().unwrap();
        w.write_all(&vec![7u8; n]).unwrap();
        let mut ep = Endpoint::new(r.as_raw_fd());
        assert!(matches!(b.read_from(&mut ep, n), Io::Done(k) if k == n));
    }

    #[test]
    fn an_emptied_buffer_lends_its_memory_to_the_next_read() {
        let mut a = Buf::default();
        read_n(&mut a, 20000);
        let mem = a.as_slice().as_ptr();
        a.consume(20000);
        assert_eq!(
            SPARE.with_borrow(|s| s.len()),
            0,
            "kept while the stream goes on"
        );
        a.shrink_if_empty();
        let mut b = Buf::default();
        read_n(&mut b, 16384);
        assert_eq!(b.as_slice().as_ptr(), mem, "the same memory, no malloc");
        // A 64 KiB read does not take a 20 000-byte spare...
        let mut big = Buf::default();
        b.consume(16384);
        b.shrink_if_empty();
        read_n(&mut big, 65536);
        assert_ne!(big.as_slice().as_ptr(), mem);
        // ...and a 16 KiB read takes that one, not the 64 KiB spare: a
        // read never pins more than twice its size.
        drop(big);
        let mut small = Buf::default();
        read_n(&mut small, 16384);
        assert_eq!(
            small.as_slice().as_ptr(),
            mem,
            "the 20 000-byte spare, not the 64 KiB one"
        );
        assert_eq!(SPARE.with_borrow(|s| s.len()), 1, "the 64 KiB one is left");
        // Small writes (a head) never take a spare.
        let mut head = Buf::default();
        head.extend(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(SPARE.with_borrow(|s| s.len()), 1);
        // Too large to keep: freed.
        let mut huge = Buf::default();
        huge.extend(&vec![1u8; SPARE_MAX_CAP + 1]);
        drop(huge);
        assert_eq!(SPARE.with_borrow(|s| s.len()), 1);
        // Bounded: the list never holds more than SPARE_MAX.
        let many: Vec<Buf> = (0..SPARE_MAX + 8)
            .map(|_| {
                let mut b = Buf::default();
                b.extend(&[0u8; SPARE_MIN_CAP]);
                b
            })
            .collect();
        drop(many);
        assert_eq!(SPARE.with_borrow(|s| s.len()), SPARE_MAX);
    }

    #[test]
    fn take_returns_unconsumed() {
        let mut b = Buf::default();
        b.extend(b"hello world");
        b.consume(6);
        assert_eq!(b.take(), b"world");
        assert!(b.is_empty());
    }
}
