//! Valid configurations parse into the expected model.

use std::net::SocketAddr;
use std::time::Duration;

use corral_config::*;

/// The whole language, HTTP included (this build refuses HTTP mode).
const HTTP: Support = Support::ALL;

/// The example of CONFIG.md without `cache`/`peers`, on 127.0.0.x addresses.
pub const FULL: &str = r#"
[global]
workers = "auto"
maxconn = 20000
hard_stop_after = "30s"
memory_limit = "512MiB"
user = "corral"
group = "corral"
pidfile = "/run/corral/corral.pid"
log = "stdout"

[stats]
socket = "/run/corral/admin.sock"
mode = "0660"
level = "admin"
http = "127.0.0.1:8404"

[defaults]
mode = "http"
splice = true
timeout = { connect = "5s", client = "30s", server = "30s", tunnel = "1h", http_request = "10s", http_keep_alive = "5s", check = "2s" }
retries = 3

[frontend.web]
bind = ["127.0.0.1:80", "[::1]:80"]
mode = "http"
maxconn = 10000
default_backend = "app"
rules = [
  "acl is_api path_beg /api",
  "tcp-request connection track-sc0 src table per_ip",
  "tcp-request connection reject if { sc0_conn_rate gt 100 }",
  "http-request deny deny_status 429 if { sc0_http_req_rate gt 200 }",
  "http-request set-header X-Forwarded-Proto http",
  "use_backend api if is_api",
]

[backend.app]
mode = "http"
balance = "roundrobin"
check = { interval = "2s", rise = 2, fall = 3, http = "GET /health" }
stick = { on = "src", table = "per_ip" }
server.a = { addr = "127.0.0.1:8080", weight = 10, maxconn = 500 }
server.b = { addr = "127.0.0.2:8080", weight = 10 }
server.c = { addr = "127.0.0.3:8080", backup = true, check = false }

[backend.api]
server.z = { addr = "127.0.0.4:9000" }

[table.per_ip]
type = "ip"
size = 1_000_000
expire = "10m"
store = ["server_id", "conn_cur", "conn_cnt", "conn_rate(10s)", "http_req_cnt", "http_req_rate(10s)", "http_err_rate(10s)", "bytes_in_cnt", "bytes_out_cnt", "gpc0", "gpc0_rate(1m)"]
"#;

