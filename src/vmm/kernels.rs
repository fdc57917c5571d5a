//! Guest kernels beside the project's own (docs/guest-image.md): `microrun
//! kernel add` prepares one — a distribution's bzImage or a vmlinux — with
//! the modules the guest agent needs before it can reach anything, and
//! installs it under `<share>/kernels/<version>/` (`kernel`,
//! `initramfs.cpio`), where the `io.microrun.kernel` annotation finds it by
//! its version. `microrun kernel list` shows what is installed.
//!
//! The initramfs is the installed default one (the agent) with a second
//! cpio archive appended: the modules at their place under
//! `/lib/modules/<version>/` and `/lib/microrun/modules`, the order in
//! which the agent loads them (dependencies first).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The directory under a share directory that holds installed kernels.
pub const DIR: &str = "kernels";
pub const KERNEL: &str = "kernel";
/// Where the agent finds the modules to load, in order.
pub const MODULE_LIST: &str = "lib/microrun/modules";

/// What the agent needs from a kernel: (module, what for, required).
const NEEDED: &[(&str, &str, bool)] = &[
    ("virtio_mmio", "the VM's devices (virtio-mmio)", true),
    ("virtiofs", "the container's files (virtio-fs, FUSE)", true),
    (
        "vmw_vsock_virtio_transport",
        "the link to the host (virtio-vsock)",
        true,
    ),
    ("virtio_net", "network interfaces (virtio-net)", true),
    ("virtio_blk", "block-device roots (virtio-blk)", false),
    ("virtio_rng", "the guest's entropy (virtio-rng)", false),
    ("ext4", "ext4 block-device roots", false),
];

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: neither an x86-64 bzImage nor an ELF vmlinux with a version string")]
    Format(PathBuf),
    #[error(
        "cannot tell which drivers kernel {version} has: give its modules directory \
         (with modules.dep and modules.builtin), e.g. /lib/modules/{version}"
    )]
    NoModules { version: String },
    #[error(
        "kernel {version} has no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES ({config}): it cannot find \
         microrun's devices, which are declared on the kernel command line; discovering them \
         through ACPI tables is not implemented yet"
    )]
    NoCmdlineDevices { version: String, config: PathBuf },
    #[error("kernel {version} lacks what the microrun guest needs:\n{missing}")]
    Missing { version: String, missing: String },
    #[error("{0}")]
    Image(#[from] super::image::ImageError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The kernel's release (`uname -r`): from a bzImage's header, or the
/// "Linux version" banner of a vmlinux.
pub fn version(kernel: &Path) -> Result<String, KernelError> {
    let mut f = std::fs::File::open(kernel).map_err(io(kernel))?;
    let mut hdr = [0u8; 0x210];
    if f.read_exact(&mut hdr).is_ok() && &hdr[0x202..0x206] == b"HdrS" {
        let off = u64::from(u16::from_le_bytes([hdr[0x20e], hdr[0x20f]])) + 0x200;
        let mut s = [0u8; 128];
        f.seek(SeekFrom::Start(off)).map_err(io(kernel))?;
        let n = f.read(&mut s).map_err(io(kernel))?;
        return first_word(&s[..n]).ok_or_else(|| KernelError::Format(kernel.into()));
    }
    let data = std::fs::read(kernel).map_err(io(kernel))?;
    let banner = b"Linux version ";
    data.windows(banner.len())
        .position(|w| w == banner)
        .and_then(|i| first_word(&data[i + banner.len()..(i + 200).min(data.len())]))
        .ok_or_else(|| KernelError::Format(kernel.into()))
}

fn first_word(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    let s = std::str::from_utf8(&b[..end]).ok()?;
    let w = s.split_whitespace().next()?;
    (!w.is_empty() && w.chars().all(|c| c.is_ascii_graphic())).then(|| w.to_string())
}

/// A module's name as the kernel knows it ('-' and '_' alike).
fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let base = file.split(".ko").next().unwrap_or(file);
    base.replace('-', "_")
}

/// modules.dep and modules.builtin of a modules directory.
struct Index {
    builtin: HashSet<String>,
    /// name → (path relative to the directory, dependencies' paths)
    dep: HashMap<String, (String, Vec<String>)>,
}

