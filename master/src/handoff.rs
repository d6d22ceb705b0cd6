//! What one master generation hands the next across `exec`.
//!
//! A reload re-executes the binary on disk in the same process (same pid, as
//! systemd's Type=notify expects). Open fds survive exec once their
//! close-on-exec flag is cleared; this record, passed in the `CORRAL_HANDOFF`
//! environment variable, says what each inherited fd is: the listening
//! sockets (with their addresses, so the new config can reuse them without a
//! close/rebind window), the shared segment's memfd, the stats socket, the
//! workers' lifeline, the CLI connection waiting for the reload's answer, and
//! the workers that become the old generation.
//!
//! The format is a `;`-separated list of `key=value` fields, pure and tested
//! here; the exec itself lives in `reload.rs`.

use std::net::SocketAddr;
use std::os::fd::RawFd;

/// The environment variable carrying the record.
pub const ENV: &str = "CORRAL_HANDOFF";

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
}

/// Everything a new master generation inherits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handoff {
    /// Generation of the master that handed over (the new one is +1).
    pub generation: u32,
    /// Reloads that failed so far (for `show proc`).
    pub failed_reloads: u32,
    /// When the master process first started (ms since the Unix epoch).
    pub master_started_ms: u64,
    /// The segment's memfd.
    pub segment: Option<RawFd>,
    /// Listening sockets and their addresses.
    pub listeners: Vec<(RawFd, SocketAddr)>,
    /// The stats socket's listening fd.
    pub stats: Option<RawFd>,
    /// The lifeline socket pair: (master end, worker end).
    pub lifeline: Option<(RawFd, RawFd)>,
    /// A CLI connection waiting for the outcome of its `reload`.
    pub cli_reply: Option<RawFd>,
    /// Workers of previous generations, still running.
    pub workers: Vec<InheritedWorker>,
    /// An instance being taken over, to soft-stop once the new workers accept.
    pub victim: Option<i32>,
}

impl Handoff {
    /// The record as one environment-variable value.
    pub fn encode(&self) -> String {
        let mut f = vec![
            format!("gen={}", self.generation),
            format!("failed={}", self.failed_reloads),
            format!("start={}", self.master_started_ms),
        ];
        if let Some(fd) = self.segment {
            f.push(format!("seg={fd}"));
        }
        if let Some(fd) = self.stats {
            f.push(format!("stats={fd}"));
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
        for (fd, addr) in &self.listeners {
            f.push(format!("lst={fd}@{addr}"));
        }
        for w in &self.workers {
            f.push(format!(
                "wrk={},{},{},{},{},{}",
                w.pid,
                w.id,
                w.epoch_slot,
                w.generation,
                w.started_ms,
                u8::from(w.draining)
            ));
        }
        f.join(";")
    }

    /// Parses a record; `Err` names the field that is malformed.
    pub fn decode(s: &str) -> Result<Handoff, String> {
        let mut h = Handoff::default();
        for field in s.split(';').filter(|f| !f.is_empty()) {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("bad field '{field}'"))?;
            let bad = || format!("bad value in '{field}'");
            let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
            match k {
                "gen" => h.generation = num(v)? as u32,
                "failed" => h.failed_reloads = num(v)? as u32,
                "start" => h.master_started_ms = num(v)? as u64,
                "seg" => h.segment = Some(num(v)? as RawFd),
                "stats" => h.stats = Some(num(v)? as RawFd),
                "cli" => h.cli_reply = Some(num(v)? as RawFd),
                "victim" => h.victim = Some(num(v)? as i32),
                "life" => {
                    let (m, w) = v.split_once(',').ok_or_else(bad)?;
                    h.lifeline = Some((num(m)? as RawFd, num(w)? as RawFd));
                }
                "lst" => {
                    let (fd, addr) = v.split_once('@').ok_or_else(bad)?;
                    h.listeners
                        .push((num(fd)? as RawFd, addr.parse().map_err(|_| bad())?));
                }
                "wrk" => {
                    let p: Vec<&str> = v.split(',').collect();
                    if p.len() != 6 {
                        return Err(bad());
                    }
                    h.workers.push(InheritedWorker {
                        pid: num(p[0])? as i32,
                        id: num(p[1])? as usize,
                        epoch_slot: num(p[2])? as usize,
                        generation: num(p[3])? as u32,
                        started_ms: num(p[4])? as u64,
                        draining: num(p[5])? != 0,
                    });
                }
                _ => return Err(format!("unknown field '{k}'")),
            }
        }
        Ok(h)
    }

    /// Every fd the record names (to clear close-on-exec before exec).
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.listeners.iter().map(|(fd, _)| *fd).collect();
        v.extend(self.segment);
        v.extend(self.stats);
        v.extend(self.cli_reply);
        if let Some((m, w)) = self.lifeline {
            v.extend([m, w]);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let h = Handoff {
            generation: 3,
            failed_reloads: 1,
            master_started_ms: 1_795_000_000_000,
            segment: Some(7),
            listeners: vec![
                (5, "127.0.0.1:80".parse().unwrap()),
                (6, "[::1]:443".parse().unwrap()),
            ],
            stats: Some(8),
            lifeline: Some((9, 10)),
            cli_reply: Some(11),
            workers: vec![InheritedWorker {
                pid: 1234,
                id: 1,
                epoch_slot: 2,
                generation: 3,
                started_ms: 1_795_000_000_500,
                draining: true,
            }],
            victim: Some(4321),
        };
        let s = h.encode();
        assert_eq!(Handoff::decode(&s).unwrap(), h);
        assert_eq!(h.fds().len(), 7);
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        for bad in [
            "gen",
            "gen=x",
            "lst=5@nowhere",
            "wrk=1,2",
            "zzz=1",
            "life=1",
        ] {
            assert!(Handoff::decode(bad).is_err(), "{bad}");
        }
        assert_eq!(Handoff::decode("").unwrap(), Handoff::default());
    }
}
