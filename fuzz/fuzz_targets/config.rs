//! Any bytes as a config file: `parse` answers a Config or errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Server host names would be resolved: keep the fuzzer off the network.
        if text.contains("addr") && !text.contains("127.") {
            return;
        }
        let _ = corral_config::parse(text, "fuzz.toml");
        let _ = corral_config::parse_with(text, "fuzz.toml", corral_config::Support { http: true });
    }
});
