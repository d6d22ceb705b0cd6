//! Regions: the shared memory of one stick table, one generation's tracking
//! records, its server health flags or its worker counters. One memfd each
//! (see [`crate::memfd`] and the essay in [`crate::segment`]).
//!
//! A region's first page is a [`RegionHeader`] that says what it is (kind,
//! name, id, definition fingerprint, generation tag, length), written by the
//! master before any other process can see the region; the data follows at
//! [`DATA_OFFSET`]. A generation that inherits the fd (across exec, or over
//! SCM_RIGHTS in a takeover) learns everything from that page, so no
//! directory has to be kept in step with the files.
//!
//! The master holds each region in an `Arc`: dropping the last handle unmaps
//! it and closes the fd, and once the processes that inherited it at fork
//! have exited too, the kernel frees its memory.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::memfd::{self, PAGE};
use crate::segment::{layout_version, Segment};

/// Where a region's data starts (its header is the first page).
pub const DATA_OFFSET: u64 = PAGE;
const REGION_MAGIC: u64 = u64::from_le_bytes(*b"CRLregn2");
const NAME_LEN: usize = 64;

/// What a region holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RegionKind {
    /// A stick table.
    Table = 1,
    /// One generation's records of tracked entries (see `track`).
    Track = 2,
    /// One generation's server health flags.
    Health = 3,
    /// One generation's per-worker counters.
    Counters = 4,
    /// One generation's proxy counter rows (see `stats`).
    Stats = 5,
    /// An HTTP cache (see `cache`), kept across generations like a table.
    Cache = 6,
}

impl RegionKind {
    fn from_u32(v: u32) -> Option<RegionKind> {
        Some(match v {
            1 => RegionKind::Table,
            2 => RegionKind::Track,
            3 => RegionKind::Health,
            4 => RegionKind::Counters,
            5 => RegionKind::Stats,
            6 => RegionKind::Cache,
            _ => return None,
        })
    }

    /// A word for messages and the handoff record.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionKind::Table => "table",
            RegionKind::Track => "tracks",
            RegionKind::Health => "health",
            RegionKind::Counters => "counters",
            RegionKind::Stats => "stats",
            RegionKind::Cache => "cache",
        }
    }
}

/// The first bytes of a region (plain data, written once before publication).
#[repr(C)]
#[derive(Clone, Copy)]
struct RegionHeader {
    magic: u64,
    layout_version: u32,
    kind: u32,
    id: u32,
    /// Generation of the per-generation kinds; 0 for tables.
    tag: u32,
    /// Bytes of data after the header.
    len: u64,
    /// What the bytes mean (a table's layout hash, a record count...).
    fingerprint: u64,
    name: [u8; NAME_LEN],
}

/// One mapped region.
pub struct Region {
    map: MmapRaw,
    fd: OwnedFd,
    kind: RegionKind,
    id: u32,
    tag: u32,
    len: u64,
    fingerprint: u64,
    name: String,
}

// SAFETY: the region is shared memory accessed only through atomics (and
// plain bytes written before publication); references into it are valid for
// the life of the mapping, whatever thread holds them.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Region({} '{}' id {} tag {} {} bytes)",
            self.kind.as_str(),
            self.name,
            self.id,
            self.tag,
            self.len
        )
    }
}

impl Region {
    /// Creates a zeroed region of `len` data bytes, its memory committed
    /// (master only, before the processes that use it are forked or told).
    pub fn create(
        seg: &Segment,
        kind: RegionKind,
        name: &str,
        len: u64,
        fingerprint: u64,
        tag: u32,
    ) -> io::Result<Arc<Region>> {
        let what = format!("{} {name}", kind.as_str());
        let fd = memfd::create(
            &format!("{}:{name}", kind.as_str()),
            &what,
            DATA_OFFSET + len,
        )?;
        let total = memfd::size_of(&fd)?;
        let map = memfd::map(&fd, total)?;
        let mut hdr = RegionHeader {
            magic: REGION_MAGIC,
            layout_version: layout_version(),
            kind: kind as u32,
            id: seg.new_region_id(),
            tag,
            len,
            fingerprint,
            name: [0; NAME_LEN],
        };
        let n = name.len().min(NAME_LEN - 1);
        hdr.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        // SAFETY: the mapping is at least one page, page-aligned, and nobody
        // else can see this new file yet.
        unsafe { std::ptr::write(map.as_mut_ptr() as *mut RegionHeader, hdr) };
        Ok(Arc::new(Region {
            map,
            fd,
            kind,
            id: hdr.id,
            tag,
            len,
            fingerprint,
            name: name[..n].to_string(),
        }))
    }

