//! `microrun check`: can this host run microVMs?

use super::probe;
use super::vcpu::VmEnd;
use super::vm::{Vm, VmConfig};
use kvm_ioctls::{Cap, Kvm};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    #[error("this host's KVM cannot run a normal guest's user space ({detail}){hint}, so microVMs cannot run here. Use the emulated test host (make e2e-shell / make demo) or a machine with hardware KVM")]
    NoUserSpace { detail: String, hint: &'static str },
    #[error("the user-space probe could not run: {0}")]
    Probe(String),
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

/// The checks cheap enough for every `create`: the device, its API and
/// capabilities, and KVMs known not to run guest user space.
pub fn quick() -> Result<Report, CheckError> {
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
    // The probe passes on a nested "PVM" KVM, yet a Linux guest's user
    // space dies there at its first system call (measured): know it by name.
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err(CheckError::NoUserSpace {
            detail: "Linux guests' user space dies at the first system call under it".into(),
            hint: "; this is a nested \"PVM\" KVM (module kvm_pvm)",
        });
    }
    Ok(Report {
        api_version,
        max_vcpus: kvm.get_max_vcpus(),
    })
}

/// `microrun check`: the quick checks, then a guest that really runs user space.
pub fn probe() -> Result<Report, CheckError> {
    let r = quick()?;
    probe_user_space()?;
    Ok(r)
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the ring-3 + SYSCALL probe guest (see `probe.rs`) and checks that
/// it came back through the system call.
pub fn probe_user_space() -> Result<(), CheckError> {
    let perr = |e: &dyn std::fmt::Display| CheckError::Probe(e.to_string());
    // SAFETY: memfd_create with a valid NUL-terminated name; the fd is
    // checked and then owned by the File.
    let fd = unsafe { libc::memfd_create(c"microrun-probe".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(perr(&std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(&probe::tiny_elf(probe::CODE))
        .map_err(|e| perr(&e))?;
    let out = Capture::default();
    let vm = Vm::start(VmConfig {
        kernel: format!("/proc/self/fd/{fd}").into(),
        initrd: None,
        cmdline: vec![],
        mem_bytes: 64 << 20,
        vcpus: 1,
        console: Box::new(out.clone()),
        disks: vec![],
        rng: false,
        vsock: None,
        fs: Vec::new(),
        nets: vec![],
        on_end: None,
    })
    .map_err(|e| perr(&e))?;
    let end = vm.wait_timeout(Duration::from_secs(10));
    drop(vm);
    drop(f);
    let printed =
        String::from_utf8_lossy(&out.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    if end == Some(VmEnd::Reset) && printed == probe::EXPECTED {
        return Ok(());
    }
    let detail = match end {
        None => format!("the probe guest hung after printing {printed:?}"),
        Some(e) => format!(
            "the probe guest ended with {e:?} after printing {printed:?}, expected {:?}",
            probe::EXPECTED
        ),
    };
    let hint = if Path::new("/sys/module/kvm_pvm").exists() {
        "; this is a nested \"PVM\" KVM (module kvm_pvm)"
    } else {
        ""
    };
    Err(CheckError::NoUserSpace { detail, hint })
}
