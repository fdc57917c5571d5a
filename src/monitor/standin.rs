//! The host stand-in of a process in a VM: a container's init (the
//! container's host pid) or an exec'd process. It hands its stdio (or a
//! pty) to the process that holds the VM, relays signals and window sizes,
//! and exits with the in-guest status.

use super::ctl::{self, Request, Response};
use super::exit;
use crate::console;
use crate::sandbox::{ExitStatus, ProcessId, INIT};
use oci_spec::runtime::Process;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StandinError {
    #[error(transparent)]
    Ctl(#[from] ctl::CtlError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error("cannot allocate tty if runc will detach without setting console socket")]
    NoConsoleSocket,
    #[error("exec: unexpected reply from the monitor: {0}")]
    Reply(String),
}

pub struct Standin {
    socket: PathBuf,
    process: ProcessId,
    tty: Option<OwnedFd>,
}

impl Standin {
    /// The stand-in of the init of the container whose control socket
    /// `socket` is; `tty` is its pty slave.
    pub fn init(socket: &Path, tty: Option<OwnedFd>) -> Standin {
        Standin {
            socket: socket.to_path_buf(),
            process: INIT,
            tty,
        }
    }

    /// Starts the process in the container. Signals must already be blocked
    /// (exit::block_relayed) so none is lost before the relay runs.
    pub fn launch(
        socket: &Path,
        process: &Process,
        console_socket: Option<&Path>,
    ) -> Result<Standin, StandinError> {
        let tty = process.terminal().unwrap_or(false);
        let (fds, keep): (Vec<OwnedFd>, Option<OwnedFd>) = if tty {
            let sock = console_socket.ok_or(StandinError::NoConsoleSocket)?;
            let pty = console::open_pty()?;
            console::send_master(sock, &pty)?;
            let _ = console::set_controlling(&pty.slave);
            let keep = pty.slave.try_clone().ok();
            (vec![pty.slave], keep)
        } else {
            (Vec::new(), None)
        };
        let raw: Vec<i32> = if tty {
            fds.iter().map(|f| f.as_raw_fd()).collect()
        } else {
            vec![0, 1, 2]
        };
        let req = Request::Exec {
            process: Box::new(process.clone()),
            tty,
        };
        let id = match ctl::call(socket, &req, &raw)? {
            Response::Exec { process } => process,
            other => return Err(StandinError::Reply(format!("{other:?}"))),
        };
        drop(fds);
        Ok(Standin {
            socket: socket.to_path_buf(),
            process: id,
            tty: keep,
        })
    }

    /// Relays signals until the process ends, then returns its status.
    pub fn wait(self) -> Result<ExitStatus, StandinError> {
        let socket = self.socket.clone();
        let process = self.process;
        let tty = self.tty;
        // As in the monitor: a size set before SIGWINCH could reach us.
        if let Some((rows, cols)) = tty.as_ref().and_then(console::set_size) {
            let _ = ctl::call(
                &socket,
                &Request::Resize {
                    process,
                    rows,
                    cols,
                },
                &[],
            );
        }
        microrun_protocol::threads::spawn(move || {
            let set = exit::relayed_set();
            loop {
                let Ok(sig) = set.wait() else { continue };
                let req = if sig == nix::sys::signal::Signal::SIGWINCH {
                    match tty.as_ref().and_then(console::window_size) {
                        Some((rows, cols)) => Request::Resize {
                            process,
                            rows,
                            cols,
                        },
                        None => continue,
                    }
                } else {
                    Request::Signal {
                        process,
                        signal: sig as i32,
                        all: false,
                    }
                };
                let _ = ctl::call(&socket, &req, &[]);
            }
        });
        match ctl::call(&self.socket, &Request::Wait { process }, &[])? {
            Response::Exited { status } => Ok(status),
            other => Err(StandinError::Reply(format!("{other:?}"))),
        }
    }
}
