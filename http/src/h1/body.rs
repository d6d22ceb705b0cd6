//! The body framing state machine: where a message's body ends, and which
//! of its bytes are payload.
//!
//! [`Body::step`] looks at the bytes received so far and says what the
//! next ones are: payload ([`Piece::Data`]), framing ([`Piece::Meta`]: chunk
//! size lines, the CRLF after a chunk, trailers), or the end of the message
//! ([`Piece::Done`]). The caller forwards a chunked body verbatim (payload
//! and framing) or only its payload (to an HTTP/1.0 peer), and never sends
//! a byte the machine has not accepted: a chunk-size line that does not
//! parse is refused before any of it leaves.
//!
//! Chunked grammar (RFC 9112 §7.1), strictly: `1*HEXDIG`, then
//! `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, then
//! CRLF (never a bare LF); the chunk's data is followed by CRLF; the last
//! chunk (size 0) is followed by trailer field lines and an empty line.

use super::chars::{is_field_byte, is_ows, is_tchar};
use super::Framing;

/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// What the next bytes of the input are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The next `n` bytes are payload.
    Data(usize),
    /// The next `n` bytes are framing (valid, consumed).
    Meta(usize),
    /// The message is complete: nothing more belongs to it.
    Done,
    /// Everything given was accounted for: more input is needed.
    NeedMore,
}

/// A body that does not follow its framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyError(pub &'static str);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// After the size digits.
    AfterSize,
    /// Whitespace seen where only `;` may follow.
    Bws,
    /// After `;`, before the name.
    NameBws,
    /// In the name.
    Name,
    /// Whitespace after the name: `=` or `;` next.
    AfterName,
    /// After `=`, before the value.
    ValueBws,
    /// In a token value.
    Value,
    /// In a quoted-string value.
    Quoted,
    /// After a backslash in a quoted-string.
    QuotedEscape,
    /// After the closing quote.
    AfterQuoted,
    /// After the line's CR.
    Lf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Payload bytes left of a length-delimited body.
    Length(u64),
    /// Reading a chunk-size line.
    Size {
        size: u64,
        digits: u32,
        ext: Ext,
        line: usize,
    },
    /// Payload bytes left of the current chunk.
    Data(u64),
    /// After a chunk's data: the CR.
    DataCr,
    /// After a chunk's data: the LF.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerLine { total: usize },
    /// In a trailer field name.
    TrailerName { total: usize },
    /// In a trailer field value.
    TrailerValue { total: usize },
    /// After a trailer line's CR.
    TrailerLf { total: usize },
    /// After the final empty line's CR.
    EndLf,
    /// Everything until the sender closes.
    UntilClose,
    /// Complete.
    Done,
}

/// The decoder of one message body.
#[derive(Clone, Debug)]
pub struct Body {
    state: State,
    /// Payload bytes seen so far.
    pub payload: u64,
}

