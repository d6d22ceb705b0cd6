//! Queries to the workers for what only they know (`show sess`, `show
//! errors`), over each worker's control socket (see
//! `corral_worker::query`): the master asks every live worker, current and
//! old, gathers their replies as they come, and answers the CLI client once
//! all have replied or [`QUERY_TIMEOUT`] has passed (a worker that does not
//! answer is named in the answer, never waited for longer). The client's
//! next commands wait meanwhile; other clients do not.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use corral_worker::handoff::{fdmsg, wire};
use corral_worker::query::{SHOW_ERRORS, SHOW_SESS};

use crate::master::Master;

/// Control socket tokens: `CONTROL_BASE + pid`.
pub const CONTROL_BASE: usize = 1 << 36;
/// How long the master waits for the workers' replies.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most text gathered from one worker.
const PART_MAX: usize = 16 << 20;
/// Said where a worker's answer was cut.
const CUT: &[u8] = b"\n# cut: this worker's answer was too long\n";

/// One worker's part of an answer.
struct Part {
    pid: i32,
    id: usize,
    generation: u32,
    text: Vec<u8>,
    done: bool,
}

/// A query in flight.
pub struct Pending {
    id: u32,
    client: usize,
    what: u8,
    parts: Vec<Part>,
    deadline: Instant,
}

impl Pending {
    /// The client waiting for it.
    pub fn client(&self) -> usize {
        self.client
    }
}

/// Longest query argument sent to workers.
const ARG_MAX: usize = 512;

impl Master {
    /// Worker `pid` is gone: its part of every query is done (with a note).
    pub(crate) fn query_worker_gone(&mut self, pid: i32) {
        for q in &mut self.queries {
            for p in q.parts.iter_mut().filter(|p| p.pid == pid && !p.done) {
                p.text
                    .extend_from_slice(b"# this worker exited before answering in full\n");
                p.done = true;
            }
        }
        self.finish_queries(false);
    }

    /// Watches worker `pid`'s control socket for replies.
    pub(crate) fn watch_control(&self, pid: i32, fd: &impl AsRawFd) {
        let _ = self.poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            Token(CONTROL_BASE + pid as usize),
            Interest::READABLE,
        );
    }

    /// Asks every live worker `what` for client `key`; false when there is
    /// no one to ask (the caller answers at once).
    pub(crate) fn start_query(&mut self, key: usize, what: u8, arg: &str) -> bool {
        self.next_query = self.next_query.wrapping_add(1);
        let id = self.next_query;
        let mut cut = arg.len().min(ARG_MAX);
        while !arg.is_char_boundary(cut) {
            cut -= 1;
        }
        let msg = wire::query(id, what, &arg[..cut]);
        let mut parts = Vec::new();
        let targets = self
            .slots
            .iter()
            .filter_map(|s| Some((s.pid?, s.id, self.generation, s.control.clone()?)))
            .chain(
                self.old
                    .iter()
                    .filter(|o| !o.foreign)
                    .filter_map(|o| Some((o.pid, o.id, o.generation, o.control.clone()?))),
            )
            .collect::<Vec<_>>();
        for (pid, wid, generation, fd) in targets {
            let sent = fdmsg::send(fd.as_raw_fd(), &msg, &[]).is_ok();
            parts.push(Part {
                pid: pid.as_raw(),
                id: wid,
                generation,
                text: if sent {
                    Vec::new()
                } else {
                    b"# this worker could not be asked\n".to_vec()
                },
                done: !sent,
            });
        }
        if parts.iter().all(|p| p.done) && parts.iter().all(|p| p.text.is_empty()) {
            return false;
        }
        self.queries.push(Pending {
            id,
            client: key,
            what,
            parts,
            deadline: Instant::now() + QUERY_TIMEOUT,
        });
        if let Some(c) = self.clients.get_mut(key) {
            c.querying = true;
        }
        self.finish_queries(false);
        true
    }

    /// Replies on worker `pid`'s control socket.
    pub(crate) fn on_control_event(&mut self, pid: i32) {
        let fd = self
            .slots
            .iter()
            .filter(|s| s.pid.map(|p| p.as_raw()) == Some(pid))
            .filter_map(|s| s.control.clone())
            .chain(
                self.old
                    .iter()
                    .filter(|o| o.pid.as_raw() == pid)
                    .filter_map(|o| o.control.clone()),
            )
            .next();
        let Some(fd) = fd else { return };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let got = match fdmsg::recv(fd.as_raw_fd(), &mut buf) {
                Ok(Some(g)) => g,
                Ok(None) | Err(_) => break,
            };
            let Ok(wire::Message::Reply { id, last, text }) = wire::decode(&buf[..got.len]) else {
                continue;
            };
            let Some(q) = self.queries.iter_mut().find(|q| q.id == id) else {
                continue; // late: its client was answered already
            };
            if let Some(p) = q.parts.iter_mut().find(|p| p.pid == pid && !p.done) {
                if p.text.len() + text.len() <= PART_MAX {
                    p.text.extend_from_slice(&text);
                } else if !p.text.ends_with(CUT) {
                    p.text.extend_from_slice(CUT);
                }
                p.done |= last;
            }
        }
        self.finish_queries(false);
    }

    /// When the earliest query gives up waiting.
    pub(crate) fn query_deadline(&self) -> Option<Instant> {
        self.queries.iter().map(|q| q.deadline).min()
    }

    /// Answers the queries that are complete (or, with `expired` checks,
    /// past their deadline), then lets their clients go on.
    pub(crate) fn finish_queries(&mut self, expired: bool) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.queries.len() {
            let q = &self.queries[i];
            let complete = q.parts.iter().all(|p| p.done);
            if !(complete || expired && now >= q.deadline) {
                i += 1;
                continue;
            }
            let q = self.queries.swap_remove(i);
            let text = compose(q.what, q.parts);
            if let Some(c) = self.clients.get_mut(q.client) {
                c.querying = false;
                c.answer(&text);
                self.run_client_again(q.client);
            }
        }
    }
}

/// The answer when no worker is there to ask.
pub fn empty_answer(what: u8) -> String {
    compose(what, Vec::new())
}

/// The answer from the workers' parts: in generation then worker order;
/// `show errors` gets HAProxy's header with the summed event count.
fn compose(what: u8, mut parts: Vec<Part>) -> String {
    parts.sort_by_key(|p| (std::cmp::Reverse(p.generation), p.id));
    let mut out = String::new();
    let mut events = 0u64;
    for p in &parts {
        let text = String::from_utf8_lossy(&p.text);
        let mut body = text.as_ref();
        if what == SHOW_ERRORS {
            if let Some(rest) = body.strip_prefix("#events ") {
                let (n, tail) = rest.split_once('\n').unwrap_or((rest, ""));
                events += n.trim().parse::<u64>().unwrap_or(0);
                body = tail;
            }
        }
        out.push_str(body);
        if !p.done {
            out.push_str(&format!(
                "# worker {} (pid {}, generation {}) did not answer in time\n",
                p.id, p.pid, p.generation
            ));
        }
    }
    if what == SHOW_ERRORS {
        out = format!(
            "Total events captured on {} : {events}\n{out}",
            corral_worker::query::stamp(SystemTime::now())
        );
    }
    let _ = SHOW_SESS;
    out
}
