//! Any bytes as a request head then a response head: the caching rules
//! (policy, freshness, Vary, conditionals) answer without panicking, and
//! what they allow holds (a fresh object expires in the future, within
//! max_age; nothing is stored for a request that forbids it).
#![no_main]
use std::time::Duration;

use corral_http::caching;
use corral_http::h1::{parse_request, parse_response, Limits, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head: 2048,
        max_headers: 32,
    };
    let Ok(Parsed::Complete(req, n)) = parse_request(data, &limits) else {
        return;
    };
    let policy = caching::request_policy(&req);
    if req.fields.contains("authorization") {
        assert!(!policy.lookup && !policy.store);
    }
    let Ok(Parsed::Complete(resp, _)) = parse_response(&data[n..], &limits, false) else {
        return;
    };
    let now = 1_700_000_000_000;
    let max = Duration::from_secs(300);
    if let Ok(f) = caching::freshness(&resp, now, max) {
        assert!(f.expires_ms > now && f.expires_ms <= now + 300_000);
        assert!(!resp.fields.contains("set-cookie"));
    }
    if let Ok(names) = caching::vary_names(&resp) {
        for n in &names {
            let _ = caching::vary_value(&req.fields, n);
        }
    }
    let _ = caching::not_modified(&req, &resp.fields);
});
