//! TCP proxying, as an operator checks it before trusting a load balancer:
//! bytes arrive intact both ways (with and without splice), half-closes and
//! resets from either side are forwarded promptly, a slow server slows the
//! client down instead of filling corral's memory, a refused server is skipped,
//! and a backend with no server left closes the client at once. After every
//! chaos scenario corral must be idle (< 1% CPU) with no fd left behind.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Two frontends onto the same server: `fe_splice` forwards with splice(2),
/// `fe_copy` with read/write. One worker, so fd baselines are exact.
fn two_path_config(
    fe_splice: u16,
    fe_copy: u16,
    splice_srv: SocketAddr,
    copy_srv: SocketAddr,
) -> String {
    format!(
        r#"
[global]
workers = 1

[frontend.fe_splice]
bind = "127.0.0.1:{fe_splice}"
mode = "tcp"
splice = true
default_backend = "be_splice"

[frontend.fe_copy]
bind = "127.0.0.1:{fe_copy}"
mode = "tcp"
splice = false
default_backend = "be_copy"

[backend.be_splice]
mode = "tcp"
balance = "roundrobin"
splice = true
timeout = {{ connect = "1s", client = "10s", server = "10s" }}
server.s = {{ addr = "{splice_srv}" }}

[backend.be_copy]
mode = "tcp"
balance = "roundrobin"
splice = false
timeout = {{ connect = "1s", client = "10s", server = "10s" }}
server.s = {{ addr = "{copy_srv}" }}
"#
    )
}

/// One corral with both paths onto one ChaosServer, warmed up with a clean
/// ECHO session on each path, and the fd baseline taken after it.
fn chaos_setup() -> (ChaosServer, Corral, Baseline) {
    let chaos = ChaosServer::start();
    let corral = Corral::start(&two_path_config(
        free_port(),
        free_port(),
        chaos.addr,
        chaos.addr,
    ));
    for &addr in corral.binds() {
        let mut s = connect(addr);
        s.write_all(b"ECHO\n").unwrap();
        let mut rng = Rng::new(7);
        let mut chunk = vec![0u8; 16384];
        for _ in 0..16 {
            rng.fill(&mut chunk);
            echo_roundtrip(&mut s, &chunk);
        }
        s.shutdown(Shutdown::Write).unwrap();
        let (how, _) = wait_closed(&mut s, Duration::from_secs(2));
        assert_eq!(
            how,
            Closed::Eof,
            "warm-up ECHO session via {addr} did not end with a FIN"
        );
    }
    chaos.wait_records(2, Duration::from_secs(2));
    let base = corral.baseline();
    (chaos, corral, base)
}

/// One worker forwarding to an echo server, with `splice` on or off.
fn echo_corral(splice: bool) -> (EchoServer, Corral) {
    let echo = EchoServer::start();
    let port = free_port();
    let corral = Corral::start(&format!(
        r#"
[global]
workers = 1

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
splice = {splice}
default_backend = "be"

[backend.be]
mode = "tcp"
balance = "roundrobin"
splice = {splice}
timeout = {{ connect = "1s", client = "10s", server = "10s" }}
server.echo = {{ addr = "{}" }}
"#,
        echo.addr
    ));
    (echo, corral)
}

fn integrity(splice: bool) {
    const LEN: u64 = 50 << 20;
    let (echo, corral) = echo_corral(splice);
    let mut s = corral.connect();
    let mut w = s.try_clone().unwrap();
    let seed = 0xC0FFEE + splice as u64;
    let start = Instant::now();
    // Full duplex: the upload and the echoed download run at the same time.
    let writer = thread::spawn(move || {
        let sum = write_stream(&mut w, seed, LEN);
        let _ = w.shutdown(Shutdown::Write);
        sum
    });
    let (len, got) = read_to_end_sum(&mut s).expect("reading the echoed stream");
    let sent = writer.join().unwrap().expect("writing the stream");
    assert_eq!(
        len, LEN,
        "client received {len} of {LEN} bytes (splice = {splice})"
    );
    assert_eq!(
        got, sent,
        "checksum of the echoed 50 MB differs (splice = {splice})"
    );
    assert_eq!(
        echo.conns(),
        1,
        "one client connection must make one server connection"
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "50 MB each way took {:?}",
        start.elapsed()
    );
}

