//! Walking the spanned TOML tree by hand: typed readers that report what was
//! expected and what was found, key checks with "did you mean", and names.

use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diag::{Diag, Span};
use crate::units;

/// A value of the tree with its span.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// How a found value is described in an error: `string "many"`, `boolean true`, ...
pub(crate) fn found(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => {
            let s: String = if s.chars().count() > 60 {
                s.chars().take(60).chain("...".chars()).collect()
            } else {
                s.to_string()
            };
            format!("string {s:?}")
        }
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {}", f.as_str()),
        DeValue::Boolean(b) => format!("boolean {b}"),
        other => other.type_str().to_string(),
    }
}

/// Reports `expected EXPECTED for 'WHAT', found ...` at the value.
pub(crate) fn mismatch(what: &str, expected: &str, v: &Value<'_>, d: &mut Diag) {
    d.error(
        v.span(),
        format!(
            "expected {expected} for '{what}', found {}",
            found(v.get_ref())
        ),
    );
}

/// The closest of `candidates` to `word`, if one is close enough to suggest.
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (c, strsim::jaro_winkler(word, c)))
        .filter(|&(c, jw)| jw >= 0.85 || strsim::normalized_damerau_levenshtein(word, c) >= 0.6)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// ` (did you mean 'Y'?)` when a candidate is close, else empty.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

/// For a reference to an unknown KIND: ` (did you mean 'Y'?)`, else the list
/// of declared names, or that none is declared.
pub(crate) fn hint<'c>(
    word: &str,
    names: impl Iterator<Item = &'c str> + Clone,
    kind: &str,
) -> String {
    let close = did_you_mean(word, names.clone());
    if !close.is_empty() {
        return close;
    }
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        format!(" (no {kind} is declared)")
    } else {
        format!(" (declared: {})", all.join(", "))
    }
}

/// A table being read: its entries, its label for messages (`[global]`) and
/// the span errors about missing keys point at.
pub(crate) struct Section<'a, 'i> {
    /// The table's entries.
    pub(crate) table: &'a DeTable<'i>,
    /// How messages name it, e.g. `[backend.app]`.
    pub(crate) label: String,
    /// Where errors about the section as a whole point (usually its name).
    pub(crate) span: Span,
}

impl<'a, 'i> Section<'a, 'i> {
    /// Reads `v` as a table; reports `expected a table for 'WHAT'` otherwise.
    pub(crate) fn of(
        what: &str,
        label: String,
        span: Span,
        v: &'a Value<'i>,
        d: &mut Diag,
    ) -> Option<Self> {
        match v.get_ref() {
            DeValue::Table(table) => Some(Section { table, label, span }),
            _ => {
                mismatch(what, "a table", v, d);
                None
            }
        }
    }

    /// Reports every key not in `allowed`, suggesting the closest one.
    pub(crate) fn check_keys(&self, allowed: &[&str], d: &mut Diag) {
        for (k, _) in self.table.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                d.error(k.span(), unknown_key(k.get_ref(), &self.label, allowed));
            }
        }
    }

    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table.get(key)
    }

    /// The span of `key` itself, if present.
    pub(crate) fn key_span(&self, key: &str) -> Option<Span> {
        self.table.get_key_value(key).map(|(k, _)| k.span())
    }

    /// Entries as (name, name span, value), in file order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a str, Span, &'a Value<'i>)> {
        self.table
            .iter()
            .map(|(k, v)| (k.get_ref().as_ref(), k.span(), v))
    }

    /// Reads `key` with `read`, if present.
    pub(crate) fn read<T>(
        &self,
        key: &str,
        d: &mut Diag,
        read: impl FnOnce(&str, &'a Value<'i>, &mut Diag) -> Option<T>,
    ) -> Option<T> {
        self.get(key).and_then(|v| read(key, v, d))
    }

    /// Like [`Section::read`], keeping the value's span (for errors found later).
    pub(crate) fn read_at<T>(
        &self,
        key: &str,
        d: &mut Diag,
        read: impl FnOnce(&str, &'a Value<'i>, &mut Diag) -> Option<T>,
    ) -> Option<(T, Span)> {
        let v = self.get(key)?;
        read(key, v, d).map(|t| (t, v.span()))
    }

    /// Reads a required `key`; reports `missing required key` at the section otherwise.
    pub(crate) fn require<T>(
        &self,
        key: &str,
        d: &mut Diag,
        read: impl FnOnce(&str, &'a Value<'i>, &mut Diag) -> Option<T>,
    ) -> Option<T> {
        match self.get(key) {
            Some(v) => read(key, v, d),
            None => {
                d.error(
                    self.span.clone(),
                    format!("missing required key '{key}' in {}", self.label),
                );
                None
            }
        }
    }
}

/// `unknown key 'X' in LABEL (did you mean 'Y'?)`, or the list of expected keys.
pub(crate) fn unknown_key(key: &str, label: &str, allowed: &[&str]) -> String {
    match suggest(key, allowed.iter().copied()) {
        Some(s) => format!("unknown key '{key}' in {label} (did you mean '{s}'?)"),
        None => format!(
            "unknown key '{key}' in {label} (expected one of: {})",
            allowed.join(", ")
        ),
    }
}

/// A string value.
pub(crate) fn string<'a>(what: &str, v: &'a Value<'_>, d: &mut Diag) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            mismatch(what, "a string", v, d);
            None
        }
    }
}

/// A non-empty string value.
pub(crate) fn nonempty<'a>(what: &str, v: &'a Value<'_>, d: &mut Diag) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) if !s.is_empty() => Some(s.as_ref()),
        _ => {
            mismatch(what, "a non-empty string", v, d);
            None
        }
    }
}

