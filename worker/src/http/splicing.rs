//! Message bodies moved with splice(2): socket → pipe → socket, zero-copy,
//! exactly the body's bytes and never past the message.
//!
//! A body splices only where its bytes can pass as they are: the rest of a
//! Content-Length body, or the data of one chunk (the framing between
//! chunks is still parsed and written canonical by the copy path). And only
//! for bulk: at least [`SPLICE_MIN`] bytes must be left, since for small
//! data a splice (two calls, plus an EAGAIN each) costs more than a copy.
//! So a small message never takes this path, and chunks under 16 KiB are
//! copied.
//!
//! Order is kept by construction: a splice starts only when nothing is
//! buffered on either side (the source's read buffer and the destination's
//! write buffer are empty), and while its pipe holds bytes the source is
//! not read into the buffer and nothing is queued behind it.

use corral_http::h1::Body;

use crate::forward::{Endpoint, Pools};
use crate::splice::{Moved, Pipe};

/// The least body data left for a splice to be worth it.
pub(crate) const SPLICE_MIN: u64 = 16 * 1024;

/// A body direction's pipe while it splices.
#[derive(Default)]
pub struct BodyPipe {
    pipe: Option<Pipe>,
    /// Bytes in the pipe, not yet written to the destination.
    pub len: usize,
    /// The pool had no pipe for this body: it is copied to its end.
    pub copying: bool,
    /// The last fill was refused while the pipe held bytes: it is full
    /// (a pipe fills by slots, one per fragment, so short of its byte
    /// capacity), or the source had nothing; either way the destination
    /// has bytes to take first. Cleared by a drain.
    pub full: bool,
    /// Body bytes this message spliced so far: a long body gets a grown
    /// pipe (see [`crate::splice::GROW_AT`]).
    moved: u64,
}

/// What one splice step did.
#[derive(Debug, Default)]
pub(crate) struct Spliced {
    /// Bytes taken from the source (the body's decoder skipped them).
    pub read: usize,
    /// Bytes written to the destination.
    pub written: usize,
    /// The source's FIN came before the body's end.
    pub eof: bool,
}

impl Spliced {
    /// Whether the step changed anything (bytes, or the source's end).
    pub fn moved(&self) -> bool {
        self.read > 0 || self.written > 0 || self.eof
    }
}

/// Which side failed.
#[derive(Debug)]
pub(crate) enum SpliceError {
    /// Reading the source failed (a reset).
    Source,
    /// Writing the destination failed.
    Destination,
}

impl BodyPipe {
    /// Whether the pipe takes no more from the source until the
    /// destination takes some (see [`BodyPipe::full`]).
    pub fn blocked(&self) -> bool {
        self.full || self.pipe.as_ref().is_some_and(|p| self.len >= p.capacity())
    }

    /// Whether the direction splices now (a pipe is held).
    pub fn active(&self) -> bool {
        self.pipe.is_some()
    }

    /// Whether a splice may start: bulk left, nothing buffered on either
    /// side (`buffered`), a pipe free in the pool.
    pub(crate) fn may_start(&self, body: &Body, buffered: bool) -> bool {
        !self.copying && !buffered && body.raw_data_left().is_some_and(|n| n >= SPLICE_MIN)
    }

    /// Whether bulk data beyond the `buffered` bytes is left to a splice
    /// (so the copy path does not read it): more than [`SPLICE_MIN`] raw
    /// bytes of `body` lie beyond them, and no pipe was refused.
    pub(crate) fn leaves_to_splice(&self, body: &Body, buffered: usize) -> bool {
        !self.copying
            && body
                .raw_data_left()
                .is_some_and(|n| n >= buffered as u64 + SPLICE_MIN)
    }

    /// A new message: the next body may splice again.
    pub(crate) fn reset(&mut self) {
        self.copying = false;
        self.moved = 0;
    }

    /// Moves body bytes from `src` to `dst` through the pipe, under
    /// `budget` bytes, until neither side can move. Takes a pipe first if
    /// none is held; `Ok(None)` when the pool has none (copy instead).
    pub(crate) fn step(
        &mut self,
        body: &mut Body,
        src: &mut Endpoint,
        dst: &mut Endpoint,
        pools: &mut Pools,
        budget: usize,
    ) -> Result<Option<Spliced>, SpliceError> {
        if self.pipe.is_none() {
            // What is left counts too: a long body known from its length
            // grows its pipe from the start.
            let ahead = body.raw_data_left().unwrap_or(0);
            match pools.pipes.take_for(self.moved.max(ahead)) {
                Some(p) => self.pipe = Some(p),
                None => {
                    // No pipe to be had: this body is copied (the copy
                    // path reads the source again).
                    self.copying = true;
                    return Ok(None);
                }
            }
        }
        let pipe = self.pipe.as_ref().expect("just taken");
        let cap = pipe.capacity();
        let mut done = Spliced::default();
        loop {
            let mut moved = false;
            let left = body.raw_data_left().unwrap_or(0) as usize;
            if src.readable && left > 0 && self.len < cap && done.read < budget {
                let want = left.min(cap - self.len);
                match pipe
                    .fill_from(src.fd, want)
                    .map_err(|_| SpliceError::Source)?
                {
                    Moved::Bytes(n) => {
                        self.len += n;
                        self.moved += n as u64;
                        done.read += n;
                        body.skip_data(n as u64);
                        moved = true;
                    }
                    Moved::Eof => {
                        src.readable = false;
                        done.eof = true;
                    }
                    // A full pipe says EAGAIN too: only an empty one means
                    // the socket is drained.
                    Moved::WouldBlock if self.len == 0 => src.readable = false,
                    Moved::WouldBlock => self.full = true,
                }
            }
            if self.len > 0 && dst.writable {
                match pipe
                    .drain_to(dst.fd, self.len)
                    .map_err(|_| SpliceError::Destination)?
                {
                    Moved::Bytes(n) => {
                        self.len -= n;
                        self.full = false;
                        done.written += n;
                        pools.spliced_bytes += n as u64;
                        moved = true;
                    }
                    Moved::WouldBlock | Moved::Eof => dst.writable = false,
                }
            }
            if !moved || done.eof || done.written >= budget {
                break;
            }
        }
        // Empty: the pipe goes back to the pool (the next step takes one
        // again), so a body waiting on a slow peer holds none; after the
        // data, the copy path takes the framing that follows.
        if self.len == 0 {
            self.release(pools);
        }
        Ok(Some(done))
    }

    /// Gives the pipe back (closed if bytes are left in it).
    pub(crate) fn release(&mut self, pools: &mut Pools) {
        if let Some(p) = self.pipe.take() {
            pools.pipes.give(p, self.len == 0);
            self.len = 0;
        }
        self.full = false;
    }
}
