//! The guest's CPUID: what KVM supports, with the topology of this VM, the
//! hypervisor bit, and KVM's paravirtual leaves (kvm-clock) left in.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EBX_CLFLUSH_SIZE: u32 = 8; // in 8-byte units, bits 15:8
const EDX_HTT: u32 = 1 << 28;

/// Adjusts `cpuid` for vCPU `index` of `count`.
pub fn filter(cpuid: &mut CpuId, index: u8, count: u8) {
    for e in cpuid.as_mut_slice().iter_mut() {
        filter_entry(e, index, count);
    }
}

fn filter_entry(e: &mut kvm_cpuid_entry2, index: u8, count: u8) {
    match e.function {
        LEAF_FEATURES => {
            e.ecx |= ECX_HYPERVISOR;
            // APIC id, logical processors per package, CLFLUSH line size.
            e.ebx = ((index as u32) << 24) | ((count as u32) << 16) | (EBX_CLFLUSH_SIZE << 8);
            if count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE => {
            // Cores per package - 1 in bits 31:26; one thread per cache.
            e.eax = (e.eax & 0x3ff) | ((count.saturating_sub(1) as u32) << 26);
        }
        LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
            // One thread per core, `count` cores; x2APIC id in edx.
            e.edx = index as u32;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 0x100; // level 0, type SMT
                }
                1 => {
                    e.eax = bits_for(count);
                    e.ebx = count as u32;
                    e.ecx = 0x201; // level 1, type core
                }
                _ => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index;
                }
            }
        }
        _ => {}
    }
}

/// Bits of APIC id needed to number `n` cores.
fn bits_for(n: u8) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - ((n as u32) - 1).leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn topology_and_hypervisor_bit() {
        let mut e = entry(1, 0);
        filter_entry(&mut e, 3, 4);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_ne!(e.edx & EDX_HTT, 0);
        let mut t = entry(0xb, 1);
        filter_entry(&mut t, 2, 4);
        assert_eq!((t.eax, t.ebx, t.edx), (2, 4, 2));
        let mut c = entry(4, 0);
        c.eax = 0x121;
        filter_entry(&mut c, 0, 2);
        assert_eq!(c.eax >> 26, 1);
        assert_eq!(c.eax & 0x3ff, 0x121);
    }

    #[test]
    fn single_vcpu_has_no_htt() {
        let mut e = entry(1, 0);
        e.edx = EDX_HTT;
        filter_entry(&mut e, 0, 1);
        assert_eq!(e.edx & EDX_HTT, 0);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(5), 3);
    }
}
