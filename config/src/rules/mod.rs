//! Rule lines of a frontend (`rules = [...]`): HAProxy directive lines,
//! parsed into a [`RuleSet`] and resolved against the backends and stick
//! tables of the configuration.
//!
//! Pure functions over strings: [`build`] takes the lines and what they may
//! refer to, and returns the rule set with every error found, each at a byte
//! offset inside its line.

mod acl;
mod actions;
pub(crate) mod ast;
mod cond;
#[cfg(test)]
mod error_tests;
mod lexer;
mod matcher;
mod parse;
#[cfg(test)]
mod tests;

use crate::model::{Backend, Mode, Table};
use ast::{HttpRequestAction, RuleSet, TcpAction};
use cond::ScUse;
use parse::Parsed;

/// A problem in one rule line, at a byte offset inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleError {
    /// Byte offset in the line (the line's length: at its end).
    pub(crate) offset: usize,
    /// What is wrong and what was expected.
    pub(crate) message: String,
}

impl RuleError {
    /// An error at `offset`.
    pub(crate) fn new(offset: usize, message: impl Into<String>) -> Self {
        RuleError {
            offset,
            message: message.into(),
        }
    }
}

/// What the rules of a frontend may refer to.
pub(crate) struct Context<'a> {
    /// The frontend's name, for messages.
    pub(crate) frontend: &'a str,
    /// The frontend's mode.
    pub(crate) mode: Mode,
    /// Every backend, in declaration order (`use_backend` resolves to an index).
    pub(crate) backends: &'a [Backend],
    /// Every stick table, in declaration order (`table NAME` resolves to an index).
    pub(crate) tables: &'a [Table],
}

/// Parses and resolves `lines`; returns the rules and every error as
/// (index of the line, error). The rule set is complete only without errors.
pub(crate) fn build(lines: &[&str], cx: &Context<'_>) -> (RuleSet, Vec<(usize, RuleError)>) {
    let mut rs = RuleSet::default();
    let mut errors = Vec::new();
    let mut uses: Vec<(usize, ScUse)> = Vec::new();
    // Slots a broken line may have tracked: their uses are not checked, so
    // one mistake gives one error.
    let mut maybe_tracked = [false; 3];
    for (i, line) in lines.iter().enumerate() {
        let toks = match lexer::tokenize(line) {
            Ok(t) => t,
            Err(e) => {
                errors.push((i, e));
                maybe_tracked = [true; 3];
                continue;
            }
        };
        let mut line_uses = Vec::new();
        match parse::parse_line(&toks, line.len(), cx, &rs.acls, &mut line_uses) {
            Ok(p) => {
                uses.extend(line_uses.into_iter().map(|u| (i, u)));
                match p {
                    Parsed::Acl { name, test } => match rs.acls.iter_mut().find(|a| a.name == name)
                    {
                        Some(a) => a.tests.push(test),
                        None => rs.acls.push(ast::Acl {
                            name,
                            tests: vec![test],
                        }),
                    },
                    Parsed::Tcp(r) => rs.tcp_connection.push(r),
                    Parsed::HttpRequest(r) => rs.http_request.push(r),
                    Parsed::HttpResponse(r) => rs.http_response.push(r),
                    Parsed::UseBackend(r) => rs.use_backend.push(r),
                }
            }
            Err(e) => {
                for t in &toks {
                    if let Some(n) = t.text.strip_prefix("track-sc") {
                        if let Ok(n @ 0..=2) = n.parse::<usize>() {
                            maybe_tracked[n] = true;
                        }
                    }
                }
                errors.push((i, e));
            }
        }
    }
    for (i, u) in uses {
        if let Err(e) = check_use(&rs, cx.tables, &u, maybe_tracked[usize::from(u.slot)]) {
            errors.push((i, e));
        }
    }
    errors.sort_by_key(|(i, e)| (*i, e.offset));
    (rs, errors)
}

/// The tables stick counter `slot` is tracked in, by every track rule of `rs`.
pub(crate) fn tracked_tables(rs: &RuleSet, slot: u8) -> Vec<usize> {
    let tcp = rs.tcp_connection.iter().filter_map(|r| match &r.action {
        TcpAction::Track(t) => Some(t),
        _ => None,
    });
    let http = rs.http_request.iter().filter_map(|r| match &r.action {
        HttpRequestAction::Track(t) => Some(t),
        _ => None,
    });
    let mut out: Vec<usize> = Vec::new();
    for t in tcp.chain(http).filter(|t| t.slot == slot) {
        if !out.contains(&t.table) {
            out.push(t.table);
        }
    }
    out
}

/// Checks that the slot a rule reads or increments is tracked, in tables
/// that store what is needed.
fn check_use(rs: &RuleSet, tables: &[Table], u: &ScUse, maybe: bool) -> Result<(), RuleError> {
    let found = tracked_tables(rs, u.slot);
    if found.is_empty() {
        return if maybe {
            Ok(())
        } else {
            Err(RuleError::new(
                u.at,
                format!(
                    "sc{} is not tracked by any rule of this frontend (add e.g. 'tcp-request connection track-sc{} src table NAME'), needed by '{}'",
                    u.slot, u.slot, u.what
                ),
            ))
        };
    }
    for t in found.into_iter().map(|i| &tables[i]) {
        match u.data {
            Some(d) if !t.store.iter().any(|s| d.is_stored_as(s)) => {
                return Err(RuleError::new(
                    u.at,
                    format!(
                        "table {} does not store {}, needed by '{}' (sc{} is tracked in it)",
                        t.name,
                        d.data_name(),
                        u.what,
                        u.slot
                    ),
                ));
            }
            None if !t.store.iter().any(|s| {
                ast::ScData::Gpc0.is_stored_as(s) || ast::ScData::Gpc0Rate.is_stored_as(s)
            }) =>
            {
                return Err(RuleError::new(
                    u.at,
                    format!(
                        "table {} stores neither gpc0 nor gpc0_rate, needed by '{}' (sc{} is tracked in it)",
                        t.name, u.what, u.slot
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