/// 50 MB of random bytes up and the same 50 MB echoed down at once, through
/// splice(2): both checksums match, and the FIN comes back at the end.
#[test]
fn forwards_50mb_both_ways_intact_with_splice() {
    integrity(true);
}

/// The same through the read/write path.
#[test]
fn forwards_50mb_both_ways_intact_without_splice() {
    integrity(false);
}

/// A long transfer splices through a grown pipe: some splice call moves
/// more than the kernel's default pipe (64 KiB) holds, which only a grown
/// pipe allows. Short ones keep the default (`splice::tests`).
#[test]
fn a_long_transfer_splices_through_a_grown_pipe() {
    if !have_strace() || !pipes_grow() {
        return;
    }
    const LEN: u64 = 64 << 20;
    let (_echo, corral) = echo_corral(true);
    let worker = corral.worker_pids()[0];
    let trace = strace_during(worker, "splice", || {
        let mut s = corral.connect();
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let sum = write_stream(&mut w, 5, LEN);
            let _ = w.shutdown(Shutdown::Write);
            sum
        });
        let (len, got) = read_to_end_sum(&mut s).expect("reading the echoed stream");
        assert_eq!((len, got), (LEN, writer.join().unwrap().unwrap()));
    });
    let moved = splice_results(&trace);
    assert!(!moved.is_empty(), "strace saw no splice: not attached?");
    let most = moved.iter().max().copied().unwrap_or(0);
    eprintln!(
        "{} splice calls for 64 MiB each way, the largest moved {most} bytes",
        moved.len()
    );
    assert!(
        most > 64 * 1024,
        "no splice moved more than a default pipe holds ({most} bytes at most)"
    );
}

/// Client half-close: the client sends 4 MB then shuts down writing; the server
/// reads to EOF and only then answers with the length and checksum. The answer
/// must reach the client (corral keeps server→client open after the client's
/// FIN), followed by the server's FIN. Twice per path; then idle and no fd leak.
#[test]
fn client_half_close_then_server_answers() {
    const LEN: u64 = 4 << 20;
    let (chaos, corral, base) = chaos_setup();
    let mut n = 2;
    for round in 0..2u64 {
        for &addr in corral.binds() {
            let mut s = connect(addr);
            s.write_all(b"SINK\n").unwrap();
            let sum = write_stream(&mut s, round * 10 + addr.port() as u64, LEN).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let line = read_line(&mut s)
                .unwrap_or_else(|e| panic!("no answer after the client's FIN via {addr}: {e}"));
            assert_eq!(
                line,
                format!("{LEN} {sum:016x}"),
                "server saw other bytes via {addr}"
            );
            let (how, t) = wait_closed(&mut s, Duration::from_secs(2));
            assert_eq!(
                how,
                Closed::Eof,
                "server's FIN not forwarded via {addr} ({t:?})"
            );
            n += 1;
            chaos.wait_records(n, Duration::from_secs(2));
        }
    }
    corral.assert_quiescent(&base);
}

/// Server half-close: the server sends 4 MB then shuts down writing; the
/// client reads to EOF, then answers, and the answer must still reach the
/// server (client→server stays open after the server's FIN). Twice per path;
/// then idle and no fd leak.
#[test]
fn server_half_close_then_client_answers() {
    const LEN: u64 = 4 << 20;
    let (chaos, corral, base) = chaos_setup();
    let mut n = 2;
    for round in 0..2u64 {
        for &addr in corral.binds() {
            let seed = 1000 + round * 7 + addr.port() as u64;
            let mut s = connect(addr);
            s.write_all(format!("SOURCE {LEN} {seed}\n").as_bytes())
                .unwrap();
            let (len, sum) = read_to_end_sum(&mut s)
                .unwrap_or_else(|e| panic!("reading the server's stream via {addr}: {e}"));
            assert_eq!(
                len, LEN,
                "client got {len} of {LEN} bytes via {addr} before EOF"
            );
            assert_eq!(
                sum,
                checksum_of_stream(seed, LEN),
                "download corrupted via {addr}"
            );
            let answer = format!("ACK {len} {sum:016x}\n");
            s.write_all(answer.as_bytes()).unwrap_or_else(|e| {
                panic!("client could not answer after the server's FIN via {addr}: {e}")
            });
            s.shutdown(Shutdown::Write).unwrap();
            let (how, t) = wait_closed(&mut s, Duration::from_secs(2));
            assert_eq!(
                how,
                Closed::Eof,
                "connection not closed cleanly via {addr} ({t:?})"
            );
            n += 1;
            let recs = chaos.wait_records(n, Duration::from_secs(2));
            let rec = &recs[n - 1];
            assert_eq!(
                String::from_utf8_lossy(&rec.answer),
                answer,
                "server did not receive the client's answer sent after its FIN via {addr}"
            );
        }
    }
    corral.assert_quiescent(&base);
}

