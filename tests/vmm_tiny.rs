//! Tiny hand-written guests on this machine's real /dev/kvm: the VMM's page
//! tables, GDT, long-mode setup, port I/O exits, serial and i8042 reset.
//! (A full kernel boot runs in the emulated test host.)

use microrun::vmm::vcpu::VmEnd;
use microrun::vmm::vm::{Vm, VmConfig};
use std::io::Write;
use std::sync::{Arc, Mutex};

use microrun::vmm::probe::{tiny_elf as elf, LOAD_ADDR};

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
    let (told_tx, told) = std::sync::mpsc::channel();
    let vm = Vm::start(VmConfig {
        kernel,
        initrd: None,
        cmdline: vec![],
        mem_bytes: 64 << 20,
        vcpus: 1,
        console: Box::new(sink.clone()),
        disks: vec![],
        rng: false,
        vsock: None,
        fs: Vec::new(),
        nets: vec![],
        on_end: Some(Box::new(move |end| {
            let _ = told_tx.send(end.clone());
        })),
    })
    .unwrap();
    assert_eq!(vm.wait(), VmEnd::Reset);
    // Every waiter sees the end, and the callback is told once.
    assert_eq!(
        vm.wait_timeout(std::time::Duration::ZERO),
        Some(VmEnd::Reset)
    );
    assert_eq!(told.recv().unwrap(), VmEnd::Reset);
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
        vsock: None,
        fs: Vec::new(),
        nets: vec![],
        on_end: None,
    })
    .unwrap();
    // A snapshot parks the vCPUs for a moment and leaves them running.
    let states = vm.vcpu_states();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states[0].starts_with("vCPU 0 runnable")
            && states[0].contains(&format!("rip={LOAD_ADDR:#x}")),
        "{states:?}"
    );
    assert!(states[1].starts_with("vCPU 1 "), "{states:?}");
    assert!(!vm.vcpu_states().is_empty());
    assert!(vm.pause(), "every vCPU parks");
    assert_eq!(vm.paused_vcpus(), 2);
    assert_eq!(vm.vcpu_states(), vec!["vCPUs paused".to_string()]);
    vm.resume();
    vm.stop();
}

#[test]
fn mmio_reads_and_writes_reach_the_virtio_transport() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: /dev/kvm is absent on this machine");
        return;
    }
    #[rustfmt::skip]
    let code = [
        0x48, 0xbb, 0x00, 0x00, 0x00, 0xd0, 0, 0, 0, 0, // mov rbx, 0xd0000000 (virtio-mmio slot 0)
        0x8b, 0x03,                                     // mov eax, [rbx]   (magic "virt")
        0x66, 0xba, 0xf8, 0x03,                         // mov dx, 0x3f8
        0xee,                                           // out dx, al
        0xc1, 0xe8, 0x08, 0xee,                         // shr eax, 8; out dx, al
        0xc1, 0xe8, 0x08, 0xee,
        0xc1, 0xe8, 0x08, 0xee,
        0xc7, 0x43, 0x70, 0x00, 0x00, 0x00, 0x00,       // mov dword [rbx+0x70], 0 (status: reset)
        0xb0, 0xfe, 0xe6, 0x64,                         // i8042 reset
        0xeb, 0xfe,
    ];
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("mmio.elf");
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
        rng: true,
        vsock: None,
        fs: Vec::new(),
        nets: vec![],
        on_end: None,
    })
    .unwrap();
    assert_eq!(vm.wait(), VmEnd::Reset);
    assert_eq!(String::from_utf8_lossy(&sink.0.lock().unwrap()), "virt");
}

/// Without an in-kernel interrupt controller, HLT exits to the VMM.
#[test]
fn hlt_exits_without_an_irqchip() {
    use microrun::vmm::{boot, bus::Bus, memory, vcpu};
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: /dev/kvm is absent on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("hlt.elf");
    std::fs::write(&kernel, elf(&[0xf4, 0xeb, 0xfe])).unwrap(); // hlt; jmp $
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let mem = memory::create(64 << 20).unwrap();
    memory::register(&vm, &mem).unwrap();
    let info = boot::load(&mem, &kernel, None, &boot::build_cmdline(&["x"]).unwrap()).unwrap();
    let mut fd = vm.create_vcpu(0).unwrap();
    let sregs = boot::long_mode_sregs(fd.get_sregs().unwrap());
    fd.set_sregs(&sregs).unwrap();
    fd.set_regs(&boot::boot_regs(info.entry)).unwrap();
    let end = vcpu::run(
        &mut fd,
        0,
        &Bus::default(),
        &Bus::default(),
        &vcpu::Control::default(),
    );
    assert_eq!(end, VmEnd::Halted);
    assert_eq!(fd.get_regs().unwrap().rip, LOAD_ADDR + 1);
}

/// The `microrun check` probe: ring 0 → ring 3 (SYSRET) → SYSCALL → ring 0.
#[test]
fn user_space_probe_round_trips_through_syscall() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: /dev/kvm is absent on this machine");
        return;
    }
    microrun::vmm::check::probe_user_space().unwrap();
}
