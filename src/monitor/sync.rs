//! The handshake channel between a verb and the helper process it forks
//! (create ↔ monitor, exec ↔ stand-in): JSON lines over a socketpair that
//! the child finds at fd 3.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use thiserror::Error;

/// The fd number at which a helper process finds its end of the channel.
pub const SYNC_FD: RawFd = 3;
const MAX_LINE: u64 = 4 << 20;

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("sync channel: {0}")]
    Io(#[from] io::Error),
    #[error("sync channel: the other side exited before answering")]
    Closed,
    #[error("sync channel: malformed message: {0}")]
    Malformed(String),
}

/// Messages of the create ↔ monitor handshake.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Handshake {
    /// The helper is set up in its namespaces: run the create-time hooks.
    Ready,
    /// Hooks done: go on.
    Go,
    /// The container (or exec'd process) is in place.
    Done {
        process: u32,
        /// The pid of the process that holds the container's VM (create).
        #[serde(default)]
        vmm: i32,
    },
    Error {
        msg: String,
    },
}

pub struct SyncChannel {
    reader: BufReader<UnixStream>,
}

impl SyncChannel {
    pub fn new(stream: UnixStream) -> Self {
        SyncChannel {
            reader: BufReader::new(stream),
        }
    }

    /// Takes over fd 3 in a helper process. Returns None when fd 3 is not a socket.
    pub fn from_inherited() -> Option<Self> {
        let st = nix::sys::stat::fstat(SYNC_FD).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return None;
        }
        // SAFETY: fd 3 was placed by our parent for us alone and is a socket;
        // we take sole ownership of it here, once.
        let fd = unsafe { OwnedFd::from_raw_fd(SYNC_FD) };
        let stream = UnixStream::from(fd);
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        Some(Self::new(stream))
    }

    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), SyncError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| SyncError::Malformed(e.to_string()))?;
        line.push(b'\n');
        self.reader.get_mut().write_all(&line)?;
        Ok(())
    }

    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, SyncError> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(SyncError::Closed);
        }
        serde_json::from_slice(&line).map_err(|e| SyncError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_and_eof_is_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (SyncChannel::new(a), SyncChannel::new(b));
        a.send(&Handshake::Done { process: 3, vmm: 7 }).unwrap();
        assert_eq!(
            b.recv::<Handshake>().unwrap(),
            Handshake::Done { process: 3, vmm: 7 }
        );
        drop(a);
        assert!(matches!(b.recv::<Handshake>(), Err(SyncError::Closed)));
    }
}
