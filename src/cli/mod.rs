//! The runc-compatible command line: global flags, one file per verb.

mod check;
mod checkpoint;
mod create;
mod delete;
mod events;
mod exec;
mod features;
mod kernel;
mod kill;
mod list;
mod pause;
mod ps;
mod restore;
mod resume;
mod run;
mod spec;
mod start;
mod state;
mod update;
mod vm_boot;

use crate::logging::{self, LogFormat};
use crate::sandbox::SandboxFactory;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use thiserror::Error;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn long_version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        "\ncommit: ",
        env!("MICRORUN_COMMIT"),
        "\nspec: 1.2.0"
    )
}

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Id(#[from] crate::ids::IdError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Ctl(#[from] crate::monitor::ctl::CtlError),
    #[error(transparent)]
    Sync(#[from] crate::monitor::sync::SyncError),
    #[error(transparent)]
    Standin(#[from] crate::monitor::standin::StandinError),
    #[error(transparent)]
    Signal(#[from] crate::signals::SignalError),
    #[error(transparent)]
    Kvm(#[from] crate::vmm::check::CheckError),
    #[error("{0}")]
    Msg(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl CliError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, CliError>;

#[derive(Debug, Parser)]
#[command(
    name = "microrun",
    version = VERSION,
    long_version = long_version(),
    about = "An OCI runtime that runs every container in its own KVM microVM",
    propagate_version = true
)]
pub struct Cli {
    /// Root directory for storage of container state
    #[arg(long, global = true, default_value = "/run/microrun")]
    pub root: PathBuf,
    /// Log file (default: stderr)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Enable debug logging (also keeps the guest console log)
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for compatibility: cgroups are managed inside the VM
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Accepted for compatibility: checkpoint/restore is not implemented
    #[arg(long, global = true)]
    pub criu: Option<String>,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Create a container (boots its microVM and stops before the user process)
    Create(create::Args),
    /// Start the user process of a created container
    Start(start::Args),
    /// Create and start a container
    Run(run::Args),
    /// Output the state of a container
    State(state::Args),
    /// Send a signal to the container's init process
    Kill(kill::Args),
    /// Delete a container and everything it holds
    Delete(delete::Args),
    /// Execute a new process inside the container
    Exec(exec::Args),
    /// Display the processes of a container
    Ps(ps::Args),
    /// Pause all processes of a container
    Pause(pause::Args),
    /// Resume a paused container
    Resume(resume::Args),
    /// Update a container's resource limits
    Update(update::Args),
    /// Display container events such as resource usage
    Events(events::Args),
    /// Show what this runtime supports
    Features(features::Args),
    /// Create a new specification file (config.json)
    Spec(spec::Args),
    /// List containers started by microrun with the given root
    List(list::Args),
    /// Checkpoint a running container (not implemented)
    Checkpoint(checkpoint::Args),
    /// Restore a container from a checkpoint (not implemented)
    Restore(restore::Args),
    /// Diagnose whether this host can run microVMs
    Check(check::Args),
    /// Guest kernels: add a distribution's kernel with its modules, list them
    Kernel(kernel::Args),
    /// Boot the guest kernel in a microVM without a container (diagnostics, benchmarks)
    #[command(name = "vm-boot")]
    VmBoot(vm_boot::Args),
    /// Internal: the per-container monitor
    #[command(hide = true)]
    Monitor(MonitorArgs),
    /// Internal: the host stand-in of a detached exec
    #[command(hide = true, name = "exec-standin")]
    ExecStandin(exec::StandinArgs),
}

/// The arguments of the verbs that take a container id alone.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// Container id
    pub id: String,
}

/// `--format` of list and ps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    #[arg(long)]
    pub bundle: PathBuf,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Join the VM of this container instead of booting one
    #[arg(long = "join-vm")]
    pub join_vm: Option<String>,
    /// A namespace shared with a container of that VM: KIND=ID
    #[arg(long = "join-ns")]
    pub join_ns: Vec<String>,
    pub id: String,
}

/// What every verb gets: the global flags and the sandbox implementation.
pub struct Ctx {
    pub root: PathBuf,
    pub debug: bool,
    pub log: Option<PathBuf>,
    pub log_format: LogFormat,
    pub factory: SandboxFactory,
}

impl Ctx {
    pub fn store(&self) -> crate::state::Store {
        crate::state::Store::new(&self.root)
    }

    /// The global flags to hand to a helper process (monitor, stand-in).
    pub fn helper_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec!["--root".into(), self.root.clone().into()];
        if let Some(l) = &self.log {
            a.push("--log".into());
            a.push(l.clone().into());
        }
        a.push("--log-format".into());
        a.push(
            match self.log_format {
                LogFormat::Json => "json",
                LogFormat::Text => "text",
            }
            .into(),
        );
        if self.debug {
            a.push("--debug".into());
        }
        a
    }
}

/// Long flags that Go's flag parser lets clients spell with one dash
/// (containerd passes `-no-subreaper` to restore).
const SINGLE_DASH_OK: &[&str] = &[
    "no-subreaper",
    "root",
    "log",
    "log-format",
    "debug",
    "bundle",
    "pid-file",
    "console-socket",
    "detach",
    "no-pivot",
    "no-new-keyring",
    "image-path",
    "work-path",
    "force",
    "all",
    "process",
    "systemd-cgroup",
    "criu",
];

fn normalize_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut passthrough = false;
    for a in args {
        if !passthrough {
            if a == "--" {
                passthrough = true;
            } else if let Some(s) = a.to_str() {
                let name = s.strip_prefix('-').filter(|r| !r.starts_with('-'));
                if let Some(name) = name {
                    let key = name.split('=').next().unwrap_or(name);
                    if SINGLE_DASH_OK.contains(&key) {
                        out.push(format!("-{s}").into());
                        continue;
                    }
                }
            }
        }
        out.push(a);
    }
    out
}

