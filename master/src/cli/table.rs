//! The stick-table commands: `show table [NAME [filter]]`, `clear table
//! NAME [filter]` and `set table NAME key K data.T V...`, with HAProxy's
//! line formats. A filter is `key K`, or up to four `data.<type> <op>
//! <value>` (op: eq ne le ge lt gt). Dumps are streamed a few buckets at a
//! time ([`TableDump`]), never built whole.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use corral_config::KeyType;
use corral_shm::freq::now_ms;
use corral_shm::table::DataTypeName;
use corral_shm::{EntryRef, StickTable};

/// `# table: NAME, type: T, size:N, used:N`.
pub fn table_summary(t: &StickTable<'_>) -> String {
    let l = t.layout();
    format!(
        "# table: {}, type: {}, size:{}, used:{}\n",
        t.name(),
        l.key_type.as_str(),
        l.size,
        t.len()
    )
}

/// One summary line per table.
pub fn table_summaries(tables: &[StickTable<'static>]) -> String {
    tables.iter().map(|t| table_summary(t)).collect()
}

/// A comparison of a `data.<type> <op> <value>` filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `eq`.
    Eq,
    /// `ne`.
    Ne,
    /// `le`.
    Le,
    /// `ge`.
    Ge,
    /// `lt`.
    Lt,
    /// `gt`.
    Gt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "le" => Op::Le,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "gt" => Op::Gt,
            _ => return None,
        })
    }

    fn test(self, a: u64, b: u64) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Le => a <= b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Gt => a > b,
        }
    }
}

/// Which entries a dump or a clear applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this key.
    pub key: Option<Vec<u8>>,
    /// Every condition must hold.
    pub data: Vec<(DataTypeName, Op, u64)>,
}

/// Filters per command, as HAProxy (`MAX_FILTERS`).
const MAX_FILTERS: usize = 4;

impl Filter {
    /// Parses `key K` or `data.<type> <op> <value>`... for table `t`.
    pub fn parse(t: &StickTable<'_>, args: &[&str]) -> Result<Filter, String> {
        let l = t.layout();
        let mut f = Filter::default();
        let mut rest = args;
        while !rest.is_empty() {
            match rest {
                ["key", k, tail @ ..] => {
                    let key = parse_key(l.key_type, k, l.key_len as usize).ok_or_else(|| {
                        format!("Invalid key for a table of type {}", l.key_type.as_str())
                    })?;
                    f.key = Some(key);
                    rest = tail;
                }
                [d, op, v, tail @ ..] if d.starts_with("data.") => {
                    let name = &d["data.".len()..];
                    let dt = DataTypeName::parse(name)
                        .ok_or_else(|| format!("Unknown data type '{name}'"))?;
                    if l.data_off(dt).is_none() {
                        return Err(format!("Data type '{name}' not stored in this table"));
                    }
                    let op = Op::parse(op).ok_or(
                        "Require an operator among \"eq\", \"ne\", \"le\", \"ge\", \"lt\", \"gt\"",
                    )?;
                    let v = v.parse::<u64>().map_err(|_| {
                        "Require a valid integer value to compare against".to_string()
                    })?;
                    if f.data.len() == MAX_FILTERS {
                        return Err(format!("At most {MAX_FILTERS} data filters"));
                    }
                    f.data.push((dt, op, v));
                    rest = tail;
                }
                [other, ..] => {
                    return Err(format!(
                        "Unexpected '{other}': expects 'key <k>' or 'data.<type> <op> <value>'"
                    ))
                }
                [] => break,
            }
        }
        Ok(f)
    }

    /// Whether entry `e` passes (its key was checked by the lookup).
    fn keeps(&self, e: &EntryRef<'_>, now: u32) -> bool {
        if let Some(k) = &self.key {
            if e.key_copy().as_deref() != Some(k.as_slice()) {
                return false;
            }
        }
        self.data
            .iter()
            .all(|&(dt, op, v)| e.value(dt, now).is_some_and(|x| op.test(x, v)))
    }
}

