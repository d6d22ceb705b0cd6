//! The memfd files behind the segment and its regions: created sealed, their
//! memory committed up front, mapped MAP_SHARED.
//!
//! * **Committed, not sparse.** `fallocate` allocates every page when the file
//!   is made, so a machine short of memory says so *now* (ENOMEM, ENOSPC), to
//!   the master, before a reload's exec, instead of as a SIGBUS in a worker on
//!   a later page fault. A size the machine cannot hold at all is refused
//!   before trying ([`check_memory`]), so the attempt never wakes the OOM
//!   killer.
//! * **Sealed size.** F_SEAL_SHRINK | F_SEAL_GROW: no process can truncate the
//!   file under another's mapping.
//! * **Freed by the kernel.** A memfd lives while some process holds its fd or
//!   a mapping of it. When the last process that used a region exits (and the
//!   master drops its own copy), its memory goes back to the system: there is
//!   nothing to free by hand and nothing to fragment.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use memmap2::MmapRaw;

/// Page size the layouts are aligned to.
pub const PAGE: u64 = 4096;

/// Rounds `n` up to a whole number of pages.
pub fn round_up(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

/// Creates a memfd named `corral-NAME` of `len` bytes (rounded up to pages),
/// with its memory committed and its size sealed. `what` names it in errors
/// ("table per_ip").
pub fn create(name: &str, what: &str, len: u64) -> io::Result<OwnedFd> {
    let len = round_up(len.max(PAGE));
    check_memory(what, len)?;
    let cname = CString::new(format!("corral-{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a region name"))?;
    // SAFETY: `cname` is a valid C string; the result is checked.
    let fd =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscalls on our own fd; every result is checked.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fallocate(fd.as_raw_fd(), 0, 0, len as libc::off_t) < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot commit {} of memory for {what}: {e}",
                    human_bytes(len)
                ),
            ));
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
    Ok(fd)
}

/// The size of the file behind `fd`.
pub fn size_of(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: fstat on our fd into a plain-data struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

/// Maps `len` bytes of `fd` shared. The file's size is sealed against
/// shrinking, so the mapping never extends past its end (no SIGBUS).
pub fn map(fd: &OwnedFd, len: u64) -> io::Result<MmapRaw> {
    memmap2::MmapOptions::new()
        .len(len as usize)
        .map_raw(fd.as_raw_fd())
}

/// Refuses a region the machine cannot hold: more than the memory available
/// (MemAvailable plus free swap), or more than the cgroup's memory.max allows.
/// The error names the region and both sizes, so an operator can act on it.
pub fn check_memory(name: &str, len: u64) -> io::Result<()> {
    let mut limits = Vec::new();
    if let Some(avail) = meminfo_available() {
        limits.push((avail, "available on this machine"));
    }
    if let Some(room) = cgroup_room() {
        limits.push((room, "left under the cgroup's memory.max"));
    }
    // Tests play a machine short of memory with a limit of their own
    // (debug builds only).
    #[cfg(debug_assertions)]
    if let Some(room) = std::env::var("CORRAL_TEST_SHM_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        limits.push((room, "allowed by CORRAL_TEST_SHM_LIMIT"));
    }
    for (room, what) in limits {
        if len > room {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "{name} needs {} of shared memory, only {} is {what}",
                    human_bytes(len),
                    human_bytes(room)
                ),
            ));
        }
    }
    Ok(())
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

fn cgroup_room() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
    let max: u64 = max.trim().parse().ok()?; // "max": no limit
    let cur: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(cur))
}

/// `1.5 GiB`, `12.0 MiB`, `512 KiB`: sizes in messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_region_larger_than_the_machine_is_refused_before_any_allocation() {
        let e = create("huge", "table huge", 1 << 50).unwrap_err();
        assert!(e.to_string().contains("table huge needs 1024.0 TiB"), "{e}");
    }

    #[test]
    fn memory_is_committed_and_the_size_sealed() {
        let fd = create("t", "t", 3 * PAGE + 1).unwrap();
        assert_eq!(size_of(&fd).unwrap(), 4 * PAGE);
        // SAFETY: fstat on our fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        assert_eq!(st.st_blocks as u64 * 512, 4 * PAGE, "pages allocated");
        // SAFETY: fcntl/ftruncate on our fd; the truncate must be refused.
        unsafe {
            let seals = libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS);
            assert!(seals & libc::F_SEAL_GROW != 0 && seals & libc::F_SEAL_SHRINK != 0);
            assert!(libc::ftruncate(fd.as_raw_fd(), 0) < 0);
        }
    }

    #[test]
    fn sizes_read_like_an_operator_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(12 << 20), "12.0 MiB");
    }
}