/// Entry point of the binary; returns the process exit code.
pub fn main(factory: SandboxFactory) -> i32 {
    let cli = match Cli::try_parse_from(normalize_args(std::env::args_os().collect())) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    logging::init(cli.log.clone(), cli.log_format, cli.debug);
    let ctx = Ctx {
        root: cli.root.clone(),
        debug: cli.debug,
        log: cli.log.clone(),
        log_format: cli.log_format,
        factory,
    };
    let res = match cli.verb {
        Verb::Create(a) => create::run(&ctx, a),
        Verb::Start(a) => start::run(&ctx, a),
        Verb::Run(a) => run::run(&ctx, a),
        Verb::State(a) => state::run(&ctx, a),
        Verb::Kill(a) => kill::run(&ctx, a),
        Verb::Delete(a) => delete::run(&ctx, a),
        Verb::Exec(a) => exec::run(&ctx, a),
        Verb::Ps(a) => ps::run(&ctx, a),
        Verb::Pause(a) => pause::run(&ctx, a),
        Verb::Resume(a) => resume::run(&ctx, a),
        Verb::Update(a) => update::run(&ctx, a),
        Verb::Events(a) => events::run(&ctx, a),
        Verb::Features(a) => features::run(&ctx, a),
        Verb::Spec(a) => spec::run(&ctx, a, cli.rootless.as_deref()),
        Verb::List(a) => list::run(&ctx, a),
        Verb::Checkpoint(a) => checkpoint::run(&ctx, a),
        Verb::Restore(a) => restore::run(&ctx, a),
        Verb::Check(a) => check::run(&ctx, a),
        Verb::Kernel(a) => kernel::run(&ctx, a),
        Verb::VmBoot(a) => vm_boot::run(&ctx, a),
        Verb::Monitor(a) => crate::monitor::run(
            crate::monitor::MonitorArgs {
                root: ctx.root.clone(),
                id: a.id,
                bundle: a.bundle,
                console_socket: a.console_socket,
                debug: ctx.debug,
                join: a.join_vm.map(|target| crate::monitor::JoinArgs {
                    target,
                    joins: a
                        .join_ns
                        .iter()
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }),
            },
            ctx.factory,
        ),
        Verb::ExecStandin(a) => exec::standin_main(&ctx, a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            logging::error(&e.to_string());
            1
        }
    }
}

/// Validates an id and opens its locked state directory.
pub(crate) fn open(ctx: &Ctx, id: &str) -> Result<crate::state::ContainerDir> {
    crate::ids::validate(id)?;
    Ok(ctx.store().open(id)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn single_dash_long_flags_are_normalized() {
        let v: Vec<std::ffi::OsString> = [
            "microrun",
            "restore",
            "-no-subreaper",
            "-bundle",
            "b",
            "-d",
            "--",
            "-all",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let out: Vec<String> = normalize_args(v)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            out,
            [
                "microrun",
                "restore",
                "--no-subreaper",
                "--bundle",
                "b",
                "-d",
                "--",
                "-all"
            ]
        );
    }

    #[test]
    fn globals_before_and_after_verb() {
        let c = Cli::try_parse_from(["microrun", "--root", "/r", "--systemd-cgroup", "state", "x"])
            .unwrap();
        assert_eq!(c.root, PathBuf::from("/r"));
        let c = Cli::try_parse_from(["microrun", "state", "--log-format", "json", "x"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
    }
}
