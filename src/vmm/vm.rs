//! One microVM: KVM VM with its memory, interrupt controllers, devices and
//! vCPU threads, owned by the container's monitor.

use super::boot::{self, BootError};
use super::bus::Bus;
use super::devices::virtio::blk::Block;
use super::devices::virtio::fs::{Caching, Fs};
use super::devices::virtio::mmio::{MmioTransport, REG_QUEUE_NOTIFY};
use super::devices::virtio::net::Net;
use super::devices::virtio::poll::PollWindow;
use super::devices::virtio::rng::Rng;
use super::devices::virtio::vsock::Vsock;
use super::devices::virtio::VirtioDevice;
use super::devices::{i8042::I8042, serial::SerialDevice};
use super::layout;
use super::memory::{self, Memory, MemoryError};
use super::vcpu::{self, Control, VcpuError, VmEnd};
use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
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
    #[error("disk {path}: {source}")]
    Disk {
        path: String,
        source: std::io::Error,
    },
    #[error("virtio queue setup: {0}")]
    Queue(String),
    #[error("at most 64 vCPUs are supported, {0} requested")]
    TooManyVcpus(usize),
    #[error("no room for another device: {0} can be added to a running VM")]
    NoHotplugSlot(usize),
    #[error("too many devices: the I/O APIC has no interrupt line for device {0}")]
    TooManyDevices(usize),
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
    /// Raw images or block devices, attached as /dev/vda, /dev/vdb, ...
    pub disks: Vec<DiskConfig>,
    pub rng: bool,
    /// Host unix socket of the virtio-vsock device (guest CID 3), if any.
    pub vsock: Option<PathBuf>,
    /// virtio-fs devices: (tag, host directory it serves, its caching).
    pub fs: Vec<(String, PathBuf, Caching)>,
    /// virtio-net devices, in order (the guest's eth0, eth1, ...).
    pub nets: Vec<NetConfig>,
    /// Called once, from a thread of the VM's, when the VM ends by itself
    /// or is stopped.
    pub on_end: Option<OnEnd>,
}

pub type OnEnd = Box<dyn FnOnce(&VmEnd) + Send>;

pub struct NetConfig {
    /// The tap (a duplicate of the monitor's descriptor).
    pub tap: std::fs::File,
    pub mac: [u8; 6],
    pub mtu: u16,
}

/// The guest's vsock context id.
pub const GUEST_CID: u64 = 3;

#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

/// The kernel command line microrun always uses (see docs/guest-image.md).
pub const BASE_CMDLINE: &[&str] = &["console=ttyS0", "reboot=t", "panic=-1", "quiet"];

/// How long a pause waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Signal that kicks a vCPU out of KVM_RUN; its handler does nothing.
fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

