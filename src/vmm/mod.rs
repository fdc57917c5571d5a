//! The in-process KVM virtual machine monitor: the production sandbox.

pub mod boot;
pub mod bus;
pub mod check;
pub mod cpuid;
pub mod devices;
pub mod guest_streams;
pub mod host_watch;
pub mod image;
pub mod kernels;
pub mod layout;
pub mod memory;
pub mod mptable;
pub mod net;
pub mod probe;
pub mod sandbox;
pub mod share;
pub mod vcpu;
pub mod vm;

use crate::sandbox::{ContainerConfig, Sandbox, SandboxError};

/// Builds the microVM sandbox for a container. Fails fast, with the host
/// diagnosis, where KVM cannot run guests.
pub fn factory(config: ContainerConfig) -> Result<Box<dyn Sandbox>, SandboxError> {
    check::quick().map_err(|e| SandboxError::Failed(e.to_string()))?;
    Ok(Box::new(sandbox::VmSandbox::new(config)))
}
