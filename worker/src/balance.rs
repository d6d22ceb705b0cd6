//! Load-balancing algorithms: which server of a backend gets the next connection.
//!
//! Pure logic over per-server state (no sockets), so every algorithm is unit
//! tested for its distribution. The rules common to all algorithms:
//!
//! * a server is *usable* when it is up and its weight is above 0;
//! * servers already tried by this connection (a failed connect) are skipped
//!   while an untried one is usable: that is the redispatch; when every
//!   usable server was tried, they are tried again (retries on the same one);
//! * backup servers are used only when no active server is usable, and then
//!   only the first usable backup unless `allbackups` (HAProxy's rule);
//! * a usable server at its `maxconn` is *full*: when every candidate is full
//!   the connection waits in the backend's queue ([`Pick::Full`]).

use std::net::IpAddr;

use corral_config::{Backend, Balance};

/// The hash key of a client address, for `balance source`.
pub fn ip_key(client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64)
        }
    }
}

/// Runtime state of one server, as seen by this worker.
#[derive(Clone, Debug)]
pub struct ServerState {
    /// Current weight (0..=256); 0 takes the server out of weighted rotation.
    pub weight: u32,
    /// Cap on concurrent connections, if any.
    pub maxconn: Option<u32>,
    /// A backup server.
    pub backup: bool,
    /// Usable as far as health knows.
    pub up: bool,
    /// In maintenance (set through the stats socket): no traffic at all.
    pub maint: bool,
    /// Draining: no new traffic but what persistence sends.
    pub drain: bool,
    /// Where to connect (the config's address, or one set at run time).
    pub addr: std::net::SocketAddr,
    /// The sequence of the run-time address last read.
    pub addr_seq: u64,
    /// Connections to this server now (connecting or established).
    pub cur: u32,
    /// Connections ever sent to this server.
    pub total: u64,
    /// Smooth weighted round-robin accumulator.
    current_weight: i64,
}

impl ServerState {
    /// Whether another connection fits under the server's maxconn.
    pub fn has_slot(&self) -> bool {
        self.maxconn.is_none_or(|m| self.cur < m)
    }
}

/// The outcome of a pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Connect to this server (index into the backend's servers).
    Server(usize),
    /// Usable servers exist but all are at their maxconn: queue.
    Full,
    /// No server is usable at all.
    NoServer,
}

/// A backend's servers and its algorithm.
#[derive(Debug)]
pub struct Balancer {
    algo: Balance,
    allbackups: bool,
    /// Server states in declaration order.
    pub servers: Vec<ServerState>,
    rng: u64,
    /// Rotation point used to break leastconn ties fairly.
    tie: usize,
}

impl Balancer {
    /// The balancer of a configured backend; `seed` varies the random picks per worker.
    pub fn new(backend: &Backend, seed: u64) -> Balancer {
        let servers = backend
            .servers
            .iter()
            .map(|s| ServerState {
                weight: s.weight,
                maxconn: s.maxconn,
                backup: s.backup,
                up: true,
                maint: false,
                drain: false,
                addr: s.addr,
                addr_seq: 0,
                cur: 0,
                total: 0,
                current_weight: 0,
            })
            .collect();
        Balancer {
            algo: backend.balance,
            allbackups: backend.allbackups,
            servers,
            rng: seed | 1,
            tie: 0,
        }
    }

    /// Chooses a server, skipping servers in `tried` while an untried one is
    /// usable. `hash` is the key of the hashing algorithms (`source`: the
    /// client's address, see [`ip_key`]; `uri`: the path; `hdr()`: the
    /// header's value); without one they fall back to round robin.
    pub fn pick(&mut self, hash: Option<u64>, tried: &[usize]) -> Pick {
        let candidates = self.candidates(tried);
        if candidates.is_empty() {
            return Pick::NoServer;
        }
        let hashed = matches!(self.algo, Balance::Source | Balance::Uri | Balance::Hdr);
        let chosen = match (self.algo, hash) {
            // Deterministic: the hashed server or nothing, never another one.
            (_, Some(key)) if hashed => {
                let i = self.hash_pick(&candidates, key);
                return if self.servers[i].has_slot() {
                    Pick::Server(i)
                } else {
                    Pick::Full
                };
            }
            (Balance::First, _) => candidates
                .iter()
                .copied()
                .find(|&i| self.servers[i].has_slot()),
            _ => {
                let free: Vec<usize> = candidates
                    .iter()
                    .copied()
                    .filter(|&i| self.servers[i].has_slot())
                    .collect();
                if free.is_empty() {
                    None
                } else {
                    Some(match self.algo {
                        Balance::LeastConn => self.least_conn(&free),
                        Balance::Random => self.two_choices(&free),
                        _ => self.smooth_round_robin(&free),
                    })
                }
            }
        };
        match chosen {
            Some(i) => Pick::Server(i),
            None => Pick::Full,
        }
    }

    /// Records that a connection to server `i` started.
    pub fn acquire(&mut self, i: usize) {
        self.servers[i].cur += 1;
        self.servers[i].total += 1;
    }

