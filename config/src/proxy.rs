//! Settings shared by `[defaults]`, frontends and backends, and how they are
//! inherited: a key set in a proxy wins over `[defaults]`, and timeouts merge
//! key by key (built-in defaults, then `[defaults]`' table, then the proxy's).

use std::time::Duration;

use crate::diag::{Diag, Span};
use crate::model::{Balance, HttpReuse, Mode, Timeouts};
use crate::walk::{self, Section, Value};

/// Keys `[defaults]` accepts.
pub(crate) const DEFAULTS_KEYS: &[&str] = &[
    "mode",
    "splice",
    "timeout",
    "retries",
    "balance",
    "maxconn",
    "allbackups",
    "backlog",
    "forwardfor",
    "http_reuse",
    "pool_max_idle",
    "pool_purge_delay",
];

/// Keys of a `timeout = {...}` table, in [`Timeouts`] field order.
const TIMEOUT_KEYS: [&str; 8] = [
    "connect",
    "client",
    "server",
    "tunnel",
    "http_request",
    "http_keep_alive",
    "check",
    "queue",
];

/// Settings as written in one section: `None` where the key is absent.
#[derive(Clone, Default)]
pub(crate) struct ProxySettings {
    /// `mode`, with the span of its value.
    pub(crate) mode: Option<(Mode, Span)>,
    /// `splice`.
    pub(crate) splice: Option<bool>,
    /// `timeout.*`, indexed like [`TIMEOUT_KEYS`].
    pub(crate) timeouts: [Option<Duration>; 8],
    /// `retries`.
    pub(crate) retries: Option<u32>,
    /// `balance`, with the span of its value (and the header of `hdr(NAME)`).
    pub(crate) balance: Option<(Balance, Span, Option<String>)>,
    /// `maxconn`.
    pub(crate) maxconn: Option<u32>,
    /// `allbackups`.
    pub(crate) allbackups: Option<bool>,
    /// `backlog`.
    pub(crate) backlog: Option<u32>,
    /// `forwardfor`.
    pub(crate) forwardfor: Option<bool>,
    /// `http_reuse`.
    pub(crate) http_reuse: Option<HttpReuse>,
    /// `pool_max_idle`.
    pub(crate) pool_max_idle: Option<u32>,
    /// `pool_purge_delay`.
    pub(crate) pool_purge_delay: Option<Duration>,
}

impl ProxySettings {
    /// Reads whichever shared keys `sec` holds (unknown keys are checked by the caller).
    pub(crate) fn read(sec: &Section<'_, '_>, d: &mut Diag) -> Self {
        let mut timeouts = [None; 8];
        if let Some(v) = sec.get("timeout") {
            let label = format!("{}.timeout]", sec.label.trim_end_matches(']'));
            let span = sec.key_span("timeout").unwrap_or_else(|| v.span());
            if let Some(t) = Section::of("timeout", label, span, v, d) {
                t.check_keys(&TIMEOUT_KEYS, d);
                for (slot, key) in timeouts.iter_mut().zip(TIMEOUT_KEYS) {
                    *slot = t.read(key, d, walk::positive_duration);
                }
            }
        }
        ProxySettings {
            mode: sec.read_at("mode", d, mode),
            splice: sec.read("splice", d, walk::boolean),
            timeouts,
            retries: sec.read("retries", d, |k, v, d| walk::u32_min(k, v, 0, d)),
            balance: sec
                .read_at("balance", d, balance)
                .map(|((b, h), span)| (b, span, h)),
            maxconn: sec.read("maxconn", d, |k, v, d| walk::u32_min(k, v, 1, d)),
            allbackups: sec.read("allbackups", d, walk::boolean),
            backlog: sec.read("backlog", d, |k, v, d| walk::u32_min(k, v, 1, d)),
            forwardfor: sec.read("forwardfor", d, walk::boolean),
            http_reuse: sec.read("http_reuse", d, http_reuse),
            pool_max_idle: sec.read("pool_max_idle", d, |k, v, d| walk::u32_min(k, v, 0, d)),
            pool_purge_delay: sec.read("pool_purge_delay", d, walk::positive_duration),
        }
    }

