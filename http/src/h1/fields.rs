//! A head's field lines, stored as spans into one byte buffer.
//!
//! The parser copies the head once into [`Fields`]; each field is a pair of
//! spans (name, value). Removing a field marks it; adding one appends its
//! bytes. So rules edit a head without re-parsing it, and a head of any size
//! costs two allocations.

use std::ops::Range;

/// A span of [`Fields`]' buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    pub(crate) fn new(r: Range<usize>) -> Span {
        Span {
            start: r.start as u32,
            end: r.end as u32,
        }
    }

    /// The span of `part` inside `whole`; empty if `part` is not a slice
    /// of it (httparse returns a static `""` for a reason phrase that is
    /// not UTF-8).
    pub(crate) fn within(whole: &[u8], part: &[u8]) -> Span {
        let base = whole.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        if at < base || at + part.len() > base + whole.len() {
            return Span::new(0..0);
        }
        Span::new(at - base..at - base + part.len())
    }

    pub(crate) fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Clone, Debug)]
struct Field {
    name: Span,
    value: Span,
    removed: bool,
}

/// The field lines of one head, in order, with case-insensitive lookup.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    /// The head's bytes as received, then the bytes of added fields.
    raw: Vec<u8>,
    list: Vec<Field>,
}

impl Fields {
    /// Fields over a copy of `head` (spans then index into it).
    pub(crate) fn with_raw(head: &[u8], capacity: usize) -> Fields {
        Fields {
            raw: head.to_vec(),
            list: Vec::with_capacity(capacity),
        }
    }

    /// The bytes a span covers.
    pub(crate) fn bytes(&self, s: Span) -> &[u8] {
        &self.raw[s.range()]
    }

    /// Records a field whose name and value are already in the buffer.
    pub(crate) fn push_span(&mut self, name: Span, value: Span) {
        self.list.push(Field {
            name,
            value,
            removed: false,
        });
    }

    /// Appends `bytes` to the buffer and returns their span.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Span {
        let start = self.raw.len();
        self.raw.extend_from_slice(bytes);
        Span::new(start..self.raw.len())
    }

    /// Every present field, in order: (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.list
            .iter()
            .filter(|f| !f.removed)
            .map(|f| (self.bytes(f.name), self.bytes(f.value)))
    }

    /// The values of every field named `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of field `name` as text (`None` also when it holds
    /// obs-text that is not UTF-8).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether field `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// How many fields are present.
    pub fn len(&self) -> usize {
        self.list.iter().filter(|f| !f.removed).count()
    }

    /// True when no field is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every field named `name`; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let mut n = 0;
        for f in &mut self.list {
            if !f.removed && self.raw[f.name.range()].eq_ignore_ascii_case(name.as_bytes()) {
                f.removed = true;
                n += 1;
            }
        }
        n
    }

    /// Removes every field whose name `pred` holds for; returns how many.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&[u8]) -> bool) -> usize {
        let mut n = 0;
        for f in &mut self.list {
            if !f.removed && pred(&self.raw[f.name.range()]) {
                f.removed = true;
                n += 1;
            }
        }
        n
    }

    /// Appends field `name: value`. The caller vouches for the bytes
    /// (rules are validated by the config parser: a token name, a value
    /// without CR, LF or NUL).
    pub fn add(&mut self, name: &str, value: &[u8]) {
        let name = self.append(name.as_bytes());
        let value = self.append(value);
        self.push_span(name, value);
    }

    /// Replaces every field named `name` with one `name: value`.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        self.remove(name);
        self.add(name, value);
    }

    /// Replaces the value of the fields named `name` in place (keeping
    /// their position), or appends one if there is none.
    pub fn replace_value(&mut self, name: &str, value: &[u8]) {
        let span = self.append(value);
        let mut found = false;
        for f in &mut self.list {
            if !f.removed && self.raw[f.name.range()].eq_ignore_ascii_case(name.as_bytes()) {
                if found {
                    f.removed = true;
                } else {
                    f.value = span;
                    found = true;
                }
            }
        }
        if !found {
            let n = self.append(name.as_bytes());
            self.push_span(n, span);
        }
    }

    /// The comma-separated elements of every field named `name`, trimmed,
    /// empty elements skipped (RFC 9110 §5.6.1).
    pub fn list_items<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(super::chars::trim_ows)
            .filter(|e| !e.is_empty())
    }

    /// Whether the list field `name` has the element `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list_items(name)
            .any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fields {
        let mut f = Fields::default();
        f.add("Host", b"a");
        f.add("X-One", b"1");
        f.add("x-one", b"2");
        f
    }

    #[test]
    fn lookup_is_case_insensitive_and_ordered() {
        let f = sample();
        assert_eq!(f.get("host"), Some(&b"a"[..]));
        assert_eq!(f.get_all("X-ONE").collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn set_replaces_all_and_remove_counts() {
        let mut f = sample();
        f.set("x-one", b"3");
        assert_eq!(f.get_all("x-one").collect::<Vec<_>>(), [b"3"]);
        assert_eq!(f.remove("X-One"), 1);
        assert_eq!(f.remove("X-One"), 0);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn replace_value_keeps_position() {
        let mut f = sample();
        f.replace_value("x-one", b"9");
        let all: Vec<_> = f.iter().collect();
        assert_eq!(all, [(&b"Host"[..], &b"a"[..]), (&b"X-One"[..], &b"9"[..])]);
    }

    #[test]
    fn list_items_split_and_trim() {
        let mut f = Fields::default();
        f.add("Connection", b" keep-alive , ,Upgrade");
        f.add("Connection", b"x-foo");
        let items: Vec<_> = f.list_items("connection").collect();
        assert_eq!(items, [&b"keep-alive"[..], b"Upgrade", b"x-foo"]);
        assert!(f.has_token("connection", "upgrade"));
        assert!(!f.has_token("connection", "close"));
    }
}