impl Index {
    fn read(dir: &Path) -> Result<Index, KernelError> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(io(dir));
        let builtin = read("modules.builtin")?.lines().map(module_name).collect();
        let dep = read("modules.dep")?
            .lines()
            .filter_map(|l| {
                let (m, deps) = l.split_once(':')?;
                let deps = deps.split_whitespace().map(String::from).collect();
                Some((module_name(m), (m.to_string(), deps)))
            })
            .collect();
        Ok(Index { builtin, dep })
    }

    /// The modules to load for `needed`, dependencies first, and what is
    /// neither built in nor a module.
    fn resolve(&self, needed: &[(&str, &str, bool)]) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut missing = Vec::new();
        for (name, why, required) in needed {
            if self.builtin.contains(*name) {
                continue;
            }
            match self.dep.get(*name) {
                Some((path, deps)) => {
                    // modules.dep lists every dependency, deepest last.
                    for d in deps.iter().rev().chain([path]) {
                        if !order.contains(d) {
                            order.push(d.clone());
                        }
                    }
                }
                None if *required => missing.push(format!("  {name}: {why}")),
                None => {}
            }
        }
        (order, missing)
    }
}

/// An installed kernel.
#[derive(Debug, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub modules: usize,
}

/// Prepares and installs `kernel` under `share/kernels/<version>/`, its
/// initramfs built from `base` (the agent's) and the needed modules of
/// `modules` (default: /lib/modules/<version>).
pub fn add(
    kernel: &Path,
    modules: Option<&Path>,
    base: &Path,
    share: &Path,
) -> Result<Installed, KernelError> {
    let version = version(kernel)?;
    let default_dir = PathBuf::from(format!("/lib/modules/{version}"));
    let mdir = match modules {
        Some(m) => m.to_path_buf(),
        None if default_dir.join("modules.dep").is_file() => default_dir,
        None => return Err(KernelError::NoModules { version }),
    };
    // The kernel's build configuration, where the distribution ships it
    // (config-<version> beside the image): the devices are declared on the
    // command line, which a kernel may not read.
    let config = kernel.with_file_name(format!("config-{version}"));
    if let Ok(text) = std::fs::read_to_string(&config) {
        if !text
            .lines()
            .any(|l| l == "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y")
        {
            return Err(KernelError::NoCmdlineDevices { version, config });
        }
    }
    let index = Index::read(&mdir)?;
    let (order, missing) = index.resolve(NEEDED);
    if !missing.is_empty() {
        return Err(KernelError::Missing {
            version,
            missing: missing.join("\n"),
        });
    }
    let mut initrd = std::fs::read(base).map_err(io(base))?;
    let mut entries = Vec::new();
    let mut list = String::new();
    let mut dirs = HashSet::new();
    for rel in &order {
        let guest = format!("lib/modules/{version}/{rel}");
        let mut parent = String::new();
        for comp in guest
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            if dirs.insert(parent.clone()) {
                entries.push(dir_entry(&parent));
            }
        }
        let src = mdir.join(rel);
        let data = std::fs::read(&src).map_err(io(&src))?;
        entries.push(rootfs_builder::cpio::Entry {
            path: guest.clone(),
            mode: 0o644,
            kind: rootfs_builder::cpio::Kind::File(data),
            uid: 0,
            gid: 0,
        });
        list.push_str(&format!("/{guest}\n"));
    }
    for d in ["lib", "lib/microrun"] {
        if dirs.insert(d.to_string()) {
            entries.push(dir_entry(d));
        }
    }
    entries.push(rootfs_builder::cpio::Entry {
        path: MODULE_LIST.into(),
        mode: 0o644,
        kind: rootfs_builder::cpio::Kind::File(list.into_bytes()),
        uid: 0,
        gid: 0,
    });
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let out = share.join(DIR).join(&version);
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    rootfs_builder::cpio::write(&mut initrd, &entries).map_err(io(&out))?;
    let installed = Installed {
        kernel: out.join(KERNEL),
        initrd: out.join(super::image::INITRD_FILE),
        modules: order.len(),
        version,
    };
    // Written beside, then renamed: a running container never sees half.
    for (path, data) in [
        (
            &installed.kernel,
            std::fs::read(kernel).map_err(io(kernel))?,
        ),
        (&installed.initrd, initrd),
    ] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, data).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
    }
    Ok(installed)
}

fn dir_entry(path: &str) -> rootfs_builder::cpio::Entry {
    rootfs_builder::cpio::Entry {
        path: path.into(),
        mode: 0o755,
        kind: rootfs_builder::cpio::Kind::Dir,
        uid: 0,
        gid: 0,
    }
}

