use super::*;
use crate::h1::{parse_request, parse_response, Limits, Parsed};

fn req(head: &str) -> Request {
    match parse_request(head.as_bytes(), &Limits::default()) {
        Ok(Parsed::Complete(r, _)) => r,
        other => panic!("{other:?}"),
    }
}

fn resp(head: &str) -> Response {
    match parse_response(head.as_bytes(), &Limits::default(), false) {
        Ok(Parsed::Complete(r, _)) => r,
        other => panic!("{other:?}"),
    }
}

const NOW: u64 = 1_700_000_000_000;
const MAX: Duration = Duration::from_secs(300);

fn fresh(head: &str) -> Result<Freshness, NotStored> {
    freshness(&resp(head), NOW, MAX)
}

#[test]
fn requests_that_bypass_or_forbid_the_cache() {
    let p = request_policy(&req("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_eq!((p.lookup, p.store), (true, true));
    let p = request_policy(&req("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_eq!(
        (p.lookup, p.store),
        (true, false),
        "HEAD is served from a GET, never stored"
    );
    let p = request_policy(&req(
        "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic eA==\r\n\r\n",
    ));
    assert_eq!((p.lookup, p.store), (false, false));
    let p = request_policy(&req(
        "GET / HTTP/1.1\r\nHost: a\r\nCache-Control: no-cache\r\n\r\n",
    ));
    assert_eq!((p.lookup, p.store), (false, true), "forwarded, may refresh");
    let p = request_policy(&req(
        "GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
    ));
    assert_eq!((p.lookup, p.store), (false, true));
    let p = request_policy(&req(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    ));
    assert_eq!((p.lookup, p.store), (false, false));
    let p = request_policy(&req(
        "GET / HTTP/1.1\r\nHost: a\r\nCache-Control: max-age=0\r\n\r\n",
    ));
    assert_eq!((p.lookup, p.store), (false, true), "a browser reload");
    let p = request_policy(&req(
        "GET / HTTP/1.1\r\nHost: a\r\nCache-Control: max-age=5, min-fresh=2, only-if-cached\r\n\r\n",
    ));
    assert_eq!(
        (p.lookup, p.max_age, p.min_fresh, p.only_if_cached),
        (true, Some(5), Some(2), true)
    );
}

#[test]
fn freshness_follows_the_directives_bounded_by_max_age() {
    let h = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n\r\n";
    assert_eq!(fresh(h).unwrap().expires_ms, NOW + 60_000);
    let h = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60, s-maxage=90\r\n\r\n";
    assert_eq!(
        fresh(h).unwrap().expires_ms,
        NOW + 90_000,
        "s-maxage wins in a shared cache"
    );
    let h = "HTTP/1.1 200 OK\r\nCache-Control: max-age=100000\r\n\r\n";
    assert_eq!(
        fresh(h).unwrap().expires_ms,
        NOW + 300_000,
        "bounded by max_age"
    );
    let h = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nAge: 20\r\n\r\n";
    assert_eq!(
        fresh(h).unwrap(),
        Freshness {
            expires_ms: NOW + 40_000,
            age: 20
        }
    );
    let date = format_date(NOW);
    let exp = format_date(NOW + 120_000);
    let h = format!("HTTP/1.1 200 OK\r\nDate: {date}\r\nExpires: {exp}\r\n\r\n");
    assert_eq!(fresh(&h).unwrap().expires_ms, NOW + 120_000);
    let h = "HTTP/1.1 200 OK\r\nExpires: 0\r\n\r\n";
    assert_eq!(
        fresh(h),
        Err(NotStored::Stale),
        "an invalid Expires is expired"
    );
    let h = "HTTP/1.1 200 OK\r\nETag: \"x\"\r\n\r\n";
    assert_eq!(
        fresh(h).unwrap().expires_ms,
        NOW + 300_000,
        "a validator: max_age"
    );
    assert_eq!(
        fresh("HTTP/1.1 200 OK\r\n\r\n"),
        Err(NotStored::NoFreshness)
    );
    let h = "HTTP/1.1 200 OK\r\nCache-Control: max-age=0, must-revalidate\r\n\r\n";
    assert_eq!(fresh(h), Err(NotStored::Stale));
}

#[test]
fn what_is_never_stored() {
    for (h, why) in [
        (
            "HTTP/1.1 200 OK\r\nCache-Control: no-store, max-age=60\r\n\r\n",
            NotStored::Directive,
        ),
        (
            "HTTP/1.1 200 OK\r\nCache-Control: private, max-age=60\r\n\r\n",
            NotStored::Directive,
        ),
        (
            "HTTP/1.1 200 OK\r\nCache-Control: no-cache\r\n\r\n",
            NotStored::Directive,
        ),
        (
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nSet-Cookie: a=b\r\n\r\n",
            NotStored::SetCookie,
        ),
        (
            "HTTP/1.1 302 Found\r\nCache-Control: max-age=60\r\n\r\n",
            NotStored::Status,
        ),
        (
            "HTTP/1.1 500 Oops\r\nCache-Control: max-age=60\r\n\r\n",
            NotStored::Status,
        ),
    ] {
        assert_eq!(fresh(h), Err(why), "{h}");
    }
    assert_eq!(
        vary_names(&resp("HTTP/1.1 200 OK\r\nVary: *\r\n\r\n")),
        Err(NotStored::Vary)
    );
    assert_eq!(
        vary_names(&resp(
            "HTTP/1.1 200 OK\r\nVary: Accept-Encoding, User-Agent\r\nVary: accept-encoding\r\n\r\n"
        ))
        .unwrap(),
        vec!["accept-encoding".to_string(), "user-agent".to_string()]
    );
}

#[test]
fn accept_encoding_is_normalised() {
    let a = req("GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, br\r\n\r\n");
    let b =
        req("GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: BR,gzip;q=0.8, identity;q=0\r\n\r\n");
    assert_eq!(vary_value(&a.fields, "accept-encoding"), b"br,gzip");
    assert_eq!(vary_value(&b.fields, "accept-encoding"), b"br,gzip");
    let c = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(vary_value(&c.fields, "accept-encoding"), b"");
}

#[test]
fn conditional_requests() {
    let stored = resp(
        "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n\r\n",
    );
    let r = |h: &str| req(&format!("GET / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n"));
    assert!(not_modified(&r("If-None-Match: \"v1\""), &stored.fields));
    assert!(not_modified(
        &r("If-None-Match: \"v0\", W/\"v1\""),
        &stored.fields
    ));
    assert!(not_modified(&r("If-None-Match: *"), &stored.fields));
    assert!(!not_modified(&r("If-None-Match: \"v2\""), &stored.fields));
    assert!(not_modified(
        &r("If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT"),
        &stored.fields
    ));
    assert!(!not_modified(
        &r("If-Modified-Since: Tue, 14 Nov 2023 22:13:19 GMT"),
        &stored.fields
    ));
    assert!(
        !not_modified(
            &r("If-None-Match: \"v2\"\r\nIf-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT"),
            &stored.fields
        ),
        "If-None-Match decides when present"
    );
}
