//! The per-connection log line and where it is written.
//!
//! The line is HAProxy's TCP log format, so log parsers and operators' habits
//! carry over:
//!
//! ```text
//! 127.0.0.1:41234 [23/Nov/2026:06:52:28.123] fe be/s1 0/1/5003 1024 -- 1/1/1/1/0 0/0
//! client          accept date                fe be/srv Tw/Tc/Tt bytes_read
//!                 termination state, actconn/feconn/beconn/srv_conn/retries, srv_queue/backend_queue
//! ```
//!
//! `bytes_read` counts bytes sent to the client (as HAProxy's `%B`). Lines are
//! gathered during a loop turn and written with one write(2) per turn (of at
//! most PIPE_BUF bytes of whole lines), so a busy worker does not pay a
//! syscall per connection and lines of several workers never interleave
//! mid-line. Syslog gets one datagram per line. Nothing here blocks: a
//! stalled reader costs dropped, counted lines (see [`crate::log_sink`]).

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_config::LogTarget;

use crate::log_sink::Sink;

/// Everything one log line says about a finished connection.
#[derive(Debug)]
pub struct ConnLog<'a> {
    /// Client address.
    pub client: SocketAddr,
    /// When the connection was accepted.
    pub accepted: SystemTime,
    /// Frontend name.
    pub frontend: &'a str,
    /// Backend name (`-` if none was chosen).
    pub backend: &'a str,
    /// Server name (`<NOSRV>` if none was reached).
    pub server: &'a str,
    /// Time waiting in queue, ms (-1 if it never got a server).
    pub t_queue: i64,
    /// Time to connect to the server, ms (-1 if it never connected).
    pub t_connect: i64,
    /// Total connection time, ms.
    pub t_total: i64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Two-character termination state (`--` for a clean end).
    pub term: [u8; 2],
    /// Worker's concurrent connections at log time.
    pub actconn: u32,
    /// Frontend's concurrent connections.
    pub feconn: u32,
    /// Backend's concurrent connections.
    pub beconn: u32,
    /// Server's concurrent connections.
    pub srv_conn: u32,
    /// Connection retries.
    pub retries: u32,
    /// Connections waiting in the backend queue.
    pub backend_queue: usize,
}

/// Everything one `option httplog` line says about a finished request:
/// `%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc
/// %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r` (no captures, so `%hr %hs` print
/// nothing, as in HAProxy).
#[derive(Debug)]
pub struct HttpLog<'a> {
    /// Client address.
    pub client: SocketAddr,
    /// When the request started (`%tr`).
    pub started: SystemTime,
    /// Frontend name.
    pub frontend: &'a str,
    /// Backend name (the frontend's when none was chosen, as HAProxy).
    pub backend: &'a str,
    /// Server name (`<NOSRV>` if none).
    pub server: &'a str,
    /// `%TR`: time to receive the request head, ms (-1: never complete).
    pub t_request: i64,
    /// `%Tw`: time in queue, ms (-1: never got a server).
    pub t_queue: i64,
    /// `%Tc`: connect time, ms (-1: never connected).
    pub t_connect: i64,
    /// `%Tr`: server response time, ms (-1: no response head).
    pub t_response: i64,
    /// `%Ta`: request active time, ms.
    pub t_active: i64,
    /// `%ST`: status (-1 for none).
    pub status: i32,
    /// `%B`: bytes sent to the client.
    pub bytes_out: u64,
    /// First two characters of `%tsc` (the cookie two are always `--`).
    pub term: [u8; 2],
    /// `%ac`, `%fc`, `%bc`, `%sc`, `%rc`.
    pub actconn: u32,
    /// Frontend connections.
    pub feconn: u32,
    /// Backend connections.
    pub beconn: u32,
    /// Server connections.
    pub srv_conn: u32,
    /// Retries.
    pub retries: u32,
    /// `%bq`: backend queue.
    pub backend_queue: usize,
    /// `%r`: the request line, or `None` for `<BADREQ>`.
    pub request: Option<(&'a str, &'a str, &'a str)>,
}

/// The access log of one worker.
#[derive(Debug)]
pub struct AccessLog {
    sink: Sink,
    line: String,
    /// `log = "/dev/null"`: no line is formatted or written.
    off: bool,
}

impl AccessLog {
    /// Opens the configured target, never blocking (see [`crate::log_sink`]).
    /// A file is opened for appending.
    pub fn open(target: &LogTarget) -> io::Result<AccessLog> {
        let off = matches!(target, LogTarget::File(p) if p.as_os_str() == "/dev/null");
        let sink = match target {
            _ if off => Sink::null(),
            LogTarget::Stdout => Sink::std(1)?,
            LogTarget::Stderr => Sink::std(2)?,
            LogTarget::File(path) => Sink::file(path)?,
            LogTarget::Syslog => Sink::syslog(),
        };
        Ok(AccessLog {
            sink,
            line: String::new(),
            off,
        })
    }

