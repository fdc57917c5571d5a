//! virtio devices over the MMIO transport. A device only processes queues;
//! the transport owns registers, feature negotiation and queue setup.

pub mod blk;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod poll;
pub mod rng;
pub mod vsock;

use crate::vmm::memory::Memory;
use thiserror::Error;
use virtio_queue::Queue;

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_FS: u32 = 26;

#[derive(Debug, Error)]
pub enum DeviceError {
    #[error("malformed request from the guest: {0}")]
    BadRequest(String),
    #[error("virtio queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Features offered, VIRTIO_F_VERSION_1 included.
    fn features(&self) -> u64;
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Consumes the available buffers of queue `index`. Returns whether any
    /// buffer was used. An error means the guest broke the protocol: the
    /// transport marks the device as needing a reset.
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &Memory,
    ) -> Result<bool, DeviceError>;
    /// Whether the buffers the last `process` used are all ones the driver
    /// does not wait for (a FUSE FORGET or a background RELEASE): their
    /// interrupt may wait a little, for the next one the driver does wait
    /// for (one interrupt covers every queue of a device).
    fn can_defer(&self) -> bool {
        false
    }
    /// Whether a notification of one queue is the driver's word for all:
    /// one that adds buffers to a queue without notifying it (virtio-fs's
    /// FORGET, our guest kernel) counts on the next notification of any.
    fn notify_serves_all_queues(&self) -> bool {
        false
    }
    /// The longest the device thread keeps polling the queues, their
    /// notifications off, after serving one (see [`poll`]): a driver whose
    /// next buffer comes within it spends no VM exit notifying it.
    fn poll_window(&self) -> Option<std::time::Duration> {
        None
    }
    fn reset(&mut self) {}
    /// A host-side fd whose readiness calls [`VirtioDevice::host_event`].
    /// It is watched level-triggered: `host_event` must leave it not ready
    /// when it can make no progress, or the device thread spins.
    fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// Host-side work (e.g. a socket became readable); may use any queue.
    /// `queues` is empty while the driver is not running the device.
    fn host_event(&mut self, _queues: &mut [Queue], _mem: &Memory) -> Result<bool, DeviceError> {
        Ok(false)
    }
    /// Runs after `process` with every queue at hand (replies on another queue).
    fn after_process(
        &mut self,
        _index: usize,
        _queues: &mut [Queue],
        _mem: &Memory,
    ) -> Result<bool, DeviceError> {
        Ok(false)
    }
}

/// Reads a device's config space as a byte array (little endian fields).
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// What the devices' tests share: 16 MiB of guest memory and the
/// descriptor flags.
#[cfg(test)]
pub mod testing {
    use crate::vmm::memory::Memory;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    pub const NEXT: u16 = 1;
    pub const WRITE: u16 = 2;

    pub fn mem() -> Memory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
    }
}
