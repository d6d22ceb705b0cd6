//! HTTP backends and a raw HTTP client for the end-to-end tests.
//!
//! - [`Origin`]: a small HTTP/1.1 origin server (one thread per
//!   connection, keep-alive, CL and chunked bodies both ways, 100-continue,
//!   WebSocket-style upgrade to an echo). The path picks the behaviour:
//!   `/name`, `/upload` (answers `LEN SUM` of the body), `/echo`,
//!   `/download?len=N[&chunked=1]`, `/status/N`, `/headers` (answers the head
//!   it received), `/close` (a close-delimited answer), `/early413` (answers
//!   413 before reading the body), `/sleep?ms=N`, `/ws` (upgrade).
//! - [`RawServer`]: records every byte of every connection and answers each
//!   head with a scripted response (malformed ones for the 502 tests; `None`
//!   answers nothing).
//! - [`Client`]: writes raw requests and reads responses (length, chunked,
//!   until close, HEAD), keeping the connection for the next one.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A fast checksum of a byte stream (length and a mix of 8-byte words),
/// the same whatever the stream's cut into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sum {
    len: u64,
    acc: u64,
    tail: Vec<u8>,
}

impl Sum {
    /// Adds bytes.
    pub fn add(&mut self, mut b: &[u8]) {
        self.len += b.len() as u64;
        if !self.tail.is_empty() {
            let need = 8 - self.tail.len();
            let take = need.min(b.len());
            self.tail.extend_from_slice(&b[..take]);
            b = &b[take..];
            if self.tail.len() == 8 {
                let w = u64::from_le_bytes(self.tail[..].try_into().unwrap());
                self.word(w);
                self.tail.clear();
            }
        }
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap()));
        }
        self.tail.extend_from_slice(chunks.remainder());
    }

    fn word(&mut self, w: u64) {
        self.acc = (self.acc.rotate_left(5) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    /// `LEN SUM`.
    pub fn finish(&self) -> String {
        let mut acc = self.acc;
        for &b in &self.tail {
            acc = (acc.rotate_left(5) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        format!("{} {:016x}", self.len, acc)
    }
}

/// The deterministic bytes of `/download?len=N`: a 64 KiB pattern whose
/// bytes also depend on the block number.
pub fn pattern_block(block: u64) -> Vec<u8> {
    let mut x = block.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut out = Vec::with_capacity(65536);
    while out.len() < 65536 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Writes the first `len` pattern bytes to `w` (an upload streamed as it
/// is made).
pub fn write_pattern(w: &mut impl Write, len: u64) {
    try_write_pattern(w, len).unwrap()
}

/// [`write_pattern`], for an upload the answer may cut short.
pub fn try_write_pattern(w: &mut impl Write, len: u64) -> io::Result<()> {
    let mut left = len;
    let mut block = 0;
    while left > 0 {
        let b = pattern_block(block);
        let n = left.min(b.len() as u64) as usize;
        w.write_all(&b[..n])?;
        left -= n as u64;
        block += 1;
    }
    Ok(())
}

/// The checksum of the first `len` pattern bytes.
pub fn pattern_sum(len: u64) -> String {
    let mut s = Sum::default();
    let mut left = len;
    let mut block = 0;
    while left > 0 {
        let b = pattern_block(block);
        let n = left.min(b.len() as u64) as usize;
        s.add(&b[..n]);
        left -= n as u64;
        block += 1;
    }
    s.finish()
}

/// A parsed head (request or response).
#[derive(Clone, Debug, Default)]
pub struct Head {
    /// The first line.
    pub line: String,
    /// Fields in order.
    pub fields: Vec<(String, String)>,
    /// The raw bytes of the head.
    pub raw: Vec<u8>,
}

impl Head {
    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of field `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a comma-separated field holds `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A buffered reader over a stream that keeps what it read past a message.
pub struct Reader<S> {
    pub s: S,
    pub buf: Vec<u8>,
}

impl<S: Read> Reader<S> {
    pub fn new(s: S) -> Self {
        Reader { s, buf: Vec::new() }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 65536];
        let n = self.s.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads a head; `Ok(None)` at a clean EOF before any byte.
    pub fn head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                let text = String::from_utf8_lossy(&raw).into_owned();
                let mut lines = text.split("\r\n");
                let line = lines.next().unwrap_or("").to_string();
                let fields = lines
                    .filter(|l| !l.is_empty())
                    .filter_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        Some((n.trim().to_string(), v.trim().to_string()))
                    })
                    .collect();
                return Ok(Some(Head { line, fields, raw }));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a head",
                ));
            }
        }
    }

    /// Reads exactly `n` bytes into `out` (streamed through `f`).
    pub fn exact(&mut self, mut n: u64, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a body",
                ));
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            f(&self.buf[..take]);
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let l: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Ok(String::from_utf8_lossy(&l[..end]).into_owned());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a line",
                ));
            }
        }
    }

    /// Reads a chunked body, streamed through `f`.
    pub fn chunked(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            let l = self.line()?;
            let size = u64::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).map_err(
                |_| io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {l:?}")),
            )?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line()?.is_empty() {}
                return Ok(());
            }
            self.exact(size, f)?;
            if !self.line()?.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no CRLF after chunk",
                ));
            }
        }
    }

    /// Reads to EOF, streamed through `f`.
    pub fn until_eof(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            if !self.buf.is_empty() {
                f(&self.buf);
                self.buf.clear();
            }
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

// ---------------------------------------------------------------------------
// Origin server
// ---------------------------------------------------------------------------

/// A small HTTP/1.1 origin server (see the module docs).
pub struct Origin {
    pub addr: SocketAddr,
    pub name: String,
    /// Connections accepted.
    pub conns: Arc<AtomicU64>,
    /// Connections open now.
    pub open: Arc<AtomicU64>,
    /// Requests served.
    pub requests: Arc<AtomicU64>,
    /// Every request head received, raw.
    pub heads: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    listener: Option<TcpListener>,
}

impl Origin {
    /// Starts a server named `name` on 127.0.0.1:0.
    pub fn start(name: &str) -> Origin {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name)
    }

    /// Starts a server named `name` on `addr`.
    pub fn start_on(addr: SocketAddr, name: &str) -> Origin {
        Self::start_full(addr, name, None)
    }

    /// Starts a server that closes a connection idle for `idle` (its
    /// keep-alive timeout, as nginx's `keepalive_timeout`).
    pub fn start_closing_idle(name: &str, idle: Duration) -> Origin {
        Self::start_full("127.0.0.1:0".parse().unwrap(), name, Some(idle))
    }

    fn start_full(addr: SocketAddr, name: &str, idle: Option<Duration>) -> Origin {
        let l = TcpListener::bind(addr).expect("bind origin");
        let addr = l.local_addr().unwrap();
        let o = Origin {
            addr,
            name: name.to_string(),
            conns: Default::default(),
            open: Default::default(),
            requests: Default::default(),
            heads: Default::default(),
            stop: Default::default(),
            listener: Some(l.try_clone().unwrap()),
        };
        let (name, conns, open, requests, heads, stop) = (
            o.name.clone(),
            o.conns.clone(),
            o.open.clone(),
            o.requests.clone(),
            o.heads.clone(),
            o.stop.clone(),
        );
        thread::spawn(move || {
            for s in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(s) = s else { continue };
                conns.fetch_add(1, Ordering::Relaxed);
                open.fetch_add(1, Ordering::Relaxed);
                let (name, open, requests, heads) =
                    (name.clone(), open.clone(), requests.clone(), heads.clone());
                thread::spawn(move || {
                    let _ = s.set_read_timeout(idle);
                    let _ = serve(s, &name, &requests, &heads);
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        o
    }

    /// Stops accepting (connections in progress finish); the port closes.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop, then close our handle of the listener.
        let _ = TcpStream::connect(self.addr);
        self.listener.take();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn query(path: &str, key: &str) -> Option<u64> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn respond(
    s: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} X\r\n");
    let no_body = status < 200 || status == 204 || status == 304;
    if !no_body {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (n, v) in extra {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !no_body && !head_only {
        bytes.extend_from_slice(body);
    }
    s.write_all(&bytes)
}

fn serve(
    s: TcpStream,
    name: &str,
    requests: &AtomicU64,
    heads: &Mutex<Vec<Vec<u8>>>,
) -> io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = Reader::new(s);
    loop {
        let Some(head) = r.head()? else { return Ok(()) };
        requests.fetch_add(1, Ordering::Relaxed);
        heads.lock().unwrap().push(head.raw.clone());
        let mut parts = head.line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("").to_string();
        let head_only = method == "HEAD";
        let keep = if version == "HTTP/1.0" {
            head.has_token("connection", "keep-alive")
        } else {
            !head.has_token("connection", "close")
        };
        let route = path.split('?').next().unwrap_or("").to_string();
        if route == "/early413" {
            respond(
                &mut w,
                413,
                &[("Connection", "close".into())],
                b"too large",
                false,
            )?;
            let _ = w.shutdown(Shutdown::Write);
            // Drain what the client still sends, so our close is no reset.
            r.s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let _ = r.until_eof(&mut |_| {});
            return Ok(());
        }
        if head.has_token("expect", "100-continue") {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        // `?pause=MS`: a server busy before it reads the body.
        if let Some(ms) = query(&path, "pause") {
            thread::sleep(Duration::from_millis(ms));
        }
        // The body, streamed into a checksum (and kept when small).
        let mut sum = Sum::default();
        let mut kept = Vec::new();
        {
            let mut f = |b: &[u8]| {
                sum.add(b);
                if kept.len() < 1 << 20 {
                    kept.extend_from_slice(b);
                }
            };
            if head.has_token("transfer-encoding", "chunked") {
                r.chunked(&mut f)?;
            } else if let Some(n) = head.get("content-length").and_then(|v| v.parse().ok()) {
                r.exact(n, &mut f)?;
            }
        }
        if route == "/ws" && head.has_token("connection", "upgrade") {
            w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")?;
            // Echo raw bytes until the client closes.
            if !r.buf.is_empty() {
                w.write_all(&r.buf)?;
                r.buf.clear();
            }
            let mut buf = [0u8; 65536];
            loop {
                let n = r.s.read(&mut buf)?;
                if n == 0 {
                    let _ = w.shutdown(Shutdown::Write);
                    return Ok(());
                }
                w.write_all(&buf[..n])?;
            }
        }
        let mut extra: Vec<(&str, String)> = vec![("X-Server", name.to_string())];
        if !keep {
            extra.push(("Connection", "close".into()));
        }
        match route.as_str() {
            "/upload" => respond(&mut w, 200, &extra, sum.finish().as_bytes(), head_only)?,
            "/echo" => respond(&mut w, 200, &extra, &kept, head_only)?,
            "/headers" => respond(&mut w, 200, &extra, &head.raw, head_only)?,
            "/close" => {
                w.write_all(
                    format!("HTTP/1.1 200 OK\r\nX-Server: {name}\r\n\r\n{name} until close")
                        .as_bytes(),
                )?;
                return Ok(());
            }
            "/sleep" => {
                thread::sleep(Duration::from_millis(query(&path, "ms").unwrap_or(100)));
                respond(&mut w, 200, &extra, name.as_bytes(), head_only)?;
            }
            "/download" => {
                let len = query(&path, "len").unwrap_or(0);
                let chunked = query(&path, "chunked") == Some(1);
                let mut h = "HTTP/1.1 200 OK\r\n".to_string();
                if chunked {
                    h.push_str("Transfer-Encoding: chunked\r\n");
                } else {
                    h.push_str(&format!("Content-Length: {len}\r\n"));
                }
                if !keep {
                    h.push_str("Connection: close\r\n");
                }
                h.push_str("\r\n");
                w.write_all(h.as_bytes())?;
                if !head_only {
                    let mut left = len;
                    let mut block = 0;
                    while left > 0 {
                        let b = pattern_block(block);
                        let n = left.min(b.len() as u64) as usize;
                        if chunked {
                            w.write_all(format!("{n:x}\r\n").as_bytes())?;
                            w.write_all(&b[..n])?;
                            w.write_all(b"\r\n")?;
                        } else {
                            w.write_all(&b[..n])?;
                        }
                        left -= n as u64;
                        block += 1;
                    }
                    if chunked {
                        w.write_all(b"0\r\n\r\n")?;
                    }
                }
            }
            r if r.starts_with("/status/") => {
                let status = r[8..].parse().unwrap_or(500);
                respond(&mut w, status, &extra, b"status body", head_only)?;
            }
            _ => respond(&mut w, 200, &extra, name.as_bytes(), head_only)?,
        }
        if !keep {
            let _ = w.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// Raw server
// ---------------------------------------------------------------------------

/// Records every byte it receives, per connection, and answers each head
/// with `response` (then closes) if one is given.
pub struct RawServer {
    pub addr: SocketAddr,
    /// Bytes received, one entry per connection.
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawServer {
    pub fn start(response: Option<Vec<u8>>) -> RawServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
        let rec = received.clone();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let rec = rec.clone();
                let response = response.clone();
                thread::spawn(move || {
                    let idx = {
                        let mut r = rec.lock().unwrap();
                        r.push(Vec::new());
                        r.len() - 1
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = [0u8; 65536];
                    let mut answered = false;
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let mut r = rec.lock().unwrap();
                        r[idx].extend_from_slice(&buf[..n]);
                        let got_head = find(&r[idx], b"\r\n\r\n").is_some();
                        drop(r);
                        if got_head && !answered {
                            if let Some(resp) = &response {
                                answered = true;
                                let _ = s.write_all(resp);
                                let _ = s.shutdown(Shutdown::Write);
                            }
                        }
                    }
                });
            }
        });
        RawServer { addr, received }
    }

    /// All bytes received, over every connection.
    pub fn total(&self) -> usize {
        self.received.lock().unwrap().iter().map(Vec::len).sum()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// A response as the client read it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection.
pub struct Client {
    pub r: Reader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { r: Reader::new(s) }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, raw: &[u8]) {
        self.r.s.write_all(raw).expect("send");
    }

    /// `GET path` with `Host: test` on HTTP/1.1.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response(false).expect("a response")
    }

    /// Reads one response (skipping 1xx unless `keep_interim`), its body
    /// read whole; `head_request`: no body whatever the head says.
    pub fn response(&mut self, head_request: bool) -> io::Result<Response> {
        self.response_with(head_request, false)
    }

    /// Like [`Client::response`]; `keep_interim` returns a 1xx as it is.
    pub fn response_with(
        &mut self,
        head_request: bool,
        keep_interim: bool,
    ) -> io::Result<Response> {
        loop {
            let head = self.r.head()?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response")
            })?;
            let status: u16 = head
                .line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.line.clone()))?;
            if status < 200 && status != 101 && !keep_interim {
                continue;
            }
            let mut body = Vec::new();
            let no_body = head_request || status < 200 || status == 204 || status == 304;
            if !no_body {
                let mut f = |b: &[u8]| body.extend_from_slice(b);
                if head.has_token("transfer-encoding", "chunked") {
                    self.r.chunked(&mut f)?;
                } else if let Some(n) = head.get("content-length").and_then(|v| v.parse().ok()) {
                    self.r.exact(n, &mut f)?;
                } else {
                    self.r.until_eof(&mut f)?;
                }
            }
            return Ok(Response { status, head, body });
        }
    }

    /// Whether the server closed the connection (EOF) within `wait`, with no
    /// byte sent; `Err` with what came instead.
    pub fn closed_within(&mut self, wait: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        self.r.s.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 1024];
        let got = if !self.r.buf.is_empty() {
            Err(String::from_utf8_lossy(&self.r.buf).into_owned())
        } else {
            match self.r.s.read(&mut buf) {
                Ok(0) => Ok(start.elapsed()),
                Ok(n) => Err(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(start.elapsed()),
                Err(e) => Err(format!("not closed: {e}")),
            }
        };
        self.r
            .s
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        got
    }
}

/// Sends one raw request on a new connection and reads the answer.
pub fn request(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut c = Client::connect(addr);
    c.send(raw);
    c.response(raw.starts_with(b"HEAD "))
}

// ---------------------------------------------------------------------------
// httplog lines
// ---------------------------------------------------------------------------

/// One parsed `option httplog` line (HAProxy 2.6's format):
/// `CLIENT [tr] FE BE/SRV TR/Tw/Tc/Tr/Ta STATUS BYTES - - TSC
///  ac/fc/bc/sc/rc sq/bq "REQUEST"`.
#[derive(Clone, Debug)]
pub struct HttpLogLine {
    pub raw: String,
    pub client: SocketAddr,
    pub frontend: String,
    pub backend: String,
    pub server: String,
    /// TR, Tw, Tc, Tr, Ta.
    pub times: Vec<i64>,
    pub status: i64,
    pub bytes: u64,
    /// The four characters of `%tsc`.
    pub tsc: String,
    /// ac, fc, bc, sc, rc.
    pub conns: Vec<i64>,
    pub request: String,
}

impl HttpLogLine {
    pub fn parse(line: &str) -> Option<HttpLogLine> {
        let (head, request) = line.split_once(" \"")?;
        let request = request.strip_suffix('"')?.to_string();
        let f: Vec<&str> = head.split_whitespace().collect();
        if f.len() != 12 || f[7] != "-" || f[8] != "-" {
            return None;
        }
        let ints = |s: &str, n: usize| -> Option<Vec<i64>> {
            let v: Vec<i64> = s
                .split('/')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (v.len() == n).then_some(v)
        };
        let (backend, server) = f[3].split_once('/')?;
        Some(HttpLogLine {
            raw: line.to_string(),
            client: f[0].parse().ok()?,
            frontend: f[2].to_string(),
            backend: backend.to_string(),
            server: server.to_string(),
            times: ints(f[4], 5)?,
            status: f[5].parse().ok()?,
            bytes: f[6].parse().ok()?,
            tsc: f[9].to_string(),
            conns: ints(f[10], 5)?,
            request,
        })
    }
}

/// Every httplog line of client `client` in `log`, in order.
pub fn http_log_lines(log: &str, client: SocketAddr) -> Vec<HttpLogLine> {
    let needle = format!("{client} [");
    log.lines()
        .filter(|l| l.starts_with(&needle))
        .map(|l| HttpLogLine::parse(l).unwrap_or_else(|| panic!("not an httplog line: {l:?}")))
        .collect()
}

/// Waits (up to `timeout`) for `n` httplog lines of client `client`.
pub fn wait_http_log(
    c: &super::Corral,
    client: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Vec<HttpLogLine> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = http_log_lines(&c.log_text(), client);
        if lines.len() >= n {
            return lines;
        }
        if Instant::now() > deadline {
            panic!(
                "{} of {n} log lines for client {client} after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                lines.len(),
                c.log_text(),
                c.stderr_text()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A `show stat` row as a map from column name to value.
pub fn stat_row(csv: &str, px: &str, sv: &str) -> std::collections::HashMap<String, String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() >= 2 && f[0] == px && f[1] == sv {
            return header
                .iter()
                .zip(f)
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
        }
    }
    panic!("no row {px}/{sv} in\n{csv}");
}

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

/// An HTTP test setup: frontend `web` on a free loopback port, default
/// backend `app` with servers `s0`, `s1`, ... (or `backends` instead), a
/// stats socket. Fields left at their defaults say nothing.
#[derive(Clone, Copy)]
pub struct HttpSetup<'a> {
    pub workers: usize,
    /// `mode` in `[defaults]`.
    pub mode: &'a str,
    /// The `timeout` inline table of `[defaults]`.
    pub timeouts: &'a str,
    /// Lines for `[global]`.
    pub global: &'a str,
    /// Lines for `[frontend.web]`.
    pub frontend: &'a str,
    /// Lines for `[backend.app]`.
    pub backend: &'a str,
    /// The servers of `[backend.app]`.
    pub servers: &'a [SocketAddr],
    /// Whole backend sections, replacing `[backend.app]`.
    pub backends: Option<&'a str>,
}

impl Default for HttpSetup<'_> {
    fn default() -> Self {
        HttpSetup {
            workers: 1,
            mode: "http",
            timeouts: r#"{ connect = "2s", client = "5s", server = "5s" }"#,
            global: "",
            frontend: "",
            backend: "",
            servers: &[],
            backends: None,
        }
    }
}

impl HttpSetup<'_> {
    /// The config text and its stats socket's path.
    pub fn config(&self) -> (String, std::path::PathBuf) {
        let fe = super::free_port();
        let sock = super::temp_dir("http").join("admin.sock");
        let backends = match self.backends {
            Some(b) => b.to_string(),
            None => {
                let mut b = format!("[backend.app]\n{}\n", self.backend);
                for (i, a) in self.servers.iter().enumerate() {
                    b.push_str(&format!("server.s{i} = {{ addr = \"{a}\" }}\n"));
                }
                b
            }
        };
        let text = format!(
            r#"
[global]
workers = {workers}
{global}

[stats]
socket = "{sock}"
level = "admin"

[defaults]
mode = "{mode}"
timeout = {timeouts}
# Idle server connections close within the tests' quiescence checks.
pool_purge_delay = "1s"

[frontend.web]
bind = "127.0.0.1:{fe}"
default_backend = "app"
{frontend}

{backends}
"#,
            workers = self.workers,
            global = self.global,
            sock = sock.display(),
            mode = self.mode,
            timeouts = self.timeouts,
            frontend = self.frontend,
        );
        (text, sock)
    }

    /// corral started on [`HttpSetup::config`], and its socket's path.
    pub fn start(&self) -> (super::Corral, std::path::PathBuf) {
        let (text, sock) = self.config();
        (super::Corral::start(&text), sock)
    }
}
