//! The messages of a connection handoff, as bytes: pure, bounded, and
//! checked field by field (a receiver never trusts a length it read).
//!
//! * A **batch** (`B`): an id and one record per fd sent with it, in the
//!   order of the fds.
//! * An **ack** (`A`): the batch id and, per record, whether the receiver
//!   took the connection.
//! * A **channel** message from the master (`I` inbox, `O` outbox), with
//!   one fd: the generation it belongs to.
//! * A **query** from the master (`Q`): what only a worker knows (`show
//!   sess`, `show errors`), with an id and an argument; the worker answers
//!   with **replies** (`R`): the id, whether it is the last, and text.
//!
//! Integers are little-endian; strings and byte strings are prefixed with
//! their length (u16 for names and keys, u32 for buffered bytes).

/// Version byte after the kind: a receiver refuses a batch it cannot read
/// (it acks every record of it as not taken, from [`batch_header`]; the
/// sender then keeps the connections). The ack's layout and a batch's
/// first 12 bytes (kind, version, id, count) never change, so workers of
/// two builds always understand each other that far.
pub const VERSION: u8 = 1;

/// A batch's id and record count, read from its fixed first bytes whatever
/// its version: what a receiver needs to refuse a batch it cannot decode.
pub fn batch_header(b: &[u8]) -> Option<(u64, u16)> {
    if b.len() < 12 || b[0] != b'B' {
        return None;
    }
    let id = u64::from_le_bytes(b[2..10].try_into().ok()?);
    let n = u16::from_le_bytes(b[10..12].try_into().ok()?);
    Some((id, n))
}

/// A stick counter tracked by a connection, travelling with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedKey {
    /// sc0, sc1 or sc2.
    pub slot: u8,
    /// The table's name (looked up in the receiver's config).
    pub table: String,
    /// The entry's key.
    pub key: Vec<u8>,
}

/// One idle client connection's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnRecord {
    /// The frontend's name.
    pub frontend: String,
    /// Requests served on the connection so far.
    pub requests: u32,
    /// How long it has been idle, ms (its keep-alive deadline goes on).
    pub idle_ms: u32,
    /// How long ago the current head's first byte came, ms, if one did.
    pub head_ms: Option<u32>,
    /// How long ago it was accepted, ms.
    pub age_ms: u64,
    /// When it was accepted, ms since the Unix epoch (for the log).
    pub accepted_wall_ms: u64,
    /// Bytes read from the client and not handled yet (a partial head,
    /// pipelined requests).
    pub rx: Vec<u8>,
    /// Tracked stick counters.
    pub tracked: Vec<TrackedKey>,
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Connections, one per fd.
    Batch { id: u64, conns: Vec<ConnRecord> },
    /// Which connections of batch `id` the receiver took.
    Ack { id: u64, taken: Vec<bool> },
    /// From the master: the fd is where connections come from.
    Inbox { generation: u32 },
    /// From the master: the fd is where to send connections.
    Outbox { generation: u32 },
    /// From the master: answer query `what` (see `crate::query`).
    Query { id: u32, what: u8, arg: String },
    /// To the master: part of the answer to query `id`.
    Reply { id: u32, last: bool, text: Vec<u8> },
}

/// Why bytes are not a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return Err(Malformed("truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes16(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, Malformed> {
        String::from_utf8(self.bytes16()?.to_vec()).map_err(|_| Malformed("a name is not UTF-8"))
    }
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

/// The encoded size of `r` in a batch.
pub fn record_len(r: &ConnRecord) -> usize {
    2 + r.frontend.len()
        + 4
        + 4
        + 5
        + 8
        + 8
        + 4
        + r.rx.len()
        + 1
        + r.tracked
            .iter()
            .map(|t| 1 + 2 + t.table.len() + 2 + t.key.len())
            .sum::<usize>()
}

/// Bytes of a batch besides its records.
pub const BATCH_OVERHEAD: usize = 1 + 1 + 8 + 2;

