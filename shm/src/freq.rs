//! Rates over a sliding period, computed as HAProxy's `freq_ctr` does, so a
//! `conn_rate(10s)` means the same number in corral and in HAProxy for the
//! same stream of events.
//!
//! A counter keeps the events of the current period (which started at `tick`,
//! in ms) and the total of the previous one. Reading at `now` weighs the
//! previous period by the part of it still inside the sliding window:
//! `curr + prev * (period - elapsed) / period`, with HAProxy's anti-flapping
//! rule (with nothing in the current period and at most one event in the
//! previous, the previous count is returned as is). An event after a period
//! ended rotates: the previous total becomes the current one if the current
//! period just ended, 0 if more than a whole period passed; the new period
//! starts at the last period boundary (`now - (now - tick) % period`).
//!
//! Cross-process and lock-free: word A packs `tick:32 | curr:32` and is
//! updated with compare-and-swap (so a rotation and an increment never
//! interleave); word B packs `tick:32 | prev:32`, written by the rotating
//! process right after its CAS. A reader uses `prev` only if B's tick matches
//! A's: for the few nanoseconds of a rotation (or forever, for one period, if
//! the rotating process dies in between) the previous period counts as 0.
//! Ticks are milliseconds of CLOCK_MONOTONIC truncated to 32 bits, shared by
//! every process of the machine, compared with wrapping arithmetic.

use crate::primitive::{AtomicU64, Ordering};

/// A frequency counter: two words in a stick-table entry.
#[repr(C)]
pub struct FreqCtr {
    a: AtomicU64,
    b: AtomicU64,
}

fn pack(tick: u32, n: u32) -> u64 {
    (tick as u64) << 32 | n as u64
}

fn unpack(w: u64) -> (u32, u32) {
    ((w >> 32) as u32, w as u32)
}

impl FreqCtr {
    /// Adds `inc` events at time `now` (ms) for a counter of `period` ms.
    pub fn add(&self, now: u32, period: u32, inc: u32) {
        let mut cur = self.a.load(Ordering::Relaxed);
        loop {
            let (tick, curr) = unpack(cur);
            let elapsed = now.wrapping_sub(tick);
            let (next, rotated_prev) = if cur == 0 || elapsed >= period {
                // Rotation: a fresh counter (all zero) also starts a period.
                let prev = if cur != 0 && elapsed < period.saturating_mul(2) {
                    curr
                } else {
                    0
                };
                let start = if cur == 0 {
                    now - now % period
                } else {
                    now.wrapping_sub(elapsed % period)
                };
                (pack(start, inc), Some((start, prev)))
            } else {
                (pack(tick, curr.saturating_add(inc)), None)
            };
            match self
                .a
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if let Some((start, prev)) = rotated_prev {
                        self.b.store(pack(start, prev), Ordering::Release);
                    }
                    return;
                }
                Err(now_val) => cur = now_val,
            }
        }
    }

    /// The rate at time `now`: events per `period`, HAProxy's `read_freq_ctr_period`.
    pub fn read(&self, now: u32, period: u32) -> u32 {
        let a = self.a.load(Ordering::Acquire);
        if a == 0 {
            return 0;
        }
        let (tick, mut curr) = unpack(a);
        let (btick, bprev) = unpack(self.b.load(Ordering::Acquire));
        let mut past = if btick == tick { bprev } else { 0 };
        let mut elapsed = now.wrapping_sub(tick);
        if elapsed >= period {
            past = curr;
            curr = 0;
            elapsed -= period;
            if elapsed >= period {
                return 0;
            }
        }
        if curr == 0 && past <= 1 {
            return past;
        }
        curr + ((past as u64 * (period - elapsed) as u64) / period as u64) as u32
    }

    /// Copies another counter's state (table migration on reload).
    pub fn copy_from(&self, other: &FreqCtr) {
        self.a
            .store(other.a.load(Ordering::Acquire), Ordering::Relaxed);
        self.b
            .store(other.b.load(Ordering::Acquire), Ordering::Release);
    }

    /// Sets the counter as `set table` does: current = `n`, previous = 0, tick = now.
    pub fn set(&self, now: u32, n: u32) {
        self.a.store(pack(now, n), Ordering::Release);
        self.b.store(0, Ordering::Release);
    }
}

/// Milliseconds of CLOCK_MONOTONIC, truncated to 32 bits: the same clock in
/// every process of the machine. Never 0 (0 marks "never set").
pub fn now_ms() -> u32 {
    // SAFETY: plain data filled by the kernel.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ms = (ts.tv_sec as u64)
        .wrapping_mul(1000)
        .wrapping_add(ts.tv_nsec as u64 / 1_000_000) as u32;
    ms.max(1)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ctr() -> FreqCtr {
        FreqCtr {
            a: AtomicU64::new(0),
            b: AtomicU64::new(0),
        }
    }

    #[test]
    fn counts_within_a_period() {
        let c = ctr();
        for _ in 0..10 {
            c.add(100_500, 1000, 1);
        }
        assert_eq!(c.read(100_600, 1000), 10);
    }

    #[test]
    fn previous_period_weighs_by_the_remaining_window() {
        let c = ctr();
        // Period [100000, 101000): 10 events. Then 2 events at 101250.
        for _ in 0..10 {
            c.add(100_100, 1000, 1);
        }
        c.add(101_250, 1000, 2);
        // At 101500: curr 2 + 10 * (1000 - 500) / 1000 = 7.
        assert_eq!(c.read(101_500, 1000), 7);
        // Two periods later everything is gone.
        assert_eq!(c.read(103_000, 1000), 0);
    }

    #[test]
    fn a_read_after_the_period_ended_counts_it_as_previous() {
        let c = ctr();
        for _ in 0..4 {
            c.add(100_000, 1000, 1);
        }
        // At 101250 without any new event: past = 4, curr = 0, elapsed 250 → 4 * 750 / 1000 = 3.
        assert_eq!(c.read(101_250, 1000), 3);
    }

    #[test]
    fn low_rates_do_not_flap() {
        let c = ctr();
        c.add(100_000, 1000, 1);
        assert_eq!(c.read(101_900, 1000), 1);
    }

    #[test]
    fn a_skipped_period_resets_previous() {
        let c = ctr();
        c.add(100_000, 1000, 5);
        c.add(102_500, 1000, 1);
        assert_eq!(c.read(102_600, 1000), 1);
    }
}
