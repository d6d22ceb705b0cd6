//! Bodies with splice(2): bulk Content-Length bodies and large chunks move
//! socket → pipe → socket (the worker makes almost no read(2) calls for
//! them), small messages and small chunks are
//! copied (no pipe is ever taken), and every byte arrives in order.
//! The worker's read calls are counted with strace (recv(2) is not in
//! /proc/PID/io's `syscr`).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::thread;

use common::cli::info_field;
use common::http::*;

const MIB: u64 = 1 << 20;

/// The read calls (recv or read; splice(2) is not one) worker `pid` makes
/// while `load` runs, counted with strace; `None` without strace (the load
/// still runs).
fn reads_during(pid: i32, load: impl FnOnce()) -> Option<usize> {
    if !common::have_strace() {
        load();
        return None;
    }
    let calls = common::strace_during(pid, "recvfrom,read", load);
    let n = calls
        .lines()
        .filter(|l| l.contains("recvfrom(") || l.contains("read("))
        .count();
    // A request head at least is read: none seen means strace saw nothing.
    assert!(n > 0, "strace saw no read: not attached?");
    Some(n)
}

/// PUTs `len` pattern bytes to the origin's /upload and checks its answer
/// (the pattern's sum).
fn upload(cl: &mut Client, len: u64) {
    cl.send(format!("PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").as_bytes());
    let mut w = cl.r.s.try_clone().unwrap();
    let writer = thread::spawn(move || write_pattern(&mut w, len));
    let r = cl.response(false).unwrap();
    writer.join().unwrap();
    assert_eq!((r.status, r.text()), (200, pattern_sum(len)));
}

fn start(servers: &[SocketAddr]) -> (common::Corral, std::path::PathBuf) {
    HttpSetup {
        servers,
        timeouts: r#"{ connect = "2s", client = "20s", server = "20s" }"#,
        ..Default::default()
    }
    .start()
}