impl Body {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> Body {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size {
                size: 0,
                digits: 0,
                ext: Ext::AfterSize,
                line: 0,
            },
            Framing::UntilClose => State::UntilClose,
        };
        Body { state, payload: 0 }
    }

    /// Whether the message is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body ends only when the sender closes.
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Whether the body is chunked and between chunks' framing (useful to
    /// know whether a chunked body can be cut cleanly: it cannot).
    pub fn is_chunked(&self) -> bool {
        !matches!(
            self.state,
            State::Length(_) | State::UntilClose | State::Done
        )
    }

    /// The sender closed: completes an until-close body; any other
    /// unfinished body was truncated.
    pub fn on_eof(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(BodyError("body truncated")),
        }
    }

    /// Payload bytes still expected by a length-delimited body (None for
    /// other framings).
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Payload bytes that can pass as they are right now, without the
    /// decoder seeing them: the rest of a length-delimited body, or the
    /// rest of the current chunk's data (`None` elsewhere: framing bytes
    /// come next, or the body ends with the close). What a splice may move.
    pub fn raw_data_left(&self) -> Option<u64> {
        match self.state {
            State::Length(n) | State::Data(n) => Some(n),
            _ => None,
        }
    }

    /// Records `n` payload bytes (at most [`Body::raw_data_left`]) that
    /// went past the decoder, spliced from socket to socket.
    pub fn skip_data(&mut self, n: u64) {
        let n = match self.state {
            State::Length(left) => {
                let n = n.min(left);
                self.state = if n == left {
                    State::Done
                } else {
                    State::Length(left - n)
                };
                n
            }
            State::Data(left) => {
                let n = n.min(left);
                self.state = if n == left {
                    State::DataCr
                } else {
                    State::Data(left - n)
                };
                n
            }
            _ => 0,
        };
        self.payload += n;
    }

    /// Says what the start of `input` is. Call again with the input advanced
    /// past the piece returned, until [`Piece::NeedMore`] or [`Piece::Done`].
    pub fn step(&mut self, input: &[u8]) -> Result<Piece, BodyError> {
        self.step_out(input, None)
    }

    /// Like [`Body::step`], and appends the piece to `out` in canonical
    /// form: payload as it is; a chunk-size line rewritten as
    /// `{size:x}CRLF` (leading zeros and extensions dropped), the CRLF after
    /// a chunk's data, the last chunk as `0CRLF`, trailer lines as received
    /// (validated), the final CRLF. A peer that parses chunk framing its
    /// own way then reads the same message corral did.
    pub fn step_into(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Piece, BodyError> {
        let p = self.step_out(input, Some(out))?;
        if let Piece::Data(n) = p {
            out.extend_from_slice(&input[..n]);
        }
        Ok(p)
    }

    fn step_out(&mut self, input: &[u8], out: Option<&mut Vec<u8>>) -> Result<Piece, BodyError> {
        match self.state {
            State::Done => Ok(Piece::Done),
            State::UntilClose => Ok(self.data(input.len() as u64, input)),
            State::Length(n) => {
                let p = self.data(n, input);
                if let Piece::Data(k) = p {
                    self.state = if k as u64 == n {
                        State::Done
                    } else {
                        State::Length(n - k as u64)
                    };
                }
                Ok(p)
            }
            State::Data(n) => {
                let p = self.data(n, input);
                if let Piece::Data(k) = p {
                    self.state = if k as u64 == n {
                        State::DataCr
                    } else {
                        State::Data(n - k as u64)
                    };
                }
                Ok(p)
            }
            _ => self.framing(input, out),
        }
    }

    fn data(&mut self, want: u64, input: &[u8]) -> Piece {
        let k = want.min(input.len() as u64) as usize;
        if k == 0 {
            return Piece::NeedMore;
        }
        self.payload += k as u64;
        Piece::Data(k)
    }

    /// Consumes framing bytes, one at a time, until data starts, the
    /// message ends, or the input runs out.
    fn framing(&mut self, input: &[u8], mut out: Option<&mut Vec<u8>>) -> Result<Piece, BodyError> {
        let mut used = 0;
        for &b in input {
            used += 1;
            let before = self.state;
            self.state = self.next(b)?;
            if let Some(out) = out.as_deref_mut() {
                canonical(before, self.state, b, out);
            }
            match self.state {
                State::Data(_) | State::Done => return Ok(Piece::Meta(used)),
                _ => {}
            }
        }
        Ok(if used == 0 {
            Piece::NeedMore
        } else {
            Piece::Meta(used)
        })
    }

    fn next(&self, b: u8) -> Result<State, BodyError> {
        Ok(match self.state {
            State::Size {
                size,
                digits,
                ext,
                line,
            } => {
                if line >= MAX_CHUNK_LINE {
                    return Err(BodyError("chunk-size line too long"));
                }
                let line = line + 1;
                let size_state = |size, digits, ext| State::Size {
                    size,
                    digits,
                    ext,
                    line,
                };
                if ext == Ext::AfterSize && b.is_ascii_hexdigit() {
                    let d = (b as char).to_digit(16).expect("hex") as u64;
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(d))
                        .ok_or(BodyError("chunk size too large"))?;
                    return Ok(size_state(size, digits + 1, Ext::AfterSize));
                }
                if digits == 0 {
                    return Err(BodyError("invalid chunk size"));
                }
                let ext = match (ext, b) {
                    (Ext::Lf, b'\n') => {
                        return Ok(if size == 0 {
                            State::TrailerLine { total: 0 }
                        } else {
                            State::Data(size)
                        })
                    }
                    (Ext::Lf, _) => return Err(BodyError("CR without LF in a chunk-size line")),
                    (_, b'\n') => return Err(BodyError("bare LF in a chunk-size line")),
                    (Ext::AfterSize | Ext::Name | Ext::Value | Ext::AfterQuoted, b'\r') => Ext::Lf,
                    (Ext::AfterSize | Ext::Bws | Ext::Value | Ext::AfterQuoted, b' ' | b'\t') => {
                        Ext::Bws
                    }
                    (
                        Ext::AfterSize
                        | Ext::Bws
                        | Ext::Name
                        | Ext::AfterName
                        | Ext::Value
                        | Ext::AfterQuoted,
                        b';',
                    ) => Ext::NameBws,
                    (Ext::NameBws, b) if is_ows(b) => Ext::NameBws,
                    (Ext::NameBws | Ext::Name, b) if is_tchar(b) => Ext::Name,
                    (Ext::Name | Ext::AfterName, b) if is_ows(b) => Ext::AfterName,
                    (Ext::Name | Ext::AfterName, b'=') => Ext::ValueBws,
                    (Ext::ValueBws, b) if is_ows(b) => Ext::ValueBws,
                    (Ext::ValueBws, b'"') => Ext::Quoted,
                    (Ext::ValueBws | Ext::Value, b) if is_tchar(b) => Ext::Value,
                    (Ext::Quoted, b'"') => Ext::AfterQuoted,
                    (Ext::Quoted, b'\\') => Ext::QuotedEscape,
                    (Ext::Quoted, b)
                        if b == b'\t' || b == b' ' || (0x21..0x7f).contains(&b) || b >= 0x80 =>
                    {
                        Ext::Quoted
                    }
                    (Ext::QuotedEscape, b)
                        if b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80 =>
                    {
                        Ext::Quoted
                    }
                    (Ext::AfterSize, _) => return Err(BodyError("invalid chunk size")),
                    _ => return Err(BodyError("invalid chunk extension")),
                };
                size_state(size, digits, ext)
            }
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(BodyError("chunk data not followed by CRLF")),
            },
            State::DataLf => match b {
                b'\n' => State::Size {
                    size: 0,
                    digits: 0,
                    ext: Ext::AfterSize,
                    line: 0,
                },
                _ => return Err(BodyError("chunk data not followed by CRLF")),
            },
            State::TrailerLine { total } => match b {
                b'\r' => State::EndLf,
                b if is_tchar(b) => State::TrailerName {
                    total: bump(total)?,
                },
                _ => return Err(BodyError("invalid trailer field")),
            },
            State::TrailerName { total } => match b {
                b':' => State::TrailerValue {
                    total: bump(total)?,
                },
                b if is_tchar(b) => State::TrailerName {
                    total: bump(total)?,
                },
                _ => return Err(BodyError("invalid trailer field name")),
            },
            State::TrailerValue { total } => match b {
                b'\r' => State::TrailerLf {
                    total: bump(total)?,
                },
                b if is_field_byte(b) => State::TrailerValue {
                    total: bump(total)?,
                },
                _ => return Err(BodyError("invalid byte in a trailer field")),
            },
            State::TrailerLf { total } => match b {
                b'\n' => State::TrailerLine {
                    total: bump(total)?,
                },
                _ => return Err(BodyError("CR without LF in the trailers")),
            },
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(BodyError("CR without LF after the trailers")),
            },
            State::Length(_) | State::Data(_) | State::UntilClose | State::Done => {
                unreachable!("payload states are not stepped byte by byte")
            }
        })
    }
}

