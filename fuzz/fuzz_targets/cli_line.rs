//! Any stats-socket input line, and any handoff record: split/decoded
//! without panics, and no command has more than 64 words.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for cmd in corral_master::cli::parse::split_commands(&text) {
        assert!(!cmd.is_empty() && cmd.len() <= corral_master::cli::parse::MAX_ARGS);
    }
    let _ = corral_master::handoff::Handoff::decode(&text);
});
