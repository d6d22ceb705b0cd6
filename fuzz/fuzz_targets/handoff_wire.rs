//! Any connection-handoff or query message (what an older worker sends a
//! newer one, what the master and a worker exchange):
//! decoded without panics, and a decoded batch encodes back to the same
//! bytes; a batch's fixed header reads whatever follows it.
#![no_main]
use corral_worker::handoff::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match wire::decode(data) {
        Ok(wire::Message::Batch { id, conns }) => {
            assert_eq!(wire::batch(id, &conns), data);
            assert_eq!(wire::batch_header(data), Some((id, conns.len() as u16)));
        }
        Ok(wire::Message::Query { id, what, arg }) => assert_eq!(wire::query(id, what, &arg), data),
        Ok(wire::Message::Reply { id, last, text }) => assert_eq!(wire::reply(id, last, &text), data),
        _ => {}
    }
    let _ = wire::batch_header(data);
});
