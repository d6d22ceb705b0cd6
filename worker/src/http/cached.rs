//! A stream and the backend's cache: hits answered without a server
//! (conditional ones with 304, `Age` added, `http-response` rules run),
//! misses stored while they stream to the client (see
//! [`corral_http::caching`] for what may be stored).

use corral_http::caching::{self, NOT_MODIFIED_FIELDS};
use corral_http::h1::encode::{self, HopByHop};
use corral_http::h1::{parse_response, Framing, Method, Parsed, Request, Response};
use corral_shm::cache::{key_hash, vary_key, Count, Cursor, StoreMeta};

use super::exchange::Sub;
use super::response::{response_rules, write_response_head, TX_HIGH};
use super::{flow_of, Relay, Stream};
use crate::cache::CacheUse;
use crate::client::Flow;
use crate::worker::Worker;

/// A hit whose body is at most this long is copied at once, under the
/// lookup's pin; a longer one is sent over turns, holding a reference.
const INLINE_BODY: u64 = 64 * 1024;

/// The primary key of a request to backend `backend`: backend, host
/// (lowercased), and the target's path and query.
pub(super) fn primary_key(backend: &str, req: &Request) -> Vec<u8> {
    let host = req.host().unwrap_or("").to_ascii_lowercase();
    let target = req.target();
    let local = if target.starts_with('/') {
        target
    } else {
        // Absolute form: what follows the authority.
        target
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("/")
    };
    let mut k = Vec::with_capacity(backend.len() + host.len() + local.len() + 2);
    k.extend_from_slice(backend.as_bytes());
    k.push(0);
    k.extend_from_slice(host.as_bytes());
    k.push(0);
    k.extend_from_slice(local.as_bytes());
    k
}

/// The response head as stored: status line and fields as the server sent
/// them, without the hop-by-hop and framing fields and `Age` (a hit gets
/// its own; the age the response came with is kept in the entry).
fn stored_head(resp: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    encode::status_line(
        &mut out,
        corral_http::h1::Version::Http11,
        resp.status,
        resp.reason(),
    );
    let hop = HopByHop::fixed(false);
    for (n, v) in resp.fields.iter() {
        if hop.strips(n) || encode::is_framing_field(n) || n.eq_ignore_ascii_case(b"age") {
            continue;
        }
        encode::field(&mut out, n, v);
    }
    encode::end_head(&mut out);
    out
}

/// The head a hit is answered with: the stored one with `Age`, or (when
/// `req` is conditional, the object a 2xx and its validators match) a 304
/// carrying them. `max_headers` is the configured field limit the stored
/// head was read within.
fn hit_head(
    stored: &[u8],
    req: &Request,
    max_headers: usize,
    body_len: u64,
    age: u64,
) -> Option<(Response, bool)> {
    let limits = corral_http::h1::Limits {
        max_head: stored.len() + 1024,
        max_headers: max_headers + 8,
    };
    let parse = |b: &[u8]| match parse_response(b, &limits, true) {
        Ok(Parsed::Complete(r, _)) => Some(r),
        _ => None,
    };
    let mut resp = parse(stored)?;
    // Preconditions apply to a 2xx only (RFC 9110 §13.2.1).
    let not_modified =
        (200..300).contains(&resp.status) && caching::not_modified(req, &resp.fields);
    if not_modified {
        let mut head = Vec::new();
        encode::status_line(
            &mut head,
            corral_http::h1::Version::Http11,
            304,
            "Not Modified",
        );
        for (n, v) in resp.fields.iter() {
            if NOT_MODIFIED_FIELDS
                .iter()
                .any(|f| n.eq_ignore_ascii_case(f.as_bytes()))
            {
                encode::field(&mut head, n, v);
            }
        }
        encode::end_head(&mut head);
        resp = parse(&head)?;
        resp.framing = Framing::None;
    } else {
        resp.framing = if resp.status == 204 {
            Framing::None
        } else {
            Framing::Length(body_len)
        };
    }
    resp.fields.set("Age", age.to_string().as_bytes());
    Some((resp, not_modified))
}

