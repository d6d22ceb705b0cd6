//! corral's control plane: the master process.
//!
//! The master binds every listener ([`bind`]), creates or inherits the shared
//! segment ([`shared`]), forks the workers and respawns them ([`master`]),
//! reloads by re-executing itself with the listeners and segment handed over
//! ([`reload`], [`handoff`]), takes over another instance ([`takeover`],
//! [`fdpass`]), serves the stats socket ([`cli`]), talks to systemd
//! ([`notify`]), names processes ([`proctitle`]) and drops privileges in
//! workers ([`privileges`]). It never touches a client byte.

pub mod bind;
pub mod cli;
pub mod fdpass;
pub mod handoff;
pub mod master;
pub mod notify;
pub mod privileges;
pub mod proctitle;
pub mod queries;
pub mod reload;
pub mod shared;
pub mod shared_caches;
pub mod start;
pub mod takeover;
pub mod web;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_config::Config;

use crate::handoff::{Handoff, ENV};
use crate::master::{Master, Start};

/// How long `corral --reload` waits for the outcome (under systemd's
/// default 90 s for an ExecReload).
pub const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(85);

/// `corral --reload`: sends `reload` on the stats socket `cfg` names and
/// waits for the answer (the new generation's `Success=1` or `0` and its
/// messages). Returns whether it succeeded, and the text to print.
///
/// When the socket cannot be used (no `[stats]`, a level below admin, a
/// socket path changed in the file but not yet reloaded), it falls back to
/// SIGUSR2 to the master: `$MAINPID` (systemd sets it for ExecReload), else
/// the config's pidfile. Then the outcome is not known: it says so.
pub fn reload_client(cfg: &Config) -> (bool, String) {
    match ask_reload(cfg) {
        Asked::Answer(ok, text) => (ok, text),
        Asked::Unusable(why) => signal_reload(cfg, &why),
    }
}

enum Asked {
    Answer(bool, String),
    Unusable(String),
}

fn ask_reload(cfg: &Config) -> Asked {
    use std::io::{Read, Write};
    let Some(stats) = &cfg.stats else {
        return Asked::Unusable("the configuration has no [stats] socket".into());
    };
    let path = &stats.socket;
    let mut s = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => return Asked::Unusable(format!("cannot reach {}: {e}", path.display())),
    };
    let _ = s.set_read_timeout(Some(RELOAD_WAIT));
    if let Err(e) = s
        .write_all(b"reload\n")
        .and_then(|()| s.shutdown(std::net::Shutdown::Write))
    {
        return Asked::Answer(false, format!("corral: cannot ask for a reload: {e}\n"));
    }
    let mut answer = String::new();
    if let Err(e) = s.read_to_string(&mut answer) {
        return Asked::Answer(
            false,
            format!("{answer}corral: no outcome from the running instance: {e}\n"),
        );
    }
    if answer.starts_with("Permission denied") {
        return Asked::Unusable(format!("{} is below admin level", path.display()));
    }
    if answer.trim().is_empty() {
        return Asked::Answer(
            false,
            "corral: the running instance closed without an answer\n".into(),
        );
    }
    Asked::Answer(answer.lines().next() == Some("Success=1"), answer)
}

fn signal_reload(cfg: &Config, why: &str) -> (bool, String) {
    let pid = std::env::var("MAINPID")
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .or_else(|| {
            let file = cfg.global.pidfile.as_ref()?;
            std::fs::read_to_string(file).ok()?.trim().parse().ok()
        });
    let Some(pid) = pid.filter(|&p| p > 1) else {
        return (
            false,
            format!("corral: {why}, and no master pid is known (MAINPID or the pidfile): cannot reload\n"),
        );
    };
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR2,
    ) {
        Ok(()) => (
            true,
            format!("corral: {why}: SIGUSR2 sent to the master (pid {pid}); its outcome is not waited for (see its log)\n"),
        ),
        Err(e) => (false, format!("corral: {why}, and SIGUSR2 to pid {pid} failed: {e}\n")),
    }
}

