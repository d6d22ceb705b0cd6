//! What ACL tests read and how they match: fetches, stick counter data,
//! networks, integer operators, string match kinds, regular expressions.

use std::fmt;
use std::net::IpAddr;

use crate::model::DataType;

/// A sample fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// `src`: the client's address.
    Src,
    /// `dst_port`: the local port the connection came in on.
    DstPort,
    /// `path` (also `path_beg`, `path_end`): the request path, without the query string.
    Path,
    /// `url`: the request target as sent.
    Url,
    /// `hdr(NAME)` / `req.hdr(NAME)`: a request header's value.
    Hdr(String),
    /// `method`: the request method.
    Method,
    /// `scN_*` / `sc_*(N)`: a counter of the entry tracked in stick counter slot N.
    Sc {
        /// The stick counter slot, 0..=2.
        slot: u8,
        /// The counter read.
        data: ScData,
    },
}

impl Fetch {
    /// True for fetches that need an HTTP request (none exists at connection time).
    pub fn needs_http(&self) -> bool {
        matches!(
            self,
            Fetch::Path | Fetch::Url | Fetch::Hdr(_) | Fetch::Method
        )
    }
}

/// A counter of a tracked stick-table entry, as read by an `sc` fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScData {
    /// `conn_cur`: concurrent connections.
    ConnCur,
    /// `conn_cnt`: cumulated connections.
    ConnCnt,
    /// `conn_rate`: connection rate over the table's period.
    ConnRate,
    /// `http_req_cnt`: cumulated HTTP requests.
    HttpReqCnt,
    /// `http_req_rate`: HTTP request rate.
    HttpReqRate,
    /// `http_err_cnt`: cumulated HTTP errors.
    HttpErrCnt,
    /// `http_err_rate`: HTTP error rate.
    HttpErrRate,
    /// `get_gpc0`: general purpose counter 0.
    Gpc0,
    /// `gpc0_rate`: increment rate of gpc0.
    Gpc0Rate,
    /// `bytes_in_cnt`: bytes received from the client.
    BytesInCnt,
    /// `bytes_out_cnt`: bytes sent to the client.
    BytesOutCnt,
}

impl ScData {
    /// Every counter, in the order fetch names are listed in messages.
    pub const ALL: [ScData; 11] = [
        ScData::ConnCur,
        ScData::ConnCnt,
        ScData::ConnRate,
        ScData::HttpReqCnt,
        ScData::HttpReqRate,
        ScData::HttpErrCnt,
        ScData::HttpErrRate,
        ScData::Gpc0,
        ScData::Gpc0Rate,
        ScData::BytesInCnt,
        ScData::BytesOutCnt,
    ];

    /// The fetch name after `scN_` (`conn_rate`, `get_gpc0`, ...).
    pub fn fetch_name(self) -> &'static str {
        match self {
            ScData::Gpc0 => "get_gpc0",
            other => other.data_name(),
        }
    }

    /// The name of the stored data type this counter reads (`gpc0` for `get_gpc0`).
    pub fn data_name(self) -> &'static str {
        match self {
            ScData::ConnCur => "conn_cur",
            ScData::ConnCnt => "conn_cnt",
            ScData::ConnRate => "conn_rate",
            ScData::HttpReqCnt => "http_req_cnt",
            ScData::HttpReqRate => "http_req_rate",
            ScData::HttpErrCnt => "http_err_cnt",
            ScData::HttpErrRate => "http_err_rate",
            ScData::Gpc0 => "gpc0",
            ScData::Gpc0Rate => "gpc0_rate",
            ScData::BytesInCnt => "bytes_in_cnt",
            ScData::BytesOutCnt => "bytes_out_cnt",
        }
    }

    /// True when `t` is the stored data type this counter reads (any period).
    pub fn is_stored_as(self, t: &DataType) -> bool {
        matches!(
            (self, t),
            (ScData::ConnCur, DataType::ConnCur)
                | (ScData::ConnCnt, DataType::ConnCnt)
                | (ScData::ConnRate, DataType::ConnRate(_))
                | (ScData::HttpReqCnt, DataType::HttpReqCnt)
                | (ScData::HttpReqRate, DataType::HttpReqRate(_))
                | (ScData::HttpErrCnt, DataType::HttpErrCnt)
                | (ScData::HttpErrRate, DataType::HttpErrRate(_))
                | (ScData::Gpc0, DataType::Gpc0)
                | (ScData::Gpc0Rate, DataType::Gpc0Rate(_))
                | (ScData::BytesInCnt, DataType::BytesInCnt)
                | (ScData::BytesOutCnt, DataType::BytesOutCnt)
        )
    }
}

/// How a sample is matched against an ACL's patterns; any pattern may match.
#[derive(Clone, Debug, PartialEq)]
pub enum Matcher {
    /// Addresses and networks (for `src`).
    Ip(Vec<Cidr>),
    /// Integers compared with an operator (for `dst_port` and `sc` fetches).
    Int {
        /// The comparison, sample on the left: `gt 100` is `sample > 100`.
        op: IntOp,
        /// The values; the test holds when the comparison holds for any.
        values: Vec<i64>,
    },
    /// Strings (`-m str|beg|end|sub`).
    Str {
        /// How the sample is compared to each value.
        kind: StrMatch,
        /// `-i`: ASCII case-insensitive.
        ignore_case: bool,
        /// The values, as written.
        values: Vec<String>,
    },
    /// Regular expressions (`-m reg`), unanchored, `-i` already applied.
    Regex(Vec<Regex>),
}

/// An IPv4 or IPv6 network: address (host bits cleared) and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

/// Integer comparison operators of ACLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOp {
    /// `eq` (the default).
    Eq,
    /// `ge`: sample >= value.
    Ge,
    /// `gt`: sample > value.
    Gt,
    /// `le`: sample <= value.
    Le,
    /// `lt`: sample < value.
    Lt,
}

/// String match kinds (`-m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrMatch {
    /// `-m str`: the whole sample equals the value.
    Exact,
    /// `-m beg`: the sample starts with the value.
    Begin,
    /// `-m end`: the sample ends with the value.
    End,
    /// `-m sub`: the sample contains the value.
    Sub,
}

/// A compiled regular expression (`-m reg`), compared by its source.
#[derive(Clone)]
pub struct Regex {
    source: String,
    ignore_case: bool,
    re: regex::Regex,
}

impl Regex {
    /// Compiles `pattern` (`ignore_case`: the `-i` flag); the error says why it is invalid.
    pub fn new(pattern: &str, ignore_case: bool) -> Result<Self, String> {
        let re = regex::RegexBuilder::new(pattern)
            .case_insensitive(ignore_case)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| match e {
                regex::Error::Syntax(s) => s.lines().last().unwrap_or("").trim().to_string(),
                other => other.to_string(),
            })?;
        Ok(Regex {
            source: pattern.to_string(),
            ignore_case,
            re,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when compiled case-insensitively (`-i`).
    pub fn ignore_case(&self) -> bool {
        self.ignore_case
    }

    /// True when the pattern matches anywhere in `s`.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.ignore_case == other.ignore_case
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Regex({:?}, ignore_case: {})",
            self.source, self.ignore_case
        )
    }
}
