//! The shared segment: one memfd, mapped MAP_SHARED by the master before it
//! forks, so every worker sees the same pages.
//!
//! * **memfd, not a named object.** `memfd_create` gives an anonymous file
//!   that lives exactly as long as some process holds its fd or a mapping: no
//!   name in /dev/shm to leak after a crash, and the fd can be handed to the
//!   next generation over SCM_RIGHTS. (The `shared_memory` crate was set aside
//!   for that reason: it creates named shm_open objects or files.)
//! * **Sealed size.** F_SEAL_SHRINK | F_SEAL_GROW: no process can truncate the
//!   file under another's mapping (which would turn reads into SIGBUS).
//! * **Sparse.** The file is sized with room for the next reloads' regions;
//!   only pages that are written cost memory.
//! * **Offsets, never pointers.** Two generations map the segment at different
//!   addresses; every link inside it is an offset from its start (or an index
//!   within a region).
//!
//! Layout: a [`Header`] (magic, layout version, size, epoch state, region
//! directory) at offset 0, then regions allocated by the master only, in
//! page-aligned steps. Workers read the directory after fork and never change it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use memmap2::MmapRaw;

use crate::epoch::{EpochState, MAX_PROCS};
use crate::primitive::{AtomicU32, AtomicU64, Ordering};

/// "CORRAL" + segment format marker.
pub const MAGIC: u64 = u64::from_le_bytes(*b"CORRALsg");
/// Bumped whenever the layout of anything in the segment changes: a new
/// generation that finds another version starts fresh (and says so).
pub const LAYOUT_VERSION: u32 = 1;
/// Regions in the directory (tables, tracking, counters).
pub const MAX_REGIONS: usize = 64;
const PAGE: u64 = 4096;

/// What a region holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RegionKind {
    /// A stick table.
    Table = 1,
    /// Per-process records of tracked entries (see `track`).
    Track = 2,
}

/// One directory entry.
#[repr(C)]
pub struct RegionDesc {
    kind: AtomicU32,
    /// 1 while the region is in use.
    live: AtomicU32,
    name: [u8; 48],
    offset: AtomicU64,
    len: AtomicU64,
    /// Hash of the definition (e.g. a table's type and data types): a reload
    /// keeps a region only if the fingerprint is unchanged.
    fingerprint: AtomicU64,
}

/// The segment's first bytes.
#[repr(C)]
pub struct Header {
    magic: AtomicU64,
    layout_version: AtomicU32,
    _pad0: u32,
    size: AtomicU64,
    /// Bump pointer of region allocation (master only).
    next_free: AtomicU64,
    _pad1: [u64; 4],
    /// Cross-process epoch reclamation state.
    pub epoch: EpochState<MAX_PROCS>,
    regions: [RegionDesc; MAX_REGIONS],
}

/// A mapped segment.
pub struct Segment {
    map: MmapRaw,
    fd: OwnedFd,
}

// SAFETY: the segment is shared memory accessed only through atomics (and
// plain bytes written before publication by an atomic store); references into
// it are valid for the life of the mapping, whatever thread holds them.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

