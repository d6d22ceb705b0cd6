//! The word cursor rule parsers share, and conditions: `if|unless` followed
//! by ACL names (`!` negates), `{ anonymous ACL }`, juxtaposition for AND and
//! `||` / `or` for OR.

use super::acl::parse_test;
use super::ast::{Acl, AclRef, AclTest, Cond, Fetch, Term};
use super::lexer::Token;
use super::RuleError;
use crate::walk::did_you_mean;

/// The words of a line and the position of the next one.
pub(crate) struct Cursor<'t> {
    toks: &'t [Token],
    pos: usize,
    /// Byte length of the line: where missing words are reported.
    pub(crate) end: usize,
}

impl<'t> Cursor<'t> {
    /// A cursor at the first of `toks`, for a line of `end` bytes.
    pub(crate) fn new(toks: &'t [Token], end: usize) -> Self {
        Cursor { toks, pos: 0, end }
    }

    /// The next word, not consumed.
    pub(crate) fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.pos)
    }

    /// Consumes the next word.
    pub(crate) fn next(&mut self) -> Option<&'t Token> {
        let t = self.toks.get(self.pos)?;
        self.pos += 1;
        Some(t)
    }

    /// Consumes the next word, or reports `missing WHAT`.
    pub(crate) fn expect(&mut self, what: &str) -> Result<&'t Token, RuleError> {
        self.next()
            .ok_or_else(|| RuleError::new(self.end, format!("missing {what}")))
    }

    /// Offset of the next word, or the end of the line.
    pub(crate) fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.at)
    }

    /// True at the end of the line or at `if` / `unless`.
    pub(crate) fn at_cond(&self) -> bool {
        self.peek().is_none_or(|t| t.is("if") || t.is("unless"))
    }

    /// Reads the optional `if|unless COND` that ends a rule; anything else left is an error.
    pub(crate) fn cond(
        &mut self,
        cx: &CondCx<'_>,
        uses: &mut Vec<ScUse>,
    ) -> Result<Option<Cond>, RuleError> {
        let Some(kw) = self.next() else {
            return Ok(None);
        };
        let unless = if kw.is("if") {
            false
        } else if kw.is("unless") {
            true
        } else {
            return Err(RuleError::new(
                kw.at,
                format!("unexpected word '{}' (expected 'if' or 'unless')", kw.text),
            ));
        };
        let mut or_terms = Vec::new();
        let mut and = Vec::new();
        let mut negated = false;
        let mut bang_at = None;
        let mut or_at = None;
        while let Some(t) = self.next() {
            if t.is("||") || t.is("or") {
                if bang_at.is_some() || and.is_empty() {
                    return Err(RuleError::new(
                        t.at,
                        format!("missing ACL before '{}'", t.text),
                    ));
                }
                or_terms.push(std::mem::take(&mut and));
                or_at = Some(t.text.as_str());
                continue;
            }
            let (neg, word, at) = match t.text.strip_prefix('!') {
                Some(w) if !t.quoted => (true, w, t.at + 1),
                _ => (false, t.text.as_str(), t.at),
            };
            if neg && bang_at.is_some() {
                return Err(RuleError::new(t.at, "'!' twice in a row"));
            }
            negated |= neg;
            if word.is_empty() {
                bang_at = Some(t.at);
                continue;
            }
            let acl = if word == "{" && !t.quoted {
                let close = self.toks[self.pos..]
                    .iter()
                    .position(|t| t.is("}"))
                    .ok_or_else(|| RuleError::new(self.end, "missing '}' to close '{'"))?;
                let inner = &self.toks[self.pos..self.pos + close];
                let end = self.toks[self.pos + close].at;
                self.pos += close + 1;
                let test = parse_test(inner, end)?;
                let at = inner.first().map_or(end, |t| t.at);
                cx.check_test(&test, at, None)?;
                record(&test, &inner[0].text, at, uses);
                AclRef::Anonymous(test)
            } else if word == "}" && !t.quoted {
                return Err(RuleError::new(at, "'}' without '{'"));
            } else if word.starts_with('{') && !t.quoted {
                return Err(RuleError::new(at, "'{' must be followed by a space"));
            } else {
                let Some(i) = cx.acls.iter().position(|a| a.name == word) else {
                    let hint = did_you_mean(word, cx.acls.iter().map(|a| a.name.as_str()));
                    return Err(RuleError::new(at, format!("unknown acl '{word}'{hint}")));
                };
                for test in &cx.acls[i].tests {
                    cx.check_test(test, at, Some(word))?;
                }
                AclRef::Named(i)
            };
            and.push(Term { negated, acl });
            negated = false;
            bang_at = None;
        }
        if let Some(at) = bang_at {
            return Err(RuleError::new(at, "missing ACL after '!'"));
        }
        if and.is_empty() {
            let msg = match or_at {
                None => format!("missing condition after '{}'", kw.text),
                Some(or) => format!("missing ACL after '{or}'"),
            };
            return Err(RuleError::new(self.end, msg));
        }
        or_terms.push(and);
        Ok(Some(Cond { unless, or_terms }))
    }
}

/// A stick counter read or incremented by a rule, checked once every
/// `track-scN` of the frontend is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScUse {
    /// Byte offset in the line.
    pub(crate) at: usize,
    /// The slot, 0..=2.
    pub(crate) slot: u8,
    /// The counter needed (`None`: gpc0 or gpc0_rate, for `sc-inc-gpc0`).
    pub(crate) data: Option<super::ast::ScData>,
    /// How the rule wrote it, for messages.
    pub(crate) what: String,
}

/// Records the stick counter `test` reads, if any.
pub(crate) fn record(test: &AclTest, what: &str, at: usize, uses: &mut Vec<ScUse>) {
    if let Fetch::Sc { slot, data } = test.fetch {
        uses.push(ScUse {
            at,
            slot,
            data: Some(data),
            what: what.to_string(),
        });
    }
}

/// What a condition may refer to.
pub(crate) struct CondCx<'a> {
    /// The named ACLs declared so far.
    pub(crate) acls: &'a [Acl],
    /// Why HTTP fetches cannot be used here (`None`: they can).
    pub(crate) no_http: Option<String>,
}

impl CondCx<'_> {
    /// Refuses a test that needs an HTTP request where there is none.
    fn check_test(&self, test: &AclTest, at: usize, acl: Option<&str>) -> Result<(), RuleError> {
        let Some(why) = &self.no_http else {
            return Ok(());
        };
        if !test.fetch.needs_http() {
            return Ok(());
        }
        let fetch = match &test.fetch {
            Fetch::Path => "path".to_string(),
            Fetch::Url => "url".to_string(),
            Fetch::Method => "method".to_string(),
            Fetch::Hdr(h) => format!("hdr({h})"),
            _ => String::new(),
        };
        let msg = match acl {
            Some(a) => format!("acl '{a}' uses '{fetch}', which needs an HTTP request, but {why}"),
            None => format!("'{fetch}' needs an HTTP request, but {why}"),
        };
        Err(RuleError::new(at, msg))
    }
}
