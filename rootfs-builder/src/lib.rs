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
        })
        .collect();
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    v.push(Entry {
        path: "dev/console".into(),
        mode: 0o600,
        kind: Kind::CharDev { major: 5, minor: 1 },
    });
    v.push(Entry {
        path: "dev/null".into(),
        mode: 0o666,
        kind: Kind::CharDev { major: 1, minor: 3 },
    });
    v.push(Entry {
        path: "init".into(),
        mode: 0o755,
        kind: Kind::File(agent),
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
