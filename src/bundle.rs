//! Loading and validating an OCI bundle's config.json.

use oci_spec::runtime::Spec;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle {0}: config.json does not exist")]
    NoConfig(PathBuf),
    #[error("bundle {path}: cannot read config.json: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("bundle {path}: invalid config.json: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("bundle {path}: unsupported ociVersion {version:?} (supported: 1.x)")]
    Version { path: PathBuf, version: String },
    #[error("bundle {0}: config.json has no root")]
    NoRoot(PathBuf),
    #[error("bundle {path}: rootfs {rootfs} does not exist or is not a directory")]
    RootfsMissing { path: PathBuf, rootfs: PathBuf },
    #[error("bundle {0}: config.json has no process")]
    NoProcess(PathBuf),
    #[error("bundle {0}: process.args must not be empty")]
    EmptyArgs(PathBuf),
}

/// A validated bundle: its absolute path, its spec, and its rootfs path.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub path: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(path: &Path) -> Result<Bundle, BundleError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let cfg = path.join("config.json");
        let data = fs::read(&cfg).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => BundleError::NoConfig(path.clone()),
            _ => BundleError::Read {
                path: path.clone(),
                source,
            },
        })?;
        let spec: Spec = serde_json::from_slice(&data).map_err(|e| BundleError::Invalid {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        Self::validate(path, spec)
    }

    fn validate(path: PathBuf, spec: Spec) -> Result<Bundle, BundleError> {
        let version = spec.version().to_string();
        if version.split('.').next() != Some("1") {
            return Err(BundleError::Version { path, version });
        }
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| BundleError::NoRoot(path.clone()))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            path.join(root.path())
        };
        if !rootfs.is_dir() {
            return Err(BundleError::RootfsMissing { path, rootfs });
        }
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| BundleError::NoProcess(path.clone()))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(BundleError::EmptyArgs(path));
        }
        Ok(Bundle { path, spec, rootfs })
    }

    pub fn terminal(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.spec
            .annotations()
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("rootfs")).unwrap();
        fs::write(d.path().join("config.json"), config).unwrap();
        d
    }

    const GOOD: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#;

    #[test]
    fn loads_good_bundle() {
        let d = bundle_with(GOOD);
        let b = Bundle::load(d.path()).unwrap();
        assert_eq!(b.rootfs, d.path().join("rootfs"));
        assert!(!b.terminal());
    }

    #[test]
    fn rejects_bad_bundles() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            Bundle::load(d.path()),
            Err(BundleError::NoConfig(_))
        ));
        let cases = [
            ("{", "invalid config.json"),
            (
                r#"{"ociVersion":"2.0.0","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#,
                "unsupported ociVersion",
            ),
            (
                r#"{"ociVersion":"1.0.2","process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#,
                "has no root",
            ),
            (
                r#"{"ociVersion":"1.0.2","root":{"path":"nope"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#,
                "does not exist",
            ),
            (
                r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":[],"user":{"uid":0,"gid":0}}}"#,
                "must not be empty",
            ),
            (
                r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#,
                "has no process",
            ),
        ];
        for (cfg, want) in cases {
            let d = bundle_with(cfg);
            let err = Bundle::load(d.path()).unwrap_err().to_string();
            assert!(err.contains(want), "{cfg}: {err}");
        }
    }
}