/// The client resets (SO_LINGER 0) in the middle of an echo transfer with
/// data in flight both ways: the server must see its connection end within
/// 2 s. Three times per path; then idle and no fd leak.
#[test]
fn client_reset_mid_transfer_closes_server_side_promptly() {
    let (chaos, corral, base) = chaos_setup();
    let mut n = 2;
    let mut chunk = vec![0u8; 16384];
    let mut rng = Rng::new(99);
    for _ in 0..3 {
        for &addr in corral.binds() {
            let mut s = connect(addr);
            s.write_all(b"ECHO\n").unwrap();
            for _ in 0..16 {
                rng.fill(&mut chunk);
                echo_roundtrip(&mut s, &chunk);
            }
            // More data in flight, unread by the client, then the reset.
            for _ in 0..32 {
                rng.fill(&mut chunk);
                s.write_all(&chunk).unwrap();
            }
            let rst_at = Instant::now();
            reset(s);
            n += 1;
            let recs = chaos.wait_records(n, Duration::from_secs(5));
            let ended = recs[n - 1].ended_at.unwrap();
            assert!(
                ended.saturating_duration_since(rst_at) < Duration::from_secs(2),
                "server saw the connection end {:?} after the client's RST via {addr}",
                ended.saturating_duration_since(rst_at)
            );
        }
    }
    corral.assert_quiescent(&base);
}

/// The server resets after reading 512 KB while the client keeps sending:
/// within 2 s the client's reads end (EOF or reset) and its writes fail.
/// Three times per path; then idle and no fd leak.
#[test]
fn server_reset_mid_transfer_closes_client_side_promptly() {
    let (chaos, corral, base) = chaos_setup();
    let mut n = 2;
    for _ in 0..3 {
        for &addr in corral.binds() {
            let mut s = connect(addr);
            s.write_all(b"RST 524288\n").unwrap();
            let mut r = s.try_clone().unwrap();
            let reader = thread::spawn(move || {
                let (how, _) = wait_closed(&mut r, Duration::from_secs(6));
                (how, Instant::now())
            });
            let writer = thread::spawn(move || {
                let mut rng = Rng::new(5);
                let mut chunk = vec![0u8; 65536];
                rng.fill(&mut chunk);
                s.set_write_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(6);
                while Instant::now() < deadline {
                    match s.write(&chunk) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return Some(Instant::now()),
                    }
                }
                None
            });
            let (how, read_end) = reader.join().unwrap();
            let write_end = writer.join().unwrap();
            n += 1;
            let recs = chaos.wait_records(n, Duration::from_secs(2));
            let reset_at = recs[n - 1]
                .reset_at
                .expect("server did not reach its reset");
            assert_ne!(
                how,
                Closed::StillOpen,
                "client connection still open 6 s after the server's RST via {addr}"
            );
            let dr = read_end.saturating_duration_since(reset_at);
            assert!(
                dr < Duration::from_secs(2),
                "client read side closed {dr:?} after the server's RST via {addr}"
            );
            let write_end = write_end.unwrap_or_else(|| {
                panic!("client writes still succeed 6 s after the server's RST via {addr}")
            });
            let dw = write_end.saturating_duration_since(reset_at);
            assert!(
                dw < Duration::from_secs(2),
                "client writes failed only {dw:?} after the server's RST via {addr}"
            );
        }
    }
    corral.assert_quiescent(&base);
}

