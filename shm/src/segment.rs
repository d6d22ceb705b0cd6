//! The shared segment's header: one small memfd, mapped MAP_SHARED by the
//! master before it forks, holding what every process of every generation
//! must agree on: the magic, the layout version, the cross-process epoch
//! state and the counter that names regions.
//!
//! Everything else (stick tables, tracking records, flags, counters) lives in
//! [`Region`](crate::region::Region)s: one memfd each, created with its
//! memory committed, handed to the next generation with the header. So a
//! reload never runs out of room in a fixed-size file: a table that grows
//! from 1 M to 10 M entries gets a new region of the size it needs, and the
//! old one's memory goes back to the system when its last user exits.
//! (The other way, one segment grown by the master with a free list, needs a
//! reserved address range in every process, remapping, and a fragmenting
//! allocator; a memfd per region needs none of that and the kernel frees it.)
//!
//! * **memfd, not a named object.** No name in /dev/shm to leak after a crash,
//!   and the fd can be handed to the next generation across exec or over
//!   SCM_RIGHTS. (The `shared_memory` crate was set aside for that reason: it
//!   creates named shm_open objects or files, which cannot be sealed.)
//! * **Offsets, never pointers.** Two generations map the segment and its
//!   regions at different addresses; every link is an offset or an index.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use memmap2::MmapRaw;

use crate::epoch::{EpochState, MAX_PROCS};
use crate::memfd;
use crate::primitive::{AtomicU32, AtomicU64, Ordering};

/// "CORRAL" + segment format marker.
pub const MAGIC: u64 = u64::from_le_bytes(*b"CORRALsg");

/// Bumped whenever the layout of anything in the segment or its regions
/// changes: a new generation that finds another version starts fresh (and
/// says so). 1: one sparse file with a bump allocator; 2: a header memfd and
/// one memfd per region.
pub const LAYOUT_VERSION: u32 = 2;

/// The layout version this process writes and accepts: [`LAYOUT_VERSION`].
/// Debug builds (the tests') read it from the file named by
/// `CORRAL_TEST_LAYOUT_FILE` when that is set, so a test can play a binary
/// upgrade that changes the layout by editing the file before a reload.
pub fn layout_version() -> u32 {
    #[cfg(debug_assertions)]
    if let Some(v) = std::env::var_os("CORRAL_TEST_LAYOUT_FILE")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|v| v.trim().parse().ok())
    {
        return v;
    }
    LAYOUT_VERSION
}

/// The segment's first bytes.
#[repr(C)]
pub struct Header {
    magic: AtomicU64,
    layout_version: AtomicU32,
    /// Id of the next region created (ids name tables in tracking records).
    next_region_id: AtomicU32,
    _pad: [u64; 6],
    /// Cross-process epoch reclamation state.
    pub epoch: EpochState<MAX_PROCS>,
}

/// A mapped segment header.
pub struct Segment {
    map: MmapRaw,
    fd: OwnedFd,
}

// SAFETY: the header is shared memory accessed only through atomics;
// references into it are valid for the life of the mapping, whatever thread
// holds them.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

const HEADER_LEN: u64 = std::mem::size_of::<Header>() as u64;

impl Segment {
    /// Creates a zeroed, committed, size-sealed segment and writes its header.
    pub fn create() -> io::Result<Segment> {
        let fd = memfd::create("segment", "the segment header", HEADER_LEN)?;
        let map = memfd::map(&fd, memfd::round_up(HEADER_LEN))?;
        let seg = Segment { map, fd };
        let h = seg.header();
        h.layout_version.store(layout_version(), Ordering::Relaxed);
        h.next_region_id.store(1, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(seg)
    }

    /// Maps a segment received from another generation (reload, takeover).
    /// Fails if it is not a corral segment of this layout version.
    pub fn open(fd: OwnedFd) -> io::Result<Segment> {
        let size = memfd::size_of(&fd)?;
        if size < HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "segment too small",
            ));
        }
        // A version-1 segment is larger (it held the tables): map only the
        // header's first words to read its version.
        let map = memfd::map(&fd, size.min(memfd::round_up(HEADER_LEN)))?;
        let seg = Segment { map, fd };
        let h = seg.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a corral segment",
            ));
        }
        let v = h.layout_version.load(Ordering::Relaxed);
        if v != layout_version() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "segment layout version {v}, this binary uses {}",
                    layout_version()
                ),
            ));
        }
        Ok(seg)
    }

    /// The memfd, to hand to another generation.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least size_of::<Header>() bytes (checked
        // at open, sized at create), page-aligned, and Header is made of
        // atomics and plain data for which all-zero bytes are valid.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// The epoch state in the header.
    pub fn epoch(&self) -> &EpochState<MAX_PROCS> {
        &self.header().epoch
    }

    /// A new region id, unique in this segment's life (two masters sharing
    /// the segment during a takeover never get the same one).
    pub fn new_region_id(&self) -> u32 {
        self.header().next_region_id.fetch_add(1, Ordering::AcqRel)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn a_dup_maps_the_same_header() {
        let seg = Segment::create().unwrap();
        assert_eq!(seg.new_region_id(), 1);
        // SAFETY: dup of our fd.
        let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(seg.fd())) };
        let again = Segment::open(dup).unwrap();
        assert_eq!(
            again.new_region_id(),
            2,
            "one counter, seen by both mappings"
        );
        again.epoch().claim(3, 42, 1);
        assert_eq!(seg.epoch().slot(3).pid.load(Ordering::Relaxed), 42);
    }

    #[test]
    fn another_file_is_refused() {
        let fd = memfd::create("other", "other", 1 << 20).unwrap();
        let e = Segment::open(fd).err().expect("zeroed file is no segment");
        assert!(e.to_string().contains("not a corral segment"), "{e}");
    }
}