/// `corral -v`'s second line: how this binary was built.
pub fn build_info() -> String {
    format!(
        "Build info: corral {} for {}-{}, {} build",
        version(),
        std::env::consts::ARCH,
        std::env::consts::OS,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// Release date shown by `show info` (HAProxy's Release_date).
pub const RELEASE_DATE: &str = "2026/11/23";

const fn version_marker() -> [u8; 48] {
    let prefix = b"CORRAL_VERSION=";
    // A package build may give its own version (packaging/build.sh VERSION=).
    let v = match option_env!("CORRAL_VERSION") {
        Some(v) => v.as_bytes(),
        None => env!("CARGO_PKG_VERSION").as_bytes(),
    };
    let mut out = [0u8; 48];
    let mut i = 0;
    while i < prefix.len() {
        out[i] = prefix[i];
        i += 1;
    }
    let mut j = 0;
    while j < v.len() && i + j < 47 {
        out[i + j] = v[j];
        j += 1;
    }
    out
}

/// The version as a marker in the binary's read-only data, read at run time:
/// a build with another version string is a different file on disk, which is
/// what a package upgrade replaces and a reload re-executes.
#[used]
static VERSION_MARKER: [u8; 48] = version_marker();

/// This binary's version (read from [`VERSION_MARKER`], never constant-folded).
pub fn version() -> &'static str {
    let m: &'static [u8; 48] = std::hint::black_box(&VERSION_MARKER);
    let v = &m[15..];
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    std::str::from_utf8(&v[..end]).unwrap_or("unknown")
}

/// What the command line asked of the master.
#[derive(Debug)]
pub struct Options {
    /// Where the configuration came from.
    pub config_path: PathBuf,
    /// Detach from the terminal (`-D`).
    pub daemon: bool,
    /// Where to write the master's pid (`-p`, else `[global] pidfile`).
    pub pidfile: Option<PathBuf>,
    /// Take over the instance behind this stats socket.
    pub takeover: Option<PathBuf>,
    /// The command line as given (re-used when re-executing).
    pub args: Vec<OsString>,
    /// The binary on disk (re-executed on reload).
    pub exe: PathBuf,
}

/// Sets the process log up (stderr, never blocking: see
/// `corral_worker::process_log`). Call once, first thing.
pub fn init_logging() {
    corral_worker::process_log::init();
}

/// Whether this process is a new image started by a reload's exec.
pub fn after_exec() -> bool {
    std::env::var_os(ENV).is_some()
}

/// Starts a fresh master (or a takeover) on `cfg`, parsed from `text`, and
/// runs it; returns the exit status.
pub fn run(cfg: Config, text: String, opts: Options) -> i32 {
    raise_fd_limit(&cfg);
    match start::fresh(&cfg, text, &opts) {
        Ok(s) => run_master(cfg, s, &opts),
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// Runs a new image after a reload's exec, from the record in
/// `CORRAL_HANDOFF`. It never exits for want of a usable config: see
/// `start.rs`.
pub fn run_after_exec(mut opts: Options) -> i32 {
    let record = std::env::var(ENV).unwrap_or_default();
    std::env::remove_var(ENV);
    let h = Handoff::decode(&record);
    if opts.config_path.as_os_str().is_empty() {
        if let Some(p) = &h.config_path {
            opts.config_path = PathBuf::from(p);
        }
    }
    let (cfg, start) = start::after_exec(h, &opts);
    raise_fd_limit(&cfg);
    run_master(cfg, start, &opts)
}

fn run_master(cfg: Config, start: Start, opts: &Options) -> i32 {
    let pidfile = opts.pidfile.clone().or_else(|| cfg.global.pidfile.clone());
    let cfg = Arc::new(cfg);
    let mut start = Some(start);
    let code = loop {
        match Master::new(cfg.clone(), start.take().expect("set")) {
            Ok(mut m) => break m.run(),
            Err(failed) => {
                let (e, back) = *failed;
                // Out of fds or memory for a poller: the workers keep
                // serving (their lifeline is this process); try again.
                log::error!("cannot start the master loop: {e}; retrying in 1 s");
                start = Some(back);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    if let Some(path) = &pidfile {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit: each connection needs
/// two sockets (and pipes while splicing). Warns when maxconn cannot fit.
fn raise_fd_limit(cfg: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let per_worker = (cfg.global.maxconn as u64).div_ceil(cfg.global.workers.max(1) as u64);
    let needed = per_worker * 2 + 64;
    if hard < needed {
        log::warn!(
            "the fd limit ({hard}) is below what maxconn {} needs per worker ({needed}): \
             accepts will pause when fds run out",
            cfg.global.maxconn
        );
    }
}

/// Detaches from the terminal: fork (the parent exits), new session, stdio to /dev/null.
pub(crate) fn daemonize() -> std::io::Result<()> {
    use nix::unistd::{fork, setsid, ForkResult};
    // SAFETY: called before any thread or worker exists.
    match unsafe { fork() }.map_err(std::io::Error::from)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(std::io::Error::from)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard fds, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    corral_worker::process_log::reopen();
    Ok(())
}
