//! The virtio-mmio transport (virtio 1.x, "version 2" registers): feature
//! negotiation, queue setup, notifications and the interrupt status.

use super::{DeviceError, VirtioDevice};
use crate::vmm::bus::BusDevice;
use crate::vmm::memory::Memory;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

pub const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4d52_5552; // "RURM"

pub const REG_QUEUE_NOTIFY: u64 = 0x50;
const CONFIG_SPACE: u64 = 0x100;

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

pub const INT_USED_BUFFER: u32 = 1;
pub const INT_CONFIG: u32 = 2;

const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// How long used buffers the driver does not wait for may go without an
/// interrupt; any interrupt before then covers them.
const DEFER: Duration = Duration::from_millis(5);

/// What a run of the device asks of the interrupt line.
enum Used {
    None,
    Deferrable,
    Waited,
}

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Memory,
    queues: Vec<Queue>,
    irq: EventFd,
    status: u32,
    features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    /// When the interrupt for deferred used buffers is due.
    deferred: Option<Instant>,
    config_generation: u32,
    /// Set once the device failed on guest input.
    pub failure: Option<String>,
    on_failure: Option<Box<dyn Fn(String) + Send>>,
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: Memory,
        irq: EventFd,
    ) -> Result<Self, virtio_queue::Error> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|s| Queue::new(*s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            queues,
            irq,
            status: 0,
            features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
            deferred: None,
            config_generation: 0,
            failure: None,
            on_failure: None,
        })
    }

    /// Called once when the guest breaks the protocol (the VM then ends).
    pub fn set_on_failure(&mut self, f: Box<dyn Fn(String) + Send>) {
        self.on_failure = Some(f);
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    fn signal(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        self.deferred = None;
        let _ = self.irq.write(1);
    }

    /// When [`MmioTransport::flush_deferred`] is due, if anything waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.deferred
    }

    /// Sends the interrupt for deferred used buffers once it is due.
    pub fn flush_deferred(&mut self) {
        if self.deferred.is_some_and(|d| d <= Instant::now()) {
            self.signal(INT_USED_BUFFER);
        }
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        self.deferred = None;
        self.failure = None;
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
    }

    fn fail(&mut self, e: DeviceError) {
        let msg = format!("virtio device type {}: {e}", self.device.device_type());
        self.status |= STATUS_NEEDS_RESET;
        self.failure = Some(msg.clone());
        self.signal(INT_CONFIG);
        if let Some(f) = &self.on_failure {
            f(msg);
        }
    }

    /// Runs the device on a queue the driver notified (from an MMIO write
    /// or an ioeventfd).
    pub fn notify(&mut self, index: usize) {
        if self.device.notify_serves_all_queues() {
            self.serve_all();
        } else {
            self.serve(index..index + 1);
        }
    }

    /// Serves every queue; whether any buffer was used.
    pub fn serve_all(&mut self) -> bool {
        self.serve(0..self.queues.len())
    }

    fn serve(&mut self, queues: std::ops::Range<usize>) -> bool {
        let mut used = false;
        for i in queues {
            // A queue the device failed on stops the rest.
            if !self.running() {
                break;
            }
            let res = self.run(i);
            used |= matches!(res, Ok(Used::Waited | Used::Deferrable));
            self.finish(res);
        }
        used
    }

    fn running(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_NEEDS_RESET == 0
    }

    /// How long to poll the queues after serving them, if the device asks.
    pub fn poll_window(&self) -> Option<Duration> {
        self.device.poll_window()
    }

    /// Turns the driver's notifications of the ready queues off or on;
    /// turning them on answers whether buffers came while they were off.
    pub fn set_notifications(&mut self, on: bool) -> bool {
        if !self.running() {
            return false;
        }
        let mut pending = false;
        let mut err = None;
        for q in self.queues.iter_mut().filter(|q| q.ready()) {
            let res = if on {
                q.enable_notification(&self.mem)
            } else {
                q.disable_notification(&self.mem).map(|()| false)
            };
            match res {
                Ok(p) => pending |= p,
                Err(e) => err = Some(e),
            }
        }
        if let Some(e) = err {
            self.fail(e.into());
        }
        pending
    }

    fn run(&mut self, index: usize) -> Result<Used, DeviceError> {
        let Some(q) = self.queues.get_mut(index) else {
            return Ok(Used::None);
        };
        if !q.ready() {
            return Ok(Used::None);
        }
        let used = self.device.process(index, q, &self.mem)?;
        let replied = self
            .device
            .after_process(index, &mut self.queues, &self.mem)?;
        if !replied && used && self.interrupts_off(index) {
            return Ok(Used::None);
        }
        Ok(if replied || (used && !self.device.can_defer()) {
            Used::Waited
        } else if used {
            Used::Deferrable
        } else {
            Used::None
        })
    }

    /// Whether the driver turned off the interrupts of queue `index`
    /// (VRING_AVAIL_F_NO_INTERRUPT) while it polls the used ring. Read
    /// after the used index is written: a driver turning them back on
    /// then finds the buffers by itself.
    fn interrupts_off(&self, index: usize) -> bool {
        let Some(q) = self.queues.get(index) else {
            return false;
        };
        fence(Ordering::SeqCst);
        self.mem
            .load::<u16>(GuestAddress(q.avail_ring()), Ordering::Acquire)
            .is_ok_and(|f| u16::from_le(f) & VRING_AVAIL_F_NO_INTERRUPT != 0)
    }

    /// Runs the device's host-side work (its `host_fd` became ready). Also
    /// before the driver runs the device, with no queues: the host fd is
    /// level-triggered, so what made it ready must be taken (a host client
    /// of vsock connecting while the guest boots kept the device thread
    /// spinning for the whole boot).
    pub fn host_event(&mut self) {
        if !self.running() {
            // Without queues nothing of the guest's is touched: nothing to fail.
            let _ = self.device.host_event(&mut [], &self.mem);
            return;
        }
        let res = self.device.host_event(&mut self.queues, &self.mem);
        self.finish(res.map(|used| if used { Used::Waited } else { Used::None }));
    }

    pub fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.host_fd()
    }

    fn finish(&mut self, res: Result<Used, DeviceError>) {
        match res {
            Ok(Used::Waited) => self.signal(INT_USED_BUFFER),
            Ok(Used::Deferrable) => {
                self.deferred.get_or_insert_with(|| Instant::now() + DEFER);
            }
            Ok(Used::None) => {}
            Err(e) => self.fail(e),
        }
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let new = v & !self.status;
        if new & STATUS_FEATURES_OK != 0 {
            // The driver may only accept what the device offers.
            if self.driver_features & !self.device.features() != 0 {
                return self.status = v & !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 {
            let mem = &self.mem;
            if self.queues.iter().any(|q| q.ready() && !q.is_valid(mem)) {
                self.status = v | STATUS_NEEDS_RESET;
                self.failure = Some("driver set up a queue outside guest memory".into());
                return;
            }
        }
        self.status = v;
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR,
            0x010 => {
                let f = self.device.features();
                match self.features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x034 => self.selected().map(|q| q.max_size() as u32).unwrap_or(0),
            0x044 => self.selected().map(|q| q.ready() as u32).unwrap_or(0),
            0x060 => self.interrupt_status,
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let setup_ok = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            0x014 => self.features_sel = v,
            0x020 if self.status & STATUS_FEATURES_OK == 0 => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                1 => {
                    self.driver_features = (self.driver_features & 0xffff_ffff) | ((v as u64) << 32)
                }
                _ => {}
            },
            0x024 => self.driver_features_sel = v,
            0x030 => self.queue_sel = v,
            0x038 if setup_ok => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16)
                }
            }
            0x044 if setup_ok || v == 0 => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1)
                }
            }
            REG_QUEUE_NOTIFY => self.notify(v as usize),
            0x064 => self.interrupt_status &= !v,
            0x070 => self.set_status(v),
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 if setup_ok => {
                let (lo, hi) = if offset & 4 == 0 {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                };
                if let Some(q) = self.selected() {
                    match offset & !4 {
                        0x080 => q.set_desc_table_address(lo, hi),
                        0x090 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => {}
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            return self.device.read_config(offset - CONFIG_SPACE, data);
        }
        if data.len() != 4 {
            return data.fill(0);
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            self.device.write_config(offset - CONFIG_SPACE, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        if let Ok(b) = <[u8; 4]>::try_from(data) {
            self.write_reg(offset, u32::from_le_bytes(b));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::rng::Rng;
    use super::*;
    use vm_memory::{Address, GuestMemoryMmap};

    fn transport() -> MmioTransport {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        MmioTransport::new(
            Box::new(Rng),
            mem,
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        )
        .unwrap()
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    /// Negotiates VERSION_1, sets up the first `queues` queues (16 entries
    /// each) and sets DRIVER_OK, as a driver does.
    pub(crate) fn driver_ok(t: &mut MmioTransport, queues: u32) {
        let ok = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        w(t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(t, 0x24, 1);
        w(t, 0x20, 1);
        w(t, 0x70, ok);
        for q in 0..queues {
            w(t, 0x30, q);
            w(t, 0x38, 16);
            w(t, 0x80, 0x10_0000 + q * 0x4000);
            w(t, 0x90, 0x10_1000 + q * 0x4000);
            w(t, 0xa0, 0x10_2000 + q * 0x4000);
            w(t, 0x44, 1);
        }
        w(t, 0x70, ok | STATUS_DRIVER_OK);
    }

    /// Uses a buffer on every notify; whether it may wait is set from outside.
    struct Fake(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl VirtioDevice for Fake {
        fn device_type(&self) -> u32 {
            super::super::TYPE_FS
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16]
        }
        fn features(&self) -> u64 {
            super::super::VIRTIO_F_VERSION_1
        }
        fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
        fn process(&mut self, _: usize, _: &mut Queue, _: &Memory) -> Result<bool, DeviceError> {
            Ok(true)
        }
        fn can_defer(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    #[test]
    fn interrupts_for_unwaited_buffers_wait_for_the_next_or_the_deadline() {
        let defer = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut t =
            MmioTransport::new(Box::new(Fake(defer.clone())), mem, irq.try_clone().unwrap())
                .unwrap();
        driver_ok(&mut t, 1);

        t.notify(0);
        assert!(irq.read().is_err(), "no interrupt yet");
        assert_eq!(r(&mut t, 0x60), 0);
        let due = t.deadline().expect("a deadline");
        t.notify(0);
        assert_eq!(t.deadline(), Some(due), "the first deferred buffer sets it");
        t.flush_deferred();
        assert!(irq.read().is_err(), "not due yet");
        std::thread::sleep(DEFER + Duration::from_millis(1));
        t.flush_deferred();
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(r(&mut t, 0x60), INT_USED_BUFFER);
        assert_eq!(t.deadline(), None);

        // A buffer the driver waits for interrupts at once, for both.
        w(&mut t, 0x64, INT_USED_BUFFER);
        t.notify(0);
        assert!(t.deadline().is_some());
        defer.store(false, std::sync::atomic::Ordering::Relaxed);
        t.notify(0);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(t.deadline(), None, "that interrupt covers the deferred one");
    }

    #[test]
    fn a_driver_polling_its_queue_gets_no_interrupt_and_a_polling_device_no_notification() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut t =
            MmioTransport::new(Box::new(Fake(never)), mem.clone(), irq.try_clone().unwrap())
                .unwrap();
        driver_ok(&mut t, 1);
        let (avail, used) = (GuestAddress(0x10_1000), GuestAddress(0x10_2000));

        mem.write_obj(VRING_AVAIL_F_NO_INTERRUPT.to_le(), avail)
            .unwrap();
        t.notify(0);
        assert!(irq.read().is_err(), "the driver turned interrupts off");
        assert_eq!(t.deadline(), None);
        mem.write_obj(0u16, avail).unwrap();
        t.notify(0);
        assert_eq!(irq.read().unwrap(), 1);

        assert!(!t.set_notifications(false));
        assert_eq!(
            mem.read_obj::<u16>(used).unwrap(),
            1,
            "VRING_USED_F_NO_NOTIFY"
        );
        // The driver adds a buffer meanwhile, without notifying.
        mem.write_obj(1u16.to_le(), avail.unchecked_add(2)).unwrap();
        assert!(t.set_notifications(true), "the buffer is found");
        assert_eq!(mem.read_obj::<u16>(used).unwrap(), 0);
    }

    /// Two queues; notes which ones it was run on.
    struct Recorder {
        seen: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
        all: bool,
    }
    impl VirtioDevice for Recorder {
        fn device_type(&self) -> u32 {
            super::super::TYPE_FS
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16, 16]
        }
        fn features(&self) -> u64 {
            super::super::VIRTIO_F_VERSION_1
        }
        fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
        fn process(&mut self, i: usize, _: &mut Queue, _: &Memory) -> Result<bool, DeviceError> {
            self.seen.lock().unwrap().push(i);
            Ok(false)
        }
        fn notify_serves_all_queues(&self) -> bool {
            self.all
        }
    }

    #[test]
    fn a_notification_serves_every_queue_only_for_devices_that_ask() {
        for all in [false, true] {
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
            let dev = Recorder {
                seen: seen.clone(),
                all,
            };
            let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            let mut t = MmioTransport::new(Box::new(dev), mem, irq).unwrap();
            driver_ok(&mut t, 2);
            t.notify(1);
            let want: &[usize] = if all { &[0, 1] } else { &[1] };
            assert_eq!(*seen.lock().unwrap(), want, "all = {all}");
        }
    }

    #[test]
    fn identification_registers() {
        let mut t = transport();
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), super::super::TYPE_RNG);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 is feature bit 32");
        let mut odd = [0u8; 2];
        t.read(0, &mut odd);
        assert_eq!(odd, [0, 0], "sub-word register reads return 0");
    }

    #[test]
    fn negotiation_queue_setup_and_driver_ok() {
        let mut t = transport();
        w(&mut t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(r(&mut t, 0x70) & STATUS_FEATURES_OK, 0);
        w(&mut t, 0x30, 0);
        assert_eq!(r(&mut t, 0x34), 64);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, 0x10_0000);
        w(&mut t, 0x90, 0x10_1000);
        w(&mut t, 0xa0, 0x10_2000);
        w(&mut t, 0x44, 1);
        assert_eq!(r(&mut t, 0x44), 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_eq!(r(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
        w(&mut t, 0x70, 0);
        assert_eq!(r(&mut t, 0x70), 0);
        assert_eq!(r(&mut t, 0x44), 0, "reset clears queues");
    }

    #[test]
    fn unoffered_features_are_refused() {
        let mut t = transport();
        w(&mut t, 0x24, 0);
        w(&mut t, 0x20, 1 << 5);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r(&mut t, 0x70) & STATUS_FEATURES_OK, 0);
    }

    #[test]
    fn queue_outside_memory_needs_reset() {
        let mut t = transport();
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, 0xffff_0000);
        w(&mut t, 0x84, 0x10);
        w(&mut t, 0x44, 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_ne!(r(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
        assert!(t.failure.is_some());
        w(&mut t, REG_QUEUE_NOTIFY, 0);
    }
}
