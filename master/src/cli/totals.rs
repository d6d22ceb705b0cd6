//! One row's totals over every worker of every generation still running:
//! what `show stat`, `/metrics` and the stats page print.
//!
//! How each word combines follows its kind (`corral_shm::stats::Kind`):
//! counters add up over every column (column 0 carries what workers that
//! are gone counted), gauges over live workers, maxima and times take the
//! largest, check results the current generation's, and master words are
//! read from the current generation's column 0.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use corral_shm::stats::{Cell, Kind, RowKey, Stat, StatsRegion, ALL, STAT_WORDS};

/// A region's row index: which region (its mapping, generation, rows).
type IndexKey = (usize, u32, usize);
/// A region's rows by key.
type RowIndex = Rc<HashMap<RowKey, usize>>;

thread_local! {
    /// Row indexes of the regions seen lately: a region's keys never
    /// change, so each is read once, not at every query, tick or dump step.
    static INDEXES: RefCell<Vec<(IndexKey, RowIndex)>> =
        const { RefCell::new(Vec::new()) };
}

/// Regions whose index is kept (a few generations drain at once).
const CACHED: usize = 8;

fn index_of(s: &StatsRegion) -> RowIndex {
    let key = (Arc::as_ptr(s.region()) as usize, s.generation(), s.rows());
    INDEXES.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, ix)) = c.iter().find(|(k, _)| *k == key) {
            return ix.clone();
        }
        let ix = Rc::new(s.index());
        if c.len() >= CACHED {
            c.remove(0);
        }
        c.push((key, ix.clone()));
        ix
    })
}

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
    index: Vec<RowIndex>,
}

impl<'a> Totals<'a> {
    /// Indexes `stats` (current generation first).
    pub fn new(stats: &'a [StatsRegion]) -> Totals<'a> {
        Totals {
            stats,
            index: stats.iter().map(index_of).collect(),
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

    /// Column 0 of `key` in every generation still running (current first):
    /// where the server state is written, so that old workers finishing
    /// their connections obey it too.
    pub fn master_cells(&self, key: &RowKey) -> Vec<Cell<'a>> {
        self.places(key)
            .into_iter()
            .filter_map(|(s, row)| s.cell(row, 0))
            .collect()
    }

    /// Every (generation, row) holding `key`.
    fn places(&self, key: &RowKey) -> Vec<(&'a StatsRegion, usize)> {
        self.stats
            .iter()
            .zip(&self.index)
            .filter_map(|(s, ix)| Some((s, *ix.get(key)?)))
            .collect()
    }

    /// Words `want` of `key`'s totals (a tick reads a few words, not all).
    pub fn words<const N: usize>(&self, key: &RowKey, want: [Stat; N]) -> [u64; N] {
        let mut out = [0u64; N];
        for (s, row) in self.places(key) {
            let current = std::ptr::eq(s, &self.stats[0]);
            for col in usize::from(!current)..s.columns() {
                let Some(c) = s.cell(row, col) else { continue };
                for (o, st) in out.iter_mut().zip(want) {
                    let v = c.get(st);
                    match st.kind() {
                        Kind::Counter => *o = o.wrapping_add(v),
                        Kind::Gauge if col > 0 => *o = o.wrapping_add(v),
                        Kind::Max | Kind::Latest => *o = (*o).max(v),
                        Kind::Last if current => *o = (*o).max(v),
                        Kind::Master if current && col == 0 => *o = v,
                        _ => {}
                    }
                }
            }
        }
        out
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
                        Kind::Max | Kind::Latest => out[i] = out[i].max(v),
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
