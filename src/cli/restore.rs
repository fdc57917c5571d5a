//! `restore`: accepted with runc's flags (containerd's `-no-subreaper`
//! included); not implemented yet.

use super::{CliError, Ctx, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub criu: super::checkpoint::CriuArgs,
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Container id
    pub id: String,
}

pub fn run(_ctx: &Ctx, _args: Args) -> Result<i32> {
    Err(CliError::Msg(
        "restore is not implemented in microrun yet (VM snapshots are planned)".into(),
    ))
}
