//! The new instance's side of a takeover (`corral --takeover SOCKET`): ask a
//! running instance for its listeners, segment and tables over its stats socket
//! (`_getsocks`, admin level), as HAProxy's `-x` does.
//!
//! The answer is text lines naming each fd (`listener ADDR`, `segment`,
//! `region NAME`, `page ADDR`, `end`), then the fds in SCM_RIGHTS batches. The text is read one byte at a
//! time: a buffered read could swallow the first byte that carries fds, and
//! the kernel would close them.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::unistd::Pid;

use crate::fdpass;

/// What a takeover brings.
pub struct Taken {
    /// Listening sockets with their addresses.
    pub listeners: Vec<(TcpListener, SocketAddr)>,
    /// The shared segment's memfd.
    pub segment: OwnedFd,
    /// Its stick tables' regions (an older instance sends none).
    pub regions: Vec<OwnedFd>,
    /// Its stats page's listener, if it has one.
    pub web: Option<(TcpListener, SocketAddr)>,
    /// The previous instance's master, soft-stopped once we accept.
    pub pid: Pid,
}

fn read_line(s: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
        if line.len() > 4096 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
    }
}

/// Connects to `socket` and takes the running instance's fds.
pub fn fetch(socket: &Path) -> io::Result<Taken> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot connect to {}: {e}", socket.display()),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"_getsocks\n")?;
    let header = read_line(&mut s)?;
    let Some(pid) = header
        .strip_prefix("corral-fds pid=")
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the running instance refused the handover: {}",
                header.trim()
            ),
        ));
    };
    let mut kinds = Vec::new();
    loop {
        let line = read_line(&mut s)?;
        if line == "end" {
            break;
        }
        kinds.push(line);
    }
    let fds = fdpass::recv_fds(&mut s, kinds.len())?;
    let mut listeners = Vec::new();
    let mut segment = None;
    let mut regions = Vec::new();
    let mut web = None;
    for (kind, fd) in kinds.iter().zip(fds) {
        if let Some(addr) = kind.strip_prefix("page ") {
            if let Ok(addr) = addr.parse::<SocketAddr>() {
                web = Some((TcpListener::from(fd), addr));
            }
            continue;
        }
        if let Some(addr) = kind.strip_prefix("listener ") {
            let addr: SocketAddr = addr.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad address '{addr}'"))
            })?;
            listeners.push((TcpListener::from(fd), addr));
        } else if kind == "segment" {
            segment = Some(fd);
        } else if kind.starts_with("region ") {
            regions.push(fd);
        }
    }
    let segment =
        segment.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no segment received"))?;
    Ok(Taken {
        listeners,
        segment,
        regions,
        web,
        pid: Pid::from_raw(pid),
    })
}
