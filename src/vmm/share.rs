//! The tree a container's virtio-fs device serves: the rootfs and the source
//! of every bind mount, bound side by side under one directory.
//!
//! The binds are made in a mount namespace of the monitor's own, so they
//! are never visible on the host and vanish with the monitor however it
//! ends (nothing to clean up after SIGKILL). Read-only binds are read-only
//! here, in the host kernel, not only in the guest.

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use oci_spec::runtime::Mount;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The guest mounts the share under this tag at this path.
pub const TAG: &str = "microrun";
pub const GUEST_PATH: &str = "/run/microrun/share";
/// The rootfs has a device of its own (it is cached longer, being the
/// container's own), mounted over its place in the share.
pub const ROOT_TAG: &str = "microrun-root";
const ROOTFS: &str = "rootfs";

#[derive(Debug, Error)]
pub enum ShareError {
    #[error("share: private mount namespace: {0} (the monitor must be single-threaded and root)")]
    Namespace(nix::Error),
    #[error("share: {what} {path}: {source}")]
    Mount {
        what: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("share: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind mount {dest}: source {source_path} does not exist")]
    MissingSource { dest: String, source_path: PathBuf },
}

/// Mount trees of a joining container's rootfs and bind sources, cloned
/// (open_tree) in its caller's mount namespace by its stand-in and attached
/// here (move_mount), so that mounts the caller made after this VM's
/// namespace was made (podman's overlay roots, in a private mount) need not
/// propagate into it. By the spec's mount index; `root` for the rootfs.
#[derive(Debug, Default)]
pub struct Trees {
    pub root: Option<OwnedFd>,
    pub binds: HashMap<usize, OwnedFd>,
}

impl Trees {
    /// Clones the trees of a container's rootfs and bind sources, as the
    /// calling process's mount namespace has them.
    pub fn clone_from(rootfs: &Path, mounts: &[Mount]) -> Result<Trees, ShareError> {
        let mut t = Trees {
            root: Some(clone_tree(rootfs, true)?),
            binds: HashMap::new(),
        };
        for (i, m) in mounts.iter().enumerate() {
            if let Some(src) = bind_source(m) {
                if std::fs::symlink_metadata(src).is_err() {
                    return Err(ShareError::MissingSource {
                        dest: m.destination().display().to_string(),
                        source_path: src.to_path_buf(),
                    });
                }
                t.binds.insert(i, clone_tree(src, has_option(m, "rbind"))?);
            }
        }
        Ok(t)
    }
}

/// open_tree(OPEN_TREE_CLONE): a detached copy of the mount at `path`.
fn clone_tree(path: &Path, recursive: bool) -> Result<OwnedFd, ShareError> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        ShareError::Io {
            what: "clone the tree of",
            path: path.to_path_buf(),
            source: std::io::ErrorKind::InvalidInput.into(),
        }
    })?;
    let rec = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    // SAFETY: open_tree with a NUL-terminated path and flags; it returns a
    // new fd we own, or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
        )
    };
    if fd < 0 {
        return Err(ShareError::Io {
            what: "clone the tree of",
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: a fresh fd from open_tree, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a cloned tree at `dst` (move_mount), read-only where asked.
fn attach(tree: &OwnedFd, dst: &Path, read_only: bool) -> Result<(), ShareError> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let err = |what, source| ShareError::Mount {
        what,
        path: dst.to_path_buf(),
        source,
    };
    let c = std::ffi::CString::new(dst.as_os_str().as_encoded_bytes())
        .map_err(|_| err("attach", nix::Error::EINVAL))?;
    // SAFETY: move_mount of a detached tree (an fd we own, empty path) to a
    // NUL-terminated target path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(err("attach", nix::Error::last()));
    }
    if read_only {
        mount(
            None::<&str>,
            dst,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| err("make read-only", e))?;
    }
    Ok(())
}

/// The prepared share: its host root. The VM's first container's part is
/// the root itself; each container that joins later gets a directory of
/// its own in it, bound at run time.
#[derive(Debug)]
pub struct Share {
    pub root: PathBuf,
}

/// One container's part of the share: its rootfs and bind sources.
#[derive(Debug)]
pub struct Part {
    /// Its directory on the host (in the monitor's mount namespace).
    dir: PathBuf,
    /// The same directory in the guest.
    guest: String,
    /// (index in the spec's mounts, guest path of its source)
    pub binds: Vec<(usize, String)>,
    /// The rootfs is to be read-only once the container is built.
    seal_root: bool,
    /// What was bound, for `release`.
    mounted: Vec<PathBuf>,
}

impl Part {
    pub fn guest_rootfs(&self) -> String {
        format!("{}/{ROOTFS}", self.guest)
    }

    /// Where the rootfs is in the share on the host (when it is shared).
    pub fn host_rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS)
    }

    /// The directory binds (volumes): (their place in the share on the
    /// host, in this mount namespace; their guest path).
    pub fn volumes(&self) -> Vec<(PathBuf, String)> {
        self.binds
            .iter()
            .map(|(i, guest)| (self.dir.join(format!("m{i}")), guest.clone()))
            .filter(|(host, _)| host.is_dir())
            .collect()
    }

    /// Makes a read-only root read-only on the host. Until now the guest
    /// could create mount points in it, as runc does before it remounts the
    /// root read-only; the workload only runs after this.
    pub fn seal(&self) -> Result<(), ShareError> {
        if !self.seal_root {
            return Ok(());
        }
        let dst = self.dir.join(ROOTFS);
        mount(
            None::<&str>,
            &dst,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|source| ShareError::Mount {
            what: "make read-only",
            path: dst,
            source,
        })
    }
}

