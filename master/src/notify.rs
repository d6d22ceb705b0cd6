//! systemd's notify protocol (`Type=notify`): `READY=1` once workers accept,
//! `RELOADING=1` with `MONOTONIC_USEC` when a reload starts, `STOPPING=1`.
//! One datagram to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace); without the variable (not under systemd) it does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends one notification; errors are ignored (systemd may be gone).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(&path)
    };
    let (Ok(addr), Ok(sock)) = (addr, UnixDatagram::unbound()) else {
        return;
    };
    let _ = sock.send_to_addr(state.as_bytes(), &addr);
}

/// `RELOADING=1` with the monotonic timestamp systemd wants alongside.
pub fn reloading() {
    // SAFETY: plain data filled by the kernel.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}
