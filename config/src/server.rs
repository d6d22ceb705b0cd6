//! `server.NAME = {...}` of a backend: address, weight, limits, backup, check.

use std::net::{Ipv4Addr, SocketAddr};

use crate::addr;
use crate::diag::Diag;
use crate::model::Server;
use crate::walk::{self, Section};

/// Keys a server accepts.
const KEYS: &[&str] = &["addr", "weight", "maxconn", "backup", "check"];

/// Reads one server.
pub(crate) fn parse(name: &str, sec: &Section<'_, '_>, d: &mut Diag) -> Server {
    sec.check_keys(KEYS, d);
    let addr = sec.require("addr", d, |k, v, d| {
        let s = walk::string(k, v, d)?;
        addr::parse_server(s).map_err(|e| d.error(v.span(), e)).ok()
    });
    Server {
        name: name.to_string(),
        addr: addr.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
        weight: sec
            .read("weight", d, |k, v, d| walk::int(k, v, 0, 256, d))
            .map_or(1, |n| n as u32),
        maxconn: sec.read("maxconn", d, |k, v, d| walk::u32_min(k, v, 1, d)),
        backup: sec.read("backup", d, walk::boolean).unwrap_or(false),
        check: sec.read("check", d, walk::boolean).unwrap_or(true),
    }
}
