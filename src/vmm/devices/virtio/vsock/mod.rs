//! virtio-vsock in user space (there is no vhost-vsock on these hosts):
//! stream sockets between the guest and unix sockets on the host.

pub mod muxer;
pub mod packet;

use super::{read_config_bytes, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::vmm::memory::Memory;
use muxer::Muxer;
use packet::{Header, HEADER_LEN};
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::path::Path;
use virtio_queue::{Queue, QueueOwnedT, QueueT, Reader, Writer};

pub const TYPE_VSOCK: u32 = 19;
const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// The largest packet payload we accept from the guest.
const MAX_TX_PAYLOAD: u32 = 64 * 1024;

pub struct Vsock {
    cid: u64,
    muxer: Muxer,
}

impl Vsock {
    pub fn new(cid: u64, uds: &Path) -> std::io::Result<Vsock> {
        Ok(Vsock {
            cid,
            muxer: Muxer::new(cid, uds)?,
        })
    }

    fn tx(&mut self, queue: &mut Queue, mem: &Memory) -> Result<bool, DeviceError> {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut r: Reader<'_, ()> = chain
                .reader(mem)
                .map_err(|e| DeviceError::BadRequest(format!("vsock tx: {e}")))?;
            let mut hb = [0u8; HEADER_LEN];
            r.read_exact(&mut hb)
                .map_err(|_| DeviceError::BadRequest("vsock tx: short header".into()))?;
            let h = Header::parse(&hb);
            if h.len > MAX_TX_PAYLOAD || h.len as usize > r.available_bytes() {
                return Err(DeviceError::BadRequest(format!(
                    "vsock tx: bad payload length {}",
                    h.len
                )));
            }
            let mut data = vec![0u8; h.len as usize];
            r.read_exact(&mut data)
                .map_err(|_| DeviceError::BadRequest("vsock tx: short payload".into()))?;
            if !self.muxer.from_guest(&h, &data) {
                return Err(DeviceError::BadRequest(
                    "vsock tx: packet with wrong addresses".into(),
                ));
            }
            queue.add_used(mem, head, 0)?;
            used = true;
        }
        Ok(used)
    }

    fn rx(&mut self, queue: &mut Queue, mem: &Memory) -> Result<bool, DeviceError> {
        let mut used = false;
        loop {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                // No buffers: stop reading host streams until the guest posts some.
                self.muxer.pause_reads();
                return Ok(used);
            };
            let head = chain.head_index();
            let mut w: Writer<'_, ()> = chain
                .writer(mem)
                .map_err(|e| DeviceError::BadRequest(format!("vsock rx: {e}")))?;
            let room = w.available_bytes();
            if room < HEADER_LEN {
                return Err(DeviceError::BadRequest(
                    "vsock rx: buffer smaller than a header".into(),
                ));
            }
            let Some((h, data)) = self.muxer.next_for_guest(room - HEADER_LEN) else {
                // Nothing to send: give the buffer back for later.
                queue.go_to_previous_position();
                return Ok(used);
            };
            w.write_all(&h.bytes())
                .map_err(|e| DeviceError::BadRequest(e.to_string()))?;
            w.write_all(&data)
                .map_err(|e| DeviceError::BadRequest(e.to_string()))?;
            queue.add_used(mem, head, (HEADER_LEN + data.len()) as u32)?;
            used = true;
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 3]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data)
    }

    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &Memory,
    ) -> Result<bool, DeviceError> {
        match index {
            TX => self.tx(queue, mem),
            RX => {
                self.muxer.resume_reads();
                self.rx(queue, mem)
            }
            _ => {
                // Event queue: the driver posts buffers; we have no events to send.
                Ok(false)
            }
        }
    }

    fn host_fd(&self) -> Option<RawFd> {
        Some(self.muxer.epoll_fd())
    }

    fn host_event(&mut self, queues: &mut [Queue], mem: &Memory) -> Result<bool, DeviceError> {
        self.muxer.poll_host();
        self.muxer.flush_all();
        match queues.get_mut(RX) {
            Some(q) if q.ready() => self.rx(q, mem),
            // Nowhere to put host data: stop watching for it until the
            // driver posts RX buffers (`process` of RX resumes).
            _ => {
                self.muxer.pause_reads();
                Ok(false)
            }
        }
    }

    /// After TX, control replies (RESPONSE, RST, credit) wait for RX buffers.
    fn after_process(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &Memory,
    ) -> Result<bool, DeviceError> {
        if index == TX && self.muxer.has_control() {
            if let Some(q) = queues.get_mut(RX) {
                return self.rx(q, mem);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::packet::*;
    use super::*;
    use std::os::unix::net::UnixListener;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use crate::vmm::devices::virtio::testing::WRITE;

    fn hdr(op: u16, len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 52,
            len,
            typ: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0,
        }
    }

    fn read_rx(m: &Memory, addr: u64) -> (Header, Vec<u8>) {
        let mut b = [0u8; HEADER_LEN];
        m.read_slice(&mut b, GuestAddress(addr)).unwrap();
        let h = Header::parse(&b);
        let mut d = vec![0u8; h.len as usize];
        m.read_slice(&mut d, GuestAddress(addr + HEADER_LEN as u64))
            .unwrap();
        (h, d)
    }

    /// 64 MiB: room for the queues and buffers the tests place.
    fn guest_memory() -> Memory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x400_0000)]).unwrap()
    }

    /// A device, a host program listening on host port 52, guest memory.
    fn listening_on_52() -> (tempfile::TempDir, UnixListener, Vsock, Memory) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let host = UnixListener::bind(dir.path().join("v.sock_52")).unwrap();
        let dev = Vsock::new(3, &path).unwrap();
        let m = guest_memory();
        (dir, host, dev, m)
    }

    #[test]
    fn guest_connects_sends_and_receives() {
        let (_dir, host, mut dev, m) = listening_on_52();

        // Three RX buffers of 4 KiB, as Linux posts them.
        let rxq = MockSplitQueue::create(&m, GuestAddress(0x10_0000), 16);
        let rx_bufs = [0x100_0000u64, 0x100_1000, 0x100_2000];
        let descs: Vec<RawDescriptor> = rx_bufs
            .iter()
            .map(|a| RawDescriptor::from(Descriptor::new(*a, 4096, WRITE, 0)))
            .collect();
        rxq.build_multiple_desc_chains(&descs).unwrap();
        let txq = MockSplitQueue::create(&m, GuestAddress(0x20_0000), 16);
        m.write_slice(&hdr(OP_REQUEST, 0).bytes(), GuestAddress(0x200_0000))
            .unwrap();
        m.write_slice(&hdr(OP_RW, 5).bytes(), GuestAddress(0x200_1000))
            .unwrap();
        m.write_slice(b"hello", GuestAddress(0x200_1000 + HEADER_LEN as u64))
            .unwrap();
        txq.build_multiple_desc_chains(&[
            RawDescriptor::from(Descriptor::new(0x200_0000, HEADER_LEN as u32, 0, 0)),
            RawDescriptor::from(Descriptor::new(0x200_1000, HEADER_LEN as u32 + 5, 0, 0)),
        ])
        .unwrap();
        let mut queues: Vec<Queue> = vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()];

        assert!(dev.process(TX, &mut queues[TX], &m).unwrap());
        assert!(dev.after_process(TX, &mut queues, &m).unwrap());
        let (resp, _) = read_rx(&m, rx_bufs[0]);
        assert_eq!(
            (resp.op, resp.src_port, resp.dst_port, resp.dst_cid),
            (OP_RESPONSE, 52, 1000, 3)
        );

        let (mut conn, _) = host.accept().unwrap();
        let mut got = [0u8; 5];
        conn.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");

        conn.write_all(b"world").unwrap();
        dev.host_event(&mut queues, &m).unwrap();
        let (data_h, data) = read_rx(&m, rx_bufs[1]);
        assert_eq!(data_h.op, OP_RW);
        assert_eq!(data, b"world");

        // Host closes: the guest is told no more data will come.
        drop(conn);
        dev.host_event(&mut queues, &m).unwrap();
        let (sd, _) = read_rx(&m, rx_bufs[2]);
        assert_eq!(
            (sd.op, sd.flags & SHUTDOWN_SEND),
            (OP_SHUTDOWN, SHUTDOWN_SEND)
        );
    }

    #[test]
    fn host_connect_line_becomes_a_request_and_refused_ports_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let mut dev = Vsock::new(3, &path).unwrap();
        let m = guest_memory();
        let rxq = MockSplitQueue::create(&m, GuestAddress(0x10_0000), 16);
        rxq.build_multiple_desc_chains(&[
            RawDescriptor::from(Descriptor::new(0x100_0000, 4096, WRITE, 0)),
            RawDescriptor::from(Descriptor::new(0x100_1000, 4096, WRITE, 0)),
        ])
        .unwrap();
        // The guest asks for a host port nobody listens on.
        let txq = MockSplitQueue::create(&m, GuestAddress(0x20_0000), 16);
        let mut req = hdr(OP_REQUEST, 0);
        req.dst_port = 9999;
        m.write_slice(&req.bytes(), GuestAddress(0x200_0000))
            .unwrap();
        txq.build_multiple_desc_chains(&[RawDescriptor::from(Descriptor::new(
            0x200_0000,
            HEADER_LEN as u32,
            0,
            0,
        ))])
        .unwrap();
        let mut queues: Vec<Queue> = vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()];

        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        client.write_all(b"CONNECT 1024\n").unwrap();
        dev.host_event(&mut queues, &m).unwrap();
        let (r, _) = read_rx(&m, 0x100_0000);
        assert_eq!((r.op, r.dst_port, r.dst_cid), (OP_REQUEST, 1024, 3));

        dev.process(TX, &mut queues[TX], &m).unwrap();
        dev.after_process(TX, &mut queues, &m).unwrap();
        let (rst, _) = read_rx(&m, 0x100_1000);
        assert_eq!((rst.op, rst.src_port), (OP_RST, 9999));
    }

    fn ready(fd: RawFd) -> bool {
        use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
        let ep = Epoll::new().unwrap();
        ep.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
            .unwrap();
        ep.wait(0, &mut [EpollEvent::default()]).unwrap() > 0
    }

    #[test]
    fn a_host_client_before_the_driver_runs_leaves_the_host_fd_quiet() {
        use super::super::mmio::MmioTransport;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let m = guest_memory();
        let irq = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(Box::new(Vsock::new(3, &path).unwrap()), m, irq).unwrap();
        let fd = t.host_fd().unwrap();
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        client.write_all(b"CONNECT 1024\n").unwrap();
        assert!(ready(fd));
        // The device thread's epoll is level-triggered: still ready would spin it.
        t.host_event();
        assert!(!ready(fd));
    }

    #[test]
    fn host_data_without_rx_queue_waits_unwatched_then_flows() {
        let (_dir, host, mut dev, m) = listening_on_52();
        let rxq = MockSplitQueue::create(&m, GuestAddress(0x10_0000), 16);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x20_0000), 16);
        // A connection, then the credit the request did not carry yet.
        m.write_slice(&hdr(OP_REQUEST, 0).bytes(), GuestAddress(0x200_0000))
            .unwrap();
        m.write_slice(&hdr(OP_CREDIT_UPDATE, 0).bytes(), GuestAddress(0x200_1000))
            .unwrap();
        txq.build_multiple_desc_chains(&[
            RawDescriptor::from(Descriptor::new(0x200_0000, HEADER_LEN as u32, 0, 0)),
            RawDescriptor::from(Descriptor::new(0x200_1000, HEADER_LEN as u32, 0, 0)),
        ])
        .unwrap();
        let mut tx: Queue = txq.create_queue().unwrap();
        dev.process(TX, &mut tx, &m).unwrap();
        let (mut conn, _) = host.accept().unwrap();

        conn.write_all(b"late").unwrap();
        assert!(ready(dev.host_fd().unwrap()));
        dev.host_event(&mut [], &m).unwrap();
        assert!(!ready(dev.host_fd().unwrap()));

        let rx_bufs = [0x100_0000u64, 0x100_1000];
        let descs: Vec<RawDescriptor> = rx_bufs
            .iter()
            .map(|a| RawDescriptor::from(Descriptor::new(*a, 4096, WRITE, 0)))
            .collect();
        rxq.build_multiple_desc_chains(&descs).unwrap();
        let mut rx: Queue = rxq.create_queue().unwrap();
        dev.process(RX, &mut rx, &m).unwrap();
        let (resp, _) = read_rx(&m, rx_bufs[0]);
        assert_eq!(resp.op, OP_RESPONSE);
        let (h, data) = read_rx(&m, rx_bufs[1]);
        assert_eq!((h.op, data.as_slice()), (OP_RW, &b"late"[..]));
    }

    #[test]
    fn hostile_tx_packets_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut dev = Vsock::new(3, &dir.path().join("v.sock")).unwrap();
        let m = guest_memory();
        for (h, desc_len) in [
            (hdr(OP_RW, 1 << 30), HEADER_LEN as u32), // payload longer than the chain
            (
                Header {
                    src_cid: 7,
                    ..hdr(OP_RW, 0)
                },
                HEADER_LEN as u32,
            ), // spoofed source CID
            (hdr(OP_RW, 0), 10),                      // short header
        ] {
            let txq = MockSplitQueue::create(&m, GuestAddress(0x20_0000), 16);
            m.write_slice(&h.bytes(), GuestAddress(0x200_0000)).unwrap();
            txq.build_multiple_desc_chains(&[RawDescriptor::from(Descriptor::new(
                0x200_0000, desc_len, 0, 0,
            ))])
            .unwrap();
            let mut q: Queue = txq.create_queue().unwrap();
            assert!(dev.process(TX, &mut q, &m).is_err(), "{h:?}");
        }
    }
}
