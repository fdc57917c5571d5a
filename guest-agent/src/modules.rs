//! Kernel modules the guest needs before it can reach anything, for a
//! kernel that has its drivers as modules (a distribution's; see
//! `microrun kernel add`): the initramfs lists them in load order.

use std::os::fd::AsRawFd;

const LIST: &str = "/lib/microrun/modules";
/// finit_module: the file is compressed; the kernel decompresses it.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Loads every listed module; returns what failed (a module already
/// loaded or built in is no failure).
pub fn load_listed() -> Vec<String> {
    let Ok(list) = std::fs::read_to_string(LIST) else {
        return Vec::new();
    };
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|path| load(path.trim()).err().map(|e| format!("{path}: {e}")))
        .collect()
}

fn load(path: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    let compressed = [".xz", ".zst", ".gz"].iter().any(|s| path.ends_with(s));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: finit_module with an open fd, an empty NUL-terminated
    // parameter string and flags; it reads nothing else of ours.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), flags) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(e)
}
