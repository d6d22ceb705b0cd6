//! Parsing each rule form, and the errors of each.

use std::net::IpAddr;
use std::time::Duration;

use super::acl::cidr;
use super::ast::*;
use super::{build, Context};
use crate::model::{Backend, Balance, DataType, KeyType, Mode, Table, Timeouts};

fn backend(name: &str, mode: Mode) -> Backend {
    Backend {
        name: name.into(),
        mode,
        balance: Balance::RoundRobin,
        hash_header: None,
        forwardfor: false,
        retries: 3,
        allbackups: false,
        splice: true,
        timeouts: Timeouts::default(),
        check: None,
        stick: None,
        cache: None,
        http_reuse: Default::default(),
        pool_max_idle: 256,
        pool_purge_delay: std::time::Duration::from_secs(5),
        servers: Vec::new(),
    }
}

fn table(name: &str, key: KeyType, store: &[DataType]) -> Table {
    Table {
        name: name.into(),
        key,
        key_len: if key == KeyType::String { 32 } else { 0 },
        size: 100,
        expire: None,
        store: store.to_vec(),
    }
}

fn world() -> (Vec<Backend>, Vec<Table>) {
    let s10 = Duration::from_secs(10);
    let backends = vec![
        backend("app", Mode::Http),
        backend("api", Mode::Http),
        backend("raw", Mode::Tcp),
    ];
    let tables = vec![
        table(
            "per_ip",
            KeyType::Ip,
            &[
                DataType::ConnCur,
                DataType::ConnRate(s10),
                DataType::HttpReqRate(s10),
                DataType::Gpc0,
            ],
        ),
        table("by_path", KeyType::String, &[DataType::HttpReqCnt]),
        table("v6", KeyType::Ipv6, &[]),
        table("ints", KeyType::Integer, &[]),
    ];
    (backends, tables)
}

pub(super) fn run(mode: Mode, lines: &[&str]) -> (RuleSet, Vec<(usize, usize, String)>) {
    let (backends, tables) = world();
    let cx = Context {
        frontend: "fe",
        mode,
        backends: &backends,
        tables: &tables,
    };
    let (rs, errs) = build(lines, &cx);
    (
        rs,
        errs.into_iter()
            .map(|(i, e)| (i, e.offset, e.message))
            .collect(),
    )
}

pub(super) fn ok(lines: &[&str]) -> RuleSet {
    let (rs, errs) = run(Mode::Http, lines);
    assert!(errs.is_empty(), "{lines:?}: {errs:?}");
    rs
}

/// The only error of `lines` (http mode): (line index, byte offset, message).
pub(super) fn err(mode: Mode, lines: &[&str]) -> (usize, usize, String) {
    let (_, mut errs) = run(mode, lines);
    assert_eq!(errs.len(), 1, "{lines:?}: {errs:?}");
    errs.remove(0)
}

