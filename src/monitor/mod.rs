//! The per-container monitor. For a container that gets a VM of its own it
//! splits in two before any thread exists: the parent stays the
//! container's host pid, a stand-in that relays signals and exits as the
//! workload did; the child holds the VM (`vm_process`) and serves the
//! control sockets of every container in it. A container that joins
//! another's namespaces is only a stand-in: it hands its stdio to the
//! process that holds that VM.

pub mod ctl;
pub mod exit;
pub mod join;
pub mod standin;
pub mod sync;
mod vm_process;

use crate::bundle::Bundle;
use crate::console;
use crate::hooks;
use crate::logging;
use crate::netns;
use crate::sandbox::{ProcessIo, SandboxFactory, INIT};
use crate::state;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use sync::{Handshake, SyncChannel};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MonitorError {
    #[error("monitor: started without its sync channel (internal command)")]
    NoSync,
    #[error(transparent)]
    Sync(#[from] sync::SyncError),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Net(#[from] netns::NetnsError),
    #[error("cannot allocate tty if runc will detach without setting console socket")]
    NoConsoleSocket,
    #[error("monitor: {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("monitor: unexpected handshake message {0:?}")]
    Protocol(String),
    #[error(transparent)]
    Ctl(#[from] ctl::CtlError),
    #[error(transparent)]
    Share(#[from] crate::vmm::share::ShareError),
}

pub struct MonitorArgs {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub debug: bool,
    /// Set for a container that joins another's VM.
    pub join: Option<JoinArgs>,
}

pub struct JoinArgs {
    /// A container of the VM to join (its control socket reaches the VM).
    pub target: String,
    /// (`ipc`, `uts` or `pid`; the container whose namespace is shared)
    pub joins: Vec<(String, String)>,
}

/// Runs the monitor; never returns.
pub fn run(args: MonitorArgs, factory: SandboxFactory) -> ! {
    let Some(mut chan) = SyncChannel::from_inherited() else {
        logging::error(&MonitorError::NoSync.to_string());
        std::process::exit(1);
    };
    let prepared = prepare(&args, &mut chan);
    let res = match (prepared, &args.join) {
        (Ok(p), None) => split(&args, factory, chan, p),
        (Ok(p), Some(j)) => join_vm(&args, j, chan, p),
        (Err(e), _) => Err(Box::new((e, chan))),
    };
    let Err(failed) = res;
    let (e, mut chan) = *failed;
    let msg = e.to_string();
    let _ = chan.send(&Handshake::Error { msg: msg.clone() });
    logging::debug(&format!("monitor {}: {msg}", args.id));
    std::process::exit(1)
}

/// What the monitor has made before the container's VM is reached.
pub(crate) struct Prepared {
    bundle: Bundle,
    io: ProcessIo,
    /// The pty slave, kept for window sizes.
    tty: Option<OwnedFd>,
}

type Failed = Box<(MonitorError, SyncChannel)>;

fn prepare(args: &MonitorArgs, chan: &mut SyncChannel) -> Result<Prepared, MonitorError> {
    // Own session: the caller's terminal signals never reach the VM, and a
    // pty can become our controlling terminal for SIGWINCH.
    let _ = nix::unistd::setsid();
    let bundle = Bundle::load(&args.bundle)?;
    netns::enter(&bundle.spec)?;

    let (io, tty) = if bundle.terminal() {
        let sock = args
            .console_socket
            .as_ref()
            .ok_or(MonitorError::NoConsoleSocket)?;
        let pty = console::open_pty()?;
        console::send_master(sock, &pty)?;
        let _ = console::set_controlling(&pty.slave);
        let keep = dup(&pty.slave)?;
        // The workload's stdio is the pty: let go of the caller's. The
        // containerd shim reads `create`'s output to EOF, and would wait
        // forever on fds the monitor kept open.
        detach_stdio()?;
        (ProcessIo::Terminal(pty.slave), Some(keep))
    } else {
        let io = ProcessIo::Pipes {
            stdin: dup(&std::io::stdin())?,
            stdout: dup(&std::io::stdout())?,
            stderr: dup(&std::io::stderr())?,
        };
        (io, None)
    };
    // Before any thread exists, so that only the relay thread takes them.
    exit::block_relayed();

    chan.send(&Handshake::Ready)?;
    match chan.recv::<Handshake>()? {
        Handshake::Go => {}
        other => return Err(MonitorError::Protocol(format!("{other:?}"))),
    }
    Ok(Prepared { bundle, io, tty })
}

/// A container with a VM of its own: the child holds the VM, this process
/// stays the container's pid as its stand-in.
fn split(
    args: &MonitorArgs,
    factory: SandboxFactory,
    chan: SyncChannel,
    p: Prepared,
) -> Result<std::convert::Infallible, Failed> {
    let (mut ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(source) => {
            let e = MonitorError::Io {
                what: "socketpair",
                source,
            };
            return Err(Box::new((e, chan)));
        }
    };
    let standin_pid = std::process::id() as i32;
    // SAFETY: the process is single-threaded here (no thread is made before
    // this point), so the child may run any code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ours);
            vm_process::run(args, factory, chan, p, theirs, standin_pid)
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(theirs);
            // The VM's process has its own copies; create hears from it.
            drop(chan);
            let Prepared { io, tty, .. } = p;
            drop(io);
            if tty.is_none() {
                let _ = detach_stdio();
            }
            let mut ready = [0u8; 1];
            if !matches!(ours.read(&mut ready), Ok(1)) {
                // The VM's process failed and told create why.
                std::process::exit(1);
            }
            stand_in(args, tty, ours)
        }
        Err(e) => Err(Box::new((
            MonitorError::Io {
                what: "fork",
                source: e.into(),
            },
            chan,
        ))),
    }
}

/// A container that joins another's VM: its stdio and bundle go to the
/// process that holds the VM; this process stays its stand-in.
fn join_vm(
    args: &MonitorArgs,
    j: &JoinArgs,
    mut chan: SyncChannel,
    p: Prepared,
) -> Result<std::convert::Infallible, Failed> {
    let Prepared { bundle, io, tty } = p;
    // The rootfs and bind sources as this (the caller's) mount namespace
    // has them: the VM's process may not see mounts made since it began.
    let mounts = bundle.spec.mounts().clone().unwrap_or_default();
    let trees = match crate::vmm::share::Trees::clone_from(&bundle.rootfs, &mounts) {
        Ok(t) => t,
        Err(e) => return Err(Box::new((e.into(), chan))),
    };
    let mut bind_trees: Vec<usize> = trees.binds.keys().copied().collect();
    bind_trees.sort_unstable();
    let (mut fds, is_tty): (Vec<RawFd>, bool) = match &io {
        ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        } => (
            vec![stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()],
            false,
        ),
        ProcessIo::Terminal(slave) => (vec![slave.as_raw_fd()], true),
    };
    fds.extend(trees.root.as_ref().map(|t| t.as_raw_fd()));
    fds.extend(
        bind_trees
            .iter()
            .filter_map(|i| trees.binds.get(i))
            .map(|t| t.as_raw_fd()),
    );
    let req = ctl::Request::Join {
        id: args.id.clone(),
        bundle: bundle.path.clone(),
        tty: is_tty,
        joins: j.joins.clone(),
        debug: args.debug,
        bind_trees,
    };
    let target = state::ctl_socket_path(&args.root, &j.target);
    let (vmm, lifeline) = match ctl::call_keep(&target, &req, &fds) {
        Ok((ctl::Response::Joined { vmm }, conn)) => (vmm, conn),
        Ok((other, _)) => {
            return Err(Box::new((
                MonitorError::Protocol(format!("{other:?}")),
                chan,
            )));
        }
        Err(e) => return Err(Box::new((e.into(), chan))),
    };
    drop(io);
    drop(trees);
    if let Err(e) = chan.send(&Handshake::Done { process: INIT, vmm }) {
        return Err(Box::new((e.into(), chan)));
    }
    drop(chan);
    if tty.is_none() {
        let _ = detach_stdio();
    }
    stand_in(args, tty, lifeline)
}

/// The rest of a stand-in's life: relay signals to the container's init,
/// hold the lifeline to the VM's process, exit as the init did.
fn stand_in(args: &MonitorArgs, tty: Option<OwnedFd>, lifeline: UnixStream) -> ! {
    let ctl = state::ctl_socket_path(&args.root, &args.id);
    let status = standin::Standin::init(&ctl, tty).wait();
    drop(lifeline);
    match status {
        Ok(s) => exit::exit_like(s),
        // The VM's process is gone: the container died with it.
        Err(_) => exit::exit_like(crate::sandbox::ExitStatus::Signal(libc::SIGKILL)),
    }
}

pub(crate) fn detach_stdio() -> Result<(), MonitorError> {
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| MonitorError::Io {
            what: "open /dev/null",
            source,
        })?;
    for target in 0..3 {
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target).map_err(|e| {
            MonitorError::Io {
                what: "redirect stdio",
                source: e.into(),
            }
        })?;
    }
    Ok(())
}

fn dup(fd: &impl AsFd) -> Result<OwnedFd, MonitorError> {
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|source| MonitorError::Io {
            what: "dup stdio",
            source,
        })
}