extern "C" fn noop_handler(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

pub struct Vm {
    devices: DeviceLoop,
    _kvm: Kvm,
    _vm: Arc<VmFd>,
    _mem: Memory,
    ctl: Arc<Control>,
    vcpus: Vec<JoinHandle<()>>,
    end: Arc<EndSlot>,
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
        let (end_tx, end_rx) = mpsc::channel();

        let mut virtio: Vec<Box<dyn VirtioDevice>> = Vec::new();
        for d in &cfg.disks {
            let blk = Block::open(&d.path, d.read_only).map_err(|source| VmError::Disk {
                path: d.path.display().to_string(),
                source,
            })?;
            virtio.push(Box::new(blk));
        }
        if cfg.rng {
            virtio.push(Box::new(Rng));
        }
        if let Some(path) = &cfg.vsock {
            let v = Vsock::new(GUEST_CID, path).map_err(|source| VmError::Io {
                what: "vsock socket",
                source,
            })?;
            virtio.push(Box::new(v));
        }
        for (tag, dir, caching) in &cfg.fs {
            let fs = Fs::new(tag, dir, *caching).map_err(|source| VmError::Io {
                what: "virtio-fs share",
                source,
            })?;
            virtio.push(Box::new(fs));
        }
        for n in cfg.nets {
            let net = Net::new(Box::new(n.tap), n.mac, n.mtu).map_err(|source| VmError::Io {
                what: "virtio-net",
                source,
            })?;
            virtio.push(Box::new(net));
        }
        let mut mmio = Bus::default();
        let mut words: Vec<String> = BASE_CMDLINE.iter().map(|s| s.to_string()).collect();
        let devices = attach_virtio(&vm, &mem, &mut mmio, virtio, &end_tx, &mut words)?;
        words.extend(cfg.cmdline.iter().cloned());
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let cmdline = boot::build_cmdline(&words)?;
        let info = boot::load(&mem, &cfg.kernel, cfg.initrd.as_deref(), &cmdline)?;
        super::mptable::write(&mem, cfg.vcpus)?;

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
            let h = microrun_protocol::threads::builder()
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
            devices,
            _kvm: kvm,
            _vm: vm,
            _mem: mem,
            ctl,
            vcpus,
            end: EndSlot::watch(end_rx, cfg.on_end),
            started,
            first_run,
        })
    }

    /// Adds a virtio-net device to the running VM in a slot announced at
    /// boot; returns the guest's platform device name for it, which the
    /// guest binds to the virtio-mmio driver to probe it.
    pub fn hotplug_net(&self, n: NetConfig) -> Result<String, VmError> {
        let net = Net::new(Box::new(n.tap), n.mac, n.mtu).map_err(|source| VmError::Io {
            what: "virtio-net",
            source,
        })?;
        self.devices.hotplug(&self._vm, Box::new(net))
    }

    /// Blocks until the VM ends, and says why.
    pub fn wait(&self) -> VmEnd {
        let g = self.end.end.lock().unwrap_or_else(|e| e.into_inner());
        let g = self
            .end
            .cv
            .wait_while(g, |e| e.is_none())
            .unwrap_or_else(|e| e.into_inner());
        g.clone().unwrap_or(VmEnd::Stopped)
    }

    /// The process's memory in KiB, from /proc/self: the VMM's own is the
    /// process's less the guest RAM's.
    pub fn memory_report(&self) -> MemoryReport {
        use vm_memory::GuestMemory;
        let starts: Vec<u64> = self._mem.iter().map(|r| r.as_ptr() as u64).collect();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        MemoryReport {
            rss: field("VmRSS:"),
            anon: field("RssAnon:"),
            guest: guest_rss(&smaps, &starts),
        }
    }

    /// Like [`Vm::wait`], but gives up after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<VmEnd> {
        let g = self.end.end.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .end
            .cv
            .wait_timeout_while(g, timeout, |e| e.is_none())
            .unwrap_or_else(|e| e.into_inner());
        g.clone()
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
        self.ctl.wait_parked(self.vcpus.len(), PAUSE_TIMEOUT)
    }

    pub fn resume(&self) {
        self.ctl.set_paused(false);
    }

    /// Each vCPU's state, for diagnosing a guest that stopped answering:
    /// the vCPUs are parked for a moment (a few ms) and read.
    pub fn vcpu_states(&self) -> Vec<String> {
        if self.ctl.is_paused() {
            return vec!["vCPUs paused".to_string()];
        }
        // A vCPU still parked by an earlier pause would not note its state.
        self.ctl.wait_unparked(Duration::from_secs(1));
        self.ctl.begin_snapshot();
        let parked = self.pause();
        let mut states = self.ctl.end_snapshot();
        self.resume();
        if !parked {
            states.push(format!("not every vCPU parked within {PAUSE_TIMEOUT:?}"));
        }
        states
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

/// How the VM ended, once it has: the first report of any vCPU, device or
/// the reset line wins.
struct EndSlot {
    end: Mutex<Option<VmEnd>>,
    cv: Condvar,
}

impl EndSlot {
    /// Takes the first end from `rx` into the slot, then tells `on_end`.
    fn watch(rx: Receiver<VmEnd>, on_end: Option<OnEnd>) -> Arc<EndSlot> {
        let slot = Arc::new(EndSlot {
            end: Mutex::new(None),
            cv: Condvar::new(),
        });
        let s = slot.clone();
        microrun_protocol::threads::spawn(move || {
            let end = rx.recv().unwrap_or(VmEnd::Stopped);
            *s.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(end.clone());
            s.cv.notify_all();
            if let Some(f) = on_end {
                f(&end);
            }
        });
        slot
    }
}

/// The device threads, one per device, so that a slow one (a file system
/// request) never holds up another (the agent's vsock link). Each waits on
/// its queues' ioeventfds and its host fd.
pub struct DeviceLoop {
    stop: EventFd,
    threads: Mutex<Vec<JoinHandle<()>>>,
    mem: Memory,
    end_tx: Sender<VmEnd>,
    /// Device index and MMIO window of each hotplug slot, in order.
    slots: Vec<(usize, Arc<Mutex<Slot>>)>,
    slots_used: Mutex<usize>,
}

impl DeviceLoop {
    fn hotplug(&self, vm: &VmFd, dev: Box<dyn VirtioDevice>) -> Result<String, VmError> {
        let mut used = self.slots_used.lock().unwrap_or_else(|e| e.into_inner());
        let (index, slot) = self
            .slots
            .get(*used)
            .ok_or(VmError::NoHotplugSlot(self.slots.len()))?;
        let stop = self.stop.try_clone().map_err(|source| VmError::Io {
            what: "eventfd",
            source,
        })?;
        let (t, thread, _) = attach_one(vm, &self.mem, dev, *index, &self.end_tx, stop)?;
        slot.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(t);
        *used += 1;
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thread);
        // Command-line devices are numbered in order from 0.
        Ok(format!("virtio-mmio.{index}"))
    }
}

