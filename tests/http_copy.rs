//! Bodies copied through user space (`splice = false`, as TLS will be): the
//! server is read 64 KiB at a time once the head is through, body data goes
//! to the client straight from the server connection's buffer (a chunk's
//! behind its framing, in one sendmsg), and what
//! waits there for a slow client is timed as the client's, never as the
//! server's.

mod common;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::http::*;

const MIB: u64 = 1 << 20;

fn start(timeouts: &str) -> (common::Corral, Origin) {
    let o = Origin::start("a");
    let (c, _) = HttpSetup {
        servers: &[o.addr],
        backend: "splice = false",
        timeouts,
        ..Default::default()
    }
    .start();
    (c, o)
}

/// A copying corral, its worker's pid to trace and a client that has had
/// one answer; `None` without strace.
fn traced_setup() -> Option<(common::Corral, Origin, i32, Client)> {
    if !common::have_strace() {
        return None;
    }
    let (c, o) = start(r#"{ connect = "2s", client = "20s", server = "20s" }"#);
    let worker = c.worker_pids()[0];
    let mut cl = Client::connect(c.addr());
    assert_eq!(cl.get("/name").status, 200);
    Some((c, o, worker, cl))
}

fn ask_download(cl: &mut Client, len: u64) {
    cl.send(format!("GET /download?len={len} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let head = cl.r.head().unwrap().unwrap();
    assert!(head.line.contains(" 200 "), "{}", head.line);
}

#[test]
fn a_copied_body_is_read_from_the_server_64_kib_at_a_time() {
    let Some((_c, _o, worker, mut cl)) = traced_setup() else {
        return;
    };
    let len = 64 * MIB;
    let calls = common::strace_during(worker, "recvfrom", || {
        ask_download(&mut cl, len);
        let mut sum = Sum::default();
        cl.r.exact(len, &mut |b| sum.add(b)).unwrap();
        assert_eq!(sum.finish(), pattern_sum(len));
    });
    let reads = calls.lines().filter(|l| l.contains("recvfrom(")).count();
    eprintln!("64 MiB copied: {reads} recv calls");
    assert!(reads > 0, "strace saw no recv: not attached?");
    // 16 per MiB at 64 KiB a read (a few come back short); 16 KiB reads
    // would be 64 per MiB.
    assert!(reads < 64 * 32, "{reads} recv calls for 64 MiB");
    assert_eq!(cl.get("/name").status, 200, "the connection goes on");
}

#[test]
fn a_client_slow_to_take_a_copied_body_is_not_timed_as_the_server() {
    // The server sends at once; the client pauses for four server
    // timeouts before it reads. What corral holds for the client is the
    // client's wait (a 5 s timeout), not the server's (300 ms).
    let (c, _o) = start(r#"{ connect = "2s", client = "5s", server = "300ms" }"#);
    for round in 0..3 {
        let mut cl = Client::connect(c.addr());
        let len = 32 * MIB;
        ask_download(&mut cl, len);
        thread::sleep(Duration::from_millis(1200));
        let mut sum = Sum::default();
        cl.r.exact(len, &mut |b| sum.add(b))
            .unwrap_or_else(|e| panic!("round {round}: the body was cut: {e}"));
        assert_eq!(sum.finish(), pattern_sum(len), "round {round}");
    }
}

/// A client whose socket takes a few KiB at most.
fn small_window_client(addr: std::net::SocketAddr) -> Client {
    Client {
        r: Reader::new(common::small_rcvbuf_connect(addr)),
    }
}

/// The bytes queued in corral's socket toward `client` (its send queue,
/// `tx_queue` in /proc/net/tcp: addresses there are hex, the IPv4 one in
/// the host's byte order).
fn corral_send_queue(frontend: std::net::SocketAddr, client: &Client) -> u64 {
    let hex = |a: std::net::SocketAddr| {
        let std::net::SocketAddr::V4(v4) = a else {
            panic!("IPv4 loopback only")
        };
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        )
    };
    let (local, remote) = (hex(frontend), hex(client.r.s.local_addr().unwrap()));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let row = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[1] == local && f[2] == remote)
        .unwrap_or_else(|| panic!("no socket {local} -> {remote} in /proc/net/tcp"));
    let tx = row[4].split(':').next().unwrap();
    u64::from_str_radix(tx, 16).unwrap()
}

/// The bytes waiting in `client`'s own receive queue.
fn client_receive_queue(client: &Client) -> u64 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`, a local.
    let rc = unsafe { libc::ioctl(client.r.s.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0);
    (n as usize + client.r.buf.len()) as u64
}

#[test]
fn a_body_all_in_corrals_hands_is_not_timed_as_the_server() {
    // A body sized so that, while the client pauses, the kernel buffers
    // hold all but its last few KiB, which corral holds in its read
    // buffer: the server has sent everything and owes nothing more, so a
    // pause of three server timeouts must cost nothing.
    let (c, _o) = start(r#"{ connect = "2s", client = "5s", server = "300ms" }"#);
    // How much the kernel holds for a paused client: measured on a large
    // body (corral's read buffer full on top of it), from corral's send
    // queue and the client's receive queue.
    let mut probe = small_window_client(c.addr());
    ask_download(&mut probe, 64 * MIB);
    thread::sleep(Duration::from_millis(500));
    let held = corral_send_queue(c.addr(), &probe) + client_receive_queue(&probe);
    drop(probe);
    eprintln!("the kernel holds {held} bytes for a paused client");
    for tail in [8 * 1024, 24 * 1024, 40 * 1024] {
        let mut cl = small_window_client(c.addr());
        let len = held + tail;
        ask_download(&mut cl, len);
        thread::sleep(Duration::from_millis(1000));
        let mut sum = Sum::default();
        cl.r.exact(len, &mut |b| sum.add(b))
            .unwrap_or_else(|e| panic!("{tail} bytes past the kernel's: the body was cut: {e}"));
        assert_eq!(sum.finish(), pattern_sum(len));
    }
}

#[test]
fn a_client_that_stops_taking_a_copied_body_times_out_as_a_client() {
    // The server would wait 20 s; the client's 500 ms apply while what
    // corral holds is for the client.
    let (c, _o) = start(r#"{ connect = "2s", client = "500ms", server = "20s" }"#);
    let mut cl = Client::connect(c.addr());
    let len = 256 * MIB;
    ask_download(&mut cl, len);
    thread::sleep(Duration::from_millis(2500));
    // What the kernel buffered still comes, then the end: far short of the
    // body, and soon.
    let t = Instant::now();
    cl.r.s
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = cl.r.buf.len() as u64;
    let mut buf = vec![0u8; 1 << 16];
    let end = loop {
        match cl.r.s.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("not ended after {:?} ({got} bytes): {e}", t.elapsed()),
        }
        assert!(got < len, "the whole body came: no client timeout");
    };
    eprintln!("{end} after {got} bytes");
    assert!(got < len / 2, "{got} of {len} bytes");
}

#[test]
fn copied_chunk_data_goes_out_behind_its_framing_in_one_call() {
    // 64 KiB chunks relayed as chunks: the framing (rewritten canonical)
    // is queued in the client's buffer, and the chunk's data follows it in
    // the same sendmsg straight from the server's buffer, not copied
    // behind it.
    let Some((_c, _o, worker, mut cl)) = traced_setup() else {
        return;
    };
    let len = 16 * MIB;
    let calls = common::strace_during(worker, "sendto,sendmsg", || {
        cl.send(
            format!("GET /download?len={len}&chunked=1 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        let head = cl.r.head().unwrap().unwrap();
        assert!(
            head.has_token("transfer-encoding", "chunked"),
            "{}",
            head.line
        );
        let mut sum = Sum::default();
        cl.r.chunked(&mut |b| sum.add(b)).unwrap();
        assert_eq!(sum.finish(), pattern_sum(len));
    });
    let paired = calls.lines().filter(|l| l.contains("sendmsg(")).count();
    let chunks = (len / 65536) as usize;
    eprintln!("{chunks} chunks: {paired} sendmsg calls");
    // (A chunk whose data came in pieces under 16 KiB is copied.)
    assert!(
        paired >= chunks / 2,
        "{paired} paired sends for {chunks} chunks"
    );
    assert_eq!(cl.get("/name").status, 200, "the connection goes on");
}
