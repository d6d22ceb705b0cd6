//! Bytes counted as they flow: a long transfer (a 1 GB download, a
//! WebSocket open for hours) shows in `show stat`'s bin/bout and in the
//! stick tables' bytes counters while it runs, not only when it ends.
//! Each stream keeps what it already added; the flows add the rest once it
//! passes [`FLUSH_BYTES`], and whatever is left at the end.

use crate::worker::Worker;

/// Uncounted bytes of a stream that trigger adding them to the counters.
pub const FLUSH_BYTES: u64 = 1 << 20;

/// The bytes of one stream already added to the counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    counted_in: u64,
    counted_out: u64,
}

/// Where a stream's bytes are counted.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Frontend index.
    pub frontend: usize,
    /// Backend index and server index, when known.
    pub backend: Option<(usize, Option<usize>)>,
}

impl Tally {
    /// The bytes of totals `(bytes_in, bytes_out)` not counted yet, when
    /// they reach `min` together; they count as counted from now on.
    pub fn take(&mut self, bytes_in: u64, bytes_out: u64, min: u64) -> Option<(u64, u64)> {
        let d_in = bytes_in.saturating_sub(self.counted_in);
        let d_out = bytes_out.saturating_sub(self.counted_out);
        if d_in + d_out < min.max(1) {
            return None;
        }
        // Never backwards: a total that shrank (bytes moved to a tunnel that
        // counts them itself) is not counted again when it grows back.
        self.counted_in = self.counted_in.max(bytes_in);
        self.counted_out = self.counted_out.max(bytes_out);
        Some((d_in, d_out))
    }
}

impl Worker {
    /// Adds `bytes` (in, out) of client `key`'s stream to the counter rows
    /// of `to` and to the client's tracked stick-table entries.
    pub(crate) fn count_bytes(&mut self, key: usize, to: Target, bytes: (u64, u64)) {
        let (bytes_in, bytes_out) = bytes;
        self.rows.frontend_bytes(to.frontend, bytes_in, bytes_out);
        if let Some((be, srv)) = to.backend {
            self.rows.backend_bytes(be, srv, bytes_in, bytes_out);
        }
        if let Some(c) = self.clients.get(key) {
            self.sticky.add_bytes(&c.sc, bytes_in, bytes_out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_what_is_new_and_only_past_the_threshold() {
        let mut t = Tally::default();
        assert_eq!(t.take(10, 10, 100), None);
        assert_eq!(t.take(60, 50, 100), Some((60, 50)));
        assert_eq!(t.take(60, 50, 0), None, "nothing new");
        assert_eq!(t.take(61, 50, 0), Some((1, 0)));
        assert_eq!(t.take(61, 40, 0), None, "a total that shrank");
        assert_eq!(t.take(61, 51, 0), Some((0, 1)));
    }
}
