//! The lifeline: one socket pair between the master and all its workers,
//! handed across the master's exec. Workers read their end only to see it
//! close (the master is gone: soft stop); they write fixed 8-byte messages
//! on it that the master reads on its end:
//!
//! * [`Message::Ready`]: this worker accepts (the master soft-stops the
//!   previous generation once every new worker said so);
//! * [`Message::LeftQueue`]: this soft-stopping worker left the listeners'
//!   wait queues, so no new connection can reach it (the master answers a
//!   reload only then: once `reload` returns, every new connection goes to
//!   the new generation).
//!
//! A message is `pid: u32 | kind: u32`, little-endian: one write of 8 bytes
//! on a Unix stream socket is one buffer the kernel never interleaves with
//! another process's, and the master reads in multiples of 8. Written with
//! MSG_DONTWAIT: a master that does not read never blocks a worker.

use std::os::fd::RawFd;

/// What a worker tells the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// The worker accepts connections.
    Ready,
    /// The worker left the accept queues (soft stop).
    LeftQueue,
}

/// Bytes per message.
pub const MESSAGE_LEN: usize = 8;

impl Message {
    fn code(self) -> u32 {
        match self {
            Message::Ready => 1,
            Message::LeftQueue => 2,
        }
    }

    /// The message of `code`, if it is one.
    pub fn from_code(code: u32) -> Option<Message> {
        match code {
            1 => Some(Message::Ready),
            2 => Some(Message::LeftQueue),
            _ => None,
        }
    }
}

/// Sends `msg` from this process on the worker end `fd` (never blocks).
pub fn send(fd: RawFd, msg: Message) {
    let mut b = [0u8; MESSAGE_LEN];
    b[..4].copy_from_slice(&std::process::id().to_le_bytes());
    b[4..].copy_from_slice(&msg.code().to_le_bytes());
    // SAFETY: `b` is a valid 8-byte buffer; the flags make the call
    // non-blocking and keep SIGPIPE away.
    unsafe {
        libc::send(
            fd,
            b.as_ptr().cast(),
            b.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// Decodes the whole messages of `buf`: (pid, message).
pub fn decode(buf: &[u8]) -> Vec<(i32, Message)> {
    buf.chunks_exact(MESSAGE_LEN)
        .filter_map(|c| {
            let pid = u32::from_le_bytes(c[..4].try_into().ok()?) as i32;
            let code = u32::from_le_bytes(c[4..].try_into().ok()?);
            Some((pid, Message::from_code(code)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn messages_cross_the_pair() {
        let (mut m, w) = UnixStream::pair().unwrap();
        send(w.as_raw_fd(), Message::Ready);
        send(w.as_raw_fd(), Message::LeftQueue);
        let mut buf = [0u8; 64];
        let n = m.read(&mut buf).unwrap();
        let me = std::process::id() as i32;
        assert_eq!(
            decode(&buf[..n]),
            vec![(me, Message::Ready), (me, Message::LeftQueue)]
        );
    }
}
