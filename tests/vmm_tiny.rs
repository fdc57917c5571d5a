//! Tiny hand-written guests on this machine's real /dev/kvm: the VMM's page
//! tables, GDT, long-mode setup, port I/O exits, serial and i8042 reset.
//! (A full kernel boot runs in the emulated test host.)

use microrun::vmm::vcpu::VmEnd;
use microrun::vmm::vm::{Vm, VmConfig};
use std::io::Write;
use std::sync::{Arc, Mutex};

const LOAD_ADDR: u64 = 0x100_0000;

/// A minimal ELF64 executable with one PT_LOAD segment holding `code`.
fn elf(code: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let ehsize = 64u16;
    let phsize = 56u16;
    v.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // entry
    v.extend_from_slice(&(ehsize as u64).to_le_bytes()); // phoff
    v.extend_from_slice(&0u64.to_le_bytes()); // shoff
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&ehsize.to_le_bytes());
    v.extend_from_slice(&phsize.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
    let off = (ehsize + phsize) as u64;
    v.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    v.extend_from_slice(&5u32.to_le_bytes()); // R+X
    v.extend_from_slice(&off.to_le_bytes());
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    v.extend_from_slice(&(code.len() as u64).to_le_bytes());
    v.extend_from_slice(&(code.len() as u64).to_le_bytes());
    v.extend_from_slice(&0x1000u64.to_le_bytes());
    v.extend_from_slice(code);
    v
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn long_mode_guest_writes_serial_and_resets() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: /dev/kvm is absent on this machine");
        return;
    }
    #[rustfmt::skip]
    let code = [
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'O', 0xee,       // mov al, 'O'; out dx, al
        0xb0, b'K', 0xee,       // mov al, 'K'; out dx, al
        0xb0, b'\n', 0xee,      // mov al, '\n'; out dx, al
        0xb0, 0xfe, 0xe6, 0x64, // mov al, 0xfe; out 0x64, al (i8042 reset)
        0xeb, 0xfe,             // jmp $
    ];
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, elf(&code)).unwrap();
    let sink = Sink::default();
    let vm = Vm::start(VmConfig {
        kernel,
        initrd: None,
        cmdline: vec![],
        mem_bytes: 64 << 20,
        vcpus: 1,
        console: Box::new(sink.clone()),
        disks: vec![],
        rng: false,
    })
    .unwrap();
    assert_eq!(vm.wait(), VmEnd::Reset);
    assert_eq!(String::from_utf8_lossy(&sink.0.lock().unwrap()), "OK\n");
}

#[test]
fn a_guest_that_spins_can_be_paused_and_stopped() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: /dev/kvm is absent on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("spin.elf");
    std::fs::write(&kernel, elf(&[0xeb, 0xfe])).unwrap(); // jmp $
    let mut vm = Vm::start(VmConfig {
        kernel,
        initrd: None,
        cmdline: vec![],
        mem_bytes: 64 << 20,
        vcpus: 2,
        console: Box::new(std::io::sink()),
        disks: vec![],
        rng: false,
    })
    .unwrap();
    assert!(vm.pause(), "every vCPU parks");
    assert_eq!(vm.paused_vcpus(), 2);
    vm.resume();
    vm.stop();
}
