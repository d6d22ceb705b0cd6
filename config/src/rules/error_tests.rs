//! The errors of each rule form, at the offending word.

use super::tests::{err, run};
use crate::model::Mode;

#[test]
fn errors() {
    use Mode::{Http, Tcp};
    let track = "tcp-request connection track-sc0 src table per_ip";
    #[rustfmt::skip]
    let cases: &[(Mode, &[&str], usize, usize, &str)] = &[
        (Http, &[""], 0, 0, "empty rule line"),
        (Http, &["use-backend app"], 0, 0, "unknown rule directive 'use-backend' (did you mean 'use_backend'?)"),
        (Http, &["acl a sc0_foo gt 1"], 0, 6, "unknown fetch 'sc0_foo' (expected one of: sc0_conn_cur, sc0_conn_cnt,"),
        (Http, &["acl a pth /x"], 0, 6, "unknown fetch 'pth' (did you mean 'path'?)"),
        (Http, &["acl a sc3_conn_cur gt 1"], 0, 6, "stick counter 'sc3' does not exist"),
        (Http, &["acl a sc_conn_cur gt 1"], 0, 6, "'sc_conn_cur' needs a stick counter number"),
        (Http, &["acl a hdr /x"], 0, 6, "'hdr' needs a header name"),
        (Http, &["acl a src(1) 1.2.3.4"], 0, 6, "fetch 'src' takes no argument"),
        (Http, &["acl a src 1.2.3"], 0, 10, "invalid address '1.2.3' for 'src'"),
        (Http, &["acl a src 10.0.0.0/33"], 0, 10, "invalid address"),
        (Http, &["acl a dst_port gt x"], 0, 18, "invalid integer 'x' for 'dst_port'"),
        (Http, &["acl a dst_port -i 80"], 0, 15, "flag '-i' only applies to string fetches ('dst_port' gives an integer)"),
        (Http, &["acl a path -m dom x"], 0, 14, "unsupported match method 'dom'"),
        (Http, &["acl a path -x y"], 0, 11, "unknown flag '-x' (expected -i, -m or --)"),
        (Http, &["acl a path -f /etc/list"], 0, 11, "flag '-f' is not supported"),
        (Http, &["acl a path_beg -m sub x"], 0, 15, "'path_beg' already matches with -m beg"),
        (Http, &["acl a path -m reg ("], 0, 18, "invalid regex '('"),
        (Http, &["acl a path"], 0, 10, "missing value for 'path'"),
        (Http, &["acl a"], 0, 5, "missing fetch"),
        (Http, &["acl a! path /x"], 0, 4, "invalid ACL name 'a!'"),
        (Http, &["acl or path /x"], 0, 4, "'or' cannot be an ACL name"),
        (Http, &["tcp-request content reject"], 0, 12, "tcp-request content is not supported"),
        (Http, &["tcp-request connection rejekt"], 0, 23, "unknown action 'rejekt' for tcp-request connection (expected one of: accept, reject, track-sc0, track-sc1, track-sc2, sc-inc-gpc0)"),
        (Http, &["tcp-request connection track-sc0 src"], 0, 36, "missing 'table NAME' after 'track-sc0 src'"),
        (Http, &["tcp-request connection track-sc0 src table nope"], 0, 43, "unknown table 'nope' (declared: per_ip, by_path, v6, ints)"),
        (Http, &["tcp-request connection track-sc0 src table per_ipp"], 0, 43, "unknown table 'per_ipp' (did you mean 'per_ip'?)"),
        (Http, &["tcp-request connection track-sc0 path table by_path"], 0, 33, "track key 'path' needs an HTTP request"),
        (Http, &["tcp-request connection track-sc0 src table by_path"], 0, 43, "table 'by_path' has keys of type string, but track key 'src' needs an ip or ipv6 table"),
        (Http, &["http-request track-sc0 path table per_ip"], 0, 34, "table 'per_ip' has keys of type ip, but track key 'path' needs a string table"),
        (Http, &["http-request track-sc0 cookie(x) table by_path"], 0, 23, "unknown track key 'cookie(x)'"),
        (Http, &["tcp-request connection sc-inc-gpc0 if { src 1.2.3.4 }"], 0, 23, "expected sc-inc-gpc0(N) or scN-inc-gpc0"),
        (Http, &["tcp-request connection sc5-inc-gpc0"], 0, 23, "expected sc-inc-gpc0(N)"),
        (Http, &["tcp-request connection reject if { sc0_conn_rate gt 100 }"], 0, 35, "sc0 is not tracked by any rule of this frontend"),
        (Http, &["http-request track-sc0 path table by_path", "tcp-request connection reject if { sc0_conn_rate gt 100 }"], 1, 35, "table by_path does not store conn_rate, needed by 'sc0_conn_rate'"),
        (Http, &["acl x sc_http_err_cnt(0) gt 1", track], 0, 6, "table per_ip does not store http_err_cnt"),
        (Http, &["http-request track-sc1 path table by_path", "http-request sc1-inc-gpc0"], 1, 13, "table by_path stores neither gpc0 nor gpc0_rate"),
        (Http, &["tcp-request connection reject if { path /x }"], 0, 35, "'path' needs an HTTP request, but tcp-request connection rules run before"),
        (Http, &["acl p hdr(Host) x", "tcp-request connection reject if !p"], 1, 34, "acl 'p' uses 'hdr(Host)', which needs an HTTP request"),
        (Http, &["tcp-request connection reject if x"], 0, 33, "unknown acl 'x'"),
        (Http, &["use_backend app if is_api", "acl is_api path_beg /api"], 0, 19, "unknown acl 'is_api'"),
        (Http, &["acl is_api path_beg /api", "use_backend app if is_apj"], 1, 19, "unknown acl 'is_apj' (did you mean 'is_api'?)"),
        (Http, &["use_backend app if"], 0, 18, "missing condition after 'if'"),
        (Http, &["acl a path /", "use_backend app if a ||"], 1, 23, "missing ACL after '||'"),
        (Http, &["acl a path /", "use_backend app if || a"], 1, 19, "missing ACL before '||'"),
        (Http, &["acl a path /", "use_backend app if a !"], 1, 21, "missing ACL after '!'"),
        (Http, &["use_backend app if { path /x"], 0, 28, "missing '}' to close '{'"),
        (Http, &["use_backend app if {path /x }"], 0, 19, "'{' must be followed by a space"),
        (Http, &["use_backend app if { }"], 0, 21, "missing fetch"),
        (Http, &["use_backend app when x"], 0, 16, "unexpected word 'when' (expected 'if' or 'unless')"),
        (Http, &["use_backend appp"], 0, 12, "unknown backend 'appp' (did you mean 'app'?)"),
        (Http, &["use_backend raw"], 0, 12, "frontend 'fe' is in http mode but backend 'raw' is in tcp mode"),
        (Tcp, &["use_backend raw if { path /x }"], 0, 21, "'path' needs an HTTP request, but frontend 'fe' is in tcp mode"),
        (Tcp, &["http-request deny"], 0, 0, "http-request rules need mode http, but frontend 'fe' is in tcp mode"),
        (Tcp, &["  http-response del-header X"], 0, 2, "http-response rules need mode http"),
        (Http, &["http-request allow"], 0, 13, "unknown action 'allow' for http-request (expected one of: deny, return,"),
        (Http, &["http-response deny"], 0, 14, "unknown action 'deny' for http-response"),
        (Http, &["http-request deny deny_status 700"], 0, 30, "invalid HTTP status '700' (expected 200..599)"),
        (Http, &["http-request deny deny_status"], 0, 29, "missing HTTP status"),
        (Http, &["http-request set-header X"], 0, 25, "missing value after 'set-header X'"),
        (Http, &["http-request set-header \"X Y\" z"], 0, 24, "invalid header name 'X Y'"),
        (Http, &["http-request set-header X %[src]"], 0, 26, "log-format expressions ('%') are not supported"),
        (Http, &["http-request del-header X Y"], 0, 26, "unexpected word 'Y'"),
        (Http, &["http-request return string x"], 0, 20, "'string' needs a 'content-type'"),
        (Http, &["http-request return status 200 status 201"], 0, 31, "'status' is given twice"),
        (Http, &["http-request return file /x"], 0, 20, "'return' option 'file' is not supported"),
        (Http, &["http-request return foo"], 0, 20, "unknown 'return' option 'foo'"),
        (Http, &["acl a path \"x"], 0, 11, "missing closing '\"'"),
    ];
    let mut failures = Vec::new();
    for (mode, lines, li, off, msg) in cases {
        let (_, errs) = run(*mode, lines);
        let good =
            errs.len() == 1 && errs[0].0 == *li && errs[0].1 == *off && errs[0].2.contains(msg);
        if !good {
            failures.push(format!(
                "{lines:?}: expected {li}@{off}: {msg}\n    got {errs:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn one_error_per_broken_track_line() {
    // The broken track line is reported; the uses of sc0 are not, then.
    let (line, _, msg) = err(
        Mode::Http,
        &[
            "tcp-request connection track-sc0 src table nope",
            "tcp-request connection reject if { sc0_conn_rate gt 1 }",
        ],
    );
    assert_eq!(line, 0);
    assert!(msg.contains("unknown table 'nope'"), "{msg}");
}
