//! virtio-net over a tap: queue 0 receives (tap → guest), queue 1
//! transmits (guest → tap). No offloads: every frame is whole, with a
//! zeroed virtio-net header.
//!
//! The tap is watched through an epoll of the device's own, so that the
//! device can stop watching it while the guest has no receive buffers
//! (a level-triggered tap would otherwise wake the device thread forever).

use super::{read_config_bytes, DeviceError, VirtioDevice, TYPE_NET, VIRTIO_F_VERSION_1};
use crate::vmm::memory::Memory;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;
/// virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers.
const HDR_LEN: usize = 12;
/// The largest frame without offloads: 64 KiB covers any MTU a tap takes.
const MAX_FRAME: usize = 65_550;

/// The tap side, as the device needs it (a trait so tests can use a pipe).
pub trait Backend: Read + Write + Send {
    fn fd(&self) -> RawFd;
}

impl Backend for std::fs::File {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

pub struct Net {
    tap: Box<dyn Backend>,
    epoll: Epoll,
    armed: bool,
    config: [u8; 12],
    /// A frame read from the tap that found no guest buffer yet.
    pending: Option<Vec<u8>>,
    frame: Vec<u8>,
}

impl Net {
    pub fn new(tap: Box<dyn Backend>, mac: [u8; 6], mtu: u16) -> std::io::Result<Net> {
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&mac);
        // status (link up) is only meaningful with VIRTIO_NET_F_STATUS.
        config[10..12].copy_from_slice(&mtu.to_le_bytes());
        Ok(Net {
            tap,
            epoll: Epoll::new()?,
            armed: false,
            config,
            pending: None,
            frame: vec![0u8; MAX_FRAME],
        })
    }

    fn arm(&mut self, on: bool) {
        if self.armed == on {
            return;
        }
        let op = if on {
            ControlOperation::Add
        } else {
            ControlOperation::Delete
        };
        let ok = self
            .epoll
            .ctl(op, self.tap.fd(), EpollEvent::new(EventSet::IN, 0))
            .is_ok();
        if ok {
            self.armed = on;
        }
    }

    /// Moves frames from the tap into the guest's receive buffers until
    /// either runs out. Returns whether any buffer was used.
    fn receive(&mut self, rx: &mut Queue, mem: &Memory) -> Result<bool, DeviceError> {
        let mut used = false;
        loop {
            let frame = match self.pending.take() {
                Some(f) => f,
                None => match self.tap.read(&mut self.frame) {
                    Ok(0) => break,
                    Ok(n) => self.frame[..n].to_vec(),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                },
            };
            let Some(chain) = rx.pop_descriptor_chain(mem) else {
                self.pending = Some(frame);
                self.arm(false);
                return Ok(used);
            };
            let head = chain.head_index();
            let mut hdr = [0u8; HDR_LEN];
            hdr[10] = 1; // num_buffers
            let mut data = hdr.iter().chain(frame.iter()).copied();
            let mut written = 0u32;
            let mut left = HDR_LEN + frame.len();
            for desc in chain {
                if !desc.is_write_only() {
                    return Err(DeviceError::BadRequest(
                        "net: read-only receive buffer".into(),
                    ));
                }
                let n = (desc.len() as usize).min(left);
                let chunk: Vec<u8> = data.by_ref().take(n).collect();
                mem.write_slice(&chunk, GuestAddress(desc.addr().0))?;
                written += n as u32;
                left -= n;
                if left == 0 {
                    break;
                }
            }
            // A frame larger than the buffers is cut, as a NIC would drop it.
            rx.add_used(mem, head, written)?;
            used = true;
        }
        self.arm(true);
        Ok(used)
    }