fn test_of(line: &str) -> AclTest {
    let rs = ok(&[
        "tcp-request connection track-sc0 src table per_ip",
        "http-request track-sc1 path table by_path",
        line,
    ]);
    rs.acls[0].tests[0].clone()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn acl_fetches_and_matchers() {
    let t = test_of("acl a src 127.0.0.1 10.1.2.3/8 ::1 2001:db8::1/32 192.168.0.0/255.255.0.0");
    assert_eq!(t.fetch, Fetch::Src);
    let nets = [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
        "2001:db8::/32",
        "192.168.0.0/16",
    ]
    .map(|s| {
        let (a, p) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse::<IpAddr>().unwrap(),
            prefix: p.parse().unwrap(),
        }
    })
    .to_vec();
    assert_eq!(t.matcher, Matcher::Ip(nets));

    let t = test_of("acl a dst_port 80 443");
    assert_eq!(t.fetch, Fetch::DstPort);
    assert_eq!(
        t.matcher,
        Matcher::Int {
            op: IntOp::Eq,
            values: vec![80, 443]
        }
    );
    for (op, want) in [
        ("eq", IntOp::Eq),
        ("ge", IntOp::Ge),
        ("gt", IntOp::Gt),
        ("le", IntOp::Le),
        ("lt", IntOp::Lt),
    ] {
        let t = test_of(&format!("acl a sc0_conn_rate {op} 10"));
        assert_eq!(
            t.matcher,
            Matcher::Int {
                op: want,
                values: vec![10]
            }
        );
    }

    let str_m = |kind, ignore_case, v: &[&str]| Matcher::Str {
        kind,
        ignore_case,
        values: strs(v),
    };
    let t = test_of("acl a path /a /b");
    assert_eq!(
        (t.fetch, t.matcher),
        (Fetch::Path, str_m(StrMatch::Exact, false, &["/a", "/b"]))
    );
    let t = test_of("acl a path_beg -i /api");
    assert_eq!(
        (t.fetch, t.matcher),
        (Fetch::Path, str_m(StrMatch::Begin, true, &["/api"]))
    );
    let t = test_of("acl a path_end .jpg .png");
    assert_eq!(
        (t.fetch, t.matcher),
        (Fetch::Path, str_m(StrMatch::End, false, &[".jpg", ".png"]))
    );
    let t = test_of("acl a url -m sub admin");
    assert_eq!(
        (t.fetch, t.matcher),
        (Fetch::Url, str_m(StrMatch::Sub, false, &["admin"]))
    );
    let t = test_of("acl a hdr(Host) -i -m str example.com \"a b\"");
    assert_eq!(
        (t.fetch, t.matcher),
        (
            Fetch::Hdr("Host".into()),
            str_m(StrMatch::Exact, true, &["example.com", "a b"])
        )
    );
    let t = test_of("acl a req.hdr(X-Y) -m beg -- -i");
    assert_eq!(
        (t.fetch, t.matcher),
        (
            Fetch::Hdr("X-Y".into()),
            str_m(StrMatch::Begin, false, &["-i"])
        )
    );
    let t = test_of("acl a method GET HEAD");
    assert_eq!(
        (t.fetch, t.matcher),
        (
            Fetch::Method,
            str_m(StrMatch::Exact, false, &["GET", "HEAD"])
        )
    );
    let t = test_of(r"acl a path -i -m reg ^/img/.*\.png$");
    let Matcher::Regex(res) = &t.matcher else {
        panic!("{t:?}")
    };
    assert_eq!(res[0].as_str(), r"^/img/.*\.png$");
    assert!(
        res[0].ignore_case() && res[0].is_match("/IMG/x.PNG") && !res[0].is_match("/img/x.gif")
    );

    for (line, slot, data) in [
        ("acl a sc0_conn_cur gt 1", 0, ScData::ConnCur),
        ("acl a sc_conn_rate(0) gt 1", 0, ScData::ConnRate),
        ("acl a sc0_get_gpc0 gt 0", 0, ScData::Gpc0),
        ("acl a sc_get_gpc0(0) gt 0", 0, ScData::Gpc0),
        ("acl a sc1_http_req_cnt ge 5", 1, ScData::HttpReqCnt),
        ("acl a sc_http_req_cnt(1) ge 5", 1, ScData::HttpReqCnt),
    ] {
        assert_eq!(test_of(line).fetch, Fetch::Sc { slot, data }, "{line}");
    }
}

#[test]
fn acl_lines_with_one_name_add_tests() {
    let rs = ok(&["acl a path /x", "acl b method GET", "acl a path /y"]);
    assert_eq!(rs.acls.len(), 2);
    assert_eq!(rs.acl("a").unwrap().tests.len(), 2);
    assert_eq!(rs.acl("b").unwrap().tests.len(), 1);
}

#[test]
fn conditions() {
    let rs = ok(&[
        "acl a path /a",
        "acl b method GET",
        "use_backend api if a !b || ! a or { path_beg /x }",
        "use_backend app unless !{ method POST }",
        "use_backend app",
    ]);
    let named = |i, negated| Term {
        negated,
        acl: AclRef::Named(i),
    };
    let anon = |fetch, kind, v: &str, negated| Term {
        negated,
        acl: AclRef::Anonymous(AclTest {
            fetch,
            matcher: Matcher::Str {
                kind,
                ignore_case: false,
                values: vec![v.into()],
            },
        }),
    };
    assert_eq!(
        rs.use_backend[0],
        UseBackend {
            backend: 1,
            cond: Some(Cond {
                unless: false,
                or_terms: vec![
                    vec![named(0, false), named(1, true)],
                    vec![named(0, true)],
                    vec![anon(Fetch::Path, StrMatch::Begin, "/x", false)],
                ],
            }),
        }
    );
    assert_eq!(
        rs.use_backend[1].cond,
        Some(Cond {
            unless: true,
            or_terms: vec![vec![anon(Fetch::Method, StrMatch::Exact, "POST", true)]]
        })
    );
    assert_eq!(
        rs.use_backend[2],
        UseBackend {
            backend: 0,
            cond: None
        }
    );
}

