//! Naming processes so `ps` tells the master from its workers.
//!
//! Two names are set: the thread name (`comm`, shown by `ps -e`, `top`,
//! `pgrep`), limited by the kernel to 15 bytes, and the command line (shown by
//! `ps aux`), rewritten in place in the memory the kernel reported for argv in
//! /proc/self/stat (fields 48–49, arg_start and arg_end): the title must fit in
//! the original command line, and is cut to fit.

use std::ffi::CString;

/// Sets `comm` and, as far as it fits, the command line shown by `ps`.
pub fn set(title: &str) {
    if let Ok(name) = CString::new(title.chars().take(15).collect::<String>()) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
    if let Some((start, end)) = argv_area() {
        let len = end - start;
        if len < 2 {
            return;
        }
        let bytes = title.as_bytes();
        let n = bytes.len().min(len - 1);
        // SAFETY: [start, end) is this process's own argv area as reported by
        // the kernel: mapped and writable (it is on the initial stack). The
        // only other reader, std::env::args, is not called after a title is set.
        unsafe {
            let p = start as *mut u8;
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, n);
            std::ptr::write_bytes(p.add(n), 0, len - n);
        }
    }
}

/// (arg_start, arg_end) from /proc/self/stat.
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state); arg_start is field 48, arg_end field 49.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (end > start).then_some((start, end))
}
