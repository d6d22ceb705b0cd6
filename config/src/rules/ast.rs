//! The parsed, resolved rules of a frontend: what the worker evaluates.
//!
//! Names are resolved: named ACLs are indices into [`RuleSet::acls`], tables
//! are indices into [`crate::Config::tables`], backends are indices into
//! [`crate::Config::backends`].

pub use super::matcher::{Cidr, Fetch, IntOp, Matcher, Regex, ScData, StrMatch};

/// Every rule of one frontend, sorted by the phase it runs in; within a
/// phase, in the order written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleSet {
    /// Named ACLs, in the order they were first declared. Several `acl` lines
    /// with the same name add tests to one ACL, which matches when any of
    /// them does.
    pub acls: Vec<Acl>,
    /// `tcp-request connection ...`, run when a connection is accepted.
    pub tcp_connection: Vec<TcpRule>,
    /// `http-request ...`, run on each request head.
    pub http_request: Vec<HttpRequestRule>,
    /// `http-response ...`, run on each response head.
    pub http_response: Vec<HttpResponseRule>,
    /// `use_backend ...`: the first whose condition holds picks the backend.
    pub use_backend: Vec<UseBackend>,
}

impl RuleSet {
    /// Looks a named ACL up.
    pub fn acl(&self, name: &str) -> Option<&Acl> {
        self.acls.iter().find(|a| a.name == name)
    }

    /// True when there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.acls.is_empty()
            && self.tcp_connection.is_empty()
            && self.http_request.is_empty()
            && self.http_response.is_empty()
            && self.use_backend.is_empty()
    }
}

/// A named ACL (`acl NAME ...`, possibly on several lines).
#[derive(Clone, Debug, PartialEq)]
pub struct Acl {
    /// The ACL's name.
    pub name: String,
    /// Its tests, one per `acl` line: the ACL matches when any matches.
    pub tests: Vec<AclTest>,
}

/// One ACL test: a fetch and the patterns its sample is matched against.
#[derive(Clone, Debug, PartialEq)]
pub struct AclTest {
    /// What is fetched.
    pub fetch: Fetch,
    /// How the sample is matched (several patterns: any may match).
    pub matcher: Matcher,
}

/// A condition: `if COND` or `unless COND`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    /// `unless`: the rule applies when the terms do not hold.
    pub unless: bool,
    /// Terms separated by `||` / `or`; each is a conjunction (juxtaposed terms).
    pub or_terms: Vec<Vec<Term>>,
}

/// One operand of a condition, possibly negated with `!`.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// `!`: the term holds when the ACL does not match.
    pub negated: bool,
    /// The ACL tested.
    pub acl: AclRef,
}

/// The ACL a term tests.
#[derive(Clone, Debug, PartialEq)]
pub enum AclRef {
    /// A named ACL: index into [`RuleSet::acls`].
    Named(usize),
    /// An anonymous ACL written in place: `{ sc0_conn_rate gt 100 }`.
    Anonymous(AclTest),
}

/// The key a `track-scN` action looks entries up by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackKey {
    /// `src`: the client's address (ip or ipv6 tables).
    Src,
    /// `req.hdr(NAME)`: a request header's value (string tables).
    ReqHdr(String),
    /// `path` (string tables).
    Path,
    /// `url` (string tables).
    Url,
}

/// `track-scN KEY table NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// The stick counter slot, 0..=2.
    pub slot: u8,
    /// What the entry is keyed on.
    pub key: TrackKey,
    /// Index into [`crate::Config::tables`].
    pub table: usize,
}

/// A `tcp-request connection` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpRule {
    /// What it does.
    pub action: TcpAction,
    /// When it applies (`None`: always).
    pub cond: Option<Cond>,
}

/// Actions of `tcp-request connection`.
#[derive(Clone, Debug, PartialEq)]
pub enum TcpAction {
    /// `accept`: stop evaluating the tcp-request connection rules, keep the connection.
    Accept,
    /// `reject`: close the connection.
    Reject,
    /// `track-scN src table NAME`.
    Track(Track),
    /// `sc-inc-gpc0(N)` / `scN-inc-gpc0`: increment gpc0 of the entry tracked in slot N.
    IncGpc0 {
        /// The stick counter slot, 0..=2.
        slot: u8,
    },
}

/// An `http-request` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRequestRule {
    /// What it does.
    pub action: HttpRequestAction,
    /// When it applies (`None`: always).
    pub cond: Option<Cond>,
}

/// Actions of `http-request`.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpRequestAction {
    /// `track-scN KEY table NAME`.
    Track(Track),
    /// `deny [deny_status N]`: answer with an error (403 by default) and close.
    Deny {
        /// The HTTP status sent.
        status: u16,
    },
    /// `set-header`, `add-header`, `del-header` on the request.
    Header(HeaderAction),
    /// `return [status N] [content-type T] [string S]`: answer directly.
    Return {
        /// The HTTP status (200 by default).
        status: u16,
        /// `Content-Type` of the body, if any.
        content_type: Option<String>,
        /// The body, if any.
        body: Option<String>,
    },
    /// `sc-inc-gpc0(N)` / `scN-inc-gpc0`.
    IncGpc0 {
        /// The stick counter slot, 0..=2.
        slot: u8,
    },
    /// `redirect location|prefix|scheme VALUE [code N] [drop-query] [append-slash]`.
    Redirect(Redirect),
}

/// What a `redirect` builds its `Location` from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectKind {
    /// `location URL`: the URL as written.
    Location,
    /// `prefix PFX`: PFX followed by the request's URI (`/` keeps it relative).
    Prefix,
    /// `scheme S`: `S://` + the request's Host + its URI.
    Scheme,
}

/// `http-request redirect ...`: answer with a 3xx and a `Location`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// How `Location` is built.
    pub kind: RedirectKind,
    /// The URL, prefix or scheme.
    pub value: String,
    /// The status: 301, 302 (default), 303, 307 or 308.
    pub code: u16,
    /// `drop-query`: the request's query string is not carried over.
    pub drop_query: bool,
    /// `append-slash`: a `/` is added to a URI that does not end with one.
    pub append_slash: bool,
}

/// An `http-response` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpResponseRule {
    /// What it does.
    pub action: HeaderAction,
    /// When it applies (`None`: always).
    pub cond: Option<Cond>,
}

/// Header rewriting, the same for `http-request` and `http-response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderAction {
    /// `set-header NAME VALUE`: replace every occurrence of the header.
    Set {
        /// Header name.
        name: String,
        /// Value, words joined by one space.
        value: String,
    },
    /// `add-header NAME VALUE`: append the header.
    Add {
        /// Header name.
        name: String,
        /// Value, words joined by one space.
        value: String,
    },
    /// `del-header NAME`: remove every occurrence of the header.
    Del {
        /// Header name.
        name: String,
    },
}

/// `use_backend NAME [if|unless COND]`.
#[derive(Clone, Debug, PartialEq)]
pub struct UseBackend {
    /// Index into [`crate::Config::backends`].
    pub backend: usize,
    /// When it applies (`None`: always).
    pub cond: Option<Cond>,
}
