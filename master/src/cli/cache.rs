//! `show cache` and `clear cache`: the shared HTTP caches.

use std::fmt::Write;

use corral_shm::cache::{Cache, Count, BLOCK};

/// Objects listed per cache at most (the summary line counts them all).
const LIST_MAX: usize = 10_000;

/// `show cache [NAME]`: per cache HAProxy's line (`0xID: NAME (shctx:0xID,
/// available blocks:N)`), then corral's counters, then one line per object.
pub fn show_cache(caches: &[Cache<'static>], name: Option<&str>, slot: usize) -> String {
    let mut out = String::new();
    let now = corral_shm::cache::unix_ms();
    for c in caches.iter().filter(|c| name.is_none_or(|n| c.name() == n)) {
        let s = c.summary();
        let id = c.region().id();
        let _ = writeln!(
            out,
            "0x{id:08x}: {} (shctx:0x{id:08x}, available blocks:{})",
            c.name(),
            s.free_blocks
        );
        let lookups = s.get(Count::Lookups);
        let hits = s.get(Count::Hits);
        let _ = writeln!(
            out,
            "  blocks used:{} total:{} size:{BLOCK} entries:{} lookups:{lookups} hits:{hits} misses:{} stores:{} evictions:{} abandoned:{} hit_bytes:{}",
            s.blocks - s.free_blocks,
            s.blocks,
            s.entries,
            lookups.saturating_sub(hits),
            s.get(Count::Stores),
            s.get(Count::Evictions),
            s.get(Count::Abandoned),
            s.get(Count::HitBytes),
        );
        let listed = c.list(slot, LIST_MAX);
        for e in &listed {
            let key = String::from_utf8_lossy(&e.primary).replace('\0', " ");
            let _ = writeln!(
                out,
                "  0x{:04x}{:08x} hash:{} size:{} ({} blocks), refcount:{}, expire:{}, status:{} key:{}",
                e.entry.0,
                e.entry.1,
                e.hash as u32,
                e.size,
                e.blocks,
                e.refs,
                e.expires_ms.saturating_sub(now) / 1000,
                e.status,
                key
            );
        }
        if s.entries as usize > listed.len() {
            let _ = writeln!(
                out,
                "  # {} more not listed",
                s.entries as usize - listed.len()
            );
        }
    }
    if out.is_empty() && name.is_some() {
        return "No such cache\n".into();
    }
    out
}

/// `clear cache NAME [uri URI]`: removes every object of cache `NAME`, or
/// those whose path and query are `URI` (any host, any backend).
pub fn clear_cache(caches: &[Cache<'static>], args: &[&str], slot: usize) -> String {
    let (name, uri) = match args {
        [name] => (*name, None),
        [name, "uri", uri] => (*name, Some(*uri)),
        _ => return "Usage: clear cache <name> [uri <uri>]\n".into(),
    };
    let Some(c) = caches.iter().find(|c| c.name() == name) else {
        return "No such cache\n".into();
    };
    let n = c.purge(slot, &|primary| match uri {
        None => true,
        Some(u) => primary
            .rsplit(|&b| b == 0)
            .next()
            .is_some_and(|p| p == u.as_bytes()),
    });
    match n {
        Ok(n) => format!("{n} object(s) removed from cache {name}.\n"),
        Err(n) => format!(
            "{n} object(s) removed from cache {name}; a shard stayed locked by a stopped process: try again.\n"
        ),
    }
}

/// `check cache NAME`: walks the cache's shards (one lock at a time) and
/// says whether every entry and block is where it belongs.
pub fn check_cache(caches: &[Cache<'static>], name: &str, slot: usize) -> String {
    let Some(c) = caches.iter().find(|c| c.name() == name) else {
        return "No such cache\n".into();
    };
    let errors = c.check(slot);
    let s = c.summary();
    if errors.is_empty() {
        return format!(
            "cache {name}: consistent ({} objects, {} of {} blocks used)\n",
            s.entries,
            s.blocks - s.free_blocks,
            s.blocks
        );
    }
    let mut out = format!("cache {name}: {} problem(s)\n", errors.len());
    for e in errors.iter().take(100) {
        let _ = writeln!(out, "  {e}");
    }
    out
}