impl Drop for DeviceLoop {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        let threads = std::mem::take(self.threads.get_mut().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// MMIO windows kept free at boot for devices added later (interfaces
/// Docker ≥ 26 moves into the namespace between create and start).
const HOTPLUG_SLOTS: usize = 4;

/// An MMIO window reserved at boot; empty until a device is added. The
/// guest does not look at it before it is told the device string.
#[derive(Default)]
struct Slot(Option<Arc<Mutex<MmioTransport>>>);

impl super::bus::BusDevice for Slot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match &self.0 {
            Some(t) => t
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(offset, data),
            None => data.fill(0xff),
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(t) = &self.0 {
            t.lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(offset, data)
        }
    }
}

/// What the device thread waits on: a queue's ioeventfd, or a device's host fd.
enum Watch {
    Queue(usize, EventFd),
    Host(RawFd),
}

impl Watch {
    fn fd(&self) -> RawFd {
        match self {
            Watch::Queue(_, ev) => ev.as_raw_fd(),
            Watch::Host(fd) => *fd,
        }
    }
}

/// Places each virtio device on the MMIO bus with its IRQ and ioeventfds and
/// announces it on the kernel command line; reserves the hotplug slots.
fn attach_virtio(
    vm: &VmFd,
    mem: &Memory,
    mmio: &mut Bus,
    devices: Vec<Box<dyn VirtioDevice>>,
    end_tx: &Sender<VmEnd>,
    cmdline: &mut Vec<String>,
) -> Result<DeviceLoop, VmError> {
    let io = |what| move |source| VmError::Io { what, source };
    let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
    let mut threads = Vec::new();
    let cold = devices.len();
    for (i, dev) in devices.into_iter().enumerate() {
        let stop = stop.try_clone().map_err(io("eventfd"))?;
        let (t, thread, spec) = attach_one(vm, mem, dev, i, end_tx, stop)?;
        mmio.insert(window(i).0, layout::MMIO_DEVICE_SIZE, t);
        cmdline.push(format!("virtio_mmio.device={spec}"));
        threads.push(thread);
    }
    // Every interrupt of these devices is a used-buffer edge (irqfd), and a
    // device that needs a reset ends the VM: the guest kernel's handler
    // (kernel-config/patches/virtio-mmio-used-only-interrupts.patch) may
    // skip the status read and acknowledgement, two exits per interrupt.
    cmdline.push("virtio_mmio.used_only=1".into());
    let mut slots = Vec::new();
    for i in (cold..cold + HOTPLUG_SLOTS).filter(|i| window(*i).1 < IRQ_LINES) {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let (base, irq) = window(i);
        mmio.insert(base, layout::MMIO_DEVICE_SIZE, slot.clone());
        cmdline.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
        slots.push((i, slot));
    }
    Ok(DeviceLoop {
        stop,
        threads: Mutex::new(threads),
        mem: mem.clone(),
        end_tx: end_tx.clone(),
        slots,
        slots_used: Mutex::new(0),
    })
}

/// I/O APIC pins (see mptable).
const IRQ_LINES: u32 = 24;

/// MMIO base and IRQ of the i-th virtio device. GSI 8 is skipped: KVM's
/// I/O APIC tracks every interrupt on the RTC's line (for RTC coalescing)
/// and never lets the guest end one with a paravirtual EOI, so a device
/// there paid an EOI exit per interrupt (traced: all 344 EOIs of the file
/// system device on GSI 8 were MSR writes; the one on GSI 7 had 523 of 541
/// paravirtual).
fn window(i: usize) -> (u64, u32) {
    let irq = layout::VIRTIO_IRQ_BASE + i as u32;
    (
        layout::MMIO_START + i as u64 * layout::MMIO_DEVICE_SIZE,
        if irq >= layout::RTC_IRQ { irq + 1 } else { irq },
    )
}

/// A wired device: its transport (for the bus), its thread, and its
/// `virtio_mmio` device string.
type Attached = (Arc<Mutex<MmioTransport>>, JoinHandle<()>, String);

/// Wires one device as the i-th: its irqfd, queue ioeventfds and thread.
fn attach_one(
    vm: &VmFd,
    mem: &Memory,
    dev: Box<dyn VirtioDevice>,
    i: usize,
    end_tx: &Sender<VmEnd>,
    stop: EventFd,
) -> Result<Attached, VmError> {
    let io = |what| move |source| VmError::Io { what, source };
    let setup = |what| move |source| VmError::Setup { what, source };
    let (base, irq) = window(i);
    if irq >= IRQ_LINES {
        return Err(VmError::TooManyDevices(i));
    }
    let mut notifiers: Vec<Watch> = Vec::new();
    let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
    vm.register_irqfd(&irqfd, irq)
        .map_err(setup("KVM_IRQFD (virtio)"))?;
    let mut t =
        MmioTransport::new(dev, mem.clone(), irqfd).map_err(|e| VmError::Queue(e.to_string()))?;
    let tx = Mutex::new(end_tx.clone());
    t.set_on_failure(Box::new(move |msg| {
        let _ = tx.lock().map(|tx| tx.send(VmEnd::Error(msg)));
    }));
    let queues = t.queue_count();
    let host_fd = t.host_fd();
    let t = Arc::new(Mutex::new(t));
    if let Some(fd) = host_fd {
        notifiers.push(Watch::Host(fd));
    }
    for q in 0..queues {
        let ev = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        let addr = IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY);
        vm.register_ioevent(&ev, &addr, q as u32)
            .map_err(setup("KVM_IOEVENTFD"))?;
        notifiers.push(Watch::Queue(q, ev));
    }
    let transport = t.clone();
    let thread = microrun_protocol::threads::builder()
        .name(format!("virtio{i}"))
        .spawn(move || device_loop(&transport, notifiers, stop))
        .map_err(io("spawn device thread"))?;
    Ok((t, thread, format!("4K@{base:#x}:{irq}")))
}

