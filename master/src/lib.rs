//! corral's control plane: the master process.
//!
//! The master binds every listener ([`bind`]), forks the workers and respawns
//! them ([`master`]), names processes for `ps` ([`proctitle`]) and drops
//! privileges in workers ([`privileges`]). It never touches a client byte.

pub mod bind;
pub mod master;
pub mod privileges;
pub mod proctitle;
pub mod shared;

use std::path::PathBuf;
use std::sync::Arc;

use corral_config::Config;

/// What the command line asked of the master.
#[derive(Debug)]
pub struct Options {
    /// Where the configuration came from.
    pub config_path: PathBuf,
    /// Detach from the terminal (`-D`).
    pub daemon: bool,
    /// Where to write the master's pid (`-p`, else `[global] pidfile`).
    pub pidfile: Option<PathBuf>,
}

/// Binds, forks the workers and runs the master loop; returns the exit status.
pub fn run(cfg: Config, opts: Options) -> i32 {
    raise_fd_limit(&cfg);
    let listeners = match bind::bind_all(&cfg) {
        Ok(l) => l,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    if opts.daemon {
        if let Err(e) = daemonize() {
            log::error!("cannot daemonize: {e}");
            return 1;
        }
    }
    let pidfile = opts.pidfile.clone().or_else(|| cfg.global.pidfile.clone());
    if let Some(path) = &pidfile {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            log::error!("cannot write pidfile {}: {e}", path.display());
            return 1;
        }
    }
    log::info!(
        "corral {} starting: {} worker(s), {} listener(s), config {}",
        env!("CARGO_PKG_VERSION"),
        cfg.global.workers,
        listeners.len(),
        opts.config_path.display()
    );
    let shared = match shared::SharedSegment::create(&cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot create the shared segment: {e}");
            return 1;
        }
    };
    let code = match master::Master::new(Arc::new(cfg), listeners, shared) {
        Ok(mut m) => m.run(),
        Err(e) => {
            log::error!("cannot start the master: {e}");
            1
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
fn daemonize() -> std::io::Result<()> {
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
    Ok(())
}
