//! The master's side of the HTTP caches: like stick tables, a cache whose
//! definition is unchanged is the very same region across a reload (the
//! new workers hit what the old ones stored); a resized one starts empty,
//! and the old region is kept until the old workers are gone.

use std::io;
use std::sync::Arc;

use corral_config::Config;
use corral_shm::cache::Cache;
use corral_shm::{Region, RegionKind, Segment};

use crate::shared::{Mode, Role};

/// The caches `cfg` asks for: each kept from `current` when its layout is
/// unchanged, else created. Messages say which.
pub fn prepare(
    seg: &'static Segment,
    current: &[Cache<'static>],
    cfg: &Config,
    messages: &mut Vec<String>,
) -> io::Result<Vec<Cache<'static>>> {
    let mut out = Vec::new();
    for def in &cfg.caches {
        if let Some(c) = current.iter().find(|c| c.matches(def)) {
            messages.push(format!(
                "cache {}: kept ({} objects)",
                def.name,
                c.summary().entries
            ));
            out.push(c.clone());
            continue;
        }
        let c = Cache::create(seg, def)?;
        if current.iter().any(|c| c.name() == def.name) {
            messages.push(format!("cache {}: size changed, starts empty", def.name));
        } else {
            messages.push(format!("cache {}: created", def.name));
        }
        out.push(c);
    }
    Ok(out)
}

/// After the exec: the caches of `cfg` among the `inherited` regions (the
/// `next` ones, or in [`Mode::Revert`] the `prev` ones; else any region
/// of the same layout), created when none fits.
pub fn adopt(
    seg: &'static Segment,
    cfg: &Config,
    regions: &[(Arc<Region>, Role)],
    mode: Mode,
    messages: &mut Vec<String>,
) -> io::Result<Vec<Cache<'static>>> {
    let mut out = Vec::new();
    for def in &cfg.caches {
        let wanted = |role: Role| match mode {
            Mode::Next => role.next,
            Mode::Revert => role.prev,
        };
        let open = |pick: &dyn Fn(Role) -> bool| {
            regions
                .iter()
                .filter(|(r, role)| r.kind() == RegionKind::Cache && pick(*role))
                .filter_map(|(r, _)| Cache::open(seg, r.clone()))
                .find(|c| c.matches(def))
        };
        if let Some(c) = open(&|role| wanted(role)).or_else(|| open(&|_| true)) {
            out.push(c);
            continue;
        }
        messages.push(format!("cache {}: created", def.name));
        out.push(Cache::create(seg, def)?);
    }
    Ok(out)
}
