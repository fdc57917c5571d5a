//! One microVM: KVM VM with its memory, interrupt controllers, devices and
//! vCPU threads, owned by the container's monitor.

use super::boot::{self, BootError};
use super::bus::Bus;
use super::devices::{i8042::I8042, serial::SerialDevice};
use super::layout;
use super::memory::{self, Memory, MemoryError};
use super::vcpu::{self, Control, VcpuError, VmEnd};
use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use std::io::Write;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

#[derive(Debug, Error)]
pub enum VmError {
    #[error("open /dev/kvm: {0}")]
    Kvm(kvm_ioctls::Error),
    #[error("{what}: {source}")]
    Setup {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    MpTable(#[from] super::mptable::MpTableError),
    #[error("at most 64 vCPUs are supported, {0} requested")]
    TooManyVcpus(usize),
}

pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Extra kernel command-line words, after microrun's own.
    pub cmdline: Vec<String>,
    pub mem_bytes: u64,
    pub vcpus: u8,
    /// Where the guest's serial console goes (the debug log, or a sink).
    pub console: Box<dyn Write + Send>,
}

/// The kernel command line microrun always uses (see docs/guest-image.md).
pub const BASE_CMDLINE: &[&str] = &["console=ttyS0", "reboot=t", "panic=-1", "quiet"];

/// Signal that kicks a vCPU out of KVM_RUN; its handler does nothing.
fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

extern "C" fn noop_handler(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

pub struct Vm {
    _kvm: Kvm,
    _vm: Arc<VmFd>,
    _mem: Memory,
    ctl: Arc<Control>,
    vcpus: Vec<JoinHandle<()>>,
    end_rx: Mutex<Receiver<VmEnd>>,
    pub started: Instant,
    /// When the boot vCPU first entered KVM_RUN.
    pub first_run: Arc<Mutex<Option<Instant>>>,
}

impl Vm {
    pub fn start(cfg: VmConfig) -> Result<Vm, VmError> {
        let started = Instant::now();
        if cfg.vcpus == 0 || cfg.vcpus > 64 {
            return Err(VmError::TooManyVcpus(cfg.vcpus as usize));
        }
        let setup = |what| move |source| VmError::Setup { what, source };
        let kvm = Kvm::new().map_err(VmError::Kvm)?;
        let vm = Arc::new(kvm.create_vm().map_err(setup("KVM_CREATE_VM"))?);
        vm.set_tss_address(layout::TSS_ADDR)
            .map_err(setup("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip().map_err(setup("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(setup("KVM_CREATE_PIT2"))?;

        let mem = memory::create(cfg.mem_bytes)?;
        memory::register(&vm, &mem)?;
        let mut words: Vec<&str> = BASE_CMDLINE.to_vec();
        words.extend(cfg.cmdline.iter().map(String::as_str));
        let cmdline = boot::build_cmdline(&words)?;
        let info = boot::load(&mem, &cfg.kernel, cfg.initrd.as_deref(), &cmdline)?;
        super::mptable::write(&mem, cfg.vcpus)?;

        let (end_tx, end_rx) = mpsc::channel();
        let mut pio = Bus::default();
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::Io {
            what: "eventfd",
            source,
        })?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
            .map_err(setup("KVM_IRQFD (serial)"))?;
        pio.insert(
            super::devices::serial::COM1,
            super::devices::serial::PORTS,
            Arc::new(Mutex::new(SerialDevice::new(serial_irq, cfg.console))),
        );
        let reset = EventFd::new(0).map_err(|source| VmError::Io {
            what: "eventfd",
            source,
        })?;
        let reset_watch = reset.try_clone().map_err(|source| VmError::Io {
            what: "eventfd",
            source,
        })?;
        pio.insert(
            super::devices::i8042::BASE,
            super::devices::i8042::PORTS,
            Arc::new(Mutex::new(I8042::new(reset))),
        );
        watch_reset(reset_watch, end_tx.clone());
        let mmio = Bus::default();

        vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler).map_err(
            |e| VmError::Io {
                what: "install vCPU kick handler",
                source: std::io::Error::from_raw_os_error(e.errno()),
            },
        )?;
        let ctl = Arc::new(Control::default());
        let first_run = Arc::new(Mutex::new(None));
        let mut vcpus = Vec::new();
        for index in 0..cfg.vcpus {
            let mut fd = vm
                .create_vcpu(index as u64)
                .map_err(setup("KVM_CREATE_VCPU"))?;
            vcpu::configure(
                &kvm,
                &fd,
                index,
                cfg.vcpus,
                (index == 0).then_some(info.entry),
            )?;
            let (pio, mmio, ctl, tx) = (pio.clone(), mmio.clone(), ctl.clone(), end_tx.clone());
            let first = first_run.clone();
            let h = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    if index == 0 {
                        *first.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    }
                    let end = vcpu::run(&mut fd, index, &pio, &mmio, &ctl);
                    let _ = tx.send(end);
                })
                .map_err(|source| VmError::Io {
                    what: "spawn vCPU thread",
                    source,
                })?;
            vcpus.push(h);
        }
        Ok(Vm {
            _kvm: kvm,
            _vm: vm,
            _mem: mem,
            ctl,
            vcpus,
            end_rx: Mutex::new(end_rx),
            started,
            first_run,
        })
    }

    /// Blocks until the VM ends, and says why.
    pub fn wait(&self) -> VmEnd {
        let rx = self.end_rx.lock().unwrap_or_else(|e| e.into_inner());
        rx.recv().unwrap_or(VmEnd::Stopped)
    }

    /// Interrupts every vCPU until each has noticed the current request.
    fn kick(&self) {
        let before = self.ctl.acks.load(Ordering::SeqCst);
        for _ in 0..1000 {
            for h in &self.vcpus {
                // SAFETY: pthread_kill on a live thread of ours with a signal
                // whose handler is a no-op.
                unsafe { libc::pthread_kill(h.as_pthread_t(), kick_signal()) };
            }
            if self.ctl.acks.load(Ordering::SeqCst) >= before + self.vcpus.len() as u64 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn pause(&self) -> bool {
        self.ctl.set_paused(true);
        self.kick();
        self.ctl
            .wait_parked(self.vcpus.len(), Duration::from_secs(5))
    }

    pub fn resume(&self) {
        self.ctl.set_paused(false);
    }

    pub fn paused_vcpus(&self) -> usize {
        self.ctl.parked()
    }

    /// Stops every vCPU and joins the threads; memory goes with `self`.
    pub fn stop(&mut self) {
        self.ctl.stop.store(true, Ordering::SeqCst);
        self.ctl.wake_all();
        if self.vcpus.iter().any(|h| !h.is_finished()) {
            self.kick();
        }
        for h in self.vcpus.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch_reset(ev: EventFd, tx: Sender<VmEnd>) {
    std::thread::spawn(move || {
        if ev.read().is_ok() {
            let _ = tx.send(VmEnd::Reset);
        }
    });
}
