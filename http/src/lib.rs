//! corral's HTTP codecs.
//!
//! **Pure**: bytes in, parsed heads and body pieces out. Nothing here knows a
//! socket, a clock or the configuration file; the worker's loop drives the
//! codec and owns every buffer's I/O. That keeps the untrusted-input parser
//! small enough to fuzz (`fuzz/fuzz_targets/h1_*.rs`) and lets a TLS transport
//! slot in *under* it (the codec sees plaintext bytes whatever carried them),
//! and an HTTP/2 codec sit *beside* it ([`h1`] today, `h2` later), both
//! producing the same request and response heads for the stream layer.

pub mod caching;
pub mod h1;