    /// Records that a connection to server `i` ended.
    pub fn release(&mut self, i: usize) {
        self.servers[i].cur = self.servers[i].cur.saturating_sub(1);
    }

    /// Whether server `i` may get connections (up, in service, not
    /// draining, and weighted unless `first`).
    pub fn usable(&self, i: usize) -> bool {
        let s = &self.servers[i];
        s.up && !s.maint && !s.drain && (s.weight > 0 || self.algo == Balance::First)
    }

    /// Whether persistence may still send a client to server `i`: up and
    /// not in maintenance (a draining server keeps its sticky clients).
    pub fn persists(&self, i: usize) -> bool {
        let s = &self.servers[i];
        s.up && !s.maint
    }

    fn candidates(&self, tried: &[usize]) -> Vec<usize> {
        for backup in [false, true] {
            let pool: Vec<usize> = (0..self.servers.len())
                .filter(|&i| self.servers[i].backup == backup && self.usable(i))
                .collect();
            if pool.is_empty() {
                continue;
            }
            let pool = if backup && !self.allbackups {
                pool[..1].to_vec()
            } else {
                pool
            };
            let untried: Vec<usize> = pool
                .iter()
                .copied()
                .filter(|i| !tried.contains(i))
                .collect();
            return if untried.is_empty() { pool } else { untried };
        }
        Vec::new()
    }

    /// nginx's smooth weighted round robin: each pick adds every weight to its
    /// server's accumulator, takes the largest and subtracts the total from it.
    /// Weights 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
    fn smooth_round_robin(&mut self, free: &[usize]) -> usize {
        let total: i64 = free.iter().map(|&i| self.servers[i].weight as i64).sum();
        let mut best = free[0];
        for &i in free {
            self.servers[i].current_weight += self.servers[i].weight as i64;
            if self.servers[i].current_weight > self.servers[best].current_weight {
                best = i;
            }
        }
        self.servers[best].current_weight -= total;
        best
    }

    /// Fewest connections per unit of weight; ties rotate.
    fn least_conn(&mut self, free: &[usize]) -> usize {
        self.tie = self.tie.wrapping_add(1);
        let start = self.tie % free.len();
        let mut best = free[start];
        for k in 1..free.len() {
            let i = free[(start + k) % free.len()];
            let (a, b) = (&self.servers[i], &self.servers[best]);
            // a.cur / a.weight < b.cur / b.weight, without division.
            if (a.cur as u64) * (b.weight.max(1) as u64) < (b.cur as u64) * (a.weight.max(1) as u64)
            {
                best = i;
            }
        }
        best
    }

    /// Power of two choices: two weighted random servers, the less loaded wins.
    fn two_choices(&mut self, free: &[usize]) -> usize {
        let a = self.weighted_random(free);
        let b = self.weighted_random(free);
        let (sa, sb) = (&self.servers[a], &self.servers[b]);
        if (sb.cur as u64) * (sa.weight.max(1) as u64) < (sa.cur as u64) * (sb.weight.max(1) as u64)
        {
            b
        } else {
            a
        }
    }

    fn weighted_random(&mut self, free: &[usize]) -> usize {
        let total: u64 = free
            .iter()
            .map(|&i| self.servers[i].weight.max(1) as u64)
            .sum();
        let mut r = self.next_random() % total;
        for &i in free {
            let w = self.servers[i].weight.max(1) as u64;
            if r < w {
                return i;
            }
            r -= w;
        }
        free[free.len() - 1]
    }