#[test]
fn bulk_bodies_splice_both_ways_with_few_reads_per_mebibyte() {
    let o = Origin::start("a");
    let (c, sock) = start(&[o.addr]);
    let worker = c.worker_pids()[0];
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/name").status, 200);
    let len = 256 * MIB;
    // Download.
    let down = reads_during(worker, || {
        cl.send(format!("GET /download?len={len} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let head = cl.r.head().unwrap().unwrap();
        assert!(head.line.contains(" 200 "));
        let mut sum = Sum::default();
        cl.r.exact(len, &mut |b| sum.add(b)).unwrap();
        assert_eq!(sum.finish(), pattern_sum(len));
    });
    // Upload.
    let up = reads_during(worker, || upload(&mut cl, len));
    eprintln!("256 MiB: {down:?} read calls down, {up:?} up");
    // Copied through 64 KiB reads it would be 16 reads per MiB down, and
    // 64 per MiB up (16 KiB reads).
    if let (Some(down), Some(up)) = (down, up) {
        assert!(down < 256 * 2, "{down} reads for 256 MiB down");
        assert!(up < 256 * 2, "{up} reads for 256 MiB up");
    }
    // The connection goes on after both; no pipe stays lent.
    assert_eq!(cl.get("/name").status, 200);
    assert_eq!(info_field(&sock, "PipesUsed").as_deref(), Some("0"));
}

/// A long body splices through a grown pipe: both ways, some splice call
/// moves more than a default pipe (64 KiB) holds.
#[test]
fn a_long_body_splices_through_a_grown_pipe() {
    if !common::have_strace() || !common::pipes_grow() {
        return;
    }
    let o = Origin::start("a");
    let (c, sock) = start(&[o.addr]);
    let worker = c.worker_pids()[0];
    let mut cl = Client::connect(c.addr());
    let len = 32 * MIB;
    let down = common::strace_during(worker, "splice", || {
        let r = cl.get(&format!("/download?len={len}"));
        assert_eq!((r.status, r.body.len() as u64), (200, len));
    });
    let up = common::strace_during(worker, "splice", || upload(&mut cl, len));
    for (way, trace) in [("down", down), ("up", up)] {
        let moved = common::splice_results(&trace);
        let most = moved.iter().max().copied().unwrap_or(0);
        eprintln!(
            "{way}: {} splice calls for 32 MiB, the largest {most} bytes",
            moved.len()
        );
        assert!(!moved.is_empty(), "{way}: strace saw no splice");
        assert!(
            most > 64 * 1024,
            "{way}: no splice moved more than 64 KiB ({most})"
        );
    }
    // The operator sees it: the grown pipe, idle now, in `show pools`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let pools = common::stats_command(&sock, "show pools").unwrap();
        let grown = pools.lines().find(|l| l.contains("Pool pipe_grown"));
        if grown
            .is_some_and(|l| l.contains("(131072 bytes) : 1 allocated") && l.contains(", 0 used"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "show pools: {pools}");
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn small_messages_never_take_a_pipe() {
    let o = Origin::start("a");
    let (c, sock) = start(&[o.addr]);
    let mut cl = Client::connect(c.addr());
    for i in 0..200 {
        let body = vec![b'x'; (i * 37) % 8000];
        let mut req = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        cl.send(&req);
        let r = cl.response(false).unwrap();
        assert_eq!(r.body.len(), body.len());
        assert_eq!(cl.get("/download?len=12000").body.len(), 12000);
    }
    assert_eq!(info_field(&sock, "PipesUsed").as_deref(), Some("0"));
    assert_eq!(
        info_field(&sock, "PipesFree").as_deref(),
        Some("0"),
        "no pipe was ever made for a small body"
    );
}

/// Sends one chunked response per request: chunks of 10 bytes and of
/// 1 MiB alternating (and one of 16 KiB - 1), then a trailer.
fn chunky_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = Reader::new(s);
                while let Ok(Some(_)) = r.head() {
                    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    for (i, len) in chunk_sizes().into_iter().enumerate() {
                        out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
                        out.extend(chunk_bytes(i, len));
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\nX-Trailer: done\r\n\r\n");
                    if w.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn chunk_sizes() -> Vec<usize> {
    let mut v = Vec::new();
    for k in 0..12 {
        v.push(10);
        v.push(if k == 5 { 16 * 1024 - 1 } else { MIB as usize });
    }
    v.push(10);
    v
}

fn chunk_bytes(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k * 31 + i * 7) as u8).collect()
}

#[test]
fn a_chunked_stream_of_small_and_large_chunks_is_byte_exact() {
    let (c, _) = start(&[chunky_server()]);
    let worker = c.worker_pids()[0];
    let mut cl = Client::connect(c.addr());
    let mut want = Vec::new();
    for (i, len) in chunk_sizes().into_iter().enumerate() {
        want.extend(chunk_bytes(i, len));
    }
    for round in 0..3 {
        let n = reads_during(worker, || {
            cl.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
            let head = cl.r.head().unwrap().unwrap();
            assert!(head.has_token("transfer-encoding", "chunked"), "{:?}", head);
            let mut got = Vec::new();
            cl.r.chunked(&mut |b| got.extend_from_slice(b)).unwrap();
            assert_eq!(got.len(), want.len(), "round {round}");
            assert!(got == want, "round {round}: bytes differ");
        });
        eprintln!(
            "round {round}: {} MiB chunked in {n:?} read calls",
            want.len() as u64 / MIB
        );
        let Some(n) = n else { continue };
        // 11 MiB of large chunks, copied, would be ~180 reads of 64 KiB.
        assert!(n < 60, "round {round}: {n} reads");
    }
}

/// A worker out of file descriptors cannot make a pipe: the body is copied
/// instead, whole, and the refusal is counted where an operator looks
/// (`show pools` failures, `show info` PoolFailed).
#[test]
fn a_pipe_the_kernel_refuses_is_counted_and_the_body_copied() {
    let o = Origin::start("a");
    let (c, sock) = start(&[o.addr]);
    let worker = c.worker_pids()[0];
    let mut cl = Client::connect(c.addr());
    // Client and server connection open (the server's kept for reuse).
    assert_eq!(cl.get("/name").status, 200);
    assert_eq!(info_field(&sock, "PoolFailed").as_deref(), Some("0"));
    // A new fd takes the lowest free number, and RLIMIT_NOFILE bounds the
    // numbers: leave one free number under the limit (a server reconnect
    // fits), not the two a pipe needs.
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let limit = (0..).filter(|n| !open.contains(n)).nth(1).unwrap();
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit on our own child with a valid rlimit.
    let rc = unsafe { libc::prlimit(worker, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let len = 8 * MIB;
    let r = cl.get(&format!("/download?len={len}"));
    assert_eq!((r.status, r.body.len() as u64), (200, len));
    let mut sum = Sum::default();
    sum.add(&r.body);
    assert_eq!(sum.finish(), pattern_sum(len), "the copied body");
    let failed: u64 = info_field(&sock, "PoolFailed").unwrap().parse().unwrap();
    assert!(failed >= 1, "PoolFailed {failed}");
    let pools = common::stats_command(&sock, "show pools").unwrap();
    let line = pools
        .lines()
        .find(|l| l.contains("Pool pipe ("))
        .unwrap_or("");
    assert!(line.contains(&format!(", {failed} failures,")), "{pools}");
}

#[test]
fn bodies_that_find_no_free_pipe_are_copied_instead() {
    // maxconn 20: a pool of 16 pipes for 20 bulk downloads at once.
    let o = Origin::start("a");
    let (c, _) = HttpSetup {
        servers: &[o.addr],
        global: "maxconn = 20",
        timeouts: r#"{ connect = "2s", client = "20s", server = "20s" }"#,
        ..Default::default()
    }
    .start();
    let addr = c.addr();
    let len = 8 * MIB;
    let threads: Vec<_> = (0..20)
        .map(|_| {
            thread::spawn(move || {
                let mut cl = Client::connect(addr);
                cl.send(format!("GET /download?len={len} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                let head = cl.r.head().unwrap().unwrap();
                assert!(head.line.contains(" 200 "));
                // Slow to read: every stream holds its pipe full at once.
                thread::sleep(std::time::Duration::from_millis(500));
                let mut sum = Sum::default();
                cl.r.exact(len, &mut |b| sum.add(b)).unwrap();
                sum.finish()
            })
        })
        .collect();
    let want = pattern_sum(len);
    let t = std::time::Instant::now();
    for th in threads {
        assert_eq!(th.join().unwrap(), want);
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        t.elapsed()
    );
}