#[test]
fn tcp_connection_rules() {
    let rs = ok(&[
        "tcp-request connection track-sc0 src table per_ip",
        "tcp-request connection track-sc2 src table v6 if { src 10.0.0.0/8 }",
        "tcp-request connection reject if { sc0_conn_rate gt 100 }",
        "tcp-request connection accept",
        "tcp-request connection sc-inc-gpc0(0) if { sc_conn_cur(0) gt 10 }",
        "tcp-request connection sc0-inc-gpc0",
    ]);
    let a: Vec<&TcpAction> = rs.tcp_connection.iter().map(|r| &r.action).collect();
    assert_eq!(
        a,
        [
            &TcpAction::Track(Track {
                slot: 0,
                key: TrackKey::Src,
                table: 0
            }),
            &TcpAction::Track(Track {
                slot: 2,
                key: TrackKey::Src,
                table: 2
            }),
            &TcpAction::Reject,
            &TcpAction::Accept,
            &TcpAction::IncGpc0 { slot: 0 },
            &TcpAction::IncGpc0 { slot: 0 },
        ]
    );
    assert!(rs.tcp_connection[1].cond.is_some() && rs.tcp_connection[3].cond.is_none());
}

#[test]
fn http_request_and_response_rules() {
    let rs = ok(&[
        "http-request track-sc0 src table per_ip",
        "http-request track-sc1 req.hdr(X-Key) table by_path",
        "http-request track-sc2 url table by_path if { method POST }",
        "http-request deny",
        "http-request deny deny_status 429 if { sc0_http_req_rate gt 200 }",
        "http-request set-header X-Forwarded-Proto http",
        r#"http-request add-header X-Note "a b" c 100%% "if" if { path /x }"#,
        "http-request del-header Cookie",
        r#"http-request return status 503 content-type text/plain string "busy, retry" if { path_beg /api }"#,
        "http-request return",
        "http-request sc-inc-gpc0(0)",
        "http-response set-header Server corral",
        "http-response add-header Via 1.1\\ corral",
        "http-response del-header X-Powered-By unless { path /debug }",
    ]);
    let a: Vec<&HttpRequestAction> = rs.http_request.iter().map(|r| &r.action).collect();
    assert_eq!(
        a,
        [
            &HttpRequestAction::Track(Track {
                slot: 0,
                key: TrackKey::Src,
                table: 0
            }),
            &HttpRequestAction::Track(Track {
                slot: 1,
                key: TrackKey::ReqHdr("X-Key".into()),
                table: 1
            }),
            &HttpRequestAction::Track(Track {
                slot: 2,
                key: TrackKey::Url,
                table: 1
            }),
            &HttpRequestAction::Deny { status: 403 },
            &HttpRequestAction::Deny { status: 429 },
            &HttpRequestAction::Header(HeaderAction::Set {
                name: "X-Forwarded-Proto".into(),
                value: "http".into()
            }),
            &HttpRequestAction::Header(HeaderAction::Add {
                name: "X-Note".into(),
                value: "a b c 100% if".into()
            }),
            &HttpRequestAction::Header(HeaderAction::Del {
                name: "Cookie".into()
            }),
            &HttpRequestAction::Return {
                status: 503,
                content_type: Some("text/plain".into()),
                body: Some("busy, retry".into())
            },
            &HttpRequestAction::Return {
                status: 200,
                content_type: None,
                body: None
            },
            &HttpRequestAction::IncGpc0 { slot: 0 },
        ]
    );
    assert!(rs.http_request[6].cond.is_some());
    let r: Vec<&HeaderAction> = rs.http_response.iter().map(|r| &r.action).collect();
    assert_eq!(
        r,
        [
            &HeaderAction::Set {
                name: "Server".into(),
                value: "corral".into()
            },
            &HeaderAction::Add {
                name: "Via".into(),
                value: "1.1 corral".into()
            },
            &HeaderAction::Del {
                name: "X-Powered-By".into()
            },
        ]
    );
    assert!(rs.http_response[2].cond.as_ref().unwrap().unless);
}

#[test]
fn tcp_frontend_rules() {
    let (rs, errs) = run(
        Mode::Tcp,
        &[
            "acl local src 127.0.0.0/8",
            "tcp-request connection reject unless local",
            "use_backend raw if { dst_port 22 }",
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rs.use_backend[0].backend, 2);
}

#[test]
fn networks() {
    let c = |s: &str| cidr(s).map(|c| format!("{}/{}", c.addr, c.prefix));
    assert_eq!(c("10.1.2.3/8").as_deref(), Some("10.0.0.0/8"));
    assert_eq!(c("0.0.0.0/0").as_deref(), Some("0.0.0.0/0"));
    assert_eq!(c("::/0").as_deref(), Some("::/0"));
    assert_eq!(c("10.0.0.0/255.255.255.0").as_deref(), Some("10.0.0.0/24"));
    assert_eq!(c("10.0.0.0/255.0.255.0"), None);
    assert_eq!(c("::1/129"), None);
    assert_eq!(c("::1/ffff::"), None);
    assert_eq!(c("10.0.0.0/"), None);
    assert_eq!(c("host"), None);
}
