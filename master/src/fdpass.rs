//! Passing fds between processes with SCM_RIGHTS, in batches.
//!
//! Linux accepts at most 253 fds per message (SCM_MAX_FD) and musl fails at
//! 253, so batches hold at most [`BATCH`] fds, like HAProxy's `_getsocks`.
//! After each batch the receiver sends a 4-byte ack, so the sender never runs
//! ahead of a receiver that is still installing fds.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Fds per sendmsg.
pub const BATCH: usize = 252;
const ACK: &[u8; 4] = b"ACK\n";

/// Sends `fds` over `sock` in batches, waiting for an ack after each.
pub fn send_fds(sock: &mut UnixStream, fds: &[RawFd]) -> io::Result<()> {
    for chunk in fds.chunks(BATCH) {
        send_batch(sock, chunk)?;
        let mut ack = [0u8; 4];
        sock.read_exact(&mut ack)?;
        if &ack != ACK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad ack from the receiver",
            ));
        }
    }
    Ok(())
}

/// Receives `n` fds sent by [`send_fds`].
pub fn recv_fds(sock: &mut UnixStream, n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want = (n - out.len()).min(BATCH);
        let got = recv_batch(sock, want)?;
        if got.len() != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {want} fds, got {}", got.len()),
            ));
        }
        out.extend(got);
        sock.write_all(ACK)?;
    }
    Ok(out)
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

fn send_batch(sock: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = vec![0u8; cmsg_space(fds.len())];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: the control buffer holds CMSG_SPACE(fds) bytes, enough for one
    // header and the fd array written here.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<RawFd>(), fds.len());
        if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recv_batch(sock: &UnixStream, max: usize) -> io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = vec![0u8; cmsg_space(max)];
    // SAFETY: as in send_batch.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: recvmsg fills at most the buffers we described.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed during fd transfer",
        ));
    }
    let mut out = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    out.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_one_batch_of_fds_arrives_in_order() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let files: Vec<std::fs::File> = (0..300)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let sender = std::thread::spawn(move || {
            send_fds(&mut a, &raw).unwrap();
            files
        });
        let got = recv_fds(&mut b, 300).unwrap();
        let files = sender.join().unwrap();
        assert_eq!(got.len(), 300);
        for (f, g) in files.iter().zip(&got) {
            let (sa, sb) = (
                std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())),
                std::fs::metadata(format!("/proc/self/fd/{}", g.as_raw_fd())),
            );
            assert_eq!(sa.unwrap().len(), sb.unwrap().len());
        }
    }
}
