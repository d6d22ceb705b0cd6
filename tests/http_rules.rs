//! HTTP rules as an operator writes them: routing per request (by path and
//! by host, one keep-alive client reaching two backends), header rewriting
//! both ways, rate limiting with a 429 from `sc0_http_req_rate`, redirects,
//! `X-Forwarded-For`, hop-by-hop fields, and the hashing balancers.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;

use common::http::*;
use common::*;

fn start(frontend_extra: &str, backends: &str, extra: &str) -> Corral {
    HttpSetup {
        global: extra,
        frontend: frontend_extra,
        backends: Some(backends),
        ..Default::default()
    }
    .start()
    .0
}

fn backend(name: &str, servers: &[(&str, SocketAddr)], extra: &str) -> String {
    let mut s = format!("[backend.{name}]\n{extra}\n");
    for (n, a) in servers {
        s.push_str(&format!("server.{n} = {{ addr = \"{a}\" }}\n"));
    }
    s
}

#[test]
fn use_backend_per_request_by_path_and_host() {
    let app = Origin::start("app");
    let api = Origin::start("api");
    let admin = Origin::start("admin");
    let c = start(
        r#"rules = [
  "acl is_api path_beg /api",
  "acl is_admin hdr(host) -i admin.example",
  "use_backend api if is_api",
  "use_backend admin if is_admin",
]"#,
        &[
            backend("app", &[("s", app.addr)], ""),
            backend("api", &[("s", api.addr)], ""),
            backend("admin", &[("s", admin.addr)], ""),
        ]
        .join("\n"),
        "",
    );
    let mut cl = Client::connect(c.addr());
    // One keep-alive connection, alternating backends request by request.
    for _ in 0..3 {
        assert_eq!(cl.get("/").text(), "app");
        assert_eq!(cl.get("/api/users").text(), "api");
    }
    cl.send(b"GET / HTTP/1.1\r\nHost: ADMIN.example\r\n\r\n");
    assert_eq!(cl.response(false).unwrap().text(), "admin");
    // The absolute-form target's authority overrides Host for routing.
    cl.send(b"GET http://admin.example/x HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(cl.response(false).unwrap().text(), "admin");
    let lines = wait_http_log(
        &c,
        cl.r.s.local_addr().unwrap(),
        8,
        std::time::Duration::from_secs(3),
    );
    let backends: Vec<&str> = lines.iter().map(|l| l.backend.as_str()).collect();
    assert_eq!(
        backends,
        ["app", "api", "app", "api", "app", "api", "admin", "admin"]
    );
}