/// The head a hit is sent with.
enum HitHead {
    /// Parsed, for the rules or a 304.
    Parsed(Response),
    /// The stored bytes as they are (no rule to run, no precondition):
    /// `Age`, the length and the connection field are appended.
    Raw {
        head: Vec<u8>,
        status: u16,
        age: u64,
        body_len: u64,
    },
}

impl HitHead {
    fn status(&self) -> u16 {
        match self {
            HitHead::Parsed(r) => r.status,
            HitHead::Raw { status, .. } => *status,
        }
    }

    /// Writes the head for a client of `version`.
    fn write(&self, out: &mut Vec<u8>, close: bool, version: corral_http::h1::Version) {
        match self {
            HitHead::Parsed(r) => {
                write_response_head(out, r, close, Relay::Verbatim, version, false)
            }
            HitHead::Raw {
                head,
                status,
                age,
                body_len,
            } => {
                // The stored head without its final CRLF, then our fields.
                out.extend_from_slice(&head[..head.len().saturating_sub(2)]);
                encode::field(out, b"Age", age.to_string().as_bytes());
                if *status != 204 {
                    encode::framing_fields(out, Framing::Length(*body_len), &Default::default());
                }
                super::errors::connection_field(out, close, version);
                encode::end_head(out);
            }
        }
    }
}

impl Worker {
    /// Backend `be` was chosen for client `key`'s stream: a fresh stored
    /// answer is sent now (returns true); otherwise a storable request is
    /// marked so its response is stored.
    pub(super) fn http_cache_lookup(&mut self, key: usize, be: usize) -> bool {
        let Some(ci) = self.caches.of_backend(be) else {
            return false;
        };
        let c = &mut self.clients[key];
        let fe = c.frontend;
        let peer = c.peer;
        let Flow::Http(h) = &mut c.flow else {
            return false;
        };
        let Some(st) = h.stream.as_mut() else {
            return false;
        };
        let policy = caching::request_policy(&st.req);
        if !policy.lookup && !policy.store {
            return false;
        }
        let max_headers = self.cfg.global.http_limits.max_headers;
        let def = &self.cfg.caches[ci];
        let max_age_ms = def.max_age.as_millis() as u64;
        let primary = primary_key(&self.cfg.backends[be].name, &st.req);
        let hash = key_hash(&primary);
        let now = caching::now_ms();
        // A handle of our own: a `Found` borrows it while `self.caches`
        // records the reference.
        let cache = self.caches.get(ci).clone();
        // Without response rules or a precondition the stored head is sent
        // as it is (no parse).
        let raw = self.cfg.frontends[fe].ruleset.http_response.is_empty()
            && !st.req.fields.contains("if-none-match")
            && !st.req.fields.contains("if-modified-since");
        if policy.lookup {
            let guard = self.caches.seg().epoch().pin(self.caches.slot());
            let fields = &st.req.fields;
            let vary_of = |n: &[u8]| caching::vary_value(fields, &String::from_utf8_lossy(n));
            let mut answer = None;
            let found = cache
                .lookup(&guard, &primary, hash, &vary_of, now)
                // Fresh by today's `max_age` too (a reload may have lowered
                // it), and as fresh as the request asks.
                .filter(|f| {
                    f.stored_ms + max_age_ms.saturating_sub(f.age as u64 * 1000) > now
                        && policy.max_age.is_none_or(|m| f.age_at(now) <= m)
                        && policy
                            .min_fresh
                            .is_none_or(|m| f.expires_ms.saturating_sub(now) >= m * 1000)
                });
            if let Some(found) = found {
                let stored = cache.head(&found);
                let head_only = st.req.method == Method::Head;
                let hit = if raw && stored.ends_with(b"\r\n\r\n") {
                    Some((
                        HitHead::Raw {
                            head: stored,
                            status: found.status,
                            age: found.age_at(now),
                            body_len: found.body_len,
                        },
                        false,
                    ))
                } else {
                    hit_head(
                        &stored,
                        &st.req,
                        max_headers,
                        found.body_len,
                        found.age_at(now),
                    )
                    .map(|(r, n)| (HitHead::Parsed(r), n))
                };
                if let Some((resp, not_mod)) = hit {
                    cache.touch(&found, now);
                    let body_wanted = !head_only && !not_mod && resp.status() != 204;
                    let from = found.head_at() + found.head_len as u64;
                    let mut cur = cache.cursor(&found, from, found.end());
                    let mut body = Vec::new();
                    let mut held = None;
                    if body_wanted && found.body_len <= INLINE_BODY {
                        cache.read(&found, &mut cur, &mut body, usize::MAX);
                    } else if body_wanted {
                        held = Some((self.caches.hold(ci, found), cur));
                    }
                    answer = Some((resp, body, held));
                }
            }
            drop(guard);
            if let Some(a) = answer {
                return self.http_cache_answer(key, be, ci, a, peer, fe);
            }
        }
        if policy.lookup {
            // (A no-cache request looked nothing up: no lookup, no miss.)
            self.rows.cache_lookup(fe, be, false);
            self.caches.count(ci, Count::Lookups, 1);
        }
        if policy.only_if_cached {
            // RFC 9111 §5.2.1.7: not in the cache, not forwarded.
            self.http_local_error(key, 504, *b"--");
            return true;
        }
        if policy.store {
            let Flow::Http(h) = &mut self.clients[key].flow else {
                return false;
            };
            if let Some(st) = h.stream.as_mut() {
                let fields = Box::new(st.req.fields.clone());
                st.cache = Some(CacheUse::Candidate {
                    cache: ci,
                    primary,
                    hash,
                    fields,
                });
            }
        }
        false
    }

