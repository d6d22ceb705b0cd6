//! The stats socket: HAProxy's runtime API, served by the master.
//!
//! Framing follows HAProxy (see `parse.rs`): by default a client's first line
//! is executed and the connection closed after the answer (socat one-liners,
//! exporters reading until EOF); `prompt` switches to interactive mode with a
//! `> ` prompt (hatop). Every answer ends with an empty line. A bad command
//! gets a one-line error. Levels (`user` < `operator` < `admin`) come from
//! `[stats] level`; fd handover (`_getsocks`) needs admin.
//!
//! The master serves the socket in its own mio loop, non-blocking; a client
//! that stops reading is dropped once its output passes [`MAX_PENDING`], and
//! one idle for the CLI timeout (10 s, `set timeout cli`) is closed.

pub mod commands;
pub mod parse;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use corral_config::{Level, Stats};

/// Output a client may leave unread before it is dropped.
const MAX_PENDING: usize = 4 << 20;
/// Longest input line.
const MAX_LINE: usize = 64 * 1024;
/// Default idle timeout of a CLI connection (HAProxy's `stats timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One client of the stats socket.
pub struct Client {
    /// The connection.
    pub stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// `prompt` mode: keep the connection, print `> ` after each answer.
    pub interactive: bool,
    /// Print the prompt (interactive with prompt, not `prompt i`).
    pub prompt: bool,
    /// Close once the output is flushed.
    pub closing: bool,
    /// Idle timeout of this client.
    pub timeout: Duration,
    /// Last activity.
    pub last: Instant,
    /// Privilege level.
    pub level: Level,
}

impl Client {
    /// Wraps an accepted connection.
    pub fn new(stream: UnixStream, level: Level) -> io::Result<Client> {
        stream.set_nonblocking(true)?;
        Ok(Client {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            interactive: false,
            prompt: false,
            closing: false,
            timeout: DEFAULT_TIMEOUT,
            last: Instant::now(),
            level,
        })
    }

    /// Reads what is available; returns complete lines. `Err` or EOF closes.
    pub fn read_lines(&mut self) -> io::Result<Vec<String>> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closing = true;
                    break;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    self.last = Instant::now();
                    if self.input.len() > MAX_LINE && !self.input.contains(&b'\n') {
                        self.output.extend_from_slice(b"Line too long.\n\n");
                        self.closing = true;
                        self.input.clear();
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut lines = Vec::new();
        while let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.input.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        // EOF with an unterminated last line: HAProxy runs it too.
        if self.closing && !self.input.is_empty() {
            lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.input)).into_owned());
        }
        Ok(lines)
    }

    /// Queues an answer, followed by the empty line (or the prompt).
    pub fn answer(&mut self, text: &str) {
        self.output.extend_from_slice(text.as_bytes());
        if !text.is_empty() && !text.ends_with('\n') {
            self.output.push(b'\n');
        }
        self.output
            .extend_from_slice(if self.prompt { b"\n> " } else { b"\n" });
        if self.output.len() > MAX_PENDING {
            self.closing = true;
        }
    }

    /// Writes what the socket takes; `Ok(true)` when everything is out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }
}

/// Binds the stats socket at `stats.socket` with `stats.mode`, replacing a
/// stale socket file (one nobody answers on). A live one is an error: two
/// instances must not fight over it (`--takeover` is the way to replace one).
pub fn bind(stats: &Stats) -> io::Result<UnixListener> {
    let path: &Path = &stats.socket;
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use by a running instance (use --takeover)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(stats.mode))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Re-creates a listener from an fd inherited across exec.
pub fn adopt(fd: RawFd) -> io::Result<UnixListener> {
    // SAFETY: the handoff record names `fd` as our stats socket; nothing else owns it.
    let l = unsafe { UnixListener::from_raw_fd(fd) };
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Re-creates a client connection from an fd inherited across exec.
pub fn adopt_client(fd: RawFd, level: Level) -> io::Result<Client> {
    // SAFETY: the handoff record names `fd` as a CLI connection we own.
    let s = unsafe { UnixStream::from(OwnedFd::from_raw_fd(fd)) };
    Client::new(s, level)
}

/// The raw fd of a client, for handing it across exec.
pub fn client_fd(c: &Client) -> RawFd {
    c.stream.as_raw_fd()
}
