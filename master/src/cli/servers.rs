//! The server commands of the runtime API: `disable|enable server`, `set
//! server B/S state|weight|addr`, `get weight`, `set weight` and `show
//! servers state`. The master writes what they set into the server's
//! column-0 words of the current generation's counter rows
//! (`corral_shm::server_state`); every worker reads them before its next
//! dispatch. Messages and errors are HAProxy's.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use corral_config::{Backend, Config, Server};
use corral_shm::server_state::{self, ServerRuntime};
use corral_shm::stats::{Cell, RowKey, Stat};

use super::totals::Totals;

/// Finds `B/S` (either part may be `#<id>`, the id being the position from
/// 1, or the stable id shown by `show stat`).
pub fn find<'a>(
    cfg: &'a Config,
    totals: &Totals<'_>,
    arg: &str,
) -> Result<(&'a Backend, &'a Server), String> {
    let Some((b, s)) = arg.split_once('/') else {
        return Err("Require 'backend/server'.".into());
    };
    let be = match b.strip_prefix('#') {
        Some(id) => cfg.backends.iter().find(|be| {
            id.parse::<u32>()
                .is_ok_and(|n| totals.id(&RowKey::backend(&be.name)) == n)
        }),
        None => cfg.backends.iter().find(|be| be.name == b),
    }
    .ok_or("No such backend.")?;
    let srv = match s.strip_prefix('#') {
        Some(id) => be.servers.iter().find(|sv| {
            id.parse::<u32>()
                .is_ok_and(|n| totals.id(&RowKey::server(&be.name, &sv.name)) == n)
        }),
        None => be.servers.iter().find(|sv| sv.name == s),
    }
    .ok_or("No such server.")?;
    Ok((be, srv))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The master words of a server: its column-0 cell in every generation
/// still running, the current one first.
#[derive(Clone)]
struct Cells<'a>(Vec<Cell<'a>>);

impl<'a> Cells<'a> {
    fn current(&self) -> Cell<'a> {
        self.0[0]
    }

    fn each(&self, f: impl Fn(Cell<'a>)) {
        for c in &self.0 {
            f(*c);
        }
    }

    /// Sets a value that is `None` when it equals the current config's:
    /// older generations (whose config may differ) get it as `Some`.
    fn each_value<T: Copy>(&self, v: T, configured: bool, f: impl Fn(Cell<'a>, Option<T>)) {
        for (i, c) in self.0.iter().enumerate() {
            f(*c, (i > 0 || !configured).then_some(v));
        }
    }
}

fn cell<'a>(totals: &Totals<'a>, be: &Backend, srv: &Server) -> Result<Cells<'a>, String> {
    let key = RowKey::server(&be.name, &srv.name);
    totals.master_cell(&key).ok_or("No such server.")?;
    Ok(Cells(totals.master_cells(&key)))
}

/// Sets the admin state; logs the change as HAProxy does.
fn set_state(c: &Cells<'_>, be: &Backend, srv: &Server, maint: bool, drain: bool) {
    let before = server_state::read(c.current());
    if before.maint == maint && before.drain == drain {
        return;
    }
    c.each(|c| server_state::set_admin(c, maint, drain));
    c.current().set(Stat::LastChange, now_unix());
    let name = format!("{}/{}", be.name, srv.name);
    match (maint, drain) {
        (true, _) => log::warn!("Server {name} is going DOWN for maintenance."),
        (false, true) => log::warn!("Server {name} enters drain state."),
        (false, false) => log::warn!("Server {name} is UP/READY (leaving forced maintenance)."),
    }
}

/// Parses a weight, absolute (0..=256) or relative to the configured one
/// (`50%`), as `set weight` takes it.
pub fn parse_weight(text: &str, initial: u32) -> Result<u32, String> {
    let (num, pct) = match text.strip_suffix('%') {
        Some(n) => (n, true),
        None => (text, false),
    };
    let n: u32 = num
        .parse()
        .map_err(|_| "Empty weight string empty or preceded by garbage".to_string())?;
    if pct {
        return Ok((u64::from(initial) * u64::from(n) / 100).min(256) as u32);
    }
    if n > 256 {
        return Err("Absolute weight can only be between 0 and 256 inclusive.".into());
    }
    Ok(n)
}