/// Backpressure: clients push as fast as they can for 3 s (at most 200 MB)
/// to servers that read 1 MB/s, one through splice and one through
/// read/write. corral's RSS (master + workers) grows by less than 20 MB, and
/// what the clients got to write exceeds what the servers read by no more
/// than socket buffers can hold (48 MB; about 9 MB is typical): corral stopped reading.
#[test]
fn slow_server_backpressure_keeps_memory_flat() {
    const RATE: u64 = 1 << 20;
    const CAP: u64 = 200 << 20;
    let slow_splice = SlowServer::start(RATE);
    let slow_copy = SlowServer::start(RATE);
    let corral = Corral::start(&two_path_config(
        free_port(),
        free_port(),
        slow_splice.addr,
        slow_copy.addr,
    ));
    let base_rss = corral.total_rss_kb();
    assert!(base_rss > 0, "could not read corral's RSS");
    let pushers: Vec<_> = corral
        .binds()
        .iter()
        .map(|&addr| {
            let mut s = connect(addr);
            thread::spawn(move || {
                let mut chunk = vec![0u8; 65536];
                Rng::new(11).fill(&mut chunk);
                s.set_write_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(3);
                let mut written = 0u64;
                while Instant::now() < deadline && written < CAP {
                    match s.write(&chunk) {
                        Ok(k) => written += k as u64,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => panic!("write to {addr} failed: {e}"),
                    }
                }
                (written, s)
            })
        })
        .collect();
    let mut max_rss = base_rss;
    while pushers.iter().any(|p| !p.is_finished()) {
        max_rss = max_rss.max(corral.total_rss_kb());
        thread::sleep(Duration::from_millis(50));
    }
    max_rss = max_rss.max(corral.total_rss_kb());
    let results: Vec<(u64, TcpStream)> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
    for ((written, _), (server, path)) in results
        .iter()
        .zip([(&slow_splice, "splice"), (&slow_copy, "copy")])
    {
        let read = server.bytes_read.load(Ordering::SeqCst);
        eprintln!("{path} path: client wrote {written} bytes, slow server read {read}");
        assert!(read > 0, "{path} path: the slow server received nothing");
        assert!(
            *written <= read + (48 << 20),
            "{path} path: client wrote {written} bytes while the server read {read}: corral did not push back"
        );
    }
    let growth = max_rss.saturating_sub(base_rss);
    eprintln!("corral RSS: {base_rss} KiB at start, {max_rss} KiB at most while pushing");
    assert!(
        growth < 20 * 1024,
        "corral's RSS grew by {growth} KiB (from {base_rss} to {max_rss}) while clients pushed {:?} bytes",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
}

/// A server that refuses connections is skipped: with server `a` down and `b`
/// up, every client (round robin would send half of them to `a`) reaches `b`,
/// each within 2 s (timeout connect 1s, retries 2).
#[test]
fn refused_server_fails_over_to_next() {
    let b = NameServer::start("b");
    let port = free_port();
    let corral = Corral::start(&format!(
        r#"
[global]
workers = 1

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"

[backend.be]
mode = "tcp"
balance = "roundrobin"
retries = 2
timeout = {{ connect = "1s", client = "5s", server = "5s" }}
server.a = {{ addr = "{}" }}
server.b = {{ addr = "{}" }}
"#,
        dead_addr(),
        b.addr
    ));
    for i in 0..6 {
        let t = Instant::now();
        let name = name_via(corral.addr());
        assert_eq!(name, "b", "connection {i} reached {name}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "connection {i} took {:?} to reach b",
            t.elapsed()
        );
    }
    assert_eq!(b.conns(), 6);
}

/// With every server down (timeout connect 1s, retries 2), the client is
/// closed within 2 s, receives nothing, and the log line says `SC` (the
/// server side failed during connect).
#[test]
fn all_servers_down_client_closed_promptly() {
    let port = free_port();
    let corral = Corral::start(&format!(
        r#"
[global]
workers = 1

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be"

[backend.be]
mode = "tcp"
balance = "roundrobin"
retries = 2
timeout = {{ connect = "1s", client = "5s", server = "5s" }}
server.a = {{ addr = "{}" }}
server.b = {{ addr = "{}" }}
"#,
        dead_addr(),
        dead_addr()
    ));
    let mut s = corral.connect();
    let local = s.local_addr().unwrap();
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("client received {n} bytes from a backend with no server"),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!("client still connected 5 s after connecting to a backend with no server")
        }
        Err(_) => {}
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "client closed only after {:?}",
        t.elapsed()
    );
    let line = corral.wait_log_line(local, Duration::from_secs(2));
    assert_eq!(
        line.term, "SC",
        "termination state of a connection no server accepted: {}",
        line.raw
    );
}

