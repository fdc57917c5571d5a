//! One container in a VM: its configuration, its init's process id, its
//! part of the share, and the spec the guest agent builds it from.

use super::super::share::Part;
use crate::sandbox::{ContainerConfig, ProcessId};
use microrun_protocol::Join;
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimit, Spec};
use std::path::PathBuf;

pub(super) struct Member {
    pub config: ContainerConfig,
    pub init: ProcessId,
    /// Its rootfs and bind sources in the share (none with a block root).
    pub part: Option<Part>,
}

/// The memory limit a spec sets, if any.
pub(super) fn memory_limit(spec: &Spec) -> Option<u64> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| l as u64)
}

pub(super) fn root_read_only(spec: &Spec) -> bool {
    spec.root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
}

impl Member {
    /// The spec as the guest needs it: its root and bind sources at their
    /// paths in the guest, without the hooks (they run on the host), with
    /// the caller's limits where the spec sets none.
    pub fn guest_spec(&self, guest_root: String, rlimits: &[PosixRlimit]) -> Spec {
        let mut spec = self.config.spec.clone();
        spec.set_hooks(None);
        if let Some(p) = spec.process_mut() {
            crate::rlimits::fill_unset(p, rlimits);
        }
        if let Some(root) = spec.root_mut() {
            root.set_path(PathBuf::from(guest_root));
        }
        // The VM is the containers' network isolation: they use the guest's
        // own namespace, where the interfaces are (including any hotplugged
        // at start) and where the agent's DNS relay listens.
        if let Some(nss) = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.namespaces_mut().as_mut())
        {
            nss.retain(|n| n.typ() != LinuxNamespaceType::Network);
        }
        if let (Some(mounts), Some(part)) = (spec.mounts_mut(), self.part.as_ref()) {
            for (i, guest) in &part.binds {
                if let Some(m) = mounts.get_mut(*i) {
                    m.set_source(Some(PathBuf::from(guest)));
                }
            }
        }
        spec
    }

    /// The namespaces its init joins, by the init of the container that
    /// holds them.
    pub fn joins(&self, init_of: impl Fn(&str) -> Option<ProcessId>) -> Result<Vec<Join>, String> {
        self.config
            .joins
            .iter()
            .map(|(kind, target)| {
                init_of(target)
                    .map(|process| Join {
                        kind: kind.clone(),
                        process,
                    })
                    .ok_or_else(|| {
                        format!("the container {target} whose {kind} namespace is to be joined is not in this VM any more")
                    })
            })
            .collect()
    }
}
