//! AF_VSOCK stream sockets for the agent (std has none).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

pub struct Listener(OwnedFd);

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd =
        check(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh socket we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: cid,
        svm_zero: [0; 4],
    }
}

const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;

/// A stream to port `port` of the host (the monitor).
pub fn connect_host(port: u32) -> io::Result<UnixStream> {
    use std::os::fd::AsRawFd;
    let owned = socket()?;
    let a = addr(libc::VMADDR_CID_HOST, port);
    // SAFETY: a is a valid sockaddr_vm and its size is passed.
    check(unsafe {
        libc::connect(
            owned.as_raw_fd(),
            (&a as *const libc::sockaddr_vm).cast(),
            ADDR_LEN,
        )
    })?;
    Ok(UnixStream::from(owned))
}

impl Listener {
    pub fn bind(port: u32) -> io::Result<Listener> {
        use std::os::fd::AsRawFd;
        let owned = socket()?;
        let fd = owned.as_raw_fd();
        let a = addr(libc::VMADDR_CID_ANY, port);
        // SAFETY: a is a valid sockaddr_vm and its size is passed.
        check(unsafe { libc::bind(fd, (&a as *const libc::sockaddr_vm).cast(), ADDR_LEN) })?;
        // SAFETY: listen on our socket.
        check(unsafe { libc::listen(fd, 16) })?;
        Ok(Listener(owned))
    }

    /// Any stream socket works behind UnixStream's Read/Write/shutdown.
    pub fn accept(&self) -> io::Result<UnixStream> {
        use std::os::fd::AsRawFd;
        // SAFETY: accept4 with null address pointers is allowed.
        let fd = check(unsafe {
            libc::accept4(
                self.0.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        })?;
        // SAFETY: fd is a fresh connected socket we own.
        Ok(unsafe { UnixStream::from_raw_fd(fd) })
    }
}

/// Whether a virtio-vsock device is bound to its driver.
pub fn device_present() -> bool {
    std::fs::read_dir("/sys/bus/virtio/drivers/vmw_vsock_virtio_transport")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        })
        .unwrap_or(false)
}
