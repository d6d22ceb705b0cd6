//! What the master computes from the summed counters over time: rates
//! (`rate`, `req_rate`, `conn_rate`, `ConnRate`...), maxima (`smax`,
//! `qmax`, `rate_max`...) and the time averages (`qtime`...`ttime`).
//!
//! Workers only count; a maximum of a sum can only be taken from the sum
//! (adding per-worker maxima would overstate it), so the master samples the
//! sums once a second ([`History::tick`]) and at every query
//! ([`History::observe`]). Maxima and averages are kept in the current
//! generation's column 0 (master words), so they survive reloads; the last
//! seconds' samples for rates are the master's memory only (a rate starts
//! again from 0 after an exec, for a second). Per-request maxima
//! (`qtime_max`...) are raised by the workers and harvested here into
//! column 0.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corral_shm::stats::{Kind, RowKey, Stat, ALL};

use super::totals::Totals;

/// How often the master samples.
pub const TICK: Duration = Duration::from_secs(1);
/// Requests an average spans (HAProxy's TIME_STATS_SAMPLES).
const SAMPLES: u64 = 1024;

/// The averaged times and their master words.
const AVERAGES: [(Stat, Stat); 4] = [
    (Stat::QtimeSum, Stat::QtimeAvg),
    (Stat::CtimeSum, Stat::CtimeAvg),
    (Stat::RtimeSum, Stat::RtimeAvg),
    (Stat::TtimeSum, Stat::TtimeAvg),
];

/// One second's sample of the counts rates are made of.
struct Tick {
    at: Instant,
    /// Per row: sessions, requests.
    rows: Rc<HashMap<RowKey, [u64; 2]>>,
    /// Connections and requests over all frontends.
    global: [u64; 2],
    /// The start of a fresh instance: every count was 0 (rows absent from
    /// `rows` count as 0).
    zero: bool,
}

/// A per-second rate of two samples: what happened over `dt`, per second;
/// under a second, what happened (HAProxy's rate counts the last second).
fn per_sec(now: u64, then: u64, dt: Duration) -> u64 {
    let ms = dt.as_millis().max(1000) as u64;
    now.wrapping_sub(then).min(u64::MAX / 1000) * 1000 / ms
}

/// The master's view of the counters over time.
pub struct History {
    ticks: VecDeque<Tick>,
    /// Per row: the timing sums and sample count last folded into the
    /// averages.
    base: HashMap<RowKey, [u64; 5]>,
    next_tick: Instant,
    /// Highest connection, session and request rates over all frontends.
    pub max_conn_rate: u64,
    /// Highest sessions per second (the same as connections here).
    pub max_sess_rate: u64,
    /// Busy µs of the workers at the last tick, and when.
    busy: Option<(Instant, u64, usize)>,
    /// Percentage of the last second the workers spent waiting.
    pub idle_pct: u64,
    /// The workers' summed loop turns at the last tick.
    loops: Option<u64>,
}

impl Default for History {
    fn default() -> History {
        History::new(false)
    }
}

impl History {
    /// Nothing sampled yet; `fresh`: the instance starts now, from zero
    /// counts (not an exec that inherited them), so rates count from now.
    pub fn new(fresh: bool) -> History {
        let mut ticks = VecDeque::new();
        if fresh {
            ticks.push_back(Tick {
                at: Instant::now(),
                rows: Rc::default(),
                global: [0, 0],
                zero: true,
            });
        }
        History {
            ticks,
            base: HashMap::new(),
            next_tick: Instant::now() + TICK,
            max_conn_rate: 0,
            max_sess_rate: 0,
            busy: None,
            idle_pct: 100,
            loops: None,
        }
    }

    /// When the next sample is due.
    pub fn next_deadline(&self) -> Instant {
        self.next_tick
    }

    /// Forgets the samples (after `clear counters`): rates and averages
    /// start from the cleared values.
    pub fn reset(&mut self) {
        self.ticks.clear();
        self.base.clear();
        self.max_conn_rate = 0;
        self.max_sess_rate = 0;
    }

    /// The first half of a tick, before any row is read: when nothing ran
    /// since the last one (no loop turn in any worker, old ones included),
    /// the counts are as they were, so the last sample is kept, stamped now
    /// (a rate after an idle spell counts its own second, not the whole
    /// spell; the rows are shared, not copied), and true is returned: the
    /// caller reads nothing more, and an idle master stays idle.
    pub fn idle_tick(&mut self, busy: (u64, usize), loops: u64, now: Instant) -> bool {
        if self.loops != Some(loops) {
            return false;
        }
        self.next_tick = now + TICK;
        self.idle_pct = 100;
        self.busy = Some((now, busy.0, busy.1));
        if let Some(last) = self.ticks.back() {
            let copy = Tick {
                at: now,
                rows: Rc::clone(&last.rows),
                global: last.global,
                zero: last.zero,
            };
            self.ticks.push_back(copy);
            while self.ticks.len() > 3 {
                self.ticks.pop_front();
            }
        }
        true
    }

