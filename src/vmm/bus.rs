//! Port-I/O and MMIO buses: address ranges mapped to device models.

use std::sync::{Arc, Mutex};

pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Default, Clone)]
pub struct Bus {
    ranges: Vec<(u64, u64, SharedDevice)>,
}

impl Bus {
    pub fn insert(&mut self, base: u64, len: u64, dev: SharedDevice) {
        self.ranges.push((base, len, dev));
        self.ranges.sort_by_key(|r| r.0);
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let i = self
            .ranges
            .partition_point(|r| r.0 <= addr)
            .checked_sub(1)?;
        let (base, len, dev) = &self.ranges[i];
        (addr - base < *len).then_some((addr - base, dev))
    }

    /// Reads from the device at `addr`; unmapped addresses read as all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((off, dev)) => dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(off, data),
            None => data.fill(0xff),
        }
    }

    /// Writes to the device at `addr`; writes to unmapped addresses are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((off, dev)) = self.find(addr) {
            dev.lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(off, data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn routes_by_range_and_fills_holes() {
        let mut bus = Bus::default();
        bus.insert(0x10, 4, Arc::new(Mutex::new(Reg(1))));
        bus.insert(0x20, 2, Arc::new(Mutex::new(Reg(7))));
        let mut b = [0u8; 1];
        bus.read(0x12, &mut b);
        assert_eq!(b[0], 3);
        bus.write(0x20, &[9]);
        bus.read(0x21, &mut b);
        assert_eq!(b[0], 10);
        bus.read(0x14, &mut b);
        assert_eq!(b[0], 0xff);
        bus.read(0x0, &mut b);
        assert_eq!(b[0], 0xff);
    }
}
