//! `[table.NAME]`: stick tables (key type, capacity, expiry, stored data types).

use crate::diag::Diag;
use crate::model::{DataType, KeyType, Table};
use crate::units;
use crate::walk::{self, did_you_mean, Section, Value};
use toml::de::DeValue;

/// Keys `[table.NAME]` accepts.
/// Largest table: entry slots are addressed with 24 bits per shard (64
/// shards) in tracking records, and 500 M entries is already ~60 GB.
pub const MAX_TABLE_SIZE: u32 = 500_000_000;

const KEYS: &[&str] = &["type", "size", "expire", "key_len", "store", "peers"];

/// Data types without a period.
const PLAIN: &[(&str, DataType)] = &[
    ("server_id", DataType::ServerId),
    ("conn_cur", DataType::ConnCur),
    ("conn_cnt", DataType::ConnCnt),
    ("http_req_cnt", DataType::HttpReqCnt),
    ("http_err_cnt", DataType::HttpErrCnt),
    ("bytes_in_cnt", DataType::BytesInCnt),
    ("bytes_out_cnt", DataType::BytesOutCnt),
    ("gpc0", DataType::Gpc0),
];

/// Builds a rate data type from its period.
type MakeRate = fn(std::time::Duration) -> DataType;

/// Rate data types, which need a period: `conn_rate(10s)`.
const RATES: &[(&str, MakeRate)] = &[
    ("conn_rate", DataType::ConnRate),
    ("http_req_rate", DataType::HttpReqRate),
    ("http_err_rate", DataType::HttpErrRate),
    ("bytes_in_rate", DataType::BytesInRate),
    ("bytes_out_rate", DataType::BytesOutRate),
    ("gpc0_rate", DataType::Gpc0Rate),
];

/// Reads one `[table.NAME]`.
pub(crate) fn parse(name: &str, sec: &Section<'_, '_>, d: &mut Diag) -> Table {
    sec.check_keys(KEYS, d);
    if let Some(span) = sec.key_span("peers") {
        d.error(span, "peers are not supported by this version");
    }
    let key = sec.require("type", d, |k, v, d| {
        walk::choice(
            k,
            v,
            &[
                ("ip", KeyType::Ip),
                ("ipv6", KeyType::Ipv6),
                ("integer", KeyType::Integer),
                ("string", KeyType::String),
                ("binary", KeyType::Binary),
            ],
            d,
        )
    });
    let size = sec.require("size", d, |k, v, d| {
        let n = walk::size(k, v, 1, d)?;
        if n > MAX_TABLE_SIZE as u64 {
            d.error(
                v.span(),
                format!("'size' must be at most {MAX_TABLE_SIZE}, found {n}"),
            );
            return None;
        }
        Some(n as u32)
    });
    let expire = sec.read("expire", d, walk::positive_duration);
    let key_len = sec.read_at("key_len", d, |k, v, d| {
        walk::int(k, v, 1, 65535, d).map(|n| n as u32)
    });
    let needs_len = matches!(key, Some(KeyType::String | KeyType::Binary));
    let key_len = match (key_len, key) {
        (Some((n, _)), _) if needs_len => n,
        (None, Some(t)) if needs_len => {
            let t = if t == KeyType::String {
                "string"
            } else {
                "binary"
            };
            d.error(
                sec.span.clone(),
                format!("table '{name}' of type {t} needs key_len"),
            );
            0
        }
        (Some((_, span)), Some(_)) => {
            let span = sec.key_span("key_len").unwrap_or(span);
            d.error(
                span,
                format!(
                    "'key_len' only applies to tables of type string or binary (table '{name}')"
                ),
            );
            0
        }
        _ => 0,
    };
    let store = sec.read("store", d, store).unwrap_or_default();
    Table {
        name: name.to_string(),
        key: key.unwrap_or(KeyType::Ip),
        key_len,
        size: size.unwrap_or(1),
        expire,
        store,
    }
}

/// `store = [...]`: data types, each at most once.
fn store(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<Vec<DataType>> {
    let DeValue::Array(items) = v.get_ref() else {
        walk::mismatch(what, "an array of data type names", v, d);
        return None;
    };
    let mut out: Vec<DataType> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for item in items.iter() {
        let Some(s) = walk::string("store", item, d) else {
            continue;
        };
        match data_type(s) {
            Ok((base, t)) => {
                if seen.contains(&base) {
                    d.error(item.span(), format!("data type '{base}' is stored twice"));
                } else {
                    seen.push(base);
                    out.push(t);
                }
            }
            Err(e) => d.error(item.span(), e),
        }
    }
    Some(out)
}

/// Parses `conn_cnt` or `conn_rate(10s)`; returns the base name too.
fn data_type(s: &str) -> Result<(&'static str, DataType), String> {
    let (base, period) = match s.split_once('(') {
        Some((base, rest)) => match rest.strip_suffix(')') {
            Some(p) => (base.trim(), Some(p.trim())),
            None => return Err(format!("invalid data type {s:?}: missing ')'")),
        },
        None => (s.trim(), None),
    };
    if let Some(&(name, t)) = PLAIN.iter().find(|(n, _)| *n == base) {
        return match period {
            None => Ok((name, t)),
            Some(_) => Err(format!("data type '{name}' takes no period")),
        };
    }
    if let Some(&(name, make)) = RATES.iter().find(|(n, _)| *n == base) {
        let Some(p) = period else {
            return Err(format!(
                "data type '{name}' needs a period, e.g. \"{name}(10s)\""
            ));
        };
        return match units::parse_duration(p) {
            Ok(t) if !t.is_zero() => Ok((name, make(t))),
            Ok(_) => Err(format!(
                "invalid period {p:?} for '{name}': must be greater than 0"
            )),
            Err(e) => Err(format!("invalid period for '{name}': {e}")),
        };
    }
    let names = PLAIN
        .iter()
        .map(|(n, _)| *n)
        .chain(RATES.iter().map(|(n, _)| *n));
    let hint = did_you_mean(base, names);
    let hint = if hint.is_empty() {
        let all: Vec<&str> = PLAIN
            .iter()
            .map(|(n, _)| *n)
            .chain(RATES.iter().map(|(n, _)| *n))
            .collect();
        format!(" (expected one of: {})", all.join(", "))
    } else {
        hint
    };
    Err(format!("unknown data type '{base}'{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn data_types() {
        assert_eq!(data_type("conn_cnt"), Ok(("conn_cnt", DataType::ConnCnt)));
        assert_eq!(
            data_type("conn_rate(10s)"),
            Ok(("conn_rate", DataType::ConnRate(Duration::from_secs(10))))
        );
        assert_eq!(
            data_type("gpc0_rate(1m)"),
            Ok(("gpc0_rate", DataType::Gpc0Rate(Duration::from_secs(60))))
        );
        assert!(data_type("conn_rate")
            .unwrap_err()
            .contains("needs a period"));
        assert!(data_type("conn_rate(10)")
            .unwrap_err()
            .contains("invalid duration"));
        assert!(data_type("conn_rate(0s)").is_err());
        assert!(data_type("conn_cnt(10s)")
            .unwrap_err()
            .contains("takes no period"));
        assert!(data_type("conn_rate(10s").is_err());
        assert!(data_type("con_cnt")
            .unwrap_err()
            .contains("did you mean 'conn_cnt'"));
    }
}
