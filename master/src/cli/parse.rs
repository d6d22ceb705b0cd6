//! The runtime API's line framing, as HAProxy's stats socket reads it: one
//! line holds commands separated by `;`; `\;` is a literal semicolon and `\\`
//! a backslash; words are separated by spaces or tabs; a command has at most
//! [`MAX_ARGS`] words. Pure: bytes in, words out (fuzzed in `fuzz/`).

/// Words per command, as HAProxy's MAX_CLI_ARGS.
pub const MAX_ARGS: usize = 64;

/// Splits one input line (without its newline) into commands of words.
/// Empty commands (`;;`, blank line) are dropped.
pub fn split_commands(line: &str) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let end_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if *in_word && words.len() < MAX_ARGS {
            words.push(std::mem::take(word));
        }
        word.clear();
        *in_word = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ (';' | '\\')) => {
                    word.push(n);
                    in_word = true;
                }
                Some(n) => {
                    word.push('\\');
                    word.push(n);
                    in_word = true;
                }
                None => {
                    word.push('\\');
                    in_word = true;
                }
            },
            ';' => {
                end_word(&mut words, &mut word, &mut in_word);
                if !words.is_empty() {
                    cmds.push(std::mem::take(&mut words));
                }
            }
            ' ' | '\t' | '\r' => end_word(&mut words, &mut word, &mut in_word),
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    end_word(&mut words, &mut word, &mut in_word);
    if !words.is_empty() {
        cmds.push(words);
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn commands_words_and_escapes() {
        assert_eq!(split_commands("show info"), w(&[&["show", "info"]]));
        assert_eq!(
            split_commands("show info;show stat"),
            w(&[&["show", "info"], &["show", "stat"]])
        );
        assert_eq!(
            split_commands("  prompt ; ;  help  "),
            w(&[&["prompt"], &["help"]])
        );
        assert_eq!(
            split_commands(r"set x a\;b c\\d"),
            w(&[&["set", "x", "a;b", r"c\d"]])
        );
        assert_eq!(split_commands(""), w(&[]));
        assert_eq!(split_commands("\\"), w(&[&["\\"]]));
    }

    #[test]
    fn at_most_64_words() {
        let line = vec!["x"; 100].join(" ");
        assert_eq!(split_commands(&line)[0].len(), MAX_ARGS);
    }
}