/// A boolean value.
pub(crate) fn boolean(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            mismatch(what, "a boolean (true or false)", v, d);
            None
        }
    }
}

/// The integer of a TOML integer value (`None` when it is not one; saturates on overflow).
pub(crate) fn integer_of(v: &DeValue<'_>) -> Option<i128> {
    match v {
        DeValue::Integer(i) => {
            let s = i.as_str().replace('_', "");
            Some(
                i128::from_str_radix(&s, i.radix()).unwrap_or(if s.starts_with('-') {
                    i128::MIN
                } else {
                    i128::MAX
                }),
            )
        }
        _ => None,
    }
}

/// How an integer range is described: `>= 1`, `between 0 and 256`.
pub(crate) fn range_text(min: i64, max: i64) -> String {
    if max >= i64::from(u32::MAX) {
        format!(">= {min}")
    } else {
        format!("between {min} and {max}")
    }
}

/// An integer in `min..=max`.
pub(crate) fn int(what: &str, v: &Value<'_>, min: i64, max: i64, d: &mut Diag) -> Option<i64> {
    match integer_of(v.get_ref()) {
        Some(n) if n >= i128::from(min) && n <= i128::from(max) => Some(n as i64),
        Some(n) if n > i128::from(max) && max >= i64::from(u32::MAX) => {
            mismatch(what, &format!("an integer >= {min} and <= {max}"), v, d);
            None
        }
        _ => {
            mismatch(what, &format!("an integer {}", range_text(min, max)), v, d);
            None
        }
    }
}

/// An integer in `min..=u32::MAX`.
pub(crate) fn u32_min(what: &str, v: &Value<'_>, min: u32, d: &mut Diag) -> Option<u32> {
    int(what, v, i64::from(min), i64::from(u32::MAX), d).map(|n| n as u32)
}

/// A duration string with a unit.
pub(crate) fn duration(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<Duration> {
    match v.get_ref() {
        DeValue::String(s) => match units::parse_duration(s) {
            Ok(t) => Some(t),
            Err(e) => {
                d.error(v.span(), e);
                None
            }
        },
        _ => {
            mismatch(
                what,
                "a duration string with a unit (ms, s, m, h, d), e.g. \"5s\"",
                v,
                d,
            );
            None
        }
    }
}

/// A duration that must not be zero.
pub(crate) fn positive_duration(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<Duration> {
    let t = duration(what, v, d)?;
    if t.is_zero() {
        d.error(v.span(), format!("'{what}' must be greater than 0"));
        return None;
    }
    Some(t)
}

/// A size: an integer (bytes) or a string with a unit; at least `min`.
pub(crate) fn size(what: &str, v: &Value<'_>, min: u64, d: &mut Diag) -> Option<u64> {
    let n = match v.get_ref() {
        DeValue::Integer(_) => {
            let n = integer_of(v.get_ref())?;
            match u64::try_from(n) {
                Ok(n) => n,
                Err(_) => {
                    mismatch(what, &format!("a size >= {min}"), v, d);
                    return None;
                }
            }
        }
        DeValue::String(s) => match units::parse_size(s) {
            Ok(n) => n,
            Err(e) => {
                d.error(v.span(), e);
                return None;
            }
        },
        _ => {
            mismatch(
                what,
                "a size (bytes as an integer, or a string like \"16KiB\")",
                v,
                d,
            );
            return None;
        }
    };
    if n < min {
        d.error(
            v.span(),
            format!("'{what}' must be at least {min}, found {n}"),
        );
        return None;
    }
    Some(n)
}

/// One of a fixed set of strings, mapped to its value.
pub(crate) fn choice<T: Copy>(
    what: &str,
    v: &Value<'_>,
    options: &[(&str, T)],
    d: &mut Diag,
) -> Option<T> {
    if let DeValue::String(s) = v.get_ref() {
        if let Some((_, t)) = options.iter().find(|(name, _)| *name == s.as_ref()) {
            return Some(*t);
        }
    }
    let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let mut msg = format!(
        "expected one of {} for '{what}', found {}",
        names.join(", "),
        found(v.get_ref())
    );
    if let DeValue::String(s) = v.get_ref() {
        if let Some(close) = suggest(s, options.iter().map(|(n, _)| *n)) {
            msg.push_str(&format!(" (did you mean \"{close}\"?)"));
        }
    }
    d.error(v.span(), msg);
    None
}

/// Longest name: shared-memory regions and counter rows are keyed by names
/// of at most this many bytes.
pub(crate) const MAX_NAME: usize = 63;

/// Checks a frontend/backend/server/table name: non-empty, `[A-Za-z0-9_.:-]`,
/// at most [`MAX_NAME`] bytes.
pub(crate) fn check_name(kind: &str, name: &str, span: Span, d: &mut Diag) {
    if name.len() > MAX_NAME {
        d.error(
            span,
            format!(
                "{kind} name {name:?} is {} bytes long: at most {MAX_NAME} are allowed",
                name.len()
            ),
        );
        return;
    }
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if !ok {
        d.error(
            span,
            format!(
                "invalid {kind} name {name:?}: expected a non-empty name made of letters, digits, '_', '.', ':' and '-'"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = [
            "workers",
            "maxconn",
            "hard_stop_after",
            "log",
            "user",
            "group",
        ];
        assert_eq!(suggest("maxcon", keys), Some("maxconn"));
        assert_eq!(suggest("worker", keys), Some("workers"));
        assert_eq!(suggest("hard_stop", keys), Some("hard_stop_after"));
        assert_eq!(suggest("zzzzzz", keys), None);
        assert_eq!(suggest("groupe", keys), Some("group"));
    }
}