    /// Sends a hit: its head (rules run on it), then the body, at once or
    /// over turns.
    #[allow(clippy::type_complexity)]
    fn http_cache_answer(
        &mut self,
        key: usize,
        be: usize,
        ci: usize,
        answer: (HitHead, Vec<u8>, Option<((u32, u32), Cursor)>),
        peer: std::net::SocketAddr,
        fe: usize,
    ) -> bool {
        let (mut resp, body, held) = answer;
        let (entry, cursor) = (held.map(|h| h.0), held.map(|h| h.1));
        self.rows.cache_lookup(fe, be, true);
        self.caches.count(ci, Count::Lookups, 1);
        self.caches.count(ci, Count::Hits, 1);
        let c = &self.clients[key];
        let Flow::Http(h) = &c.flow else { return false };
        let Some(st) = h.stream.as_ref() else {
            return false;
        };
        if let HitHead::Parsed(resp) = &mut resp {
            response_rules(
                &self.cfg.frontends[fe].ruleset,
                peer,
                &st.req,
                &self.sticky,
                &c.sc,
                resp,
            );
        }
        let sent_bytes = body.len() as u64 + cursor.map_or(0, |c| c.left());
        self.caches.count(ci, Count::HitBytes, sent_bytes);
        let status = resp.status();
        if let Some(st) = flow_of(&mut self.clients, key).stream.as_mut() {
            st.from_cache = true;
        }
        self.http_local(key, status, *b"--", |out, req, close| {
            resp.write(out, close, req.version);
            out.extend_from_slice(&body);
        });
        let h = flow_of(&mut self.clients, key);
        match (h.stream.as_mut(), cursor, entry) {
            (Some(st), Some(cursor), Some(entry)) => {
                st.cache = Some(CacheUse::Sending {
                    cache: ci,
                    entry,
                    cursor,
                });
            }
            (_, _, Some(entry)) => self.caches.unhold(ci, entry),
            _ => {}
        }
        true
    }

