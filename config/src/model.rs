//! The validated configuration: what the rest of corral reads.
//!
//! Everything here is resolved: `[defaults]` are already merged into each
//! frontend and backend, backend references are indices, durations are
//! [`Duration`]s and addresses are [`SocketAddr`]s. A value of these types has
//! passed validation, so the worker and master never re-check it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::rules::ast::*;

/// The whole configuration of one corral instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Process-wide settings (`[global]`).
    pub global: Global,
    /// The runtime API socket and stats page (`[stats]`), if configured.
    pub stats: Option<Stats>,
    /// Frontends in declaration order (`[frontend.NAME]`).
    pub frontends: Vec<Frontend>,
    /// Backends in declaration order (`[backend.NAME]`).
    pub backends: Vec<Backend>,
    /// Stick tables in declaration order (`[table.NAME]`).
    pub tables: Vec<Table>,
    /// HTTP caches in declaration order (`[cache.NAME]`).
    pub caches: Vec<Cache>,
}

impl Config {
    /// Looks a backend up by name.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// `[global]`: the processes and their limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    /// Number of worker processes (`"auto"` already resolved to the core count).
    pub workers: usize,
    /// Cap on concurrent client connections for the whole instance.
    pub maxconn: u32,
    /// How long old or soft-stopped workers may keep serving before they are stopped.
    pub hard_stop_after: Duration,
    /// Memory cap in bytes (like `haproxy -m`), if any.
    pub memory_limit: Option<u64>,
    /// User to drop privileges to after binding.
    pub user: Option<String>,
    /// Group to drop privileges to after binding.
    pub group: Option<String>,
    /// Where the master writes its pid.
    pub pidfile: Option<PathBuf>,
    /// Where connection logs go.
    pub log: LogTarget,
    /// Limits on HTTP heads (largest head, most fields).
    pub http_limits: HttpLimits,
    /// Workers under load nap between polls instead of waiting in
    /// `epoll_wait` (see the worker's `nap` module); default true.
    pub poll_naps: bool,
}

/// Limits on an HTTP head, from `[global]` (HAProxy's `tune.bufsize` and
/// `tune.http.maxhdr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest head in bytes (`http_max_head_size`, 16 KiB by default): a
    /// longer request line is answered 414, a larger head 431.
    pub max_head: usize,
    /// Most header fields in a head (`http_max_headers`, 101 by default).
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 16 * 1024,
            max_headers: 101,
        }
    }
}

/// Where the per-connection log lines are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// The local syslog socket (`/dev/log`).
    Syslog,
    /// A file, opened for appending.
    File(PathBuf),
}

/// Privilege level of a stats socket, as in HAProxy's runtime API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Read-only, no table contents.
    User,
    /// Read everything, change nothing structural.
    Operator,
    /// Everything, including fd handover.
    Admin,
}

/// `[stats]`: the runtime API socket and the optional HTTP stats page.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Path of the Unix socket.
    pub socket: PathBuf,
    /// File mode of the socket (e.g. `0o660`).
    pub mode: u32,
    /// Owner of the socket file (a user name), if set.
    pub user: Option<String>,
    /// Group of the socket file (a group name), if set: with `mode =
    /// "0660"`, that group's members may use the socket.
    pub group: Option<String>,
    /// Privilege level granted to clients of the socket.
    pub level: Level,
    /// Address of the HTML stats page and `/metrics`, if any.
    pub http: Option<SocketAddr>,
}

/// Proxy mode of a frontend or backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Layer 4: bytes are forwarded as they are.
    Tcp,
    /// Layer 7: HTTP/1.1 requests and responses.
    Http,
}

