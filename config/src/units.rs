//! Durations (`"500ms"`, `"5s"`, `"10m"`, `"1h"`, `"1d"`) and sizes (`16384`,
//! `"16KiB"`, `"256MiB"`).
//!
//! Durations always need a unit. Size units are **binary multiples for every
//! spelling**: `k`, `K`, `KB` and `KiB` all mean 1024, `M`/`MB`/`MiB` 1024², and
//! so on (as HAProxy reads `1m` in a table size). A size without a unit is bytes.

use std::time::Duration;

/// Splits `"123abc"` into `(123, "abc")`; `None` when there is no leading number
/// or it overflows.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n = s[..end].parse().ok()?;
    Some((n, &s[end..]))
}

/// Parses a duration with a unit: `ms`, `s`, `m`, `h` or `d`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: expected a number with a unit (ms, s, m, h, d), e.g. \"5s\""
        )
    };
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let millis_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {s:?}: too large"))
}

/// Parses a size string: a number, optionally followed by `B`, `k`/`K`/`KB`/`KiB`,
/// `M`/`MB`/`MiB`, `G`/`GB`/`GiB` or `T`/`TB`/`TiB` (all binary multiples).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size {s:?}: expected bytes as an integer or a number with a unit \
             (K, KiB, M, MiB, G, GiB), e.g. \"16KiB\""
        )
    };
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "5",
            "",
            "s",
            "5 s",
            "5sec",
            "-5s",
            "1.5s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("5").unwrap_err(),
            "invalid duration \"5\": expected a number with a unit (ms, s, m, h, d), e.g. \"5s\""
        );
        assert!(parse_duration("999999999999999999d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16384"), Ok(16384));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("16k"), Ok(16384));
        assert_eq!(parse_size("16KB"), Ok(16384));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        for bad in ["", "K", "12XB", "1.5M", "-1", "16 KiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }
}
