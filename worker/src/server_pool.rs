//! Idle server connections, per server, that any client connection of this
//! worker may take for its next request (HAProxy's `http-reuse`).
//!
//! A pooled connection has no owner ([`POOLED`]); its events only ever say
//! the server closed it, reset it or wrote out of turn, and then it is
//! dropped at once, never handed out. Taking one looks again with a
//! non-blocking peek ([`idle_usable`]), since that event may not have been
//! read yet. Each server's list is LIFO (the warmest connection goes first,
//! the coldest age out): the oldest sit at the front, where the purge looks.
//!
//! Bounds: at most `pool_max_idle` connections per server; a connection
//! unused for `pool_purge_delay` is closed, at most [`PURGE_BATCH`] per
//! loop turn.

use std::time::Instant;

use corral_config::{Config, HttpReuse};

use crate::server_conn::{idle_usable, ServerConn};

/// The owner of a pooled connection: no client.
pub(crate) const POOLED: (usize, u64) = (usize::MAX, 0);

/// Connections closed by one purge, before other work gets a turn.
const PURGE_BATCH: usize = 64;

/// Which idle connections a request may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// None: it opens its own (or keeps its client's, `http_reuse = never`).
    Own,
    /// Only connections that already served more than one request.
    Proven,
    /// Any idle connection of the server.
    Any,
}

impl Reuse {
    /// What request number `nth` (1-based) of a client connection may take
    /// under `mode`.
    pub fn of(mode: HttpReuse, nth: u32) -> Reuse {
        match mode {
            HttpReuse::Never => Reuse::Own,
            HttpReuse::Safe if nth <= 1 => Reuse::Own,
            HttpReuse::Aggressive if nth <= 1 => Reuse::Proven,
            HttpReuse::Safe | HttpReuse::Aggressive | HttpReuse::Always => Reuse::Any,
        }
    }
}

/// The idle connections of every server of this worker.
#[derive(Default)]
pub struct ServerPools {
    /// `[backend][server]`: server connection keys, oldest first.
    idle: Vec<Vec<Vec<usize>>>,
    /// When the oldest pooled connection is due to be purged.
    next_purge: Option<Instant>,
}

impl ServerPools {
    /// Empty pools shaped after `cfg`'s backends.
    pub fn new(cfg: &Config) -> ServerPools {
        ServerPools {
            idle: cfg
                .backends
                .iter()
                .map(|b| vec![Vec::new(); b.servers.len()])
                .collect(),
            next_purge: None,
        }
    }

    /// Idle connections pooled now (all servers).
    pub fn len(&self) -> usize {
        self.idle.iter().flatten().map(Vec::len).sum()
    }

    /// Whether no connection is pooled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts connection `skey` (clean, its response complete) in its
    /// server's pool; false if the pool is full (the caller closes it).
    pub fn put(
        &mut self,
        cfg: &Config,
        servers: &mut slab::Slab<ServerConn>,
        skey: usize,
        now: Instant,
    ) -> bool {
        let Some(s) = servers.get_mut(skey) else {
            return false;
        };
        let (be, srv) = (s.backend, s.server);
        let b = &cfg.backends[be];
        let list = &mut self.idle[be][srv];
        if list.len() >= b.pool_max_idle as usize {
            return false;
        }
        s.owner = POOLED;
        s.idle_since = now;
        s.idle_turn = crate::server_conn::poll_turn();
        // An idle connection holds no buffer memory.
        s.rx.shrink_if_empty();
        s.tx.shrink_if_empty();
        list.push(skey);
        let due = now + b.pool_purge_delay;
        if self.next_purge.is_none_or(|t| due < t) {
            self.next_purge = Some(due);
        }
        true
    }

    /// Takes the most recently pooled usable connection to server `srv` of
    /// `be` that `reuse` allows; unusable ones met on the way are closed.
    pub fn take(
        &mut self,
        servers: &mut slab::Slab<ServerConn>,
        be: usize,
        srv: usize,
        reuse: Reuse,
        quick: bool,
    ) -> Option<usize> {
        if reuse == Reuse::Own {
            return None;
        }
        let list = self.idle.get_mut(be)?.get_mut(srv)?;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let skey = list[i];
            let Some(s) = servers.get_mut(skey) else {
                list.remove(i);
                continue;
            };
            if !idle_usable(s, quick) {
                list.remove(i);
                servers.remove(skey);
                continue;
            }
            if reuse == Reuse::Proven && s.requests < 2 {
                continue;
            }
            list.remove(i);
            return Some(skey);
        }
        None
    }

    /// Pooled connection `skey` had an event: if it can no longer serve
    /// (the server closed it, reset it, or wrote out of turn), it is
    /// closed and leaves the pool.
    pub fn on_event(&mut self, servers: &mut slab::Slab<ServerConn>, skey: usize) {
        let Some(s) = servers.get_mut(skey) else {
            return;
        };
        if idle_usable(s, false) {
            return;
        }
        let (be, srv) = (s.backend, s.server);
        if let Some(list) = self.idle.get_mut(be).and_then(|b| b.get_mut(srv)) {
            list.retain(|&k| k != skey);
        }
        servers.remove(skey);
    }

    /// When [`ServerPools::purge`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_purge
    }

    /// Closes connections unused for their backend's `pool_purge_delay`
    /// (a bounded batch; the deadline then says when to come back).
    pub fn purge(&mut self, cfg: &Config, servers: &mut slab::Slab<ServerConn>, now: Instant) {
        if self.next_purge.is_none_or(|t| now < t) {
            return;
        }
        let mut budget = PURGE_BATCH;
        let mut next: Option<Instant> = None;
        for (be, per_server) in self.idle.iter_mut().enumerate() {
            let delay = cfg.backends[be].pool_purge_delay;
            for list in per_server.iter_mut() {
                while let Some(&skey) = list.first() {
                    let since = servers.get(skey).map(|s| s.idle_since);
                    match since {
                        Some(t) if now < t + delay => {
                            let due = t + delay;
                            next = Some(next.map_or(due, |n| n.min(due)));
                            break;
                        }
                        _ if budget == 0 => {
                            next = Some(now);
                            break;
                        }
                        _ => {
                            list.remove(0);
                            budget -= 1;
                            if since.is_some() {
                                servers.remove(skey);
                            }
                        }
                    }
                }
            }
        }
        self.next_purge = next;
    }

    /// Closes the pooled connections of server `srv` of `be` (its address
    /// changed: they lead to the old one).
    pub fn drop_server(&mut self, servers: &mut slab::Slab<ServerConn>, be: usize, srv: usize) {
        if let Some(list) = self.idle.get_mut(be).and_then(|b| b.get_mut(srv)) {
            for skey in list.drain(..) {
                servers.try_remove(skey);
            }
        }
    }

    /// Closes every pooled connection (a soft stop: no later request will
    /// take them).
    pub fn clear(&mut self, servers: &mut slab::Slab<ServerConn>) {
        for list in self.idle.iter_mut().flatten() {
            for skey in list.drain(..) {
                servers.try_remove(skey);
            }
        }
        self.next_purge = None;
    }
}
