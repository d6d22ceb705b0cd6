//! Deadlines of connections: an ordered set with removal, so the set holds
//! exactly one entry per connection that has a deadline, never more.
//!
//! A connection arms an entry when its deadline may have moved *earlier* (a
//! state change: queued, connecting, established), replacing the one it
//! armed before ([`Timers::arm`] takes the old one out); a connection that
//! ends takes its entry out ([`Timers::cancel`]). Activity that pushes the
//! deadline *later* (bytes moved) only updates the connection's own clock;
//! when its entry fires, the owner recomputes its real deadline and re-arms.
//! So the per-byte path never touches the set, an idle worker sleeps exactly
//! until the next deadline, and the set's size follows open connections, not
//! the connection rate (a heap with lazy deletion kept a closed connection's
//! entry until its deadline: 36 M stale entries at 10 000 connections/s with
//! 1 h timeouts). HAProxy does the same with an ebtree and removal.

use std::collections::BTreeSet;
use std::time::Instant;

/// A set of (deadline, key, serial) entries; `serial` tells a reused key apart.
#[derive(Debug, Default)]
pub struct Timers {
    set: BTreeSet<(Instant, usize, u64)>,
}

impl Timers {
    /// Arms `at` for `key` (incarnation `serial`), replacing `previous`, the
    /// deadline this key armed before, if any.
    pub fn arm(&mut self, at: Instant, key: usize, serial: u64, previous: Option<Instant>) {
        if let Some(p) = previous {
            self.set.remove(&(p, key, serial));
        }
        self.set.insert((at, key, serial));
    }

    /// Takes out the entry `key` armed at `at`.
    pub fn cancel(&mut self, at: Instant, key: usize, serial: u64) {
        self.set.remove(&(at, key, serial));
    }

    /// The earliest armed deadline, to bound the poll timeout.
    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _, _)| at)
    }

    /// Pops one entry that is due at `now`, if any: (key, serial, deadline).
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, Instant)> {
        match self.set.first() {
            Some(&(at, _, _)) if at <= now => self.set.pop_first().map(|(at, k, s)| (k, s, at)),
            _ => None,
        }
    }

    /// Number of armed entries.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
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
        t.arm(now + Duration::from_secs(2), 1, 0, None);
        t.arm(now + Duration::from_secs(1), 2, 0, None);
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

    #[test]
    fn rearming_and_cancelling_keep_one_entry_per_connection() {
        let now = Instant::now();
        let mut t = Timers::default();
        let mut armed = None;
        for i in 0..100 {
            let at = now + Duration::from_secs(3600 - i);
            t.arm(at, 7, 1, armed);
            armed = Some(at);
        }
        assert_eq!(t.len(), 1, "re-arming replaces");
        t.cancel(armed.unwrap(), 7, 1);
        assert!(t.is_empty(), "a closed connection leaves nothing behind");
    }
}
