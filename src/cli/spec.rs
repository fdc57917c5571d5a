//! `spec`: write a starting config.json, as `runc spec` does.

use super::{CliError, Ctx, Result};
use oci_spec::runtime::Spec;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to the root of the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
}

pub fn run(_ctx: &Ctx, args: Args, rootless: Option<&str>) -> Result<i32> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        return Err(CliError::Msg(format!(
            "File {} exists. Remove it first",
            path.display()
        )));
    }
    let spec = if matches!(rootless, Some("true")) {
        Spec::rootless(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    } else {
        Spec::default()
    };
    let data = serde_json::to_string_pretty(&spec).map_err(|e| CliError::Msg(e.to_string()))?;
    std::fs::write(&path, data + "\n")
        .map_err(CliError::io(format!("write {}", path.display())))?;
    Ok(0)
}
