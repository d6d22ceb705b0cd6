//! Bad configurations: each error is reported at the right line:column with
//! a message naming what was expected, and every error of a file at once.

use corral_config::{parse, parse_with, Support};

/// The whole language (this build runs all of it).
const HTTP: Support = Support::ALL;

/// A valid backend to reference, appended after each case.
const BASE: &str = "\n[backend.b]\nserver.s = { addr = \"127.0.0.1:9000\" }\n";

/// (what, config, line, column, message substring); the config must yield
/// exactly one error.
const CASES: &[(&str, &str, usize, usize, &str)] = &[
    (
        "unknown key with suggestion",
        "[global]\nmaxcon = 10\n",
        2, 1,
        "unknown key 'maxcon' in [global] (did you mean 'maxconn'?)",
    ),
    (
        "unknown key without suggestion lists keys",
        "[global]\nzzz = 1\n",
        2, 1,
        "unknown key 'zzz' in [global] (expected one of: workers, maxconn,",
    ),
    (
        "wrong type: string for workers",
        "[global]\nworkers = \"many\"\n",
        2, 11,
        "expected an integer >= 1 or \"auto\" for 'workers', found string \"many\"",
    ),
    (
        "wrong type: boolean",
        "[global]\nmaxconn = true\n",
        2, 11,
        "expected an integer >= 1 for 'maxconn', found boolean",
    ),
    (
        "workers = 0",
        "[global]\nworkers = 0\n",
        2, 11,
        "expected an integer >= 1 or \"auto\" for 'workers', found integer 0",
    ),
    (
        "bad duration: no unit",
        "[global]\nhard_stop_after = \"5\"\n",
        2, 19,
        "invalid duration \"5\": expected a number with a unit (ms, s, m, h, d), e.g. \"5s\"",
    ),
    (
        "duration given as an integer",
        "[defaults]\ntimeout = { connect = 5 }\n",
        2, 23,
        "expected a duration string with a unit (ms, s, m, h, d), e.g. \"5s\" for 'connect', found integer 5",
    ),
    (
        "bad size",
        "[global]\nmemory_limit = \"12XB\"\n",
        2, 16,
        "invalid size \"12XB\": expected bytes as an integer or a number with a unit",
    ),
    (
        "bad bind address: no port",
        "[frontend.f]\nbind = \"127.0.0.1\"\ndefault_backend = \"b\"\n",
        2, 8,
        "invalid address \"127.0.0.1\": expected \"ip:port\", \"[ipv6]:port\" or \":port\"",
    ),
    (
        "bad bind port in an array",
        "[frontend.f]\nbind = [\":80\", \"1.2.3.4:99999\"]\ndefault_backend = \"b\"\n",
        2, 16,
        "invalid port \"99999\" in \"1.2.3.4:99999\": expected 1..65535",
    ),
    (
        "empty bind array",
        "[frontend.f]\nbind = []\ndefault_backend = \"b\"\n",
        2, 8,
        "expected an address string or a non-empty array of them for 'bind', found array",
    ),
    (
        "unknown backend reference",
        "[frontend.f]\nbind = \":80\"\ndefault_backend = \"bb\"\n",
        3, 19,
        "unknown backend 'bb' (did you mean 'b'?)",
    ),
    (
        "duplicate bind within a frontend",
        "[frontend.f]\nbind = [\"127.0.0.1:80\", \"127.0.0.1:80\"]\ndefault_backend = \"b\"\n",
        2, 25,
        "bind address 127.0.0.1:80 is already used by frontend 'f'",
    ),
    (
        "bind conflicting with a wildcard of another frontend",
        "[frontend.a]\nbind = \":80\"\ndefault_backend = \"b\"\n[frontend.c]\nbind = \"127.0.0.1:80\"\ndefault_backend = \"b\"\n",
        5, 8,
        "bind address 127.0.0.1:80 conflicts with 0.0.0.0:80, already used by frontend 'a'",
    ),
    (
        "TOML syntax error",
        "[global]\nmaxconn = \n",
        2, 11,
        "TOML syntax error",
    ),
    (
        "balance uri in tcp mode",
        "[backend.u]\nbalance = \"uri\"\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        2, 11,
        "balance \"uri\" needs mode \"http\" (backend 'u' is in tcp mode)",
    ),
    (
        "table size 0",
        "[table.t]\ntype = \"ip\"\nsize = 0\n",
        3, 8,
        "'size' must be at least 1, found 0",
    ),
    (
        "string table without key_len",
        "[table.t]\ntype = \"string\"\nsize = 10\n",
        1, 8,
        "table 't' of type string needs key_len",
    ),
    (
        "key_len on an ip table",
        "[table.t]\ntype = \"ip\"\nsize = 10\nkey_len = 4\n",
        4, 1,
        "'key_len' only applies to tables of type string or binary",
    ),
    (
        "bad rate period",
        "[table.t]\ntype = \"ip\"\nsize = 10\nstore = [\"conn_cnt\", \"conn_rate(10)\"]\n",
        4, 22,
        "invalid period for 'conn_rate': invalid duration \"10\"",
    ),
    (
        "rate without a period",
        "[table.t]\ntype = \"ip\"\nsize = 10\nstore = [\"http_req_rate\"]\n",
        4, 10,
        "data type 'http_req_rate' needs a period, e.g. \"http_req_rate(10s)\"",
    ),
    (
        "duplicate data type",
        "[table.t]\ntype = \"ip\"\nsize = 10\nstore = [\"conn_rate(10s)\", \"conn_rate(1m)\"]\n",
        4, 28,
        "data type 'conn_rate' is stored twice",
    ),
    (
        "unknown data type",
        "[table.t]\ntype = \"ip\"\nsize = 10\nstore = [\"conn_curr\"]\n",
        4, 10,
        "unknown data type 'conn_curr' (did you mean 'conn_cur'?)",
    ),
    (
        "peers",
        "[table.t]\ntype = \"ip\"\nsize = 10\npeers = \"mesh\"\n",
        4, 1,
        "peers are not supported by this version",
    ),
    (
        "cache object larger than the cache",
        "[cache.static]\ntotal_max_size = \"1MiB\"\nmax_object_size = \"2MiB\"\n",
        3, 19,
        "'max_object_size' (2097152 bytes) is larger than 'total_max_size' (1048576 bytes)",
    ),
    (
        "backend naming an undefined cache",
        "[cache.static]\ntotal_max_size = \"1MiB\"\n[backend.c]\nmode = \"http\"\ncache = \"statik\"\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        5, 9,
        "backend 'c' uses cache 'statik', which is not defined (no [cache.statik] section) (did you mean 'static'?)",
    ),
    (
        "cache on a tcp backend",
        "[cache.static]\ntotal_max_size = \"1MiB\"\n[backend.c]\nmode = \"tcp\"\ncache = \"static\"\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        5, 9,
        "cache needs mode \"http\" (backend 'c' is in tcp mode",
    ),
    (
        "cache key typo",
        "[cache.static]\ntotal_max_size = \"1MiB\"\nmax_objet_size = 10\n",
        3, 1,
        "unknown key 'max_objet_size' in [cache.static] (did you mean 'max_object_size'?)",
    ),
    (
        "mode mismatch",
        "[frontend.f]\nbind = \":80\"\nmode = \"http\"\ndefault_backend = \"b\"\n",
        4, 19,
        "frontend 'f' is in http mode but its default_backend 'b' is in tcp mode",
    ),
    (
        "mode typo",
        "[defaults]\nmode = \"htp\"\n",
        2, 8,
        "expected one of \"tcp\", \"http\" for 'mode', found string \"htp\" (did you mean \"http\"?)",
    ),
    (
        "unknown rule directive",
        "[frontend.f]\nbind = \":80\"\ndefault_backend = \"b\"\nrules = [\"acl a src 1.2.3.4\", \"redirect prefix /x\"]\n",
        4, 32, // the word inside the string
        "unknown rule directive 'redirect' (expected one of: acl, tcp-request, http-request, http-response, use_backend)",
    ),
    (
        "frontend without default_backend",
        "[frontend.f]\nbind = \":80\"\n",
        1, 11,
        "frontend 'f' has no default_backend",
    ),
    (
        "frontend without bind",
        "[frontend.f]\ndefault_backend = \"b\"\n",
        1, 11,
        "missing required key 'bind' in [frontend.f]",
    ),
    (
        "backend without server",
        "[backend.e]\nbalance = \"first\"\n",
        1, 10,
        "backend 'e' has no server",
    ),
    (
        "stick on an unknown table",
        "[table.per_ip]\ntype = \"ip\"\nsize = 10\n[backend.k]\nstick = { on = \"src\", table = \"per_ipp\" }\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        5, 31,
        "unknown table 'per_ipp' (did you mean 'per_ip'?)",
    ),
    (
        "stick on something else than src",
        "[table.t]\ntype = \"ip\"\nsize = 10\n[backend.k]\nstick = { on = \"dst\", table = \"t\" }\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        5, 16,
        "unsupported stick key \"dst\": only \"src\" is supported",
    ),
    (
        "bad http check",
        "[backend.k]\ncheck = { http = \"/health\" }\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        2, 18,
        "invalid HTTP check \"/health\": expected a method and a path, e.g. \"GET /health\"",
    ),
    (
        "server key typo",
        "[backend.k]\nserver.s = { addr = \"127.0.0.1:1\", wieght = 2 }\n",
        2, 36,
        "unknown key 'wieght' in [backend.k.server.s] (did you mean 'weight'?)",
    ),
    (
        "server weight out of range",
        "[backend.k]\nserver.s = { addr = \"127.0.0.1:1\", weight = 300 }\n",
        2, 45,
        "expected an integer between 0 and 256 for 'weight', found integer 300",
    ),
    (
        "unresolvable server",
        "[backend.k]\nserver.s = { addr = \"no-such-host.invalid:80\" }\n",
        2, 21,
        "cannot resolve 'no-such-host.invalid:80': ",
    ),
    (
        "invalid name",
        "[backend.\"a b\"]\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        1, 10,
        "invalid backend name \"a b\"",
    ),
    (
        "table name too long",
        "[table.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\ntype = \"ip\"\nsize = 10\n",
        1, 8,
        "is 64 bytes long: at most 63 are allowed",
    ),
    (
        "timeout key typo",
        "[defaults]\ntimeout = { conect = \"5s\" }\n",
        2, 13,
        "unknown key 'conect' in [defaults.timeout] (did you mean 'connect'?)",
    ),
    (
        "unknown section",
        "[frontends.f]\nbind = \":80\"\n",
        1, 2,
        "unknown section 'frontends' (did you mean 'frontend'?)",
    ),
    (
        "stats without socket",
        "[stats]\nlevel = \"admin\"\n",
        1, 2,
        "missing required key 'socket' in [stats]",
    ),
    (
        "stats mode not octal",
        "[stats]\nsocket = \"/tmp/s\"\nmode = \"0999\"\n",
        3, 8,
        "invalid file mode \"0999\" for 'mode': expected an octal string like \"0660\"",
    ),
    (
        "stats level",
        "[stats]\nsocket = \"/tmp/s\"\nlevel = \"root\"\n",
        3, 9,
        "expected one of \"user\", \"operator\", \"admin\" for 'level'",
    ),
    (
        "empty log",
        "[global]\nlog = \"\"\n",
        2, 7,
        "expected a non-empty string for 'log', found string \"\"",
    ),
    (
        "frontend as a plain key",
        "[frontend]\nbind = \":80\"\n",
        2, 8,
        "expected a table [frontend.NAME] for 'bind', found string \":80\"",
    ),
    (
        "head size limit below 1 KiB",
        "[global]\nhttp_max_head_size = 100\n",
        2, 22,
        "'http_max_head_size'",
    ),
    (
        "head size limit over 1 MiB",
        "[global]\nhttp_max_head_size = \"2MiB\"\n",
        2, 22,
        "at most 1MiB",
    ),
    (
        "too many headers allowed",
        "[global]\nhttp_max_headers = 5000\n",
        2, 20,
        "at most 1000",
    ),
    (
        "forwardfor in tcp mode",
        "[frontend.f]\nbind = \":80\"\nmode = \"tcp\"\nforwardfor = true\ndefault_backend = \"b\"\n",
        4, 1,
        "forwardfor needs mode \"http\"",
    ),
    (
        "balance hdr without a name",
        "[backend.x]\nmode = \"http\"\nbalance = \"hdr()\"\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        3, 11,
        "expected hdr(NAME) with a header name",
    ),
    (
        "balance hdr in tcp mode",
        "[backend.x]\nmode = \"tcp\"\nbalance = \"hdr(X-User)\"\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        3, 11,
        "balance \"hdr(NAME)\" needs mode \"http\"",
    ),
    (
        "unknown http_reuse mode",
        "[backend.x]\nmode = \"http\"\nhttp_reuse = \"sometimes\"\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        3, 14,
        "never",
    ),
    (
        "http_reuse in tcp mode",
        "[backend.x]\nmode = \"tcp\"\nhttp_reuse = \"always\"\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        3, 1,
        "http_reuse needs mode \"http\"",
    ),
    (
        "a pool setting with http_reuse never",
        "[backend.x]\nmode = \"http\"\nhttp_reuse = \"never\"\npool_max_idle = 10\nserver.s = { addr = \"127.0.0.1:1\" }\n",
        4, 1,
        "has no effect with http_reuse = \"never\"",
    ),
    (
        "pool_purge_delay without a unit",
        "[defaults]\npool_purge_delay = 5\n",
        2, 20,
        "duration",
    ),
    (
        "columns count characters, not bytes",
        "[global]\nuser = \"é\"; maxconn = 1\n",
        2, 11,
        "TOML syntax error",
    ),
];

