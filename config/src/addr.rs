//! Socket addresses: listeners (`"ip:port"`, `"[v6]:port"`, `":port"`) and
//! servers (the same, or `"host:port"` resolved once, at parse time).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Splits `"host:port"` and checks the port (1..=65535); `host` may be empty,
/// `*`, a bracketed IPv6 address or anything else.
fn split(s: &str, expected: &str) -> Result<(String, u16), String> {
    let bad = || format!("invalid address {s:?}: expected {expected}");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port = match port.parse::<u32>() {
        Ok(p @ 1..=65535) => p as u16,
        _ => return Err(format!("invalid port {port:?} in {s:?}: expected 1..65535")),
    };
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        return Ok((inner.to_string(), port));
    }
    if host.contains(':') {
        return Err(format!(
            "invalid address {s:?}: an IPv6 address needs brackets, e.g. \"[::1]:{port}\""
        ));
    }
    Ok((host.to_string(), port))
}

/// A listening address: `"ip:port"`, `"[v6]:port"`, or `":port"`/`"*:port"` for
/// every IPv4 address.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    const EXPECTED: &str = "\"ip:port\", \"[ipv6]:port\" or \":port\"";
    let (host, port) = split(s, EXPECTED)?;
    if host.is_empty() || host == "*" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    host.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, port))
        .map_err(|_| format!("invalid address {s:?}: expected {EXPECTED}"))
}

/// A server address: an IP literal, or a host name resolved now (first answer).
pub(crate) fn parse_server(s: &str) -> Result<SocketAddr, String> {
    const EXPECTED: &str = "\"ip:port\", \"[ipv6]:port\" or \"host:port\"";
    let (host, port) = split(s, EXPECTED)?;
    if host.is_empty() || host == "*" {
        return Err(format!("invalid address {s:?}: expected {EXPECTED}"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (host.as_str(), port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("cannot resolve '{s}': no address found")),
        Err(e) => Err(format!("cannot resolve '{s}': {e}")),
    }
}

/// Whether two listeners cannot both be bound: same port and family, and the
/// same address or one of them the wildcard. IPv4 and IPv6 never conflict
/// (IPv6 listeners are bound with `IPV6_V6ONLY`).
pub(crate) fn conflicts(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listen() {
        assert_eq!(parse_listen(":8080"), Ok(sa("0.0.0.0:8080")));
        assert_eq!(parse_listen("*:80"), Ok(sa("0.0.0.0:80")));
        assert_eq!(parse_listen("127.0.0.1:80"), Ok(sa("127.0.0.1:80")));
        assert_eq!(parse_listen("[::]:80"), Ok(sa("[::]:80")));
        assert_eq!(parse_listen("[::1]:443"), Ok(sa("[::1]:443")));
        assert!(parse_listen("127.0.0.1").is_err());
        assert!(parse_listen("127.0.0.1:0")
            .unwrap_err()
            .contains("1..65535"));
        assert!(parse_listen("127.0.0.1:65536").is_err());
        assert!(parse_listen("::1:80").unwrap_err().contains("brackets"));
        assert!(parse_listen("localhost:80").is_err());
        assert!(parse_listen("[::1:80").is_err());
        assert!(parse_listen("1.2.3.4:-1").is_err());
    }

    #[test]
    fn server() {
        assert_eq!(parse_server("10.0.0.1:8080"), Ok(sa("10.0.0.1:8080")));
        assert!(parse_server(":80").is_err());
        assert!(parse_server("localhost").is_err());
        let local = parse_server("localhost:80").unwrap();
        assert!(local.ip().is_loopback());
        assert!(parse_server("no-such-host.invalid:80")
            .unwrap_err()
            .starts_with("cannot resolve 'no-such-host.invalid:80': "));
    }

    #[test]
    fn conflict_rules() {
        assert!(conflicts(sa("0.0.0.0:80"), sa("127.0.0.1:80")));
        assert!(conflicts(sa("127.0.0.1:80"), sa("127.0.0.1:80")));
        assert!(!conflicts(sa("127.0.0.1:80"), sa("127.0.0.2:80")));
        assert!(!conflicts(sa("0.0.0.0:80"), sa("0.0.0.0:81")));
        assert!(!conflicts(sa("[::]:80"), sa("0.0.0.0:80")));
        assert!(conflicts(sa("[::]:80"), sa("[::1]:80")));
    }
}
