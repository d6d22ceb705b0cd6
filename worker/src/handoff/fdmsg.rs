//! One message with fds over a `SOCK_SEQPACKET` socket, never blocking:
//! the kernel keeps each message whole, so a batch's records and its fds
//! arrive together or not at all.
//!
//! Limits the kernel sets, and what they mean here:
//! * at most [`MAX_FDS`] fds per message (SCM_MAX_FD);
//! * fds in flight count against the sender's RLIMIT_NOFILE: past it the
//!   send fails with ETOOMANYREFS (the caller waits for acks);
//! * a receiver that cannot install every fd (EMFILE) gets the message
//!   with fewer fds and MSG_CTRUNC: [`Received::truncated`] says so, and
//!   the records without an fd are refused.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most fds in one message (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;

/// Sends `payload` with `fds` as one message.
pub fn send(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<()>(
        sock,
        &iov,
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    if n != payload.len() {
        return Err(io::Error::other("a message went out in part"));
    }
    Ok(())
}

/// A message received.
pub struct Received {
    /// Its length in the caller's buffer.
    pub len: usize,
    /// The fds that came with it, in order (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// The kernel could not deliver every fd (or the message was longer
    /// than the buffer).
    pub truncated: bool,
}

/// Receives one message into `buf`; `Ok(None)` when none is waiting, an
/// `UnexpectedEof` error when the peer is gone.
pub fn recv(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these fds in this
                // process for this message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_CTRUNC | MsgFlags::MSG_TRUNC);
    if msg.bytes == 0 && fds.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer gone"));
    }
    Ok(Some(Received {
        len: msg.bytes,
        fds,
        truncated,
    }))
}

/// The largest message `sock` can send: its send buffer, less the
/// kernel's per-message overhead (a `SOCK_SEQPACKET` message must fit in
/// the buffer whole, or the send fails with EMSGSIZE).
pub fn max_message(sock: RawFd) -> usize {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a correctly sized int on an open socket.
    let rc = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 || v <= 0 {
        return 32 * 1024;
    }
    // Linux doubles the value set and keeps room for its bookkeeping.
    (v as usize / 2).saturating_sub(4096).max(4096)
}

/// A connected `SOCK_SEQPACKET` pair, non-blocking and close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_message_and_its_fds_arrive_together() {
        let (a, b) = pair().unwrap();
        let (x, y) = pair().unwrap();
        send(a.as_raw_fd(), b"hello", &[x.as_raw_fd(), y.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let r = recv(b.as_raw_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.fds.len(), 2);
        assert!(!r.truncated);
        assert!(recv(b.as_raw_fd(), &mut buf).unwrap().is_none());
        drop(a);
        assert!(
            recv(b.as_raw_fd(), &mut buf).is_err(),
            "EOF once the peer is gone"
        );
    }
}
