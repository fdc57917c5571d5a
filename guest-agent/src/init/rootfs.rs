//! The container's root inside the guest: the spec's mounts, devices,
//! hostname and sysctls, the switch into the root, masked and read-only
//! paths. The guest's own root is the initramfs, where pivot_root is not
//! allowed, so the root is entered by moving it onto `/` and chrooting (as
//! switch_root and runc's no-pivot mode do); the VM is the isolation
//! boundary, and the mount namespace hides the agent's files.

use super::InitError;
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};
use std::ffi::CString;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Component, Path, PathBuf};

fn cstr(s: &str) -> Result<CString, InitError> {
    CString::new(s).map_err(|_| InitError(format!("NUL byte in {s:?}")))
}

fn cpath(p: &Path) -> Result<CString, InitError> {
    cstr(&p.to_string_lossy())
}

fn mount(
    src: Option<&str>,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), InitError> {
    mount_io(src, dst, fstype, flags, data).map_err(|e| {
        InitError::io(
            format!(
                "mount {} on {} ({})",
                src.unwrap_or("-"),
                dst.display(),
                fstype.unwrap_or("-")
            ),
            e,
        )
    })
}

fn mount_io(
    src: Option<&str>,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    let c =
        |s: &str| CString::new(s).map_err(|_| std::io::Error::other(format!("NUL byte in {s:?}")));
    let s = src.map(c).transpose()?;
    let t = fstype.map(c).transpose()?;
    let o = data.filter(|d| !d.is_empty()).map(c).transpose()?;
    let d = c(&dst.to_string_lossy())?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a valid NUL-terminated string.
    let rc = unsafe { libc::mount(ptr(&s), d.as_ptr(), ptr(&t), flags, ptr(&o).cast()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Joins `path` under `root`, resolving symlinks as if `root` were `/`, so
/// a hostile image cannot point a mount outside its root.
pub fn secure_join(root: &Path, path: &Path) -> Result<PathBuf, InitError> {
    let mut out = root.to_path_buf();
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        match c.components().next() {
            None | Some(Component::RootDir) | Some(Component::CurDir) => continue,
            Some(Component::ParentDir) => {
                if out != root {
                    out.pop();
                }
                continue;
            }
            _ => {}
        }
        let next = out.join(&c);
        match std::fs::read_link(&next) {
            Ok(target) => {
                links += 1;
                if links > 40 {
                    return Err(InitError(format!(
                        "too many symlinks in {}",
                        path.display()
                    )));
                }
                if target.is_absolute() {
                    out = root.to_path_buf();
                }
                pending.extend(
                    target
                        .components()
                        .rev()
                        .map(|c| PathBuf::from(c.as_os_str())),
                );
            }
            Err(_) => out = next,
        }
    }
    Ok(out)
}

/// mount(8)-style options: flags, propagation flags, and the rest as data.
pub fn parse_options(opts: &[String]) -> (libc::c_ulong, libc::c_ulong, String) {
    let (mut flags, mut prop) = (0, 0);
    let mut data = Vec::new();
    for o in opts {
        let (set, clear, p): (libc::c_ulong, libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "defaults" => (0, 0, 0),
            "ro" => (libc::MS_RDONLY, 0, 0),
            "rw" => (0, libc::MS_RDONLY, 0),
            "nosuid" => (libc::MS_NOSUID, 0, 0),
            "suid" => (0, libc::MS_NOSUID, 0),
            "nodev" => (libc::MS_NODEV, 0, 0),
            "dev" => (0, libc::MS_NODEV, 0),
            "noexec" => (libc::MS_NOEXEC, 0, 0),
            "exec" => (0, libc::MS_NOEXEC, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0, 0),
            "async" => (0, libc::MS_SYNCHRONOUS, 0),
            "dirsync" => (libc::MS_DIRSYNC, 0, 0),
            "mand" => (libc::MS_MANDLOCK, 0, 0),
            "nomand" => (0, libc::MS_MANDLOCK, 0),
            "noatime" => (libc::MS_NOATIME, 0, 0),
            "atime" => (0, libc::MS_NOATIME, 0),
            "nodiratime" => (libc::MS_NODIRATIME, 0, 0),
            "diratime" => (0, libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0, 0),
            "norelatime" => (0, libc::MS_RELATIME, 0),
            "strictatime" => (libc::MS_STRICTATIME, 0, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME, 0),
            "bind" => (libc::MS_BIND, 0, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0, 0),
            "private" => (0, 0, libc::MS_PRIVATE),
            "rprivate" => (0, 0, libc::MS_PRIVATE | libc::MS_REC),
            "shared" => (0, 0, libc::MS_SHARED),
            "rshared" => (0, 0, libc::MS_SHARED | libc::MS_REC),
            "slave" => (0, 0, libc::MS_SLAVE),
            "rslave" => (0, 0, libc::MS_SLAVE | libc::MS_REC),
            "unbindable" => (0, 0, libc::MS_UNBINDABLE),
            "runbindable" => (0, 0, libc::MS_UNBINDABLE | libc::MS_REC),
            // runc-only hints with no meaning here.
            "tmpcopyup" | "rro" | "rrw" => (0, 0, 0),
            other => {
                data.push(other.to_string());
                (0, 0, 0)
            }
        };
        flags = (flags | set) & !clear;
        prop |= p;
    }
    (flags, prop, data.join(","))
}

fn mount_one(root: &Path, m: &Mount) -> Result<(), InitError> {
    let dest = secure_join(root, m.destination())?;
    let opts = m.options().clone().unwrap_or_default();
    let (flags, prop, data) = parse_options(&opts);
    let typ = m.typ().as_deref().unwrap_or("");
    let src = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned());
    if flags & libc::MS_BIND != 0 || typ == "bind" {
        let src =
            src.ok_or_else(|| InitError(format!("bind mount {} without source", dest.display())))?;
        let is_dir = std::fs::metadata(&src)
            .map_err(|e| InitError::io(format!("bind source {src}"), e))?
            .is_dir();
        make_target(&dest, is_dir)?;
        mount(
            Some(&src),
            &dest,
            None,
            libc::MS_BIND | (flags & libc::MS_REC),
            None,
        )?;
        let extra = flags & !(libc::MS_BIND | libc::MS_REC);
        if extra != 0 {
            mount(
                None,
                &dest,
                None,
                extra | libc::MS_BIND | libc::MS_REMOUNT,
                None,
            )?;
        }
    } else {
        make_target(&dest, true)?;
        // The guest has cgroup v2 only: a v1 "cgroup" mount means cgroup2.
        let fstype = if typ == "cgroup" { "cgroup2" } else { typ };
        let data = if fstype == "cgroup2" { "" } else { &data };
        match mount_io(src.as_deref(), &dest, Some(fstype), flags, Some(data)) {
            // A user namespace does not own the guest's network namespace,
            // so it may not mount sysfs: the guest's, bound (runc's way).
            Err(_) if fstype == "sysfs" && in_user_ns() => {
                mount(
                    Some("/sys"),
                    &dest,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )?;
                mount(
                    None,
                    &dest,
                    None,
                    flags | libc::MS_BIND | libc::MS_REMOUNT,
                    None,
                )?;
            }
            // The same file system cannot be mounted on the root of one of
            // its own mounts, and in a user namespace the guest's cgroup2
            // comes along with the bound /sys, locked: cover it first.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && in_user_ns() => {
                mount(
                    Some("tmpfs"),
                    &dest,
                    Some("tmpfs"),
                    flags,
                    Some("mode=0755"),
                )?;
                mount(src.as_deref(), &dest, Some(fstype), flags, Some(data))?;
            }
            Err(e) => {
                return Err(InitError::io(
                    format!(
                        "mount {} on {} ({fstype})",
                        src.as_deref().unwrap_or("-"),
                        dest.display()
                    ),
                    e,
                ))
            }
            Ok(()) => {}
        }
    }
    if prop != 0 {
        mount(None, &dest, None, prop, None)?;
    }
    Ok(())
}