fn round_up(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

impl Segment {
    /// Creates a zeroed, size-sealed segment of `size` bytes and writes its header.
    pub fn create(size: u64) -> io::Result<Segment> {
        let name = CString::new("corral-segment").expect("no NUL");
        // SAFETY: `name` is a valid C string; the result is checked.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = round_up(size.max(std::mem::size_of::<Header>() as u64 + PAGE));
        // SAFETY: plain syscalls on our fd, results checked.
        unsafe {
            if libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let seg = Segment::map(fd, size)?;
        let h = seg.header();
        h.layout_version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.size.store(size, Ordering::Relaxed);
        h.next_free.store(
            round_up(std::mem::size_of::<Header>() as u64),
            Ordering::Relaxed,
        );
        h.magic.store(MAGIC, Ordering::Release);
        Ok(seg)
    }

    /// Maps a segment received from another generation (reload, takeover).
    /// Fails if it is not a corral segment of this layout version.
    pub fn open(fd: OwnedFd) -> io::Result<Segment> {
        // SAFETY: fstat on our fd into a plain-data struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let seg = Segment::map(fd, st.st_size as u64)?;
        let h = seg.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a corral segment",
            ));
        }
        let v = h.layout_version.load(Ordering::Relaxed);
        if v != LAYOUT_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment layout version {v}, this binary uses {LAYOUT_VERSION}"),
            ));
        }
        Ok(seg)
    }

    fn map(fd: OwnedFd, size: u64) -> io::Result<Segment> {
        if size < std::mem::size_of::<Header>() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "segment too small",
            ));
        }
        // The memfd's size is sealed against shrinking, so the mapping can
        // never extend past the end of the file (no SIGBUS on access).
        let map = memmap2::MmapOptions::new()
            .len(size as usize)
            .map_raw(fd.as_raw_fd())?;
        Ok(Segment { map, fd })
    }

    /// The memfd, to hand to another generation.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Size of the segment in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the mapping is empty (never true for a valid segment).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least size_of::<Header>() bytes (checked in
        // `map`), page-aligned, and Header is made of atomics and plain data
        // for which all-zero bytes are valid.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// The epoch state in the header.
    pub fn epoch(&self) -> &EpochState<MAX_PROCS> {
        &self.header().epoch
    }

    /// A reference to a `T` at `offset` of the segment.
    ///
    /// # Safety
    /// `offset..offset + size_of::<T>()` must lie in a region laid out for a
    /// `T` (aligned, made of atomics/plain data valid when zeroed).
    pub unsafe fn at<T>(&self, offset: u64) -> &T {
        debug_assert!(offset + std::mem::size_of::<T>() as u64 <= self.len());
        debug_assert_eq!(offset % std::mem::align_of::<T>() as u64, 0);
        // SAFETY: upheld by the caller.
        unsafe { &*(self.map.as_ptr().add(offset as usize) as *const T) }
    }

    /// Base address of the mapping (for regions computing their own offsets).
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Allocates a zeroed region of `len` bytes (master only, before forking
    /// the processes that use it). Returns its offset.
    pub fn alloc_region(
        &self,
        kind: RegionKind,
        name: &str,
        len: u64,
        fingerprint: u64,
    ) -> io::Result<u64> {
        let h = self.header();
        let slot = h
            .regions
            .iter()
            .find(|r| r.live.load(Ordering::Acquire) == 0 && r.len.load(Ordering::Relaxed) == 0)
            .ok_or_else(|| io::Error::other("segment region directory is full"))?;
        let offset = h.next_free.load(Ordering::Relaxed);
        let end = offset + round_up(len);
        if end > self.len() {
            return Err(io::Error::other(format!(
                "segment full: region '{name}' needs {len} bytes, {} left",
                self.len() - offset
            )));
        }
        h.next_free.store(end, Ordering::Relaxed);
        let mut buf = [0u8; 48];
        let n = name.len().min(47);
        buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        // SAFETY: `slot` is in our mapping; name is plain bytes written before
        // `live` publishes the entry, and only the master writes the directory.
        unsafe { std::ptr::write(std::ptr::addr_of!(slot.name) as *mut [u8; 48], buf) };
        slot.kind.store(kind as u32, Ordering::Relaxed);
        slot.offset.store(offset, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.fingerprint.store(fingerprint, Ordering::Relaxed);
        slot.live.store(1, Ordering::Release);
        Ok(offset)
    }

    /// Finds a live region by kind and name: (offset, len, fingerprint).
    /// With several (a changed table during a reload), the newest.
    pub fn find_region(&self, kind: RegionKind, name: &str) -> Option<(u64, u64, u64)> {
        self.regions(kind, name).max_by_key(|r| r.0)
    }

    /// Every live region of this kind and name: (offset, len, fingerprint).
    pub fn regions<'a>(
        &'a self,
        kind: RegionKind,
        name: &'a str,
    ) -> impl Iterator<Item = (u64, u64, u64)> + 'a {
        self.header().regions.iter().filter_map(move |r| {
            if r.live.load(Ordering::Acquire) != 1 || r.kind.load(Ordering::Relaxed) != kind as u32
            {
                return None;
            }
            let len = r.name.iter().position(|&b| b == 0).unwrap_or(48);
            (&r.name[..len] == name.as_bytes()).then(|| {
                (
                    r.offset.load(Ordering::Relaxed),
                    r.len.load(Ordering::Relaxed),
                    r.fingerprint.load(Ordering::Relaxed),
                )
            })
        })
    }

    /// Names and offsets of the live regions of a kind (a reload finds removed tables).
    pub fn region_names(&self, kind: RegionKind) -> Vec<(String, u64)> {
        self.header()
            .regions
            .iter()
            .filter(|r| {
                r.live.load(Ordering::Acquire) == 1 && r.kind.load(Ordering::Relaxed) == kind as u32
            })
            .map(|r| {
                let len = r.name.iter().position(|&b| b == 0).unwrap_or(48);
                (
                    String::from_utf8_lossy(&r.name[..len]).into_owned(),
                    r.offset.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Frees the region at `offset` (master only, once no process uses it):
    /// its pages go back to the system (the file is sparse again there) and
    /// its directory entry is marked dead. Its address range is not reused.
    pub fn free_region(&self, offset: u64) {
        for r in self.header().regions.iter() {
            if r.live.load(Ordering::Acquire) == 1 && r.offset.load(Ordering::Relaxed) == offset {
                let len = r.len.load(Ordering::Relaxed);
                r.live.store(2, Ordering::Release);
                // SAFETY: punching a hole in our own memfd over a region no
                // process uses any more; reads there return zeros.
                unsafe {
                    libc::fallocate(
                        self.fd.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        offset as libc::off_t,
                        round_up(len) as libc::off_t,
                    )
                };
                return;
            }
        }
    }

    /// Bytes of the segment handed out to regions so far.
    pub fn used(&self) -> u64 {
        self.header().next_free.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn create_seal_and_reopen_from_a_dup() {
        let seg = Segment::create(1 << 20).unwrap();
        let off = seg
            .alloc_region(RegionKind::Table, "per_ip", 10_000, 42)
            .unwrap();
        assert_eq!(off % PAGE, 0);
        assert_eq!(
            seg.find_region(RegionKind::Table, "per_ip"),
            Some((off, 10_000, 42))
        );
        assert_eq!(seg.find_region(RegionKind::Table, "other"), None);
        // SAFETY: fcntl on our fd.
        let seals = unsafe { libc::fcntl(seg.fd(), libc::F_GET_SEALS) };
        assert!(seals & libc::F_SEAL_GROW != 0 && seals & libc::F_SEAL_SHRINK != 0);
        // SAFETY: ftruncate on our fd; must be refused.
        assert!(
            unsafe { libc::ftruncate(seg.fd(), 4096) } < 0,
            "sealed against shrinking"
        );
        // A second mapping (as after a reload) sees the same directory.
        // SAFETY: dup of our fd.
        let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(seg.fd())) };
        let again = Segment::open(dup).unwrap();
        assert_eq!(
            again.find_region(RegionKind::Table, "per_ip"),
            Some((off, 10_000, 42))
        );
    }

    #[test]
    fn full_segment_is_an_error_not_a_crash() {
        let seg = Segment::create(64 * 1024).unwrap();
        assert!(seg
            .alloc_region(RegionKind::Table, "big", 1 << 30, 0)
            .is_err());
    }
}