fn device_loop(t: &Mutex<MmioTransport>, notifiers: Vec<Watch>, stop: EventFd) {
    let lock = || t.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(epoll) = Epoll::new() else { return };
    let stop_token = notifiers.len() as u64;
    for (i, w) in notifiers.iter().enumerate() {
        let _ = epoll.ctl(
            ControlOperation::Add,
            w.fd(),
            EpollEvent::new(EventSet::IN, i as u64),
        );
    }
    let _ = epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, stop_token),
    );
    let mut events = vec![EpollEvent::default(); notifiers.len() + 1];
    let mut window = lock().poll_window().map(PollWindow::new);
    let mut last_served = Instant::now();
    loop {
        let mut notified = false;
        // Sends the interrupt of deferred used buffers if it is due, and
        // wakes for it when it will be (one lock for both).
        let deadline = {
            let mut t = lock();
            t.flush_deferred();
            t.deadline()
        };
        let timeout = deadline.map_or(-1, |d| {
            let ms = d
                .saturating_duration_since(Instant::now())
                .as_micros()
                .div_ceil(1000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        });
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == stop_token {
                return;
            }
            match notifiers.get(token as usize) {
                Some(Watch::Queue(q, fd)) => {
                    let _ = fd.read();
                    if let Some(w) = window.as_mut().filter(|_| !notified) {
                        w.notified_after(last_served.elapsed());
                    }
                    lock().notify(*q);
                    notified = true;
                }
                Some(Watch::Host(_)) => lock().host_event(),
                None => {}
            }
        }
        if notified {
            // Level-triggered: a look without waiting takes nothing away.
            let mut stopped = || {
                epoll
                    .wait(0, &mut events)
                    .is_ok_and(|n| events[..n].iter().any(|e| e.data() == stop_token))
            };
            last_served = match window.map(|w| w.get()).filter(|w| !w.is_zero()) {
                Some(w) => match poll(t, w, &mut stopped) {
                    Some(at) => at,
                    None => return,
                },
                None => Instant::now(),
            };
        }
    }
}

