//! HTTP/1.1 (RFC 9112), strictly.
//!
//! * [`request`] and [`response`] parse a head: httparse does the tokenising,
//!   then the checks httparse does not make (CRLF-only line endings, the
//!   request-target's alphabet, field value bytes, Content-Length and
//!   Transfer-Encoding rules, Host) decide whether the message is framed
//!   unambiguously. Whatever the grammar does not allow is refused with the
//!   status a proxy owes the sender ([`Reject`]): nothing is guessed.
//! * [`body`] is the framing state machine (length, chunked, until close),
//!   which validates chunk-size lines and trailers as they stream through.
//! * [`encode`] writes heads back out.
//!
//! The parsed heads ([`Request`], [`Response`]) own a copy of the head bytes
//! and index into it ([`Fields`]), so a head costs two allocations however
//! many fields it has, and rules can edit fields without re-parsing.

pub mod body;
mod chars;
pub mod encode;
pub mod fields;
pub mod locate;
pub mod request;
pub mod response;
mod semantics;

#[cfg(test)]
mod tests;

pub use body::{Body, BodyError, Piece};
pub use fields::Fields;
pub use request::{parse_request, Method, Request};
pub use response::{parse_response, Response};

/// Header slots kept on the stack for httparse: the default limit
/// (`http_max_headers`, 101) fits, so a parse costs no allocation for them.
pub(crate) const STACK_HEADERS: usize = 128;

/// `max` slots for httparse to fill: in `stack` when they fit, else in
/// `heap` (made here).
pub(crate) fn header_slots<'s, 'h>(
    stack: &'s mut [httparse::Header<'h>; STACK_HEADERS],
    heap: &'s mut Vec<httparse::Header<'h>>,
    max: usize,
) -> &'s mut [httparse::Header<'h>] {
    if max <= STACK_HEADERS {
        &mut stack[..max]
    } else {
        *heap = vec![httparse::EMPTY_HEADER; max];
        heap
    }
}

/// Limits on a head, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (start line, fields and the empty line) accepted, in
    /// bytes: a request line longer than this is a 414, a head a 431 (like
    /// HAProxy's `tune.bufsize`, 16 KiB by default).
    pub max_head: usize,
    /// Most header fields accepted in one head (HAProxy's
    /// `tune.http.maxhdr`, 101 by default).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: 101,
        }
    }
}

/// HTTP version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// HTTP/1.0: close by default, no chunked encoding.
    Http10,
    /// HTTP/1.1: keep-alive by default.
    Http11,
}

impl Version {
    /// The version as written on a start line.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How a message body is delimited (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// A message that must not be forwarded, and the status to answer with
/// (400, 414, 431 or 501 for a request; 502 for a response, as a proxy
/// answers its client for a bad response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    /// The HTTP status owed to the sender (or to the client, for a response).
    pub status: u16,
    /// What was wrong, for the log and the tests.
    pub reason: &'static str,
}

impl Reject {
    pub(crate) const fn bad(reason: &'static str) -> Reject {
        Reject {
            status: 400,
            reason,
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.status, self.reason)
    }
}

/// A parse that needs more bytes, or a complete head and its length.
#[derive(Debug)]
pub enum Parsed<T> {
    /// The head is not complete yet (and nothing wrong was seen so far).
    Partial,
    /// A complete head, and how many bytes of the input it took.
    Complete(T, usize),
}

/// What the `Connection` header (and the version) say about the connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// `close` was listed.
    pub close: bool,
    /// `keep-alive` was listed.
    pub keep_alive: bool,
    /// `upgrade` was listed.
    pub upgrade: bool,
}