    /// Formats one line and queues it (a datagram goes out at once).
    pub fn log(&mut self, c: &ConnLog<'_>) {
        if self.off {
            return;
        }
        self.line.clear();
        if self.sink.is_datagram() {
            // <PRI> with facility local0 (16), severity info (6).
            let _ = write!(self.line, "<134>corral[{}]: ", std::process::id());
        }
        let _ = write!(self.line, "{} [", c.client);
        format_date(&mut self.line, c.accepted);
        let _ = write!(
            self.line,
            "] {} {}/{} {}/{}/{} {} {}{} {}/{}/{}/{}/{} 0/{}",
            c.frontend,
            c.backend,
            c.server,
            c.t_queue,
            c.t_connect,
            c.t_total,
            c.bytes_out,
            c.term[0] as char,
            c.term[1] as char,
            c.actconn,
            c.feconn,
            c.beconn,
            c.srv_conn,
            c.retries,
            c.backend_queue,
        );
        self.sink.push_line(self.line.as_bytes());
    }

    /// Formats one HTTP request's line and queues it.
    pub fn log_http(&mut self, c: &HttpLog<'_>) {
        if self.off {
            return;
        }
        self.line.clear();
        if self.sink.is_datagram() {
            let _ = write!(self.line, "<134>corral[{}]: ", std::process::id());
        }
        let _ = write!(self.line, "{} [", c.client);
        format_date(&mut self.line, c.started);
        let _ = write!(
            self.line,
            "] {} {}/{} {}/{}/{}/{}/{} {} {} - - {}{}-- {}/{}/{}/{}/{} 0/{} ",
            c.frontend,
            c.backend,
            c.server,
            c.t_request,
            c.t_queue,
            c.t_connect,
            c.t_response,
            c.t_active,
            c.status,
            c.bytes_out,
            c.term[0] as char,
            c.term[1] as char,
            c.actconn,
            c.feconn,
            c.beconn,
            c.srv_conn,
            c.retries,
            c.backend_queue,
        );
        match c.request {
            Some((method, target, version)) => {
                self.line.push('"');
                for part in [method, " ", target, " ", version] {
                    // `+Q`: the request line quoted, a quote inside escaped.
                    for ch in part.chars() {
                        if ch == '"' {
                            self.line.push_str("\\\"");
                        } else {
                            self.line.push(ch);
                        }
                    }
                }
                self.line.push('"');
            }
            None => self.line.push_str("\"<BADREQ>\""),
        }
        self.sink.push_line(self.line.as_bytes());
    }

    /// Writes the lines gathered this turn, without blocking.
    pub fn flush(&mut self) {
        if self.sink.pending() > 0 {
            self.sink.flush();
        }
    }

    /// Lines dropped because the target stalled or failed.
    pub fn dropped(&self) -> u64 {
        self.sink.dropped
    }

    /// The fd to poll for writability while lines wait on a stalled reader.
    pub fn blocked_fd(&self) -> Option<std::os::fd::RawFd> {
        self.sink.blocked_fd()
    }
}

/// Milliseconds between two instants as logged (`-1` stands for "never").
pub fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// `23/Nov/2026:06:52:28.123` in local time, as HAProxy's `%t`.
pub(crate) fn format_date(out: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as libc::time_t;
    // SAFETY: `tm` is plain data; localtime_r fills it from `secs` and is thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    let _ = write!(
        out,
        "{:02}/{}/{:04}:{:02}:{:02}:{:02}.{:03}",
        tm.tm_mday,
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        since.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_haproxy_tcp_shape() {
        let mut log = AccessLog {
            sink: Sink::null(),
            line: String::new(),
            off: false,
        };
        log.log(&ConnLog {
            client: "127.0.0.1:41234".parse().unwrap(),
            accepted: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            frontend: "fe",
            backend: "be",
            server: "s1",
            t_queue: 0,
            t_connect: 1,
            t_total: 5003,
            bytes_out: 1024,
            term: *b"--",
            actconn: 1,
            feconn: 1,
            beconn: 1,
            srv_conn: 1,
            retries: 0,
            backend_queue: 0,
        });
        let line = log.line.clone();
        assert!(line.starts_with("127.0.0.1:41234 ["), "{line}");
        assert!(
            line.ends_with(".123] fe be/s1 0/1/5003 1024 -- 1/1/1/1/0 0/0"),
            "{line}"
        );
        assert_eq!(log.dropped(), 1, "the null sink counts what it drops");
    }

    #[test]
    fn http_line_has_haproxy_httplog_shape() {
        let mut log = AccessLog {
            sink: Sink::null(),
            line: String::new(),
            off: false,
        };
        log.log_http(&HttpLog {
            client: "127.0.0.1:44640".parse().unwrap(),
            started: UNIX_EPOCH + Duration::from_millis(1_795_000_000_330),
            frontend: "fe",
            backend: "be",
            server: "s1",
            t_request: 0,
            t_queue: 0,
            t_connect: 0,
            t_response: 1,
            t_active: 1,
            status: 200,
            bytes_out: 415,
            term: *b"--",
            actconn: 1,
            feconn: 1,
            beconn: 0,
            srv_conn: 0,
            retries: 0,
            backend_queue: 0,
            request: Some(("GET", "/a\"b", "HTTP/1.1")),
        });
        let line = log.line.clone();
        assert!(
            line.ends_with(
                ".330] fe be/s1 0/0/0/1/1 200 415 - - ---- 1/1/0/0/0 0/0 \"GET /a\\\"b HTTP/1.1\""
            ),
            "{line}"
        );
    }
}
