//! Rule lines of a frontend (`rules = [...]`): HAProxy directive lines.
//!
//! For now only the first word is checked; the full parser (ACLs, conditions,
//! track-sc, actions) comes with the stick-table issue.

/// The directive words a rule line may start with.
pub(crate) const DIRECTIVES: &[&str] = &[
    "acl",
    "tcp-request",
    "http-request",
    "http-response",
    "use_backend",
];

/// Checks one rule line's first word.
pub(crate) fn check_rule(line: &str) -> Result<(), String> {
    let Some(first) = line.split_whitespace().next() else {
        return Err(format!(
            "empty rule line (expected a directive: {})",
            DIRECTIVES.join(", ")
        ));
    };
    if DIRECTIVES.contains(&first) {
        Ok(())
    } else {
        Err(format!(
            "unknown rule directive '{first}' (expected one of: {})",
            DIRECTIVES.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_rule;

    #[test]
    fn first_word() {
        assert!(check_rule("acl is_api path_beg /api").is_ok());
        assert!(check_rule("  use_backend api if is_api").is_ok());
        assert!(check_rule("").is_err());
        assert_eq!(
            check_rule("redirect prefix /x").unwrap_err(),
            "unknown rule directive 'redirect' (expected one of: acl, tcp-request, http-request, http-response, use_backend)"
        );
    }
}