    /// Takes the per-second sample (after [`History::idle_tick`] said work
    /// happened): `keys` are the current configuration's rows, `busy` the
    /// current workers' summed busy µs and their number, `loops` every live
    /// worker's loop turns, summed.
    pub fn tick(
        &mut self,
        t: &Totals<'_>,
        keys: &[RowKey],
        busy: (u64, usize),
        loops: u64,
        now: Instant,
    ) {
        self.next_tick = now + TICK;
        self.loops = Some(loops);
        self.sample(t, keys, now, false);
        let mut rows = HashMap::with_capacity(keys.len());
        let mut global = [0u64; 2];
        for k in keys {
            let v = t.words(k, [Stat::Stot, Stat::ReqTot]);
            if k.kind == corral_shm::stats::RowKind::Frontend {
                global[0] = global[0].wrapping_add(v[0]);
                global[1] = global[1].wrapping_add(v[1]);
            }
            rows.insert(k.clone(), v);
        }
        self.ticks.push_back(Tick {
            at: now,
            rows: Rc::new(rows),
            global,
            zero: false,
        });
        while self.ticks.len() > 3 {
            self.ticks.pop_front();
        }
        if let Some((at, prev, n)) = self.busy {
            let wall = (now - at).as_micros() as u64 * n.max(1) as u64;
            if n == busy.1 && wall > 0 {
                let used = busy.0.saturating_sub(prev).min(wall);
                self.idle_pct = 100 - used * 100 / wall;
            }
        }
        self.busy = Some((now, busy.0, busy.1));
        let (c, _) = self.global_rates(global, now);
        self.max_conn_rate = self.max_conn_rate.max(c);
        self.max_sess_rate = self.max_sess_rate.max(c);
    }

    /// The sample a rate is taken against: the newest at least a second
    /// old, else the oldest.
    fn base_tick(&self, now: Instant) -> Option<&Tick> {
        self.ticks
            .iter()
            .rev()
            .find(|t| now - t.at >= TICK)
            .or_else(|| self.ticks.front())
    }

    /// Sessions and requests per second of row `key`, whose counts are now
    /// `stot` and `req`.
    pub fn rates(&self, key: &RowKey, stot: u64, req: u64, now: Instant) -> (u64, u64) {
        let Some(t) = self.base_tick(now) else {
            return (0, 0);
        };
        let then = match t.rows.get(key) {
            Some(v) => *v,
            None if t.zero => [0, 0],
            None => return (0, 0),
        };
        let dt = now - t.at;
        if dt.is_zero() {
            return (0, 0);
        }
        (per_sec(stot, then[0], dt), per_sec(req, then[1], dt))
    }

    /// Connections and requests per second over all frontends.
    pub fn global_rates(&self, now_counts: [u64; 2], now: Instant) -> (u64, u64) {
        let Some(t) = self.base_tick(now) else {
            return (0, 0);
        };
        let dt = now - t.at;
        if dt.is_zero() {
            return (0, 0);
        }
        (
            per_sec(now_counts[0], t.global[0], dt),
            per_sec(now_counts[1], t.global[1], dt),
        )
    }

    /// Folds what happened since the last look into the master words (at
    /// a query): per-request maxima raised by workers, the maxima of the
    /// summed gauges and rates, and the time averages.
    pub fn observe(&mut self, t: &Totals<'_>, keys: &[RowKey], now: Instant) {
        self.sample(t, keys, now, true);
    }

    /// [`History::observe`]; `harvest`: also take the workers' maxima
    /// (queries do; ticks leave them in the cells, where they keep).
    fn sample(&mut self, t: &Totals<'_>, keys: &[RowKey], now: Instant, harvest: bool) {
        // Harvest the workers' per-request maxima (every generation).
        for s in t.regions().iter().filter(|_| harvest) {
            for row in 0..s.rows() {
                let Some(key) = s.key(row) else { continue };
                let dst = t.master_cell(&key);
                for col in 1..s.columns() {
                    let Some(c) = s.cell(row, col) else { continue };
                    for st in ALL.iter().filter(|st| st.kind() == Kind::Max) {
                        let v = c.take(*st);
                        if let Some(d) = dst {
                            d.raise(*st, v);
                        }
                    }
                }
            }
        }
        for k in keys {
            let Some(m) = t.master_cell(k) else { continue };
            let [scur, qcur, stot, reqtot, timed, qs, cs, rs, ts] = t.words(
                k,
                [
                    Stat::Scur,
                    Stat::Qcur,
                    Stat::Stot,
                    Stat::ReqTot,
                    Stat::Timed,
                    Stat::QtimeSum,
                    Stat::CtimeSum,
                    Stat::RtimeSum,
                    Stat::TtimeSum,
                ],
            );
            m.raise(Stat::Smax, scur);
            m.raise(Stat::Qmax, qcur);
            let (rate, req) = self.rates(k, stot, reqtot, now);
            m.raise(Stat::RateMax, rate);
            m.raise(Stat::ReqRateMax, req);
            if k.kind == corral_shm::stats::RowKind::Frontend {
                m.raise(Stat::ConnRateMax, rate);
            }
            let cur = [timed, qs, cs, rs, ts];
            let base = match self.base.insert(k.clone(), cur) {
                Some(b) => b,
                // First look since this master started: an average kept
                // from before the exec stays; none yet starts from all.
                None if m.get(Stat::TtimeAvg) > 0 || m.get(Stat::RtimeAvg) > 0 => continue,
                None => [0; 5],
            };
            let n = cur[0].wrapping_sub(base[0]);
            if n == 0 || n > u64::MAX / 2 {
                continue;
            }
            // A sliding average over the last SAMPLES requests: the new
            // requests' mean weighs as many of them.
            let window = cur[0].clamp(1, SAMPLES);
            for (i, (_, avg)) in AVERAGES.iter().enumerate() {
                let mean = cur[i + 1].wrapping_sub(base[i + 1]) / n;
                let old = m.get(*avg);
                let w = n.min(window);
                let new = if base[0] == 0 && old == 0 {
                    mean
                } else {
                    ((old * (window - w)) + mean * w) / window
                };
                m.set(*avg, new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second() {
        assert_eq!(per_sec(3500, 500, Duration::from_secs(2)), 1500);
        assert_eq!(per_sec(1500, 500, Duration::from_millis(500)), 1000);
        assert_eq!(per_sec(10, 10, Duration::from_secs(1)), 0);
        assert_eq!(per_sec(5, 0, Duration::ZERO), 5, "no division by zero");
    }
}