/// Whether this process is in a user namespace other than the guest's.
fn in_user_ns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

fn make_target(dest: &Path, dir: bool) -> Result<(), InitError> {
    let err = |e| InitError::io(format!("create mount point {}", dest.display()), e);
    if dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dest)
            .map_err(err)
    } else {
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).map_err(err)?;
        }
        if !dest.exists() {
            std::fs::File::create(dest).map_err(err)?;
        }
        Ok(())
    }
}

/// A device node; in a user namespace, where mknod is refused, the guest's
/// own node bound onto a file instead (as runc does).
fn mknod(
    path: &Path,
    kind: libc::mode_t,
    mode: u32,
    major: i64,
    minor: i64,
) -> Result<(), InitError> {
    let _ = std::fs::remove_file(path);
    let p = cpath(path)?;
    let dev = libc::makedev(major as u32, minor as u32);
    // SAFETY: a valid path and plain integers.
    if unsafe { libc::mknod(p.as_ptr(), kind | (mode & 0o7777), dev) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            return bind_guest_node(path, dev);
        }
        return Err(InitError::io(format!("mknod {}", path.display()), e));
    }
    // SAFETY: as above; mknod's mode is filtered by the umask.
    unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) };
    Ok(())
}

/// Binds the guest's node of device `dev` (found in the guest's /dev by
/// number) onto `path`.
fn bind_guest_node(path: &Path, dev: libc::dev_t) -> Result<(), InitError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let source = std::fs::read_dir("/dev")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| {
                (m.file_type().is_char_device() || m.file_type().is_block_device())
                    && m.rdev() == dev
            })
        })
        .ok_or_else(|| {
            InitError(format!(
                "device {} ({}:{}): mknod is not allowed in a user namespace and the guest has no such device to bind",
                path.display(),
                libc::major(dev),
                libc::minor(dev)
            ))
        })?;
    make_target(path, false)?;
    mount(
        Some(&source.to_string_lossy()),
        path,
        None,
        libc::MS_BIND,
        None,
    )
}

