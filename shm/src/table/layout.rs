//! Where everything of a stick table sits in its region.
//!
//! ```text
//! region:  TableHeader | shard 0 | shard 1 | ...            (shard stride apart)
//! shard:   ShardHeader (64 B) | buckets: [u32; nbuckets] | entries: [entry; cap]
//! entry:   EntryHeader (40 B) | key (key_len, padded to 8) | data words
//! ```
//!
//! The table's `size` is split over shards exactly (shard i holds at most
//! `size / S` entries, plus one for the first `size % S` shards), so the whole
//! table never holds more than `size` live entries. Each shard has slack slots
//! beyond its live cap for entries retired but not yet reclaimable (epochs).
//! Links are entry indices + 1 within the shard (0 = none).

use corral_config::{DataType, KeyType, Table};

/// Bytes of the per-entry header (state, links, hash, expiry, use count...).
pub const ENTRY_HEADER: u32 = 40;
/// Bytes of a shard header: one cache line.
pub const SHARD_HEADER: u64 = 64;
/// Bytes of the table header at the start of the region: the layout itself,
/// so any generation can map a table it has no definition for (to migrate or
/// recover it after a reload).
pub const TABLE_HEADER: u64 = 256;
const HEADER_MAGIC: u64 = u64::from_le_bytes(*b"CRLtable");
const MAX_DATA: usize = 16;

/// The layout as stored at the start of a table region (plain data, written
/// by the master before any other process can see the region).
#[repr(C)]
#[derive(Clone, Copy)]
struct StoredLayout {
    magic: u64,
    key_type: u32,
    key_len: u32,
    size: u32,
    shards: u32,
    buckets: u32,
    slots: u32,
    entry_size: u32,
    key_off: u32,
    expire_ms: u32,
    ndata: u32,
    /// (data type id, period ms, offset in the entry)
    data: [[u32; 3]; MAX_DATA],
}

const _: () = assert!(std::mem::size_of::<StoredLayout>() as u64 <= TABLE_HEADER);

fn key_type_id(k: KeyType) -> u32 {
    match k {
        KeyType::Ip => 0,
        KeyType::Ipv6 => 1,
        KeyType::Integer => 2,
        KeyType::String => 3,
        KeyType::Binary => 4,
    }
}

fn key_type_of(id: u32) -> Option<KeyType> {
    Some(match id {
        0 => KeyType::Ip,
        1 => KeyType::Ipv6,
        2 => KeyType::Integer,
        3 => KeyType::String,
        4 => KeyType::Binary,
        _ => return None,
    })
}

fn data_type_id(dt: DataType) -> u32 {
    match dt {
        DataType::ServerId => 0,
        DataType::ConnCur => 1,
        DataType::ConnCnt => 2,
        DataType::ConnRate(_) => 3,
        DataType::HttpReqCnt => 4,
        DataType::HttpReqRate(_) => 5,
        DataType::HttpErrCnt => 6,
        DataType::HttpErrRate(_) => 7,
        DataType::BytesInCnt => 8,
        DataType::BytesOutCnt => 9,
        DataType::BytesInRate(_) => 10,
        DataType::BytesOutRate(_) => 11,
        DataType::Gpc0 => 12,
        DataType::Gpc0Rate(_) => 13,
    }
}

fn data_type_of(id: u32, period_ms: u32) -> Option<DataType> {
    let p = std::time::Duration::from_millis(period_ms as u64);
    Some(match id {
        0 => DataType::ServerId,
        1 => DataType::ConnCur,
        2 => DataType::ConnCnt,
        3 => DataType::ConnRate(p),
        4 => DataType::HttpReqCnt,
        5 => DataType::HttpReqRate(p),
        6 => DataType::HttpErrCnt,
        7 => DataType::HttpErrRate(p),
        8 => DataType::BytesInCnt,
        9 => DataType::BytesOutCnt,
        10 => DataType::BytesInRate(p),
        11 => DataType::BytesOutRate(p),
        12 => DataType::Gpc0,
        13 => DataType::Gpc0Rate(p),
        _ => return None,
    })
}
/// Largest number of shards: writers of different shards never contend.
const MAX_SHARDS: u32 = 64;
/// Target live entries per shard for small tables (fewer shards, exact sizes).
const ENTRIES_PER_SHARD: u32 = 256;

