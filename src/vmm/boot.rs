//! Direct boot at the kernel's 64-bit entry, of an ELF vmlinux (the
//! project's own kernel) or a compressed bzImage (what distributions ship,
//! 64-bit boot protocol, no firmware): kernel and initramfs in guest
//! memory, the boot_params zero page with its e820 map, the command line,
//! identity page tables, a GDT, and long-mode registers.

use super::layout::*;
use super::memory::Memory;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::Elf;
use linux_loader::loader::KernelLoader;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

#[derive(Debug, Error)]
pub enum BootError {
    #[error("open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("load kernel {path}: {msg} (microrun boots an ELF vmlinux or an x86-64 bzImage)")]
    Kernel { path: String, msg: String },
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory")]
    InitrdTooLarge { path: String, size: u64 },
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error("write boot structures: {0}")]
    Memory(String),
}

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const PAGE_SIZE: u64 = 0x1000;

/// Where things ended up; the vCPU setup needs the entry point.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    pub entry: u64,
    pub initrd: Option<(u64, u64)>,
}

pub fn build_cmdline(parts: &[&str]) -> Result<Cmdline, BootError> {
    let mut c = Cmdline::new(CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    for p in parts.iter().filter(|p| !p.is_empty()) {
        c.insert_str(p)
            .map_err(|e| BootError::Cmdline(format!("{e} (at {p:?})")))?;
    }
    Ok(c)
}

pub fn load(
    mem: &Memory,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &Cmdline,
) -> Result<BootInfo, BootError> {
    let open = |p: &Path| {
        File::open(p).map_err(|source| BootError::Open {
            path: p.display().to_string(),
            source,
        })
    };
    let kernel_err = |msg: String| BootError::Kernel {
        path: kernel.display().to_string(),
        msg,
    };
    let mut kf = open(kernel)?;
    let mut magic = [0u8; 4];
    kf.read_exact(&mut magic)
        .and_then(|_| kf.seek(SeekFrom::Start(0)))
        .map_err(|e| kernel_err(e.to_string()))?;
    let (entry, kernel_end, header) = if magic == *b"\x7fELF" {
        let res = Elf::load(mem, None, &mut kf, Some(GuestAddress(HIGH_MEMORY)))
            .map_err(|e| kernel_err(e.to_string()))?;
        (res.kernel_load.0, res.kernel_end, None)
    } else {
        let res = BzImage::load(mem, None, &mut kf, Some(GuestAddress(HIGH_MEMORY)))
            .map_err(|e| kernel_err(e.to_string()))?;
        let hdr = res
            .setup_header
            .ok_or_else(|| kernel_err("a bzImage without a setup header".into()))?;
        bzimage_entry(&hdr).map_err(kernel_err)?;
        // The kernel decompresses itself in place: what it needs then
        // (init_size) must stay clear of the initramfs.
        let end =
            res.kernel_load.0 + u64::from(hdr.init_size).max(res.kernel_end - res.kernel_load.0);
        // The 64-bit entry is 0x200 past the start of the protected-mode code.
        (res.kernel_load.0 + 0x200, end, Some(hdr))
    };
    let initrd = match initrd {
        Some(p) => Some(load_initrd(mem, p, kernel_end)?),
        None => None,
    };
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0);
    write_boot_params(mem, header, cmdline_len, initrd)?;
    write_page_tables(mem)?;
    write_gdt(mem)?;
    Ok(BootInfo { entry, initrd })
}

/// A bzImage microrun can enter directly: boot protocol 2.06 or later (the
/// one that documents the 64-bit entry) with a 64-bit kernel.
fn bzimage_entry(hdr: &setup_header) -> Result<(), String> {
    const XLF_KERNEL_64: u16 = 1;
    let version = hdr.version;
    if version < 0x0206 {
        return Err(format!(
            "boot protocol {}.{:02} is older than 2.06",
            version >> 8,
            version & 0xff
        ));
    }
    let xloadflags = hdr.xloadflags;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err("not a 64-bit kernel (no 64-bit entry point)".into());
    }
    Ok(())
}

/// Places the initramfs at the top of low RAM, page-aligned, above the kernel.
fn load_initrd(mem: &Memory, path: &Path, kernel_end: u64) -> Result<(u64, u64), BootError> {
    let open_err = |source| BootError::Open {
        path: path.display().to_string(),
        source,
    };
    // Read straight into guest memory: a heap copy of some MiB, once freed,
    // would raise malloc's mmap threshold and keep the heap large.
    let mut file = std::fs::File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    let low_end = mem.last_addr().0.min(MMIO_START - 1) + 1;
    let too_large = || BootError::InitrdTooLarge {
        path: path.display().to_string(),
        size,
    };
    let addr = low_end.checked_sub(size).ok_or_else(too_large)? & !(PAGE_SIZE - 1);
    if addr < kernel_end {
        return Err(too_large());
    }
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| BootError::Memory(e.to_string()))?;
    Ok((addr, size))
}

