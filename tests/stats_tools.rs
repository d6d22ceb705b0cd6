//! The stats socket and page driven by the operators' real tools: hatop in
//! a tmux pane, Prometheus's haproxy_exporter on the socket, Python's
//! prometheus_client parsing `/metrics`, headless Chromium rendering `/`.
//! Each tool comes from Debian's packages; `.ci/run` installs them and sets
//! `CORRAL_REQUIRE_TOOLS=1`, so there a missing tool fails the test
//! instead of skipping it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{Client, Origin};
use common::*;

struct Setup {
    _corral: Corral,
    sock: PathBuf,
    page: SocketAddr,
    _servers: Vec<Origin>,
}

/// corral with 2 workers, frontend `web`, backend `app` over s0 and s1,
/// the socket and the page; `requests` served through it.
fn start(requests: usize) -> Setup {
    let s0 = Origin::start("s0");
    let s1 = Origin::start("s1");
    let sock = temp_dir("tools").join("admin.sock");
    let page: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        r#"
[global]
workers = 2

[stats]
socket = "{}"
level = "admin"
http = "{page}"

[defaults]
mode = "http"
timeout = {{ connect = "2s", client = "5s", server = "5s" }}

[frontend.web]
bind = "127.0.0.1:{}"
default_backend = "app"

[backend.app]
check = {{ interval = "500ms" }}
server.s0 = {{ addr = "{}" }}
server.s1 = {{ addr = "{}" }}
"#,
        sock.display(),
        free_port(),
        s0.addr,
        s1.addr
    );
    let corral = Corral::start(&text);
    for _ in 0..requests {
        let mut c = Client::connect(corral.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(c.response(false).unwrap().status, 200);
    }
    Setup {
        _corral: corral,
        sock,
        page,
        _servers: vec![s0, s1],
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let r = common::http::request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: stats\r\n\r\n").as_bytes(),
    )
    .expect("the stats page answers");
    assert_eq!(r.status, 200);
    r.text()
}

/// hatop connects, enters prompt mode and shows every proxy and server
/// with its status; its `disable server` key path works through the socket.
#[test]
fn hatop_shows_proxies_and_servers() {
    if !have("hatop") || !have("tmux") {
        return;
    }
    let s = start(10);
    let name = format!("corral-hatop-{}", std::process::id());
    let tmux_sock = temp_dir("tmux").join("t.sock");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&tmux_sock)
            .args(args)
            .output()
            .expect("tmux runs")
    };
    let hatop = format!("hatop -s {}; sleep 60", s.sock.display());
    let out = tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "200",
        "-y",
        "50",
        &hatop,
    ]);
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let screen = loop {
        let cap = tmux(&["capture-pane", "-t", &name, "-p"]);
        let text = String::from_utf8_lossy(&cap.stdout).into_owned();
        if text.contains("BACKEND") && text.contains("s1") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    tmux(&["kill-server"]);
    assert!(!screen.contains("error"), "hatop failed:\n{screen}");
    assert!(screen.contains("corral Version"), "{screen}");
    let row = |name: &str| {
        screen
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{screen}"))
            .to_string()
    };
    assert!(
        screen.contains(">>> web") && screen.contains(">>> app"),
        "{screen}"
    );
    assert!(row("FRONTEND").contains("OPEN"), "{screen}");
    assert!(row("BACKEND").contains("UP"), "{screen}");
    for sv in ["s0", "s1"] {
        let r = row(sv);
        assert!(r.contains(" UP ") && r.contains("L4OK"), "{r}");
    }
    drop(s);
}

