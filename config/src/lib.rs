//! corral's configuration language: TOML for structure, HAProxy directive
//! lines for rules (see `shared/CONFIG.md`).
//!
//! [`parse`] turns a file's text into a validated [`Config`] or into **every**
//! error it holds, each with file:line:column and what was expected, so an
//! operator fixes a broken config in one pass. This crate is pure: no sockets,
//! no processes; the only I/O is [`load`] reading the file (and resolving
//! server host names, once, at parse time).

mod addr;
mod backend;
mod cache;
mod diag;
mod document;
mod error;
mod frontend;
mod global;
mod model;
mod position;
mod proxy;
mod rules;
mod server;
mod stats;
mod table;
mod units;
mod walk;

pub use document::{load, parse, parse_with, Support};
pub use error::{ConfigError, Errors};
pub use model::*;