    fn transmit(&mut self, tx: &mut Queue, mem: &Memory) -> Result<bool, DeviceError> {
        let mut used = false;
        while let Some(chain) = tx.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut len = 0usize;
            for desc in chain {
                if desc.is_write_only() {
                    return Err(DeviceError::BadRequest(
                        "net: writable transmit buffer".into(),
                    ));
                }
                let n = desc.len() as usize;
                if len + n > self.frame.len() {
                    return Err(DeviceError::BadRequest(format!(
                        "net: frame over {MAX_FRAME} bytes"
                    )));
                }
                mem.read_slice(&mut self.frame[len..len + n], GuestAddress(desc.addr().0))?;
                len += n;
            }
            if len > HDR_LEN {
                // A full tap drops the frame, like a busy link.
                let _ = self.tap.write(&self.frame[HDR_LEN..len]);
            }
            tx.add_used(mem, head, 0)?;
            used = true;
        }
        Ok(used)
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | F_MAC | F_MTU
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &Memory,
    ) -> Result<bool, DeviceError> {
        match index {
            // New receive buffers: deliver what waits, watch the tap again.
            RX => self.receive(queue, mem),
            TX => self.transmit(queue, mem),
            _ => Ok(false),
        }
    }

    fn host_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn host_event(&mut self, queues: &mut [Queue], mem: &Memory) -> Result<bool, DeviceError> {
        let mut events = [EpollEvent::default(); 1];
        let _ = self.epoll.wait(0, &mut events);
        match queues.get_mut(RX) {
            Some(rx) => self.receive(rx, mem),
            None => Ok(false),
        }
    }

    fn reset(&mut self) {
        self.arm(false);
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;

    /// A datagram socket pair keeps frame boundaries, like a tap.
    struct Dgram(UnixDatagram);
    impl Read for Dgram {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.0.recv(b)
        }
    }
    impl Write for Dgram {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.send(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Backend for Dgram {
        fn fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    fn setup() -> (Net, UnixDatagram, Memory) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let net = Net::new(Box::new(Dgram(a)), [2, 0, 0, 0, 0, 1], 1500).unwrap();
        let m = mem();
        (net, b, m)
    }

    #[test]
    fn config_has_mac_and_mtu() {
        let (net, _peer, _m) = setup();
        let mut mac = [0u8; 6];
        net.read_config(0, &mut mac);
        assert_eq!(mac, [2, 0, 0, 0, 0, 1]);
        let mut mtu = [0u8; 2];
        net.read_config(10, &mut mtu);
        assert_eq!(u16::from_le_bytes(mtu), 1500);
    }

    #[test]
    fn frames_go_both_ways_with_a_header() {
        let (mut net, peer, m) = setup();
        // Transmit: header + frame in two descriptors; the tap gets the frame.
        m.write_slice(&[0u8; HDR_LEN], GuestAddress(0x1000))
            .unwrap();
        m.write_slice(b"outgoing-frame", GuestAddress(0x2000))
            .unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[
            RawDescriptor::from(Descriptor::new(0x1000, HDR_LEN as u32, NEXT, 1)),
            RawDescriptor::from(Descriptor::new(0x2000, 14, 0, 0)),
        ])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(net.process(TX, &mut q, &m).unwrap());
        let mut buf = [0u8; 64];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"outgoing-frame");

        // Receive: a frame waits until the guest gives a buffer.
        peer.send(b"incoming").unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        let mut qs: Vec<Queue> = vec![vq.create_queue().unwrap()];
        net.arm(true);
        assert!(!net.host_event(&mut qs, &m).unwrap());
        assert!(net.pending.is_some() && !net.armed);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(0x3000, 2048, WRITE, 0))])
            .unwrap();
        let mut rxq: Queue = vq.create_queue().unwrap();
        assert!(net.process(RX, &mut rxq, &m).unwrap());
        assert!(net.armed);
        let mut got = [0u8; HDR_LEN + 8];
        m.read_slice(&mut got, GuestAddress(0x3000)).unwrap();
        assert_eq!(&got[HDR_LEN..], b"incoming");
        assert_eq!(vq.used().idx().load(), 1);
    }

    #[test]
    fn hostile_chains_are_errors() {
        let (mut net, _peer, m) = setup();
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(0x1000, 64, WRITE, 0))])
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(net.process(TX, &mut q, &m).is_err());
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(
            0xffff_f000,
            0x2000,
            0,
            0,
        ))])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(net.process(TX, &mut q, &m).is_err());
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(0x1000, u32::MAX, 0, 0))])
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(net.process(TX, &mut q, &m).is_err());
    }
}
