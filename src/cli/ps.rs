//! `ps`: the host pids that stand for the container's processes.

use super::{CliError, Ctx, Format, Result};
use crate::monitor::ctl::{self, Request, Response};
use crate::state::Status;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    /// Container id
    pub id: String,
    /// Options for ps(1) (table format; default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let dir = super::open(ctx, &args.id)?;
    let st = dir.load()?;
    if st.current_status() == Status::Stopped {
        return Err(CliError::Msg("container not running".into()));
    }
    let pids = match ctl::call(&dir.ctl_socket(), &Request::Pids, &[])? {
        Response::Pids { pids } => pids,
        r => return Err(CliError::Msg(format!("ps: unexpected reply {r:?}"))),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&pids).unwrap_or_default()),
        Format::Table => print_table(&pids, &args.ps_args)?,
    }
    Ok(0)
}

/// Runs ps(1) and keeps its header and the rows of our pids, as runc does.
fn print_table(pids: &[i32], ps_args: &[String]) -> Result<()> {
    let ps_args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&ps_args)
        .output()
        .map_err(CliError::io("run ps"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Ok(());
    };
    let col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| CliError::Msg("ps: no PID column in its output".into()))?;
    println!("{header}");
    for l in lines {
        let pid: Option<i32> = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{l}");
        }
    }
    Ok(())
}
