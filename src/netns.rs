//! Puts the monitor in the container's network namespace, so that clients
//! that open /proc/<pid>/ns/net (Docker's hooks, Docker ≥26, CNI) configure
//! the namespace the VM's network devices are wired to.

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::fs::File;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {source}")]
    Join {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("create network namespace: {0}")]
    Create(#[source] nix::Error),
}

/// What the spec asks for the network namespace.
#[derive(Debug, PartialEq, Eq)]
pub enum NetMode {
    /// No network namespace entry: the host's (impossible to give a VM
    /// directly; the VM gets no network device).
    Host,
    New,
    Join(PathBuf),
}

pub fn mode(spec: &Spec) -> NetMode {
    let ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|nss| {
            nss.iter()
                .find(|n| n.typ() == LinuxNamespaceType::Network)
                .cloned()
        });
    match ns {
        None => NetMode::Host,
        Some(n) => match n.path() {
            Some(p) if !p.as_os_str().is_empty() => NetMode::Join(p.clone()),
            _ => NetMode::New,
        },
    }
}

/// Must run while the process is single-threaded.
pub fn enter(spec: &Spec) -> Result<(), NetnsError> {
    match mode(spec) {
        NetMode::Host => Ok(()),
        NetMode::New => unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Create),
        NetMode::Join(path) => {
            let f = File::open(&path).map_err(|source| NetnsError::Join {
                path: path.clone(),
                source,
            })?;
            setns(f, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Join {
                path,
                source: e.into(),
            })
        }
    }
}