fn ok(src: &str) -> Config {
    match parse_with(src, "t.toml", HTTP) {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn full_example_parses() {
    let c = ok(FULL);
    let g = &c.global;
    assert!(g.workers >= 1);
    assert_eq!(g.maxconn, 20000);
    assert_eq!(g.hard_stop_after, Duration::from_secs(30));
    assert_eq!(g.memory_limit, Some(512 << 20));
    assert_eq!(g.user.as_deref(), Some("corral"));
    assert_eq!(
        g.pidfile.as_deref(),
        Some(std::path::Path::new("/run/corral/corral.pid"))
    );
    assert_eq!(g.log, LogTarget::Stdout);

    let s = c.stats.as_ref().unwrap();
    assert_eq!(s.mode, 0o660);
    assert_eq!(s.level, Level::Admin);
    assert_eq!(s.http, Some(sa("127.0.0.1:8404")));

    assert_eq!(c.frontends.len(), 1);
    let fe = &c.frontends[0];
    assert_eq!(fe.bind, vec![sa("127.0.0.1:80"), sa("[::1]:80")]);
    assert_eq!(fe.mode, Mode::Http);
    assert_eq!(fe.maxconn, 10000);
    assert_eq!(fe.backlog, 10000);
    assert_eq!(fe.default_backend, Some(0));
    assert_eq!(fe.rules.len(), 6);
    assert_eq!(fe.rules[5], "use_backend api if is_api");

    let app = c.backend("app").unwrap();
    assert_eq!(app.mode, Mode::Http);
    assert_eq!(app.balance, Balance::RoundRobin);
    assert_eq!(
        app.check,
        Some(Check {
            interval: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            http: Some("GET /health".into())
        })
    );
    assert_eq!(
        app.stick,
        Some(Stick {
            on: "src".into(),
            table: "per_ip".into()
        })
    );
    let names: Vec<&str> = app.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(app.servers[0].weight, 10);
    assert_eq!(app.servers[0].maxconn, Some(500));
    assert!(app.servers[2].backup && !app.servers[2].check);
    assert!(app.servers[1].check && !app.servers[1].backup);
    assert_eq!(c.backend("api").unwrap().mode, Mode::Http);

    let t = &c.tables[0];
    assert_eq!(t.key, KeyType::Ip);
    assert_eq!(t.size, 1_000_000);
    assert_eq!(t.key_len, 0);
    assert_eq!(t.expire, Some(Duration::from_secs(600)));
    assert_eq!(t.store.len(), 11);
    assert_eq!(t.store[3], DataType::ConnRate(Duration::from_secs(10)));
    assert_eq!(t.store[10], DataType::Gpc0Rate(Duration::from_secs(60)));
}

#[test]
fn minimal_defaults() {
    let c = ok(r#"
[frontend.f]
bind = ":8080"
default_backend = "b"

[backend.b]
server.s = { addr = "127.0.0.1:9000" }
"#);
    assert_eq!(c.global.maxconn, 4096);
    assert_eq!(c.global.hard_stop_after, Duration::from_secs(30));
    assert_eq!(c.global.log, LogTarget::Stdout);
    assert!(c.stats.is_none());
    let fe = &c.frontends[0];
    assert_eq!(fe.bind, vec![sa("0.0.0.0:8080")]);
    assert_eq!(fe.mode, Mode::Tcp);
    assert_eq!(fe.maxconn, 4096);
    assert_eq!(fe.backlog, 4096);
    assert!(fe.splice);
    assert_eq!(fe.timeouts, Timeouts::default());
    let b = &c.backends[0];
    assert_eq!(b.mode, Mode::Tcp);
    assert_eq!(b.retries, 3);
    assert_eq!(b.balance, Balance::RoundRobin);
    assert!(!b.allbackups);
    assert_eq!(b.servers[0].weight, 1);
    assert!(b.servers[0].check);
    assert!(b.check.is_none() && b.stick.is_none() && b.cache.is_none());
}

#[test]
fn defaults_are_inherited_and_overridden() {
    let c = ok(r#"
[global]
maxconn = 100

[stats]
socket = "/tmp/s.sock"

[defaults]
mode = "http"
retries = 5
balance = "leastconn"
maxconn = 50
backlog = 7
allbackups = true
splice = false
timeout = { connect = "1s", client = "2s", server = "3s" }

[frontend.a]
bind = "127.0.0.1:81"
default_backend = "inherits"
timeout = { client = "9s" }

[frontend.b]
bind = ["127.0.0.1:82"]
mode = "tcp"
maxconn = 20
splice = true
default_backend = "overrides"

[backend.inherits]
timeout.server = "4s"
timeout.queue = "8s"
server.x = { addr = "127.0.0.1:1" }

[backend.overrides]
mode = "tcp"
retries = 0
balance = "first"
allbackups = false
server.y = { addr = "127.0.0.1:2" }
"#);
    let s = c.stats.unwrap();
    assert_eq!(s.mode, 0o660);
    assert_eq!(s.level, Level::Operator);
    assert_eq!(s.http, None);

    let a = &c.frontends[0];
    assert_eq!(a.mode, Mode::Http);
    assert_eq!(a.maxconn, 50);
    assert_eq!(a.backlog, 7);
    assert!(!a.splice);
    assert_eq!(a.timeouts.connect, Duration::from_secs(1));
    assert_eq!(a.timeouts.client, Duration::from_secs(9));
    assert_eq!(a.timeouts.server, Duration::from_secs(3));
    assert_eq!(a.timeouts.tunnel, None);
    assert_eq!(
        a.timeouts.queue,
        Duration::from_secs(1),
        "queue follows connect"
    );

    let b = &c.frontends[1];
    assert_eq!(b.mode, Mode::Tcp);
    assert_eq!(b.maxconn, 20);
    assert_eq!(b.backlog, 7);
    assert!(b.splice);
    assert_eq!(b.default_backend, Some(1));

    let inh = &c.backends[0];
    assert_eq!(inh.mode, Mode::Http);
    assert_eq!(inh.retries, 5);
    assert_eq!(inh.balance, Balance::LeastConn);
    assert!(inh.allbackups);
    assert!(!inh.splice);
    assert_eq!(inh.timeouts.connect, Duration::from_secs(1));
    assert_eq!(inh.timeouts.client, Duration::from_secs(2));
    assert_eq!(inh.timeouts.server, Duration::from_secs(4));
    assert_eq!(inh.timeouts.queue, Duration::from_secs(8));

    let ov = &c.backends[1];
    assert_eq!(ov.mode, Mode::Tcp);
    assert_eq!(ov.retries, 0);
    assert_eq!(ov.balance, Balance::First);
    assert!(!ov.allbackups);
}

#[test]
fn server_order_is_file_order() {
    let c = ok(r#"
[frontend.f]
bind = ":1"
default_backend = "b"

[backend.b]
server.zeta = { addr = "127.0.0.1:1" }
server.alpha = { addr = "127.0.0.1:2" }
server.mid = { addr = "127.0.0.1:3" }

[backend.b.server.last]
addr = "[::1]:4"
weight = 0
"#);
    let names: Vec<&str> = c.backends[0]
        .servers
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["zeta", "alpha", "mid", "last"]);
    assert_eq!(c.backends[0].servers[3].addr, sa("[::1]:4"));
    assert_eq!(c.backends[0].servers[3].weight, 0);
}

#[test]
fn frontend_with_rules_needs_no_default_backend() {
    let c = ok(r#"
[frontend.f]
bind = ["0.0.0.0:80", "[::]:80", "127.0.0.1:81"]
rules = ["use_backend b"]

[backend.b]
server.s = { addr = "localhost:9000" }
"#);
    assert_eq!(c.frontends[0].default_backend, None);
    assert!(c.backends[0].servers[0].addr.ip().is_loopback());
}

#[test]
fn string_table_and_global_variants() {
    let c = ok(r#"
[global]
workers = 3
log = "/var/log/corral.log"
memory_limit = 1048576

[table.t]
type = "string"
key_len = 64
size = "1m"
"#);
    assert_eq!(c.global.workers, 3);
    assert_eq!(c.global.log, LogTarget::File("/var/log/corral.log".into()));
    assert_eq!(c.global.memory_limit, Some(1 << 20));
    let t = &c.tables[0];
    assert_eq!(
        (t.key, t.key_len, t.size, t.expire),
        (KeyType::String, 64, 1 << 20, None)
    );
    assert!(t.store.is_empty());
}

#[test]
fn load_reads_files_and_reports_unreadable_ones() {
    let dir = std::env::temp_dir().join(format!("corral-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ok.toml");
    std::fs::write(
        &path,
        "[frontend.f]\nbind = \"127.0.0.1:80\"\ndefault_backend = \"b\"\n\
         [backend.b]\nserver.s = { addr = \"127.0.0.1:8080\" }\n",
    )
    .unwrap();
    assert!(load(&path).is_ok());
    let missing = dir.join("missing.toml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!((e.0[0].line, e.0[0].column), (0, 0));
    assert!(e
        .to_string()
        .starts_with(&format!("{}:0:0: ", missing.display())));
    std::fs::remove_dir_all(&dir).unwrap();
}
