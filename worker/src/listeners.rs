//! The listening sockets a worker inherited from the master, and accept.
//!
//! Every worker polls the *same* kernel sockets, so one accept queue serves
//! all of them and survives reloads. To keep N workers from all waking for one
//! connection (the thundering herd), each listener is registered with
//! `EPOLLEXCLUSIVE` **directly in the epoll fd the worker sleeps in** (mio's,
//! with a raw `epoll_ctl`, since mio cannot pass the flag): the kernel then
//! wakes one waiting worker per incoming connection. (A nested epoll fd with
//! the flag, registered in mio's, does not work: the exclusive wakeup stops
//! only at tasks sleeping on the inner epoll itself, and every worker woke.)
//!
//! The registration is level-triggered: a worker that stops at its accept
//! batch bound is told again at its next poll. An exclusive registration
//! cannot be modified, so pausing a listener (maxconn reached, out of fds) is
//! EPOLL_CTL_DEL and resuming is ADD: the worker sleeps instead of spinning
//! on a socket it will not accept from, and the connections wait in the
//! kernel backlog, never dropped. Closing (soft stop) is `close()`, never
//! `shutdown()`: the socket is shared with the other workers and the next
//! generation, and a shutdown would reset every connection waiting in its
//! queue.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One inherited listening socket.
#[derive(Debug)]
pub struct Listener {
    /// The socket (non-blocking).
    pub socket: TcpListener,
    /// Index of its frontend in the config.
    pub frontend: usize,
    /// In the inner epoll set (being polled).
    active: bool,
}

/// The worker's listeners, registered in its poller.
#[derive(Debug)]
pub struct Listeners {
    /// The poller's epoll fd (not owned: the poller closes it).
    epoll: RawFd,
    /// Token of listener 0; listener `i` reports `base + i`.
    base: usize,
    list: Vec<Listener>,
}

/// An accepted client connection.
#[derive(Debug)]
pub struct Accepted {
    /// The connected socket, non-blocking and close-on-exec.
    pub fd: OwnedFd,
    /// The client's address.
    pub peer: SocketAddr,
}

impl Listeners {
    /// Takes ownership of the inherited listeners, to be polled in the epoll
    /// fd `epoll` (the worker's poller) with tokens `base + i`;
    /// [`Listeners::resume`] registers each one.
    pub fn new(
        sockets: Vec<(usize, TcpListener)>,
        epoll: RawFd,
        base: usize,
    ) -> io::Result<Listeners> {
        let mut me = Listeners {
            epoll,
            base,
            list: Vec::new(),
        };
        for (frontend, socket) in sockets {
            socket.set_nonblocking(true)?;
            me.list.push(Listener {
                socket,
                frontend,
                active: false,
            });
        }
        // Not polled yet: the worker enables the listeners it has room for
        // (a worker must never sit in a wait queue it will not accept from).
        Ok(me)
    }

    /// The listener a poller token names, if it is one of ours.
    pub fn index_of(&self, token: usize) -> Option<usize> {
        token
            .checked_sub(self.base)
            .filter(|&i| i < self.list.len())
    }

    /// The listeners, by index.
    pub fn get(&self, i: usize) -> &Listener {
        &self.list[i]
    }

    /// Number of listeners.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether this worker holds no listener (all closed by a soft stop).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Stops polling listener `i` (its backlog keeps queueing).
    pub fn pause(&mut self, i: usize) {
        let l = &mut self.list[i];
        if !l.active {
            return;
        }
        // SAFETY: both fds are open; DEL ignores the event argument.
        unsafe {
            libc::epoll_ctl(
                self.epoll,
                libc::EPOLL_CTL_DEL,
                l.socket.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        l.active = false;
    }

    /// Polls listener `i` again.
    pub fn resume(&mut self, i: usize) -> io::Result<()> {
        let l = &mut self.list[i];
        if l.active {
            return Ok(());
        }
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            u64: (self.base + i) as u64,
        };
        // SAFETY: both fds are open and `ev` is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll,
                libc::EPOLL_CTL_ADD,
                l.socket.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        l.active = true;
        Ok(())
    }

    /// Whether listener `i` is being polled.
    pub fn is_active(&self, i: usize) -> bool {
        self.list[i].active
    }

    /// Closes every listener (soft stop). close(), never shutdown(): see module docs.
    pub fn close_all(&mut self) {
        for i in 0..self.list.len() {
            self.pause(i);
        }
        self.list.clear();
    }

    /// Accepts one connection from listener `i`, or `Ok(None)` when its queue is empty.
    pub fn accept(&self, i: usize) -> io::Result<Option<Accepted>> {
        let fd = self.list[i].socket.as_raw_fd();
        loop {
            // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: storage/len describe a writable buffer large enough for any address.
            let s = unsafe {
                libc::accept4(
                    fd,
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if s >= 0 {
                // SAFETY: accept4 returned a new fd that we now own.
                let fd = unsafe { OwnedFd::from_raw_fd(s) };
                let Some(peer) = to_socket_addr(&storage) else {
                    continue; // not an inet peer: cannot happen on a TCP listener
                };
                return Ok(Some(Accepted { fd, peer }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                _ => return Err(e),
            }
        }
    }
}

/// Reads an IPv4 or IPv6 address out of a sockaddr_storage filled by the kernel.
fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: ss_family says the storage holds a sockaddr_in, which fits in it.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: ss_family says the storage holds a sockaddr_in6, which fits in it.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