/// The devices every container gets (as runc creates them), plus the spec's.
fn devices(root: &Path, spec: &Spec) -> Result<(), InitError> {
    let dev = root.join("dev");
    for (name, minor_major) in [
        ("null", (1, 3)),
        ("zero", (1, 5)),
        ("full", (1, 7)),
        ("random", (1, 8)),
        ("urandom", (1, 9)),
        ("tty", (5, 0)),
    ] {
        mknod(
            &dev.join(name),
            libc::S_IFCHR,
            0o666,
            minor_major.0,
            minor_major.1,
        )?;
    }
    let extra = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for d in extra {
        let path = secure_join(root, d.path())?;
        if let Some(p) = path.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        let kind = match d.typ() {
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        mknod(
            &path,
            kind,
            d.file_mode().unwrap_or(0o666),
            d.major(),
            d.minor(),
        )?;
        let p = cpath(&path)?;
        // SAFETY: a valid path and ids.
        unsafe { libc::chown(p.as_ptr(), d.uid().unwrap_or(0), d.gid().unwrap_or(0)) };
    }
    // After the spec's devices, as runc does: a privileged container's
    // list has the host's /dev/ptmx, and the pts one must win.
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let p = dev.join(name);
        if name == "ptmx" {
            let _ = std::fs::remove_file(&p);
        }
        if std::fs::symlink_metadata(&p).is_err() {
            symlink(target, &p)
                .map_err(|e| InitError::io(format!("symlink {}", p.display()), e))?;
        }
    }
    Ok(())
}

fn sysctls(root: &Path, spec: &Spec) -> Result<(), InitError> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) else {
        return Ok(());
    };
    for (k, v) in map {
        if k.is_empty() || k.contains("..") || k.starts_with('/') {
            return Err(InitError(format!("invalid sysctl {k}")));
        }
        let p = root.join("proc/sys").join(k.replace('.', "/"));
        std::fs::write(&p, v.as_bytes()).map_err(|e| InitError::io(format!("sysctl {k}"), e))?;
    }
    Ok(())
}

