//! `[stats] http`: the master's small HTTP server for the stats page (`/`),
//! Prometheus (`/metrics`) and the CSV (`/;csv`).
//!
//! One request per connection (`Connection: close`), answered from the
//! same view as the stats socket. Bounds as the socket's: non-blocking
//! reads and writes in the master loop, a request head of at most
//! [`MAX_HEAD`] bytes, an idle timeout, at most [`MAX_CLIENTS`] at once
//! (the oldest is dropped for a new one), and the answer written as the
//! client reads, so a slow or silent client never holds the master.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Longest request head.
pub const MAX_HEAD: usize = 8192;
/// Connections served at once.
pub const MAX_CLIENTS: usize = 64;
/// Idle timeout of a connection.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the page's listener (non-blocking, close-on-exec, SO_REUSEADDR;
/// a takeover is handed the running instance's listener instead).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(64)?;
    Ok(s.into())
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// `/`: the HTML page.
    Html,
    /// `/metrics`.
    Metrics,
    /// `/;csv`: `show stat`'s CSV.
    Csv,
}

/// The answer to a parsed request head: the page, or an error status.
pub fn route(head: &[u8]) -> Result<(Page, bool), (u16, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err((400, "Bad Request")),
    }
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Err((405, "Method Not Allowed")),
    };
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    let page = match path {
        "/" | "/stats" => Page::Html,
        "/metrics" => Page::Metrics,
        "/;csv" | "/stats;csv" => Page::Csv,
        _ => return Err((404, "Not Found")),
    };
    Ok((page, head_only))
}

/// A complete response.
pub fn response(status: u16, reason: &str, ctype: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The whole response to request `head`, from the master's view.
pub fn answer(head: &[u8], view: &crate::cli::commands::View<'_>) -> Vec<u8> {
    use crate::cli::{html, info, metrics, stat};
    match route(head) {
        Err((status, reason)) => response(
            status,
            reason,
            "text/plain",
            format!("{reason}\n").as_bytes(),
            false,
        ),
        Ok((page, head_only)) => {
            let rows = view.stat_rows();
            let (ctype, body) = match page {
                Page::Html => (
                    "text/html; charset=utf-8",
                    html::render(&rows, &info::fields(view)),
                ),
                Page::Metrics => (
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics::render(&rows, &info::fields(view)),
                ),
                Page::Csv => ("text/plain", stat::csv(&rows)),
            };
            response(200, "OK", ctype, body.as_bytes(), head_only)
        }
    }
}

/// One connection to the page.
pub struct WebClient {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    /// Last activity.
    pub last: Instant,
    /// Accepted at (the oldest goes first when full).
    pub since: Instant,
}

impl WebClient {
    /// Wraps an accepted connection.
    pub fn new(stream: TcpStream) -> io::Result<WebClient> {
        stream.set_nonblocking(true)?;
        let now = Instant::now();
        Ok(WebClient {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            last: now,
            since: now,
        })
    }

    /// The socket, for registration.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads what is there; `Ok(Some(head))` once a whole head arrived,
    /// `Err` to close (EOF before a head, an error, a head too long: the
    /// latter answered 431 first).
    pub fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        if !self.output.is_empty() {
            return Ok(None); // answered: ignore the rest
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.last = Instant::now();
                    self.input.extend_from_slice(&buf[..n]);
                    if let Some(end) = find_end(&self.input) {
                        return Ok(Some(self.input[..end].to_vec()));
                    }
                    if self.input.len() > MAX_HEAD {
                        self.answer(response(
                            431,
                            "Request Header Fields Too Large",
                            "text/plain",
                            b"request head too large\n",
                            false,
                        ));
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues the answer.
    pub fn answer(&mut self, bytes: Vec<u8>) {
        self.output = bytes;
        self.sent = 0;
    }

    /// Writes what the socket takes; `Ok(true)` once all is out (then the
    /// connection is closed).
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.output.len() {
            match self.stream.write(&self.output[self.sent..]) {
                Ok(n) => {
                    self.sent += n;
                    self.last = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if !self.output.is_empty() {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(!self.output.is_empty())
    }
}

/// The end of a request head (after its empty line).
fn find_end(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| b.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok((Page::Html, false))
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.0\r\n\r\n"),
            Ok((Page::Metrics, true))
        );
        assert_eq!(route(b"GET /;csv HTTP/1.1\r\n\r\n"), Ok((Page::Csv, false)));
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n").unwrap_err().0, 404);
        assert_eq!(route(b"POST / HTTP/1.1\r\n\r\n").unwrap_err().0, 405);
        assert_eq!(route(b"\x00\x01 junk\r\n\r\n").unwrap_err().0, 400);
        assert_eq!(find_end(b"GET / HTTP/1.0\n\n"), Some(16));
    }
}
