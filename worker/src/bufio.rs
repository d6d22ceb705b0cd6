//! Byte buffers between a socket and the HTTP codec, and the reads and
//! writes that fill and drain them under edge-triggered readiness.
//!
//! A [`Buf`] is a vector with a consumed prefix: bytes are appended at the
//! end and consumed from the front; the prefix is reclaimed when it passes
//! half the buffer, and an empty buffer gives its memory back
//! ([`Buf::shrink_if_empty`]), so an idle keep-alive connection holds none.
//!
//! The readiness rules are those of [`crate::forward`]: a read that
//! returns less than asked drained the socket (unless the peer's FIN is
//! known to follow), a write that takes less than offered filled it.

use std::io;

use crate::forward::Endpoint;

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

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
    }

    /// Frees the memory of an empty buffer.
    pub fn shrink_if_empty(&mut self) {
        if self.is_empty() && self.data.capacity() > 0 {
            self.data = Vec::new();
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
            let b = self.as_slice();
            let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
            // SAFETY: sending from a live slice of `b.len()` bytes.
            let n = unsafe { libc::send(ep.fd, b.as_ptr().cast(), b.len(), flags) };
            if n >= 0 {
                let n = n as usize;
                if n < b.len() {
                    ep.writable = false;
                }
                self.consume(n);
                total += n;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => ep.writable = false,
                _ => return Io::Failed(e),
            }
        }
        if total > 0 {
            Io::Done(total)
        } else {
            Io::Blocked
        }
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

    #[test]
    fn take_returns_unconsumed() {
        let mut b = Buf::default();
        b.extend(b"hello world");
        b.consume(6);
        assert_eq!(b.take(), b"world");
        assert!(b.is_empty());
    }
}