fn mask_and_protect(spec: &Spec) -> Result<(), InitError> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    for p in linux.masked_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                mount(Some("tmpfs"), path, Some("tmpfs"), libc::MS_RDONLY, None)?
            }
            Ok(_) => mount(Some("/dev/null"), path, None, libc::MS_BIND, None)?,
            Err(_) => {}
        }
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        if path.exists() {
            mount(Some(&p), path, None, libc::MS_BIND | libc::MS_REC, None)?;
            mount(
                None,
                path,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
                None,
            )?;
        }
    }
    Ok(())
}

/// Where the root is bound before it is moved onto `/`: a private mount of
/// its own, because a mount whose parent is shared cannot be moved, and the
/// root's parent (the share) is shared so that binds from it propagate as
/// on a host whose mounts are shared (runc's binds show `master:N`).
pub const STAGING: &str = "/run/microrun-croot";

/// Builds the container's root and enters it. Runs as the container's init,
/// already in its new mount, uts, ipc and pid namespaces. The order is
/// runc's: the whole tree slave (or the spec's rootfsPropagation), the root
/// bound privately, the spec's mounts, the move onto `/`.
pub fn setup(spec: &Spec) -> Result<(), InitError> {
    let source = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| InitError("spec has no root".into()))?;
    let root_prop = match spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
    {
        Some(p) => {
            let (_, prop, data) = parse_options(std::slice::from_ref(&p));
            if prop == 0 || !data.is_empty() {
                return Err(InitError(format!("rootfsPropagation {p:?} is not valid")));
            }
            prop
        }
        None => libc::MS_SLAVE | libc::MS_REC,
    };
    mount(None, Path::new("/"), None, root_prop, None)?;
    // The guest's own `/`, which the root is moved onto, must not be
    // shared: a tree with an unbindable mount cannot move under a shared
    // one. It is hidden beneath the root afterwards anyway.
    mount(None, Path::new("/"), None, libc::MS_PRIVATE, None)?;
    let staging = Path::new(STAGING);
    make_target(staging, true)?;
    mount(Some("tmpfs"), staging, Some("tmpfs"), 0, Some("mode=0700"))?;
    mount(None, staging, None, libc::MS_PRIVATE, None)?;
    let root = staging.join("root");
    make_target(&root, true)?;
    mount(
        Some(&source.to_string_lossy()),
        &root,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    mount(None, &root, None, libc::MS_PRIVATE, None)?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(&root, m)?;
    }
    if mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("bind"))
    {
        devices(&root, spec)?;
    }
    sysctls(&root, spec)?;
    if let Some(h) = spec.hostname() {
        let c = cstr(h)?;
        // SAFETY: pointer and length of a valid buffer.
        if unsafe { libc::sethostname(c.as_ptr(), h.len()) } != 0 {
            return Err(InitError::io(
                "sethostname",
                std::io::Error::last_os_error(),
            ));
        }
    }
    if let Some(d) = spec.domainname() {
        let c = cstr(d)?;
        // SAFETY: as above.
        unsafe { libc::setdomainname(c.as_ptr(), d.len()) };
    }
    // rootfsPropagation applies to the tree the root and binds come from,
    // not to the root itself, which stays private as under runc 1.1 (its
    // parent is made private before the root is bound).
    enter(&root, staging)?;
    mask_and_protect(spec)?;
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
            None,
        )?;
    }
    Ok(())
}

/// Moves the root mount onto `/`, lets go of the staging mount (still
/// reachable by path until the chroot) and chroots into the root.
fn enter(root: &Path, staging: &Path) -> Result<(), InitError> {
    std::env::set_current_dir(root).map_err(|e| InitError::io("chdir root", e))?;
    mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)?;
    let s = cpath(staging)?;
    // SAFETY: a valid path; the staging mount is empty after the move.
    unsafe { libc::umount2(s.as_ptr(), libc::MNT_DETACH) };
    // SAFETY: a static path.
    if unsafe { libc::chroot(c".".as_ptr()) } != 0 {
        return Err(InitError::io("chroot", std::io::Error::last_os_error()));
    }
    std::env::set_current_dir("/").map_err(|e| InitError::io("chdir /", e))
}

