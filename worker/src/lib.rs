//! corral's data plane: the worker process.
//!
//! A worker is one single-threaded mio loop ([`worker`]) that accepts on the
//! listeners inherited from the master ([`listeners`]), picks a server
//! ([`balance`]), connects with retries and queueing ([`dispatch`]), and
//! forwards bytes both ways with splice(2) ([`forward`], [`splice`]), logging
//! one line per connection ([`access_log`]). It never parses TOML (it gets a
//! validated [`corral_config::Config`]) and never forks.

pub mod access_log;
pub mod balance;
pub mod counters;
mod dispatch;
pub mod forward;
pub mod health;
pub mod lifeline;
pub mod listeners;
pub mod log_sink;
pub mod process_log;
pub mod rules;
pub mod session;
pub mod splice;
pub mod stick;
pub mod timers;
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
