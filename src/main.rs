//! The `corral` command: parse the command line, check or load the config,
//! hand over to the master. Everything else lives in the crates.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A HAProxy-class TCP load balancer: master + workers, splice forwarding.
#[derive(Parser, Debug)]
#[command(name = "corral", disable_version_flag = true)]
struct Cli {
    /// Configuration file (TOML); `-` reads it from standard input.
    #[arg(short = 'f', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and exit: 0 if valid, 1 with every error otherwise.
    #[arg(short = 'c')]
    check: bool,
    /// With -c: print nothing when the configuration is valid.
    #[arg(short = 'q')]
    quiet: bool,
    /// The file name errors are reported against (with `-f -`).
    #[arg(long = "config-label", value_name = "NAME", hide = true)]
    config_label: Option<String>,
    /// Run in the background (daemon).
    #[arg(short = 'D')]
    daemon: bool,
    /// Write the master's pid to this file.
    #[arg(short = 'p', value_name = "PIDFILE")]
    pidfile: Option<PathBuf>,
    /// Take the listeners over from a running instance through its stats socket.
    #[arg(long = "takeover", value_name = "SOCKET")]
    takeover: Option<PathBuf>,
    /// Ask the running instance to reload, through the stats socket the
    /// configuration names, and wait for the outcome: its answer is
    /// printed; exit 0 on `Success=1`, 1 otherwise (for `systemctl reload`).
    #[arg(long = "reload")]
    reload: bool,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    version: bool,
}

fn main() -> ExitCode {
    // Before anything can rewrite argv (process titles): a reload re-executes
    // the same command line.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&args[0]));
    let cli = if corral_master::after_exec() {
        // A reload's new image must not exit over its command line (a flag
        // a new version no longer takes: the check before the exec said so,
        // but the file may have changed since): keep going with the config
        // path alone.
        Cli::try_parse_from(&args).unwrap_or_else(|e| {
            eprintln!(
                "corral: after a reload, the command line is refused ({e}); going on with -f"
            );
            let f = args
                .iter()
                .position(|a| a == "-f")
                .and_then(|i| args.get(i + 1));
            Cli {
                config: f.map(PathBuf::from),
                check: false,
                quiet: false,
                config_label: None,
                daemon: false,
                pidfile: None,
                takeover: None,
                reload: false,
                version: false,
            }
        })
    } else {
        Cli::parse_from(&args)
    };
    if cli.version {
        println!("corral version {}", corral_master::version());
        println!("{}", corral_master::build_info());
        return ExitCode::SUCCESS;
    }
    corral_master::init_logging();
    let path = match cli.config {
        Some(p) => p,
        // After a reload the record names the file too.
        None if corral_master::after_exec() => PathBuf::new(),
        None => {
            eprintln!("corral: no configuration file given (use -f FILE)");
            return ExitCode::from(1);
        }
    };
    let opts = |path: PathBuf| corral_master::Options {
        config_path: path,
        daemon: cli.daemon,
        pidfile: cli.pidfile.clone(),
        takeover: cli.takeover.clone(),
        args: args.clone(),
        exe: exe.clone(),
    };
    if !cli.check && corral_master::after_exec() {
        // A reload's new image: the validated config comes with the handoff,
        // the file is not read again. This never exits for a bad config.
        let code = corral_master::run_after_exec(opts(path));
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    if path.as_os_str() == "-" && !cli.check {
        eprintln!("corral: -f - (standard input) only checks a configuration (with -c): a running instance reloads from a file");
        return ExitCode::from(1);
    }
    let label = cli
        .config_label
        .clone()
        .unwrap_or_else(|| path.display().to_string());
    let text = if path.as_os_str() == "-" {
        let mut t = String::new();
        std::io::stdin().read_to_string(&mut t).map(|_| t)
    } else {
        std::fs::read_to_string(&path)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{label}:0:0: cannot read the configuration: {e}");
            eprintln!("corral: 1 error(s) in {label}");
            return ExitCode::from(1);
        }
    };
    let cfg = match corral_config::parse(&text, &label) {
        Ok(cfg) => cfg,
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in errors.iter() {
                let _ = writeln!(err, "{e}");
            }
            let _ = writeln!(err, "corral: {} error(s) in {label}", errors.len());
            return ExitCode::from(1);
        }
    };
    if cli.check {
        if !cli.quiet {
            println!("Configuration file is valid");
        }
        return ExitCode::SUCCESS;
    }
    if cli.reload {
        let (ok, answer) = corral_master::reload_client(&cfg);
        print!("{answer}");
        return ExitCode::from(if ok { 0 } else { 1 });
    }
    let code = corral_master::run(cfg, text, opts(path));
    ExitCode::from(code.clamp(0, 255) as u8)
}