/// The e820 map: low RAM, the legacy hole, RAM from 1 MiB, and RAM above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut v = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIGH_MEMORY - EBDA_START, E820_RESERVED),
    ];
    for (start, len) in ram_regions(mem_size) {
        let s = start.max(HIGH_MEMORY);
        let end = start + len;
        if end > s {
            v.push((s, end - s, E820_RAM));
        }
    }
    v
}

fn write_boot_params(
    mem: &Memory,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let mut p = boot_params::default();
    // A bzImage's own header first (its sizes, alignment, flags), then ours.
    if let Some(h) = header {
        p.hdr = h;
    }
    p.hdr.type_of_loader = 0xff;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = 0x5372_6448; // "HdrS"
    if header.is_none() {
        p.hdr.kernel_alignment = 0x0100_0000;
    }
    p.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        p.hdr.ramdisk_image = addr as u32;
        p.hdr.ramdisk_size = size as u32;
    }
    let size: u64 = mem.iter().map(vm_memory::GuestMemoryRegion::len).sum();
    let map = e820_map(size);
    for (i, (addr, len, typ)) in map.iter().enumerate() {
        p.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *len,
            type_: *typ,
        };
    }
    p.e820_entries = map.len() as u8;
    let bp = BootParams::new::<boot_params>(&p, GuestAddress(ZERO_PAGE));
    LinuxBootConfigurator::write_bootparams::<Memory>(&bp, mem)
        .map_err(|e| BootError::Memory(e.to_string()))
}

/// Identity-maps the first 4 GiB with 2 MiB pages: enough for the kernel's
/// early boot, after which it builds its own tables.
fn write_page_tables(mem: &Memory) -> Result<(), BootError> {
    let w = |v: u64, a: u64| {
        mem.write_obj(v, GuestAddress(a))
            .map_err(|e| BootError::Memory(e.to_string()))
    };
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    w(PDPTE_ADDR | PRESENT_RW, PML4_ADDR)?;
    for d in 0..PDE_PAGES {
        let pd = PDE_ADDR + d * PAGE_SIZE;
        w(pd | PRESENT_RW, PDPTE_ADDR + d * 8)?;
        for i in 0..512u64 {
            w(((d * 512 + i) << 21) | PRESENT_RW | HUGE, pd + i * 8)?;
        }
    }
    Ok(())
}

/// GDT entries: null, 64-bit code, data, TSS (flags, base, limit).
const GDT: [(u16, u32, u32); 4] = [
    (0, 0, 0),
    (0xa09b, 0, 0xfffff),
    (0xc093, 0, 0xfffff),
    (0x808b, 0, 0xfffff),
];

pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn segment(index: u16, entry: u64) -> kvm_segment {
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
    }
}