/// How many rounds of polling go between two looks at the stop event.
const POLL_STOP_EVERY: u32 = 256;

/// Serves the queues, their notifications off, until none got a buffer
/// for `window`; the deferred interrupt still goes when due. Returns when
/// the last buffer was served, or None once `stopped` says so: a guest
/// that keeps the queues busy must not keep the VM from ending.
fn poll(
    t: &Mutex<MmioTransport>,
    window: Duration,
    stopped: &mut dyn FnMut() -> bool,
) -> Option<Instant> {
    let lock = || t.lock().unwrap_or_else(|e| e.into_inner());
    lock().set_notifications(false);
    let mut idle_since = Instant::now();
    let mut round = 0u32;
    loop {
        round = round.wrapping_add(1);
        if round.is_multiple_of(POLL_STOP_EVERY) && stopped() {
            return None;
        }
        let served = {
            let mut t = lock();
            t.flush_deferred();
            t.serve_all()
        };
        if served {
            idle_since = Instant::now();
        } else if idle_since.elapsed() >= window {
            // A buffer added before the driver saw notifications back on
            // would get none: keep polling for it.
            if !lock().set_notifications(true) {
                return Some(idle_since);
            }
            lock().set_notifications(false);
            idle_since = Instant::now();
        }
        std::hint::spin_loop();
    }
}

fn watch_reset(ev: EventFd, tx: Sender<VmEnd>) {
    microrun_protocol::threads::spawn(move || {
        if ev.read().is_ok() {
            let _ = tx.send(VmEnd::Reset);
        }
    });
}

/// Memory of the VMM process, KiB.
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    pub rss: u64,
    /// Anonymous (private) memory, guest RAM included.
    pub anon: u64,
    pub guest: u64,
}

impl MemoryReport {
    /// The VMM's own resident memory: its code (shared by every monitor
    /// through the page cache) and its private memory.
    pub fn vmm(&self) -> u64 {
        self.rss.saturating_sub(self.guest)
    }

    /// What each further VM costs beyond its guest RAM.
    pub fn vmm_private(&self) -> u64 {
        self.anon.saturating_sub(self.guest)
    }
}

