//! One rule line, from its words to a resolved rule: the directive, the
//! action and its arguments, then the optional condition.

use super::acl::parse_test;
use super::actions::{
    backend, gpc_slot, header_action, http_status, redirect, ret, track, track_slot, unknown_action,
};
use super::ast::{
    AclTest, HttpRequestAction, HttpRequestRule, HttpResponseRule, TcpAction, TcpRule, UseBackend,
};
use super::cond::{record, CondCx, Cursor, ScUse};
use super::lexer::Token;
use super::{Context, RuleError};
use crate::model::Mode;
use crate::walk::did_you_mean;

/// The directive words a rule line may start with.
pub(crate) const DIRECTIVES: &[&str] = &[
    "acl",
    "tcp-request",
    "http-request",
    "http-response",
    "use_backend",
];

/// Actions of `tcp-request connection`, as listed in messages.
const TCP_ACTIONS: &[&str] = &[
    "accept",
    "reject",
    "track-sc0",
    "track-sc1",
    "track-sc2",
    "sc-inc-gpc0",
];

/// Actions of `http-request`, as listed in messages.
const REQ_ACTIONS: &[&str] = &[
    "deny",
    "return",
    "redirect",
    "set-header",
    "add-header",
    "del-header",
    "track-sc0",
    "track-sc1",
    "track-sc2",
    "sc-inc-gpc0",
];

/// Actions of `http-response`, as listed in messages.
const RESP_ACTIONS: &[&str] = &["set-header", "add-header", "del-header"];

/// One parsed line.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// `acl NAME TEST`: a test to add to the ACL `name`.
    Acl {
        /// The ACL's name.
        name: String,
        /// The test this line adds.
        test: AclTest,
    },
    /// `tcp-request connection ...`.
    Tcp(TcpRule),
    /// `http-request ...`.
    HttpRequest(HttpRequestRule),
    /// `http-response ...`.
    HttpResponse(HttpResponseRule),
    /// `use_backend ...`.
    UseBackend(UseBackend),
}

