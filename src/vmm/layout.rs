//! Guest physical memory layout of a microrun VM (x86_64).

/// Boot GDT, IDT, boot_params (zero page), stack, page tables, command line.
pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const ZERO_PAGE: u64 = 0x7000;
pub const BOOT_STACK: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPTE_ADDR: u64 = 0xa000;
/// Four page directories: the first 4 GiB identity-mapped with 2 MiB pages.
pub const PDE_ADDR: u64 = 0xb000;
pub const PDE_PAGES: u64 = 4;
pub const CMDLINE_ADDR: u64 = 0x20000;
/// The x86 kernel's COMMAND_LINE_SIZE.
pub const CMDLINE_MAX: usize = 2048;
/// Start of the extended BIOS data area: RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// Where the 32-bit MMIO hole starts (virtio-mmio devices live here).
pub const MMIO_START: u64 = 0xd000_0000;
pub const MMIO_END: u64 = 0x1_0000_0000;
pub const MMIO_DEVICE_SIZE: u64 = 0x1000;
/// First GSI handed to virtio-mmio devices (0-4 are PIT/PIC/serial).
pub const VIRTIO_IRQ_BASE: u32 = 5;
pub const SERIAL_IRQ: u32 = 4;
/// The RTC's GSI, which KVM's I/O APIC treats apart (see `vm::window`).
pub const RTC_IRQ: u32 = 8;
pub const TSS_ADDR: usize = 0xfffb_d000;

/// The guest RAM regions for `size` bytes: below the MMIO hole, and the rest
/// above 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_START), (MMIO_END, size - MMIO_START)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_skip_the_mmio_hole() {
        assert_eq!(ram_regions(256 << 20), vec![(0, 256 << 20)]);
        let r = ram_regions(4 << 30);
        assert_eq!(r, vec![(0, MMIO_START), (MMIO_END, (4 << 30) - MMIO_START)]);
        assert_eq!(r.iter().map(|x| x.1).sum::<u64>(), 4 << 30);
    }
}
