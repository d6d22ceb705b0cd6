//! A server's runtime state, set through the stats socket by the master and
//! read by every worker: admin state (maintenance, drain), weight and
//! address. The words live in column 0 of the server's counter row (the
//! master's column, see `stats`), so they follow the server by name across
//! reloads like the carried counters do.
//!
//! The address spans three words; the master writes them inside a sequence
//! (odd while writing), and a reader that sees the sequence change or odd
//! keeps what it had. A master killed mid-write leaves the sequence odd:
//! workers then keep their last address until the next master writes again.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::primitive::{fence, Ordering};
use crate::stats::{Cell, Stat, ADMIN_DRAIN, ADMIN_MAINT};

/// What the master set for one server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerRuntime {
    /// In maintenance: no traffic, no checks.
    pub maint: bool,
    /// Draining: no new traffic but persistence.
    pub drain: bool,
    /// The weight set at run time (`None`: the configured one).
    pub weight: Option<u32>,
}

/// Reads the admin state and weight (two loads).
pub fn read(c: Cell<'_>) -> ServerRuntime {
    let a = c.get(Stat::AdminState);
    let w = c.get(Stat::AdminWeight);
    ServerRuntime {
        maint: a & ADMIN_MAINT != 0,
        drain: a & ADMIN_DRAIN != 0,
        weight: w.checked_sub(1).map(|w| w.min(256) as u32),
    }
}

/// Sets the admin state bits (the master).
pub fn set_admin(c: Cell<'_>, maint: bool, drain: bool) {
    let mut v = 0;
    if maint {
        v |= ADMIN_MAINT;
    }
    if drain {
        v |= ADMIN_DRAIN;
    }
    c.set(Stat::AdminState, v);
}

/// Sets the run-time weight (the master); `None` goes back to the config's.
pub fn set_weight(c: Cell<'_>, w: Option<u32>) {
    c.set(
        Stat::AdminWeight,
        w.map_or(0, |w| u64::from(w.min(256)) + 1),
    );
}

/// The address words' sequence: changes whenever the address does.
pub fn addr_seq(c: Cell<'_>) -> u64 {
    c.get(Stat::AddrSeq)
}

/// Reads the run-time address: `Ok(None)` when none is set, `Err(())`
/// while the master is writing it (try again next turn).
#[allow(clippy::result_unit_err)]
pub fn read_addr(c: Cell<'_>) -> Result<Option<SocketAddr>, ()> {
    let s1 = c.get(Stat::AddrSeq);
    if s1 % 2 == 1 {
        return Err(());
    }
    fence(Ordering::Acquire);
    let (hi, lo, port) = (
        c.get(Stat::AddrHi),
        c.get(Stat::AddrLo),
        c.get(Stat::AddrPort),
    );
    fence(Ordering::Acquire);
    if c.get(Stat::AddrSeq) != s1 {
        return Err(());
    }
    let Some(port) = port.checked_sub(1) else {
        return Ok(None);
    };
    let v6 = Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    Ok(Some(SocketAddr::new(ip, port as u16)))
}

/// Sets the run-time address (the master, the single writer).
pub fn set_addr(c: Cell<'_>, addr: Option<SocketAddr>) {
    let seq = c.get(Stat::AddrSeq);
    let seq = seq + 1 + seq % 2; // odd: writing
    c.set(Stat::AddrSeq, seq);
    fence(Ordering::Release);
    let (bits, port) = match addr {
        Some(a) => {
            let v6 = match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            (u128::from(v6), u64::from(a.port()) + 1)
        }
        None => (0, 0),
    };
    c.set(Stat::AddrHi, (bits >> 64) as u64);
    c.set(Stat::AddrLo, bits as u64);
    c.set(Stat::AddrPort, port);
    fence(Ordering::Release);
    c.set(Stat::AddrSeq, seq + 1);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::stats::{RowKey, StatsRegion};
    use crate::Segment;

    #[test]
    fn state_weight_and_address_round_trip() {
        let seg = Segment::create().unwrap();
        let s = StatsRegion::create(&seg, 1, &[RowKey::server("b", "s")], &[1], 2).unwrap();
        let c = s.cell(0, 0).unwrap();
        assert_eq!(read(c), ServerRuntime::default());
        assert_eq!(read_addr(c), Ok(None));
        set_admin(c, true, false);
        set_weight(c, Some(0));
        assert_eq!(
            read(c),
            ServerRuntime {
                maint: true,
                drain: false,
                weight: Some(0)
            }
        );
        set_weight(c, None);
        assert_eq!(read(c).weight, None);
        let before = addr_seq(c);
        for a in ["127.0.0.9:8080", "[::1]:80", "10.1.2.3:0"] {
            let a: SocketAddr = a.parse().unwrap();
            set_addr(c, Some(a));
            assert_eq!(read_addr(c), Ok(Some(a)));
        }
        assert!(addr_seq(c) > before && addr_seq(c).is_multiple_of(2));
        c.set(Stat::AddrSeq, addr_seq(c) + 1);
        assert_eq!(read_addr(c), Err(()), "a write in progress is not read");
    }
}
