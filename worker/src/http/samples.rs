//! What the rules' fetches read on an HTTP request: the connection, the
//! request head, and the stick counters tracked so far.

use std::net::{IpAddr, SocketAddr};

use corral_config::ScData;
use corral_http::h1::Request;

use crate::rules::Samples;
use crate::stick::{StickCounters, Sticky};

/// The samples of one request.
pub(crate) struct HttpSamples<'a> {
    pub peer: SocketAddr,
    pub local_port: u16,
    pub req: &'a Request,
    pub sticky: &'a Sticky,
    pub sc: &'a StickCounters,
}

impl Samples for HttpSamples<'_> {
    fn src(&self) -> IpAddr {
        self.peer.ip()
    }

    fn dst_port(&self) -> u16 {
        self.local_port
    }

    fn path(&self) -> Option<&str> {
        Some(self.req.path())
    }

    fn url(&self) -> Option<&str> {
        Some(self.req.target())
    }

    fn method(&self) -> Option<&str> {
        Some(self.req.method_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.req.fields.get_str(name)
    }

    fn sc_value(&self, slot: u8, what: ScData) -> Option<i64> {
        self.sticky.sc_value(self.sc, slot, what)
    }
}
