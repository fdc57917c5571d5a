//! vCPUs: register setup for the 64-bit boot entry and the KVM_RUN loop
//! that dispatches exits to the device buses.

use super::boot;
use super::bus::Bus;
use super::cpuid;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VcpuError {
    #[error("vCPU {index}: {what}: {source}")]
    Kvm {
        index: u8,
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

/// Why the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnd {
    /// The guest reset or shut down (reboot, triple fault, i8042, PSCI-like event).
    Reset,
    /// A vCPU halted with no interrupt controller to wake it (tiny test guests).
    Halted,
    /// The VMM stopped it.
    Stopped,
    /// KVM reported a failure; the text names the exit and the registers.
    Error(String),
}

/// Shared state through which the VMM pauses, resumes and stops vCPUs.
#[derive(Default)]
pub struct Control {
    pub stop: AtomicBool,
    paused: Mutex<bool>,
    resumed: Condvar,
    /// Bumped by a vCPU each time it notices a request (kick acknowledgement).
    pub acks: AtomicU64,
    /// vCPUs currently parked by a pause.
    parked: Mutex<usize>,
    parked_cv: Condvar,
    /// While a snapshot is being taken: each vCPU's state as it parks.
    snapshot: Mutex<Option<Vec<String>>>,
}

impl Control {
    pub fn set_paused(&self, p: bool) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = p;
        if !p {
            self.resumed.notify_all();
        }
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on each vCPU that parks notes its state.
    pub fn begin_snapshot(&self) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// The states noted since [`Control::begin_snapshot`], by vCPU.
    pub fn end_snapshot(&self) -> Vec<String> {
        let mut states = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        states.sort();
        states
    }

    fn note(&self, state: impl FnOnce() -> String) {
        if let Some(v) = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            v.push(state());
        }
    }

    pub fn parked(&self) -> usize {
        *self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` vCPUs are parked (or the timeout passes).
    pub fn wait_parked(&self, n: usize, timeout: std::time::Duration) -> bool {
        self.wait_for_parked(timeout, |p| p >= n)
    }

    /// Waits until no vCPU is parked any more (after a resume).
    pub fn wait_unparked(&self, timeout: std::time::Duration) -> bool {
        self.wait_for_parked(timeout, |p| p == 0)
    }

    fn wait_for_parked(&self, timeout: std::time::Duration, done: impl Fn(usize) -> bool) -> bool {
        let g = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .parked_cv
            .wait_timeout_while(g, timeout, |p| !done(*p))
            .unwrap_or_else(|e| e.into_inner());
        done(*g)
    }

    /// Parks the calling vCPU while a pause lasts; `state` is its state,
    /// asked for only when a snapshot is being taken.
    fn park_if_paused(&self, state: impl FnOnce() -> String) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if !*paused {
            return;
        }
        self.note(state);
        *self.parked.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.parked_cv.notify_all();
        while *paused && !self.stop.load(Ordering::SeqCst) {
            paused = self.resumed.wait(paused).unwrap_or_else(|e| e.into_inner());
        }
        *self.parked.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.parked_cv.notify_all();
    }

    pub fn wake_all(&self) {
        self.resumed.notify_all();
    }
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

fn boot_msrs() -> Vec<kvm_msr_entry> {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, 1),          // fast strings
        e(MSR_MTRR_DEF_TYPE, (1 << 11) | 6), // MTRRs on, default write-back
    ]
}

/// LAPIC local vector table entries for LINT0 (ExtINT) and LINT1 (NMI).
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const DM_EXTINT: u32 = 7;
const DM_NMI: u32 = 4;

fn set_lvt(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let mut v = [0u8; 4];
    for (i, b) in v.iter_mut().enumerate() {
        *b = regs[offset + i] as u8;
    }
    let val = (u32::from_le_bytes(v) & !0x700) | (mode << 8);
    for (i, b) in val.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

/// CPUID, MSRs, FPU and LAPIC for every vCPU; long-mode registers at the
/// kernel entry for the boot vCPU (the others wait for INIT/SIPI).
pub fn configure(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    index: u8,
    count: u8,
    entry: Option<u64>,
) -> Result<(), VcpuError> {
    let err = |what| {
        move |source| VcpuError::Kvm {
            index,
            what,
            source,
        }
    };
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(err("KVM_GET_SUPPORTED_CPUID"))?;
    cpuid::filter(&mut cpuid, index, count);
    vcpu.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
    let msrs = Msrs::from_entries(&boot_msrs()).map_err(|_| VcpuError::Kvm {
        index,
        what: "build MSR list",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    vcpu.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(err("KVM_SET_FPU"))?;
    let mut lapic = vcpu.get_lapic().map_err(err("KVM_GET_LAPIC"))?;
    set_lvt(&mut lapic.regs, APIC_LVT0, DM_EXTINT);
    set_lvt(&mut lapic.regs, APIC_LVT1, DM_NMI);
    vcpu.set_lapic(&lapic).map_err(err("KVM_SET_LAPIC"))?;
    if let Some(entry) = entry {
        let sregs = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&boot::long_mode_sregs(sregs))
            .map_err(err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&boot::boot_regs(entry))
            .map_err(err("KVM_SET_REGS"))?;
    }
    Ok(())
}

fn describe(vcpu: &VcpuFd, what: String) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "{what} (rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x})",
            r.rip, r.rsp, r.rflags, r.rax, s.cr0, s.cr3, s.cr4, s.efer
        ),
        _ => what,
    }
}

/// Where a vCPU is, for a guest that stopped answering: halted or running,
/// and its registers (rflags tells whether it takes interrupts).
fn state_of(vcpu: &VcpuFd, index: u8) -> String {
    let mp = match vcpu.get_mp_state() {
        Ok(m) if m.mp_state == kvm_bindings::KVM_MP_STATE_HALTED => "halted",
        Ok(m) if m.mp_state == kvm_bindings::KVM_MP_STATE_RUNNABLE => "runnable",
        Ok(_) => "waiting",
        Err(_) => "state unknown",
    };
    describe(vcpu, format!("vCPU {index} {mp}"))
}

/// Runs one vCPU until the VM ends or the VMM stops it.
pub fn run(vcpu: &mut VcpuFd, index: u8, pio: &Bus, mmio: &Bus, ctl: &Control) -> VmEnd {
    loop {
        if ctl.stop.load(Ordering::SeqCst) {
            return VmEnd::Stopped;
        }
        ctl.park_if_paused(|| state_of(vcpu, index));
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                ctl.acks.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Err(e) => return VmEnd::Error(describe(vcpu, format!("vCPU {index}: KVM_RUN: {e}"))),
        };
        match exit {
            VcpuExit::IoIn(port, data) => pio.read(port as u64, data),
            VcpuExit::IoOut(port, data) => pio.write(port as u64, data),
            VcpuExit::MmioRead(addr, data) => mmio.read(addr, data),
            VcpuExit::MmioWrite(addr, data) => mmio.write(addr, data),
            VcpuExit::Hlt => return VmEnd::Halted,
            VcpuExit::Shutdown => {
                // reboot=t makes a guest reboot a triple fault too: the
                // registers tell a crash from a requested reboot where KVM
                // keeps them (on AMD it has already reset the vCPU here).
                if crate::logging::debug_enabled() {
                    crate::logging::debug(&describe(vcpu, format!("vCPU {index}: shutdown exit")));
                }
                return VmEnd::Reset;
            }
            VcpuExit::SystemEvent(..) => return VmEnd::Reset,
            VcpuExit::FailEntry(reason, cpu) => {
                return VmEnd::Error(describe(
                    vcpu,
                    format!(
                    "vCPU {index}: KVM_EXIT_FAIL_ENTRY (hardware reason {reason:#x}, cpu {cpu})"
                ),
                ))
            }
            VcpuExit::InternalError => {
                return VmEnd::Error(describe(
                    vcpu,
                    format!("vCPU {index}: KVM_EXIT_INTERNAL_ERROR"),
                ))
            }
            other => {
                let what = format!("vCPU {index}: unexpected exit {other:?}");
                return VmEnd::Error(describe(vcpu, what));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_delivery_mode_is_set_without_touching_other_bits() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 1] = 0x01; // vector 0x30, delivery mode 1
        regs[APIC_LVT0 + 2] = 0x01; // masked bit (16)
        set_lvt(&mut regs, APIC_LVT0, DM_EXTINT);
        assert_eq!(regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(regs[APIC_LVT0 + 2] as u8, 0x01);
    }

    #[test]
    fn boot_msrs_enable_fast_strings_and_mtrrs() {
        let m = boot_msrs();
        assert!(m
            .iter()
            .any(|e| e.index == MSR_IA32_MISC_ENABLE && e.data == 1));
        assert!(m
            .iter()
            .any(|e| e.index == MSR_MTRR_DEF_TYPE && e.data & (1 << 11) != 0));
    }
}