/// Prometheus's haproxy_exporter scrapes the socket: `haproxy_up 1` and the
/// per-server response counters, exact.
#[test]
fn the_haproxy_exporter_scrapes_the_socket() {
    if !have("prometheus-haproxy-exporter") {
        return;
    }
    let s = start(20);
    let port = free_port();
    let mut exporter = Command::new("prometheus-haproxy-exporter")
        .arg(format!("--haproxy.scrape-uri=unix:{}", s.sock.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the exporter starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            if let Ok(r) = common::http::request(addr, b"GET /metrics HTTP/1.0\r\n\r\n") {
                break r.text();
            }
        }
        assert!(Instant::now() < deadline, "the exporter never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = exporter.kill();
    let _ = exporter.wait();
    let value = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    assert_eq!(value("haproxy_up"), Some(1.0), "{metrics}");
    let per_server: f64 = ["s0", "s1"]
        .iter()
        .map(|sv| {
            value(&format!(
                "haproxy_server_http_responses_total{{backend=\"app\",code=\"2xx\",server=\"{sv}\"}}"
            ))
            .unwrap_or_else(|| panic!("no 2xx counter for {sv}:\n{metrics}"))
        })
        .sum();
    assert_eq!(per_server, 20.0);
    assert_eq!(
        value("haproxy_frontend_http_requests_total{frontend=\"web\"}"),
        Some(20.0)
    );
    assert_eq!(
        value("haproxy_server_up{backend=\"app\",server=\"s0\"}"),
        Some(1.0)
    );
    drop(s);
}

/// `/metrics` parses with the Prometheus client library's own parser, every
/// family has HELP and TYPE, and the response counters are exact.
#[test]
fn metrics_parse_with_prometheus_client() {
    let py = "/usr/bin/python3";
    let ok = Command::new(py)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CORRAL_REQUIRE_TOOLS").is_none(),
            "python3-prometheus-client is required"
        );
        eprintln!("SKIPPED: python3-prometheus-client is not installed");
        return;
    }
    let s = start(12);
    let text = http_get(s.page, "/metrics");
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = list(text_string_to_metric_families(sys.stdin.read()))
out = {}
for f in fams:
    assert f.documentation, f.name
    assert f.type in ("counter", "gauge"), (f.name, f.type)
    for s in f.samples:
        key = s.name + "{" + ",".join(k + "=" + v for k, v in sorted(s.labels.items())) + "}"
        out[key] = s.value
print(len(fams))
for k in sorted(out):
    print(k, out[k])
"#;
    let mut child = Command::new(py)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: usize = stdout.lines().next().unwrap().parse().unwrap();
    assert!(families > 40, "{families} families");
    let has = |k: &str, v: &str| {
        assert!(
            stdout.lines().any(|l| l == format!("{k} {v}")),
            "no {k} {v} in\n{stdout}"
        )
    };
    has(
        "corral_backend_http_responses_total{code=2xx,proxy=app}",
        "12.0",
    );
    has("corral_frontend_http_requests_total{proxy=web}", "12.0");
    has("corral_backend_up{proxy=app}", "1.0");
    has("corral_process_requests_total{}", "12.0");
    let s0: f64 = ["s0", "s1"]
        .iter()
        .map(|sv| {
            let k = format!("corral_server_sessions_total{{proxy=app,server={sv}}} ");
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&k))
                .unwrap()
                .parse::<f64>()
                .unwrap()
        })
        .sum();
    assert_eq!(s0, 12.0);
    drop(s);
}

/// The HTML page renders in headless Chromium with no console error, no
/// failed request and one table per proxy (and the process summary).
#[test]
fn the_stats_page_renders_in_chromium() {
    if !have("chromium") {
        return;
    }
    let s = start(5);
    // The page is self-contained.
    let html = http_get(s.page, "/");
    for external in ["<script", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(external), "external resource {external}");
    }
    let shot = temp_dir("chromium").join("stats.png");
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/page_check.py");
    // The checker itself catches errors: a page with one must be flagged.
    let bad = Command::new("/usr/bin/python3")
        .arg(&checker)
        .arg("data:text/html,<p>x</p><script>console.error('boom')</script>")
        .arg(&shot)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("boom"),
        "the checker misses console errors: {bad:?}"
    );
    let out = Command::new("/usr/bin/python3")
        .arg(&checker)
        .arg(format!("http://{}/", s.page))
        .arg(&shot)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(report.contains("\"loaded\": true"), "{report}");
    assert!(report.contains("\"errors\": []"), "{report}");
    assert!(
        report.contains("\"tables\": 3"),
        "process, web, app: {report}"
    );
    let png = std::fs::metadata(&shot).unwrap().len();
    assert!(png > 10_000, "screenshot of {png} bytes");
    eprintln!("screenshot: {}", shot.display());
    drop(s);
}
