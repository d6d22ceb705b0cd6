//! One indirection for atomics, so the epoch scheme runs under loom unchanged
//! (crossbeam-epoch does the same). Under `--cfg loom` the model checker's
//! types replace std's; the segment code itself (raw shared memory) is only
//! built without loom.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