/// An exec joins the init's namespaces (the agent already put it in the
/// pid namespace and the cgroup) and its root.
pub fn join(init_pid: i32) -> Result<(), InitError> {
    let open =
        |p: String| std::fs::File::open(&p).map_err(|e| InitError::io(format!("open {p}"), e));
    let root = open(format!("/proc/{init_pid}/root"))?;
    // A user namespace first: it owns the others, and joining it gives the
    // capabilities that joining them needs.
    let user = format!("/proc/{init_pid}/ns/user");
    let theirs = std::fs::metadata(&user).map_err(|e| InitError::io(format!("stat {user}"), e))?;
    let ours = std::fs::metadata("/proc/self/ns/user")
        .map_err(|e| InitError::io("stat /proc/self/ns/user", e))?;
    let user_ns = {
        use std::os::unix::fs::MetadataExt;
        (theirs.ino() != ours.ino())
            .then(|| open(user.clone()))
            .transpose()?
    };
    let mut nss = Vec::new();
    for (name, flag) in [
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        nss.push((name, flag, open(format!("/proc/{init_pid}/ns/{name}"))?));
    }
    if let Some(u) = &user_ns {
        use std::os::fd::AsRawFd;
        // SAFETY: an open user namespace fd; we are single-threaded.
        if unsafe { libc::setns(u.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
            return Err(InitError::io(
                "join user namespace",
                std::io::Error::last_os_error(),
            ));
        }
        super::process::become_root()?;
    }
    for (name, flag, f) in &nss {
        use std::os::fd::AsRawFd;
        // SAFETY: an open namespace fd and its type.
        if unsafe { libc::setns(f.as_raw_fd(), *flag) } != 0 {
            return Err(InitError::io(
                format!("join {name} namespace"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    use std::os::fd::AsRawFd;
    // SAFETY: fchdir on an open directory, then chroot to it.
    if unsafe { libc::fchdir(root.as_raw_fd()) } != 0 || unsafe { libc::chroot(c".".as_ptr()) } != 0
    {
        return Err(InitError::io(
            "enter the container root",
            std::io::Error::last_os_error(),
        ));
    }
    std::env::set_current_dir("/").map_err(|e| InitError::io("chdir /", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `features` reports as understood is understood here.
    #[test]
    fn every_reported_mount_option_is_recognised() {
        for opt in microrun_protocol::MOUNT_OPTIONS {
            let (_, _, data) = parse_options(&[opt.to_string()]);
            assert_eq!(data, "", "{opt} would go to the file system as data");
        }
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (f, p, d) = parse_options(&o(&["nosuid", "ro", "mode=755", "rprivate", "size=65536k"]));
        assert_eq!(f, libc::MS_NOSUID | libc::MS_RDONLY);
        assert_eq!(p, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(d, "mode=755,size=65536k");
        let (f, _, _) = parse_options(&o(&["ro", "rw", "rbind"]));
        assert_eq!(f, libc::MS_BIND | libc::MS_REC);
    }

    #[test]
    fn secure_join_keeps_symlinks_inside_the_root() {
        let t = std::env::temp_dir().join(format!("sj-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("a")).unwrap();
        symlink("/etc", t.join("abs")).unwrap();
        symlink("../../../../x", t.join("a/up")).unwrap();
        assert_eq!(
            secure_join(&t, Path::new("/abs/passwd")).unwrap(),
            t.join("etc/passwd")
        );
        assert_eq!(
            secure_join(&t, Path::new("/a/up/y")).unwrap(),
            t.join("x/y")
        );
        assert_eq!(secure_join(&t, Path::new("/../../z")).unwrap(), t.join("z"));
        std::fs::remove_dir_all(&t).unwrap();
    }
}
