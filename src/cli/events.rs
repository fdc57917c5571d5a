//! `events`: resource usage of a container, once (`--stats`) or every interval.

use super::{CliError, Ctx, Result};
use crate::monitor::ctl::{self, Request, Response};
use crate::state::Status;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interval between stats events, e.g. 5s, 500ms
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Print the stats once and exit
    #[arg(long)]
    pub stats: bool,
    /// Container id
    pub id: String,
}

fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().map_err(|_| format!("invalid interval {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        _ => return Err(format!("invalid interval unit in {s:?}")),
    };
    if secs <= 0.0 {
        return Err("interval must be greater than 0".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    crate::ids::validate(&args.id)?;
    let store = ctx.store();
    loop {
        let st = store.peek(&args.id)?;
        if st.current_status() == Status::Stopped {
            return Err(CliError::Msg("container not running".into()));
        }
        let sock = crate::state::ctl_socket_path(&ctx.root, &args.id);
        let stats = match ctl::call(&sock, &Request::Stats, &[])? {
            Response::Stats { stats } => stats,
            r => return Err(CliError::Msg(format!("events: unexpected reply {r:?}"))),
        };
        let ev = serde_json::json!({
            "type": "stats",
            "id": args.id,
            "data": {
                "cpu": {"usage": {"total": stats.cpu_usage_ns}},
                "memory": {"usage": {"usage": stats.memory_usage_bytes, "limit": stats.memory_limit_bytes}},
                "pids": {"current": stats.pids_current, "limit": stats.pids_limit},
            }
        });
        println!("{ev}");
        if args.stats {
            return Ok(0);
        }
        std::thread::sleep(args.interval);
    }
}
