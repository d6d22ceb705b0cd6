//! corral's shared segment: the only state shared between processes.
//!
//! * [`segment`]: the header memfd (magic, layout version, epoch state,
//!   region ids), mapped MAP_SHARED; offsets, never pointers.
//! * [`region`]: one memfd per stick table, per generation's tracking
//!   records, health flags and counters, each describing itself in its first
//!   page; [`memfd`] creates them committed and sealed.
//! * [`epoch`]: cross-process epoch-based reclamation (why crossbeam-epoch
//!   cannot span processes is explained there).
//! * [`lock`]: short shard locks whose word names the owner, so the master can
//!   recover a lock held by a dead process.
//! * [`table`]: stick tables with lock-free lookups, atomic counters,
//!   [`freq`] rates computed as HAProxy's freq_ctr, budgeted expiry and eviction.
//! * [`flags`]: per-generation words (server health, worker counters) with one
//!   writer each.
//! * [`stats`]: proxy counter rows keyed by name, one cell per worker.
//! * [`cache`]: the HTTP cache store: objects in blocks, references
//!   recorded per process, eviction through the epochs.
//! * [`track`]: per-worker records of tracked entries, undone by the master
//!   when a worker dies.
//!
//! No sockets here: the worker and master crates do the I/O.

#[cfg(not(loom))]
pub mod cache;
pub mod epoch;
#[cfg(not(loom))]
pub mod flags;
pub mod freq;
pub mod lock;
#[cfg(not(loom))]
pub mod memfd;
mod primitive;
#[cfg(not(loom))]
pub mod region;
#[cfg(not(loom))]
pub mod segment;
#[cfg(not(loom))]
pub mod server_state;
#[cfg(not(loom))]
pub mod stats;
#[cfg(not(loom))]
pub mod table;
#[cfg(not(loom))]
pub mod track;

#[cfg(not(loom))]
pub use region::{Region, RegionKind};
#[cfg(not(loom))]
pub use segment::Segment;
#[cfg(not(loom))]
pub use table::{DataTypeName, EntryRef, StickTable};
