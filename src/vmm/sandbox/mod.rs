//! The production sandbox: a microVM whose guest agent the monitor drives
//! over virtio-vsock. It is built for one container and takes the ones that
//! join that container's namespaces later (`microvm.rs`: the VM;
//! `container.rs`: one container in it; `link.rs`: the agent's control
//! stream).
//!
//! The rootfs and the sources of bind mounts reach the guest through one
//! virtio-fs device serving the share (`vmm::share`): writes on either side
//! are seen by the other. A joining container's parts are bound into the
//! running share.

mod container;
mod link;
mod microvm;

pub use microvm::{VmSandbox, BLOCK_ROOT_ANNOTATION};

fn fail(e: impl std::fmt::Display) -> crate::sandbox::SandboxError {
    crate::sandbox::SandboxError::Failed(e.to_string())
}