impl Share {
    /// Binds a joining container's rootfs and bind sources into the running
    /// share, under `name` (unique for the VM's life: the guest may cache
    /// names it has seen), with the same rules as the first part.
    pub fn add(
        &self,
        name: &str,
        rootfs: &Path,
        root_read_only: bool,
        mounts: &[Mount],
        trees: Option<&Trees>,
    ) -> Result<Part, ShareError> {
        if trees.is_none() {
            check_sources(mounts)?;
        }
        let dir = self.root.join(name);
        self.writable(true)?;
        let made = std::fs::create_dir(&dir)
            .map_err(|source| ShareError::Io {
                what: "create",
                path: dir.clone(),
                source,
            })
            .and_then(|()| {
                let mut part = Part {
                    dir: dir.clone(),
                    guest: format!("{GUEST_PATH}/{name}"),
                    binds: Vec::new(),
                    seal_root: root_read_only,
                    mounted: Vec::new(),
                };
                // A failed bind leaves nothing behind.
                match fill(&mut part, Some(rootfs), mounts, trees) {
                    Ok(()) => Ok(part),
                    Err(e) => {
                        detach(&part.mounted);
                        let _ = std::fs::remove_dir_all(&dir);
                        Err(e)
                    }
                }
            });
        if let Err(e) = self.writable(false) {
            if let Ok(p) = &made {
                detach(&p.mounted);
            }
            return Err(e);
        }
        made
    }

    /// Takes a container's part out of the share: its binds go, and their
    /// empty mount points stay (the file server may hold them open, and a
    /// tmpfs with open unlinked files cannot be made read-only again).
    pub fn release(&self, part: Part) {
        detach(&part.mounted);
    }

    fn writable(&self, rw: bool) -> Result<(), ShareError> {
        let ro = if rw {
            MsFlags::empty()
        } else {
            MsFlags::MS_RDONLY
        };
        mount(
            None::<&str>,
            &self.root,
            None::<&str>,
            MsFlags::MS_REMOUNT | ro | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=1m"),
        )
        .map_err(|source| ShareError::Mount {
            what: if rw {
                "make writable"
            } else {
                "make read-only"
            },
            path: self.root.clone(),
            source,
        })
    }
}