/// The computed layout of one table (the same in every process: derived only
/// from the definition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Key type.
    pub key_type: KeyType,
    /// Bytes reserved for the key.
    pub key_len: u32,
    /// Configured capacity (live entries).
    pub size: u32,
    /// Shard count.
    pub shards: u32,
    /// Buckets per shard (power of two).
    pub buckets: u32,
    /// Entry slots per shard (live cap + slack for retired entries).
    pub slots: u32,
    /// Bytes per entry (multiple of 8).
    pub entry_size: u32,
    /// Offset of the key in an entry.
    pub key_off: u32,
    /// Each stored data type with its offset in an entry.
    pub data: Vec<(DataType, u32)>,
    /// Expiry in ms (0: never).
    pub expire_ms: u32,
}

fn data_size(dt: DataType) -> u32 {
    match dt {
        DataType::ConnRate(_)
        | DataType::HttpReqRate(_)
        | DataType::HttpErrRate(_)
        | DataType::BytesInRate(_)
        | DataType::BytesOutRate(_)
        | DataType::Gpc0Rate(_) => 16,
        _ => 8,
    }
}

impl Layout {
    /// The layout of a configured table.
    pub fn of(t: &Table) -> Layout {
        let key_len = match t.key {
            KeyType::Ip | KeyType::Integer => 4,
            KeyType::Ipv6 => 16,
            KeyType::String | KeyType::Binary => t.key_len.max(1),
        };
        let key_off = ENTRY_HEADER;
        let mut off = key_off + key_len.div_ceil(8) * 8;
        let mut data = Vec::new();
        for &dt in &t.store {
            data.push((dt, off));
            off += data_size(dt);
        }
        let size = t.size.max(1);
        let shards = (size / ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS);
        let live = Self::per_shard_cap(size, shards);
        let slots = live + (live / 4).max(8);
        Layout {
            key_type: t.key,
            key_len,
            size,
            shards,
            buckets: live.next_power_of_two(),
            slots,
            entry_size: off,
            key_off,
            data,
            expire_ms: t
                .expire
                .map_or(0, |d| d.as_millis().min(u32::MAX as u128 / 2) as u32),
        }
    }

    /// Live entries one shard may hold: its fair share of `size` plus four
    /// standard deviations of how keys hash over shards, so a table fills up
    /// to its `size` (the cap that matters, enforced table-wide) before any
    /// shard is full on its own.
    fn per_shard_cap(size: u32, shards: u32) -> u32 {
        let share = size.div_ceil(shards);
        if shards == 1 {
            return share;
        }
        share + 4 * (share as f64).sqrt().ceil() as u32 + 8
    }

    /// Live-entry cap of any shard (see `per_shard_cap`).
    pub fn shard_cap(&self, _s: u32) -> u32 {
        Self::per_shard_cap(self.size, self.shards)
    }

    /// Writes the layout at `p`, the start of a fresh, private region.
    ///
    /// # Safety
    /// `p` must point to at least [`TABLE_HEADER`] writable bytes that no
    /// other process reads yet.
    pub(crate) unsafe fn store(&self, p: *mut u8) {
        let mut data = [[0u32; 3]; MAX_DATA];
        for (d, &(dt, off)) in data.iter_mut().zip(&self.data) {
            *d = [data_type_id(dt), period_ms(dt), off];
        }
        let stored = StoredLayout {
            magic: HEADER_MAGIC,
            key_type: key_type_id(self.key_type),
            key_len: self.key_len,
            size: self.size,
            shards: self.shards,
            buckets: self.buckets,
            slots: self.slots,
            entry_size: self.entry_size,
            key_off: self.key_off,
            expire_ms: self.expire_ms,
            ndata: self.data.len().min(MAX_DATA) as u32,
            data,
        };
        // SAFETY: upheld by the caller; the region is 8-aligned (page-aligned).
        unsafe { std::ptr::write(p as *mut StoredLayout, stored) };
    }