/// Runs a server command; `None` when `w` is not one.
pub fn execute(w: &[&str], cfg: &Config, totals: &Totals<'_>) -> Option<Result<String, String>> {
    let found =
        |arg: &str| find(cfg, totals, arg).and_then(|(b, s)| Ok((b, s, cell(totals, b, s)?)));
    Some(match w {
        ["disable", "server", arg] => found(arg).map(|(b, s, c)| {
            set_state(&c, b, s, true, server_state::read(c.current()).drain);
            String::new()
        }),
        ["enable", "server", arg] => found(arg).map(|(b, s, c)| {
            set_state(&c, b, s, false, false);
            String::new()
        }),
        ["disable" | "enable", "server", ..] => Err("Require 'backend/server'.".into()),
        ["get", "weight", arg] => found(arg).map(|(_, s, c)| {
            let w = server_state::read(c.current()).weight.unwrap_or(s.weight);
            format!("{w} (initial {})\n", s.weight)
        }),
        ["get", "weight", ..] => Err("Require 'backend/server'.".into()),
        ["set", "weight", arg, weight] | ["set", "server", arg, "weight", weight] => {
            found(arg).and_then(|(_, s, c)| {
                let w = parse_weight(weight, s.weight)?;
                c.each_value(w, w == s.weight, server_state::set_weight);
                Ok(String::new())
            })
        }
        ["set", "weight", ..] => Err("Require 'backend/server' and 'weight' or 'weight%'.".into()),
        ["set", "server", arg, "state", st] => found(arg).and_then(|(b, s, c)| {
            match *st {
                "ready" => set_state(&c, b, s, false, false),
                "drain" => set_state(&c, b, s, false, true),
                "maint" => set_state(&c, b, s, true, false),
                _ => return Err("'set server <srv> state' expects 'ready', 'drain' and 'maint'.".into()),
            }
            Ok(String::new())
        }),
        ["set", "server", arg, "addr", ip, rest @ ..] => found(arg).and_then(|(_, s, c)| {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("Invalid addr '{ip}': expects an IPv4 or IPv6 address."))?;
            let cur = server_state::read_addr(c.current())
                .ok()
                .flatten()
                .unwrap_or(s.addr);
            let port = match rest {
                [] => None,
                ["port", p] => Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("Invalid port '{p}'."))?,
                ),
                _ => return Err("usage: set server <backend>/<server> addr <ip> [port <port>]".into()),
            };
            let new = SocketAddr::new(ip, port.unwrap_or(cur.port()));
            c.each_value(new, new == s.addr, server_state::set_addr);
            let mut msg = format!("IP changed from '{}' to '{ip}'", cur.ip());
            match port {
                Some(p) if p != cur.port() => {
                    let _ = write!(msg, ", port changed from '{}' to '{p}'", cur.port());
                }
                Some(_) => msg.push_str(", no need to change the port"),
                None => {}
            }
            msg.push_str(" by 'stats socket command'\n");
            Ok(msg)
        }),
        ["set", "server", _, "health", ..] | ["set", "server", _, "agent", ..] => Err(
            "corral does not support forcing the health or agent state: use 'set server <b>/<s> state'.".into(),
        ),
        ["set", "server", arg, ..] => found(arg).and_then(|_| {
            Err("usage: set server <backend>/<server> addr | state | weight".into())
        }),
        _ => return None,
    })
}

/// HAProxy's check status number of `show servers state` for the last
/// check (1 INI, 6 L4OK, 8 L4CON, 15 L7OKD, 17 L7STS).
fn check_status_number(status: u64, http: bool) -> u32 {
    match (status, http) {
        (2, false) => 6,
        (2, true) => 15,
        (1, false) => 8,
        (1, true) => 17,
        _ => 1,
    }
}

/// `show servers state [backend]`: format version 1.
pub fn show_state(
    cfg: &Config,
    totals: &Totals<'_>,
    health: &corral_shm::flags::SharedFlags,
    only: Option<&str>,
    started_unix: u64,
) -> Result<String, String> {
    if let Some(b) = only {
        if !cfg.backends.iter().any(|be| be.name == b) {
            return Err("Can't find backend.".into());
        }
    }
    let mut out = String::from(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n",
    );
    let now = now_unix();
    let mut flag = 0;
    for be in &cfg.backends {
        let bid = totals.id(&RowKey::backend(&be.name));
        for srv in &be.servers {
            let k = flag;
            flag += 1;
            if only.is_some_and(|b| b != be.name) {
                continue;
            }
            let key = RowKey::server(&be.name, &srv.name);
            let c = totals.master_cell(&key);
            let rt: ServerRuntime = c.map(server_state::read).unwrap_or_default();
            let addr = c
                .and_then(|c| server_state::read_addr(c).ok().flatten())
                .unwrap_or(srv.addr);
            let (up, _, _) = corral_worker::health::decode_health(health.get(k));
            let checked = be.check.is_some() && srv.check;
            let sum = totals.of(&key);
            let op_state = if rt.maint || (checked && !up) { 0 } else { 2 };
            let admin = u32::from(rt.maint) | (u32::from(rt.drain) << 3);
            let weight = rt.weight.unwrap_or(srv.weight);
            let since = now.saturating_sub(match sum.get(Stat::LastChange) {
                0 => started_unix,
                t => t,
            });
            let (status, result, chk_health, chk_state) = match &be.check {
                Some(ch) if checked => {
                    let st = sum.get(Stat::CheckStatus);
                    let result = match st {
                        2 => 3, // CHK_RES_PASSED
                        1 => 1, // CHK_RES_FAILED
                        _ => 0,
                    };
                    let paused = if rt.maint { 0x08 } else { 0 };
                    (
                        check_status_number(st, ch.http.is_some()),
                        result,
                        if up && !rt.maint {
                            ch.rise + ch.fall - 1
                        } else {
                            0
                        },
                        0x02 | 0x04 | paused,
                    )
                }
                _ => (0, 0, 0, 0),
            };
            let _ = writeln!(
                out,
                "{bid} {} {} {} {} {op_state} {admin} {weight} {} {since} {status} {result} {chk_health} {chk_state} 0 0 0 - {} - 0 0 - - 0",
                be.name,
                totals.id(&key),
                srv.name,
                addr.ip(),
                srv.weight,
                addr.port()
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_absolute_and_relative() {
        assert_eq!(parse_weight("10", 5), Ok(10));
        assert_eq!(parse_weight("50%", 10), Ok(5));
        assert_eq!(parse_weight("200%", 200), Ok(256));
        assert!(parse_weight("300", 1).is_err());
        assert!(parse_weight("abc", 1).is_err());
    }
}
