//! Any rule line in a valid config: the rule parser and its validation
//! (tables, backends, ACLs, stick counters) answer, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let config = format!(
        r#"
[frontend.fe]
bind = "127.0.0.1:8080"
mode = "tcp"
default_backend = "be"
rules = ["acl local src 127.0.0.0/8", "tcp-request connection track-sc0 src table t", {line:?}]
[backend.be]
mode = "tcp"
server.a = {{ addr = "127.0.0.1:9000" }}
[backend.other]
mode = "tcp"
server.a = {{ addr = "127.0.0.1:9001" }}
[table.t]
type = "ip"
size = 100
store = ["conn_cnt", "conn_cur", "conn_rate(10s)", "gpc0"]
"#
    );
    let _ = corral_config::parse(&config, "fuzz.toml");
});
