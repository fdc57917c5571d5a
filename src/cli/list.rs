//! `list`: the containers under --root.

use super::{Ctx, Format, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    /// Display only container ids
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let store = ctx.store();
    let states: Vec<_> = store
        .ids()?
        .iter()
        .filter_map(|id| store.peek(id).ok())
        .collect();
    if args.quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match args.format {
        Format::Json => {
            let docs: Vec<_> = states.iter().map(|s| s.oci()).collect();
            println!("{}", serde_json::to_string(&docs).unwrap_or_default());
        }
        Format::Table => {
            println!(
                "{:<12} {:<10} {:<10} {:<40} {:<30} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &states {
                let o = s.oci();
                println!(
                    "{:<12} {:<10} {:<10} {:<40} {:<30} {}",
                    o.id,
                    o.pid,
                    o.status,
                    o.bundle.display(),
                    o.created,
                    o.owner
                );
            }
        }
    }
    Ok(0)
}
