//! `check`: diagnose whether this host can run microVMs.

use super::{Ctx, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_ctx: &Ctx, _args: Args) -> Result<i32> {
    let r = crate::vmm::check::probe()?;
    println!(
        "ok: /dev/kvm API {} usable, up to {} vCPUs",
        r.api_version, r.max_vcpus
    );
    Ok(0)
}
