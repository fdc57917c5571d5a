//! Which microVM a new container belongs in. A spec that joins a
//! namespace by path (docker's `--network/--ipc/--pid container:`, every
//! container of a Kubernetes or podman pod) names a running container's
//! process: when that is a microrun container of the same state root, the
//! new container runs in its VM. Matched by the pid in a `/proc/<pid>/ns/…`
//! path (a container's host pid is its stand-in), and for the network
//! namespace also by inode (CRI passes a pinned namespace file, which the
//! first container's stand-in has entered).

use crate::state::{ContainerState, Status, Store};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JoinError {
    #[error(
        "joining the {kind} namespace {path} is not supported: it is not a running microrun \
         container's, and a microVM cannot share a namespace of the host"
    )]
    Foreign { kind: &'static str, path: PathBuf },
    #[error(
        "the container's namespaces belong to two different microVMs (containers {a} and {b}); \
         a container can join only one"
    )]
    TwoVms { a: String, b: String },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Where a joining container goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// A container of the VM (its control socket reaches the VM).
    pub member: String,
    /// The container whose microVM it is.
    pub vm: String,
    /// Namespaces to share inside the guest: (`ipc`, `uts` or `pid`; id).
    pub joins: Vec<(String, String)>,
}

fn kind(t: LinuxNamespaceType) -> Option<&'static str> {
    match t {
        LinuxNamespaceType::Network => Some("net"),
        LinuxNamespaceType::Ipc => Some("ipc"),
        LinuxNamespaceType::Uts => Some("uts"),
        LinuxNamespaceType::Pid => Some("pid"),
        _ => None,
    }
}

/// The pid of a `/proc/<pid>/ns/<kind>` path.
fn proc_pid(path: &Path) -> Option<i32> {
    let rest = path.strip_prefix("/proc").ok()?;
    let mut parts = rest.components();
    let pid = parts.next()?.as_os_str().to_str()?.parse().ok()?;
    (parts.next()?.as_os_str() == "ns").then_some(pid)
}

/// The container a namespace path belongs to, among the live ones.
fn owner<'a>(kind: &str, path: &Path, live: &'a [ContainerState]) -> Option<&'a ContainerState> {
    if let Some(pid) = proc_pid(path) {
        if let Some(c) = live.iter().find(|c| c.pid == pid) {
            return Some(c);
        }
    }
    if kind != "net" {
        return None;
    }
    let want = std::fs::metadata(path).ok()?;
    live.iter().find(|c| {
        std::fs::metadata(format!("/proc/{}/ns/net", c.pid))
            .is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev())
    })
}

/// The VM the spec's namespace paths point into, if any.
pub fn find(store: &Store, spec: &Spec) -> Result<Option<Target>, JoinError> {
    let paths: Vec<(&'static str, PathBuf)> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .filter_map(|n| Some((kind(n.typ())?, n.path().clone()?)))
        .collect();
    if paths.is_empty() {
        return Ok(None);
    }
    let live: Vec<ContainerState> = store
        .ids()?
        .iter()
        .filter_map(|id| store.peek(id).ok())
        .filter(|st| {
            matches!(
                st.current_status(),
                Status::Created | Status::Running | Status::Paused
            )
        })
        .collect();
    let mut target: Option<Target> = None;
    for (kind, path) in paths {
        let Some(c) = owner(kind, &path, &live) else {
            if kind == "net" {
                // A plain network namespace (CNI's, a pod's first
                // container's): the container's VM is wired to it.
                continue;
            }
            return Err(JoinError::Foreign { kind, path });
        };
        let t = target.get_or_insert_with(|| Target {
            member: c.id.clone(),
            vm: c.vm_id().to_string(),
            joins: Vec::new(),
        });
        if t.vm != c.vm_id() {
            return Err(JoinError::TwoVms {
                a: t.member.clone(),
                b: c.id.clone(),
            });
        }
        if kind != "net" {
            t.joins.push((kind.to_string(), c.id.clone()));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_name_their_pid() {
        assert_eq!(proc_pid(Path::new("/proc/42/ns/net")), Some(42));
        assert_eq!(proc_pid(Path::new("/proc/42/ns/ipc")), Some(42));
        assert_eq!(proc_pid(Path::new("/proc/self/ns/net")), None);
        assert_eq!(proc_pid(Path::new("/var/run/netns/cni-1")), None);
        assert_eq!(proc_pid(Path::new("/proc/42/root")), None);
    }

    fn spec_with(nss: &[(LinuxNamespaceType, Option<&str>)]) -> Spec {
        use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder};
        let nss: Vec<_> = nss
            .iter()
            .map(|(t, p)| {
                let mut b = LinuxNamespaceBuilder::default().typ(*t);
                if let Some(p) = p {
                    b = b.path(*p);
                }
                b.build().unwrap()
            })
            .collect();
        let mut spec = Spec::default();
        spec.set_linux(Some(
            LinuxBuilder::default().namespaces(nss).build().unwrap(),
        ));
        spec
    }

    #[test]
    fn no_paths_no_join_and_a_host_ipc_namespace_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(d.path());
        let plain = spec_with(&[(LinuxNamespaceType::Network, None)]);
        assert_eq!(find(&store, &plain).unwrap(), None);
        // A network namespace that is no container's is the VM's own.
        let netns = spec_with(&[(LinuxNamespaceType::Network, Some("/proc/1/ns/net"))]);
        assert_eq!(find(&store, &netns).unwrap(), None);
        let ipc = spec_with(&[(LinuxNamespaceType::Ipc, Some("/proc/1/ns/ipc"))]);
        let e = find(&store, &ipc).unwrap_err();
        assert!(
            e.to_string().contains("not a running microrun container"),
            "{e}"
        );
    }
}
