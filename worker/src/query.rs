//! What only a worker knows, for the master's `show sess` and `show
//! errors`: the master asks over the worker's control socket (a `Q`
//! message, see `handoff::wire`), the worker answers with `R` messages of
//! text, sent as the socket takes them (never blocking the loop).
//!
//! The worker keeps, like HAProxy, the last refused request of each
//! frontend and the last refused response of each backend, with the bytes
//! as they were and where they went wrong ([`ErrorLog`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Instant, SystemTime};

use crate::client::Flow;
use crate::handoff::{fdmsg, wire};
use crate::worker::Worker;

/// Query kinds.
pub const SHOW_SESS: u8 = 1;
/// `show errors`.
pub const SHOW_ERRORS: u8 = 2;
/// Bytes of a refused message kept.
pub const CAPTURE_MAX: usize = 16 * 1024;
/// Text per reply message.
const CHUNK: usize = 16 * 1024;
/// Most text one answer holds (beyond, it says it was cut).
const ANSWER_MAX: usize = 8 << 20;

/// A refused message, captured.
#[derive(Clone, Debug)]
pub struct Captured {
    /// When.
    pub when: SystemTime,
    /// The client.
    pub src: SocketAddr,
    /// The server (responses).
    pub server: Option<usize>,
    /// The backend (a request refused after the backend was known, or a
    /// response).
    pub backend: Option<usize>,
    /// The frontend.
    pub frontend: usize,
    /// Why.
    pub reason: &'static str,
    /// The bytes, as received (at most [`CAPTURE_MAX`]).
    pub bytes: Vec<u8>,
    /// Where they went wrong.
    pub at: usize,
    /// The event's number in this worker.
    pub event: u64,
}

/// The last refused request per frontend and response per backend.
#[derive(Default)]
pub struct ErrorLog {
    requests: Vec<Option<Captured>>,
    responses: Vec<Option<Captured>>,
    events: u64,
}

impl ErrorLog {
    /// Records a refused request of frontend `fe` (the bytes from the
    /// start of the head).
    pub fn request(&mut self, fe: usize, src: SocketAddr, reason: &'static str, bytes: &[u8]) {
        let at = corral_http::h1::locate::error_position(bytes, true);
        self.put(true, fe, None, None, src, reason, bytes, at);
    }

    /// Records a refused response of server `srv` of backend `be`.
    pub fn response(
        &mut self,
        fe: usize,
        be: usize,
        srv: Option<usize>,
        src: SocketAddr,
        reason: &'static str,
        bytes: &[u8],
    ) {
        let at = corral_http::h1::locate::error_position(bytes, false);
        self.put(false, fe, Some(be), srv, src, reason, bytes, at);
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        request: bool,
        fe: usize,
        be: Option<usize>,
        srv: Option<usize>,
        src: SocketAddr,
        reason: &'static str,
        bytes: &[u8],
        at: usize,
    ) {
        self.events += 1;
        let c = Captured {
            when: SystemTime::now(),
            src,
            server: srv,
            backend: be,
            frontend: fe,
            reason,
            bytes: bytes[..bytes.len().min(CAPTURE_MAX)].to_vec(),
            at,
            event: self.events,
        };
        let (list, i) = if request {
            (&mut self.requests, fe)
        } else {
            (&mut self.responses, be.unwrap_or(0))
        };
        if list.len() <= i {
            list.resize(i + 1, None);
        }
        list[i] = Some(c);
    }
}

/// `[01/Dec/2026:16:20:17.123]` as HAProxy dates its captures (local time,
/// as the access log's `%t`).
pub fn stamp(t: SystemTime) -> String {
    let mut out = String::from("[");
    crate::access_log::format_date(&mut out, t);
    out.push(']');
    out
}

