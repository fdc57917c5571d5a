//! `update`: change a running container's resource limits (enforced by the
//! guest's cgroups).

use super::{CliError, Ctx, Result};
use crate::monitor::ctl::{self, Request};
use crate::state::Status;
use oci_spec::runtime::{LinuxCpu, LinuxPids, LinuxResources};
use std::io::Read;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to a JSON file with the resources ("-" for stdin)
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Specifies per cgroup weight, range is from 10 to 1000
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    /// CPU realtime period in microseconds
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds
    #[arg(long = "cpu-rt-runtime")]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes in which to allow execution
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes
    #[arg(long)]
    pub memory: Option<i64>,
    /// Memory reservation (soft limit) in bytes
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<i64>,
    /// Total memory usage (memory + swap); -1 for unlimited
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<i64>,
    /// Maximum number of pids; -1 for unlimited
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Accepted for compatibility (Intel RDT is not available in a VM)
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    /// Accepted for compatibility (Intel RDT is not available in a VM)
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    /// Container id
    pub id: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let resources = resources(&args)?;
    let dir = super::open(ctx, &args.id)?;
    let st = dir.load()?;
    if !matches!(
        st.current_status(),
        Status::Created | Status::Running | Status::Paused
    ) {
        return Err(CliError::Msg("container not running".into()));
    }
    let req = Request::Update {
        resources: Box::new(resources),
    };
    ctl::call(&dir.ctl_socket(), &req, &[])?;
    Ok(0)
}

fn resources(args: &Args) -> Result<LinuxResources> {
    let mut r = match &args.resources {
        Some(p) => {
            let mut data = Vec::new();
            if p.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .map_err(CliError::io("read resources from stdin"))?;
            } else {
                data = std::fs::read(p).map_err(CliError::io(format!("read {}", p.display())))?;
            }
            serde_json::from_slice(&data)
                .map_err(|e| CliError::Msg(format!("invalid resources JSON: {e}")))?
        }
        None => LinuxResources::default(),
    };
    let mut cpu = r.cpu().clone().unwrap_or_else(LinuxCpu::default);
    let mut cpu_set = false;
    macro_rules! set {
        ($obj:ident, $flag:ident, $field:ident, $dirty:ident) => {
            if let Some(v) = args.$flag.clone() {
                $obj.$field(Some(v));
                $dirty = true;
            }
        };
    }
    set!(cpu, cpu_period, set_period, cpu_set);
    set!(cpu, cpu_quota, set_quota, cpu_set);
    set!(cpu, cpu_share, set_shares, cpu_set);
    set!(cpu, cpu_rt_period, set_realtime_period, cpu_set);
    set!(cpu, cpu_rt_runtime, set_realtime_runtime, cpu_set);
    set!(cpu, cpuset_cpus, set_cpus, cpu_set);
    set!(cpu, cpuset_mems, set_mems, cpu_set);
    if cpu_set {
        r.set_cpu(Some(cpu));
    }
    let mut mem = r.memory().unwrap_or_default();
    let mut mem_set = false;
    set!(mem, memory, set_limit, mem_set);
    set!(mem, memory_reservation, set_reservation, mem_set);
    set!(mem, memory_swap, set_swap, mem_set);
    if mem_set {
        r.set_memory(Some(mem));
    }
    if let Some(limit) = args.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        r.set_pids(Some(p));
    }
    if let Some(w) = args.blkio_weight {
        let mut b = r.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}
