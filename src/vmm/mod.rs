//! The in-process KVM virtual machine monitor: the production sandbox.

pub mod check;
pub mod image;

use crate::sandbox::{ContainerConfig, Sandbox, SandboxError};

/// Builds the microVM sandbox for a container. Fails fast, with the host
/// diagnosis, where KVM cannot run guests.
pub fn factory(_config: ContainerConfig) -> Result<Box<dyn Sandbox>, SandboxError> {
    check::probe().map_err(|e| SandboxError::Failed(e.to_string()))?;
    Err(SandboxError::NotImplemented(
        "microVM boot is not implemented yet in this build of microrun; no container can run"
            .into(),
    ))
}
