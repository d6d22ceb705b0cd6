//! systemd's Type=notify protocol, with a datagram socket standing in for
//! systemd: READY=1 once workers accept, RELOADING=1 (with MONOTONIC_USEC)
//! then READY=1 around a SIGUSR2 reload, STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Kills the corral process group if the test ends early.
struct Group(i32);
impl Drop for Group {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-self.0), Signal::SIGKILL);
    }
}

fn next_message(sock: &UnixDatagram, deadline: Duration) -> Option<String> {
    sock.set_read_timeout(Some(deadline)).ok()?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_reloading_ready_stopping() {
    let dir = temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let backend = EchoServer::start();
    let port = free_port();
    let config = dir.join("corral.toml");
    std::fs::write(
        &config,
        format!(
            "[global]\nworkers = 1\n[frontend.fe]\nbind = \"127.0.0.1:{port}\"\nmode = \"tcp\"\ndefault_backend = \"be\"\n\
             [backend.be]\nmode = \"tcp\"\nserver.a = {{ addr = \"{}\" }}\n",
            backend.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(corral_bin())
        .arg("-f")
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let _group = Group(child.id() as i32);
    let ready = next_message(&sock, Duration::from_secs(5));
    assert_eq!(ready.as_deref(), Some("READY=1"));
    // Ready means accepting.
    let mut c = connect(format!("127.0.0.1:{port}").parse().unwrap());
    echo_roundtrip(&mut c, b"hello");
    let before = children_of(pid.as_raw());
    assert_eq!(before.len(), 1, "one worker before the reload");
    kill(pid, Signal::SIGUSR2).unwrap();
    let reloading = next_message(&sock, Duration::from_secs(5)).unwrap_or_default();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let usec: u64 = reloading
        .rsplit('=')
        .next()
        .unwrap()
        .parse()
        .expect("a number of microseconds");
    assert!(usec > 0);
    assert_eq!(
        next_message(&sock, Duration::from_secs(5)).as_deref(),
        Some("READY=1")
    );
    // READY=1 comes once the new generation accepts: its worker exists, and
    // a new connection reaches it (the old one left the accept queue).
    let after = children_of(pid.as_raw());
    let new: Vec<i32> = after
        .iter()
        .copied()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "the new worker is running at READY=1: {before:?} -> {after:?}"
    );
    let mut d = connect(format!("127.0.0.1:{port}").parse().unwrap());
    echo_roundtrip(&mut d, b"served by the new generation");
    assert_eq!(
        owner_among(&d, &after),
        Some(new[0]),
        "the connection after READY=1 is the new worker's"
    );
    kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(
        next_message(&sock, Duration::from_secs(5)).as_deref(),
        Some("STOPPING=1")
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
