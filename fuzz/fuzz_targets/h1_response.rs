//! Any bytes as a response head: the parser answers (a head or a 502),
//! never panics, and a complete head's accessors hold.
#![no_main]
use corral_http::h1::{parse_response, Limits, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head: 1024,
        max_headers: 16,
    };
    let head = data.first().is_some_and(|b| b & 1 == 1);
    match parse_response(data, &limits, head) {
        Ok(Parsed::Complete(r, n)) => {
            assert!(n <= data.len());
            assert!((100..=599).contains(&r.status));
            let _ = (r.reason(), r.keep_alive(), r.is_interim());
            for (_, v) in r.fields.iter() {
                assert!(!v.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'));
            }
        }
        Ok(Parsed::Partial) => {}
        Err(e) => {
            assert_eq!(e.status, 502);
            assert!(corral_http::h1::locate::error_position(data, false) <= data.len());
        }
    }
});