    /// Reads a layout stored by [`Layout::store`]; `None` if it is not one.
    ///
    /// # Safety
    /// `p` must point to at least [`TABLE_HEADER`] readable bytes.
    pub(crate) unsafe fn load(p: *const u8) -> Option<Layout> {
        // SAFETY: upheld by the caller; StoredLayout is plain integers.
        let s = unsafe { std::ptr::read(p as *const StoredLayout) };
        if s.magic != HEADER_MAGIC
            || s.ndata as usize > MAX_DATA
            || s.shards == 0
            || !s.buckets.is_power_of_two()
        {
            return None;
        }
        let data = s.data[..s.ndata as usize]
            .iter()
            .map(|&[id, period, off]| Some((data_type_of(id, period)?, off)))
            .collect::<Option<Vec<_>>>()?;
        Some(Layout {
            key_type: key_type_of(s.key_type)?,
            key_len: s.key_len,
            size: s.size,
            shards: s.shards,
            buckets: s.buckets,
            slots: s.slots,
            entry_size: s.entry_size,
            key_off: s.key_off,
            data,
            expire_ms: s.expire_ms,
        })
    }

    /// Bytes from one shard to the next (64-byte aligned).
    pub fn shard_stride(&self) -> u64 {
        let buckets = (self.buckets as u64 * 4).div_ceil(64) * 64;
        (SHARD_HEADER + buckets + self.slots as u64 * self.entry_size as u64).div_ceil(64) * 64
    }

    /// Bytes of the whole region.
    pub fn region_len(&self) -> u64 {
        TABLE_HEADER + self.shards as u64 * self.shard_stride()
    }

    /// Offset of shard `s`'s buckets, relative to the shard.
    pub fn buckets_off(&self) -> u64 {
        SHARD_HEADER
    }

    /// Offset of shard `s`'s entry `i`, relative to the shard.
    pub fn entry_off(&self, i: u32) -> u64 {
        SHARD_HEADER
            + (self.buckets as u64 * 4).div_ceil(64) * 64
            + i as u64 * self.entry_size as u64
    }

    /// Offset of a data type in an entry, if the table stores it.
    pub fn data_off(&self, want: DataTypeName) -> Option<(u32, u32)> {
        self.data
            .iter()
            .find_map(|&(dt, off)| (want.matches(dt)).then(|| (off, period_ms(dt))))
    }

    /// A fingerprint of what the region's bytes mean: a reload keeps the table
    /// only if this is unchanged.
    pub fn fingerprint(&self) -> u64 {
        let mut h = crate::table::hash_bytes(format!("{self:?}").as_bytes());
        h ^= crate::segment::layout_version() as u64;
        h
    }
}

/// A data type without its period, to ask a layout where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataTypeName {
    /// server_id
    ServerId,
    /// conn_cur
    ConnCur,
    /// conn_cnt
    ConnCnt,
    /// conn_rate
    ConnRate,
    /// http_req_cnt
    HttpReqCnt,
    /// http_req_rate
    HttpReqRate,
    /// http_err_cnt
    HttpErrCnt,
    /// http_err_rate
    HttpErrRate,
    /// bytes_in_cnt
    BytesInCnt,
    /// bytes_out_cnt
    BytesOutCnt,
    /// bytes_in_rate
    BytesInRate,
    /// bytes_out_rate
    BytesOutRate,
    /// gpc0
    Gpc0,
    /// gpc0_rate
    Gpc0Rate,
}

