//! `show stat`'s arguments (the `<iid|proxy> <type> <sid>` filter, the
//! format) and its streamed dump: rows are made a slice at a time as the
//! client reads, so a configuration of 10 000 servers in JSON (100 MB)
//! neither stalls the master loop nor sits whole in its memory.

use super::commands::View;
use super::stat::{self, ObjType, StatRow};
use super::typed;

/// `show stat`'s optional filter: `<iid|proxy> <type> <sid>`, with -1 for
/// "all" (HAProxy's syntax; type is a mask: 1 frontends, 2 backends, 4
/// servers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this proxy (by id or name).
    pub proxy: Option<ProxySel>,
    /// Kinds of rows to keep (bits of [`ObjType::bit`]); 0 keeps all.
    pub types: u32,
    /// Only this server id.
    pub sid: Option<u32>,
    /// `up`: only servers that are up (and proxies).
    pub up_only: bool,
    /// `no-maint`: drop servers in maintenance.
    pub no_maint: bool,
}

/// A proxy named by id or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxySel {
    /// `iid`.
    Id(u32),
    /// `pxname`.
    Name(String),
}

/// How `show stat` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// HAProxy's CSV.
    #[default]
    Csv,
    /// `typed`: one field per line.
    Typed,
    /// `json`.
    Json,
}

/// Parses `show stat`'s arguments (after `show stat`).
pub fn parse_args(args: &[&str]) -> Result<(Filter, Format), String> {
    let mut f = Filter::default();
    let mut fmt = Format::Csv;
    let mut rest = args;
    if rest.len() >= 3 && !matches!(rest[0], "typed" | "json" | "up" | "no-maint" | "desc") {
        f.proxy = match rest[0] {
            "-1" => None,
            p => Some(match p.parse::<u32>() {
                Ok(n) => ProxySel::Id(n),
                Err(_) => ProxySel::Name(p.to_string()),
            }),
        };
        f.types = match rest[1].parse::<i64>() {
            Ok(-1) => 0,
            Ok(n) if (0..=7).contains(&n) => n as u32,
            _ => return Err("Invalid type: expects a bit mask of 1, 2 and 4, or -1.".into()),
        };
        f.sid = match rest[2].parse::<i64>() {
            Ok(-1) => None,
            Ok(n) if n >= 0 => Some(n as u32),
            _ => return Err("Invalid server id: expects a number or -1.".into()),
        };
        rest = &rest[3..];
    }
    for a in rest {
        match *a {
            "typed" => fmt = Format::Typed,
            "json" => fmt = Format::Json,
            "up" => f.up_only = true,
            "no-maint" => f.no_maint = true,
            "desc" => {}
            other => return Err(format!("Unknown argument '{other}': expects [{{<iid>|<proxy>}} <type> <sid>] [typed|json] [up|no-maint]")),
        }
    }
    Ok((f, fmt))
}

impl Filter {
    /// Whether object `o` may pass (what is known before its row is made:
    /// its kind and its proxy's name), so filtered rows cost nothing.
    pub fn may_keep(&self, cfg: &corral_config::Config, o: stat::Obj) -> bool {
        let (bit, name) = match o {
            stat::Obj::Frontend(i) => (ObjType::Frontend.bit(), cfg.frontends[i].name.as_str()),
            stat::Obj::Backend(b) => (ObjType::Backend.bit(), cfg.backends[b].name.as_str()),
            stat::Obj::Server(b, _, _) => (ObjType::Server.bit(), cfg.backends[b].name.as_str()),
        };
        if self.types != 0 && self.types & bit == 0 {
            return false;
        }
        !matches!(&self.proxy, Some(ProxySel::Name(n)) if n != name)
    }

    /// Whether `r` passes.
    pub fn keeps(&self, r: &StatRow) -> bool {
        if let Some(p) = &self.proxy {
            let ok = match p {
                ProxySel::Id(n) => r.iid == *n,
                ProxySel::Name(n) => r.get("pxname") == n,
            };
            if !ok {
                return false;
            }
        }
        if self.types != 0 && self.types & r.obj.bit() == 0 {
            return false;
        }
        if r.obj == ObjType::Server {
            if self.sid.is_some_and(|s| s != r.sid) {
                return false;
            }
            let status = r.get("status");
            if self.no_maint && status == "MAINT" {
                return false;
            }
            if self.up_only && !(status.starts_with("UP") || status == "no check") {
                return false;
            }
        }
        true
    }
}

/// Objects one dump step looks at, at most.
const STEP_OBJECTS: usize = 512;

/// A `show stat` being streamed.
#[derive(Debug, PartialEq, Eq)]
pub struct StatDump {
    filter: Filter,
    format: Format,
    /// The next object (index into `stat::objects`).
    next: usize,
    /// Rows written (for JSON's separators).
    written: usize,
}

impl StatDump {
    /// A dump of the rows `filter` keeps, in `format`.
    pub fn new(filter: Filter, format: Format) -> StatDump {
        StatDump {
            filter,
            format,
            next: 0,
            written: 0,
        }
    }

    /// Appends the next rows until `want` bytes were written or the end;
    /// true when the dump is complete.
    pub fn step(&mut self, view: &View<'_>, out: &mut Vec<u8>, want: usize) -> bool {
        let start = out.len();
        if self.next == 0 && self.written == 0 {
            match self.format {
                Format::Csv => out.extend_from_slice(stat::csv_header().as_bytes()),
                Format::Json => out.push(b'['),
                Format::Typed => {}
            }
        }
        let objs = stat::objects(view.cfg);
        let (filter, format) = (&self.filter, self.format);
        let (mut next, mut written) = (self.next, self.written);
        view.with_stat_ctx(|ctx| {
            let mut text = String::new();
            // One row at a time: a step writes about `want` bytes, never
            // a whole slice of rows (a JSON row is ~10 KB), and looks at
            // no more than STEP_OBJECTS objects (a filter may keep few).
            let stop = (next + STEP_OBJECTS).min(objs.len());
            while out.len() - start < want && next < stop {
                let o = objs[next];
                next += 1;
                if !filter.may_keep(view.cfg, o) {
                    continue;
                }
                let r = stat::row(ctx, o);
                if !filter.keeps(&r) {
                    continue;
                }
                text.clear();
                match format {
                    Format::Csv => r.csv(&mut text),
                    Format::Typed => text.push_str(&typed::stat_typed(std::iter::once(&r))),
                    Format::Json => {
                        if written > 0 {
                            text.push(',');
                        }
                        let one = typed::stat_json(std::iter::once(&r));
                        // `[[...]]\n` of one row: keep the inner `[...]`.
                        text.push_str(&one[1..one.len() - 2]);
                    }
                }
                written += 1;
                out.extend_from_slice(text.as_bytes());
            }
        });
        self.next = next;
        self.written = written;
        if self.next >= objs.len() {
            if self.format == Format::Json {
                out.extend_from_slice(b"]\n");
            }
            return true;
        }
        false
    }
}
