//! `exec`: run an extra process in a running container through a host
//! stand-in that lives exactly as long as that process.

use super::{CliError, Ctx, Result};
use crate::monitor::exit;
use crate::monitor::standin::Standin;
use crate::monitor::sync::{Handshake, SyncChannel, SYNC_FD};
use crate::state::Status;
use oci_spec::runtime::{Process, User};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unix socket that receives the pty master
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Current working directory in the container
    #[arg(long)]
    pub cwd: Option<String>,
    /// Set environment variables (KEY=VALUE)
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// UID (format: <uid>[:<gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Path to the process.json
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Detach from the process and return once it runs
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process's host pid to
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Accepted for compatibility (set inside the guest)
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Accepted for compatibility (set inside the guest)
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Set no_new_privs for the process
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Add a capability to the bounding set
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Pass N additional fds (not supported: must be 0)
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for compatibility
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Allow exec in a paused container
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// Container id
    pub id: String,
    /// Command and arguments (when no --process is given)
    #[arg(last = false, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct StandinArgs {
    pub id: String,
}

/// What the exec verb hands its detached stand-in.
#[derive(Serialize, Deserialize)]
struct StandinJob {
    process: Box<Process>,
    console_socket: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let dir = super::open(ctx, &args.id)?;
    let st = dir.load()?;
    match st.current_status() {
        Status::Created | Status::Running => {}
        Status::Paused if args.ignore_paused => {}
        Status::Paused => {
            return Err(CliError::Msg(
                "cannot exec in a paused container (use --ignore-paused)".into(),
            ))
        }
        _ => return Err(CliError::Msg("cannot exec in a stopped container".into())),
    }
    if args.preserve_fds > 0 {
        return Err(CliError::Msg(
            "--preserve-fds is not supported by microrun".into(),
        ));
    }
    let process = build_process(&args, dir.spec())?;
    let socket = dir.ctl_socket();
    // The lock serializes verbs that change the container; an exec runs long.
    drop(dir);
    let console_socket = args
        .console_socket
        .as_ref()
        .map(|p| std::path::absolute(p).unwrap_or(p.clone()));
    if args.detach {
        return detached(ctx, &args, process, console_socket);
    }
    exit::block_relayed();
    let standin = Standin::launch(&socket, &process, console_socket.as_deref())?;
    if let Some(p) = &args.pid_file {
        super::create::write_pid_file(p, std::process::id() as i32)?;
    }
    let status = standin.wait()?;
    exit::exit_like(status)
}

fn detached(
    ctx: &Ctx,
    args: &Args,
    process: Process,
    console_socket: Option<PathBuf>,
) -> Result<i32> {
    let (ours, theirs) = UnixStream::pair().map_err(CliError::io("socketpair"))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("microrun")
        .args(ctx.helper_args())
        .arg("exec-standin")
        .arg(&args.id);
    if process.terminal().unwrap_or(false) {
        // The workload's stdio is the pty: let go of the caller's. The
        // containerd shim reads `exec`'s output to EOF before it takes the
        // exec as started (and accepts resizes for it).
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    let fd = theirs.as_raw_fd();
    // SAFETY: setsid and dup2 are async-signal-safe; the stand-in gets its
    // own session (for its pty) and its sync channel at SYNC_FD.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::dup2(fd, SYNC_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(CliError::io("start exec stand-in"))?;
    drop(theirs);
    let mut chan = SyncChannel::new(ours);
    let job = StandinJob {
        process: Box::new(process),
        console_socket,
    };
    let res =
        chan.send(&job)
            .map_err(CliError::from)
            .and_then(|_| match chan.recv::<Handshake>()? {
                Handshake::Done { .. } => Ok(()),
                Handshake::Error { msg } => Err(CliError::Msg(msg)),
                m => Err(CliError::Msg(format!("exec: unexpected message {m:?}"))),
            });
    if let Err(e) = res {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    if let Some(p) = &args.pid_file {
        super::create::write_pid_file(p, child.id() as i32)?;
    }
    Ok(0)
}

/// The detached stand-in process (hidden verb).
pub fn standin_main(ctx: &Ctx, args: StandinArgs) -> Result<i32> {
    let mut chan = SyncChannel::from_inherited()
        .ok_or_else(|| CliError::Msg("exec-standin is internal to microrun".into()))?;
    let job: StandinJob = chan.recv()?;
    exit::block_relayed();
    let socket = crate::state::ctl_socket_path(&ctx.root, &args.id);
    match Standin::launch(&socket, &job.process, job.console_socket.as_deref()) {
        Ok(s) => {
            chan.send(&Handshake::Done { process: 0, vmm: 0 })?;
            drop(chan);
            let status = s.wait()?;
            exit::exit_like(status)
        }
        Err(e) => {
            let _ = chan.send(&Handshake::Error { msg: e.to_string() });
            Ok(1)
        }
    }
}

/// The process to run: from --process, or the container's own process
/// with the command line and flags applied (as runc does).
fn build_process(args: &Args, saved: Option<oci_spec::runtime::Spec>) -> Result<Process> {
    if let Some(p) = &args.process {
        let data =
            std::fs::read(p).map_err(CliError::io(format!("read process file {}", p.display())))?;
        let process: Process = serde_json::from_slice(&data)
            .map_err(|e| CliError::Msg(format!("invalid process file {}: {e}", p.display())))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(CliError::Msg("process args must not be empty".into()));
        }
        return Ok(process);
    }
    if args.command.is_empty() {
        return Err(CliError::Msg(
            "exec: no command given (and no --process)".into(),
        ));
    }
    let base = saved.and_then(|s| s.process().clone()).unwrap_or_default();
    let mut p = base;
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.into());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(u) = &args.user {
        let (uid, gid) = parse_user(u)?;
        let mut user = User::default();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if !args.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(args.additional_gids.clone()));
        p.set_user(user);
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

fn parse_user(s: &str) -> Result<(u32, u32)> {
    let bad = || CliError::Msg(format!("invalid --user {s:?}: want <uid>[:<gid>]"));
    let (u, g) = s.split_once(':').unwrap_or((s, "0"));
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}
