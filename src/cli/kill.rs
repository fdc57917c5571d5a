//! `kill`: signal the container's init (or all its processes).

use super::{CliError, Ctx, Result};
use crate::monitor::ctl::{self, Request};
use crate::sandbox::INIT;
use crate::state::Status;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Send the signal to all processes of the container
    #[arg(short, long)]
    pub all: bool,
    /// Container id
    pub id: String,
    /// Signal name or number
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let signal = crate::signals::parse(&args.signal)?;
    let dir = super::open(ctx, &args.id)?;
    let st = dir.load()?;
    let status = st.current_status();
    if matches!(status, Status::Stopped | Status::Creating) {
        return Err(CliError::Msg("container not running".into()));
    }
    let req = Request::Signal {
        process: INIT,
        signal,
        all: args.all,
    };
    match ctl::call(&dir.ctl_socket(), &req, &[]) {
        Ok(_) => Ok(0),
        // SIGKILL needs no cooperation: killing the monitor ends the VM.
        Err(_) if signal == libc::SIGKILL => {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(st.pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .map_err(|_| CliError::Msg("container not running".into()))?;
            Ok(0)
        }
        Err(e) => Err(e.into()),
    }
}
