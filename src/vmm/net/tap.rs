//! A tap device owned by the monitor: not persistent, so it disappears
//! with the monitor's last descriptor however the monitor ends.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TapError {
    #[error("tap {name}: {what}: {source}")]
    Io {
        name: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("tap name {0:?} is too long")]
    Name(String),
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

pub struct Tap {
    file: File,
    pub name: String,
    pub index: u32,
}

/// An `ifreq` with the name set; the union part is filled by the caller.
fn ifreq(name: &str) -> Result<libc::ifreq, TapError> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(TapError::Name(name.into()));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

impl Tap {
    /// Creates tap `name` with `mtu`, up, non-blocking.
    pub fn create(name: &str, mtu: u32) -> Result<Tap, TapError> {
        let err = |what| {
            let name = name.to_string();
            move |source| TapError::Io { name, what, source }
        };
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(err("open /dev/net/tun"))?;
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI;
        // SAFETY: TUNSETIFF reads and writes the ifreq we own.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(err("TUNSETIFF")(std::io::Error::last_os_error()));
        }
        let sock = control_socket().map_err(err("socket"))?;
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        // SAFETY: SIOCSIFMTU reads the ifreq we own.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &req) } < 0 {
            return Err(err("set MTU")(std::io::Error::last_os_error()));
        }
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(err("set up")(std::io::Error::last_os_error()));
        }
        let cname = std::ffi::CString::new(name).map_err(|_| TapError::Name(name.into()))?;
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(err("index")(std::io::Error::last_os_error()));
        }
        Ok(Tap {
            file,
            name: name.into(),
            index,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

use std::os::unix::fs::OpenOptionsExt;

fn control_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_an_ifreq() {
        assert!(ifreq("eth0").is_ok());
        assert!(matches!(ifreq(&"x".repeat(16)), Err(TapError::Name(_))));
    }
}
