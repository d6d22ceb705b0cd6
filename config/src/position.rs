//! Byte offsets (what the TOML parser gives) to 1-based line:column
//! (what operators read), columns counted in characters.

/// Start offsets of every line of a source text.
pub(crate) struct LineIndex<'s> {
    src: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    /// Indexes the lines of `src`.
    pub(crate) fn new(src: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { src, starts }
    }

    /// 1-based (line, column) of byte `offset`; offsets past the end are clamped.
    pub(crate) fn locate(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = self.src[start..offset].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn lines_and_char_columns() {
        let idx = LineIndex::new("ab\né = 1\n\nx");
        assert_eq!(idx.locate(0), (1, 1));
        assert_eq!(idx.locate(1), (1, 2));
        assert_eq!(idx.locate(2), (1, 3));
        assert_eq!(idx.locate(3), (2, 1));
        // 'é' is 2 bytes: the space after it is column 2.
        assert_eq!(idx.locate(5), (2, 2));
        assert_eq!(idx.locate(4), (2, 1)); // inside 'é': clamped back
        assert_eq!(idx.locate(10), (3, 1));
        assert_eq!(idx.locate(11), (4, 1));
        assert_eq!(idx.locate(999), (4, 2));
    }
}
