//! Any connection-handoff message (what an older worker sends a newer one):
//! decoded without panics, and a decoded batch encodes back to the same
//! bytes; a batch's fixed header reads whatever follows it.
#![no_main]
use corral_worker::handoff::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(wire::Message::Batch { id, conns }) = wire::decode(data) {
        assert_eq!(wire::batch(id, &conns), data);
        assert_eq!(wire::batch_header(data), Some((id, conns.len() as u16)));
    }
    let _ = wire::batch_header(data);
});
