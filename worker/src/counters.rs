//! The words each worker publishes once per loop turn in its generation's
//! counters region (see `corral_shm::flags`), read by the master for
//! `show info` and `show activity`. Worker `id` owns words
//! `(id - 1) * COUNTERS ..`; the constants are offsets in that row.

/// Connections open now.
pub const CUR_CONNS: usize = 0;
/// Connections accepted since the worker started (rejected ones included).
pub const CUM_CONNS: usize = 1;
/// Pipes lent out for splicing.
pub const PIPES_USED: usize = 2;
/// Idle pipes in the pool.
pub const PIPES_FREE: usize = 3;
/// The pipe pool's bound.
pub const MAX_PIPES: usize = 4;
/// Connections with work left for the next loop turn (HAProxy's run queue).
pub const RUN_QUEUE: usize = 5;
/// 1 once the worker is soft-stopping.
pub const STOPPING: usize = 6;
/// Connections accepted.
pub const ACCEPTED: usize = 7;
/// Wakeups on a listener that found no connection to accept (another
/// worker took it): the thundering-herd measure.
pub const ACCEPT_EMPTY: usize = 8;
/// Loop turns (returns from epoll_wait).
pub const LOOPS: usize = 9;
/// Armed deadlines.
pub const TIMERS: usize = 10;
/// Log lines dropped (access log and process log) because a reader stalled.
pub const LOG_DROPPED: usize = 11;
/// Microseconds spent working (outside `epoll_wait`): `Idle_pct`.
pub const BUSY_US: usize = 12;
/// Client connections held (the client slab).
pub const CLIENT_CONNS: usize = 13;
/// Server connections held, pooled ones included.
pub const SERVER_CONNS: usize = 14;
/// Idle server connections in the pools.
pub const POOLED_CONNS: usize = 15;
/// Bytes one client connection's state takes (its slab entry).
pub const CLIENT_SIZE: usize = 16;
/// Bytes one server connection's state takes.
pub const SERVER_SIZE: usize = 17;
/// Naps taken between polls under load (see `crate::nap`).
pub const NAPS: usize = 18;
/// Grown pipes alive, lent or idle (see `crate::splice`): they are
/// counted in `PIPES_USED` and `PIPES_FREE` too.
pub const PIPES_GROWN: usize = 19;
/// Grown pipes idle in the pool.
pub const PIPES_GROWN_FREE: usize = 20;
/// Pipes the kernel refused to make (fd or memory limits): those bodies and
/// directions were copied instead (`show pools` failures, `PoolFailed`).
pub const PIPE_FAILURES: usize = 21;
/// Words per worker (the last ones spare).
pub const COUNTERS: usize = 24;

/// What the loop counts as it runs.
#[derive(Debug, Default)]
pub struct Activity {
    /// Connections accepted.
    pub accepted: u64,
    /// Listener wakeups that found nothing.
    pub accept_empty: u64,
    /// Loop turns.
    pub loops: u64,
    /// Time spent outside `epoll_wait`, µs.
    pub busy_us: u64,
    /// Naps taken instead of waiting in `epoll_wait`.
    pub naps: u64,
}
