//! Just enough of the i8042 keyboard controller for the guest to reset the
//! machine (`reboot=k`): command 0xFE on port 0x64 ends the VM.

use crate::vmm::bus::BusDevice;
use vmm_sys_util::eventfd::EventFd;

pub const BASE: u64 = 0x60;
pub const PORTS: u64 = 5;
const CMD_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

pub struct I8042 {
    reset: EventFd,
}

impl I8042 {
    pub fn new(reset: EventFd) -> Self {
        I8042 { reset }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: no data, input buffer empty, so the kernel never waits.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == CMD_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            let _ = self.reset.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals_the_vm() {
        let ev = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut k = I8042::new(ev.try_clone().unwrap());
        k.write(0, &[0xfe]);
        assert!(ev.read().is_err(), "data port write is not a reset");
        k.write(4, &[0xaa]);
        assert!(ev.read().is_err());
        k.write(4, &[0xfe]);
        assert_eq!(ev.read().unwrap(), 1);
        let mut st = [0xffu8];
        k.read(4, &mut st);
        assert_eq!(st[0], 0);
    }
}
