//! `[cache.NAME]`: HTTP caches shared by all workers (sizes, freshness
//! bound, Vary handling).

use std::time::Duration;

use crate::diag::Diag;
use crate::model::Cache;
use crate::walk::{self, Section};

/// Keys `[cache.NAME]` accepts.
const KEYS: &[&str] = &[
    "total_max_size",
    "max_object_size",
    "max_age",
    "process_vary",
];

/// Smallest cache: one 4 KiB block per shard would cache nothing useful.
pub const MIN_TOTAL: u64 = 64 * 1024;

/// Largest cache (blocks are addressed with 32 bits of 4 KiB).
pub const MAX_TOTAL: u64 = 1 << 40;

/// Reads one `[cache.NAME]`.
pub(crate) fn parse(name: &str, sec: &Section<'_, '_>, d: &mut Diag) -> Cache {
    sec.check_keys(KEYS, d);
    let total = sec.read_at("total_max_size", d, |k, v, d| {
        let n = walk::size(k, v, 1, d)?;
        if !(MIN_TOTAL..=MAX_TOTAL).contains(&n) {
            d.error(
                v.span(),
                format!("'total_max_size' must be between 64KiB and 1TiB, found {n} bytes"),
            );
            return None;
        }
        Some(n)
    });
    let object = sec.read_at("max_object_size", d, |k, v, d| walk::size(k, v, 1, d));
    let total_max_size = total.as_ref().map_or(64 * 1024 * 1024, |t| t.0);
    let max_object_size = match object {
        Some((n, span)) if n > total_max_size => {
            d.error(
                span,
                format!(
                    "'max_object_size' ({n} bytes) is larger than 'total_max_size' ({total_max_size} bytes): no object could ever be stored"
                ),
            );
            n
        }
        Some((n, _)) => n,
        // HAProxy's default: a 256th of the cache.
        None => (total_max_size / 256).max(4096),
    };
    let max_age = sec
        .read("max_age", d, walk::positive_duration)
        .unwrap_or(Duration::from_secs(60));
    let process_vary = sec.read("process_vary", d, walk::boolean).unwrap_or(false);
    Cache {
        name: name.to_string(),
        total_max_size,
        max_object_size,
        max_age,
        process_vary,
    }
}