    /// These settings over `defaults`: each key set here wins, timeouts key by key.
    pub(crate) fn over(&self, defaults: &ProxySettings) -> ProxySettings {
        let mut timeouts = defaults.timeouts;
        for (slot, own) in timeouts.iter_mut().zip(self.timeouts) {
            if own.is_some() {
                *slot = own;
            }
        }
        ProxySettings {
            mode: self.mode.clone().or_else(|| defaults.mode.clone()),
            splice: self.splice.or(defaults.splice),
            timeouts,
            retries: self.retries.or(defaults.retries),
            balance: self.balance.clone().or_else(|| defaults.balance.clone()),
            maxconn: self.maxconn.or(defaults.maxconn),
            allbackups: self.allbackups.or(defaults.allbackups),
            backlog: self.backlog.or(defaults.backlog),
            forwardfor: self.forwardfor.or(defaults.forwardfor),
            http_reuse: self.http_reuse.or(defaults.http_reuse),
            pool_max_idle: self.pool_max_idle.or(defaults.pool_max_idle),
            pool_purge_delay: self.pool_purge_delay.or(defaults.pool_purge_delay),
        }
    }

    /// The mode, `tcp` when neither the proxy nor `[defaults]` says (as in HAProxy).
    pub(crate) fn mode(&self) -> Mode {
        self.mode.as_ref().map_or(Mode::Tcp, |m| m.0)
    }

    /// Zero-copy forwarding, on unless turned off.
    pub(crate) fn splice(&self) -> bool {
        self.splice.unwrap_or(true)
    }

    /// Resolved timeouts; `queue` falls back to the resolved `connect`.
    pub(crate) fn timeouts(&self) -> Timeouts {
        let base = Timeouts::default();
        let t = &self.timeouts;
        let connect = t[0].unwrap_or(base.connect);
        Timeouts {
            connect,
            client: t[1].unwrap_or(base.client),
            server: t[2].unwrap_or(base.server),
            tunnel: t[3].or(base.tunnel),
            http_request: t[4].unwrap_or(base.http_request),
            http_keep_alive: t[5].unwrap_or(base.http_keep_alive),
            check: t[6].unwrap_or(base.check),
            queue: t[7].unwrap_or(connect),
        }
    }
}

/// `mode`: `"tcp"` or `"http"`.
fn mode(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<Mode> {
    let m = walk::choice(what, v, &[("tcp", Mode::Tcp), ("http", Mode::Http)], d)?;
    if m == Mode::Http && !d.support.http {
        d.error(
            v.span(),
            "mode \"http\" is not supported by this version (HTTP would be forwarded as plain TCP and http-request rules ignored): use \"tcp\"",
        );
    }
    Some(m)
}

/// `balance`: one of the load-balancing algorithms, or `hdr(NAME)` (a hash
/// of a request header's value).
fn balance(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<(Balance, Option<String>)> {
    if let toml::de::DeValue::String(s) = v.get_ref() {
        if let Some(inner) = s.strip_prefix("hdr(").and_then(|r| r.strip_suffix(')')) {
            let token = !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if token {
                return Some((Balance::Hdr, Some(inner.to_ascii_lowercase())));
            }
            d.error(
                v.span(),
                format!("invalid balance {s:?}: expected hdr(NAME) with a header name"),
            );
            return None;
        }
    }
    let b = walk::choice(
        what,
        v,
        &[
            ("roundrobin", Balance::RoundRobin),
            ("leastconn", Balance::LeastConn),
            ("source", Balance::Source),
            ("uri", Balance::Uri),
            ("first", Balance::First),
            ("random", Balance::Random),
        ],
        d,
    )?;
    Some((b, None))
}

/// `http_reuse`: `never`, `safe`, `aggressive` or `always`.
fn http_reuse(what: &str, v: &Value<'_>, d: &mut Diag) -> Option<HttpReuse> {
    walk::choice(
        what,
        v,
        &[
            ("never", HttpReuse::Never),
            ("safe", HttpReuse::Safe),
            ("aggressive", HttpReuse::Aggressive),
            ("always", HttpReuse::Always),
        ],
        d,
    )
}

/// Reads `[defaults]`.
pub(crate) fn parse_defaults(sec: &Section<'_, '_>, d: &mut Diag) -> ProxySettings {
    sec.check_keys(DEFAULTS_KEYS, d);
    ProxySettings::read(sec, d)
}
