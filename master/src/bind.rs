//! Binding the listening sockets, once, in the master, before any fork.
//!
//! Workers inherit these sockets, so all of them share one kernel accept
//! queue per address; a reload hands the very same sockets to the next
//! generation. IPv6 sockets are bound with IPV6_V6ONLY so `[::]:80` and
//! `0.0.0.0:80` can both be bound, as nginx does.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};

use corral_config::Config;
use socket2::{Domain, Protocol, Socket, Type};

/// A bind that failed, with enough context for an operator to act.
#[derive(Debug)]
pub struct BindError {
    /// Frontend whose bind failed.
    pub frontend: String,
    /// The address.
    pub addr: SocketAddr,
    /// What the kernel said.
    pub error: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot bind frontend '{}' to {}: {}",
            self.frontend, self.addr, self.error
        )
    }
}

/// Binds and listens on every frontend address, reusing `inherited` sockets
/// whose address matches (a reload or takeover: the same kernel socket, so
/// its accept queue survives and no connection is refused). Inherited
/// sockets the config no longer names are closed. Returns (frontend, socket).
pub fn bind_all(
    cfg: &Config,
    mut inherited: Vec<(TcpListener, SocketAddr)>,
    messages: &mut Vec<String>,
) -> Result<Vec<(usize, TcpListener)>, BindError> {
    let mut out = Vec::new();
    for (i, fe) in cfg.frontends.iter().enumerate() {
        for &addr in &fe.bind {
            let err = |error| BindError {
                frontend: fe.name.clone(),
                addr,
                error,
            };
            let sock = match inherited.iter().position(|(_, a)| *a == addr) {
                Some(pos) => {
                    let (sock, _) = inherited.swap_remove(pos);
                    // listen() again applies a changed backlog; the queue stays.
                    relisten(&sock, fe.backlog).map_err(err)?;
                    sock
                }
                None => {
                    if !inherited.is_empty() || !messages.is_empty() {
                        messages.push(format!("listener {addr} (frontend {}): bound", fe.name));
                    }
                    listen(addr, fe.backlog).map_err(err)?
                }
            };
            out.push((i, sock));
        }
    }
    for (_, addr) in inherited {
        messages.push(format!("listener {addr}: no longer configured, closed"));
    }
    Ok(out)
}

fn relisten(sock: &TcpListener, backlog: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    sock.set_nonblocking(true)?;
    // An older build's listener may not have it (see `listen`).
    socket2::SockRef::from(sock).set_tcp_nodelay(true)?;
    // SAFETY: listen(2) on a listening socket we own.
    if unsafe { libc::listen(sock.as_raw_fd(), backlog.min(i32::MAX as u32) as i32) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `defer_accept = true` (a frontend whose clients speak first, as HTTP
/// clients do): the listener hands a connection over once its first bytes
/// are in (TCP_DEFER_ACCEPT, as HAProxy's `defer-accept`), so the accept
/// and the read of the request share one wakeup.
/// A client that connects and stays silent is accepted after about a second
/// anyway (at the kernel's first SYN-ACK retransmission); `timeout client`
/// runs from then.
fn defer_accept(sock: &TcpListener, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs: libc::c_int = if on { 1 } else { 0 };
    // SAFETY: setsockopt on a socket we own, with an int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets each frontend's `defer_accept` on its listeners, either way on every
/// one (inherited sockets too: a reload may turn it off). Called once
/// nothing else can fail in this start, so a takeover that fails leaves
/// the other instance's sockets as they were. Turning it off never fails a
/// start (a kernel without the option has it off); turning it on where the
/// kernel refuses is an error.
///
/// HTTP frontends' listeners also get delayed ACKs (TCP_QUICKACK off, as
/// HAProxy's `tcp-smart-accept`, automatic in its HTTP mode): a connection
/// accepted from them does not ACK the request on its own; the ACK rides
/// on the answer, one packet less per connection. The worker turns quick
/// ACKs back on for a client that must send more before it is answered (a
/// partial head, a body). TCP frontends keep quick ACKs: corral cannot know
/// when their client waits for one. Set either way, never failing a start.
pub fn apply_listener_options(
    cfg: &Config,
    listeners: &[(usize, TcpListener)],
) -> Result<(), String> {
    for (fe, sock) in listeners {
        let Some(f) = cfg.frontends.get(*fe) else {
            continue;
        };
        match defer_accept(sock, f.defer_accept) {
            Ok(()) => {}
            Err(e) if f.defer_accept => {
                let at = sock.local_addr().map_or("?".to_string(), |a| a.to_string());
                return Err(format!(
                    "frontend '{}': cannot set defer_accept on {at}: {e}",
                    f.name
                ));
            }
            Err(_) => {}
        }
    }
    // Only now that nothing can fail (see above).
    for (fe, sock) in listeners {
        if let Some(f) = cfg.frontends.get(*fe) {
            // What the connections accepted from it start with.
            let _ =
                socket2::SockRef::from(sock).set_tcp_quickack(f.mode != corral_config::Mode::Http);
        }
    }
    Ok(())
}

/// One listening socket: SO_REUSEADDR, v6-only for IPv6, non-blocking, and
/// TCP_NODELAY, which every accepted connection inherits (a setsockopt per
/// connection saved).
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_tcp_nodelay(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listener() {
        let l = listen("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        l.set_nonblocking(false).unwrap();
        let (a, _) = l.accept().unwrap();
        assert!(a.nodelay().unwrap(), "TCP_NODELAY comes with accept");
    }
}
