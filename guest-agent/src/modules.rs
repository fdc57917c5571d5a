//! Kernel modules the guest needs before it can reach anything, for a
//! kernel that has its drivers as modules (a distribution's; see
//! `microrun kernel add`): the initramfs lists them in load order.

use std::os::fd::AsRawFd;

const LIST: &str = "/lib/microrun/modules";
/// finit_module: the file is compressed; the kernel decompresses it.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Whether the initramfs lists modules to load.
pub fn listed() -> bool {
    std::path::Path::new(LIST).is_file()
}

/// Loads every listed module, with the parameters the kernel command line
/// gives it (`name.param=value`, which for a module is modprobe's job);
/// returns what failed (a module already loaded is no failure).
pub fn load_listed() -> Vec<String> {
    let Ok(list) = std::fs::read_to_string(LIST) else {
        return Vec::new();
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|path| {
            let params = params_for(&module_name(path.trim()), &cmdline);
            load(path.trim(), &params)
                .err()
                .map(|e| format!("{path}: {e}"))
        })
        .collect()
}

/// A module's name as the kernel knows it, from its file's path.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The module's parameters on the command line, as finit_module takes them.
fn params_for(module: &str, cmdline: &str) -> std::ffi::CString {
    let prefix = format!("{module}.");
    let words: Vec<&str> = cmdline
        .split_whitespace()
        .filter_map(|w| {
            let (name, _) = w.split_once('=').unwrap_or((w, ""));
            let p = name.replace('-', "_");
            p.starts_with(&prefix).then(|| &w[prefix.len()..])
        })
        .collect();
    std::ffi::CString::new(words.join(" ")).unwrap_or_default()
}

fn load(path: &str, params: &std::ffi::CStr) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    let compressed = [".xz", ".zst", ".gz"].iter().any(|s| path.ends_with(s));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: finit_module with an open fd, a NUL-terminated parameter
    // string and flags; it reads nothing else of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_gets_its_command_line_parameters() {
        let cmdline = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
            virtio_mmio.device=4K@0xd0001000:6 virtio-mmio.used_only=1 fuse.x=1 quiet";
        let p = params_for(
            &module_name("/lib/modules/v/kernel/drivers/virtio/virtio_mmio.ko"),
            cmdline,
        );
        assert_eq!(
            p.to_str().unwrap(),
            "device=4K@0xd0000000:5 device=4K@0xd0001000:6 used_only=1"
        );
        assert_eq!(params_for("virtio_blk", cmdline).to_str().unwrap(), "");
        assert_eq!(module_name("/x/virtio-rng.ko.xz"), "virtio_rng");
    }
}
