//! `resume`: thaw a paused container.

use super::{CliError, Ctx, Result};
use crate::monitor::ctl::{self, Request};
use crate::state::Status;

pub type Args = super::IdArgs;

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let dir = super::open(ctx, &args.id)?;
    let mut st = dir.load()?;
    if st.current_status() != Status::Paused {
        return Err(CliError::Msg("container not paused".into()));
    }
    ctl::call(&dir.ctl_socket(), &Request::Resume, &[])?;
    st.status = Status::Running;
    dir.save(&st)?;
    Ok(0)
}
