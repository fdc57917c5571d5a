//! `microrun check`: can this host run microVMs?

use kvm_ioctls::{Cap, Kvm};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckError {
    #[error(
        "/dev/kvm is missing: load kvm-intel or kvm-amd (and enable virtualization in firmware)"
    )]
    NoDevice,
    #[error("cannot open /dev/kvm: {0} (add the user to the kvm group, or run as root)")]
    Open(String),
    #[error("KVM API version {0} is not the stable version 12")]
    ApiVersion(i32),
    #[error("KVM lacks required capability {0}")]
    MissingCap(&'static str),
    #[error("this host's KVM is a nested \"PVM\" hypervisor (module kvm_pvm): it cannot run a normal guest's user space, so microVMs cannot run here. Use the emulated test host (make e2e-shell / make demo) or a machine with hardware KVM")]
    Pvm,
}

const REQUIRED: &[(Cap, &str)] = &[
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::Pit2, "KVM_CAP_PIT2"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
];

#[derive(Debug)]
pub struct Report {
    pub api_version: i32,
    pub max_vcpus: usize,
}

/// Checks /dev/kvm and its capabilities, and recognizes hosts whose KVM is
/// known not to run guest user space.
pub fn probe() -> Result<Report, CheckError> {
    if !Path::new("/dev/kvm").exists() {
        return Err(CheckError::NoDevice);
    }
    let kvm = Kvm::new().map_err(|e| CheckError::Open(e.to_string()))?;
    let api_version = kvm.get_api_version();
    if api_version != 12 {
        return Err(CheckError::ApiVersion(api_version));
    }
    for (cap, name) in REQUIRED {
        if !kvm.check_extension(*cap) {
            return Err(CheckError::MissingCap(name));
        }
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err(CheckError::Pvm);
    }
    Ok(Report {
        api_version,
        max_vcpus: kvm.get_max_vcpus(),
    })
}
