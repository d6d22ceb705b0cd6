//! Splitting a rule line into words, HAProxy style: blanks separate words,
//! `"..."` groups words, `'...'` groups words literally, an unquoted `#`
//! starting a word begins a comment. Outside single quotes a backslash
//! escapes a blank, `\\`, `#`, `"`, `'` and `$`, and `\n`, `\r`, `\t`,
//! `\xHH` are control characters; before anything else it stays a backslash
//! (so `^/img/.*\.png$` needs no doubling, as in HAProxy).

use super::RuleError;

/// One word of a rule line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// The word, quotes removed and escapes applied.
    pub(crate) text: String,
    /// Byte offset of the word's first character in the line.
    pub(crate) at: usize,
    /// True when any part of the word was quoted or escaped: such a word is
    /// never a keyword (`if`, `||`, `{`, ...).
    pub(crate) quoted: bool,
}

impl Token {
    /// True when the word is the unquoted keyword `kw`.
    pub(crate) fn is(&self, kw: &str) -> bool {
        !self.quoted && self.text == kw
    }
}

/// Splits `line` into words.
pub(crate) fn tokenize(line: &str) -> Result<Vec<Token>, RuleError> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(at, first)) = chars.peek() else {
            break;
        };
        if first == '#' {
            break;
        }
        let mut text = String::new();
        let mut quoted = false;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\\' => quoted |= escape(i, &mut chars, &mut text)?,
                '"' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => {
                                return Err(RuleError::new(i, "missing closing '\"'"));
                            }
                            Some((_, '"')) => break,
                            Some((j, '\\')) => {
                                escape(j, &mut chars, &mut text)?;
                            }
                            Some((_, ch)) => text.push(ch),
                        }
                    }
                }
                '\'' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => return Err(RuleError::new(i, "missing closing \"'\"")),
                            Some((_, '\'')) => break,
                            Some((_, ch)) => text.push(ch),
                        }
                    }
                }
                _ => text.push(c),
            }
        }
        out.push(Token { text, at, quoted });
    }
    Ok(out)
}

/// Applies the escape whose backslash is at `at`; true when it was one
/// (false: the backslash is kept as it is).
fn escape(
    at: usize,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    text: &mut String,
) -> Result<bool, RuleError> {
    let Some(&(_, e)) = chars.peek() else {
        return Err(RuleError::new(at, "a backslash ends the line"));
    };
    let c = match e {
        ' ' | '\t' | '\\' | '#' | '"' | '\'' | '$' => e,
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'x' => {
            chars.next();
            let hex: String = (0..2)
                .filter_map(|_| chars.next_if(|(_, c)| c.is_ascii_hexdigit()))
                .map(|(_, c)| c)
                .collect();
            return match u8::from_str_radix(&hex, 16) {
                Ok(b) if hex.len() == 2 && b.is_ascii() => {
                    text.push(char::from(b));
                    Ok(true)
                }
                _ => Err(RuleError::new(
                    at,
                    "invalid escape: expected \\xHH with HH below 80",
                )),
            };
        }
        _ => {
            text.push('\\');
            return Ok(false);
        }
    };
    chars.next();
    text.push(c);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<(String, usize, bool)> {
        tokenize(line)
            .unwrap()
            .into_iter()
            .map(|t| (t.text, t.at, t.quoted))
            .collect()
    }

    #[test]
    fn blanks_quotes_escapes() {
        assert_eq!(
            words("  acl a\tsrc  1.2.3.4 "),
            [
                ("acl".into(), 2, false),
                ("a".into(), 6, false),
                ("src".into(), 8, false),
                ("1.2.3.4".into(), 13, false)
            ]
        );
        assert_eq!(
            words(r#"set-header X "a b\"c" 'd\e' f\ g"#),
            [
                ("set-header".into(), 0, false),
                ("X".into(), 11, false),
                ("a b\"c".into(), 13, true),
                ("d\\e".into(), 22, true),
                ("f g".into(), 28, true)
            ]
        );
        assert_eq!(words(r#"x"y z"w"#), [("xy zw".into(), 0, true)]);
        assert_eq!(words(r"\.png\x41\t"), [("\\.pngA\t".into(), 0, true)]);
        assert_eq!(words(r#""\.\"""#), [("\\.\"".into(), 0, true)]);
        assert_eq!(words(r"a\b"), [("a\\b".into(), 0, false)]);
        assert_eq!(words(r#""""#), [(String::new(), 0, true)]);
        assert_eq!(words("a # comment"), [("a".into(), 0, false)]);
        assert_eq!(
            words("a b#c"),
            [("a".into(), 0, false), ("b#c".into(), 2, false)]
        );
        assert!(words("   ").is_empty());
    }

    #[test]
    fn keywords_are_unquoted() {
        let t = tokenize(r#"if "if" \{"#).unwrap();
        assert!(t[0].is("if"));
        assert!(!t[1].is("if"));
        assert!(!t[2].is("{"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            tokenize(r#"a "bc"#).unwrap_err(),
            RuleError::new(2, "missing closing '\"'")
        );
        assert_eq!(
            tokenize("a 'bc").unwrap_err(),
            RuleError::new(2, "missing closing \"'\"")
        );
        assert_eq!(
            tokenize("a b\\").unwrap_err(),
            RuleError::new(3, "a backslash ends the line")
        );
        assert!(tokenize(r"\xZZ").is_err());
        assert!(tokenize(r"\xff").is_err());
    }
}