/// `clear table NAME [filter]`: removes what the filter selects (every
/// unused entry without one). Entries in use stay, as in HAProxy.
pub fn clear_table(t: &StickTable<'static>, args: &[&str], slot: usize) -> Result<String, String> {
    let f = Filter::parse(t, args)?;
    let now = now_ms();
    let (_, in_use) = t.clear_matching(slot, |e| f.keeps(e, now));
    if f.key.is_some() && in_use > 0 {
        return Ok("Entry currently in use, cannot remove\n".into());
    }
    Ok(String::new())
}

fn format_key(k: KeyType, b: &[u8]) -> String {
    match (k, b.len()) {
        (KeyType::Ip, 4) => Ipv4Addr::from(<[u8; 4]>::try_from(b).expect("4 bytes")).to_string(),
        (KeyType::Ipv6, 16) => {
            Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes")).to_string()
        }
        (KeyType::Integer, 4) => u32::from_be_bytes(b.try_into().expect("4 bytes")).to_string(),
        (KeyType::String, _) => String::from_utf8_lossy(b).into_owned(),
        _ => b.iter().map(|x| format!("{x:02X}")).collect(),
    }
}

/// Buckets walked per pin: bounds how long a dump keeps retired entries
/// from being reused, and how much it writes at a time.
const DUMP_BUCKETS: u32 = 256;
/// Buckets walked per step of a dump (then other clients get a turn).
pub const DUMP_STEP_BUCKETS: u32 = 16 * 1024;

/// `show table NAME`, streamed: the summary line, then one line per live
/// entry, produced a few buckets at a time as the client reads, so a dump
/// of a 1 M-entry table neither stalls the master loop nor holds its whole
/// text in memory. Entries added behind the cursor during the dump may be
/// missed (as in HAProxy, a dump is not a snapshot).
#[derive(Debug, PartialEq, Eq)]
pub struct TableDump {
    table: usize,
    cursor: Option<(u32, u32)>,
    filter: Filter,
}

impl TableDump {
    /// A dump of table number `table`, of the entries `filter` keeps.
    pub fn new(table: usize, filter: Filter) -> TableDump {
        TableDump {
            table,
            cursor: None,
            filter,
        }
    }

