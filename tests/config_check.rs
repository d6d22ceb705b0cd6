//! `corral -c -f FILE`, the command an operator runs before every reload:
//! a valid file says so and exits 0; a broken one exits 1 and names every
//! error as `FILE:LINE:COL: message` on stderr, LINE and COL 1-based,
//! pointing at the offending key (unknown keys) or value (everything else).

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// A valid TCP config with the given ports.
fn good_config(fe: u16, srv: u16) -> String {
    format!(
        r#"[global]
workers = 1

[frontend.fe]
bind = "127.0.0.1:{fe}"
mode = "tcp"
maxconn = 100
default_backend = "be"

[backend.be]
mode = "tcp"
balance = "roundrobin"
timeout = {{ connect = "1s", client = "5s", server = "5s" }}
server.a = {{ addr = "127.0.0.1:{srv}", weight = 1 }}
"#
    )
}

/// Where an error must be reported: the `nth` (0-based) line containing
/// `line_has`, at the column where `token` starts in it.
struct At {
    line_has: &'static str,
    nth: usize,
    token: &'static str,
}

impl At {
    fn locate(&self, text: &str) -> (usize, usize) {
        let (idx, line) = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(self.line_has))
            .nth(self.nth)
            .unwrap_or_else(|| panic!("test bug: no line {} with {:?}", self.nth, self.line_has));
        let col = line
            .find(self.token)
            .unwrap_or_else(|| panic!("test bug: {:?} not in {line:?}", self.token));
        (idx + 1, col + 1)
    }
}

/// An expected error: its position and what its message says (every group
/// must match; a group matches when any of its words occurs, ignoring case).
struct Expect {
    at: At,
    says: &'static [&'static [&'static str]],
}

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    path: String,
}

fn check(text: &str) -> Checked {
    let dir = temp_dir("check");
    let path = dir.join("corral.toml");
    fs::write(&path, text).unwrap();
    let out = run_corral(&["-c", "-f", path.to_str().unwrap()]);
    let r = Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        path: path.to_string_lossy().into_owned(),
    };
    let _ = fs::remove_dir_all(Path::new(&dir));
    r
}

fn assert_errors(case: &str, text: &str, expected: &[Expect]) {
    let r = check(text);
    let ctx = format!(
        "case {case}\n--- config ---\n{text}\n--- stderr ---\n{}\n--- stdout ---\n{}",
        r.stderr, r.stdout
    );
    assert_eq!(
        r.code,
        Some(1),
        "exit status of -c on a broken config\n{ctx}"
    );
    assert!(
        !r.stdout.contains("Configuration file is valid"),
        "a broken config was called valid\n{ctx}"
    );
    for e in expected {
        let (line, col) = e.at.locate(text);
        let prefix = format!("{}:{line}:{col}: ", r.path);
        let found = r.stderr.lines().find(|l| l.starts_with(&prefix));
        let Some(found) = found else {
            panic!("no error line starting with {prefix:?}\n{ctx}");
        };
        let msg = found[prefix.len()..].to_lowercase();
        for group in e.says {
            assert!(
                group.iter().any(|w| msg.contains(&w.to_lowercase())),
                "error at {line}:{col} should mention one of {group:?}: {found:?}\n{ctx}"
            );
        }
    }
}

/// A valid file: exit 0 and "Configuration file is valid".
#[test]
fn valid_config_is_reported_valid() {
    let text = good_config(free_port(), free_port());
    let r = check(&text);
    assert_eq!(
        r.code,
        Some(0),
        "stderr: {}\nstdout: {}\nconfig:\n{text}",
        r.stderr,
        r.stdout
    );
    assert!(
        r.stdout.contains("Configuration file is valid"),
        "stdout: {:?} stderr: {:?}",
        r.stdout,
        r.stderr
    );
}

/// A misspelt key is reported at the key, with the close match suggested.
#[test]
fn unknown_key_suggests_the_right_one() {
    let text = good_config(18080, 18081).replace("balance = ", "balanse = ");
    assert_errors(
        "unknown key",
        &text,
        &[Expect {
            at: At {
                line_has: "balanse",
                nth: 0,
                token: "balanse",
            },
            says: &[&["did you mean"], &["balance"]],
        }],
    );
}

