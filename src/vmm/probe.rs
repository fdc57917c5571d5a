//! A tiny guest that proves this KVM runs guest user space: from ring 0 it
//! installs a GDT with user segments, marks its pages user-accessible,
//! enables SYSCALL, drops to ring 3 with SYSRET, prints 'U' (IOPL 3), and
//! makes a system call whose ring-0 handler prints 'K' and resets through
//! the i8042. Assembled with GNU as from:
//!
//! .intel_syntax noprefix
//! .code64
//! start:
//!     lea rax, [rip + gdt]
//!     mov [rip + gdtr + 2], rax
//!     lgdt [rip + gdtr]
//!     push 0x10
//!     lea rax, [rip + 1f]
//!     push rax
//!     retfq
//! 1:  mov ax, 0x18
//!     mov ds, ax
//!     mov es, ax
//!     mov ss, ax
//!     or qword ptr [0x9000], 4
//!     or qword ptr [0xa000], 4
//!     or qword ptr [0xb040], 4
//!     mov rax, cr3
//!     mov cr3, rax
//!     mov ecx, 0xc0000080
//!     rdmsr
//!     or eax, 1
//!     wrmsr
//!     mov ecx, 0xc0000081
//!     xor eax, eax
//!     mov edx, 0x00200010
//!     wrmsr
//!     mov ecx, 0xc0000082
//!     lea rax, [rip + kernel_entry]
//!     mov rdx, rax
//!     shr rdx, 32
//!     wrmsr
//!     lea rcx, [rip + user]
//!     mov r11, 0x3002
//!     sysretq
//! user:
//!     mov rsp, 0x1100000
//!     mov dx, 0x3f8
//!     mov al, 'U'
//!     out dx, al
//!     syscall
//!     jmp user
//! kernel_entry:
//!     mov dx, 0x3f8
//!     mov al, 'K'
//!     out dx, al
//!     mov al, 0xfe
//!     out 0x64, al
//! 2:  jmp 2b
//! .align 16
//! gdt:
//!     .quad 0
//!     .quad 0
//!     .quad 0x00af9b000000ffff
//!     .quad 0x00cf93000000ffff
//!     .quad 0x00cffb000000ffff
//!     .quad 0x00cff3000000ffff
//!     .quad 0x00affb000000ffff
//! gdtr:
//!     .word 7*8-1
//!     .quad 0

/// The probe's code, loaded at [`LOAD_ADDR`].
pub const CODE: &[u8] = &[
    0x48, 0x8d, 0x05, 0xa9, 0x00, 0x00, 0x00, 0x48, 0x89, 0x05, 0xdc, 0x00, 0x00, 0x00, 0x0f, 0x01,
    0x15, 0xd3, 0x00, 0x00, 0x00, 0x6a, 0x10, 0x48, 0x8d, 0x05, 0x03, 0x00, 0x00, 0x00, 0x50, 0x48,
    0xcb, 0x66, 0xb8, 0x18, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0x48, 0x83, 0x0c, 0x25, 0x00,
    0x90, 0x00, 0x00, 0x04, 0x48, 0x83, 0x0c, 0x25, 0x00, 0xa0, 0x00, 0x00, 0x04, 0x48, 0x83, 0x0c,
    0x25, 0x40, 0xb0, 0x00, 0x00, 0x04, 0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8, 0xb9, 0x80, 0x00, 0x00,
    0xc0, 0x0f, 0x32, 0x83, 0xc8, 0x01, 0x0f, 0x30, 0xb9, 0x81, 0x00, 0x00, 0xc0, 0x31, 0xc0, 0xba,
    0x10, 0x00, 0x20, 0x00, 0x0f, 0x30, 0xb9, 0x82, 0x00, 0x00, 0xc0, 0x48, 0x8d, 0x05, 0x2c, 0x00,
    0x00, 0x00, 0x48, 0x89, 0xc2, 0x48, 0xc1, 0xea, 0x20, 0x0f, 0x30, 0x48, 0x8d, 0x0d, 0x0a, 0x00,
    0x00, 0x00, 0x49, 0xc7, 0xc3, 0x02, 0x30, 0x00, 0x00, 0x48, 0x0f, 0x07, 0x48, 0xc7, 0xc4, 0x00,
    0x00, 0x10, 0x01, 0x66, 0xba, 0xf8, 0x03, 0xb0, 0x55, 0xee, 0x0f, 0x05, 0xeb, 0xee, 0x66, 0xba,
    0xf8, 0x03, 0xb0, 0x4b, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe, 0x0f, 0x1f, 0x44, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9b, 0xaf, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x93, 0xcf, 0x00,
    0xff, 0xff, 0x00, 0x00, 0x00, 0xfb, 0xcf, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0xf3, 0xcf, 0x00,
    0xff, 0xff, 0x00, 0x00, 0x00, 0xfb, 0xaf, 0x00, 0x37, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00,
];

/// Where the probe (and every tiny test guest) is linked.
pub const LOAD_ADDR: u64 = 0x100_0000;

/// What a working KVM prints on the probe's serial console.
pub const EXPECTED: &str = "UK";

/// A minimal ELF64 executable with one PT_LOAD segment holding `code` at
/// [`LOAD_ADDR`], entered at its first byte.
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const EHSIZE: u16 = 64;
    const PHSIZE: u16 = 56;
    let mut v = Vec::with_capacity(EHSIZE as usize + PHSIZE as usize + code.len());
    v.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // entry
    v.extend_from_slice(&(EHSIZE as u64).to_le_bytes()); // program headers
    v.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&EHSIZE.to_le_bytes());
    v.extend_from_slice(&PHSIZE.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&[0; 6]);
    let off = (EHSIZE + PHSIZE) as u64;
    v.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    v.extend_from_slice(&7u32.to_le_bytes()); // RWX
    v.extend_from_slice(&off.to_le_bytes());
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    v.extend_from_slice(&(code.len() as u64).to_le_bytes());
    v.extend_from_slice(&(code.len() as u64).to_le_bytes());
    v.extend_from_slice(&0x1000u64.to_le_bytes());
    v.extend_from_slice(code);
    // Padding: the kernel loader reads in whole chunks.
    v.resize(v.len() + 16, 0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_header_is_well_formed() {
        let e = tiny_elf(CODE);
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!(u64::from_le_bytes(e[24..32].try_into().unwrap()), LOAD_ADDR);
        assert_eq!(&e[120..120 + CODE.len()], CODE);
    }
}