impl DataTypeName {
    /// Whether `dt` is this data type (whatever its period).
    pub fn matches(self, dt: DataType) -> bool {
        self == DataTypeName::of(dt)
    }

    /// The name of a configured data type.
    pub fn of(dt: DataType) -> DataTypeName {
        match dt {
            DataType::ServerId => DataTypeName::ServerId,
            DataType::ConnCur => DataTypeName::ConnCur,
            DataType::ConnCnt => DataTypeName::ConnCnt,
            DataType::ConnRate(_) => DataTypeName::ConnRate,
            DataType::HttpReqCnt => DataTypeName::HttpReqCnt,
            DataType::HttpReqRate(_) => DataTypeName::HttpReqRate,
            DataType::HttpErrCnt => DataTypeName::HttpErrCnt,
            DataType::HttpErrRate(_) => DataTypeName::HttpErrRate,
            DataType::BytesInCnt => DataTypeName::BytesInCnt,
            DataType::BytesOutCnt => DataTypeName::BytesOutCnt,
            DataType::BytesInRate(_) => DataTypeName::BytesInRate,
            DataType::BytesOutRate(_) => DataTypeName::BytesOutRate,
            DataType::Gpc0 => DataTypeName::Gpc0,
            DataType::Gpc0Rate(_) => DataTypeName::Gpc0Rate,
        }
    }

    /// HAProxy's name of the data type (`conn_rate`, `gpc0`...), as `show table` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DataTypeName::ServerId => "server_id",
            DataTypeName::ConnCur => "conn_cur",
            DataTypeName::ConnCnt => "conn_cnt",
            DataTypeName::ConnRate => "conn_rate",
            DataTypeName::HttpReqCnt => "http_req_cnt",
            DataTypeName::HttpReqRate => "http_req_rate",
            DataTypeName::HttpErrCnt => "http_err_cnt",
            DataTypeName::HttpErrRate => "http_err_rate",
            DataTypeName::BytesInCnt => "bytes_in_cnt",
            DataTypeName::BytesOutCnt => "bytes_out_cnt",
            DataTypeName::BytesInRate => "bytes_in_rate",
            DataTypeName::BytesOutRate => "bytes_out_rate",
            DataTypeName::Gpc0 => "gpc0",
            DataTypeName::Gpc0Rate => "gpc0_rate",
        }
    }

    /// The data type HAProxy's name stands for (`conn_cnt`, `gpc0`...).
    pub fn parse(name: &str) -> Option<DataTypeName> {
        use DataTypeName::*;
        [
            ServerId,
            ConnCur,
            ConnCnt,
            ConnRate,
            HttpReqCnt,
            HttpReqRate,
            HttpErrCnt,
            HttpErrRate,
            BytesInCnt,
            BytesOutCnt,
            BytesInRate,
            BytesOutRate,
            Gpc0,
            Gpc0Rate,
        ]
        .into_iter()
        .find(|d| d.as_str() == name)
    }

    /// Whether this is a rate (a [`crate::freq::FreqCtr`]) rather than a counter.
    pub fn is_rate(self) -> bool {
        matches!(
            self,
            DataTypeName::ConnRate
                | DataTypeName::HttpReqRate
                | DataTypeName::HttpErrRate
                | DataTypeName::BytesInRate
                | DataTypeName::BytesOutRate
                | DataTypeName::Gpc0Rate
        )
    }
}

/// The period of a rate data type in ms (0 for counters).
pub fn period_ms(dt: DataType) -> u32 {
    match dt {
        DataType::ConnRate(p)
        | DataType::HttpReqRate(p)
        | DataType::HttpErrRate(p)
        | DataType::BytesInRate(p)
        | DataType::BytesOutRate(p)
        | DataType::Gpc0Rate(p) => p.as_millis().clamp(1, u32::MAX as u128 / 4) as u32,
        _ => 0,
    }
}
