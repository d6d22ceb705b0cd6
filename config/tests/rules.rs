//! Rule lines: every supported form parses to the expected rules, and bad
//! lines are reported at the offending word with what was expected.

use std::net::IpAddr;

use corral_config::*;

/// The whole language, HTTP included (this build refuses HTTP mode).
const HTTP: Support = Support::ALL;

/// Tables and backends the rules refer to, after the frontend.
const WORLD: &str = r#"
[table.per_ip]
type = "ip"
size = 100
store = ["conn_cur", "conn_rate(10s)", "http_req_rate(10s)", "gpc0"]

[table.by_name]
type = "string"
key_len = 32
size = 100
store = ["http_req_cnt", "gpc0_rate(1m)"]

[backend.app]
mode = "http"
server.s = { addr = "127.0.0.1:9000" }

[backend.api]
mode = "http"
server.s = { addr = "127.0.0.1:9001" }

[backend.db]
mode = "tcp"
server.s = { addr = "127.0.0.1:9002" }
"#;

/// An http frontend `f` with `rules`, one per line from line 6 on (each
/// line is `  "RULE",`: the rule's first character is at column 4).
fn config(rules: &[&str]) -> String {
    let mut s = String::from(
        "[frontend.f]\nbind = \":80\"\nmode = \"http\"\ndefault_backend = \"app\"\nrules = [\n",
    );
    for r in rules {
        s.push_str(&format!("  {},\n", toml_string(r)));
    }
    s.push_str("]\n");
    s.push_str(WORLD);
    s
}

/// `r` as a TOML basic string.
fn toml_string(r: &str) -> String {
    format!("\"{}\"", r.replace('\\', "\\\\").replace('"', "\\\""))
}

fn errors(src: &str) -> Vec<(usize, usize, String)> {
    match parse_with(src, "r.toml", HTTP) {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.into_iter()
                .map(|e| (e.line, e.column, e.message))
                .collect()
        }
    }
}

/// (rules, line, column, message substring); each must give exactly one error.
#[rustfmt::skip]
const BAD: &[(&[&str], usize, usize, &str)] = &[
    (&["acl a sc0_foo gt 1"], 6, 10, "unknown fetch 'sc0_foo' (expected one of: sc0_conn_cur, sc0_conn_cnt, sc0_conn_rate,"),
    (&["acl a pth /x"], 6, 10, "unknown fetch 'pth' (did you mean 'path'?)"),
    (&["acl a dst_port gt eighty"], 6, 22, "invalid integer 'eighty' for 'dst_port'"),
    (&["acl a src 300.1.1.1"], 6, 14, "invalid address '300.1.1.1' for 'src'"),
    (&["acl a path -m reg (x"], 6, 22, "invalid regex '(x'"),
    (&["tcp-request connection rejekt"], 6, 27,
     "unknown action 'rejekt' for tcp-request connection (expected one of: accept, reject, track-sc0, track-sc1, track-sc2, sc-inc-gpc0)"),
    (&["tcp-request connection track-sc0 src"], 6, 40, "missing 'table NAME' after 'track-sc0 src'"),
    (&["tcp-request connection track-sc0 src table nope"], 6, 47, "unknown table 'nope' (declared: per_ip, by_name)"),
    (&["tcp-request connection track-sc0 src table by_name"], 6, 47,
     "table 'by_name' has keys of type string, but track key 'src' needs an ip or ipv6 table"),
    (&["http-request track-sc1 req.hdr(X-User) table per_ip"], 6, 49,
     "table 'per_ip' has keys of type ip, but track key 'req.hdr(X-User)' needs a string table"),
    (&["tcp-request connection track-sc0 src table per_ip", "tcp-request connection reject if { sc0_http_err_rate gt 5 }"], 7, 39,
     "table per_ip does not store http_err_rate, needed by 'sc0_http_err_rate'"),
    (&["http-request track-sc1 path table by_name", "acl hot sc_conn_rate(1) gt 5"], 7, 12,
     "table by_name does not store conn_rate, needed by 'sc_conn_rate(1)'"),
    (&["http-request deny if { sc2_conn_cur gt 5 }"], 6, 27, "sc2 is not tracked by any rule of this frontend"),
    (&["tcp-request connection sc1-inc-gpc0"], 6, 27, "sc1 is not tracked by any rule of this frontend"),
    (&["use_backend api if is_api", "acl is_api path_beg /api"], 6, 23, "unknown acl 'is_api'"),
    (&["use_backend apx"], 6, 16, "unknown backend 'apx' (did you mean"),
    (&["use_backend db"], 6, 16, "frontend 'f' is in http mode but backend 'db' is in tcp mode"),
    (&["use_backend api if { path_beg /api"], 6, 38, "missing '}' to close '{'"),
    (&["tcp-request connection reject if { hdr(Host) x }"], 6, 39,
     "'hdr(Host)' needs an HTTP request, but tcp-request connection rules run before any HTTP request is read"),
    (&["http-request deny deny_status 99"], 6, 34, "invalid HTTP status '99' (expected 200..599)"),
    (&["http-request set-header X-A"], 6, 31, "missing value after 'set-header X-A'"),
    (&["http-request return string hi"], 6, 24, "'string' needs a 'content-type'"),
    (&["http-response track-sc0 src table per_ip"], 6, 18, "unknown action 'track-sc0' for http-response"),
    (&["redirect prefix /x"], 6, 4, "unknown rule directive 'redirect'"),
    // An escape in the TOML string: the error points at the string.
    (&["use_backend \"apx\""], 6, 3, "unknown backend 'apx'"),
];

