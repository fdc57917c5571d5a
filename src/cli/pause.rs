//! `pause`: freeze every process of a running container.

use super::{CliError, Ctx, Result};
use crate::monitor::ctl::{self, Request};
use crate::state::Status;

pub type Args = super::IdArgs;

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let dir = super::open(ctx, &args.id)?;
    let mut st = dir.load()?;
    match st.current_status() {
        Status::Running => {}
        Status::Paused => return Err(CliError::Msg("container already paused".into())),
        _ => return Err(CliError::Msg("container not running".into())),
    }
    ctl::call(&dir.ctl_socket(), &Request::Pause, &[])?;
    st.status = Status::Paused;
    dir.save(&st)?;
    Ok(0)
}
