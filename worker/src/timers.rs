//! Deadlines of connections: a min-heap with lazy deletion.
//!
//! A connection pushes an entry only when its deadline may have moved *earlier*
//! (a state change: queued, connecting, established) and remembers the one it
//! armed last; entries it armed before are stale and dropped when they fire.
//! Activity that pushes the deadline *later* (bytes moved) only updates the
//! connection's own clock; when its current entry fires, the owner recomputes
//! its real deadline and re-arms. So a connection has one live entry. So the per-byte path never touches the heap, and an idle worker
//! sleeps exactly until the next deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A set of (deadline, key, serial) entries; `serial` tells a reused key apart.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    /// Arms a deadline for `key` whose incarnation is `serial`.
    pub fn arm(&mut self, at: Instant, key: usize, serial: u64) {
        self.heap.push(Reverse((at, key, serial)));
    }

    /// The earliest armed deadline, to bound the poll timeout.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops one entry that is due at `now`, if any: (key, serial, deadline).
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, Instant)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                self.heap.pop().map(|Reverse((at, k, s))| (k, s, at))
            }
            _ => None,
        }
    }

    /// Number of armed entries (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.arm(now + Duration::from_secs(2), 1, 0);
        t.arm(now + Duration::from_secs(1), 2, 0);
        assert_eq!(t.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(3)),
            Some((2, 0, now + Duration::from_secs(1)))
        );
        assert_eq!(
            t.pop_due(now + Duration::from_secs(3)),
            Some((1, 0, now + Duration::from_secs(2)))
        );
        assert!(t.is_empty());
    }
}
