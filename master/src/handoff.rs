//! What one master generation hands the next across `exec`.
//!
//! A reload re-executes the binary on disk in the same process (same pid, as
//! systemd's Type=notify expects). Open fds survive exec once their
//! close-on-exec flag is cleared; this record, passed in the `CORRAL_HANDOFF`
//! environment variable, says what each inherited fd is: the listening
//! sockets (with their addresses, so the new config can reuse them without a
//! close/rebind window), the segment header and every region with its role,
//! the stats socket, the workers' lifeline, the CLI connection waiting for
//! the reload's answer, the validated config text (and the previous one, to
//! fall back to), and the workers that become the old generation.
//!
//! **Versions.** The record starts with `v=N` ([`VERSION`]). A record without
//! it is version 0 (the builds before the field existed: one segment fd, no
//! regions, no config text), which this build still reads, so a package
//! upgrade from such a build reloads. Decoding never fails as a whole: a
//! field it cannot read is reported in [`Handoff::problems`] and skipped,
//! and an unknown field is reported and ignored, so a new image always
//! learns as much as it can about the fds it holds.
//!
//! The format is a `;`-separated list of `key=value` fields, pure and tested
//! here; the exec itself lives in `reload.rs`.

use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use corral_config::Level;

use crate::shared::Role;

/// The environment variable carrying the record.
pub const ENV: &str = "CORRAL_HANDOFF";

/// The record version this build writes.
pub const VERSION: u32 = 1;

/// A worker the new master inherits as a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InheritedWorker {
    /// Its pid (still our child after exec).
    pub pid: i32,
    /// Its worker number within its generation.
    pub id: usize,
    /// Its slot in the segment's epoch table.
    pub epoch_slot: usize,
    /// Its config generation.
    pub generation: u32,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Already soft-stopped (else it still accepts and must be stopped once
    /// the new generation accepts).
    pub draining: bool,
    /// It uses a segment of another layout version than the master's (a
    /// binary upgrade that changed the layout): its slot and records mean
    /// nothing in the master's segment.
    pub foreign: bool,
    /// It said it accepts (a worker of the current generation may not have
    /// yet: a fallback to its generation must wait for it).
    pub ready: bool,
    /// The master's end of its control socket (handoff channels), if any.
    pub control: Option<RawFd>,
}

/// Everything a new master generation inherits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handoff {
    /// Version of the record (0: written by a build without versions).
    pub version: u32,
    /// Generation of the master that handed over (the new one is +1).
    pub generation: u32,
    /// Reloads that failed so far (for `show proc`).
    pub failed_reloads: u32,
    /// When the master process first started (ms since the Unix epoch).
    pub master_started_ms: u64,
    /// The segment header's memfd.
    pub segment: Option<RawFd>,
    /// The segment's regions, with their roles.
    pub regions: Vec<(RawFd, Role)>,
    /// Listening sockets and their addresses.
    pub listeners: Vec<(RawFd, SocketAddr)>,
    /// The stats socket's listening fd.
    pub stats: Option<RawFd>,
    /// The stats socket at the next config's new path, bound before the exec.
    pub next_stats: Option<RawFd>,
    /// The stats socket's level (to serve it even without a usable config).
    pub stats_level: Option<Level>,
    /// The stats page's listening socket (`[stats] http`).
    pub web: Option<RawFd>,
    /// The stats page at the next config's new address, bound before the exec.
    pub next_web: Option<RawFd>,
    /// The lifeline socket pair: (master end, worker end).
    pub lifeline: Option<(RawFd, RawFd)>,
    /// A CLI connection waiting for the outcome of its `reload`.
    pub cli_reply: Option<RawFd>,
    /// Workers of previous generations, still running.
    pub workers: Vec<InheritedWorker>,
    /// An instance being taken over, to soft-stop once the new workers accept.
    pub victim: Option<i32>,
    /// A memfd holding the validated text of the next generation's config.
    pub config: Option<RawFd>,
    /// A memfd holding the text of the config the handing generation ran.
    pub prev_config: Option<RawFd>,
    /// What the handing master already did for this reload (prepared tables,
    /// bound listeners), for the reload's answer.
    pub messages: Vec<String>,
    /// Connections counted by generations whose counters were dropped.
    pub carried_conns: u64,
    /// The config file the instance runs (reloads read it).
    pub config_path: Option<String>,
    /// Fields that could not be read (reported, skipped).
    pub problems: Vec<String>,
}