/// Encodes a batch.
pub fn batch(id: u64, conns: &[ConnRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_OVERHEAD + conns.iter().map(record_len).sum::<usize>());
    out.extend_from_slice(&[b'B', VERSION]);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(conns.len() as u16).to_le_bytes());
    for r in conns {
        put_bytes16(&mut out, r.frontend.as_bytes());
        out.extend_from_slice(&r.requests.to_le_bytes());
        out.extend_from_slice(&r.idle_ms.to_le_bytes());
        match r.head_ms {
            Some(ms) => {
                out.push(1);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            None => out.extend_from_slice(&[0; 5]),
        }
        out.extend_from_slice(&r.age_ms.to_le_bytes());
        out.extend_from_slice(&r.accepted_wall_ms.to_le_bytes());
        out.extend_from_slice(&(r.rx.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.rx);
        out.push(r.tracked.len().min(3) as u8);
        for t in r.tracked.iter().take(3) {
            out.push(t.slot);
            put_bytes16(&mut out, t.table.as_bytes());
            put_bytes16(&mut out, &t.key);
        }
    }
    out
}

/// Encodes an ack.
pub fn ack(id: u64, taken: &[bool]) -> Vec<u8> {
    let mut out = vec![b'A', VERSION];
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(taken.len() as u16).to_le_bytes());
    out.extend(taken.iter().map(|&t| u8::from(t)));
    out
}

/// Encodes a channel message from the master.
pub fn channel(inbox: bool, generation: u32) -> Vec<u8> {
    let mut out = vec![if inbox { b'I' } else { b'O' }, VERSION];
    out.extend_from_slice(&generation.to_le_bytes());
    out
}

/// Encodes a query from the master.
pub fn query(id: u32, what: u8, arg: &str) -> Vec<u8> {
    let mut out = vec![b'Q', VERSION];
    out.extend_from_slice(&id.to_le_bytes());
    out.push(what);
    let arg = &arg.as_bytes()[..arg.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(arg.len() as u16).to_le_bytes());
    out.extend_from_slice(arg);
    out
}

/// Encodes a reply to the master (`text` at most 4 GiB).
pub fn reply(id: u32, last: bool, text: &[u8]) -> Vec<u8> {
    let mut out = vec![b'R', VERSION];
    out.extend_from_slice(&id.to_le_bytes());
    out.push(u8::from(last));
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text);
    out
}

