//! Keep-alive across reloads: a soft-stopped worker hands its idle HTTP
//! client connections to the workers of the new generation, which serve
//! their next requests; the old worker exits as soon as its in-flight
//! requests are done, and no client sees a close it did not ask for.
//!
//! **Channels.** Every worker has a control socket to the master
//! (`SOCK_SEQPACKET`, made by the master at fork and carried across its
//! exec). When a new generation accepts, the master makes one socket pair
//! per (old worker, new worker) and sends each end over the control
//! sockets: the old worker's *outbox*, the new worker's *inbox*. Nothing
//! else can reach those sockets (no path, no abstract name).
//!
//! **What travels.** A batch message carries up to [`fdmsg::MAX_FDS`]
//! client sockets and one [`wire::ConnRecord`] each: the frontend's name,
//! the bytes already read (a partial head, pipelined requests), the
//! keep-alive and head timers, the accept time, and the tracked stick
//! counters (by table name and key). Bytes still in the kernel's receive
//! queue travel with the socket itself.
//!
//! **Order of a handoff.** The old worker deregisters the socket from its
//! epoll (a registration belongs to the open file description, which the
//! receiver shares), sends the batch, and waits for the ack. The receiver
//! takes each connection it can (an HTTP frontend of that name, room under
//! its maxconn, not stopping itself), tracks its stick entries (counted
//! once, not as a new connection), registers it and reads at once; it
//! refuses the rest. On the ack the old worker drops its copies of the
//! taken ones (no FIN: the receiver holds the socket) and releases their
//! trackings; a refused connection, or any whose channel failed (the
//! receiver died, a full fd table truncated the message), is registered
//! again and served by the old worker, with `Connection: close` on its
//! next response.

pub mod fdmsg;
pub mod wire;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::client::Flow;
use crate::http::Phase;
use crate::worker::Worker;
use wire::{ConnRecord, Message};

/// The control socket's token.
pub(crate) const CONTROL: Token = Token(5);
/// Outbox `i` reports `HANDOFF_BASE + 2i`, inbox `i` `HANDOFF_BASE + 2i + 1`
/// (between the client tokens below and the server tokens above).
pub(crate) const HANDOFF_BASE: usize = usize::MAX / 16;

/// The largest batch message: under the default socket buffer (a
/// `SOCK_SEQPACKET` message must fit in it whole).
const MAX_PAYLOAD: usize = 160 * 1024;

/// A channel to a worker of a newer generation.
struct Outbox {
    /// Closed (`None`) once it failed: the receiver then sees the end.
    fd: Option<OwnedFd>,
    generation: u32,
    alive: bool,
    /// The largest message it takes (its send buffer).
    max: usize,
}

/// A channel from a worker of an older generation, and the acks waiting
/// to go back on it.
struct Inbox {
    fd: OwnedFd,
    acks: Vec<Vec<u8>>,
}

/// This worker's handoff channels and the connections on their way.
#[derive(Default)]
pub struct Handoff {
    control: Option<OwnedFd>,
    outboxes: Vec<Outbox>,
    inboxes: Vec<Option<Inbox>>,
    /// Connections ready to go: (client key, serial).
    pending: Vec<(usize, u64)>,
    /// Batches sent and not acknowledged: id → (outbox, connections).
    in_flight: HashMap<u64, (usize, Vec<(usize, u64)>)>,
    next_id: u64,
    next_outbox: usize,
    /// Where batches are received (kept, not allocated per event).
    buf: Vec<u8>,
    /// Connections handed over and taken, and refused (for the log).
    pub handed: u64,
    /// Connections kept after a refusal or a failed channel.
    pub kept: u64,
}

impl Handoff {
    /// The channels of a worker whose master gave it `control`.
    pub fn new(control: Option<OwnedFd>) -> Handoff {
        Handoff {
            control,
            ..Default::default()
        }
    }

    /// Whether a connection can be sent now: an outbox of the newest
    /// generation is open.
    pub fn can_send(&self) -> bool {
        let newest = self.outboxes.iter().map(|o| o.generation).max();
        self.outboxes
            .iter()
            .any(|o| o.alive && Some(o.generation) == newest)
    }

