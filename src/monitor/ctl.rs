//! The monitor's control socket: one JSON request and one JSON response per
//! connection; `exec` and `join` carry the process's stdio fds with the
//! request. Process 0 names the init of the container whose socket it is.

use crate::fdpass;
use crate::sandbox::{ExitStatus, ProcessId, Stats};
use oci_spec::runtime::{LinuxResources, Process};
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Bound on one request or response line.
const MAX_MESSAGE: u64 = 4 << 20;

#[derive(Debug, Error)]
pub enum CtlError {
    #[error("container not running: cannot reach its monitor: {0}")]
    Connect(#[source] io::Error),
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("control socket: malformed message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Remote(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Start,
    Signal {
        process: ProcessId,
        signal: i32,
        all: bool,
    },
    /// Carries 3 fds (stdin, stdout, stderr) or, with `tty`, 1 (pty slave).
    Exec {
        process: Box<Process>,
        tty: bool,
    },
    Wait {
        process: ProcessId,
    },
    Resize {
        process: ProcessId,
        rows: u16,
        cols: u16,
    },
    Stats,
    Pause,
    Resume,
    Update {
        resources: Box<LinuxResources>,
    },
    Pids,
    /// A new container joins the VM of the container whose socket this is;
    /// carries its init's stdio fds as `exec` does. The connection stays
    /// open while the sender (the new container's stand-in) lives.
    Join {
        id: String,
        bundle: PathBuf,
        tty: bool,
        /// Namespaces its init shares: (`ipc`, `uts` or `pid`; container id).
        joins: Vec<(String, String)>,
        debug: bool,
        /// After the stdio fds: the rootfs's mount tree, then one for each
        /// of these spec mount indices (share::Trees).
        #[serde(default)]
        bind_trees: Vec<usize>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Exec {
        process: ProcessId,
    },
    Exited {
        status: ExitStatus,
    },
    Stats {
        stats: Stats,
    },
    Pids {
        pids: Vec<i32>,
    },
    /// The joined container waits at its start barrier; `vmm` is the pid of
    /// the process that holds the VM.
    Joined {
        vmm: i32,
    },
    Error {
        msg: String,
    },
}

/// Sends one request and waits for its response.
pub fn call(socket: &Path, req: &Request, fds: &[RawFd]) -> Result<Response, CtlError> {
    call_keep(socket, req, fds).map(|(r, _)| r)
}

/// As `call`, and hands back the connection, which the monitor may watch.
pub fn call_keep(
    socket: &Path,
    req: &Request,
    fds: &[RawFd],
) -> Result<(Response, UnixStream), CtlError> {
    let mut sock = crate::unixpath::connect(socket).map_err(CtlError::Connect)?;
    let mut line = serde_json::to_vec(req).map_err(|e| CtlError::Malformed(e.to_string()))?;
    line.push(b'\n');
    let n = fdpass::send(&sock, &line, fds)?;
    sock.write_all(&line[n..])?;
    let mut resp = String::new();
    BufReader::new((&sock).take(MAX_MESSAGE)).read_line(&mut resp)?;
    if resp.is_empty() {
        return Err(CtlError::Remote("monitor closed the connection".into()));
    }
    match serde_json::from_str(&resp).map_err(|e| CtlError::Malformed(e.to_string()))? {
        Response::Error { msg } => Err(CtlError::Remote(msg)),
        r => Ok((r, sock)),
    }
}

/// Reads one request (and its fds) on the server side.
pub fn read_request(sock: &UnixStream) -> Result<(Request, Vec<OwnedFd>), CtlError> {
    // Most requests fit; a longer one (an exec's process) is read on below.
    let mut buf = vec![0u8; 8 * 1024];
    let (n, fds) = fdpass::recv(sock, &mut buf)?;
    buf.truncate(n);
    if !buf.contains(&b'\n') {
        let mut rest = BufReader::new(sock.take(MAX_MESSAGE));
        rest.read_until(b'\n', &mut buf)?;
    }
    let req = serde_json::from_slice(&buf).map_err(|e| CtlError::Malformed(e.to_string()))?;
    Ok((req, fds))
}

pub fn write_response(mut sock: &UnixStream, resp: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(resp)
        .unwrap_or_else(|_| b"{\"reply\":\"error\",\"msg\":\"encode\"}".to_vec());
    line.push(b'\n');
    sock.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip() {
        let r = Request::Signal {
            process: 0,
            signal: 15,
            all: true,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"signal","process":0,"signal":15,"all":true}"#);
        assert!(matches!(
            serde_json::from_str(&s).unwrap(),
            Request::Signal { signal: 15, .. }
        ));
    }

    #[test]
    fn malformed_request_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"{\"op\":\"launch_missiles\"}\n").unwrap();
        assert!(matches!(read_request(&b), Err(CtlError::Malformed(_))));
    }
}
