//! One row's totals over every worker of every generation still running:
//! what `show stat`, `/metrics` and the stats page print.
//!
//! How each word combines follows its kind (`corral_shm::stats::Kind`):
//! counters add up over every column (column 0 carries what workers that
//! are gone counted), gauges over live workers, maxima take the largest,
//! last values the current generation's latest, and master words are read
//! from the current generation's column 0.

use std::collections::HashMap;

use corral_shm::stats::{Cell, Kind, RowKey, Stat, StatsRegion, ALL, STAT_WORDS};

/// The combined words of one row.
#[derive(Clone, Debug)]
pub struct Sum(pub [u64; STAT_WORDS]);

impl Sum {
    /// Word `s`.
    pub fn get(&self, s: Stat) -> u64 {
        self.0[s as usize]
    }
}

/// The counter rows of every generation, indexed once per query.
pub struct Totals<'a> {
    stats: &'a [StatsRegion],
    index: Vec<HashMap<RowKey, usize>>,
}

impl<'a> Totals<'a> {
    /// Indexes `stats` (current generation first).
    pub fn new(stats: &'a [StatsRegion]) -> Totals<'a> {
        Totals {
            stats,
            index: stats.iter().map(StatsRegion::index).collect(),
        }
    }

    /// The current generation's region.
    pub fn current(&self) -> Option<&'a StatsRegion> {
        self.stats.first()
    }

    /// `key`'s row in the current generation.
    pub fn row(&self, key: &RowKey) -> Option<usize> {
        self.index.first()?.get(key).copied()
    }

    /// `key`'s stable id (`iid` or `sid`), 0 if it has no row.
    pub fn id(&self, key: &RowKey) -> u32 {
        match (self.current(), self.row(key)) {
            (Some(s), Some(r)) => s.id(r),
            _ => 0,
        }
    }

    /// The current generation's column 0 of `key`: the master's words.
    pub fn master_cell(&self, key: &RowKey) -> Option<Cell<'a>> {
        self.current()?.cell(self.row(key)?, 0)
    }

    /// Every (generation, row) holding `key`.
    fn places(&self, key: &RowKey) -> Vec<(&'a StatsRegion, usize)> {
        self.stats
            .iter()
            .zip(&self.index)
            .filter_map(|(s, ix)| Some((s, *ix.get(key)?)))
            .collect()
    }

    /// `key`'s totals.
    pub fn of(&self, key: &RowKey) -> Sum {
        let mut out = [0u64; STAT_WORDS];
        for (s, row) in self.places(key) {
            // Column 0 of an older generation was copied into the current
            // one's at the reload: only the current one's counts.
            let current = std::ptr::eq(s, &self.stats[0]);
            for col in usize::from(!current)..s.columns() {
                let Some(c) = s.cell(row, col) else { continue };
                for st in ALL {
                    let i = st as usize;
                    let v = c.word(i);
                    match st.kind() {
                        Kind::Counter => out[i] = out[i].wrapping_add(v),
                        Kind::Gauge if col > 0 => out[i] = out[i].wrapping_add(v),
                        Kind::Max => out[i] = out[i].max(v),
                        Kind::Last if current => out[i] = out[i].max(v),
                        Kind::Master if current && col == 0 => out[i] = v,
                        _ => {}
                    }
                }
            }
        }
        Sum(out)
    }

    /// Every live row key of every generation (for harvesting maxima).
    pub fn regions(&self) -> &'a [StatsRegion] {
        self.stats
    }
}