fn level_str(l: Level) -> &'static str {
    match l {
        Level::User => "user",
        Level::Operator => "operator",
        Level::Admin => "admin",
    }
}

/// `%`-escapes the characters the record uses as separators.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ';' => out.push_str("%3B"),
            '\n' => out.push_str("%0A"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Handoff {
    /// The record as one environment-variable value.
    pub fn encode(&self) -> String {
        let mut f = vec![
            format!("v={VERSION}"),
            format!("gen={}", self.generation),
            format!("failed={}", self.failed_reloads),
            format!("start={}", self.master_started_ms),
            format!("carried={}", self.carried_conns),
        ];
        if let Some(fd) = self.segment {
            f.push(format!("seg={fd}"));
        }
        for (fd, role) in &self.regions {
            let mut flags = String::new();
            if role.next {
                flags.push('n');
            }
            if role.prev {
                flags.push('p');
            }
            if flags.is_empty() {
                flags.push('-');
            }
            f.push(format!("reg={fd},{flags},{}", role.keep));
        }
        if let Some(fd) = self.stats {
            f.push(format!("stats={fd}"));
        }
        if let Some(fd) = self.next_stats {
            f.push(format!("nstats={fd}"));
        }
        if let Some(l) = self.stats_level {
            f.push(format!("level={}", level_str(l)));
        }
        if let Some(fd) = self.web {
            f.push(format!("web={fd}"));
        }
        if let Some(fd) = self.next_web {
            f.push(format!("nweb={fd}"));
        }
        if let Some((m, w)) = self.lifeline {
            f.push(format!("life={m},{w}"));
        }
        if let Some(fd) = self.cli_reply {
            f.push(format!("cli={fd}"));
        }
        if let Some(pid) = self.victim {
            f.push(format!("victim={pid}"));
        }
        if let Some(fd) = self.config {
            f.push(format!("cfg={fd}"));
        }
        if let Some(fd) = self.prev_config {
            f.push(format!("prev={fd}"));
        }
        for (fd, addr) in &self.listeners {
            f.push(format!("lst={fd}@{addr}"));
        }
        for w in &self.workers {
            f.push(format!(
                "wrk={},{},{},{},{},{},{},{}",
                w.pid,
                w.id,
                w.epoch_slot,
                w.generation,
                w.started_ms,
                u8::from(w.draining),
                u8::from(w.foreign),
                u8::from(w.ready)
            ));
            // A field of its own, so a build without control sockets (a
            // rollback) still reads the worker, and skips only this.
            if let Some(fd) = w.control {
                f.push(format!("ctl={},{fd}", w.pid));
            }
        }
        for m in &self.messages {
            f.push(format!("msg={}", escape(m)));
        }
        if let Some(p) = &self.config_path {
            f.push(format!("path={}", escape(p)));
        }
        f.join(";")
    }

    /// Parses a record. Never fails as a whole: see the module docs.
    pub fn decode(s: &str) -> Handoff {
        let mut h = Handoff::default();
        for field in s.split(';').filter(|f| !f.is_empty()) {
            if let Err(e) = h.field(field) {
                h.problems.push(e);
            }
        }
        h
    }

    fn field(&mut self, field: &str) -> Result<(), String> {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("bad field '{field}'"))?;
        let bad = || format!("bad value in '{field}'");
        let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
        let fd = |x: &str| -> Result<RawFd, String> {
            let n = num(x)?;
            RawFd::try_from(n).ok().filter(|&n| n >= 0).ok_or_else(bad)
        };
        match k {
            "v" => self.version = num(v)? as u32,
            "gen" => self.generation = num(v)? as u32,
            "failed" => self.failed_reloads = num(v)? as u32,
            "start" => self.master_started_ms = num(v)? as u64,
            "carried" => self.carried_conns = num(v)? as u64,
            "seg" => self.segment = Some(fd(v)?),
            "reg" => {
                let p: Vec<&str> = v.split(',').collect();
                if p.len() != 3 {
                    return Err(bad());
                }
                let role = Role {
                    next: p[1].contains('n'),
                    prev: p[1].contains('p'),
                    keep: num(p[2])? as u32,
                };
                self.regions.push((fd(p[0])?, role));
            }
            "stats" => self.stats = Some(fd(v)?),
            "nstats" => self.next_stats = Some(fd(v)?),
            "web" => self.web = Some(fd(v)?),
            "nweb" => self.next_web = Some(fd(v)?),
            "level" => {
                self.stats_level = Some(match v {
                    "user" => Level::User,
                    "operator" => Level::Operator,
                    "admin" => Level::Admin,
                    _ => return Err(bad()),
                })
            }
            "cli" => self.cli_reply = Some(fd(v)?),
            "victim" => self.victim = Some(num(v)? as i32),
            "cfg" => self.config = Some(fd(v)?),
            "prev" => self.prev_config = Some(fd(v)?),
            "msg" => self.messages.push(unescape(v)),
            "path" => self.config_path = Some(unescape(v)),
            "life" => {
                let (m, w) = v.split_once(',').ok_or_else(bad)?;
                self.lifeline = Some((fd(m)?, fd(w)?));
            }
            "lst" => {
                let (f, addr) = v.split_once('@').ok_or_else(bad)?;
                self.listeners
                    .push((fd(f)?, addr.parse().map_err(|_| bad())?));
            }
            "wrk" => {
                let p: Vec<&str> = v.split(',').collect();
                // 6 fields before version 1, then `foreign` and `ready`.
                if !(6..=8).contains(&p.len()) {
                    return Err(bad());
                }
                self.workers.push(InheritedWorker {
                    pid: num(p[0])? as i32,
                    id: num(p[1])? as usize,
                    epoch_slot: num(p[2])? as usize,
                    generation: num(p[3])? as u32,
                    started_ms: num(p[4])? as u64,
                    draining: num(p[5])? != 0,
                    foreign: p.get(6).map(|x| num(x)).transpose()?.unwrap_or(0) != 0,
                    // A version-0 worker that is running accepted long ago.
                    ready: p.get(7).map(|x| num(x)).transpose()?.unwrap_or(1) != 0,
                    control: None,
                });
            }
            "ctl" => {
                // After its `wrk` field (the encoder writes them so).
                let (pid, f) = v.split_once(',').ok_or_else(bad)?;
                let pid = num(pid)? as i32;
                let fd = fd(f)?;
                let w = self
                    .workers
                    .iter_mut()
                    .find(|w| w.pid == pid)
                    .ok_or_else(bad)?;
                w.control = Some(fd);
            }
            _ => return Err(format!("unknown field '{k}' (ignored)")),
        }
        Ok(())
    }

    /// Every fd the record names (to clear close-on-exec before exec).
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.listeners.iter().map(|(fd, _)| *fd).collect();
        v.extend(self.regions.iter().map(|(fd, _)| *fd));
        v.extend(self.segment);
        v.extend(self.stats);
        v.extend(self.next_stats);
        v.extend(self.web);
        v.extend(self.next_web);
        v.extend(self.cli_reply);
        v.extend(self.config);
        v.extend(self.prev_config);
        if let Some((m, w)) = self.lifeline {
            v.extend([m, w]);
        }
        v.extend(self.workers.iter().filter_map(|w| w.control));
        v
    }
}

