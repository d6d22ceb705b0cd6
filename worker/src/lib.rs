//! corral's data plane: the worker process.
//!
//! A worker is one single-threaded mio loop ([`worker`]) that accepts on the
//! listeners inherited from the master ([`listeners`]). Each accepted socket
//! is a [`client`] connection served by a flow: [`tcp`] (a [`tunnel`] to one
//! server, with splice: [`forward`], [`splice`]) or [`http`] (a sequence of
//! streams over the pure codec of `corral_http`). Server connections are
//! entries of their own ([`server_conn`]), reached through an [`attempt`]
//! (balancing: [`balance`]; retries and queueing). One log line per
//! connection or request ([`access_log`]); counters in the segment
//! ([`rows`]). It never parses TOML (it gets a validated
//! [`corral_config::Config`]) and never forks.

pub mod access_log;
pub mod attempt;
pub mod balance;
pub mod bufio;
pub mod cache;
pub mod client;
pub mod counters;
pub mod forward;
pub mod handoff;
pub mod health;
pub mod http;
pub mod lifeline;
pub mod listeners;
pub mod log_sink;
pub mod nap;
pub mod process_log;
pub mod query;
pub mod rows;
pub mod rules;
pub mod server_conn;
pub mod server_pool;
pub mod splice;
pub mod stick;
pub mod tally;
pub mod tcp;
pub mod timers;
pub mod tunnel;
pub mod worker;

pub use worker::{Worker, WorkerSetup};

/// Runs a worker until it is stopped; returns the process exit status.
pub fn run(setup: WorkerSetup) -> i32 {
    let id = setup.id;
    match Worker::new(setup) {
        Ok(mut w) => {
            // Listeners are registered: tell the master this worker accepts.
            w.tell_master(lifeline::Message::Ready);
            w.run()
        }
        Err(e) => {
            log::error!("worker {id}: cannot start: {e}");
            1
        }
    }
}