    /// Weighted rendezvous hashing: each server scores the key and the best
    /// score wins. Removing a server moves only the keys it held (consistent),
    /// and a weight w server wins w times as often as a weight 1 one.
    fn hash_pick(&self, candidates: &[usize], key: u64) -> usize {
        let mut best = candidates[0];
        let mut best_score = f64::NEG_INFINITY;
        for &i in candidates {
            let h = mix(key ^ mix(i as u64 + 1));
            // Uniform in (0, 1): 53 high bits, never 0.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = -(self.servers[i].weight.max(1) as f64) / u.ln();
            if score > best_score {
                best_score = score;
                best = i;
            }
        }
        best
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: fast, good enough to spread load, not for secrets.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A 64-bit finaliser (splitmix64) that spreads close keys far apart.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn balancer(algo: Balance, servers: &[(u32, Option<u32>, bool)]) -> Balancer {
        Balancer {
            algo,
            allbackups: false,
            servers: servers
                .iter()
                .map(|&(weight, maxconn, backup)| ServerState {
                    weight,
                    maxconn,
                    backup,
                    up: true,
                    maint: false,
                    drain: false,
                    addr: (LOCAL, 80).into(),
                    addr_seq: 0,
                    cur: 0,
                    total: 0,
                    current_weight: 0,
                })
                .collect(),
            rng: 42,
            tie: 0,
        }
    }

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn maintenance_and_drain_leave_rotation_drain_keeps_persistence() {
        let mut b = balancer(Balance::RoundRobin, &[(1, None, false), (1, None, false)]);
        b.servers[0].maint = true;
        for _ in 0..4 {
            assert_eq!(b.pick(None, &[]), Pick::Server(1));
        }
        assert!(!b.persists(0));
        b.servers[0].maint = false;
        b.servers[0].drain = true;
        for _ in 0..4 {
            assert_eq!(b.pick(None, &[]), Pick::Server(1));
        }
        assert!(b.persists(0), "a draining server keeps its sticky clients");
        b.servers[1].maint = true;
        assert_eq!(b.pick(None, &[]), Pick::NoServer);
    }

    fn pick(b: &mut Balancer) -> usize {
        match b.pick(Some(ip_key(LOCAL)), &[]) {
            Pick::Server(i) => i,
            other => panic!("expected a server, got {other:?}"),
        }
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        let mut b = balancer(
            Balance::RoundRobin,
            &[(5, None, false), (1, None, false), (1, None, false)],
        );
        let seq: Vec<usize> = (0..7).map(|_| pick(&mut b)).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_weights_1_and_3_over_40() {
        let mut b = balancer(Balance::RoundRobin, &[(1, None, false), (3, None, false)]);
        let mut n = [0; 2];
        for _ in 0..40 {
            n[pick(&mut b)] += 1;
        }
        assert_eq!(n, [10, 30]);
    }

    #[test]
    fn leastconn_prefers_the_idle_server() {
        let mut b = balancer(Balance::LeastConn, &[(1, None, false), (1, None, false)]);
        b.acquire(0);
        b.acquire(0);
        assert_eq!(pick(&mut b), 1);
        b.acquire(1);
        assert_eq!(pick(&mut b), 1);
    }

    #[test]
    fn first_fills_servers_in_order() {
        let mut b = balancer(Balance::First, &[(1, Some(1), false), (1, Some(1), false)]);
        assert_eq!(pick(&mut b), 0);
        b.acquire(0);
        assert_eq!(pick(&mut b), 1);
        b.acquire(1);
        assert_eq!(b.pick(Some(ip_key(LOCAL)), &[]), Pick::Full);
    }

    #[test]
    fn source_hash_is_sticky_and_spreads() {
        let mut b = balancer(Balance::Source, &[(1, None, false), (1, None, false)]);
        let mut seen = [0; 2];
        for last in 10..30u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let Pick::Server(first) = b.pick(Some(ip_key(ip)), &[]) else {
                panic!()
            };
            for _ in 0..5 {
                assert_eq!(b.pick(Some(ip_key(ip)), &[]), Pick::Server(first));
            }
            seen[first] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }

    #[test]
    fn source_hash_is_consistent_when_a_server_leaves() {
        let mut b = balancer(
            Balance::Source,
            &[(1, None, false), (1, None, false), (1, None, false)],
        );
        let ips: Vec<IpAddr> = (0..200u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + i)))
            .collect();
        let before: Vec<Pick> = ips
            .iter()
            .map(|&ip| b.pick(Some(ip_key(ip)), &[]))
            .collect();
        b.servers[2].up = false;
        for (ip, was) in ips.iter().zip(before) {
            if was != Pick::Server(2) {
                assert_eq!(
                    b.pick(Some(ip_key(*ip)), &[]),
                    was,
                    "keys of surviving servers stay put"
                );
            }
        }
    }

    #[test]
    fn random_two_choices_uses_both() {
        let mut b = balancer(Balance::Random, &[(1, None, false), (1, None, false)]);
        let mut n = [0; 2];
        for _ in 0..100 {
            n[pick(&mut b)] += 1;
        }
        assert!(n[0] > 10 && n[1] > 10, "{n:?}");
    }

    #[test]
    fn tried_servers_are_skipped_then_retried() {
        let mut b = balancer(Balance::RoundRobin, &[(1, None, false), (1, None, false)]);
        assert_eq!(b.pick(Some(ip_key(LOCAL)), &[0]), Pick::Server(1));
        assert_eq!(b.pick(Some(ip_key(LOCAL)), &[1]), Pick::Server(0));
        assert!(matches!(
            b.pick(Some(ip_key(LOCAL)), &[0, 1]),
            Pick::Server(_)
        ));
    }

    #[test]
    fn backup_only_when_no_active_is_usable() {
        let mut b = balancer(
            Balance::RoundRobin,
            &[(1, None, false), (1, None, true), (1, None, true)],
        );
        assert_eq!(pick(&mut b), 0);
        b.servers[0].up = false;
        assert_eq!(pick(&mut b), 1, "first backup only");
        assert_eq!(pick(&mut b), 1);
        b.allbackups = true;
        let mut n = [0; 3];
        for _ in 0..10 {
            n[pick(&mut b)] += 1;
        }
        assert_eq!(n, [0, 5, 5]);
        b.servers[1].up = false;
        b.servers[2].up = false;
        assert_eq!(b.pick(Some(ip_key(LOCAL)), &[]), Pick::NoServer);
    }
}