/// A memfd holding `text` (a config handed across the exec: the new image
/// reads exactly what was validated, never the file again).
pub fn text_fd(text: &str) -> io::Result<OwnedFd> {
    let name = c"corral-config";
    // SAFETY: `name` is a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(text.as_bytes())?;
    Ok(f.into())
}

/// Reads the text of a memfd made by [`text_fd`].
pub fn read_text(fd: OwnedFd) -> io::Result<String> {
    let mut f = std::fs::File::from(fd);
    f.rewind()?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handoff {
        Handoff {
            version: VERSION,
            generation: 3,
            failed_reloads: 1,
            master_started_ms: 1_795_000_000_000,
            segment: Some(7),
            regions: vec![
                (
                    12,
                    Role {
                        next: true,
                        prev: true,
                        keep: 0,
                    },
                ),
                (
                    13,
                    Role {
                        next: false,
                        prev: false,
                        keep: 2,
                    },
                ),
            ],
            listeners: vec![
                (5, "127.0.0.1:80".parse().unwrap()),
                (6, "[::1]:443".parse().unwrap()),
            ],
            stats: Some(8),
            next_stats: Some(16),
            stats_level: Some(Level::Operator),
            web: Some(17),
            next_web: Some(18),
            lifeline: Some((9, 10)),
            cli_reply: Some(11),
            workers: vec![InheritedWorker {
                pid: 1234,
                id: 1,
                epoch_slot: 2,
                generation: 3,
                started_ms: 1_795_000_000_500,
                draining: true,
                foreign: true,
                ready: false,
                control: Some(12),
            }],
            victim: Some(4321),
            config: Some(14),
            prev_config: Some(15),
            messages: vec!["table t: kept (3 entries); 100% ok\nnext".into()],
            carried_conns: 99,
            config_path: Some("/etc/corral/a;b.toml".into()),
            problems: Vec::new(),
        }
    }

    #[test]
    fn roundtrip() {
        let h = sample();
        assert_eq!(Handoff::decode(&h.encode()), h);
        assert_eq!(
            h.fds().len(),
            15,
            "with the control socket and the stats page"
        );
    }

    /// The record of the build before versions (issue 4's format) still
    /// decodes: a package upgrade from it reloads.
    #[test]
    fn a_version_0_record_decodes() {
        let v0 = "gen=4;failed=0;start=1795000000000;seg=7;stats=8;life=9,10;cli=11;\
                  lst=5@127.0.0.1:8080;wrk=1234,1,2,4,1795000000500,0";
        let h = Handoff::decode(v0);
        assert!(h.problems.is_empty(), "{:?}", h.problems);
        assert_eq!(h.version, 0);
        assert_eq!(h.generation, 4);
        assert_eq!(h.segment, Some(7));
        assert_eq!(h.workers.len(), 1);
        assert!(!h.workers[0].foreign);
        assert!(h.config.is_none());
    }

    #[test]
    fn malformed_fields_are_reported_and_the_rest_is_kept() {
        for bad in [
            "gen",
            "gen=x",
            "lst=5@nowhere",
            "wrk=1,2",
            "zzz=1",
            "life=1",
            "seg=-3",
            "reg=1,n",
        ] {
            let h = Handoff::decode(&format!("{bad};stats=8"));
            assert_eq!(h.problems.len(), 1, "{bad}: {:?}", h.problems);
            assert_eq!(h.stats, Some(8), "{bad}: the good field is kept");
        }
        assert_eq!(Handoff::decode(""), Handoff::default());
    }

    #[test]
    fn config_text_travels_in_a_memfd() {
        let fd = text_fd("[global]\nworkers = 2\n").unwrap();
        assert_eq!(read_text(fd).unwrap(), "[global]\nworkers = 2\n");
    }
}
