//! Errors as operators read them: `FILE:LINE:COL: MESSAGE`, all of them at once.

use std::fmt;

/// One problem in a configuration file, with its 1-based position.
///
/// Line and column are 0 when the error has no position in the file (for
/// example when the file cannot be read at all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in, as given to [`crate::parse`] or [`crate::load`].
    pub file: String,
    /// 1-based line (0: no position).
    pub line: usize,
    /// 1-based column, counted in characters (0: no position).
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one configuration file, sorted by position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errors(pub Vec<ConfigError>);

impl Errors {
    /// Wraps `errors`, sorted by (line, column); errors at the same position keep their order.
    pub fn new(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line, e.column));
        Errors(errors)
    }

    /// The errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no error (never the case for an `Err` from [`crate::parse`]).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted: Vec<&ConfigError> = self.0.iter().collect();
        sorted.sort_by_key(|e| (e.line, e.column));
        for (i, e) in sorted.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: usize, column: usize, message: &str) -> ConfigError {
        ConfigError {
            file: "c.toml".into(),
            line,
            column,
            message: message.into(),
        }
    }

    #[test]
    fn display_is_sorted_one_per_line() {
        let e = Errors(vec![err(3, 1, "c"), err(1, 5, "a"), err(1, 7, "b")]);
        assert_eq!(e.to_string(), "c.toml:1:5: a\nc.toml:1:7: b\nc.toml:3:1: c");
    }
}