/// Decodes a message (all of `b`: trailing bytes are an error).
pub fn decode(b: &[u8]) -> Result<Message, Malformed> {
    let mut r = Reader { b };
    let kind = r.u8()?;
    // An ack reads the same in every version (see [`VERSION`]).
    if r.u8()? != VERSION && kind != b'A' {
        return Err(Malformed("unknown version"));
    }
    let m = match kind {
        b'B' => {
            let id = r.u64()?;
            let n = r.u16()? as usize;
            let mut conns = Vec::with_capacity(n.min(256));
            for _ in 0..n {
                let frontend = r.string()?;
                let requests = r.u32()?;
                let idle_ms = r.u32()?;
                let has_head = r.u8()?;
                let head = r.u32()?;
                if has_head > 1 || (has_head == 0 && head != 0) {
                    return Err(Malformed("a bad head timer"));
                }
                let age_ms = r.u64()?;
                let accepted_wall_ms = r.u64()?;
                let len = r.u32()? as usize;
                let rx = r.take(len)?.to_vec();
                let nt = r.u8()?;
                if nt > 3 {
                    return Err(Malformed("more than 3 stick counters"));
                }
                let mut tracked = Vec::new();
                for _ in 0..nt {
                    let slot = r.u8()?;
                    if slot > 2 {
                        return Err(Malformed("a stick counter slot over 2"));
                    }
                    let table = r.string()?;
                    let key = r.bytes16()?.to_vec();
                    tracked.push(TrackedKey { slot, table, key });
                }
                conns.push(ConnRecord {
                    frontend,
                    requests,
                    idle_ms,
                    head_ms: (has_head != 0).then_some(head),
                    age_ms,
                    accepted_wall_ms,
                    rx,
                    tracked,
                });
            }
            Message::Batch { id, conns }
        }
        b'A' => {
            let id = r.u64()?;
            let n = r.u16()? as usize;
            let taken = r.take(n)?.iter().map(|&b| b != 0).collect();
            Message::Ack { id, taken }
        }
        b'I' => Message::Inbox {
            generation: r.u32()?,
        },
        b'O' => Message::Outbox {
            generation: r.u32()?,
        },
        b'Q' => {
            let id = r.u32()?;
            let what = r.u8()?;
            let arg = String::from_utf8(r.bytes16()?.to_vec())
                .map_err(|_| Malformed("a query argument not in UTF-8"))?;
            Message::Query { id, what, arg }
        }
        b'R' => {
            let id = r.u32()?;
            let last = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(Malformed("a bad last flag")),
            };
            let len = r.u32()? as usize;
            let text = r.take(len)?.to_vec();
            Message::Reply { id, last, text }
        }
        _ => return Err(Malformed("unknown message kind")),
    };
    if !r.b.is_empty() {
        return Err(Malformed("trailing bytes"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_replies_round_trip() {
        let q = query(7, 2, "web request");
        assert_eq!(
            decode(&q),
            Ok(Message::Query {
                id: 7,
                what: 2,
                arg: "web request".into()
            })
        );
        let r = reply(7, true, b"line\n");
        assert_eq!(
            decode(&r),
            Ok(Message::Reply {
                id: 7,
                last: true,
                text: b"line\n".to_vec()
            })
        );
        assert!(decode(&r[..r.len() - 1]).is_err(), "a cut reply");
        let mut bad = r.clone();
        bad[6] = 2;
        assert!(decode(&bad).is_err(), "a bad flag");
    }

    fn rec(i: u32) -> ConnRecord {
        ConnRecord {
            frontend: format!("web{i}"),
            requests: i,
            idle_ms: 1000 + i,
            head_ms: i.is_multiple_of(2).then_some(7),
            age_ms: 123_456,
            accepted_wall_ms: 1_700_000_000_000,
            rx: b"GET / HTTP/1.1\r\nHo".to_vec(),
            tracked: vec![TrackedKey {
                slot: 0,
                table: "per_ip".into(),
                key: vec![127, 0, 0, 1],
            }],
        }
    }

    #[test]
    fn every_message_round_trips() {
        let conns: Vec<_> = (0..5).map(rec).collect();
        let b = batch(42, &conns);
        assert_eq!(
            b.len(),
            BATCH_OVERHEAD + conns.iter().map(record_len).sum::<usize>()
        );
        assert_eq!(decode(&b), Ok(Message::Batch { id: 42, conns }));
        let a = ack(42, &[true, false, true]);
        assert_eq!(
            decode(&a),
            Ok(Message::Ack {
                id: 42,
                taken: vec![true, false, true]
            })
        );
        assert_eq!(
            decode(&channel(true, 7)),
            Ok(Message::Inbox { generation: 7 })
        );
        assert_eq!(
            decode(&channel(false, 8)),
            Ok(Message::Outbox { generation: 8 })
        );
    }

    #[test]
    fn cut_or_padded_messages_are_refused() {
        let b = batch(1, &[rec(1), rec(2)]);
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "cut at {n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        let mut other = b;
        other[1] = VERSION + 1;
        assert_eq!(decode(&other), Err(Malformed("unknown version")));
        // Still refusable: its id and count are where they always are.
        assert_eq!(batch_header(&other), Some((1, 2)));
        // An ack of any version reads.
        let mut a = ack(9, &[true]);
        a[1] = VERSION + 1;
        assert_eq!(
            decode(&a),
            Ok(Message::Ack {
                id: 9,
                taken: vec![true]
            })
        );
    }
}