fn errors(src: &str) -> Vec<(usize, usize, String)> {
    match parse_with(src, "bad.toml", HTTP) {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.into_iter()
                .map(|e| (e.line, e.column, e.message))
                .collect()
        }
    }
}

#[test]
fn each_bad_config_gives_one_positioned_error() {
    let mut failures = Vec::new();
    for (what, src, line, column, msg) in CASES {
        let src = format!("{src}{BASE}");
        let got = errors(&src);
        let ok =
            got.len() == 1 && got[0].0 == *line && got[0].1 == *column && got[0].2.contains(msg);
        if !ok {
            failures.push(format!(
                "{what}: expected {line}:{column}: {msg}\n    got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_error_is_reported_in_order() {
    let src = r#"[global]
workers = 0
maxcon = 10

[frontend.f]
bind = ":80"
default_backend = "nope"

[backend.b]
server.s = { addr = "127.0.0.1:9000" }
"#;
    let e = parse(src, "c.toml").unwrap_err();
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("c.toml:2:11: expected an integer >= 1"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("c.toml:3:1: unknown key 'maxcon'"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("c.toml:7:19: unknown backend 'nope'"),
        "{text}"
    );
}

#[test]
fn ipv6_and_ipv4_wildcards_do_not_conflict() {
    let src = format!(
        "[frontend.f]\nbind = [\"[::]:80\", \"0.0.0.0:80\"]\ndefault_backend = \"b\"\n{BASE}"
    );
    assert!(parse(&src, "c.toml").is_ok());
}

/// The HTTP stats page and the socket's owner and group are accepted and
/// read; a bad address is refused with its position.
#[test]
fn the_stats_page_and_socket_owner_are_read() {
    let src = "[stats]\nsocket = \"/tmp/x.sock\"\nuser = \"nobody\"\ngroup = \"adm\"\nhttp = \"127.0.0.1:8404\"\n\
               [frontend.f]\nbind = \":80\"\nmode = \"http\"\ndefault_backend = \"b\"\n\
               [backend.b]\nmode = \"http\"\nserver.s = { addr = \"127.0.0.1:1\" }\n";
    let c = parse(src, "h.toml").unwrap();
    let st = c.stats.unwrap();
    assert_eq!(st.http, Some("127.0.0.1:8404".parse().unwrap()));
    assert_eq!(
        (st.user.as_deref(), st.group.as_deref()),
        (Some("nobody"), Some("adm"))
    );
    let bad = src.replace("127.0.0.1:8404", "nowhere");
    let e = parse(&bad, "h.toml").unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (5, 8), "{e:?}");
}
