//! The shared HTTP cache (`[cache.NAME]`, backend `cache`): hits served by
//! any worker, what is and is not stored, Vary, conditional requests, Age,
//! HEAD, oversize objects, expiry, reloads, `show cache` / `clear cache`,
//! the counters, a worker killed mid-store, and a stress of constant
//! eviction under readers.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::cli::{cli, reload_ok};
use common::http::*;
use common::Corral;

/// An origin whose path picks the caching headers; it counts requests per
/// path. Bodies are `pattern(path, len)`, so any client can check them.
struct CacheOrigin {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, u64>>>,
    stop: Arc<AtomicBool>,
    total: Arc<AtomicU64>,
}

/// A body that depends on `path` and `len` only.
fn pattern(path: &str, len: usize) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (0..len)
        .map(|i| {
            let x = h
                .wrapping_add(i as u64 / 7)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (x >> 56) as u8
        })
        .collect()
}

fn query(path: &str, key: &str) -> Option<usize> {
    path.split_once('?')?
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<String>> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            buf.drain(..i + 4);
            return Ok(Some(head));
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

impl CacheOrigin {
    fn start() -> CacheOrigin {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let o = CacheOrigin {
            addr: l.local_addr().unwrap(),
            hits: Default::default(),
            stop: Default::default(),
            total: Default::default(),
        };
        let (hits, stop, total) = (o.hits.clone(), o.stop.clone(), o.total.clone());
        thread::spawn(move || {
            for s in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(s) = s else { continue };
                let (hits, total) = (hits.clone(), total.clone());
                thread::spawn(move || {
                    let _ = serve(s, &hits, &total);
                });
            }
        });
        o
    }

    fn count(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for CacheOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    mut s: TcpStream,
    hits: &Mutex<HashMap<String, u64>>,
    total: &AtomicU64,
) -> io::Result<()> {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf)? {
        let line = head.lines().next().unwrap_or("").to_string();
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        total.fetch_add(1, Ordering::Relaxed);
        let route = path.split('?').next().unwrap_or("").to_string();
        let len = query(&path, "len").unwrap_or(100);
        let mut extra: Vec<(String, String)> = Vec::new();
        let mut body = pattern(&path, len);
        let mut status = 200;
        let mut chunked = false;
        let mut slow = false;
        match route.as_str() {
            "/static" | "/big" => extra.push(("Cache-Control".into(), "max-age=60".into())),
            "/slow" => {
                extra.push(("Cache-Control".into(), "max-age=60".into()));
                slow = true;
            }
            "/chunked" => {
                extra.push(("Cache-Control".into(), "max-age=60".into()));
                chunked = true;
            }
            "/nostore" => extra.push(("Cache-Control".into(), "no-store".into())),
            "/private" => extra.push(("Cache-Control".into(), "private, max-age=60".into())),
            "/cookie" => {
                extra.push(("Cache-Control".into(), "max-age=60".into()));
                extra.push(("Set-Cookie".into(), "session=1".into()));
            }
            "/none" => {}
            "/etag" => {
                extra.push(("ETag".into(), "\"v1\"".into()));
                extra.push((
                    "Last-Modified".into(),
                    "Tue, 14 Nov 2023 22:13:20 GMT".into(),
                ));
                extra.push(("Cache-Control".into(), "max-age=60".into()));
            }
            "/vary" => {
                extra.push(("Cache-Control".into(), "max-age=60".into()));
                extra.push(("Vary".into(), "Accept-Encoding".into()));
                let gz = header(&head, "accept-encoding").is_some_and(|v| v.contains("gzip"));
                if gz {
                    extra.push(("Content-Encoding".into(), "gzip".into()));
                    body = b"GZIP-BYTES".to_vec();
                } else {
                    body = b"identity bytes".to_vec();
                }
            }
            "/404" => {
                status = 404;
                extra.push(("Cache-Control".into(), "max-age=60".into()));
                extra.push(("ETag".into(), "\"n\"".into()));
            }
            "/close" => {
                // Close-delimited: no length, the body ends with the close.
                let mut out =
                    b"HTTP/1.1 200 X\r\nCache-Control: max-age=60\r\nConnection: close\r\n\r\n"
                        .to_vec();
                out.extend_from_slice(&pattern(&path, 50));
                s.write_all(&out)?;
                return Ok(());
            }
            _ => status = 500,
        }
        let mut out = format!("HTTP/1.1 {status} X\r\n");
        if chunked {
            out.push_str("Transfer-Encoding: chunked\r\n");
        } else {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (n, v) in &extra {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        s.write_all(out.as_bytes())?;
        if method == "HEAD" {
            continue;
        }
        if chunked {
            // Mixed chunk sizes.
            let mut at = 0;
            let mut k = 0;
            while at < body.len() {
                let n = [10, 70_000, 3, 1000][k % 4].min(body.len() - at);
                s.write_all(format!("{n:x}\r\n").as_bytes())?;
                s.write_all(&body[at..at + n])?;
                s.write_all(b"\r\n")?;
                at += n;
                k += 1;
            }
            s.write_all(b"0\r\n\r\n")?;
        } else if slow {
            for c in body.chunks(16 * 1024) {
                s.write_all(c)?;
                thread::sleep(Duration::from_millis(100));
            }
        } else {
            s.write_all(&body)?;
        }
    }
    Ok(())
}

fn start(o: &CacheOrigin, workers: usize, cache: &str) -> (Corral, std::path::PathBuf) {
    let backends = format!(
        "[cache.static]\n{cache}\n\n[backend.app]\ncache = \"static\"\nserver.s0 = {{ addr = \"{}\" }}\n",
        o.addr
    );
    HttpSetup {
        workers,
        backends: Some(&backends),
        timeouts: r#"{ connect = "2s", client = "20s", server = "20s" }"#,
        ..Default::default()
    }
    .start()
}

const CACHE: &str =
    "total_max_size = \"4MiB\"\nmax_object_size = \"1MiB\"\nmax_age = \"60s\"\nprocess_vary = true";

fn get(addr: SocketAddr, path: &str, extra: &str) -> Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n");
    request(addr, raw.as_bytes()).expect("a response")
}

#[test]
fn a_miss_then_hits_from_both_workers_reach_the_origin_once() {
    let o = CacheOrigin::start();
    let (c, sock) = start(&o, 2, CACHE);
    let want = pattern("/static?len=3000", 3000);
    let mut owners = std::collections::HashSet::new();
    for i in 0..10 {
        // New connections: both workers take some (each reports its pid).
        let mut cl = Client::connect(c.addr());
        if let Some(pid) = c.owner_of(&cl.r.s) {
            owners.insert(pid);
        }
        let r = cl.get("/static?len=3000");
        assert_eq!(r.status, 200);
        assert!(r.body == want, "request {i}: body differs");
        if i > 0 {
            assert!(r.head.get("age").is_some(), "a hit says its Age");
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(o.count("/static?len=3000"), 1, "one origin request for 10");
    assert!(owners.len() >= 2, "both workers answered: {owners:?}");
    let stat = cli(&sock, "show stat");
    let be = stat_row(&stat, "app", "BACKEND");
    assert_eq!(be["cache_lookups"], "10");
    assert_eq!(be["cache_hits"], "9");
    let fe = stat_row(&stat, "web", "FRONTEND");
    assert_eq!(fe["cache_hits"], "9");
    let show = cli(&sock, "show cache");
    assert!(show.contains(": static (shctx:"), "{show}");
    assert!(
        show.contains("entries:1 lookups:10 hits:9 misses:1 stores:1"),
        "{show}"
    );
    assert!(show.contains("key:app test /static?len=3000"), "{show}");
    assert!(
        cli(&sock, "check cache static").contains("consistent"),
        "cache check"
    );
    let log = c.log_text();
    assert!(
        log.contains("app/<CACHE>"),
        "hits are logged as <CACHE>:\n{log}"
    );
}

#[test]
fn what_must_not_be_stored_is_not() {
    let o = CacheOrigin::start();
    let (c, sock) = start(&o, 1, CACHE);
    for (path, extra) in [
        ("/nostore", ""),
        ("/private", ""),
        ("/cookie", ""),
        ("/none", ""),
        ("/static?auth", "Authorization: Basic dTpw\r\n"),
    ] {
        for _ in 0..3 {
            assert_eq!(get(c.addr(), path, extra).status, 200);
        }
        assert_eq!(o.count(path), 3, "{path} is never answered from the cache");
    }
    let show = cli(&sock, "show cache");
    assert!(show.contains("entries:0 "), "{show}");
}

#[test]
fn vary_keeps_each_client_on_its_own_variant() {
    let o = CacheOrigin::start();
    let (c, sock) = start(&o, 2, CACHE);
    for round in 0..3 {
        let gz = get(c.addr(), "/vary", "Accept-Encoding: gzip, br\r\n");
        assert_eq!(gz.body, b"GZIP-BYTES", "round {round}");
        assert_eq!(gz.head.get("content-encoding"), Some("gzip"));
        let id = get(c.addr(), "/vary", "");
        assert_eq!(id.body, b"identity bytes", "round {round}");
        assert_eq!(id.head.get("content-encoding"), None);
        let gz2 = get(c.addr(), "/vary", "Accept-Encoding: br,GZIP;q=0.5\r\n");
        assert_eq!(gz2.body, b"GZIP-BYTES", "the same codings, normalised");
    }
    assert_eq!(o.count("/vary"), 2, "one origin request per variant");
    assert!(cli(&sock, "show cache").contains("entries:2 "));
    // Without process_vary a response with Vary is not stored.
    let o2 = CacheOrigin::start();
    let (c2, _) = start(&o2, 1, "total_max_size = \"4MiB\"\nprocess_vary = false");
    for _ in 0..3 {
        get(c2.addr(), "/vary", "");
    }
    assert_eq!(o2.count("/vary"), 3);
}

#[test]
fn conditional_head_oversize_chunked_and_404() {
    let o = CacheOrigin::start();
    let (c, sock) = start(&o, 1, CACHE);
    let full = get(c.addr(), "/etag", "");
    assert_eq!(full.status, 200);
    let r = get(c.addr(), "/etag", "If-None-Match: \"v1\"\r\n");
    assert_eq!(r.status, 304);
    assert_eq!(r.head.get("etag"), Some("\"v1\""));
    assert!(r.body.is_empty());
    let r = get(c.addr(), "/etag", "If-None-Match: \"v0\"\r\n");
    assert_eq!(r.status, 200, "another tag: the object");
    let r = get(
        c.addr(),
        "/etag",
        "If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT\r\n",
    );
    assert_eq!(r.status, 304);
    assert_eq!(o.count("/etag"), 1, "conditionals answered from the cache");
    // HEAD from the stored GET.
    get(c.addr(), "/static?len=5000", "");
    let raw = b"HEAD /static?len=5000 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    let h = request(c.addr(), raw).unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.head.get("content-length"), Some("5000"));
    assert_eq!(o.count("/static?len=5000"), 1);
    // Larger than max_object_size: intact, not stored.
    let len = 1536 * 1024;
    let path = format!("/big?len={len}");
    for _ in 0..2 {
        let r = get(c.addr(), &path, "");
        assert!(
            r.body == pattern(&path, len),
            "an oversize body passes intact"
        );
    }
    assert_eq!(o.count(&path), 2);
    // A chunked response of mixed chunk sizes is stored whole.
    let path = "/chunked?len=300000";
    for i in 0..3 {
        let r = get(c.addr(), path, "");
        assert!(r.body == pattern(path, 300_000), "chunked body {i} intact");
    }
    assert_eq!(o.count(path), 1);
    // A 404 with freshness is stored; a precondition never turns it into a
    // 304 (preconditions apply to 2xx only).
    for _ in 0..3 {
        assert_eq!(get(c.addr(), "/404", "").status, 404);
    }
    assert_eq!(
        get(c.addr(), "/404", "If-None-Match: \"n\"\r\n").status,
        404
    );
    assert_eq!(o.count("/404"), 1);
    // A close-delimited body is never stored (a close cannot be told from
    // a server dying mid-body).
    for _ in 0..2 {
        assert_eq!(get(c.addr(), "/close", "").body, pattern("/close", 50));
    }
    assert_eq!(o.count("/close"), 2);
    assert!(cli(&sock, "check cache static").contains("consistent"));
}

#[test]
fn max_age_bounds_freshness_and_no_cache_requests_refresh() {
    let o = CacheOrigin::start();
    let (c, sock) = start(&o, 1, "total_max_size = \"4MiB\"\nmax_age = \"1s\"");
    get(c.addr(), "/static", "");
    get(c.addr(), "/static", "");
    assert_eq!(o.count("/static"), 1);
    thread::sleep(Duration::from_millis(1300));
    get(c.addr(), "/static", "");
    assert_eq!(o.count("/static"), 2, "expired after max_age");
    let lookups = |sock: &std::path::Path| -> u64 {
        stat_row(&cli(sock, "show stat"), "app", "BACKEND")["cache_lookups"]
            .parse()
            .unwrap()
    };
    let before = lookups(&sock);
    get(c.addr(), "/static", "Cache-Control: no-cache\r\n");
    get(c.addr(), "/static", "Pragma: no-cache\r\n");
    assert_eq!(o.count("/static"), 4, "no-cache requests are forwarded");
    assert_eq!(lookups(&sock), before, "and looked nothing up");
    get(c.addr(), "/static", "Cache-Control: max-age=0\r\n");
    assert_eq!(o.count("/static"), 5, "a browser reload goes to the server");
    let r = get(
        c.addr(),
        "/static?never",
        "Cache-Control: only-if-cached\r\n",
    );
    assert_eq!(r.status, 504, "only-if-cached on a miss");
    assert_eq!(o.count("/static?never"), 0);
    get(c.addr(), "/static", "");
    assert_eq!(
        o.count("/static"),
        5,
        "and their responses refreshed the object"
    );
    let r = get(c.addr(), "/static", "Cache-Control: only-if-cached\r\n");
    assert_eq!(r.status, 200, "only-if-cached on a hit");
    assert_eq!(o.count("/static"), 5);
}

#[test]
fn the_cache_is_kept_across_reloads_and_cleared_on_demand() {
    let o = CacheOrigin::start();
    let (c, sock) = start(&o, 2, CACHE);
    get(c.addr(), "/static?len=20000", "");
    get(c.addr(), "/big?len=200000", "");
    for i in 0..5 {
        reload_ok(&c, &sock);
        let r = get(c.addr(), "/static?len=20000", "");
        assert!(r.body == pattern("/static?len=20000", 20000));
        let r = get(c.addr(), "/big?len=200000", "");
        assert!(r.body == pattern("/big?len=200000", 200_000));
        assert_eq!(
            o.count("/static?len=20000"),
            1,
            "hit after reload {}",
            i + 1
        );
        assert_eq!(o.count("/big?len=200000"), 1, "hit after reload {}", i + 1);
    }
    assert!(cli(&sock, "clear cache static uri /big?len=200000").starts_with("1 object(s) removed"));
    get(c.addr(), "/big?len=200000", "");
    get(c.addr(), "/static?len=20000", "");
    assert_eq!(o.count("/big?len=200000"), 2, "purged by URI");
    assert_eq!(o.count("/static?len=20000"), 1, "the other object stays");
    assert!(cli(&sock, "clear cache static").starts_with("2 object(s) removed"));
    assert_eq!(cli(&sock, "clear cache nope"), "No such cache\n\n");
    let m = cli(&sock, "show cache static");
    assert!(m.contains("entries:0 "), "{m}");
}

#[test]
fn a_worker_killed_mid_store_leaves_no_half_object() {
    let o = CacheOrigin::start();
    let (c, sock) = start(&o, 1, CACHE);
    let workers = c.worker_pids();
    // /slow sends 16 KiB every 100 ms: the store is in progress for ~2 s.
    let addr = c.addr();
    let t = thread::spawn(move || {
        let raw = b"GET /slow?len=300000 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
        let _ = request(addr, raw);
    });
    thread::sleep(Duration::from_millis(700));
    for p in &workers {
        // SAFETY: plain kill(2) of a worker we started.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    t.join().unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            let now = c.worker_pids();
            !now.is_empty() && now.iter().all(|p| !workers.contains(p))
        }),
        "the worker is respawned"
    );
    let check = cli(&sock, "check cache static");
    assert!(check.contains("consistent (0 objects, 0 of"), "{check}");
    let r = get(c.addr(), "/slow?len=300000", "");
    assert!(r.body == pattern("/slow?len=300000", 300_000));
    assert_eq!(
        o.count("/slow?len=300000"),
        2,
        "nothing half stored was served"
    );
    assert!(
        c.stderr_text().contains("freed 1 unfinished store"),
        "{}",
        c.stderr_text()
    );
}

#[test]
fn constant_eviction_under_readers_keeps_every_body_exact() {
    let o = CacheOrigin::start();
    // 2 MiB of cache for ~25 MiB of objects: constant eviction.
    let (c, sock) = start(
        &o,
        2,
        "total_max_size = \"2MiB\"\nmax_object_size = \"256KiB\"\nmax_age = \"60s\"",
    );
    let workers = c.worker_pids();
    let base = c.baseline();
    let addr = c.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let (stop, bad, done) = (stop.clone(), bad.clone(), done.clone());
            thread::spawn(move || {
                let mut rng = common::Rng::new(t as u64 + 1);
                let mut cl = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.next_u64() % 300;
                    let len = 1000 + (k as usize * 7919) % 200_000;
                    let path = format!("/static?k={k}&len={len}");
                    cl.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
                    // Some readers are slow: large objects are still being
                    // read while they are evicted.
                    if t % 3 == 0 {
                        thread::sleep(Duration::from_millis(5));
                    }
                    match cl.response(false) {
                        Ok(r) if r.status == 200 && r.body == pattern(&path, len) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            bad.fetch_add(1, Ordering::Relaxed);
                            cl = Client::connect(addr);
                        }
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let (done, bad) = (done.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    assert_eq!(bad, 0, "every body exact ({done} good)");
    assert!(done > 500, "traffic flowed: {done}");
    assert_eq!(c.worker_pids(), workers, "no worker respawned");
    let show = cli(&sock, "show cache");
    let n = |k: &str| -> u64 {
        show.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}:")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        n("hits") > 0 && n("evictions") > 100,
        "hits and constant eviction: {show}"
    );
    let check = cli(&sock, "check cache static");
    assert!(check.contains("consistent"), "{check}");
    // Then idle: fds back, and no CPU whatever the eviction left to do.
    c.assert_quiescent(&base);
    let origin = o.total.load(Ordering::Relaxed);
    eprintln!(
        "stress: {done} responses, {origin} from the origin; {}",
        show.lines().nth(1).unwrap_or("")
    );
}

#[test]
fn an_object_evicted_while_a_slow_client_reads_it_stays_intact() {
    let o = CacheOrigin::start();
    let (c, sock) = start(
        &o,
        2,
        "total_max_size = \"16MiB\"\nmax_object_size = \"4MiB\"\nmax_age = \"60s\"",
    );
    let path = "/big?len=4000000";
    let want = pattern(path, 4_000_000);
    assert!(get(c.addr(), path, "").body == want, "stored");
    // A slow reader: a tiny receive window, nothing read for a while.
    let s = common::small_rcvbuf_connect(c.addr());
    let mut cl = Client { r: Reader::new(s) };
    cl.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes());
    thread::sleep(Duration::from_millis(300));
    let show = cli(&sock, "show cache");
    assert!(
        show.contains("refcount:1"),
        "the sender holds the object: {show}"
    );
    // Evicted under it, and its blocks' neighbours rewritten by new stores.
    assert!(cli(&sock, "clear cache static").starts_with("1 object(s) removed"));
    for k in 0..6 {
        let p = format!("/big?k={k}&len=2500000");
        assert!(get(c.addr(), &p, "").body == pattern(&p, 2_500_000));
    }
    let r = cl.response(false).expect("the slow response");
    assert_eq!(r.status, 200);
    assert!(
        r.body == want,
        "the evicted object's bytes never changed under its reader"
    );
    assert_eq!(o.count(path), 1, "it was a hit");
    thread::sleep(Duration::from_millis(200));
    let check = cli(&sock, "check cache static");
    assert!(check.contains("consistent"), "{check}");
    assert!(
        !cli(&sock, "show cache").contains("refcount:1"),
        "the reference was dropped"
    );
}

#[test]
fn response_rules_run_on_hits_and_http10_clients_get_a_delimited_answer() {
    let o = CacheOrigin::start();
    let backends = format!(
        "[cache.static]\n{CACHE}\n\n[backend.app]\ncache = \"static\"\nserver.s0 = {{ addr = \"{}\" }}\n",
        o.addr
    );
    let (c, _sock) = HttpSetup {
        workers: 1,
        backends: Some(&backends),
        frontend: r#"rules = ["http-response set-header X-Rule on"]"#,
        ..Default::default()
    }
    .start();
    for i in 0..3 {
        let r = get(c.addr(), "/static?len=700", "");
        assert_eq!(
            r.head.get("x-rule"),
            Some("on"),
            "response {i}: the rule ran"
        );
        assert_eq!(r.body, pattern("/static?len=700", 700));
    }
    assert_eq!(o.count("/static?len=700"), 1);
    // HTTP/1.0 keep-alive: a hit says so and is delimited by its length.
    let mut cl = Client::connect(c.addr());
    for _ in 0..2 {
        cl.send(b"GET /static?len=700 HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n");
        let r = cl.response(false).unwrap();
        assert_eq!(r.head.get("connection"), Some("keep-alive"));
        assert_eq!(r.head.get("content-length"), Some("700"));
        assert!(r.head.get("age").is_some());
        assert_eq!(r.body, pattern("/static?len=700", 700));
    }
    // Without rules, the stored head goes out as it is, one Age only.
    let o2 = CacheOrigin::start();
    let (c2, _) = start(&o2, 1, CACHE);
    get(c2.addr(), "/static", "");
    let r = get(c2.addr(), "/static", "");
    assert_eq!(r.head.all("age").len(), 1, "{:?}", r.head);
    assert_eq!(r.head.all("content-length"), vec!["100"]);
    assert_eq!(r.head.get("connection"), Some("close"));
}

#[test]
fn a_resized_cache_starts_empty_and_the_old_one_is_freed() {
    let o = CacheOrigin::start();
    let (c, sock) = start(&o, 1, CACHE);
    get(c.addr(), "/static?r", "");
    get(c.addr(), "/static?r", "");
    assert_eq!(o.count("/static?r"), 1);
    let text = std::fs::read_to_string(&c.config_path).unwrap();
    std::fs::write(
        &c.config_path,
        text.replace("total_max_size = \"4MiB\"", "total_max_size = \"8MiB\""),
    )
    .unwrap();
    reload_ok(&c, &sock);
    let r = get(c.addr(), "/static?r", "");
    assert!(r.body == pattern("/static?r", 100));
    assert_eq!(o.count("/static?r"), 2, "a new, empty cache");
    get(c.addr(), "/static?r", "");
    assert_eq!(o.count("/static?r"), 2, "which stores again");
    assert!(
        common::wait_until(Duration::from_secs(10), || c
            .stderr_text()
            .contains("cache static: old region freed")),
        "{}",
        c.stderr_text()
    );
    let log = c.stderr_text();
    assert!(
        log.contains("cache static: size changed, starts empty"),
        "{log}"
    );
    assert!(
        cli(&sock, "show cache").contains("total:2048 "),
        "the new size"
    );
}