fn bump(total: usize) -> Result<usize, BodyError> {
    if total >= MAX_TRAILERS {
        Err(BodyError("trailers too large"))
    } else {
        Ok(total + 1)
    }
}

/// What the transition `before` → `after` on byte `b` writes in canonical
/// chunk framing (see [`Body::step_into`]).
fn canonical(before: State, after: State, b: u8, out: &mut Vec<u8>) {
    match (before, after) {
        (State::Size { .. }, State::Data(size)) => {
            super::encode::push_hex(out, size);
            out.extend_from_slice(b"\r\n");
        }
        (State::Size { .. }, State::TrailerLine { .. }) => out.extend_from_slice(b"0\r\n"),
        (State::Size { .. }, _) | (State::DataCr, _) => {}
        (State::DataLf, _) => out.extend_from_slice(b"\r\n"),
        // Trailer lines and the final empty line, byte for byte.
        _ => out.push(b),
    }
}

/// Whether the message `body` is reading ends within `input` (the bytes
/// after those it accepted so far), without changing `body`. A body that
/// does not follow its framing does not end.
pub fn ends_within(body: &Body, input: &[u8]) -> bool {
    let mut b = body.clone();
    let mut at = 0;
    loop {
        match b.step(&input[at..]) {
            Ok(Piece::Data(n)) | Ok(Piece::Meta(n)) => at += n,
            Ok(Piece::Done) => return true,
            Ok(Piece::NeedMore) | Err(_) => return false,
        }
    }
}

/// Runs `body` over all of `input`: the payload bytes in order, the bytes
/// consumed, and whether the message ended (a test and fuzzing helper, and
/// the way the proxy checks the body bytes that came with a head).
pub fn scan(
    body: &mut Body,
    input: &[u8],
    payload: &mut Vec<u8>,
) -> Result<(usize, bool), BodyError> {
    let mut at = 0;
    loop {
        match body.step(&input[at..])? {
            Piece::Data(n) => {
                payload.extend_from_slice(&input[at..at + n]);
                at += n;
            }
            Piece::Meta(n) => at += n,
            Piece::Done => return Ok((at, true)),
            Piece::NeedMore => return Ok((at, false)),
        }
    }
}
