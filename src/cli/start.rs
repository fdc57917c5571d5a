//! `start`: release the start barrier of a created container.

use super::{CliError, Ctx, Result};
use crate::hooks;
use crate::monitor::ctl::{self, Request};
use crate::state::Status;

pub type Args = super::IdArgs;

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let dir = super::open(ctx, &args.id)?;
    let mut st = dir.load()?;
    match st.current_status() {
        Status::Created => {}
        Status::Stopped => {
            return Err(CliError::Msg(
                "cannot start a container that has stopped".into(),
            ))
        }
        Status::Running => {
            return Err(CliError::Msg(
                "cannot start an already running container".into(),
            ))
        }
        Status::Paused => return Err(CliError::Msg("cannot start a paused container".into())),
        Status::Creating => {
            return Err(CliError::Msg(
                "cannot start a container that is still being created".into(),
            ))
        }
    }
    ctl::call(&dir.ctl_socket(), &Request::Start, &[])?;
    st.status = Status::Running;
    dir.save(&st)?;
    let spec = dir.spec();
    let poststart = spec
        .as_ref()
        .and_then(|s| s.hooks().as_ref())
        .and_then(|h| h.poststart().as_ref());
    if let Err(e) = hooks::run_all("poststart", poststart, &st.oci_json()) {
        crate::logging::warn(&e.to_string());
    }
    Ok(0)
}