/// Installed kernels: (version, kernel, initramfs).
pub fn list(share: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(share.join(DIR)) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let dir = e.path();
            let k = dir.join(KERNEL);
            let i = dir.join(super::image::INITRD_FILE);
            (k.is_file() && i.is_file())
                .then(|| (e.file_name().to_string_lossy().into_owned(), k, i))
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules_dir(d: &Path, builtin: &str, dep: &str) -> PathBuf {
        let m = d.join("modules");
        std::fs::create_dir_all(m.join("kernel/drivers")).unwrap();
        std::fs::write(m.join("modules.builtin"), builtin).unwrap();
        std::fs::write(m.join("modules.dep"), dep).unwrap();
        for l in dep.lines() {
            let (p, _) = l.split_once(':').unwrap();
            std::fs::create_dir_all(m.join(p).parent().unwrap()).unwrap();
            std::fs::write(m.join(p), format!("module {p}")).unwrap();
        }
        m
    }

    const DEP: &str = "kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/virtio/virtio.ko:\n\
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
kernel/fs/fuse/fuse.ko:\n\
kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/fs/fuse/fuse.ko\n\
kernel/net/vmw_vsock/vsock.ko:\n\
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko\n\
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko\n";

    #[test]
    fn modules_load_dependencies_first_and_missing_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let m = modules_dir(d.path(), "kernel/drivers/net/virtio_net.ko\n", DEP);
        let idx = Index::read(&m).unwrap();
        let (order, missing) = idx.resolve(NEEDED);
        assert!(missing.is_empty(), "{missing:?}");
        let pos = |s: &str| order.iter().position(|o| o.ends_with(s)).unwrap();
        assert!(pos("/virtio.ko") < pos("virtio_mmio.ko"));
        assert!(pos("/fuse.ko") < pos("virtiofs.ko"));
        assert!(pos("/vsock.ko") < pos("vmw_vsock_virtio_transport.ko"));
        assert!(order.iter().any(|o| o.ends_with("virtio-rng.ko")));
        assert_eq!(order.len(), order.iter().collect::<HashSet<_>>().len());
        // virtio_net is built in: nothing to load for it.
        assert!(!order.iter().any(|o| o.contains("virtio_net")));
        let bare = modules_dir(&d.path().join("b"), "", "kernel/fs/fuse/fuse.ko:\n");
        let (_, missing) = Index::read(&bare).unwrap().resolve(NEEDED);
        assert_eq!(missing.len(), 4, "{missing:?}");
        assert!(missing[0].contains("virtio_mmio"));
    }

    #[test]
    fn versions_come_from_a_bzimage_header_or_a_vmlinux_banner() {
        let d = tempfile::tempdir().unwrap();
        let bz = d.path().join("vmlinuz");
        let mut f = vec![0u8; 0x400];
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        f[0x300..0x300 + 40].copy_from_slice(b"6.1.0-50-amd64 (debian-kernel@lists) #1\0");
        std::fs::write(&bz, &f).unwrap();
        assert_eq!(version(&bz).unwrap(), "6.1.0-50-amd64");
        let elf = d.path().join("vmlinux");
        std::fs::write(&elf, b"\x7fELF....Linux version 6.12.9 (builder) #1 SMP\0").unwrap();
        assert_eq!(version(&elf).unwrap(), "6.12.9");
        std::fs::write(&elf, b"\x7fELF nothing").unwrap();
        assert!(version(&elf).is_err());
    }

    #[test]
    fn add_installs_kernel_and_initramfs_with_the_module_list() {
        let d = tempfile::tempdir().unwrap();
        let m = modules_dir(d.path(), "kernel/drivers/net/virtio_net.ko\n", DEP);
        let k = d.path().join("vmlinux");
        std::fs::write(&k, b"\x7fELF Linux version 6.1.0-test #1\0").unwrap();
        let base = d.path().join("base.cpio");
        std::fs::write(&base, b"BASE").unwrap();
        let share = d.path().join("share");
        let got = add(&k, Some(&m), &base, &share).unwrap();
        assert_eq!(got.version, "6.1.0-test");
        assert_eq!(got.modules, 8);
        let initrd = std::fs::read(&got.initrd).unwrap();
        assert!(initrd.starts_with(b"BASE"));
        let text = String::from_utf8_lossy(&initrd);
        assert!(text.contains("lib/microrun/modules"));
        assert!(text.contains("/lib/modules/6.1.0-test/kernel/fs/fuse/fuse.ko\n"));
        assert_eq!(
            std::fs::read(&got.kernel).unwrap(),
            std::fs::read(&k).unwrap()
        );
        assert_eq!(list(&share)[0].0, "6.1.0-test");
        // The same inputs give the same bytes.
        let again = add(&k, Some(&m), &base, &share).unwrap();
        assert_eq!(std::fs::read(&again.initrd).unwrap(), initrd);
        // A distribution's config beside the kernel that cannot take the
        // devices from the command line: refused, and why.
        std::fs::write(
            d.path().join("config-6.1.0-test"),
            "CONFIG_VIRTIO_MMIO=m\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\n",
        )
        .unwrap();
        let e = add(&k, Some(&m), &base, &share).unwrap_err().to_string();
        assert!(e.contains("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"), "{e}");
    }
}
