//! `create`: validate the bundle, record the container, fork its monitor,
//! run the create-time hooks, and return once the container waits at its
//! start barrier.

use super::{CliError, Ctx, Result};
use crate::bundle::Bundle;
use crate::hooks;
use crate::monitor::sync::{Handshake, SyncChannel, SYNC_FD};
use crate::state::{self, ContainerDir, ContainerState, Status};
use chrono::Utc;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Path to the root of the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's host pid to
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Accepted for compatibility (the guest always pivots)
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for compatibility
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass N additional fds to the container (not supported: must be 0)
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container id
    pub id: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    create(ctx, &args).map(|_| 0)
}

/// A created container whose monitor is this process's child.
pub struct Created {
    pub monitor: Child,
    pub dir: ContainerDir,
}

pub fn create(ctx: &Ctx, args: &Args) -> Result<Created> {
    crate::ids::validate(&args.id)?;
    if args.preserve_fds > 0 {
        return Err(CliError::Msg(
            "--preserve-fds is not supported: extra fds cannot cross into a microVM".into(),
        ));
    }
    let bundle = Bundle::load(&args.bundle)?;
    if bundle.terminal() && args.console_socket.is_none() {
        return Err(CliError::Msg(
            "cannot allocate tty if runc will detach without setting console socket".into(),
        ));
    }
    // Joining another container's namespaces puts it in that one's VM.
    let join = crate::monitor::join::find(&ctx.store(), &bundle.spec)
        .map_err(|e| CliError::Msg(e.to_string()))?;
    let dir = ctx.store().create(&args.id)?;
    let mut st = ContainerState {
        id: args.id.clone(),
        status: Status::Creating,
        pid: 0,
        monitor_start: 0,
        bundle: bundle.path.clone(),
        rootfs: bundle.rootfs.clone(),
        created: Utc::now(),
        annotations: bundle
            .spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        owner: owner(),
        debug: ctx.debug,
        vm: join.as_ref().map(|t| t.vm.clone()).unwrap_or_default(),
        vmm_pid: 0,
        vmm_start: 0,
    };
    let mut monitor: Option<Child> = None;
    match bring_up(
        ctx,
        args,
        &bundle,
        join.as_ref(),
        &dir,
        &mut st,
        &mut monitor,
    ) {
        Ok(()) => Ok(Created {
            monitor: monitor.expect("monitor exists after bring-up"),
            dir,
        }),
        Err(e) => {
            if let Some(mut m) = monitor {
                let _ = m.kill();
                let _ = m.wait();
            }
            let _ = dir.remove();
            Err(e)
        }
    }
}

fn bring_up(
    ctx: &Ctx,
    args: &Args,
    bundle: &Bundle,
    join: Option<&crate::monitor::join::Target>,
    dir: &ContainerDir,
    st: &mut ContainerState,
    monitor: &mut Option<Child>,
) -> Result<()> {
    dir.save(st)?;
    dir.save_spec(&bundle.spec)?;
    let (ours, theirs) = UnixStream::pair().map_err(CliError::io("socketpair"))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("microrun")
        .args(ctx.helper_args())
        .arg("monitor")
        .arg("--bundle")
        .arg(&bundle.path);
    if let Some(s) = &args.console_socket {
        cmd.arg("--console-socket")
            .arg(std::path::absolute(s).unwrap_or(s.clone()));
    }
    if let Some(t) = join {
        cmd.arg("--join-vm").arg(&t.member);
        for (kind, id) in &t.joins {
            cmd.arg("--join-ns").arg(format!("{kind}={id}"));
        }
    }
    cmd.arg(&args.id);
    let child_fd = theirs.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; it places our end of the socketpair
    // at SYNC_FD (without CLOEXEC) in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(child_fd, SYNC_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    crate::logging::debug(&format!("create {}: starting monitor", args.id));
    let child = cmd.spawn().map_err(CliError::io("start monitor"))?;
    drop(theirs);
    let pid = child.id() as i32;
    *monitor = Some(child);
    let mut chan = SyncChannel::new(ours);

    expect(&mut chan, |m| matches!(m, Handshake::Ready))?;
    st.pid = pid;
    st.monitor_start = state::process_start_time(pid).unwrap_or(0);
    dir.save(st)?;

    crate::logging::debug(&format!(
        "create {}: monitor pid {pid} ready; running create-time hooks",
        args.id
    ));
    let hooks = bundle.spec.hooks().as_ref();
    let payload = st.oci_json();
    hooks::run_all(
        "prestart",
        hooks.and_then(|h| h.prestart().as_ref()),
        &payload,
    )?;
    hooks::run_all(
        "createRuntime",
        hooks.and_then(|h| h.create_runtime().as_ref()),
        &payload,
    )?;
    chan.send(&Handshake::Go)?;

    if let Handshake::Done { vmm, .. } = expect(&mut chan, |m| matches!(m, Handshake::Done { .. }))?
    {
        st.vmm_pid = vmm;
        st.vmm_start = state::process_start_time(vmm).unwrap_or(0);
    }
    st.status = Status::Created;
    dir.save(st)?;
    crate::logging::debug(&format!("create {}: created", args.id));
    if let Some(p) = &args.pid_file {
        write_pid_file(p, pid)?;
    }
    Ok(())
}

fn expect(chan: &mut SyncChannel, ok: impl Fn(&Handshake) -> bool) -> Result<Handshake> {
    match chan.recv::<Handshake>()? {
        Handshake::Error { msg } => Err(CliError::Msg(msg)),
        m if ok(&m) => Ok(m),
        m => Err(CliError::Msg(format!("monitor: unexpected message {m:?}"))),
    }
}

/// Decimal digits, no newline, written atomically (as runc does).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = std::path::absolute(path).unwrap_or(path.to_path_buf());
    state::write_atomic(&path, pid.to_string().as_bytes())
        .map_err(CliError::io(format!("write pid file {}", path.display())))
}

fn owner() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}
