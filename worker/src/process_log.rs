//! The process log (`[LEVEL] (pid) message` on stderr, level from
//! `CORRAL_LOG`): env_logger's formatting and filters, written through a
//! non-blocking [`Sink`] so that a stalled stderr reader never blocks the
//! master or a worker. Lines that do not fit wait in the sink's buffer; each
//! process flushes it once per loop turn ([`flush`]) and counts what it had
//! to drop ([`dropped`], shown in `show info` as DroppedLogs).
//!
//! One sink per process image: set up before the master forks, so workers
//! share its (already non-blocking) open file description; a worker's own
//! buffer is its copy of the master's at fork time.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};

use crate::log_sink::Sink;

static SINK: OnceLock<Arc<Mutex<Sink>>> = OnceLock::new();

/// What env_logger writes to: the shared sink.
struct Pipe(Arc<Mutex<Sink>>);

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut s) = self.0.lock() {
            // env_logger writes one whole record per call.
            let line = buf.strip_suffix(b"\n").unwrap_or(buf);
            s.push_line(line);
            s.flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open() -> Sink {
    Sink::std(2).unwrap_or_else(|_| Sink::null())
}

/// Installs the process logger (once per process image).
pub fn init() {
    let sink = SINK.get_or_init(|| Arc::new(Mutex::new(open()))).clone();
    let _ = env_logger::Builder::from_env(env_logger::Env::new().filter_or("CORRAL_LOG", "info"))
        .format(|buf, record| {
            writeln!(
                buf,
                "[{}] ({}) {}",
                record.level(),
                std::process::id(),
                record.args()
            )
        })
        .target(env_logger::Target::Pipe(Box::new(Pipe(sink))))
        .try_init();
}

/// Opens stderr again (after daemonizing pointed it elsewhere).
pub fn reopen() {
    if let Some(s) = SINK.get() {
        if let Ok(mut s) = s.lock() {
            s.flush();
            *s = open();
        }
    }
}

/// In a forked child: drops the lines the parent had not written yet (the
/// parent writes them; the child would write them a second time).
pub fn after_fork() {
    if let Some(s) = SINK.get() {
        if let Ok(mut s) = s.lock() {
            s.discard_pending();
        }
    }
}

/// Writes what waits, without blocking.
pub fn flush() {
    if let Some(s) = SINK.get() {
        if let Ok(mut s) = s.lock() {
            if s.pending() > 0 {
                s.flush();
            }
        }
    }
}

/// Process log lines this process dropped.
pub fn dropped() -> u64 {
    SINK.get()
        .and_then(|s| s.lock().ok().map(|s| s.dropped))
        .unwrap_or(0)
}

/// The fd to poll for writability while lines wait on a stalled reader.
pub fn blocked_fd() -> Option<std::os::fd::RawFd> {
    SINK.get()
        .and_then(|s| s.lock().ok().and_then(|s| s.blocked_fd()))
}
