//! Evaluating the conditions of a frontend's rules ([`corral_config::RuleSet`])
//! against what is known of a connection or request.
//!
//! Pure: the caller supplies the samples through [`Samples`] and acts on the
//! result. A sample that is missing (no HTTP request yet, a header absent, a
//! stick counter not tracked) matches no pattern, as in HAProxy; `!` of such
//! a test holds.

use std::net::IpAddr;

use corral_config::{
    Acl, AclRef, AclTest, Cidr, Cond, Fetch, IntOp, Matcher, RuleSet, ScData, StrMatch,
};

/// What fetches read: the connection, the request, the tracked counters.
pub trait Samples {
    /// The client's address.
    fn src(&self) -> IpAddr;
    /// The local port the connection came in on.
    fn dst_port(&self) -> u16;
    /// The request path without the query string (`None`: no request).
    fn path(&self) -> Option<&str>;
    /// The request target as sent (`None`: no request).
    fn url(&self) -> Option<&str>;
    /// The request method (`None`: no request).
    fn method(&self) -> Option<&str>;
    /// The value of request header `name`, matched case-insensitively
    /// (`None`: absent, or no request).
    fn header(&self, name: &str) -> Option<&str>;
    /// Counter `what` of the entry tracked in stick counter `slot` (`None`:
    /// nothing tracked in that slot, or the table does not store it).
    fn sc_value(&self, slot: u8, what: ScData) -> Option<i64>;
}

/// True when `cond` holds: any `||` branch whose terms all hold, inverted by `unless`.
pub fn eval_cond(ruleset: &RuleSet, cond: &Cond, s: &impl Samples) -> bool {
    let holds = cond.or_terms.iter().any(|and| {
        and.iter()
            .all(|t| term_holds(ruleset, &t.acl, s) != t.negated)
    });
    holds != cond.unless
}

/// True when a rule with condition `cond` applies (no condition: always).
pub fn applies(ruleset: &RuleSet, cond: Option<&Cond>, s: &impl Samples) -> bool {
    cond.is_none_or(|c| eval_cond(ruleset, c, s))
}

/// The ACL of a term, before negation.
fn term_holds(ruleset: &RuleSet, acl: &AclRef, s: &impl Samples) -> bool {
    match acl {
        AclRef::Named(i) => ruleset.acls.get(*i).is_some_and(|a| acl_matches(a, s)),
        AclRef::Anonymous(test) => test_matches(test, s),
    }
}

/// True when any test of the named ACL `acl` matches.
pub fn acl_matches(acl: &Acl, s: &impl Samples) -> bool {
    acl.tests.iter().any(|t| test_matches(t, s))
}

/// True when the sample of `test`'s fetch matches any of its patterns.
pub fn test_matches(test: &AclTest, s: &impl Samples) -> bool {
    let text = match &test.fetch {
        Fetch::Src => return ip_matches(&test.matcher, s.src()),
        Fetch::DstPort => return int_matches(&test.matcher, i64::from(s.dst_port())),
        Fetch::Sc { slot, data } => {
            return s
                .sc_value(*slot, *data)
                .is_some_and(|v| int_matches(&test.matcher, v))
        }
        Fetch::Path => s.path(),
        Fetch::Url => s.url(),
        Fetch::Method => s.method(),
        Fetch::Hdr(name) => s.header(name),
    };
    text.is_some_and(|t| str_matches(&test.matcher, t))
}

/// An address against [`Matcher::Ip`] networks (false for other matchers).
pub fn ip_matches(m: &Matcher, ip: IpAddr) -> bool {
    match m {
        Matcher::Ip(nets) => nets.iter().any(|n| cidr_contains(n, ip)),
        _ => false,
    }
}

