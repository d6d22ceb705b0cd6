//! The listening sockets a worker inherited from the master, and accept.
//!
//! Every worker polls the *same* kernel sockets, so one accept queue serves
//! all of them and survives reloads. To keep N workers from all waking for one
//! connection (the thundering herd), each listener sits in a small epoll set
//! of its own with `EPOLLEXCLUSIVE`, and that epoll fd is registered in the
//! worker's mio poller (mio cannot pass EPOLLEXCLUSIVE itself). The kernel then
//! wakes one waiting worker per incoming connection.
//!
//! The inner set is level-triggered, the outer registration edge-triggered:
//! after each turn [`Listeners::ready`] is asked again while a listener still
//! had connections left (the accept batch bound was hit).
//!
//! Pausing a listener (maxconn reached, out of fds) removes it from the inner
//! set, so the worker sleeps instead of spinning on a socket it will not
//! accept from; the connections wait in the kernel backlog, never dropped.
//! Closing (soft stop) is `close()`, never `shutdown()`: the socket is shared
//! with the other workers and the next generation, and a shutdown would reset
//! every connection waiting in its queue.

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

/// The worker's listeners and their exclusive epoll set.
#[derive(Debug)]
pub struct Listeners {
    epoll: OwnedFd,
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
    /// Takes ownership of the inherited listeners; [`Listeners::resume`]
    /// puts each in the exclusive epoll set.
    pub fn new(sockets: Vec<(usize, TcpListener)>) -> io::Result<Listeners> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_create1 returned a new fd that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut me = Listeners {
            epoll,
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

    /// The epoll fd to register (readable) in the worker's poller.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
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

    /// Indices of listeners with pending connections (never blocks).
    pub fn ready(&self, out: &mut Vec<usize>) -> io::Result<()> {
        out.clear();
        if self.list.is_empty() {
            return Ok(());
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 32];
        // SAFETY: `events` is a valid array of 32 epoll_event; timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        out.extend(events[..n as usize].iter().map(|e| e.u64 as usize));
        Ok(())
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
                self.epoll.as_raw_fd(),
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
            u64: i as u64,
        };
        // SAFETY: both fds are open and `ev` is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
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
