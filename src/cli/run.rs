//! `run`: create + start; in the foreground it relays signals to the
//! container, waits for it, removes it, and exits with its status.

use super::{create, Ctx, Result};
use crate::monitor::exit;
use crate::sandbox::ExitStatus;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Detach from the container and return once it runs
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits (foreground only)
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub create: create::Args,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    // Blocked before the monitor exists, so no signal is lost in between;
    // the monitor gets a clean mask from exec.
    exit::block_relayed();
    let created = create::create(ctx, &args.create)?;
    let id = args.create.id.clone();
    let mut monitor = created.monitor;
    drop(created.dir);
    if let Err(e) = super::start::run(ctx, super::start::Args { id: id.clone() }) {
        let _ = monitor.kill();
        let _ = monitor.wait();
        if let Ok(d) = ctx.store().open(&id) {
            let _ = d.remove();
        }
        return Err(e);
    }
    if args.detach {
        return Ok(0);
    }
    let pid = Pid::from_raw(monitor.id() as i32);
    microrun_protocol::threads::spawn(move || {
        let set = exit::relayed_set();
        while let Ok(sig) = set.wait() {
            let _ = kill(pid, sig);
        }
    });
    let status = monitor
        .wait()
        .map_err(super::CliError::io("wait for container"))?;
    if !args.keep {
        if let Ok(d) = ctx.store().open(&id) {
            let _ = d.remove();
        }
    }
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => ExitStatus::Code(c).code(),
        (None, Some(s)) => ExitStatus::Signal(s).code(),
        _ => 255,
    })
}
