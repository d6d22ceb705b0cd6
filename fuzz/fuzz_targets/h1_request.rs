//! Any bytes as a request head and body: the strict parser and the body
//! decoder answer, never panic; a body scanned in two pieces decodes as it
//! does at once; a complete head never claims more bytes than it was given.
#![no_main]
use corral_http::h1::{body, parse_request, Body, Framing, Limits, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head: 1024,
        max_headers: 16,
    };
    let (framing, rest) = match parse_request(data, &limits) {
        Ok(Parsed::Complete(req, n)) => {
            assert!(n <= data.len());
            // Accessors of a validated head never fail.
            let _ = (req.path(), req.target(), req.host(), req.method_str(), req.keep_alive());
            (req.framing, &data[n..])
        }
        Ok(Parsed::Partial) => return,
        // Chunked decoding of arbitrary input, when the head was refused.
        Err(e) => {
            assert!(matches!(e.status, 400 | 414 | 431 | 501));
            // `show errors` places the fault within the bytes.
            assert!(corral_http::h1::locate::error_position(data, true) <= data.len());
            (Framing::Chunked, data)
        }
    };
    let whole = {
        let mut b = Body::new(framing);
        let mut out = Vec::new();
        body::scan(&mut b, rest, &mut out).map(|(n, done)| (n, done, out))
    };
    let split = rest.first().map_or(0, |&b| b as usize % (rest.len() + 1));
    let pieces = {
        let mut b = Body::new(framing);
        let mut out = Vec::new();
        body::scan(&mut b, &rest[..split], &mut out).and_then(|(n, done)| {
            if done {
                return Ok((n, done, out));
            }
            assert_eq!(n, split, "a body step that needs more consumed everything");
            body::scan(&mut b, &rest[split..], &mut out).map(|(m, done)| (n + m, done, out))
        })
    };
    match (whole, pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("split changed the outcome: {a:?} vs {b:?}"),
    }
});
