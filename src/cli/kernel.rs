//! `kernel add|list`: guest kernels beside the project's own (a
//! distribution's bzImage, with the modules the guest needs), chosen per
//! container with the `io.microrun.kernel` annotation (docs/guest-image.md).

use super::{CliError, Ctx, Result};
use crate::vmm::{image, kernels};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub op: Op,
}

#[derive(Debug, clap::Subcommand)]
pub enum Op {
    /// Prepare a kernel (bzImage or vmlinux) and install it by its version
    Add {
        /// Install under this share directory (default: beside the binary)
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The kernel image
        kernel: PathBuf,
        /// Its modules directory (default: /lib/modules/<version>)
        modules: Option<PathBuf>,
    },
    /// List installed kernels
    List {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn share_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    dir.or_else(|| image::default_dirs().into_iter().next())
        .ok_or_else(|| CliError::Msg("no share directory: give --dir".into()))
}

pub fn run(_ctx: &Ctx, args: Args) -> Result<i32> {
    match args.op {
        Op::Add {
            dir,
            kernel,
            modules,
        } => {
            let share = share_dir(dir)?;
            // The agent's own initramfs is the base of every kernel's.
            let base = image::resolve(None)
                .map_err(|e| CliError::Msg(e.to_string()))?
                .initrd;
            let k = kernels::add(&kernel, modules.as_deref(), &base, &share)
                .map_err(|e| CliError::Msg(e.to_string()))?;
            println!(
                "installed kernel {} ({} modules): {} {}",
                k.version,
                k.modules,
                k.kernel.display(),
                k.initrd.display()
            );
            println!(
                "use it with the annotation io.microrun.kernel={}",
                k.version
            );
        }
        Op::List { dir } => {
            for (version, kernel, initrd) in kernels::list(&share_dir(dir)?) {
                println!("{version}\t{}\t{}", kernel.display(), initrd.display());
            }
        }
    }
    Ok(0)
}
