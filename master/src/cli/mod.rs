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

pub mod cache;
pub mod commands;
pub mod history;
pub mod html;
pub mod info;
pub mod metrics;
pub mod parse;
pub mod servers;
pub mod stat;
pub mod stat_dump;
pub mod table;
pub mod totals;
pub mod typed;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use corral_config::{Level, Stats};

/// Clients served at once (each may hold up to [`MAX_PENDING`] of output).
pub const MAX_CLIENTS: usize = 64;
/// Output a client may leave unread before it is dropped.
const MAX_PENDING: usize = 4 << 20;
/// A dump produces more only while less than this is waiting to be sent.
pub const LOW_WATER: usize = 64 * 1024;
/// Longest input line.
const MAX_LINE: usize = 64 * 1024;
/// Default idle timeout of a CLI connection (HAProxy's `stats timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client sent, waiting to be run in order.
#[derive(Debug)]
pub enum Item {
    /// A line starts (its framing depends on the mode it started in).
    LineStart,
    /// One command of the line.
    Command(Vec<String>),
    /// The line is done.
    LineEnd,
}

/// One client of the stats socket.
pub struct Client {
    /// The connection.
    pub stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already sent.
    sent: usize,
    /// Commands read and not yet run (a dump in progress holds them back).
    pub queue: VecDeque<Item>,
    /// A dump being streamed to this client.
    pub dump: Option<commands::Dump>,
    /// Whether the line being run started in interactive mode.
    pub line_was_interactive: bool,
    /// `prompt` mode: keep the connection, print `> ` after each answer.
    pub interactive: bool,
    /// Print the prompt (interactive with prompt, not `prompt i`).
    pub prompt: bool,
    /// Close once the output is flushed.
    pub closing: bool,
    /// The client shut its side: close once the queue is answered.
    pub eof: bool,
    /// Input was left unread (the queue was long): read again once it drains
    /// (readiness is edge-triggered: no new event would say so).
    pub input_pending: bool,
    /// Idle timeout of this client.
    pub timeout: Duration,
    /// Last activity (a byte read or written).
    pub last: Instant,
    /// Privilege level.
    pub level: Level,
    /// Waiting for the workers' answer to a query (its next commands wait).
    pub querying: bool,
}

impl Client {
    /// Wraps an accepted connection.
    pub fn new(stream: UnixStream, level: Level) -> io::Result<Client> {
        stream.set_nonblocking(true)?;
        Ok(Client {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            queue: VecDeque::new(),
            dump: None,
            line_was_interactive: false,
            interactive: false,
            prompt: false,
            closing: false,
            eof: false,
            input_pending: false,
            timeout: DEFAULT_TIMEOUT,
            last: Instant::now(),
            level,
            querying: false,
        })
    }

    /// Reads what is available and queues its complete lines' commands.
    /// `Err` closes.
    pub fn read_input(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let mut eof = false;
        self.input_pending = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
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
                    if self.queue.len() > 4096 {
                        // A flood: read more once these ran.
                        self.input_pending = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut start = 0;
        while let Some(pos) = self.input[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.input[start..start + pos]).into_owned();
            self.queue_line(&line);
            start += pos + 1;
        }
        self.input.drain(..start);
        if eof {
            // EOF with an unterminated last line: HAProxy runs it too.
            if !self.input.is_empty() {
                let line = String::from_utf8_lossy(&std::mem::take(&mut self.input)).into_owned();
                self.queue_line(&line);
            }
            // socat shuts its write side and waits for the answer: close
            // once everything queued has been answered.
            self.eof = true;
        }
        Ok(())
    }

    fn queue_line(&mut self, line: &str) {
        self.queue.push_back(Item::LineStart);
        for words in parse::split_commands(line) {
            self.queue.push_back(Item::Command(words));
        }
        self.queue.push_back(Item::LineEnd);
    }

    /// Queues an answer, followed by the empty line (or the prompt).
    pub fn answer(&mut self, text: &str) {
        // A client that left this much unread is not reading: drop it.
        // One answer may be larger (a big `show stat json`): it is sent
        // as the client reads.
        if self.pending() > MAX_PENDING {
            self.closing = true;
            return;
        }
        self.output.extend_from_slice(text.as_bytes());
        if !text.is_empty() && !text.ends_with('\n') {
            self.output.push(b'\n');
        }
        self.output
            .extend_from_slice(if self.prompt { b"\n> " } else { b"\n" });
    }

    /// The output buffer, for a dump to append to.
    pub fn output_mut(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Bytes waiting to be sent.
    pub fn pending(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Writes what the socket takes; `Ok(true)` when everything is out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.output.len() {
            match self.stream.write(&self.output[self.sent..]) {
                Ok(n) => {
                    self.sent += n;
                    self.last = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
            return Ok(true);
        }
        if self.sent > LOW_WATER {
            // Keep the buffer small: drop what was sent (never per write).
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        Ok(false)
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        self.pending() > 0
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
    if let Err(e) = set_owner(stats) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Gives the socket file the owner and group of `[stats] user`/`group`
/// (names looked up now: a missing one is an error, never ignored).
pub fn set_owner(stats: &Stats) -> io::Result<()> {
    if stats.user.is_none() && stats.group.is_none() {
        return Ok(());
    }
    let uid = match &stats.user {
        Some(name) => Some(
            nix::unistd::User::from_name(name)
                .map_err(io::Error::from)?
                .ok_or_else(|| io::Error::other(format!("no such user '{name}'")))?
                .uid,
        ),
        None => None,
    };
    let gid = match &stats.group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .map_err(io::Error::from)?
                .ok_or_else(|| io::Error::other(format!("no such group '{name}'")))?
                .gid,
        ),
        None => None,
    };
    nix::unistd::chown(&stats.socket, uid, gid).map_err(io::Error::from)
}

/// Re-creates a listener from an fd inherited across exec.
pub fn adopt(fd: OwnedFd) -> io::Result<UnixListener> {
    let l = UnixListener::from(fd);
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Re-creates a client connection from an fd inherited across exec.
pub fn adopt_client(fd: OwnedFd, level: Level) -> io::Result<Client> {
    Client::new(UnixStream::from(fd), level)
}

/// The raw fd of a client, for handing it across exec.
pub fn client_fd(c: &Client) -> RawFd {
    c.stream.as_raw_fd()
}
