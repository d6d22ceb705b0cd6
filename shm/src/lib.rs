//! corral's shared segment: the only state shared between processes.
//!
//! * [`segment`]: one memfd mapped MAP_SHARED, a header with magic, layout
//!   version and a directory of regions; offsets, never pointers.
//! * [`epoch`]: cross-process epoch-based reclamation (why crossbeam-epoch
//!   cannot span processes is explained there).
//! * [`lock`]: short shard locks whose word names the owner, so the master can
//!   recover a lock held by a dead process.
//! * [`table`]: stick tables with lock-free lookups, atomic counters,
//!   [`freq`] rates computed as HAProxy's freq_ctr, budgeted expiry and eviction.
//! * [`flags`]: per-generation flags (server health) with one writer each.
//! * [`track`]: per-process records of tracked entries, undone by the master
//!   when a process dies.
//!
//! No sockets here: the worker and master crates do the I/O.

pub mod epoch;
#[cfg(not(loom))]
pub mod flags;
pub mod freq;
pub mod lock;
mod primitive;
#[cfg(not(loom))]
pub mod segment;
#[cfg(not(loom))]
pub mod table;
#[cfg(not(loom))]
pub mod track;

#[cfg(not(loom))]
pub use segment::Segment;
#[cfg(not(loom))]
pub use table::{DataTypeName, EntryRef, StickTable};