/// Resident KiB of the mappings of /proc/self/smaps that start at `starts`.
fn guest_rss(smaps: &str, starts: &[u64]) -> u64 {
    let mut guest = 0;
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some(range) = line
            .split_whitespace()
            .next()
            .filter(|r| r.contains('-') && !line.ends_with(':'))
        {
            if let Some(start) = range
                .split('-')
                .next()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                in_guest = starts.contains(&start);
                continue;
            }
        }
        if in_guest {
            if let Some(v) = line.strip_prefix("Rss:") {
                guest += v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    guest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::devices::virtio::mmio::tests::driver_ok;
    use crate::vmm::devices::virtio::DeviceError;
    use virtio_queue::Queue;

    /// A guest that never lets the queue go idle: every run uses a buffer.
    struct Busy;
    impl VirtioDevice for Busy {
        fn device_type(&self) -> u32 {
            crate::vmm::devices::virtio::TYPE_FS
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16]
        }
        fn features(&self) -> u64 {
            crate::vmm::devices::virtio::VIRTIO_F_VERSION_1
        }
        fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
        fn process(&mut self, _: usize, _: &mut Queue, _: &Memory) -> Result<bool, DeviceError> {
            Ok(true)
        }
        fn poll_window(&self) -> Option<Duration> {
            Some(Duration::from_secs(1))
        }
    }

    #[test]
    fn a_device_thread_polling_a_busy_queue_still_stops() {
        let mem =
            vm_memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 0x100_0000)])
                .unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(Box::new(Busy), mem.clone(), irq).unwrap();
        driver_ok(&mut t, 1);
        let t = Arc::new(Mutex::new(t));
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let watches = vec![Watch::Queue(0, kick.try_clone().unwrap())];
        let (done_tx, done) = mpsc::channel();
        let (t2, stop2) = (t.clone(), stop.try_clone().unwrap());
        std::thread::spawn(move || {
            device_loop(&t2, watches, stop2);
            let _ = done_tx.send(());
        });
        kick.write(1).unwrap();
        // The thread is polling (the queue's notifications are off) ...
        let used_flags = vm_memory::GuestAddress(0x10_2000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if vm_memory::Bytes::read_obj::<u16>(&mem, used_flags).unwrap() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // ... and never idle, yet it ends when told to.
        stop.write(1).unwrap();
        done.recv_timeout(Duration::from_secs(10))
            .expect("the device thread stopped");
    }

    #[test]
    fn virtio_devices_get_distinct_lines_and_never_the_rtcs() {
        let irqs: Vec<u32> = (0..18).map(|i| window(i).1).collect();
        assert_eq!(irqs[..4], [5, 6, 7, 9]);
        assert!(!irqs.contains(&layout::RTC_IRQ) && !irqs.contains(&layout::SERIAL_IRQ));
        assert_eq!(*irqs.last().unwrap(), IRQ_LINES - 1, "18 devices fit");
        assert!(window(18).1 >= IRQ_LINES);
        let bases: std::collections::HashSet<u64> = (0..18).map(|i| window(i).0).collect();
        assert_eq!(bases.len(), 18);
    }

    #[test]
    fn guest_rss_sums_only_the_guest_mappings() {
        let smaps = "\
55d0a0000000-55d0a0100000 r-xp 00000000 08:01 12 /usr/bin/microrun
Rss:                1024 kB
7f0000000000-7f0010000000 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:               34816 kB
VmFlags: rd wr mr mw me ac
7f0010000000-7f0010021000 rw-p 00000000 00:00 0
Rss:                   4 kB
";
        assert_eq!(guest_rss(smaps, &[0x7f00_0000_0000]), 34816);
        assert_eq!(guest_rss(smaps, &[]), 0);
        let r = MemoryReport {
            rss: 40000,
            anon: 35200,
            guest: 34816,
        };
        assert_eq!((r.vmm(), r.vmm_private()), (5184, 384));
    }
}
