//! The guest's base file systems, mounted before anything else runs.

use microrun_protocol::GuestMount;
use std::ffi::CString;

pub struct MountError(String);

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const BASE: &[(&str, &str, &str, libc::c_ulong, &str)] = &[
    (
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
    ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
];

fn mount(
    src: &str,
    dst: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), MountError> {
    let c = |s: &str| CString::new(s).map_err(|_| MountError(format!("bad mount argument {s:?}")));
    let (s, d, t, o) = (c(src)?, c(dst)?, c(fstype)?, c(data)?);
    let _ = std::fs::create_dir_all(dst);
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), flags, o.as_ptr().cast()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // devtmpfs may already be mounted by the kernel (DEVTMPFS_MOUNT).
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(MountError(format!("mount {fstype} on {dst}: {e}")));
        }
    }
    Ok(())
}

/// Mounts what the host provides for the container (its virtio-fs share,
/// a block root); nosuid/nodev/noexec are decided per container mount later.
pub fn guest_mount(m: &GuestMount) -> Result<(), MountError> {
    guest_mount_fs(m)?;
    // Shared, as a host's mounts are (systemd makes them so): a container's
    // binds from it are then slaves or peers as their options say, as
    // under runc (`master:N` / `shared:N` in mountinfo).
    make_shared(&m.target)
}

fn make_shared(target: &str) -> Result<(), MountError> {
    let d = CString::new(target).map_err(|_| MountError(format!("bad mount target {target:?}")))?;
    // SAFETY: a valid path; no source, type or data for a propagation change.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_SHARED,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(MountError(format!("make {target} shared: {e}")));
    }
    Ok(())
}

fn guest_mount_fs(m: &GuestMount) -> Result<(), MountError> {
    let flags = if m.read_only { libc::MS_RDONLY } else { 0 };
    if !m.fstype.is_empty() {
        mount(&m.source, &m.target, &m.fstype, flags, "")?;
        if m.fstype == "virtiofs" {
            widen_readahead(&m.target);
        }
        return Ok(());
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let mut tried = Vec::new();
    for fstype in block_filesystems(&filesystems) {
        match mount(&m.source, &m.target, fstype, flags, "") {
            Ok(()) => return Ok(()),
            Err(e) => tried.push(e.0),
        }
    }
    Err(MountError(format!(
        "{}: no file system of this kernel mounts it ({})",
        m.source,
        tried.join("; ")
    )))
}

/// FUSE starts with the default 128 KiB read-ahead; each read request is
/// a VM exit round trip, so sequential reads go in 1 MiB requests (the
/// device's max_pages), four ahead, so that the guest copies out one while
/// the host fills the next (256 MiB read back in a volume, test host: 490
/// ms with 1 MiB ahead, 450 with 4). Best effort: reads work either way.
fn widen_readahead(target: &str) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(target) {
        let dev = meta.dev();
        let bdi = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        let _ = std::fs::write(bdi, READAHEAD_KB);
    }
}

const READAHEAD_KB: &str = "4096";

/// The file systems in /proc/filesystems that live on a block device.
fn block_filesystems(list: &str) -> impl Iterator<Item = &str> {
    list.lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
}

pub fn base() -> Result<(), MountError> {
    for (src, dst, fstype, flags, data) in BASE {
        mount(src, dst, fstype, *flags, data)?;
    }
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_file_systems_skip_nodev_entries() {
        let list = "nodev\tsysfs\nnodev\tproc\n\text4\n\tvfat\nnodev\tvirtiofs\n";
        assert_eq!(
            block_filesystems(list).collect::<Vec<_>>(),
            ["ext4", "vfat"]
        );
    }
}
