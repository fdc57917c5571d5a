//! Changes made on the host beneath the volumes, handed to the guest kernel
//! (kernel-config/patches/fuse-host-change-ioctl.patch): it forgets what it
//! cached of the entry and raises the inotify event for the container's
//! watchers, as if the change had been made in the guest.

use microrun_protocol::HostChange;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NAME_MAX: usize = 255;

/// The ioctl's argument, as the kernel patch defines it.
#[repr(C)]
struct Arg {
    mask: u32,
    namelen: u32,
    name: [u8; NAME_MAX + 1],
}

/// _IOW(0xE5, 0x48, struct fuse_host_change).
const FUSE_IOC_HOST_CHANGE: u64 =
    (1 << 30) | ((std::mem::size_of::<Arg>() as u64) << 16) | (0xE5 << 8) | 0x48;

/// The events the kernel takes (inotify's bits).
const EVENTS: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE;

/// Applies the changes in order; returns how many the kernel took. A
/// directory that is gone in the guest, or a change the kernel refuses,
/// is skipped.
pub fn apply(changes: &[HostChange]) -> usize {
    let mut done = 0;
    let mut open: Option<(&str, OwnedFd)> = None;
    for c in changes {
        let Some(arg) = arg(c) else { continue };
        let same_dir = matches!(&open, Some((dir, _)) if *dir == c.dir);
        if !same_dir {
            open = open_dir(&c.dir).map(|fd| (c.dir.as_str(), fd));
        }
        let Some((_, fd)) = &open else { continue };
        // SAFETY: `fd` is an open directory and `arg` is the argument the
        // request number declares, valid for reads for the whole call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), FUSE_IOC_HOST_CHANGE as _, &arg) } == 0 {
            done += 1;
        }
    }
    done
}

fn arg(c: &HostChange) -> Option<Arg> {
    let name = c.name.as_bytes();
    let valid = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name != b"."
        && name != b".."
        && c.mask & EVENTS != 0
        && c.mask & !(EVENTS | libc::IN_ISDIR) == 0;
    if !valid {
        return None;
    }
    let mut arg = Arg {
        mask: c.mask,
        namelen: name.len() as u32,
        name: [0; NAME_MAX + 1],
    };
    arg.name[..name.len()].copy_from_slice(name);
    Some(arg)
}

fn open_dir(dir: &str) -> Option<OwnedFd> {
    if !dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
        return None;
    }
    let path = CString::new(dir).ok()?;
    // SAFETY: `path` is NUL-terminated; the fd returned is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a non-negative fd was just opened and is owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, mask: u32) -> HostChange {
        HostChange {
            dir: "/run/microrun/share/m1".into(),
            name: name.into(),
            mask,
        }
    }

    #[test]
    fn the_request_number_is_the_kernels() {
        assert_eq!(std::mem::size_of::<Arg>(), 264);
        assert_eq!(FUSE_IOC_HOST_CHANGE, 0x4108_e548);
    }

    #[test]
    fn only_plain_names_and_known_events_go_to_the_kernel() {
        assert!(arg(&change("f", libc::IN_CREATE)).is_some());
        assert!(arg(&change("d", libc::IN_CREATE | libc::IN_ISDIR)).is_some());
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(arg(&change(bad, libc::IN_CREATE)).is_none(), "{bad:?}");
        }
        assert!(arg(&change("f", 0)).is_none());
        assert!(arg(&change("f", libc::IN_ISDIR)).is_none());
        assert!(arg(&change("f", libc::IN_OPEN)).is_none());
        assert!(arg(&change("f", libc::IN_DELETE_SELF)).is_none());
    }

    #[test]
    fn relative_paths_and_dotdot_are_not_opened() {
        assert!(open_dir("run/x").is_none());
        assert!(open_dir("/run/../etc").is_none());
    }

    #[test]
    fn a_change_outside_fuse_is_refused_by_the_kernel_not_applied() {
        let d = std::env::temp_dir();
        let c = HostChange {
            dir: d.to_string_lossy().into_owned(),
            name: "f".into(),
            mask: libc::IN_CREATE,
        };
        assert_eq!(apply(&[c]), 0);
    }
}