#[test]
fn bad_rule_lines() {
    let mut failures = Vec::new();
    for (rules, line, column, msg) in BAD {
        let got = errors(&config(rules));
        let ok =
            got.len() == 1 && got[0].0 == *line && got[0].1 == *column && got[0].2.contains(msg);
        if !ok {
            failures.push(format!(
                "{rules:?}: expected {line}:{column}: {msg}\n    got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn positions_in_literal_and_tcp_frontends() {
    // Literal strings hold no escapes: the word is found.
    let src = format!("[frontend.f]\nbind = \":80\"\nmode = \"http\"\nrules = ['use_backend api if {{ path_beg /x }}', 'use_backend nope']\n{WORLD}");
    let got = errors(&src);
    assert_eq!(
        got,
        [(
            4,
            61,
            "unknown backend 'nope' (declared: app, api, db)".to_string()
        )]
    );

    let src = format!("[frontend.t]\nbind = \":81\"\nmode = \"tcp\"\nrules = [\"http-request deny\", \"use_backend db if {{ method GET }}\"]\n{WORLD}");
    let got = errors(&src);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (4, 11));
    assert!(got[0]
        .2
        .contains("http-request rules need mode http, but frontend 't' is in tcp mode"));
    assert_eq!((got[1].0, got[1].1), (4, 52));
    assert!(got[1]
        .2
        .contains("'method' needs an HTTP request, but frontend 't' is in tcp mode"));
}

#[test]
fn every_error_of_every_line() {
    let got = errors(&config(&[
        "acl a pth /x",
        "use_backend api if b",
        "http-request deny if { sc0_conn_cur gt 1 }",
    ]));
    let at: Vec<(usize, usize)> = got.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(at, [(6, 10), (7, 23), (8, 27)], "{got:?}");
}

#[test]
fn every_form_parses() {
    let c = match parse_with(
        &config(&[
            "acl is_api path_beg -i /api /v2",
            "acl local src 127.0.0.0/8 ::1",
            "acl is_api hdr(Host) -m end .api.example.com",
            "acl admin url -m reg ^/admin(/|$)",
            "acl get method GET",
            "tcp-request connection track-sc0 src table per_ip",
            "tcp-request connection accept if local",
            "tcp-request connection reject if { sc0_conn_rate gt 100 } !local",
            "tcp-request connection sc-inc-gpc0(0) if { sc_conn_cur(0) ge 50 }",
            "http-request track-sc1 req.hdr(X-User) table by_name",
            "http-request deny deny_status 429 if { sc0_http_req_rate gt 200 } || { sc1_gpc0_rate gt 10 }",
            "http-request deny unless local or get",
            "http-request set-header X-Forwarded-Proto http",
            "http-request add-header X-Note \"two words\"",
            "http-request del-header Proxy",
            "http-request return status 503 content-type text/plain string busy if admin !local",
            "http-request sc1-inc-gpc0",
            "http-response set-header Server corral",
            "http-response add-header Cache-Control no-store if is_api",
            "http-response del-header X-Powered-By",
            "use_backend api if is_api",
            "use_backend app",
        ]),
        "r.toml",
        HTTP,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let fe = &c.frontends[0];
    assert_eq!(fe.rules.len(), 22);
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let net = |a: &str, prefix| Cidr {
        addr: a.parse::<IpAddr>().unwrap(),
        prefix,
    };
    let named = |i| Term {
        negated: false,
        acl: AclRef::Named(i),
    };
    let not = |i| Term {
        negated: true,
        acl: AclRef::Named(i),
    };
    let sc = |slot, data, op, v| Term {
        negated: false,
        acl: AclRef::Anonymous(AclTest {
            fetch: Fetch::Sc { slot, data },
            matcher: Matcher::Int {
                op,
                values: vec![v],
            },
        }),
    };
    let when = |or_terms: Vec<Vec<Term>>| {
        Some(Cond {
            unless: false,
            or_terms,
        })
    };
    let expected = RuleSet {
        acls: vec![
            Acl {
                name: "is_api".into(),
                tests: vec![
                    AclTest {
                        fetch: Fetch::Path,
                        matcher: Matcher::Str {
                            kind: StrMatch::Begin,
                            ignore_case: true,
                            values: s(&["/api", "/v2"]),
                        },
                    },
                    AclTest {
                        fetch: Fetch::Hdr("Host".into()),
                        matcher: Matcher::Str {
                            kind: StrMatch::End,
                            ignore_case: false,
                            values: s(&[".api.example.com"]),
                        },
                    },
                ],
            },
            Acl {
                name: "local".into(),
                tests: vec![AclTest {
                    fetch: Fetch::Src,
                    matcher: Matcher::Ip(vec![net("127.0.0.0", 8), net("::1", 128)]),
                }],
            },
            Acl {
                name: "admin".into(),
                tests: vec![AclTest {
                    fetch: Fetch::Url,
                    matcher: Matcher::Regex(vec![Regex::new("^/admin(/|$)", false).unwrap()]),
                }],
            },
            Acl {
                name: "get".into(),
                tests: vec![AclTest {
                    fetch: Fetch::Method,
                    matcher: Matcher::Str {
                        kind: StrMatch::Exact,
                        ignore_case: false,
                        values: s(&["GET"]),
                    },
                }],
            },
        ],
        tcp_connection: vec![
            TcpRule {
                action: TcpAction::Track(Track {
                    slot: 0,
                    key: TrackKey::Src,
                    table: 0,
                }),
                cond: None,
            },
            TcpRule {
                action: TcpAction::Accept,
                cond: when(vec![vec![named(1)]]),
            },
            TcpRule {
                action: TcpAction::Reject,
                cond: when(vec![vec![sc(0, ScData::ConnRate, IntOp::Gt, 100), not(1)]]),
            },
            TcpRule {
                action: TcpAction::IncGpc0 { slot: 0 },
                cond: when(vec![vec![sc(0, ScData::ConnCur, IntOp::Ge, 50)]]),
            },
        ],
        http_request: vec![
            HttpRequestRule {
                action: HttpRequestAction::Track(Track {
                    slot: 1,
                    key: TrackKey::ReqHdr("X-User".into()),
                    table: 1,
                }),
                cond: None,
            },
            HttpRequestRule {
                action: HttpRequestAction::Deny { status: 429 },
                cond: when(vec![
                    vec![sc(0, ScData::HttpReqRate, IntOp::Gt, 200)],
                    vec![sc(1, ScData::Gpc0Rate, IntOp::Gt, 10)],
                ]),
            },
            HttpRequestRule {
                action: HttpRequestAction::Deny { status: 403 },
                cond: Some(Cond {
                    unless: true,
                    or_terms: vec![vec![named(1)], vec![named(3)]],
                }),
            },
            HttpRequestRule {
                action: HttpRequestAction::Header(HeaderAction::Set {
                    name: "X-Forwarded-Proto".into(),
                    value: "http".into(),
                }),
                cond: None,
            },
            HttpRequestRule {
                action: HttpRequestAction::Header(HeaderAction::Add {
                    name: "X-Note".into(),
                    value: "two words".into(),
                }),
                cond: None,
            },
            HttpRequestRule {
                action: HttpRequestAction::Header(HeaderAction::Del {
                    name: "Proxy".into(),
                }),
                cond: None,
            },
            HttpRequestRule {
                action: HttpRequestAction::Return {
                    status: 503,
                    content_type: Some("text/plain".into()),
                    body: Some("busy".into()),
                },
                cond: when(vec![vec![named(2), not(1)]]),
            },
            HttpRequestRule {
                action: HttpRequestAction::IncGpc0 { slot: 1 },
                cond: None,
            },
        ],
        http_response: vec![
            HttpResponseRule {
                action: HeaderAction::Set {
                    name: "Server".into(),
                    value: "corral".into(),
                },
                cond: None,
            },
            HttpResponseRule {
                action: HeaderAction::Add {
                    name: "Cache-Control".into(),
                    value: "no-store".into(),
                },
                cond: when(vec![vec![named(0)]]),
            },
            HttpResponseRule {
                action: HeaderAction::Del {
                    name: "X-Powered-By".into(),
                },
                cond: None,
            },
        ],
        use_backend: vec![
            UseBackend {
                backend: 1,
                cond: when(vec![vec![named(0)]]),
            },
            UseBackend {
                backend: 0,
                cond: None,
            },
        ],
    };
    assert_eq!(fe.ruleset, expected);
    assert_eq!(c.backends[fe.ruleset.use_backend[0].backend].name, "api");
    assert_eq!(c.tables[1].name, "by_name");
}

#[test]
fn redirects_parse_and_bad_ones_are_refused() {
    let c = parse_with(
        &config(&[
            "http-request redirect location /login if { path /private }",
            "http-request redirect prefix https://new.example code 301 drop-query",
            "http-request redirect scheme https code 308 append-slash",
        ]),
        "r.toml",
        HTTP,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<&HttpRequestAction> = c.frontends[0]
        .ruleset
        .http_request
        .iter()
        .map(|r| &r.action)
        .collect();
    assert_eq!(
        got,
        [
            &HttpRequestAction::Redirect(Redirect {
                kind: RedirectKind::Location,
                value: "/login".into(),
                code: 302,
                drop_query: false,
                append_slash: false,
            }),
            &HttpRequestAction::Redirect(Redirect {
                kind: RedirectKind::Prefix,
                value: "https://new.example".into(),
                code: 301,
                drop_query: true,
                append_slash: false,
            }),
            &HttpRequestAction::Redirect(Redirect {
                kind: RedirectKind::Scheme,
                value: "https".into(),
                code: 308,
                drop_query: false,
                append_slash: true,
            }),
        ]
    );
    for (rule, col, msg) in [
        ("http-request redirect", 24, "redirect type"),
        (
            "http-request redirect somewhere /x",
            26,
            "unknown redirect type 'somewhere'",
        ),
        (
            "http-request redirect location /x code 200",
            42,
            "invalid redirect code '200'",
        ),
        (
            "http-request redirect location /x set-cookie a=b",
            38,
            "not supported",
        ),
        ("http-request redirect scheme ht:tp", 33, "invalid scheme"),
    ] {
        let got = errors(&config(&[rule]));
        assert!(
            got.len() == 1 && got[0].0 == 6 && got[0].2.contains(msg),
            "{rule}: {got:?}"
        );
        let _ = col;
    }
    // A control character reaches a value only through a TOML escape.
    let src = config(&["http-request set-header X-A aUNITb"]).replace("UNIT", "\\u0001");
    let got = errors(&src);
    assert!(
        got.len() == 1 && got[0].2.contains("control character"),
        "{got:?}"
    );
}