fn is_haproxy_date(d: &str) -> bool {
    // [23/Nov/2025:06:54:00.123]
    let Some(d) = d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    let b = d.as_bytes();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digits = |r: std::ops::Range<usize>| {
        b.get(r)
            .map(|s| s.iter().all(u8::is_ascii_digit))
            .unwrap_or(false)
    };
    b.len() == 24
        && digits(0..2)
        && b[2] == b'/'
        && months.contains(&&d[3..6])
        && b[6] == b'/'
        && digits(7..11)
        && b[11] == b':'
        && digits(12..14)
        && b[14] == b':'
        && digits(15..17)
        && b[17] == b':'
        && digits(18..20)
        && b[20] == b'.'
        && digits(21..24)
}

/// One clean connection gives one log line in HAProxy's TCP format with the
/// client's address, the names, sane timers, the bytes sent to the client,
/// `--`, and the counters of a lone connection (1/1/1/1/0 0/0).
#[test]
fn log_line_has_haproxy_tcp_format() {
    let echo = EchoServer::start();
    let port = free_port();
    let corral = Corral::start(&format!(
        r#"
[global]
workers = 1
log = "stdout"

[frontend.fe_log]
bind = "127.0.0.1:{port}"
mode = "tcp"
default_backend = "be_log"

[backend.be_log]
mode = "tcp"
balance = "roundrobin"
timeout = {{ connect = "1s", client = "5s", server = "5s" }}
server.echo1 = {{ addr = "{}" }}
"#,
        echo.addr
    ));
    let mut s = corral.connect();
    let local = s.local_addr().unwrap();
    echo_roundtrip(&mut s, &[b'x'; 1234]);
    thread::sleep(Duration::from_millis(50));
    s.shutdown(Shutdown::Write).unwrap();
    let (how, _) = wait_closed(&mut s, Duration::from_secs(2));
    assert_eq!(how, Closed::Eof);
    drop(s);
    let l = corral.wait_log_line(local, Duration::from_secs(3));
    assert_eq!(l.client, local, "{}", l.raw);
    assert!(
        is_haproxy_date(&l.date),
        "date not in [dd/Mon/yyyy:hh:mm:ss.mmm] form: {}",
        l.raw
    );
    assert_eq!(
        (l.frontend.as_str(), l.backend.as_str(), l.server.as_str()),
        ("fe_log", "be_log", "echo1"),
        "{}",
        l.raw
    );
    assert_eq!(l.bytes, 1234, "bytes server→client: {}", l.raw);
    assert_eq!(l.term, "--", "normal end: {}", l.raw);
    assert!(
        l.tw >= 0 && l.tc >= 0 && l.tt >= l.tc && l.tt >= 50,
        "timers: {}",
        l.raw
    );
    assert!(l.tt < 5000, "Tt too large: {}", l.raw);
    assert_eq!(
        (
            l.actconn,
            l.feconn,
            l.beconn,
            l.srv_conn,
            l.retries,
            l.srv_queue,
            l.backend_queue
        ),
        (1, 1, 1, 1, 0, 0, 0),
        "counters of a lone connection: {}",
        l.raw
    );
    assert_eq!(
        corral.log_text().matches(&format!("{local} [")).count(),
        1,
        "exactly one log line per connection"
    );
}

