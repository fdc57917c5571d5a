//! virtio-rng: fills the guest's buffers from the host's getrandom(2).

use super::{DeviceError, VirtioDevice, TYPE_RNG, VIRTIO_F_VERSION_1};
use crate::vmm::memory::Memory;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

const QUEUE_SIZE: u16 = 64;
/// At most this much entropy per request, whatever lengths the guest claims.
const MAX_PER_REQUEST: u32 = 64 * 1024;

#[derive(Default)]
pub struct Rng;

fn fill(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: getrandom writes at most the given length into our buffer.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &Memory,
    ) -> Result<bool, DeviceError> {
        let mut used = false;
        let mut chunk = [0u8; 4096];
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut written = 0u32;
            for desc in chain {
                if !desc.is_write_only() {
                    return Err(DeviceError::BadRequest("rng: read-only descriptor".into()));
                }
                let mut left = desc.len().min(MAX_PER_REQUEST - written);
                let mut addr = desc.addr().0;
                while left > 0 {
                    let n = left.min(chunk.len() as u32) as usize;
                    fill(&mut chunk[..n]);
                    mem.write_slice(&chunk[..n], GuestAddress(addr))?;
                    addr = addr.wrapping_add(n as u64);
                    left -= n as u32;
                    written += n as u32;
                }
            }
            queue.add_used(mem, head, written)?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;

    #[test]
    fn fills_writable_buffers() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let descs = [RawDescriptor::from(Descriptor::new(
            0x20_0000, 64, WRITE, 0,
        ))];
        vq.build_desc_chain(&descs).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(Rng.process(0, &mut q, &m).unwrap());
        let mut out = [0u8; 64];
        m.read_slice(&mut out, GuestAddress(0x20_0000)).unwrap();
        assert!(out.iter().any(|b| *b != 0));
        assert_eq!(vq.used().idx().load(), 1);
    }

    #[test]
    fn hostile_descriptors_are_errors_not_crashes() {
        let m = mem();
        // Out of guest memory.
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(
            0xffff_f000,
            0x2000,
            WRITE,
            0,
        ))])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(Rng.process(0, &mut q, &m).is_err());
        // Wrong direction.
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(0x20_0000, 16, 0, 0))])
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(Rng.process(0, &mut q, &m).is_err());
        // A huge claimed length is capped, not allocated.
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(
            0x20_0000,
            u32::MAX,
            WRITE,
            0,
        ))])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let _ = Rng.process(0, &mut q, &m);
    }
}