    /// The final response head of a stream marked for storing: the store
    /// begins if the response may be stored.
    pub(super) fn http_cache_begin(&mut self, key: usize, resp: &Response) {
        let h = flow_of(&mut self.clients, key);
        let Some(st) = h.stream.as_mut() else { return };
        let Some(CacheUse::Candidate {
            cache,
            primary,
            hash,
            fields,
        }) = st.cache.take()
        else {
            return;
        };
        let def = &self.cfg.caches[cache];
        let now = caching::now_ms();
        let Ok(fresh) = caching::freshness(resp, now, def.max_age) else {
            return;
        };
        let Ok(names) = caching::vary_names(resp) else {
            return;
        };
        if !names.is_empty() && !def.process_vary {
            return;
        }
        if resp.framing == Framing::Chunked
            && resp
                .fields
                .list_items("transfer-encoding")
                .any(|t| !t.eq_ignore_ascii_case(b"chunked"))
        {
            // Another transfer coding: the payload is not what is sent.
            return;
        }
        // The values the lookup saw; a field the proxy changed since (e.g.
        // X-Forwarded-For) cannot key the object: the next lookup would
        // not see what the server did.
        if names
            .iter()
            .any(|n| caching::vary_value(&fields, n) != caching::vary_value(&st.req.fields, n))
        {
            return;
        }
        let vary: Vec<(Vec<u8>, Vec<u8>)> = names
            .iter()
            .map(|n| (n.clone().into_bytes(), caching::vary_value(&fields, n)))
            .collect();
        let vary = vary_key(&vary);
        let head = stored_head(resp);
        let body = match resp.framing {
            Framing::Length(n) => Some(n),
            Framing::None => Some(0),
            Framing::Chunked => None,
            // A close cannot be told from a server that died mid-body: such
            // a response is never stored.
            Framing::UntilClose => return,
        };
        let meta_len = (primary.len() + vary.len() + head.len()) as u64;
        if body.is_some_and(|b| b + meta_len > def.max_object_size) {
            // Streams through, not stored.
            return;
        }
        let store = self.caches.get(cache).begin_store(
            self.caches.slot(),
            &primary,
            hash,
            &vary,
            &head,
            body,
            def.max_object_size,
            StoreMeta {
                status: resp.status,
                stored_ms: now,
                expires_ms: fresh.expires_ms,
                age: fresh.age,
            },
        );
        if let Some(store) = store {
            st.cache = Some(CacheUse::Storing { cache, store });
        }
    }

    /// Sends the next part of a large hit's body.
    pub(super) fn http_cache_send(&mut self, key: usize) -> Sub {
        let h = flow_of(&mut self.clients, key);
        let Some(st) = h.stream.as_mut() else {
            return Sub::Still;
        };
        let Some(CacheUse::Sending {
            cache,
            entry,
            cursor,
        }) = st.cache.as_mut()
        else {
            return Sub::Still;
        };
        if h.tx.len() >= TX_HIGH {
            return Sub::Still;
        }
        let room = TX_HIGH - h.tx.len();
        let n = self.caches.read(*cache, *entry, cursor, h.tx.tail(), room);
        st.bytes_out += n as u64;
        if cursor.left() == 0 || n == 0 {
            let (cache, entry) = (*cache, *entry);
            st.cache = None;
            self.caches.unhold(cache, entry);
        }
        Sub::Moved
    }

    /// Ends stream `st`'s use of the cache: a store is published if the
    /// response was whole, else abandoned; a reference is dropped.
    pub(super) fn http_cache_settle(&mut self, st: &mut Stream, complete: bool) {
        if let Some(u) = st.cache.take() {
            let whole = complete && st.resp_started && st.resp_body.is_done();
            self.caches.settle(u, whole);
        }
    }
}

/// Adds response body payload bytes to the stream's store, if it has one;
/// a store that cannot take them (too large, no room) is given up.
pub(super) fn store_body(caches: &mut crate::cache::Caches, st: &mut Stream, bytes: &[u8]) {
    if let Some(CacheUse::Storing { cache, store }) = st.cache.as_mut() {
        let cache = *cache;
        if !caches.get(cache).append(caches.slot(), store, bytes) {
            if let Some(u) = st.cache.take() {
                caches.settle(u, false);
            }
        }
    }
}
