//! The error collector every section writes into while it walks the tree.

use std::ops::Range;

/// A byte range in the source text.
pub(crate) type Span = Range<usize>;

/// Errors found so far, each at a byte span, in the order they were found,
/// and what the language may use in this build.
#[derive(Default)]
pub(crate) struct Diag {
    /// (where, what) pairs.
    pub(crate) errors: Vec<(Span, String)>,
    /// Accept what the language has but this build does not run (see
    /// [`crate::Support`]).
    pub(crate) support: crate::Support,
}

impl Diag {
    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: Span, message: impl Into<String>) {
        self.errors.push((span, message.into()));
    }
}
