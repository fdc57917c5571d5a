//! `restore`: accepted with runc's flags (containerd's `-no-subreaper`
//! included); not implemented yet.

use super::{CliError, Ctx, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long = "image-path")]
    pub image_path: Option<PathBuf>,
    #[arg(long = "work-path")]
    pub work_path: Option<PathBuf>,
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
    /// Container id
    pub id: String,
}

pub fn run(_ctx: &Ctx, _args: Args) -> Result<i32> {
    Err(CliError::Msg(
        "restore is not implemented in microrun yet (VM snapshots are planned)".into(),
    ))
}