/// True when `ip` is in `net`; IPv4 networks hold IPv4-mapped IPv6
/// addresses and IPv6 networks hold IPv4 addresses in their mapped form.
pub fn cidr_contains(net: &Cidr, ip: IpAddr) -> bool {
    let bits = |a: u128, b: u128, width: u32| {
        let shift = width - u32::from(net.prefix).min(width);
        a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
    };
    match (net.addr, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => bits(u32::from(n).into(), u32::from(a).into(), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => bits(n.into(), a.into(), 128),
        (IpAddr::V4(n), IpAddr::V6(a)) => a
            .to_ipv4_mapped()
            .is_some_and(|a| bits(u32::from(n).into(), u32::from(a).into(), 32)),
        (IpAddr::V6(n), IpAddr::V4(a)) => bits(n.into(), a.to_ipv6_mapped().into(), 128),
    }
}

/// An integer against [`Matcher::Int`] (false for other matchers).
pub fn int_matches(m: &Matcher, v: i64) -> bool {
    let Matcher::Int { op, values } = m else {
        return false;
    };
    values.iter().any(|&x| match op {
        IntOp::Eq => v == x,
        IntOp::Ge => v >= x,
        IntOp::Gt => v > x,
        IntOp::Le => v <= x,
        IntOp::Lt => v < x,
    })
}

/// A string against [`Matcher::Str`] or [`Matcher::Regex`] (false for other matchers).
pub fn str_matches(m: &Matcher, sample: &str) -> bool {
    match m {
        Matcher::Str {
            kind,
            ignore_case,
            values,
        } => values
            .iter()
            .any(|v| str_match(*kind, *ignore_case, sample.as_bytes(), v.as_bytes())),
        Matcher::Regex(res) => res.iter().any(|r| r.is_match(sample)),
        _ => false,
    }
}

/// One string pattern; `ignore_case` folds ASCII letters only, as HAProxy's `-i`.
fn str_match(kind: StrMatch, ignore_case: bool, s: &[u8], p: &[u8]) -> bool {
    let eq = |a: &[u8], b: &[u8]| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match kind {
        StrMatch::Exact => eq(s, p),
        StrMatch::Begin => s.len() >= p.len() && eq(&s[..p.len()], p),
        StrMatch::End => s.len() >= p.len() && eq(&s[s.len() - p.len()..], p),
        StrMatch::Sub => p.is_empty() || s.windows(p.len()).any(|w| eq(w, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_config::{Frontend, Regex};
    use std::collections::HashMap;

    /// Samples from plain fields.
    #[derive(Default)]
    struct Fake {
        src: Option<IpAddr>,
        port: u16,
        path: Option<&'static str>,
        url: Option<&'static str>,
        method: Option<&'static str>,
        headers: Vec<(&'static str, &'static str)>,
        sc: HashMap<(u8, ScData), i64>,
    }

    impl Samples for Fake {
        fn src(&self) -> IpAddr {
            self.src.unwrap_or([192, 0, 2, 1].into())
        }
        fn dst_port(&self) -> u16 {
            self.port
        }
        fn path(&self) -> Option<&str> {
            self.path
        }
        fn url(&self) -> Option<&str> {
            self.url
        }
        fn method(&self) -> Option<&str> {
            self.method
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
        fn sc_value(&self, slot: u8, what: ScData) -> Option<i64> {
            self.sc.get(&(slot, what)).copied()
        }
    }

    /// The frontend of a config with `rules` (tables and backends provided).
    fn frontend(rules: &[&str]) -> Frontend {
        let lines: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
        let src = format!(
            r#"
[defaults]
mode = "http"
[frontend.f]
bind = ":80"
default_backend = "app"
rules = [{}]
[backend.app]
server.s = {{ addr = "127.0.0.1:9000" }}
[backend.api]
server.s = {{ addr = "127.0.0.1:9001" }}
[table.t]
type = "ip"
size = 10
store = ["conn_cur", "conn_rate(10s)", "gpc0"]
"#,
            lines.join(", ")
        );
        match corral_config::parse_with(&src, "t.toml", corral_config::Support::ALL) {
            Ok(mut c) => c.frontends.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

    /// The backend index `use_backend` picks, or `None`.
    fn pick(fe: &Frontend, s: &Fake) -> Option<usize> {
        let rs = &fe.ruleset;
        rs.use_backend
            .iter()
            .find(|u| applies(rs, u.cond.as_ref(), s))
            .map(|u| u.backend)
    }

    #[test]
    fn named_acls_and_or_not() {
        let fe = frontend(&[
            "acl api path_beg -i /api",
            "acl api hdr(Host) -m end .api.test",
            "acl get method GET",
            "acl local src 127.0.0.0/8 ::1",
            "use_backend api if api get !local || { url -m sub debug }",
        ]);
        let mut s = Fake {
            path: Some("/API/v1"),
            method: Some("GET"),
            ..Fake::default()
        };
        assert_eq!(pick(&fe, &s), Some(1));
        s.method = Some("POST");
        assert_eq!(pick(&fe, &s), None);
        s.url = Some("/x?debug=1");
        assert_eq!(pick(&fe, &s), Some(1));
        s.url = None;
        s.method = Some("GET");
        s.src = Some("127.1.2.3".parse().unwrap());
        assert_eq!(pick(&fe, &s), None, "local");
        s.src = Some("::ffff:127.0.0.1".parse().unwrap());
        assert_eq!(pick(&fe, &s), None, "mapped v4 is local");
        s.src = Some("::2".parse().unwrap());
        s.path = Some("/other");
        assert_eq!(pick(&fe, &s), None);
        s.headers = vec![("host", "www.api.test")];
        assert_eq!(pick(&fe, &s), Some(1), "second test of acl 'api'");
    }

    #[test]
    fn missing_samples_never_match() {
        let fe = frontend(&[
            "tcp-request connection track-sc0 src table t",
            "use_backend api if { sc0_conn_rate gt 10 }",
            "use_backend app unless { path /x }",
        ]);
        let mut s = Fake::default();
        // Untracked counter: no match; no request: `unless` holds.
        assert_eq!(pick(&fe, &s), Some(0));
        s.sc.insert((0, ScData::ConnRate), 11);
        assert_eq!(pick(&fe, &s), Some(1));
        s.sc.insert((0, ScData::ConnRate), 10);
        s.path = Some("/x");
        assert_eq!(pick(&fe, &s), None);
        let rs = &fe.ruleset;
        assert!(applies(rs, None, &s));
        assert!(!applies(rs, rs.use_backend[1].cond.as_ref(), &s));
    }

    #[test]
    fn integers() {
        let m = |op, values: &[i64]| Matcher::Int {
            op,
            values: values.to_vec(),
        };
        assert!(int_matches(&m(IntOp::Eq, &[80, 443]), 443));
        assert!(!int_matches(&m(IntOp::Eq, &[80, 443]), 8080));
        assert!(int_matches(&m(IntOp::Ge, &[5]), 5));
        assert!(!int_matches(&m(IntOp::Gt, &[5]), 5));
        assert!(int_matches(&m(IntOp::Le, &[5]), 5));
        assert!(int_matches(&m(IntOp::Lt, &[5]), -1));
        assert!(!int_matches(&m(IntOp::Lt, &[5]), 5));
        let port = AclTest {
            fetch: Fetch::DstPort,
            matcher: m(IntOp::Eq, &[8443]),
        };
        let s = Fake {
            port: 8443,
            ..Fake::default()
        };
        assert!(test_matches(&port, &s));
        assert!(!int_matches(&Matcher::Ip(vec![]), 1));
    }

    #[test]
    fn networks() {
        let net = |s: &str| {
            let (a, p) = s.split_once('/').unwrap();
            Cidr {
                addr: a.parse().unwrap(),
                prefix: p.parse().unwrap(),
            }
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_contains(&net("10.0.0.0/8"), ip("10.255.0.1")));
        assert!(!cidr_contains(&net("10.0.0.0/8"), ip("11.0.0.1")));
        assert!(cidr_contains(&net("0.0.0.0/0"), ip("1.2.3.4")));
        assert!(cidr_contains(&net("0.0.0.0/0"), ip("::ffff:1.2.3.4")));
        assert!(!cidr_contains(&net("0.0.0.0/0"), ip("2001:db8::1")));
        assert!(cidr_contains(&net("1.2.3.4/32"), ip("1.2.3.4")));
        assert!(!cidr_contains(&net("1.2.3.4/32"), ip("1.2.3.5")));
        assert!(cidr_contains(&net("2001:db8::/32"), ip("2001:db8:ffff::1")));
        assert!(!cidr_contains(&net("2001:db8::/32"), ip("2001:db9::1")));
        assert!(cidr_contains(&net("::/0"), ip("1.2.3.4")));
        assert!(cidr_contains(&net("::ffff:0.0.0.0/96"), ip("9.9.9.9")));
        assert!(cidr_contains(&net("::1/128"), ip("::1")));
        assert!(!cidr_contains(&net("::1/128"), ip("::2")));
    }

    #[test]
    fn strings() {
        let m = |kind, ignore_case, v: &str| Matcher::Str {
            kind,
            ignore_case,
            values: vec![v.to_string()],
        };
        use StrMatch::*;
        assert!(str_matches(&m(Exact, false, "/a"), "/a"));
        assert!(!str_matches(&m(Exact, false, "/a"), "/A"));
        assert!(str_matches(&m(Exact, true, "/a"), "/A"));
        assert!(str_matches(&m(Begin, false, "/api"), "/api/x"));
        assert!(!str_matches(&m(Begin, false, "/api"), "/ap"));
        assert!(str_matches(&m(Begin, true, "/API"), "/api/x"));
        assert!(str_matches(&m(End, false, ".png"), "a.png"));
        assert!(!str_matches(&m(End, false, ".png"), "a.PNG"));
        assert!(str_matches(&m(End, true, ".png"), "a.PNG"));
        assert!(!str_matches(&m(End, false, "long.png"), ".png"));
        assert!(str_matches(&m(Sub, false, "adm"), "/x/admin"));
        assert!(!str_matches(&m(Sub, false, "ADM"), "/x/admin"));
        assert!(str_matches(&m(Sub, true, "ADM"), "/x/admin"));
        assert!(str_matches(&m(Sub, false, ""), ""));
        assert!(!str_matches(&m(Sub, false, "abc"), "ab"));
        // -i folds ASCII only; other characters compare as they are.
        assert!(str_matches(&m(Exact, true, "é"), "é"));
        let re = Matcher::Regex(vec![Regex::new(r"^/img/.*\.png$", true).unwrap()]);
        assert!(str_matches(&re, "/IMG/a.PNG"));
        assert!(!str_matches(&re, "/img/a.gif"));
        assert!(!str_matches(&Matcher::Ip(vec![]), "x"));
    }
}