    /// Maps a region inherited from another generation and reads its header.
    pub fn open(fd: OwnedFd) -> io::Result<Arc<Region>> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let total = memfd::size_of(&fd)?;
        if total < DATA_OFFSET {
            return Err(bad("region file too small".into()));
        }
        let map = memfd::map(&fd, total)?;
        // SAFETY: at least one page is mapped; the header is plain integers.
        let hdr = unsafe { std::ptr::read(map.as_ptr() as *const RegionHeader) };
        if hdr.magic != REGION_MAGIC {
            return Err(bad("not a corral region".into()));
        }
        if hdr.layout_version != layout_version() {
            return Err(bad(format!(
                "region layout version {}, this binary uses {}",
                hdr.layout_version,
                layout_version()
            )));
        }
        let kind = RegionKind::from_u32(hdr.kind)
            .ok_or_else(|| bad(format!("unknown region kind {}", hdr.kind)))?;
        if DATA_OFFSET
            .checked_add(hdr.len)
            .is_none_or(|end| end > total)
        {
            return Err(bad(format!(
                "region claims {} bytes in a file of {total}",
                hdr.len
            )));
        }
        let end = hdr.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        Ok(Arc::new(Region {
            map,
            fd,
            kind,
            id: hdr.id,
            tag: hdr.tag,
            len: hdr.len,
            fingerprint: hdr.fingerprint,
            name: String::from_utf8_lossy(&hdr.name[..end]).into_owned(),
        }))
    }

    /// The memfd, to hand to another generation.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// What the region holds.
    pub fn kind(&self) -> RegionKind {
        self.kind
    }

    /// Its id, unique in the segment (tracking records name tables by it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The generation of a per-generation region (0 for tables).
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Its name (a table's name; the kind for the others).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of data.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the region holds no data bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fingerprint of what the data means.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Start of the data.
    pub(crate) fn base(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET is inside the mapping (checked at open/create).
        unsafe { self.map.as_mut_ptr().add(DATA_OFFSET as usize) }
    }

    /// A reference to a `T` at `offset` of the data.
    ///
    /// # Safety
    /// `offset..offset + size_of::<T>()` must lie in the data, laid out for a
    /// `T` (aligned, made of atomics/plain data valid when zeroed).
    pub unsafe fn at<T>(&self, offset: u64) -> &T {
        debug_assert!(offset + std::mem::size_of::<T>() as u64 <= self.len);
        debug_assert_eq!(offset % std::mem::align_of::<T>() as u64, 0);
        // SAFETY: upheld by the caller.
        unsafe { &*(self.base().add(offset as usize) as *const T) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn a_region_describes_itself_to_whoever_inherits_its_fd() {
        let seg = Segment::create().unwrap();
        let r = Region::create(&seg, RegionKind::Table, "per_ip", 10_000, 42, 0).unwrap();
        // SAFETY: dup of our fd, as exec would hand it over.
        let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(r.fd())) };
        let again = Region::open(dup).unwrap();
        assert_eq!(
            (
                again.kind(),
                again.name(),
                again.id(),
                again.len(),
                again.fingerprint()
            ),
            (RegionKind::Table, "per_ip", r.id(), 10_000, 42)
        );
        // SAFETY: offset 0 of the data is 8-aligned u64 storage.
        let word: &std::sync::atomic::AtomicU64 = unsafe { r.at(0) };
        word.store(7, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as above, in the second mapping of the same file.
        let seen: &std::sync::atomic::AtomicU64 = unsafe { again.at(0) };
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 7);
        let other = Region::create(&seg, RegionKind::Track, "tracks", 64, 0, 5).unwrap();
        assert_ne!(other.id(), r.id());
        assert_eq!(other.tag(), 5);
    }

    #[test]
    fn a_file_that_is_not_a_region_is_refused() {
        let fd = memfd::create("x", "x", PAGE).unwrap();
        assert!(Region::open(fd).is_err());
    }
}