/// Timeouts of a proxy, after `[defaults]` inheritance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Time allowed to establish a server connection.
    pub connect: Duration,
    /// Client inactivity.
    pub client: Duration,
    /// Server inactivity.
    pub server: Duration,
    /// Inactivity of an established bidirectional tunnel (TCP mode once
    /// connected). `None` (HAProxy's default): client and server timeouts apply.
    pub tunnel: Option<Duration>,
    /// Time allowed for a complete HTTP request head.
    pub http_request: Duration,
    /// Idle time allowed between HTTP requests on a keep-alive connection.
    pub http_keep_alive: Duration,
    /// Time allowed for a health check.
    pub check: Duration,
    /// Time a connection may wait in a backend queue for a server slot.
    pub queue: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client: Duration::from_secs(30),
            server: Duration::from_secs(30),
            tunnel: None,
            http_request: Duration::from_secs(10),
            http_keep_alive: Duration::from_secs(5),
            check: Duration::from_secs(2),
            queue: Duration::from_secs(5),
        }
    }
}

/// `[frontend.NAME]`: where clients connect.
#[derive(Clone, Debug, PartialEq)]
pub struct Frontend {
    /// The frontend's name, as logged and shown in stats.
    pub name: String,
    /// Addresses to listen on (IPv4 and IPv6).
    pub bind: Vec<SocketAddr>,
    /// Listen backlog passed to listen(2).
    pub backlog: u32,
    /// Proxy mode.
    pub mode: Mode,
    /// Cap on concurrent connections of this frontend.
    pub maxconn: u32,
    /// Index into [`Config::backends`] of the default backend.
    pub default_backend: Option<usize>,
    /// Zero-copy forwarding with splice(2).
    pub splice: bool,
    /// Add `X-Forwarded-For` with the client's address to requests.
    pub forwardfor: bool,
    /// Accept a connection only once its first bytes are in
    /// (TCP_DEFER_ACCEPT, HAProxy's `defer-accept`): for protocols whose
    /// client speaks first.
    pub defer_accept: bool,
    /// Timeouts (client side is the one that matters here).
    pub timeouts: Timeouts,
    /// Rule lines, in order, as written.
    pub rules: Vec<String>,
    /// The rule lines parsed and resolved: ACLs, rules by phase, `use_backend`.
    pub ruleset: RuleSet,
}

/// Load-balancing algorithm of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest current connections relative to weight.
    LeastConn,
    /// Consistent hash of the client address.
    Source,
    /// Consistent hash of the request path (HTTP mode only).
    Uri,
    /// Consistent hash of a request header's value, round robin without it
    /// (`hdr(NAME)`, HTTP mode only; the name is [`Backend::hash_header`]).
    Hdr,
    /// First server (in declaration order) with a free slot.
    First,
    /// Power of two random choices.
    Random,
}

/// `http_reuse`: when an idle server connection may carry a request of
/// another client connection (HAProxy's `http-reuse` modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HttpReuse {
    /// Never: a server connection serves one client connection only (kept
    /// for that client's next request).
    Never,
    /// A client connection's first request gets a connection of its own;
    /// later ones may take any idle connection of the server.
    #[default]
    Safe,
    /// Also first requests, on connections that already served more than
    /// one request (proven to be kept alive by the server).
    Aggressive,
    /// Any request on any idle connection of the server.
    Always,
}

/// `check = {...}` of a backend: active health checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Time between two checks of one server.
    pub interval: Duration,
    /// Consecutive successes to mark a server up.
    pub rise: u32,
    /// Consecutive failures to mark a server down.
    pub fall: u32,
    /// `"GET /health"`-style HTTP check line; `None` is a TCP connect check.
    pub http: Option<String>,
}

/// `stick = {...}` of a backend: persistence through a stick table.
#[derive(Clone, Debug, PartialEq)]
pub struct Stick {
    /// The sample the entry is keyed on (e.g. `src`).
    pub on: String,
    /// The stick table's name.
    pub table: String,
}

