//! Two tiny TCP servers for the demo: each answers every connection with
//! `hello from backend X` and closes. `cargo run --example demo_backends`
//! listens on 127.0.0.1:9001 (A) and 127.0.0.1:9002 (B) until killed.

use std::io::Write;
use std::net::TcpListener;
use std::thread;

fn main() -> std::io::Result<()> {
    let mut handles = Vec::new();
    for (name, port) in [("A", 9001), ("B", 9002)] {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        handles.push(thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = writeln!(conn, "hello from backend {name}");
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}
