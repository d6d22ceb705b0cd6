//! The `corral` command: parse the command line, check or load the config,
//! hand over to the master. Everything else lives in the crates.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A HAProxy-class TCP load balancer: master + workers, splice forwarding.
#[derive(Parser, Debug)]
#[command(name = "corral", disable_version_flag = true)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(short = 'f', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and exit: 0 if valid, 1 with every error otherwise.
    #[arg(short = 'c')]
    check: bool,
    /// Run in the background (daemon).
    #[arg(short = 'D')]
    daemon: bool,
    /// Write the master's pid to this file.
    #[arg(short = 'p', value_name = "PIDFILE")]
    pidfile: Option<PathBuf>,
    /// Take the listeners over from a running instance through its stats socket.
    #[arg(long = "takeover", value_name = "SOCKET")]
    takeover: Option<PathBuf>,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    version: bool,
}

fn main() -> ExitCode {
    // Before anything can rewrite argv (process titles): a reload re-executes
    // the same command line.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&args[0]));
    let cli = Cli::parse_from(&args);
    if cli.version {
        println!("corral version {}", corral_master::version());
        return ExitCode::SUCCESS;
    }
    init_logging();
    let Some(path) = cli.config else {
        eprintln!("corral: no configuration file given (use -f FILE)");
        return ExitCode::from(1);
    };
    let cfg = match corral_config::load(&path) {
        Ok(cfg) => cfg,
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in errors.iter() {
                let _ = writeln!(err, "{e}");
            }
            let _ = writeln!(
                err,
                "corral: {} error(s) in {}",
                errors.len(),
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    if cli.check {
        println!("Configuration file is valid");
        return ExitCode::SUCCESS;
    }
    let code = corral_master::run(
        cfg,
        corral_master::Options {
            config_path: path,
            daemon: cli.daemon,
            pidfile: cli.pidfile,
            takeover: cli.takeover,
            args,
            exe,
        },
    );
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Process events go to stderr as `[LEVEL] (pid) message`; `CORRAL_LOG`
/// sets the level (default info).
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("CORRAL_LOG", "info"))
        .format(|buf, record| {
            writeln!(
                buf,
                "[{}] ({}) {}",
                record.level(),
                std::process::id(),
                record.args()
            )
        })
        .init();
}