/// `[backend.NAME]`: a pool of servers.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    /// The backend's name.
    pub name: String,
    /// Proxy mode.
    pub mode: Mode,
    /// Load-balancing algorithm.
    pub balance: Balance,
    /// The header hashed by `balance = "hdr(NAME)"`, lowercased.
    pub hash_header: Option<String>,
    /// Add `X-Forwarded-For` with the client's address to requests
    /// (HAProxy's `option forwardfor`; the frontend's setting also counts).
    pub forwardfor: bool,
    /// Connection attempts after the first one fails.
    pub retries: u32,
    /// Use every backup server rather than only the first usable one.
    pub allbackups: bool,
    /// Zero-copy forwarding with splice(2).
    pub splice: bool,
    /// Timeouts (connect, server, tunnel, queue matter here).
    pub timeouts: Timeouts,
    /// Active health checks, if configured.
    pub check: Option<Check>,
    /// Persistence, if configured.
    pub stick: Option<Stick>,
    /// Name of the HTTP cache to use, if any.
    pub cache: Option<String>,
    /// Server connection reuse between client connections (HTTP mode).
    pub http_reuse: HttpReuse,
    /// Idle server connections kept per server by each worker; more are
    /// closed when their request ends (`pool_max_idle`, HAProxy's
    /// `pool-max-conn`).
    pub pool_max_idle: u32,
    /// An idle server connection unused this long is closed
    /// (`pool_purge_delay`, HAProxy's `pool-purge-delay`).
    pub pool_purge_delay: Duration,
    /// Servers in declaration order.
    pub servers: Vec<Server>,
}

/// `server.NAME = {...}`: one server of a backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// The server's name.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative weight, 0..=256 (0: never picked by weight-based algorithms).
    pub weight: u32,
    /// Cap on concurrent connections to this server; more wait in the queue.
    pub maxconn: Option<u32>,
    /// Used only when no active server is usable.
    pub backup: bool,
    /// Whether the backend's health check applies to this server.
    pub check: bool,
}

/// Key type of a stick table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// IPv4 address (IPv6 clients are stored as their mapped v4 form when possible).
    Ip,
    /// IPv6 address.
    Ipv6,
    /// 32-bit unsigned integer, as in HAProxy.
    Integer,
    /// String of at most `key_len` bytes.
    String,
    /// Binary blob of exactly `key_len` bytes.
    Binary,
}

impl KeyType {
    /// The type as written in `[table.NAME] type` and shown by `show table`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ip => "ip",
            KeyType::Ipv6 => "ipv6",
            KeyType::Integer => "integer",
            KeyType::String => "string",
            KeyType::Binary => "binary",
        }
    }
}

/// One data type stored in a stick table entry, with HAProxy's name and meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    /// Server the key sticks to.
    ServerId,
    /// Current concurrent connections.
    ConnCur,
    /// Cumulated connections.
    ConnCnt,
    /// Connection rate over the period.
    ConnRate(Duration),
    /// Cumulated HTTP requests.
    HttpReqCnt,
    /// HTTP request rate over the period.
    HttpReqRate(Duration),
    /// Cumulated HTTP errors.
    HttpErrCnt,
    /// HTTP error rate over the period.
    HttpErrRate(Duration),
    /// Cumulated bytes from the client.
    BytesInCnt,
    /// Cumulated bytes to the client.
    BytesOutCnt,
    /// Client byte rate over the period.
    BytesInRate(Duration),
    /// Byte rate to the client over the period.
    BytesOutRate(Duration),
    /// General purpose counter 0.
    Gpc0,
    /// Increment rate of gpc0 over the period.
    Gpc0Rate(Duration),
}

/// `[cache.NAME]`: an HTTP cache shared by all workers.
#[derive(Clone, Debug, PartialEq)]
pub struct Cache {
    /// The cache's name (backends name it in `cache`).
    pub name: String,
    /// Bytes of stored objects at most (keys and heads included).
    pub total_max_size: u64,
    /// A larger response streams through and is not stored.
    pub max_object_size: u64,
    /// Upper bound on any object's freshness.
    pub max_age: Duration,
    /// Store responses with `Vary` (by the varied request fields' values);
    /// without it such responses are not stored.
    pub process_vary: bool,
}

/// `[table.NAME]`: a stick table shared by all workers.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The table's name.
    pub name: String,
    /// Key type.
    pub key: KeyType,
    /// Key length in bytes for string and binary keys (0 otherwise).
    pub key_len: u32,
    /// Capacity in entries; the oldest entry is evicted when full.
    pub size: u32,
    /// Entries not updated for this long expire (`None`: never).
    pub expire: Option<Duration>,
    /// Data types stored per entry, in declaration order.
    pub store: Vec<DataType>,
}