    /// Appends at least `want` bytes (or the rest) to `out`. Returns true
    /// when the dump is complete.
    pub fn step(
        &mut self,
        tables: &[StickTable<'static>],
        slot: usize,
        out: &mut Vec<u8>,
        want: usize,
    ) -> bool {
        let Some(t) = tables.get(self.table) else {
            return true;
        };
        let start = out.len();
        let mut cursor = match self.cursor {
            Some(c) => c,
            None => {
                out.extend_from_slice(table_summary(t).as_bytes());
                (0, 0)
            }
        };
        let now = now_ms();
        let mut line = String::new();
        if let Some(k) = &self.filter.key {
            // One key: a lookup, not a walk.
            let guard = t.segment().epoch().pin(slot);
            if let Some(e) = t.lookup(&guard, k, now) {
                if self.filter.keeps(&e, now) {
                    entry_line(t, &e, now, &mut line);
                    out.extend_from_slice(line.as_bytes());
                }
            }
            return true;
        }
        let mut walked = 0;
        while out.len() - start < want && walked < DUMP_STEP_BUCKETS {
            walked += DUMP_BUCKETS;
            let guard = t.segment().epoch().pin(slot);
            let filter = &self.filter;
            let next = t.for_each_from(&guard, now, cursor, DUMP_BUCKETS, |e| {
                if !filter.keeps(&e, now) {
                    return;
                }
                line.clear();
                entry_line(t, &e, now, &mut line);
                out.extend_from_slice(line.as_bytes());
            });
            drop(guard);
            match next {
                Some(c) => cursor = c,
                None => {
                    self.cursor = Some(cursor);
                    return true;
                }
            }
        }
        self.cursor = Some(cursor);
        false
    }
}

fn entry_line(t: &StickTable<'_>, e: &corral_shm::EntryRef<'_>, now: u32, s: &mut String) {
    let key = e.key_copy().unwrap_or_default();
    let _ = write!(
        s,
        "0x{:x}: key={} use={} exp={} shard={}",
        e.id(),
        format_key(t.layout().key_type, &key),
        e.use_count(),
        e.expires_in(now).unwrap_or(0),
        e.shard()
    );
    for (name, period, value) in e.values(now) {
        let value = if name == DataTypeName::ServerId {
            value & 0xFFFF_FFFF
        } else {
            value
        };
        if period > 0 {
            let _ = write!(s, " {}({period})={value}", name.as_str());
        } else {
            let _ = write!(s, " {}={value}", name.as_str());
        }
    }
    s.push('\n');
}

/// Parses a key as `show table` prints it for this table's type.
fn parse_key(k: KeyType, text: &str, key_len: usize) -> Option<Vec<u8>> {
    match k {
        KeyType::Ip => text.parse::<Ipv4Addr>().ok().map(|a| a.octets().to_vec()),
        KeyType::Ipv6 => match text.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V6(a) => Some(a.octets().to_vec()),
            std::net::IpAddr::V4(a) => Some(a.to_ipv6_mapped().octets().to_vec()),
        },
        KeyType::Integer => text.parse::<u32>().ok().map(|n| n.to_be_bytes().to_vec()),
        KeyType::String => (text.len() <= key_len).then(|| text.as_bytes().to_vec()),
        KeyType::Binary => {
            let hex = text.as_bytes();
            if !hex.len().is_multiple_of(2)
                || hex.len() / 2 > key_len
                || !hex.iter().all(u8::is_ascii_hexdigit)
            {
                return None;
            }
            hex.chunks(2)
                .map(|d| {
                    let v = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    Some(v(d[0]) << 4 | v(d[1]))
                })
                .collect()
        }
    }
}

/// `set table NAME key K [data.TYPE VALUE]...`: creates the entry if needed
/// and sets the given counters (rates cannot be set).
/// `set table NAME key K [data.TYPE VALUE]...`.
pub fn set_table(
    t: &StickTable<'static>,
    key: &str,
    data: &[&str],
    slot: usize,
) -> Result<(), String> {
    let layout = t.layout();
    let key = parse_key(layout.key_type, key, layout.key_len as usize).ok_or_else(|| {
        format!(
            "Invalid key for a table of type {}",
            layout.key_type.as_str()
        )
    })?;
    if !data.len().is_multiple_of(2) {
        return Err("Usage: set table <name> key <k> [data.<type> <value>]*".into());
    }
    let mut sets = Vec::new();
    for pair in data.chunks(2) {
        let Some(name) = pair[0].strip_prefix("data.") else {
            return Err(format!("Unexpected '{}': expected data.<type>", pair[0]));
        };
        let dt = DataTypeName::parse(name).ok_or_else(|| format!("Unknown data type '{name}'"))?;
        if dt.is_rate() {
            return Err(format!("'{name}' is a rate: it cannot be set"));
        }
        if layout.data_off(dt).is_none() {
            return Err(format!("Data type '{name}' not stored in this table"));
        }
        let v: u64 = pair[1]
            .parse()
            .map_err(|_| format!("Invalid value '{}' for {name}", pair[1]))?;
        sets.push((dt, v));
    }
    let now = now_ms();
    let guard = t.segment().epoch().pin(slot);
    let e = t
        .get_or_create(&guard, slot, &key, now)
        .ok_or("The table is full of entries in use")?;
    for (dt, v) in sets {
        if let Some(c) = e.counter(dt) {
            c.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}
