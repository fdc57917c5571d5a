//! Builds microrun's guest initramfs: the static guest agent as `/init`
//! plus the few directories and device nodes it needs before devtmpfs.

pub mod cpio;

use cpio::{Entry, Kind};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("read agent {path}: {source}")]
    Agent {
        path: String,
        source: std::io::Error,
    },
    #[error("write initramfs: {0}")]
    Write(#[from] std::io::Error),
}

/// Directories the agent mounts on or uses before the container exists.
const DIRS: &[&str] = &["dev", "proc", "run", "sys", "tmp", "mnt", "container"];

pub fn entries(agent: Vec<u8>) -> Vec<Entry> {
    let mut v: Vec<Entry> = DIRS
        .iter()
        .map(|d| Entry {
            path: d.to_string(),
            mode: if *d == "tmp" { 0o1777 } else { 0o755 },
            kind: Kind::Dir,
            uid: 0,
            gid: 0,
        })
        .collect();
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    v.push(Entry {
        path: "dev/console".into(),
        mode: 0o600,
        kind: Kind::CharDev { major: 5, minor: 1 },
        uid: 0,
        gid: 0,
    });
    v.push(Entry {
        path: "dev/null".into(),
        mode: 0o666,
        kind: Kind::CharDev { major: 1, minor: 3 },
        uid: 0,
        gid: 0,
    });
    v.push(Entry {
        path: "init".into(),
        mode: 0o755,
        kind: Kind::File(agent),
        uid: 0,
        gid: 0,
    });
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Builds the initramfs image from the agent binary.
pub fn build(agent: &Path) -> Result<Vec<u8>, BuildError> {
    let data = std::fs::read(agent).map_err(|source| BuildError::Agent {
        path: agent.display().to_string(),
        source,
    })?;
    let mut out = Vec::with_capacity(data.len() + 4096);
    cpio::write(&mut out, &entries(data))?;
    Ok(out)
}

/// Appends a directory tree (files, directories, symlinks; owners and
/// modes kept, device nodes and sockets skipped), or a single file, at
/// `prefix` as a further cpio archive: the kernel unpacks concatenated
/// archives in order. Returns the bytes of file data written.
pub fn append_tree(w: &mut impl std::io::Write, dir: &Path, prefix: &str) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut ino: u32 = 1 << 20;
    let mut total = 0u64;
    let mut parts = String::new();
    let top = std::fs::metadata(dir)?;
    let comps: Vec<&str> = prefix.split('/').filter(|c| !c.is_empty()).collect();
    let parents = if top.is_dir() {
        &comps[..]
    } else {
        &comps[..comps.len().saturating_sub(1)]
    };
    for comp in parents {
        if !parts.is_empty() {
            parts.push('/');
        }
        parts.push_str(comp);
        cpio::write_entry(
            w,
            ino,
            &Entry {
                path: parts.clone(),
                mode: 0o755,
                kind: Kind::Dir,
                uid: 0,
                gid: 0,
            },
        )?;
        ino += 1;
    }
    if !top.is_dir() {
        let data = std::fs::read(dir)?;
        total += data.len() as u64;
        let entry = Entry {
            path: comps.join("/"),
            mode: top.mode() & 0o7777,
            kind: Kind::File(data),
            uid: top.uid(),
            gid: top.gid(),
        };
        cpio::write_entry(w, ino, &entry)?;
        cpio::write_trailer(w)?;
        return Ok(total);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&d)?.filter_map(|e| e.ok()).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p)?;
            let rel = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let path = format!("{prefix}/{rel}");
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink(std::fs::read_link(&p)?.to_string_lossy().into_owned())
            } else if ft.is_file() {
                total += md.len();
                Kind::File(std::fs::read(&p)?)
            } else {
                continue;
            };
            let entry = Entry {
                path,
                mode: md.mode() & 0o7777,
                kind,
                uid: md.uid(),
                gid: md.gid(),
            };
            cpio::write_entry(w, ino, &entry)?;
            ino = ino.wrapping_add(1);
        }
    }
    cpio::write_trailer(w)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_bytes() {
        let dir = tempfile_dir();
        let agent = dir.join("agent");
        std::fs::write(&agent, b"\x7fELF fake agent").unwrap();
        let a = build(&agent).unwrap();
        // A different mtime on the input must not change the output.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&agent, b"\x7fELF fake agent").unwrap();
        let b = build(&agent).unwrap();
        assert_eq!(a, b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_are_sorted_and_parents_first() {
        let e = entries(vec![1]);
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert!(
            paths.iter().position(|p| *p == "dev") < paths.iter().position(|p| *p == "dev/console")
        );
        assert!(paths.contains(&"init"));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rootfs-builder-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