/// A misspelt key inside an inline table (a server) is reported at that key.
#[test]
fn unknown_key_in_inline_table_is_located() {
    let text = good_config(18080, 18081).replace("weight = 1", "wieght = 1");
    assert_errors(
        "unknown server key",
        &text,
        &[Expect {
            at: At {
                line_has: "server.a",
                nth: 0,
                token: "wieght",
            },
            says: &[&["did you mean"], &["weight"]],
        }],
    );
}

/// A value of the wrong type is reported at the value.
#[test]
fn wrong_type_is_reported_at_the_value() {
    let text = good_config(18080, 18081).replace("maxconn = 100", r#"maxconn = "lots""#);
    assert_errors(
        "wrong type",
        &text,
        &[Expect {
            at: At {
                line_has: "maxconn",
                nth: 0,
                token: "\"lots\"",
            },
            says: &[&["integer", "number", "u32", "unsigned"]],
        }],
    );
}

/// A duration with an unknown unit is reported at the value.
#[test]
fn bad_duration_is_reported_at_the_value() {
    let text = good_config(18080, 18081).replace(r#"connect = "1s""#, r#"connect = "5 parsecs""#);
    assert_errors(
        "bad duration",
        &text,
        &[Expect {
            at: At {
                line_has: "timeout",
                nth: 0,
                token: "\"5 parsecs\"",
            },
            says: &[&["duration", "unit", "parsecs"]],
        }],
    );
}

/// default_backend naming no backend is reported at the name.
#[test]
fn unknown_backend_is_reported_at_the_name() {
    let text = good_config(18080, 18081)
        .replace(r#"default_backend = "be""#, r#"default_backend = "nope""#);
    assert_errors(
        "unknown backend",
        &text,
        &[Expect {
            at: At {
                line_has: "default_backend",
                nth: 0,
                token: "\"nope\"",
            },
            says: &[&["nope"], &["backend"]],
        }],
    );
}

/// Two frontends binding the same address: reported at the second bind.
#[test]
fn duplicate_bind_is_reported_at_the_second_one() {
    let mut text = good_config(18080, 18081);
    text.push_str(
        r#"
[frontend.fe2]
bind = "127.0.0.1:18080"
mode = "tcp"
default_backend = "be"
"#,
    );
    assert_errors(
        "duplicate bind",
        &text,
        &[Expect {
            at: At {
                line_has: "bind = ",
                nth: 1,
                token: "\"127.0.0.1:18080\"",
            },
            says: &[&[
                "already",
                "duplicate",
                "twice",
                "more than once",
                "same address",
            ]],
        }],
    );
}

/// workers = 0 is refused at the value.
#[test]
fn zero_workers_is_refused() {
    let text = good_config(18080, 18081).replace("workers = 1", "workers = 0");
    assert_errors(
        "workers = 0",
        &text,
        &[Expect {
            at: At {
                line_has: "workers",
                nth: 0,
                token: "0",
            },
            says: &[&[
                "at least 1",
                "at least one",
                ">= 1",
                "positive",
                "greater than 0",
                "greater than zero",
                "1 or more",
                "auto",
            ]],
        }],
    );
}

/// Every error of a file is reported in one run, each at its own place.
#[test]
fn every_error_is_reported_in_one_run() {
    let text = good_config(18080, 18081)
        .replace("balance = ", "balanse = ")
        .replace(r#"connect = "1s""#, r#"connect = "5 parsecs""#)
        .replace(r#"default_backend = "be""#, r#"default_backend = "nope""#);
    assert_errors(
        "three errors",
        &text,
        &[
            Expect {
                at: At {
                    line_has: "balanse",
                    nth: 0,
                    token: "balanse",
                },
                says: &[&["did you mean"]],
            },
            Expect {
                at: At {
                    line_has: "timeout",
                    nth: 0,
                    token: "\"5 parsecs\"",
                },
                says: &[&["duration", "unit", "parsecs"]],
            },
            Expect {
                at: At {
                    line_has: "default_backend",
                    nth: 0,
                    token: "\"nope\"",
                },
                says: &[&["nope"]],
            },
        ],
    );
}

/// `corral -v` prints the version and exits 0.
#[test]
fn version_is_printed() {
    let out = run_corral(&["-v"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "corral -v: {:?}: {text}", out.status);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "corral -v printed {text:?}"
    );
}

/// Every config under examples/ stays valid: they are what newcomers run first.
#[test]
fn every_example_config_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = run_corral(&["-c", "-f", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{} is invalid:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "examples/ holds the configs README points to");
}
