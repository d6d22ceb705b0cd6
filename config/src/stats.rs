//! `[stats]`: the runtime API socket (path, file mode, owner, group,
//! level) and the optional HTTP stats page.

use std::path::PathBuf;

use crate::addr;
use crate::diag::Diag;
use crate::model::{Level, Stats};
use crate::walk::{self, Section, Value};

/// Keys `[stats]` accepts.
const KEYS: &[&str] = &["socket", "mode", "user", "group", "level", "http"];

/// Reads `[stats]`; `None` when `socket` is missing (an error is reported).
pub(crate) fn parse(sec: &Section<'_, '_>, d: &mut Diag) -> Option<Stats> {
    sec.check_keys(KEYS, d);
    let socket = sec.require("socket", d, walk::nonempty).map(PathBuf::from);
    let mode = sec.read("mode", d, file_mode).unwrap_or(0o660);
    let user = sec.read("user", d, walk::nonempty).map(str::to_string);
    let group = sec.read("group", d, walk::nonempty).map(str::to_string);
    let level = sec
        .read("level", d, |k, v, d| {
            walk::choice(
                k,
                v,
                &[
                    ("user", Level::User),
                    ("operator", Level::Operator),
                    ("admin", Level::Admin),
                ],
                d,
            )
        })
        .unwrap_or(Level::Operator);
    let http = sec.read("http", d, |k, v, d| {
        let s = walk::string(k, v, d)?;
        let a = addr::parse_listen(s)
            .map_err(|e| d.error(v.span(), e))
            .ok()?;
        Some(a)
    });
    Some(Stats {
        socket: socket?,
        mode,
        user,
        group,
        level,
        http,
    })
}

/// An octal file mode string such as `"0660"` (at most `"7777"`).
fn file_mode(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<u32> {
    let s = walk::string(what, v, d);
    let parsed = s.and_then(|s| {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        let ok =
            (1..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        ok.then(|| u32::from_str_radix(digits, 8).ok()).flatten()
    });
    if parsed.is_none() {
        if let Some(s) = s {
            d.error(
                v.span(),
                format!(
                    "invalid file mode {s:?} for '{what}': expected an octal string like \"0660\""
                ),
            );
        }
    }
    parsed
}
