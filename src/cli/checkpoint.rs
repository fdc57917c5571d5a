//! `checkpoint`: accepted with runc's flags; not implemented yet.

use super::{CliError, Ctx, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub criu: CriuArgs,
    #[arg(long = "parent-path")]
    pub parent_path: Option<PathBuf>,
    #[arg(long = "leave-running")]
    pub leave_running: bool,
    #[arg(long = "pre-dump")]
    pub pre_dump: bool,
    #[arg(long = "empty-ns")]
    pub empty_ns: Vec<String>,
    /// Container id
    pub id: String,
}

/// The flags runc's checkpoint and restore share.
#[derive(Debug, clap::Args)]
pub struct CriuArgs {
    #[arg(long = "image-path")]
    pub image_path: Option<PathBuf>,
    #[arg(long = "work-path")]
    pub work_path: Option<PathBuf>,
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    #[arg(long = "shell-job")]
    pub shell_job: bool,
    #[arg(long = "file-locks")]
    pub file_locks: bool,
    #[arg(long = "manage-cgroups-mode")]
    pub manage_cgroups_mode: Option<String>,
    #[arg(long = "auto-dedup")]
    pub auto_dedup: bool,
}

pub fn run(_ctx: &Ctx, _args: Args) -> Result<i32> {
    Err(CliError::Msg(
        "checkpoint is not implemented in microrun yet (VM snapshots are planned)".into(),
    ))
}
