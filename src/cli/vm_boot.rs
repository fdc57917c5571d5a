//! `vm-boot`: boot the guest kernel and initramfs in a microVM with no
//! container (host diagnosis and boot benchmarks). The console goes to
//! stdout, or to --console FILE.

use super::{CliError, Ctx, Result};
use crate::vmm::devices::virtio::fs::Caching;
use crate::vmm::vcpu::VmEnd;
use crate::vmm::vm::{DiskConfig, Vm, VmConfig};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guest kernel (ELF vmlinux); default: the installed one
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Guest initramfs; default: the installed one
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Guest memory in MiB
    #[arg(long, default_value_t = 256)]
    pub memory: u64,
    /// vCPUs
    #[arg(long, default_value_t = 1)]
    pub cpus: u8,
    /// Extra kernel command-line words
    #[arg(long)]
    pub append: Vec<String>,
    /// Write the guest console here instead of stdout
    #[arg(long)]
    pub console: Option<PathBuf>,
    /// Attach a raw disk image as virtio-blk (PATH, or PATH,ro); repeatable
    #[arg(long)]
    pub disk: Vec<String>,
    /// Attach a virtio-rng device
    #[arg(long)]
    pub rng: bool,
    /// Attach virtio-vsock, served on this host unix socket (hybrid mapping)
    #[arg(long)]
    pub vsock: Option<PathBuf>,
    /// Serve a host directory with virtio-fs, as TAG=DIR
    #[arg(long)]
    pub share: Option<String>,
}

pub fn run(_ctx: &Ctx, args: Args) -> Result<i32> {
    let (kernel, initrd) = match (args.kernel, args.initrd) {
        (Some(k), Some(i)) => (k, i),
        (k, i) => {
            let img = crate::vmm::image::resolve(None).map_err(|e| CliError::Msg(e.to_string()))?;
            (k.unwrap_or(img.kernel), i.unwrap_or(img.initrd))
        }
    };
    let console: Box<dyn std::io::Write + Send> = match &args.console {
        Some(p) => Box::new(
            std::fs::File::create(p).map_err(CliError::io(format!("create {}", p.display())))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let vm = Vm::start(VmConfig {
        kernel,
        initrd: Some(initrd),
        cmdline: args.append,
        mem_bytes: args.memory << 20,
        vcpus: args.cpus,
        console,
        disks: args
            .disk
            .iter()
            .map(|d| match d.strip_suffix(",ro") {
                Some(p) => DiskConfig {
                    path: p.into(),
                    read_only: true,
                },
                None => DiskConfig {
                    path: d.into(),
                    read_only: false,
                },
            })
            .collect(),
        rng: args.rng,
        vsock: args.vsock.clone(),
        fs: match &args.share {
            Some(s) => vec![s
                .split_once('=')
                .map(|(tag, dir)| (tag.to_string(), PathBuf::from(dir), Caching::Shared))
                .ok_or_else(|| CliError::Msg(format!("--share {s:?}: expected TAG=DIR")))?],
            None => Vec::new(),
        },
        nets: vec![],
        on_end: None,
    })
    .map_err(|e| CliError::Msg(e.to_string()))?;
    let end = vm.wait();
    let total = vm.started.elapsed();
    let mem = vm.memory_report();
    let first = vm
        .first_run
        .lock()
        .ok()
        .and_then(|f| *f)
        .map(|t| t.duration_since(vm.started));
    eprintln!(
        "vm-boot: {:?} after {:.1} ms (first KVM_RUN at {:.2} ms); RSS {} KiB, of which guest RAM {} KiB, VMM {} KiB ({} KiB private)",
        end,
        total.as_secs_f64() * 1e3,
        first.map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN),
        mem.rss,
        mem.guest,
        mem.vmm(),
        mem.vmm_private()
    );
    match end {
        VmEnd::Error(e) => Err(CliError::Msg(e)),
        _ => Ok(0),
    }
}
