//! Host-side terminals: a pty whose master goes to the caller over
//! `--console-socket` (one sendmsg: the pty name plus one fd).

use crate::fdpass;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsoleError {
    #[error("open pty: {0}")]
    Pty(#[source] std::io::Error),
    #[error("console socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
}

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub name: String,
}

pub fn open_pty() -> Result<Pty, ConsoleError> {
    let err = |e: nix::Error| ConsoleError::Pty(e.into());
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(err)?;
    grantpt(&master).map_err(err)?;
    unlockpt(&master).map_err(err)?;
    let name = ptsname_r(&master).map_err(err)?;
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(ConsoleError::Pty)?;
    let master = master
        .as_fd()
        .try_clone_to_owned()
        .map_err(ConsoleError::Pty)?;
    Ok(Pty {
        master,
        slave: slave.into(),
        name,
    })
}

/// Sends the pty master to the caller's console socket.
pub fn send_master(socket: &Path, pty: &Pty) -> Result<(), ConsoleError> {
    let err = |source| ConsoleError::Socket {
        path: socket.display().to_string(),
        source,
    };
    let sock = crate::unixpath::connect(socket).map_err(err)?;
    fdpass::send(&sock, pty.name.as_bytes(), &[pty.master.as_raw_fd()]).map_err(err)?;
    Ok(())
}

pub fn window_size(fd: impl AsFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid struct we pass.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some((ws.ws_row, ws.ws_col))
}

/// The window size, if one was set (a fresh pty has 0 × 0).
pub fn set_size(fd: impl AsFd) -> Option<(u16, u16)> {
    window_size(fd).filter(|&(rows, cols)| rows > 0 && cols > 0)
}

pub fn set_window_size(fd: impl AsFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the valid struct we pass.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes `fd` the controlling terminal of this (session leader) process, so
/// that size changes made on the master arrive here as SIGWINCH.
pub fn set_controlling(fd: impl AsFd) -> std::io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument and touches no memory.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