/// The bytes as HAProxy dumps them: lines of at most 72 printed bytes,
/// each prefixed with its offset (`+` for a continued line); printable
/// ASCII as is, CR, LF and tab as `\r`, `\n`, `\t`, other bytes as `\xHH`.
pub fn dump(bytes: &[u8], out: &mut String) {
    let mut i = 0;
    let mut continued = false;
    while i < bytes.len() {
        let _ = write!(out, "  {i:05}{} ", if continued { '+' } else { ' ' });
        let mut width = 0;
        continued = true;
        while i < bytes.len() && width < 72 {
            let b = bytes[i];
            i += 1;
            match b {
                b'\r' => out.push_str("\\r"),
                b'\n' => {
                    out.push_str("\\n");
                    continued = false;
                    break;
                }
                b'\t' => out.push_str("\\t"),
                b'\\' => out.push_str("\\\\"),
                0x20..=0x7e => out.push(b as char),
                _ => {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            width += 1;
        }
        out.push('\n');
    }
}

/// An answer being sent to the master.
pub struct Outgoing {
    id: u32,
    text: Vec<u8>,
    sent: usize,
}

/// The queries being answered.
#[derive(Default)]
pub struct Answers {
    queue: VecDeque<Outgoing>,
}

impl Answers {
    /// Whether text waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends what the socket takes, in chunks; false on a closed socket.
    pub fn flush(&mut self, fd: RawFd) -> bool {
        while let Some(o) = self.queue.front_mut() {
            let end = (o.sent + CHUNK).min(o.text.len());
            let last = end == o.text.len();
            let msg = wire::reply(o.id, last, &o.text[o.sent..end]);
            match fdmsg::send(fd, &msg, &[]) {
                Ok(()) => {
                    o.sent = end;
                    if last {
                        self.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => {
                    self.queue.clear();
                    return false;
                }
            }
        }
        true
    }
}

impl Worker {
    /// Answers query `what` with id `id` (from the master).
    pub(crate) fn on_query(&mut self, id: u32, what: u8, arg: &str) {
        let mut text = match what {
            SHOW_SESS => self.show_sess(),
            SHOW_ERRORS => self.show_errors(arg),
            _ => String::new(),
        };
        if text.len() > ANSWER_MAX {
            let mut cut = ANSWER_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n# cut: the answer was too long\n");
        }
        self.answers.queue.push_back(Outgoing {
            id,
            text: text.into_bytes(),
            sent: 0,
        });
        self.flush_answers();
    }

    /// Sends pending answers (each loop turn and when the socket drains).
    pub(crate) fn flush_answers(&mut self) {
        if self.answers.is_empty() {
            return;
        }
        if let Some(fd) = self.handoff.control_fd() {
            self.answers.flush(fd);
        }
    }

    /// One line per client connection (and its stream), as `show sess`.
    fn show_sess(&self) -> String {
        let now = Instant::now();
        let mut s = String::new();
        for (key, c) in self.clients.iter() {
            let fe = &self.cfg.frontends[c.frontend];
            let (state, attempt, requests) = match &c.flow {
                Flow::Tcp(t) => ("tcp", t.attempt.as_ref(), 1),
                Flow::Http(h) => {
                    let st = match (&h.tunnel, &h.stream) {
                        (Some(_), _) => "tunnel",
                        (None, Some(_)) => "req",
                        (None, None) if h.closing_since.is_some() => "closing",
                        (None, None) => "idle",
                    };
                    (
                        st,
                        h.stream.as_ref().and_then(|s| s.attempt.as_ref()),
                        h.requests,
                    )
                }
            };
            let (be, srv) = match attempt {
                Some(a) => {
                    let b = &self.cfg.backends[a.backend];
                    (
                        b.name.as_str(),
                        a.server.map_or("<none>", |i| b.servers[i].name.as_str()),
                    )
                }
                None => ("<NONE>", "<none>"),
            };
            let proto = if c.peer.is_ipv4() { "tcpv4" } else { "tcpv6" };
            let _ = writeln!(
                s,
                "0x{:x}{:08x}: proto={proto} src={} fe={} be={be} srv={srv} ts=00 age={}s calls={requests} worker={} state={state}",
                self.id,
                key,
                c.peer,
                fe.name,
                now.duration_since(c.accepted).as_secs(),
                self.id
            );
        }
        s
    }

    /// The captured errors, `[<proxy>] [request|response]`: the count
    /// first (`#events N`, summed by the master), then HAProxy's blocks.
    fn show_errors(&self, arg: &str) -> String {
        let mut words = arg.split_whitespace();
        let mut proxy = None;
        let (mut req, mut resp) = (true, true);
        for w in words.by_ref() {
            match w {
                "request" => resp = false,
                "response" => req = false,
                p => proxy = Some(p),
            }
        }
        let mut s = format!("#events {}\n", self.errors.events);
        let mut blocks: Vec<(&Captured, bool)> = Vec::new();
        if req {
            blocks.extend(self.errors.requests.iter().flatten().map(|c| (c, true)));
        }
        if resp {
            blocks.extend(self.errors.responses.iter().flatten().map(|c| (c, false)));
        }
        blocks.sort_by_key(|(c, _)| c.when);
        for (c, is_req) in blocks {
            let fe = &self.cfg.frontends[c.frontend].name;
            let be = c.backend.map(|b| &self.cfg.backends[b]);
            let px = if is_req {
                fe.as_str()
            } else {
                be.map_or("", |b| b.name.as_str())
            };
            if proxy.is_some_and(|p| p != px) {
                continue;
            }
            let _ = writeln!(
                s,
                "\n{} {} {px} (worker {}): invalid {}",
                stamp(c.when),
                if is_req { "frontend" } else { "backend" },
                self.id,
                if is_req { "request" } else { "response" }
            );
            let _ = writeln!(
                s,
                "  {} {}, server {}, event #{}, src {}",
                if is_req { "backend" } else { "frontend" },
                if is_req {
                    be.map_or("<NONE>", |b| b.name.as_str())
                } else {
                    fe.as_str()
                },
                match (be, c.server) {
                    (Some(b), Some(i)) => b.servers[i].name.as_str(),
                    _ => "<NONE>",
                },
                c.event,
                c.src
            );
            let _ = writeln!(
                s,
                "  reason: {}\n  len {}, error at position {}:\n",
                c.reason,
                c.bytes.len(),
                c.at
            );
            dump(&c.bytes, &mut s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_escape_and_break_lines() {
        let mut s = String::new();
        dump(b"GET\x01 / HTTP/1.1\r\nHost: x\r\n\r\n", &mut s);
        assert_eq!(
            s,
            "  00000  GET\\x01 / HTTP/1.1\\r\\n\n  00017  Host: x\\r\\n\n  00026  \\r\\n\n"
        );
        let mut long = String::new();
        dump(&[b'a'; 100], &mut long);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("  00072+ "), "{long}");
    }

    #[test]
    fn the_last_error_per_proxy_is_kept() {
        let mut e = ErrorLog::default();
        let src: SocketAddr = "127.0.0.1:1".parse().unwrap();
        e.request(1, src, "bad", b"GET\x01 / HTTP/1.1\r\n\r\n");
        e.request(1, src, "worse", b"G\x02T / HTTP/1.1\r\n\r\n");
        assert_eq!(e.events, 2);
        let c = e.requests[1].as_ref().unwrap();
        assert_eq!((c.reason, c.at, c.event), ("worse", 1, 2));
        assert!(e.requests[0].is_none());
    }
}
