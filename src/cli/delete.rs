//! `delete`: stop what is left of a container and remove every trace.

use super::{CliError, Ctx, Result};
use crate::hooks;
use crate::state::{self, ContainerState, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Forcibly delete a running container (SIGKILL)
    #[arg(short, long)]
    pub force: bool,
    /// Container id
    pub id: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    crate::ids::validate(&args.id)?;
    let dir = match ctx.store().open(&args.id) {
        Ok(d) => d,
        Err(state::StateError::NotExist(_)) if args.force => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let st = match dir.load() {
        Ok(st) => st,
        // A half-written container (crash during create): remove it.
        Err(_) if args.force => {
            dir.remove()?;
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let status = st.current_status();
    match status {
        Status::Stopped => {}
        Status::Created | Status::Creating => kill_monitor(&st)?,
        Status::Running | Status::Paused if args.force => kill_monitor(&st)?,
        s => {
            return Err(CliError::Msg(format!(
                "cannot delete container {} that is not stopped: {s}",
                st.id
            )))
        }
    }
    wait_vm_let_go(ctx, &st, &dir.ctl_socket());
    let spec = dir.spec();
    dir.remove()?;
    state::reap_stale_vm_dirs(ctx.store().root());
    let poststop = spec
        .as_ref()
        .and_then(|s| s.hooks().as_ref())
        .and_then(|h| h.poststop().as_ref());
    let mut stopped = st.clone();
    stopped.status = Status::Stopped;
    if let Err(e) = hooks::run_all("poststop", poststop, &stopped.oci_json()) {
        crate::logging::warn(&e.to_string());
    }
    Ok(0)
}

/// Waits (bounded) until the process that holds the container's VM has
/// let go of it: the VM is gone when it was the last container in it, or
/// the container's control socket is (others still run in the VM). So
/// nothing of the container outlives `delete`.
fn wait_vm_let_go(ctx: &Ctx, st: &ContainerState, ctl: &std::path::Path) {
    if st.vmm_pid <= 0 {
        return;
    }
    let others = || {
        let store = ctx.store();
        store.ids().unwrap_or_default().iter().any(|id| {
            id != &st.id
                && store
                    .peek(id)
                    .is_ok_and(|o| o.vmm_pid == st.vmm_pid && o.current_status() != Status::Stopped)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while state::process_alive(st.vmm_pid, st.vmm_start) && Instant::now() < deadline {
        if !ctl.exists() && others() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs the monitor (which tears the VM down with it) and waits until it
/// is gone; the monitor is not our child, so poll.
pub(crate) fn kill_monitor(st: &ContainerState) -> Result<()> {
    if !state::process_alive(st.pid, st.monitor_start) {
        return Ok(());
    }
    let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while state::process_alive(st.pid, st.monitor_start) {
        if Instant::now() > deadline {
            return Err(CliError::Msg(format!(
                "container {}: monitor pid {} did not die after SIGKILL",
                st.id, st.pid
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