fn write_gdt(mem: &Memory) -> Result<(), BootError> {
    for (i, (f, b, l)) in GDT.iter().enumerate() {
        mem.write_obj(gdt_entry(*f, *b, *l), GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(|e| BootError::Memory(e.to_string()))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|e| BootError::Memory(e.to_string()))
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Long mode with paging on our identity tables, flat segments from our GDT.
pub fn long_mode_sregs(mut s: kvm_sregs) -> kvm_sregs {
    let code = segment(1, gdt_entry(GDT[1].0, GDT[1].1, GDT[1].2));
    let data = segment(2, gdt_entry(GDT[2].0, GDT[2].1, GDT[2].2));
    let tss = segment(3, gdt_entry(GDT[3].0, GDT[3].1, GDT[3].2));
    s.gdt.base = GDT_ADDR;
    s.gdt.limit = (GDT.len() * 8 - 1) as u16;
    s.idt.base = IDT_ADDR;
    s.idt.limit = 7;
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = tss;
    s.cr3 = PML4_ADDR;
    s.cr4 |= X86_CR4_PAE;
    s.cr0 |= X86_CR0_PE | X86_CR0_PG;
    s.efer |= EFER_LME | EFER_LMA;
    s
}

/// The boot CPU's registers at the kernel's 64-bit entry (startup_64):
/// rsi points at boot_params.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: u64) -> Memory {
        super::super::memory::create(size).unwrap()
    }

    #[test]
    fn gdt_entries_match_the_architecture() {
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        let code = segment(1, gdt_entry(0xa09b, 0, 0xfffff));
        assert_eq!(
            (code.l, code.db, code.present, code.s, code.selector),
            (1, 0, 1, 1, 8)
        );
        let data = segment(2, gdt_entry(0xc093, 0, 0xfffff));
        assert_eq!((data.l, data.db, data.type_, data.selector), (0, 1, 3, 16));
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let m = mem(64 << 20);
        write_page_tables(&m).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPTE_ADDR | 3);
        let pdpte3: u64 = m.read_obj(GuestAddress(PDPTE_ADDR + 24)).unwrap();
        assert_eq!(pdpte3, (PDE_ADDR + 3 * PAGE_SIZE) | 3);
        let last: u64 = m
            .read_obj(GuestAddress(PDE_ADDR + 4 * PAGE_SIZE - 8))
            .unwrap();
        assert_eq!(last, ((2048u64 - 1) << 21) | 0x83);
    }

    #[test]
    fn e820_has_low_ram_hole_and_high_ram() {
        let map = e820_map(256 << 20);
        assert_eq!(map[0], (0, EBDA_START, E820_RAM));
        assert_eq!(map[1].2, E820_RESERVED);
        assert_eq!(map[2], (HIGH_MEMORY, (256 << 20) - HIGH_MEMORY, E820_RAM));
        let big = e820_map(6 << 30);
        assert_eq!(big.last().unwrap().0, MMIO_END);
    }

    #[test]
    fn boot_params_point_at_cmdline_and_initrd() {
        let m = mem(64 << 20);
        write_boot_params(&m, None, 42, Some((0x300_0000, 0x1234))).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE)).unwrap();
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!(p.e820_entries, 3);
    }

    #[test]
    fn the_initramfs_lands_page_aligned_at_the_top_of_low_ram() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("initramfs.cpio");
        std::fs::write(&f, b"070701 an archive").unwrap();
        let m = mem(64 << 20);
        let (addr, size) = load_initrd(&m, &f, HIGH_MEMORY).unwrap();
        assert_eq!(size, 17);
        assert_eq!(addr % PAGE_SIZE, 0);
        assert!(addr + size <= 64 << 20 && addr + PAGE_SIZE > (64 << 20) - size);
        let mut got = [0u8; 17];
        m.read_slice(&mut got, GuestAddress(addr)).unwrap();
        assert_eq!(&got, b"070701 an archive");
        // Over the kernel, or absent: clear errors.
        let e = load_initrd(&m, &f, 64 << 20).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
        assert!(load_initrd(&m, &d.path().join("none"), HIGH_MEMORY).is_err());
    }

    /// A bzImage's bytes: one setup sector after the boot sector, then the
    /// protected-mode code.
    fn fake_bzimage(version: u16, xloadflags: u16) -> Vec<u8> {
        let mut f = vec![0u8; 1024 + 4096];
        f[0x1f1] = 1; // setup_sects
        f[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        f[0x211] = 1; // loadflags: LOADED_HIGH
        f[0x214..0x218].copy_from_slice(&(HIGH_MEMORY as u32).to_le_bytes()); // code32_start
        f[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        f[0x260..0x264].copy_from_slice(&(1u32 << 20).to_le_bytes()); // init_size
        f[1024..1028].copy_from_slice(b"CODE");
        f
    }

    #[test]
    fn a_bzimage_is_entered_at_its_64_bit_entry_with_its_own_header() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("vmlinuz");
        std::fs::write(&k, fake_bzimage(0x020f, 1)).unwrap();
        let m = mem(64 << 20);
        let c = build_cmdline(&["console=ttyS0"]).unwrap();
        let info = load(&m, &k, None, &c).unwrap();
        assert_eq!(info.entry, HIGH_MEMORY + 0x200);
        let code: [u8; 4] = m.read_obj(GuestAddress(HIGH_MEMORY)).unwrap();
        assert_eq!(&code, b"CODE");
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE)).unwrap();
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.init_size }, 1 << 20);
        // Too old a protocol, or a 32-bit kernel: clear errors.
        std::fs::write(&k, fake_bzimage(0x0205, 1)).unwrap();
        let e = load(&m, &k, None, &c).unwrap_err().to_string();
        assert!(e.contains("older than 2.06"), "{e}");
        std::fs::write(&k, fake_bzimage(0x020f, 0)).unwrap();
        let e = load(&m, &k, None, &c).unwrap_err().to_string();
        assert!(e.contains("not a 64-bit kernel"), "{e}");
        std::fs::write(&k, b"neither ELF nor bzImage").unwrap();
        assert!(load(&m, &k, None, &c).is_err());
    }

    #[test]
    fn cmdline_longer_than_the_kernel_limit_is_an_error() {
        let long = "x".repeat(CMDLINE_MAX + 1);
        assert!(build_cmdline(&["console=ttyS0", &long]).is_err());
        assert!(build_cmdline(&["console=ttyS0", "reboot=t"]).is_ok());
    }

    #[test]
    fn long_mode_registers() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!(s.cr3, PML4_ADDR);
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_eq!(s.cs.l, 1);
        let r = boot_regs(0x100_0000);
        assert_eq!((r.rip, r.rsi), (0x100_0000, ZERO_PAGE));
    }
}
