//! Short naps between polls while events come thick and fast.
//!
//! A worker asleep in `epoll_wait` is woken by whoever makes one of its
//! sockets ready: on the CPU of the sending process, the kernel finds the
//! worker's CPU idle and sends it an inter-processor interrupt. Under load
//! that is tens of thousands of interrupts a second, paid by the peers'
//! CPUs (in a virtual machine each one is an exit to the hypervisor), and a
//! worker that empties its sockets quickly sleeps, and is woken, more often
//! than a slow one.
//!
//! So while the worker's recent waits were short, it does not wait in
//! `epoll_wait`: it naps [`NAP`] at a time (its own CPU's timer wakes it,
//! nothing is owed by the peer) and polls without waiting, for at most
//! [`WINDOW`]; only then does it wait as before. An idle worker, or one
//! whose events come further apart than [`BUSY`], never naps: it waits in
//! `epoll_wait` and uses no CPU. `[global] poll_naps = false` turns this
//! off.

use std::time::Duration;

/// One nap between polls.
pub const NAP: Duration = Duration::from_micros(40);
/// The most a worker naps before it waits in `epoll_wait`.
pub const WINDOW: Duration = Duration::from_micros(400);
/// Waits shorter than this on average mean events come thick and fast.
pub const BUSY: Duration = Duration::from_micros(200);

/// The running average of a worker's waits, and whether it naps.
#[derive(Debug)]
pub struct Napper {
    on: bool,
    /// Exponentially weighted average of recent waits (weight 1/8), ns.
    avg_wait_ns: u64,
}

impl Napper {
    /// A napper; `on` is `poll_naps`. It starts as if idle: the first naps
    /// come after a few short waits.
    pub fn new(on: bool) -> Napper {
        Napper {
            on,
            avg_wait_ns: BUSY.as_nanos() as u64 * 2,
        }
    }

    /// How long to nap before waiting, for a wait of at most `timeout`
    /// (`None`: no deadline): zero when the recent waits were long or naps
    /// are off, at most [`WINDOW`], and never past the deadline.
    pub fn span(&self, timeout: Option<Duration>) -> Duration {
        if !self.on || self.avg_wait_ns >= BUSY.as_nanos() as u64 {
            return Duration::ZERO;
        }
        timeout.map_or(WINDOW, |t| t.min(WINDOW))
    }

    /// Records how long the last wait (naps included) took.
    pub fn waited(&mut self, d: Duration) {
        let d = d.as_nanos().min(u64::MAX as u128) as u64;
        self.avg_wait_ns = self.avg_wait_ns - self.avg_wait_ns / 8 + d / 8;
    }
}

/// Puts the calling thread's timer slack at 1 µs, so a nap of [`NAP`] is
/// that long, not the default slack's 50 µs more.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the
    // calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_follow_short_waits_and_stop_after_long_ones() {
        let mut n = Napper::new(true);
        assert!(n.span(None).is_zero(), "a fresh worker waits");
        for _ in 0..32 {
            n.waited(Duration::from_micros(10));
        }
        assert_eq!(n.span(None), WINDOW);
        // Never past a deadline.
        let soon = Duration::from_micros(100);
        assert_eq!(n.span(Some(soon)), soon);
        assert!(n.span(Some(Duration::ZERO)).is_zero());
        // A few long waits (load gone) and it waits again.
        for _ in 0..8 {
            n.waited(Duration::from_millis(5));
        }
        assert!(n.span(None).is_zero());
        // Off is off.
        let mut off = Napper::new(false);
        for _ in 0..32 {
            off.waited(Duration::ZERO);
        }
        assert!(off.span(None).is_zero());
    }
}
