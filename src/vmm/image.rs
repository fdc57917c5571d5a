//! Finding the guest kernel and initramfs for a container: the container's
//! annotation (a path, or the version of a kernel installed with
//! `microrun kernel add`), then the environment, then the installed default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const KERNEL_ANNOTATION: &str = "io.microrun.kernel";
pub const INITRD_ANNOTATION: &str = "io.microrun.initrd";
pub const KERNEL_FILE: &str = "vmlinux";
pub const INITRD_FILE: &str = "initramfs.cpio";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("guest {what} not found; looked at: {looked}")]
    Missing { what: &'static str, looked: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Default share directories: beside the binary (PREFIX/bin → PREFIX/share),
/// then the compile-time install prefix.
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(prefix) = exe.parent().and_then(Path::parent) {
            dirs.push(prefix.join("share/microrun"));
        }
    }
    dirs.push(PathBuf::from(
        option_env!("MICRORUN_SHARE_DIR").unwrap_or("/usr/local/share/microrun"),
    ));
    dirs
}

fn find(
    what: &'static str,
    annotation: Option<&String>,
    env: Option<String>,
    file: &str,
    dirs: &[PathBuf],
) -> Result<PathBuf, ImageError> {
    let mut looked = Vec::new();
    let explicit = annotation
        .map(|a| (PathBuf::from(a), "annotation"))
        .or_else(|| env.map(|e| (PathBuf::from(e), "environment")));
    if let Some((p, source)) = explicit {
        if p.is_file() {
            return Ok(p);
        }
        // An explicit choice that is missing is an error, not a fallback.
        return Err(ImageError::Missing {
            what,
            looked: format!("{} (from the {source})", p.display()),
        });
    }
    for d in dirs {
        let p = d.join(file);
        if p.is_file() {
            return Ok(p);
        }
        looked.push(p.display().to_string());
    }
    Err(ImageError::Missing {
        what,
        looked: looked.join(", "),
    })
}

pub fn resolve(annotations: Option<&HashMap<String, String>>) -> Result<GuestImage, ImageError> {
    resolve_in(annotations, &default_dirs())
}

fn resolve_in(
    annotations: Option<&HashMap<String, String>>,
    dirs: &[PathBuf],
) -> Result<GuestImage, ImageError> {
    let ann = |k| annotations.and_then(|a| a.get(k));
    // A kernel named by version: installed with its own initramfs.
    if let Some(name) = ann(KERNEL_ANNOTATION).filter(|n| !n.contains('/')) {
        let kdirs: Vec<PathBuf> = dirs
            .iter()
            .map(|d| d.join(super::kernels::DIR).join(name))
            .collect();
        let kernel = find("kernel", None, None, super::kernels::KERNEL, &kdirs)?;
        let initrd = match ann(INITRD_ANNOTATION) {
            Some(i) => find("initramfs", Some(i), None, INITRD_FILE, &[])?,
            None => kernel.with_file_name(INITRD_FILE),
        };
        return Ok(GuestImage { kernel, initrd });
    }
    Ok(GuestImage {
        kernel: find(
            "kernel",
            ann(KERNEL_ANNOTATION),
            std::env::var("MICRORUN_KERNEL").ok(),
            KERNEL_FILE,
            dirs,
        )?,
        initrd: find(
            "initramfs",
            ann(INITRD_ANNOTATION),
            std::env::var("MICRORUN_INITRD").ok(),
            INITRD_FILE,
            dirs,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_wins_then_defaults() {
        let d = tempfile::tempdir().unwrap();
        let share = d.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join(KERNEL_FILE), b"k").unwrap();
        std::fs::write(share.join(INITRD_FILE), b"i").unwrap();
        let other = d.path().join("custom-vmlinux");
        std::fs::write(&other, b"k2").unwrap();
        let dirs = vec![share.clone()];
        // Only meaningful when the environment does not override.
        if std::env::var_os("MICRORUN_KERNEL").is_none()
            && std::env::var_os("MICRORUN_INITRD").is_none()
        {
            let img = resolve_in(None, &dirs).unwrap();
            assert_eq!(img.kernel, share.join(KERNEL_FILE));
            let mut ann = HashMap::new();
            ann.insert(KERNEL_ANNOTATION.to_string(), other.display().to_string());
            assert_eq!(resolve_in(Some(&ann), &dirs).unwrap().kernel, other);
            ann.insert(KERNEL_ANNOTATION.to_string(), "/nonexistent/vmlinux".into());
            let err = resolve_in(Some(&ann), &dirs).unwrap_err().to_string();
            assert!(
                err.contains("/nonexistent/vmlinux") && err.contains("annotation"),
                "{err}"
            );
            let err = resolve_in(None, &[d.path().join("empty")])
                .unwrap_err()
                .to_string();
            assert!(err.contains("empty/vmlinux"), "{err}");
            // An installed kernel by its version, with its own initramfs.
            let k = share.join("kernels/6.1.0-x");
            std::fs::create_dir_all(&k).unwrap();
            std::fs::write(k.join("kernel"), b"bz").unwrap();
            std::fs::write(k.join(INITRD_FILE), b"i2").unwrap();
            ann.insert(KERNEL_ANNOTATION.to_string(), "6.1.0-x".into());
            let img = resolve_in(Some(&ann), &dirs).unwrap();
            assert_eq!(img.kernel, k.join("kernel"));
            assert_eq!(img.initrd, k.join(INITRD_FILE));
            ann.insert(KERNEL_ANNOTATION.to_string(), "6.99".into());
            let err = resolve_in(Some(&ann), &dirs).unwrap_err().to_string();
            assert!(err.contains("kernels/6.99/kernel"), "{err}");
        }
    }
}