    /// The control socket, to register.
    pub fn control_fd(&self) -> Option<i32> {
        self.control.as_ref().map(|f| f.as_raw_fd())
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Worker {
    /// Whether a soft stop ends client connection `key` after its current
    /// response (`Connection: close`), rather than handing it over.
    pub(crate) fn stop_closes(&self, key: usize) -> bool {
        if !self.stopping() {
            return false;
        }
        let refused = match self.clients.get(key).map(|c| &c.flow) {
            Some(Flow::Http(h)) => h.no_handoff,
            _ => true,
        };
        refused || !self.handoff.can_send()
    }

    /// Reads the master's channel messages (inboxes and outboxes).
    pub(crate) fn on_control(&mut self) {
        let Some(fd) = self.handoff.control_fd() else {
            return;
        };
        // Channel messages are a few bytes, queries at most ~600.
        let mut buf = [0u8; 4096];
        loop {
            let got = match fdmsg::recv(fd, &mut buf) {
                Ok(Some(g)) => g,
                Ok(None) => return,
                Err(_) => {
                    // The master is gone (the lifeline says so too).
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    self.handoff.control = None;
                    return;
                }
            };
            let Some(sock) = got.fds.into_iter().next() else {
                // No fd: a query (`show sess`, `show errors`).
                if let Ok(Message::Query { id, what, arg }) = wire::decode(&buf[..got.len]) {
                    self.on_query(id, what, &arg);
                }
                continue;
            };
            match wire::decode(&buf[..got.len]) {
                Ok(Message::Inbox { .. }) => {
                    let i = self.handoff.inboxes.len();
                    let token = Token(HANDOFF_BASE + 2 * i + 1);
                    let reg = self.poll.registry().register(
                        &mut SourceFd(&sock.as_raw_fd()),
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if reg.is_ok() {
                        self.handoff.inboxes.push(Some(Inbox {
                            fd: sock,
                            acks: Vec::new(),
                        }));
                        // Batches may be waiting already.
                        self.on_inbox(i);
                    }
                }
                Ok(Message::Outbox { generation }) => {
                    let i = self.handoff.outboxes.len();
                    let token = Token(HANDOFF_BASE + 2 * i);
                    let reg = self.poll.registry().register(
                        &mut SourceFd(&sock.as_raw_fd()),
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if reg.is_ok() {
                        let max = fdmsg::max_message(sock.as_raw_fd()).min(MAX_PAYLOAD);
                        self.handoff.outboxes.push(Outbox {
                            fd: Some(sock),
                            generation,
                            alive: true,
                            max,
                        });
                        self.retry_kept();
                    }
                }
                _ => log::warn!("worker {}: unreadable message from the master", self.id),
            }
        }
    }

    /// An event on a handoff channel.
    pub(crate) fn on_handoff_event(&mut self, offset: usize) {
        let i = offset / 2;
        if offset % 2 == 1 {
            self.on_inbox(i);
        } else {
            self.on_outbox(i);
            self.flush_handoffs();
        }
    }

    /// Client connection `key` (HTTP, between requests, its responses all
    /// written) leaves for the new generation: out of this epoll, then into
    /// the next batch.
    pub(crate) fn hand_off(&mut self, key: usize) {
        self.disarm(key);
        let idle = {
            let c = &mut self.clients[key];
            let _ = self.poll.registry().deregister(&mut c.sock);
            let Flow::Http(h) = &mut c.flow else { return };
            h.phase = Phase::Handing;
            h.idle_server.take()
        };
        if let Some(k) = idle {
            self.close_server(k, false);
        }
        let serial = self.clients[key].serial;
        self.handoff.pending.push((key, serial));
    }

    /// Whether client `key` can be handed over now.
    pub(crate) fn handoff_ready(&self, key: usize) -> bool {
        let Some(c) = self.clients.get(key) else {
            return false;
        };
        let Flow::Http(h) = &c.flow else {
            return false;
        };
        self.stopping()
            && self.handoff.can_send()
            && !h.no_handoff
            && h.phase == Phase::Head
            && h.stream.is_none()
            && h.tunnel.is_none()
            && h.tx.is_empty()
            && !h.client_eof
            // Room for the rest of the record (a record that still does
            // not fit stays here: see `flush_handoffs`).
            && h.rx.len() + 4096 < MAX_PAYLOAD
    }

    fn record_of(&self, key: usize, now: Instant) -> Option<ConnRecord> {
        let c = self.clients.get(key)?;
        let Flow::Http(h) = &c.flow else { return None };
        Some(ConnRecord {
            frontend: self.cfg.frontends[c.frontend].name.clone(),
            requests: h.requests,
            idle_ms: ms(now - h.idle_since).min(u32::MAX as u64) as u32,
            head_ms: h
                .head_since
                .map(|(t, _)| ms(now - t).min(u32::MAX as u64) as u32),
            age_ms: ms(now - c.accepted),
            accepted_wall_ms: c
                .accepted_wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            rx: h.rx.as_slice().to_vec(),
            tracked: self.sticky.tracked_keys(&c.sc),
        })
    }

    /// Sends the pending connections in batches (called once per loop
    /// turn and when an outbox becomes writable); what cannot go now waits
    /// for an outbox event, what cannot go at all is kept here.
    pub(crate) fn flush_handoffs(&mut self) {
        let now = Instant::now();
        while !self.handoff.pending.is_empty() {
            let newest = self.handoff.outboxes.iter().map(|o| o.generation).max();
            let n = self.handoff.outboxes.len();
            let Some(ob) = (0..n)
                .map(|k| (self.handoff.next_outbox + k) % n)
                .find(|&k| {
                    let o = &self.handoff.outboxes[k];
                    o.alive && Some(o.generation) == newest
                })
            else {
                // No channel left: every waiting connection stays here.
                for (key, serial) in std::mem::take(&mut self.handoff.pending) {
                    self.keep_connection(key, serial);
                }
                return;
            };
            // One batch: at most MAX_FDS sockets and what the outbox takes.
            let limit = self.handoff.outboxes[ob].max;
            let mut conns = Vec::new();
            let mut records = Vec::new();
            let mut size = wire::BATCH_OVERHEAD;
            let mut rest = Vec::new();
            for (key, serial) in std::mem::take(&mut self.handoff.pending) {
                let live = self.clients.get(key).is_some_and(|c| c.serial == serial);
                if !live {
                    continue;
                }
                if conns.len() >= fdmsg::MAX_FDS {
                    rest.push((key, serial));
                    continue;
                }
                let Some(r) = self.record_of(key, now) else {
                    continue;
                };
                let len = wire::record_len(&r);
                if size + len > limit {
                    rest.push((key, serial));
                    continue;
                }
                size += len;
                conns.push((key, serial));
                records.push(r);
            }
            if conns.is_empty() {
                // The first waiting record does not fit in any message
                // alone: that connection stays here.
                let (key, serial) = rest.remove(0);
                self.handoff.pending = rest;
                self.keep_connection(key, serial);
                continue;
            }
            self.handoff.pending = rest;
            let id = self.handoff.next_id;
            self.handoff.next_id += 1;
            let payload = wire::batch(id, &records);
            let fds: Vec<i32> = conns
                .iter()
                .map(|&(k, _)| self.clients[k].sock.as_raw_fd())
                .collect();
            let Some(sock) = self.handoff.outboxes[ob].fd.as_ref().map(|f| f.as_raw_fd()) else {
                conns.append(&mut self.handoff.pending);
                self.handoff.pending = conns;
                self.handoff.outboxes[ob].alive = false;
                continue;
            };
            match fdmsg::send(sock, &payload, &fds) {
                Ok(()) => {
                    self.handoff.next_outbox = ob + 1;
                    self.handoff.in_flight.insert(id, (ob, conns));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The receiver is behind: its writable event resumes.
                    conns.append(&mut self.handoff.pending);
                    self.handoff.pending = conns;
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::ETOOMANYREFS) => {
                    // Too many fds in flight for our RLIMIT_NOFILE: wait
                    // for acks, unless none will come.
                    if self.handoff.in_flight.is_empty() {
                        for (key, serial) in conns {
                            self.keep_connection(key, serial);
                        }
                    } else {
                        conns.append(&mut self.handoff.pending);
                        self.handoff.pending = conns;
                        return;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) && conns.len() > 1 => {
                    // Smaller batches from now on.
                    let o = &mut self.handoff.outboxes[ob];
                    o.max = (o.max / 2).max(4096);
                    conns.append(&mut self.handoff.pending);
                    self.handoff.pending = conns;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNREFUSED)
                    ) =>
                {
                    // The receiver is gone: what it had not acknowledged
                    // stays here; the batch goes to another.
                    log::warn!(
                        "worker {}: a handoff channel closed ({e}); trying another",
                        self.id
                    );
                    self.outbox_failed(ob);
                    conns.append(&mut self.handoff.pending);
                    self.handoff.pending = conns;
                }
                Err(e) => {
                    // This batch only (no memory, too large): its
                    // connections stay here; the channel and the batches
                    // it carried are fine.
                    log::warn!("worker {}: a handoff batch failed ({e})", self.id);
                    for (key, serial) in conns {
                        self.keep_connection(key, serial);
                    }
                }
            }
        }
    }

    /// Acks (or the end) on outbox `i`.
    fn on_outbox(&mut self, i: usize) {
        let Some(fd) = self
            .handoff
            .outboxes
            .get(i)
            .filter(|o| o.alive)
            .and_then(|o| o.fd.as_ref())
            .map(|f| f.as_raw_fd())
        else {
            return;
        };
        let mut buf = [0u8; 512];
        loop {
            match fdmsg::recv(fd, &mut buf) {
                Ok(Some(got)) => match wire::decode(&buf[..got.len]) {
                    Ok(Message::Ack { id, taken }) => self.on_ack(id, &taken),
                    _ => log::warn!("worker {}: unreadable handoff ack", self.id),
                },
                Ok(None) => return,
                Err(_) => {
                    self.outbox_failed(i);
                    return;
                }
            }
        }
    }

    /// The receiver behind outbox `i` is gone: what it did not acknowledge
    /// stays here.
    fn outbox_failed(&mut self, i: usize) {
        let Some(o) = self.handoff.outboxes.get_mut(i) else {
            return;
        };
        if !o.alive {
            return;
        }
        o.alive = false;
        if let Some(fd) = o.fd.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        let lost: Vec<u64> = self
            .handoff
            .in_flight
            .iter()
            .filter(|(_, (ob, _))| *ob == i)
            .map(|(&id, _)| id)
            .collect();
        for id in lost {
            if let Some((_, conns)) = self.handoff.in_flight.remove(&id) {
                for (key, serial) in conns {
                    self.keep_connection(key, serial);
                }
            }
        }
    }

    fn on_ack(&mut self, id: u64, taken: &[bool]) {
        let Some((_, conns)) = self.handoff.in_flight.remove(&id) else {
            return;
        };
        for (n, (key, serial)) in conns.into_iter().enumerate() {
            if self.clients.get(key).is_none_or(|c| c.serial != serial) {
                continue;
            }
            if taken.get(n).copied().unwrap_or(false) {
                // The receiver holds the socket: ours closes without a FIN
                // (the file description lives on), its trackings move.
                let mut c = self.clients.remove(key);
                self.sticky.release(&mut c.sc, 0, 0);
                let fe = c.frontend;
                drop(c);
                self.leave(fe);
                self.handoff.handed += 1;
            } else {
                self.keep_connection(key, serial);
            }
        }
    }

    /// A newer channel came: connections kept after a refusal (the
    /// receiver was stopping too, or full) try again.
    fn retry_kept(&mut self) {
        if !self.stopping() {
            return;
        }
        let kept: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(&c.flow, Flow::Http(h) if h.no_handoff))
            .map(|(k, _)| k)
            .collect();
        for key in kept {
            if let Flow::Http(h) = &mut self.clients[key].flow {
                h.no_handoff = false;
            }
            if self.handoff_ready(key) {
                self.hand_off(key);
            }
        }
    }

    /// A connection that could not be handed over is served here again;
    /// its next response closes it.
    fn keep_connection(&mut self, key: usize, serial: u64) {
        let Some(c) = self.clients.get_mut(key).filter(|c| c.serial == serial) else {
            return;
        };
        self.handoff.kept += 1;
        let token = crate::client::client_token(key);
        let reg = self.poll.registry().register(
            &mut c.sock,
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        c.ep.readable = true;
        c.ep.writable = true;
        if let Flow::Http(h) = &mut c.flow {
            h.phase = Phase::Head;
            h.no_handoff = true;
        }
        if reg.is_err() {
            return self.http_finish(key, false);
        }
        self.wake(key);
    }

    /// Batches (or the end) on inbox `i`; then the acks go back.
    fn on_inbox(&mut self, i: usize) {
        let Some(fd) = self
            .handoff
            .inboxes
            .get(i)
            .and_then(Option::as_ref)
            .map(|b| b.fd.as_raw_fd())
        else {
            return;
        };
        let mut buf = std::mem::take(&mut self.handoff.buf);
        buf.resize(MAX_PAYLOAD + 1, 0);
        loop {
            match fdmsg::recv(fd, &mut buf) {
                Ok(Some(got)) => {
                    let ack = match wire::decode(&buf[..got.len]) {
                        Ok(Message::Batch { id, conns }) => {
                            let mut taken = Vec::with_capacity(conns.len());
                            let mut fds = got.fds.into_iter();
                            for rec in conns {
                                // Records past the fds the kernel could
                                // install (EMFILE) are refused.
                                taken.push(match fds.next() {
                                    Some(sock) => self.adopt(sock, rec),
                                    None => false,
                                });
                            }
                            Some(wire::ack(id, &taken))
                        }
                        _ => {
                            // Another build's batch, or damaged: refused
                            // whole, so the sender keeps its connections.
                            log::warn!("worker {}: unreadable handoff batch refused", self.id);
                            wire::batch_header(&buf[..got.len])
                                .map(|(id, n)| wire::ack(id, &vec![false; n as usize]))
                        }
                    };
                    if let (Some(a), Some(Some(b))) = (ack, self.handoff.inboxes.get_mut(i)) {
                        b.acks.push(a);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // The old worker is gone.
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    self.handoff.inboxes[i] = None;
                    self.handoff.buf = buf;
                    return;
                }
            }
        }
        self.handoff.buf = buf;
        if let Some(Some(b)) = self.handoff.inboxes.get_mut(i) {
            while let Some(a) = b.acks.first() {
                match fdmsg::send(b.fd.as_raw_fd(), a, &[]) {
                    Ok(()) => {
                        b.acks.remove(0);
                    }
                    // Sent when the channel is writable again.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        b.acks.clear();
                        break;
                    }
                }
            }
        }
    }

    /// Takes a connection handed over by an older worker, if this worker
    /// can serve it. Returns whether it did.
    fn adopt(&mut self, sock: OwnedFd, rec: ConnRecord) -> bool {
        let Some(fe) = self
            .cfg
            .frontends
            .iter()
            .position(|f| f.name == rec.frontend && f.mode == corral_config::Mode::Http)
        else {
            return false;
        };
        if self.stopping()
            || self.cur >= self.max
            || self.frontends[fe].cur >= self.frontends[fe].max
        {
            return false;
        }
        let std_sock = std::net::TcpStream::from(sock);
        let Ok(peer) = std_sock.peer_addr() else {
            return false;
        };
        let now = Instant::now();
        let back = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        let mut flow = crate::http::HttpFlow::new(now);
        flow.requests = rec.requests;
        flow.idle_since = back(rec.idle_ms as u64);
        flow.head_since = rec.head_ms.map(|m| {
            (
                back(m as u64),
                SystemTime::now() - Duration::from_millis(m as u64),
            )
        });
        if !rec.rx.is_empty() && flow.head_since.is_none() {
            flow.head_since = Some((now, SystemTime::now()));
        }
        flow.rx.extend(&rec.rx);
        let accepted_wall = UNIX_EPOCH + Duration::from_millis(rec.accepted_wall_ms);
        let Some(key) = self.adopt_client(
            std_sock,
            peer,
            fe,
            back(rec.age_ms),
            accepted_wall,
            Flow::Http(Box::new(flow)),
        ) else {
            return false;
        };
        let c = &mut self.clients[key];
        self.sticky.adopt(&self.cfg, &mut c.sc, &rec.tracked);
        // Bytes may wait in the socket (they travelled with it): read now.
        self.advance(key);
        true
    }
}