fn detach(mounted: &[PathBuf]) {
    for m in mounted.iter().rev() {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Whether a spec mount takes its source from the host.
pub fn bind_source(m: &Mount) -> Option<&Path> {
    let bind = m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind");
    if bind {
        m.source().as_deref()
    } else {
        None
    }
}

fn has_option(m: &Mount, opt: &str) -> bool {
    m.options().iter().flatten().any(|o| o == opt)
}

fn bind(src: &Path, dst: &Path, recursive: bool, read_only: bool) -> Result<(), ShareError> {
    let err = |what| {
        move |source| ShareError::Mount {
            what,
            path: dst.to_path_buf(),
            source,
        }
    };
    let rec = if recursive {
        MsFlags::MS_REC
    } else {
        MsFlags::empty()
    };
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | rec,
        None::<&str>,
    )
    .map_err(err("bind"))?;
    if read_only {
        mount(
            None::<&str>,
            dst,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | rec,
            None::<&str>,
        )
        .map_err(err("make read-only"))?;
    }
    Ok(())
}

/// Enters a private mount namespace and builds the share under `dir`: the
/// first container's rootfs (unless the root comes as a block device) and
/// bind sources, as the share's first part.
/// Must run while the process is single-threaded (unshare(CLONE_NEWNS)).
pub fn prepare(
    dir: &Path,
    rootfs: Option<&Path>,
    root_read_only: bool,
    mounts: &[Mount],
) -> Result<(Share, Part), ShareError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| ShareError::Io { what, path, source }
    };
    check_sources(mounts)?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(ShareError::Namespace)?;
    // Host mounts still reach us (slave); ours never reach the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|source| ShareError::Mount {
        what: "make slave",
        path: "/".into(),
        source,
    })?;
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    mount(
        Some("microrun-share"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m"),
    )
    .map_err(|source| ShareError::Mount {
        what: "tmpfs",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut part = Part {
        dir: dir.to_path_buf(),
        guest: GUEST_PATH.to_string(),
        binds: Vec::new(),
        seal_root: root_read_only && rootfs.is_some(),
        mounted: Vec::new(),
    };
    fill(&mut part, rootfs, mounts, None)?;
    // The guest gets the parts, not room to add its own files beside them.
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m"),
    )
    .map_err(|source| ShareError::Mount {
        what: "make read-only",
        path: dir.to_path_buf(),
        source,
    })?;
    Ok((
        Share {
            root: dir.to_path_buf(),
        },
        part,
    ))
}

/// Every bind source must exist: a bad spec fails before anything is made.
fn check_sources(mounts: &[Mount]) -> Result<(), ShareError> {
    for m in mounts {
        if let Some(src) = bind_source(m) {
            if std::fs::symlink_metadata(src).is_err() {
                return Err(ShareError::MissingSource {
                    dest: m.destination().display().to_string(),
                    source_path: src.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// Binds the rootfs and the bind sources into the part's directory (or
/// attaches their cloned trees).
fn fill(
    part: &mut Part,
    rootfs: Option<&Path>,
    mounts: &[Mount],
    trees: Option<&Trees>,
) -> Result<(), ShareError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| ShareError::Io { what, path, source }
    };
    if let Some(rootfs) = rootfs {
        let root_dst = part.dir.join(ROOTFS);
        std::fs::create_dir(&root_dst).map_err(io("create", &root_dst))?;
        match trees.and_then(|t| t.root.as_ref()) {
            Some(tree) => attach(tree, &root_dst, false)?,
            None => bind(rootfs, &root_dst, true, false)?,
        }
        part.mounted.push(root_dst);
    }
    for (i, m) in mounts.iter().enumerate() {
        let Some(src) = bind_source(m) else { continue };
        let name = format!("m{i}");
        let dst = part.dir.join(&name);
        let tree = trees.and_then(|t| t.binds.get(&i));
        let is_dir = match tree {
            Some(t) => nix::sys::stat::fstat(t.as_raw_fd())
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .unwrap_or(true),
            None => src.is_dir(),
        };
        if is_dir {
            std::fs::create_dir(&dst).map_err(io("create", &dst))?;
        } else {
            std::fs::File::create(&dst).map_err(io("create", &dst))?;
        }
        match tree {
            Some(t) => attach(t, &dst, has_option(m, "ro"))?,
            None => bind(src, &dst, has_option(m, "rbind"), has_option(m, "ro"))?,
        }
        part.mounted.push(dst);
        part.binds.push((i, format!("{}/{name}", part.guest)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn m(dest: &str, src: &str, typ: &str, opts: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(dest)
            .source(src)
            .typ(typ)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn bind_sources_are_recognised_by_type_or_option() {
        assert!(bind_source(&m("/a", "/x", "bind", &[])).is_some());
        assert!(bind_source(&m("/a", "/x", "none", &["rbind", "ro"])).is_some());
        assert!(bind_source(&m("/proc", "proc", "proc", &["nosuid"])).is_none());
        assert!(has_option(&m("/a", "/x", "bind", &["ro"]), "ro"));
    }

    #[test]
    fn a_missing_source_fails_before_anything_is_made() {
        let d = tempfile::tempdir().unwrap();
        let share = d.path().join("share");
        let err = prepare(
            &share,
            Some(d.path()),
            false,
            &[m("/data", "/nonexistent/src", "bind", &["rbind"])],
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/src"), "{err}");
        assert!(!share.exists());
    }

    /// The namespace part needs a single-threaded root process: run it in a
    /// forked child.
    #[test]
    fn binds_are_private_and_read_only_where_asked() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for mount namespaces");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        let vol = d.path().join("vol");
        let file = d.path().join("hosts");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(&file, b"127.0.0.1 x\n").unwrap();
        let share = d.path().join("share");
        let mounts = vec![
            m("/proc", "proc", "proc", &[]),
            m("/data", vol.to_str().unwrap(), "bind", &["rbind", "ro"]),
            m("/etc/hosts", file.to_str().unwrap(), "bind", &["rbind"]),
        ];
        // SAFETY: the child only runs the code below and exits; it does not
        // touch locks other test threads might hold except through the
        // allocator, which is fork-safe in glibc.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = (|| {
                    let (sh, s) = prepare(&share, Some(&rootfs), true, &mounts).ok()?;
                    let bad = |p: PathBuf| std::fs::write(p, b"x").is_ok();
                    // Mount points can be made until the root is sealed.
                    let before_seal = std::fs::create_dir(share.join("rootfs/mnt")).is_ok();
                    s.seal().ok()?;
                    let checks = [
                        before_seal,
                        s.binds
                            == vec![
                                (1, format!("{GUEST_PATH}/m1")),
                                (2, format!("{GUEST_PATH}/m2")),
                            ],
                        !bad(share.join("rootfs/f")),
                        !bad(share.join("m1/f")),
                        !bad(share.join("new")),
                        std::fs::read(share.join("m2")).ok()? == b"127.0.0.1 x\n",
                        std::fs::write(share.join("m2"), b"changed\n").is_ok(),
                        s.host_rootfs() == share.join("rootfs"),
                    ];
                    // A joining container's part, bound at run time, read-only
                    // where asked, and gone without a trace when released.
                    let j = sh.add("c1", &rootfs, false, &mounts[..2], None).ok()?;
                    let joined = [
                        j.guest_rootfs() == format!("{GUEST_PATH}/c1/rootfs"),
                        j.binds == vec![(1, format!("{GUEST_PATH}/c1/m1"))],
                        share.join("c1/rootfs").is_dir(),
                        !bad(share.join("c1/m1/f")),
                        !bad(share.join("c1/new")),
                        sh.add(
                            "c2",
                            &rootfs,
                            false,
                            &[m("/x", "/nonexistent", "bind", &[])],
                            None,
                        )
                        .is_err(),
                        !share.join("c2").exists(),
                    ];
                    sh.release(j);
                    // Trees cloned (as a stand-in does) and attached.
                    let trees = Trees::clone_from(&rootfs, &mounts[..2]).ok()?;
                    let again = sh
                        .add("c3", &rootfs, false, &mounts[..2], Some(&trees))
                        .ok()?;
                    let checks: Vec<bool> = checks
                        .into_iter()
                        .chain(joined)
                        .chain([
                            std::fs::read_dir(share.join("c1/rootfs")).ok()?.count() == 0,
                            again.host_rootfs().is_dir(),
                            !bad(share.join("c3/m1/f")),
                        ])
                        .collect();
                    Some(checks.iter().all(|c| *c))
                })();
                std::process::exit(if ok == Some(true) { 0 } else { 1 });
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        // Writes through a writable bind reach the host; the binds did not.
        assert_eq!(std::fs::read(&file).unwrap(), b"changed\n");
        assert_eq!(std::fs::read_dir(&share).unwrap().count(), 0);
    }
}
