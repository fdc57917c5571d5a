//! virtio-blk over a raw image file or block device: read, write, flush,
//! get-id; read-only images refuse writes on the host side.

use super::{read_config_bytes, DeviceError, VirtioDevice, TYPE_BLOCK, VIRTIO_F_VERSION_1};
use crate::vmm::memory::Memory;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

const QUEUE_SIZE: u16 = 256;
const SECTOR: u64 = 512;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const ID: &[u8; 20] = b"microrun-disk\0\0\0\0\0\0\0";
/// Bounce buffer size: the largest host I/O one step does.
const CHUNK: usize = 64 * 1024;

pub struct Block {
    file: File,
    read_only: bool,
    capacity: u64,
}

impl Block {
    pub fn open(path: &Path, read_only: bool) -> std::io::Result<Block> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let len = file.metadata()?.len();
        let len = if len == 0 {
            // A block device reports 0: ask for its size by seeking.
            use std::io::Seek;
            (&file).seek(std::io::SeekFrom::End(0))?
        } else {
            len
        };
        Ok(Block {
            file,
            read_only,
            capacity: len / SECTOR,
        })
    }

    fn config(&self) -> [u8; 8] {
        self.capacity.to_le_bytes()
    }

    /// Performs one request; the status byte tells the guest how it went.
    fn request(
        &mut self,
        typ: u32,
        sector: u64,
        data: &[(u64, u32)],
        mem: &Memory,
    ) -> Result<(u8, u32), DeviceError> {
        let total: u64 = data.iter().map(|d| d.1 as u64).sum();
        match typ {
            T_IN | T_OUT => {
                let Some(start) = sector.checked_mul(SECTOR) else {
                    return Ok((S_IOERR, 0));
                };
                if start
                    .checked_add(total)
                    .is_none_or(|end| end > self.capacity * SECTOR)
                {
                    return Ok((S_IOERR, 0));
                }
                if typ == T_OUT && self.read_only {
                    return Ok((S_IOERR, 0));
                }
                let mut buf = vec![0u8; CHUNK.min(total as usize)];
                let mut off = start;
                let mut written_to_guest = 0u32;
                for &(addr, len) in data {
                    let mut done = 0u64;
                    while done < len as u64 {
                        let n = (len as u64 - done).min(buf.len() as u64) as usize;
                        let ga = GuestAddress(addr.wrapping_add(done));
                        let res = if typ == T_IN {
                            self.file
                                .read_exact_at(&mut buf[..n], off)
                                .map(|_| mem.write_slice(&buf[..n], ga))
                        } else {
                            mem.read_slice(&mut buf[..n], ga)?;
                            self.file.write_all_at(&buf[..n], off).map(Ok)
                        };
                        match res {
                            Ok(r) => r?,
                            Err(_) => return Ok((S_IOERR, written_to_guest)),
                        }
                        if typ == T_IN {
                            written_to_guest += n as u32;
                        }
                        done += n as u64;
                        off += n as u64;
                    }
                }
                Ok((S_OK, written_to_guest))
            }
            T_FLUSH => Ok((
                if self.file.sync_data().is_ok() {
                    S_OK
                } else {
                    S_IOERR
                },
                0,
            )),
            T_GET_ID => {
                let mut left: &[u8] = ID;
                let mut n = 0;
                for &(addr, len) in data {
                    let k = (len as usize).min(left.len());
                    mem.write_slice(&left[..k], GuestAddress(addr))?;
                    left = &left[k..];
                    n += k as u32;
                }
                Ok((S_OK, n))
            }
            _ => Ok((S_UNSUPP, 0)),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | F_FLUSH | if self.read_only { F_RO } else { 0 }
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data)
    }

    fn process(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &Memory,
    ) -> Result<bool, DeviceError> {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let descs: Vec<_> = chain.collect();
            let (Some(hdr), Some(status)) = (descs.first(), descs.last()) else {
                return Err(DeviceError::BadRequest("blk: empty chain".into()));
            };
            if descs.len() < 2
                || hdr.is_write_only()
                || hdr.len() < 16
                || !status.is_write_only()
                || status.len() < 1
            {
                return Err(DeviceError::BadRequest(
                    "blk: malformed request chain".into(),
                ));
            }
            let typ: u32 = mem.read_obj(hdr.addr())?;
            let sector: u64 = mem.read_obj(GuestAddress(hdr.addr().0.wrapping_add(8)))?;
            let middle = &descs[1..descs.len() - 1];
            let want_write = matches!(typ, T_IN | T_GET_ID);
            if middle.iter().any(|d| d.is_write_only() != want_write)
                && matches!(typ, T_IN | T_OUT | T_GET_ID)
            {
                return Err(DeviceError::BadRequest(
                    "blk: data descriptor has the wrong direction".into(),
                ));
            }
            let data: Vec<(u64, u32)> = middle.iter().map(|d| (d.addr().0, d.len())).collect();
            let (st, n) = self.request(typ, sector, &data, mem)?;
            mem.write_obj(st, status.addr())?;
            queue.add_used(mem, head, n + 1)?;
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

    const HDR: u64 = 0x20_0000;
    const DATA: u64 = 0x21_0000;
    const STATUS: u64 = 0x22_0000;

    fn disk(read_only: bool) -> (tempfile::NamedTempFile, Block) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut img = vec![0u8; 8 * 512];
        img[512..517].copy_from_slice(b"hello");
        std::fs::write(f.path(), &img).unwrap();
        let b = Block::open(f.path(), read_only).unwrap();
        (f, b)
    }

    fn run(
        b: &mut Block,
        m: &Memory,
        typ: u32,
        sector: u64,
        data_flags: u16,
        len: u32,
    ) -> Result<u8, DeviceError> {
        m.write_obj(typ, GuestAddress(HDR)).unwrap();
        m.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        let vq = MockSplitQueue::new(m, 16);
        let descs = [
            RawDescriptor::from(Descriptor::new(HDR, 16, 0, 0)),
            RawDescriptor::from(Descriptor::new(DATA, len, data_flags, 0)),
            RawDescriptor::from(Descriptor::new(STATUS, 1, WRITE, 0)),
        ];
        vq.build_desc_chain(&descs).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        b.process(0, &mut q, m)?;
        Ok(m.read_obj(GuestAddress(STATUS)).unwrap())
    }

    #[test]
    fn reads_and_writes_sectors() {
        let m = mem();
        let (f, mut b) = disk(false);
        assert_eq!(b.config(), 8u64.to_le_bytes());
        assert_eq!(run(&mut b, &m, T_IN, 1, WRITE, 512).unwrap(), S_OK);
        let got: [u8; 5] = m.read_obj(GuestAddress(DATA)).unwrap();
        assert_eq!(&got, b"hello");
        m.write_slice(b"guest", GuestAddress(DATA)).unwrap();
        assert_eq!(run(&mut b, &m, T_OUT, 2, 0, 512).unwrap(), S_OK);
        assert_eq!(&std::fs::read(f.path()).unwrap()[1024..1029], b"guest");
        assert_eq!(run(&mut b, &m, T_FLUSH, 0, WRITE, 0).unwrap(), S_OK);
        assert_eq!(run(&mut b, &m, 99, 0, WRITE, 16).unwrap(), S_UNSUPP);
    }

    #[test]
    fn read_only_and_out_of_range_are_io_errors() {
        let m = mem();
        let (f, mut b) = disk(true);
        assert_ne!(b.features() & F_RO, 0);
        assert_eq!(run(&mut b, &m, T_OUT, 0, 0, 512).unwrap(), S_IOERR);
        assert!(
            std::fs::read(f.path()).unwrap()[..512]
                .iter()
                .all(|x| *x == 0),
            "host file untouched"
        );
        assert_eq!(run(&mut b, &m, T_IN, 8, WRITE, 512).unwrap(), S_IOERR);
        assert_eq!(
            run(&mut b, &m, T_IN, u64::MAX, WRITE, 512).unwrap(),
            S_IOERR
        );
        assert_eq!(run(&mut b, &m, T_IN, 7, WRITE, 1024).unwrap(), S_IOERR);
    }

    #[test]
    fn hostile_chains_are_errors() {
        let m = mem();
        let (_f, mut b) = disk(false);
        // Data buffer outside guest memory.
        assert!(run(&mut b, &m, T_IN, 0, WRITE, 0).is_ok());
        m.write_obj(T_IN, GuestAddress(HDR)).unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[
            RawDescriptor::from(Descriptor::new(HDR, 16, 0, 0)),
            RawDescriptor::from(Descriptor::new(0xffff_0000, 512, WRITE, 0)),
            RawDescriptor::from(Descriptor::new(STATUS, 1, WRITE, 0)),
        ])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(b.process(0, &mut q, &m).is_err());
        // Wrong direction for a read.
        assert!(run(&mut b, &m, T_IN, 0, 0, 512).is_err());
        // A header-only chain.
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(HDR, 16, 0, 0))])
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(b.process(0, &mut q, &m).is_err());
    }
}