#[test]
fn header_rules_rewrite_requests_and_responses() {
    let o = Origin::start("a");
    let c = start(
        r#"rules = [
  "http-request set-header X-Forwarded-Proto http",
  "http-request add-header X-Added one",
  "http-request add-header X-Added two",
  "http-request del-header X-Secret",
  "http-request set-header X-Api yes if { path_beg /api }",
  "http-response set-header X-Served-By corral",
  "http-response del-header X-Server",
]"#,
        &backend("app", &[("s", o.addr)], ""),
        "",
    );
    let mut cl = Client::connect(c.addr());
    cl.send(
        b"GET /headers HTTP/1.1\r\nHost: t\r\nX-Secret: s3cr3t\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    let r = cl.response(false).unwrap();
    let seen = r.text();
    assert!(seen.contains("X-Forwarded-Proto: http\r\n"), "{seen}");
    assert!(
        !seen.contains("https"),
        "set-header replaced the client's value: {seen}"
    );
    assert!(
        seen.contains("X-Added: one\r\n") && seen.contains("X-Added: two\r\n"),
        "{seen}"
    );
    assert!(!seen.contains("s3cr3t"), "{seen}");
    assert!(!seen.contains("X-Api"), "{seen}");
    assert_eq!(r.head.get("x-served-by"), Some("corral"));
    assert_eq!(r.head.get("x-server"), None);
    cl.send(b"GET /api/headers HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = cl.response(false).unwrap();
    // /api/headers is not /headers: the origin answers its name, and the
    // request carried X-Api (checked on the origin's record).
    assert_eq!(r.status, 200);
    let last = o.heads.lock().unwrap().last().cloned().unwrap();
    assert!(String::from_utf8_lossy(&last).contains("X-Api: yes\r\n"));
}

#[test]
fn a_request_rate_over_the_limit_gets_429() {
    let o = Origin::start("a");
    let c = start(
        r#"rules = [
  "http-request track-sc0 src table per_ip",
  "http-request deny deny_status 429 if { sc0_http_req_rate gt 5 }",
]"#,
        &backend("app", &[("s", o.addr)], ""),
        "[table.per_ip]\ntype = \"ip\"\nsize = 1000\nexpire = \"1m\"\nstore = [\"http_req_rate(10s)\", \"http_req_cnt\"]\n",
    );
    let mut cl = Client::connect(c.addr());
    let statuses: Vec<u16> = (0..8).map(|_| cl.get("/").status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // A 429 keeps the connection (as HAProxy's deny does).
    assert_eq!(cl.get("/").status, 429);
    let lines = wait_http_log(
        &c,
        cl.r.s.local_addr().unwrap(),
        9,
        std::time::Duration::from_secs(3),
    );
    assert_eq!(lines[5].tsc, "PR--", "{}", lines[5].raw);
    assert_eq!(lines[5].server, "<NOSRV>");
}

#[test]
fn redirects() {
    let o = Origin::start("a");
    let c = start(
        r#"rules = [
  "http-request redirect location /login code 302 if { path /private }",
  "http-request redirect prefix https://new.example code 301 if { path_beg /old }",
  "http-request redirect scheme https if { path_beg /secure }",
]"#,
        &backend("app", &[("s", o.addr)], ""),
        "",
    );
    let mut cl = Client::connect(c.addr());
    let r = cl.get("/private");
    assert_eq!((r.status, r.head.get("location")), (302, Some("/login")));
    let r = cl.get("/old/page?x=1");
    assert_eq!(
        (r.status, r.head.get("location")),
        (301, Some("https://new.example/old/page?x=1"))
    );
    let r = cl.get("/secure/a");
    assert_eq!(
        (r.status, r.head.get("location")),
        (302, Some("https://test/secure/a"))
    );
    // Redirects keep the connection; the server was never asked.
    assert_eq!(cl.get("/").text(), "a");
    assert_eq!(o.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    let lines = wait_http_log(
        &c,
        cl.r.s.local_addr().unwrap(),
        4,
        std::time::Duration::from_secs(3),
    );
    assert_eq!(lines[0].tsc, "LR--");
}

#[test]
fn forwardfor_and_hop_by_hop_fields() {
    let o = Origin::start("a");
    let c = start(
        "forwardfor = true",
        &backend("app", &[("s", o.addr)], ""),
        "",
    );
    let mut cl = Client::connect(c.addr());
    cl.send(
        b"POST /headers HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Hop, Content-Length\r\n\
          X-Hop: gone\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
          Upgrade: h2c\r\nX-End: stays\r\nContent-Length: 2\r\n\r\nok",
    );
    let r = cl.response(false).unwrap();
    let seen = r.text();
    assert!(seen.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{seen}");
    for gone in [
        "X-Hop",
        "Keep-Alive",
        "Proxy-Connection",
        "TE:",
        "Upgrade",
        "Connection",
    ] {
        assert!(!seen.contains(gone), "{gone} must not be forwarded: {seen}");
    }
    assert!(seen.contains("X-End: stays\r\n"));
    assert!(
        seen.contains("Content-Length: 2\r\n"),
        "the framing is never stripped: {seen}"
    );
    assert!(seen.starts_with("POST /headers HTTP/1.1\r\n"));
}

#[test]
fn hashing_balancers_keep_a_key_on_one_server() {
    let servers: Vec<Origin> = (0..3).map(|i| Origin::start(&format!("s{i}"))).collect();
    let list: Vec<(String, SocketAddr)> =
        servers.iter().map(|o| (o.name.clone(), o.addr)).collect();
    let refs: Vec<(&str, SocketAddr)> = list.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let c = start(
        r#"rules = ["use_backend by_hdr if { path_beg /h }"]"#,
        &[
            backend("app", &refs, "balance = \"uri\""),
            backend("by_hdr", &refs, "balance = \"hdr(X-User)\""),
        ]
        .join("\n"),
        "",
    );
    let mut cl = Client::connect(c.addr());
    let mut spread = HashSet::new();
    for p in 0..30 {
        let first = cl.get(&format!("/p{p}?a=1")).text();
        for q in 0..3 {
            // The query string is not part of the key.
            assert_eq!(cl.get(&format!("/p{p}?q={q}")).text(), first, "path /p{p}");
        }
        spread.insert(first);
    }
    assert_eq!(spread.len(), 3, "paths spread over every server");
    for user in ["alice", "bob", "carol", "dave"] {
        let mut seen = HashSet::new();
        for _ in 0..4 {
            cl.send(format!("GET /h HTTP/1.1\r\nHost: t\r\nX-User: {user}\r\n\r\n").as_bytes());
            seen.insert(cl.response(false).unwrap().text());
        }
        assert_eq!(seen.len(), 1, "{user} sticks to one server");
    }
}