/// Waits (5 s at most) until the peer acknowledged everything `s` sent.
fn wait_acked(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int for our TCP socket.
        let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if rc < 0 || n == 0 || Instant::now() > deadline {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// What a side read before its peer failed is still owed to the other side:
/// a server that sends 8 MB then resets, to a client that reads only later
/// and slowly, still delivers all 8 MB, then a FIN (not a reset); and a
/// client that sends 8 MB then resets still gets it to the server, then a
/// FIN. On both paths (splice and copy).
#[test]
fn an_abort_on_one_side_delivers_what_the_other_side_was_owed() {
    use std::net::TcpListener;
    const LEN: usize = 8 << 20;
    // Server: on "SEND", write LEN bytes, wait, reset. On "RECV", read to
    // EOF and report how many bytes came and how the stream ended.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, bool)>();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            thread::spawn(move || {
                let mut cmd = [0u8; 4];
                if s.read_exact(&mut cmd).is_err() {
                    return;
                }
                if &cmd == b"SEND" {
                    let mut data = vec![0u8; LEN];
                    Rng::new(3).fill(&mut data);
                    let _ = s.write_all(&data);
                    // Everything acknowledged by corral's kernel, then the
                    // reset: what corral holds by then is owed to the client.
                    wait_acked(&s);
                    reset(s);
                } else {
                    let mut n = 0;
                    let mut buf = [0u8; 65536];
                    let clean = loop {
                        match s.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(k) => n += k,
                            Err(_) => break false,
                        }
                    };
                    let _ = tx.send((n, clean));
                }
            });
        }
    });
    let corral = Corral::start(&two_path_config(
        free_port(),
        free_port(),
        server_addr,
        server_addr,
    ));
    for &addr in corral.binds() {
        // The server resets after sending: the client, reading late, still
        // gets every byte, then EOF.
        let mut c = connect(addr);
        c.write_all(b"SEND").unwrap();
        thread::sleep(Duration::from_millis(300)); // corral's buffers fill up
        let mut got = Vec::new();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 65536];
        let end = loop {
            match c.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
            thread::sleep(Duration::from_millis(1)); // a slow reader
        };
        assert!(
            end.is_ok(),
            "via {addr}: the client got a reset: {end:?} after {} bytes",
            got.len()
        );
        let mut want = vec![0u8; LEN];
        Rng::new(3).fill(&mut want);
        assert!(
            got.len() == LEN && got == want,
            "via {addr}: {} of {LEN} bytes",
            got.len()
        );

        // The client resets after sending: the server gets every byte, then EOF.
        let mut c = connect(addr);
        c.write_all(b"RECV").unwrap();
        let mut data = vec![0u8; LEN];
        Rng::new(4).fill(&mut data);
        c.write_all(&data).unwrap();
        wait_acked(&c);
        reset(c);
        let (n, clean) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server report");
        assert_eq!(n, LEN, "via {addr}: the server got {n} of {LEN} bytes");
        assert!(clean, "via {addr}: the server saw a reset, not a FIN");
    }
    let base = corral.baseline();
    corral.assert_quiescent(&base);
}

/// One TCP frontend on `port` (with `frontend` lines added) to one server.
fn one_server(port: u16, server: SocketAddr, frontend: &str) -> String {
    format!(
        r#"
[global]
workers = 1

[frontend.fe]
bind = "127.0.0.1:{port}"
mode = "tcp"
{frontend}
default_backend = "be"

[backend.be]
mode = "tcp"
timeout = {{ connect = "1s", client = "5s", server = "5s" }}
server.a = {{ addr = "{server}" }}
"#
    )
}

/// The last ACK of the handshake with a server is delayed to ride on the
/// client's first bytes only when corral already has them. A server that
/// speaks first, behind a client that waits for it, sees its connection at
/// once: with that ACK delayed (up to 200 ms), its accept, and its banner,
/// would wait. A client that speaks first is served as promptly.
#[test]
fn a_server_that_speaks_first_is_heard_at_once() {
    let srv = NameServer::start("banner");
    let port = free_port();
    let corral = Corral::start(&one_server(port, srv.addr, ""));
    let mut silent = Vec::new();
    let mut talking = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(name_via(corral.addr()), "banner");
        silent.push(t.elapsed());
        let t = Instant::now();
        let mut s = connect(corral.addr());
        s.write_all(b"hi\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "banner");
        assert_eq!(read_line(&mut s).unwrap(), "hi");
        talking.push(t.elapsed());
    }
    silent.sort();
    talking.sort();
    let limit = Duration::from_millis(100);
    assert!(silent[2] < limit, "a silent client: {silent:?}");
    assert!(
        talking[2] < limit,
        "a client that speaks first: {talking:?}"
    );
}

/// With the client's first bytes in hand (here `defer_accept`: accepted only
/// once they are in), corral's handshake with the server delays its last ACK
/// to ride on them: the server receives one segment fewer than from a client
/// that connects, then writes.
#[test]
fn with_the_first_bytes_in_hand_the_handshake_ack_rides_on_them() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let corral = Corral::start(&one_server(
        port,
        l.local_addr().unwrap(),
        "defer_accept = true",
    ));
    let head = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut direct = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    direct.write_all(head).unwrap();
    let plain = segments_for_a_request(&l);
    for _ in 0..3 {
        let mut s = connect(corral.addr());
        s.write_all(head).unwrap();
        let via = segments_for_a_request(&l);
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        assert_eq!(
            via,
            plain - 1,
            "segments in: {via} via corral, {plain} direct"
        );
    }
}
