//! Guest RAM: anonymous mappings registered with KVM.

use super::layout;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

pub type Memory = GuestMemoryMmap<()>;

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("allocate guest memory ({0} MiB): {1}")]
    Alloc(u64, String),
    #[error("register guest memory with KVM: {0}")]
    Register(kvm_ioctls::Error),
}

pub fn create(size: u64) -> Result<Memory, MemoryError> {
    let regions: Vec<(GuestAddress, usize)> = layout::ram_regions(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&regions)
        .map_err(|e| MemoryError::Alloc(size >> 20, e.to_string()))
}

pub fn register(vm: &VmFd, mem: &Memory) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the VM
        // keeps for as long as the VM fd exists.
        unsafe { vm.set_user_memory_region(r) }.map_err(MemoryError::Register)?;
    }
    Ok(())
}