/// Parses the words of one line of `end` bytes; stick counters it uses go to `uses`.
pub(crate) fn parse_line(
    toks: &[Token],
    end: usize,
    cx: &Context<'_>,
    acls: &[super::ast::Acl],
    uses: &mut Vec<ScUse>,
) -> Result<Parsed, RuleError> {
    let mut c = Cursor::new(toks, end);
    let Some(dir) = c.next() else {
        return Err(RuleError::new(
            0,
            format!(
                "empty rule line (expected a directive: {})",
                DIRECTIVES.join(", ")
            ),
        ));
    };
    let http = |cx: &Context<'_>| {
        (cx.mode == Mode::Tcp).then(|| format!("frontend '{}' is in tcp mode", cx.frontend))
    };
    let conds = |no_http| CondCx { acls, no_http };
    match dir.text.as_str() {
        "acl" => {
            let name = c.expect("ACL name")?;
            check_acl_name(name)?;
            let rest = &toks[2..];
            let test = parse_test(rest, end)?;
            record(&test, &rest[0].text, rest[0].at, uses);
            Ok(Parsed::Acl {
                name: name.text.clone(),
                test,
            })
        }
        "tcp-request" => {
            let kind = c.expect("'connection' after 'tcp-request'")?;
            if kind.text != "connection" {
                return Err(RuleError::new(kind.at, format!("tcp-request {} is not supported by this version (expected 'tcp-request connection')", kind.text)));
            }
            let act = c.expect(&format!(
                "action (expected one of: {})",
                TCP_ACTIONS.join(", ")
            ))?;
            let action = if act.is("accept") {
                TcpAction::Accept
            } else if act.is("reject") {
                TcpAction::Reject
            } else if let Some(slot) = track_slot(&act.text) {
                TcpAction::Track(track(slot, false, &mut c, cx)?)
            } else if let Some(slot) = gpc_slot(act)? {
                uses.push(ScUse {
                    at: act.at,
                    slot,
                    data: None,
                    what: act.text.clone(),
                });
                TcpAction::IncGpc0 { slot }
            } else {
                return Err(unknown_action(act, "tcp-request connection", TCP_ACTIONS));
            };
            let why =
                "tcp-request connection rules run before any HTTP request is read".to_string();
            let cond = c.cond(&conds(Some(why)), uses)?;
            Ok(Parsed::Tcp(TcpRule { action, cond }))
        }
        "http-request" | "http-response" if cx.mode == Mode::Tcp => Err(RuleError::new(
            dir.at,
            format!(
                "{} rules need mode http, but frontend '{}' is in tcp mode",
                dir.text, cx.frontend
            ),
        )),
        "http-request" => {
            let act = c.expect(&format!(
                "action (expected one of: {})",
                REQ_ACTIONS.join(", ")
            ))?;
            let action = match act.text.as_str() {
                "deny" => {
                    let mut status = 403;
                    if c.peek()
                        .is_some_and(|t| t.is("deny_status") || t.is("status"))
                    {
                        c.next();
                        status = http_status(c.expect("HTTP status")?)?;
                    }
                    HttpRequestAction::Deny { status }
                }
                "return" => ret(&mut c)?,
                "redirect" => redirect(&mut c)?,
                w @ ("set-header" | "add-header" | "del-header") => {
                    HttpRequestAction::Header(header_action(w, &mut c)?)
                }
                t => match (track_slot(t), gpc_slot(act)?) {
                    (Some(slot), _) => HttpRequestAction::Track(track(slot, true, &mut c, cx)?),
                    (None, Some(slot)) => {
                        uses.push(ScUse {
                            at: act.at,
                            slot,
                            data: None,
                            what: act.text.clone(),
                        });
                        HttpRequestAction::IncGpc0 { slot }
                    }
                    _ => return Err(unknown_action(act, "http-request", REQ_ACTIONS)),
                },
            };
            let cond = c.cond(&conds(None), uses)?;
            Ok(Parsed::HttpRequest(HttpRequestRule { action, cond }))
        }
        "http-response" => {
            let act = c.expect(&format!(
                "action (expected one of: {})",
                RESP_ACTIONS.join(", ")
            ))?;
            let action = match act.text.as_str() {
                w @ ("set-header" | "add-header" | "del-header") => header_action(w, &mut c)?,
                _ => return Err(unknown_action(act, "http-response", RESP_ACTIONS)),
            };
            let cond = c.cond(&conds(None), uses)?;
            Ok(Parsed::HttpResponse(HttpResponseRule { action, cond }))
        }
        "use_backend" => {
            let name = c.expect("backend name")?;
            let backend = backend(name, cx)?;
            let cond = c.cond(&conds(http(cx)), uses)?;
            Ok(Parsed::UseBackend(UseBackend { backend, cond }))
        }
        other => {
            let hint = did_you_mean(other, DIRECTIVES.iter().copied());
            let hint = if hint.is_empty() {
                format!(" (expected one of: {})", DIRECTIVES.join(", "))
            } else {
                hint
            };
            Err(RuleError::new(
                dir.at,
                format!("unknown rule directive '{other}'{hint}"),
            ))
        }
    }
}

/// ACL names: letters, digits, `-_.:`, and not a condition keyword.
fn check_acl_name(t: &Token) -> Result<(), RuleError> {
    let ok = !t.text.is_empty()
        && t.text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if !ok {
        return Err(RuleError::new(
            t.at,
            format!(
                "invalid ACL name '{}': expected letters, digits, '-', '_', '.' and ':'",
                t.text
            ),
        ));
    }
    if ["or", "if", "unless"].contains(&t.text.as_str()) {
        return Err(RuleError::new(
            t.at,
            format!("'{}' cannot be an ACL name", t.text),
        ));
    }
    Ok(())
}
