//! The per-container monitor: the container's host pid. It owns the sandbox
//! (the microVM), serves the control socket, relays signals and exits with
//! the workload's status.

pub mod ctl;
pub mod exit;
pub mod netns;
pub mod standin;
pub mod sync;

use crate::bundle::Bundle;
use crate::console;
use crate::hooks;
use crate::logging;
use crate::sandbox::{ContainerConfig, ProcessIo, Sandbox, SandboxFactory, INIT};
use crate::state::{self, Status, Store};
use ctl::{Request, Response};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
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
}

pub struct MonitorArgs {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub debug: bool,
}

/// Runs the monitor; never returns.
pub fn run(args: MonitorArgs, factory: SandboxFactory) -> ! {
    let Some(mut chan) = SyncChannel::from_inherited() else {
        logging::error(&MonitorError::NoSync.to_string());
        std::process::exit(1);
    };
    match prepare(&args, factory, &mut chan) {
        Ok(m) => {
            drop(chan);
            m.serve()
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = chan.send(&Handshake::Error { msg: msg.clone() });
            logging::debug(&format!("monitor {}: {msg}", args.id));
            std::process::exit(1)
        }
    }
}

struct Monitor {
    sandbox: Arc<dyn Sandbox>,
    listener: UnixListener,
    ctl_path: PathBuf,
    tty: Option<OwnedFd>,
    bundle: Bundle,
    store_root: PathBuf,
    id: String,
}

fn prepare(
    args: &MonitorArgs,
    factory: SandboxFactory,
    chan: &mut SyncChannel,
) -> Result<Monitor, MonitorError> {
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

    let store = Store::new(&args.root);
    let state_dir = args.root.join(&args.id);
    let config = ContainerConfig {
        id: args.id.clone(),
        bundle: bundle.path.clone(),
        rootfs: bundle.rootfs.clone(),
        state_dir: state_dir.clone(),
        spec: bundle.spec.clone(),
        debug: args.debug,
    };
    logging::debug(&format!("monitor {}: building the sandbox", args.id));
    let sandbox: Arc<dyn Sandbox> = Arc::from(factory(config)?);
    let fail = |e: MonitorError, sb: &Arc<dyn Sandbox>| {
        sb.shutdown();
        e
    };
    sandbox.boot().map_err(|e| fail(e.into(), &sandbox))?;
    let st = store.peek(&args.id)?;
    let hooks = bundle.spec.hooks().as_ref();
    hooks::run_all(
        "createContainer",
        hooks.and_then(|h| h.create_container().as_ref()),
        &st.oci_json(),
    )
    .map_err(|e| fail(e.into(), &sandbox))?;
    sandbox.create(io).map_err(|e| fail(e.into(), &sandbox))?;

    let ctl_path = state::ctl_socket_path(&args.root, &args.id);
    let _ = std::fs::remove_file(&ctl_path);
    let listener = crate::unixpath::bind(&ctl_path).map_err(|source| {
        sandbox.shutdown();
        MonitorError::Io {
            what: "bind control socket",
            source,
        }
    })?;
    chan.send(&Handshake::Done { process: INIT })?;
    Ok(Monitor {
        sandbox,
        listener,
        ctl_path,
        tty,
        bundle,
        store_root: args.root.clone(),
        id: args.id.clone(),
    })
}

fn detach_stdio() -> Result<(), MonitorError> {
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

impl Monitor {
    fn serve(self) -> ! {
        let Monitor {
            sandbox,
            listener,
            ctl_path,
            tty,
            bundle,
            store_root,
            id,
        } = self;
        let hooks = Arc::new(bundle);
        let tty = tty.map(Arc::new);
        let busy = Arc::new(InFlight::default());
        {
            let sandbox = sandbox.clone();
            let hooks = hooks.clone();
            let tty = tty.clone();
            let busy = busy.clone();
            microrun_protocol::threads::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let sandbox = sandbox.clone();
                    let ctx = ServeCtx {
                        bundle: hooks.clone(),
                        store: Store::new(&store_root),
                        id: id.clone(),
                        tty: tty.clone(),
                    };
                    let busy = busy.clone();
                    busy.enter();
                    microrun_protocol::threads::spawn(move || {
                        handle(&*sandbox, &ctx, conn);
                        busy.leave();
                    });
                }
            });
        }
        {
            let sandbox = sandbox.clone();
            microrun_protocol::threads::spawn(move || relay_signals(&*sandbox, INIT, tty));
        }
        let status = sandbox.wait(INIT);
        logging::debug(&format!("monitor: container exited: {status:?}"));
        sandbox.shutdown();
        // A request that ended the container (`kill` TERM) still gets its
        // answer: the caller would take a closed connection for a failure.
        busy.wait_idle(std::time::Duration::from_secs(2));
        let _ = std::fs::remove_file(&ctl_path);
        match status {
            Ok(s) => exit::exit_like(s),
            Err(e) => {
                logging::error(&format!("monitor: waiting for the container: {e}"));
                std::process::exit(255)
            }
        }
    }
}

/// Takes the relayed signals: SIGWINCH resizes, the rest go to the process.
pub(crate) fn relay_signals(sandbox: &dyn Sandbox, process: u32, tty: Option<Arc<OwnedFd>>) {
    let set = exit::relayed_set();
    loop {
        let Ok(sig) = set.wait() else { continue };
        if sig == nix::sys::signal::Signal::SIGWINCH {
            if let Some((rows, cols)) = tty.as_ref().and_then(console::window_size) {
                let _ = sandbox.resize(process, rows, cols);
            }
            continue;
        }
        let _ = sandbox.signal(process, sig as i32, false);
    }
}

/// Control requests being served.
#[derive(Default)]
struct InFlight {
    n: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

impl InFlight {
    fn enter(&self) {
        *self.n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn leave(&self) {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        self.idle.notify_all();
    }

    /// Waits until none is being served, or the timeout passes.
    fn wait_idle(&self, timeout: std::time::Duration) {
        let n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.idle.wait_timeout_while(n, timeout, |n| *n > 0);
    }
}

struct ServeCtx {
    bundle: Arc<Bundle>,
    store: Store,
    id: String,
    /// The init's pty, when it has one.
    tty: Option<Arc<OwnedFd>>,
}

fn handle(sandbox: &dyn Sandbox, ctx: &ServeCtx, conn: UnixStream) {
    let resp = match ctl::read_request(&conn) {
        Ok((req, fds)) => dispatch(sandbox, ctx, req, fds),
        Err(e) => Response::Error { msg: e.to_string() },
    };
    let _ = ctl::write_response(&conn, &resp);
}

fn dispatch(sandbox: &dyn Sandbox, ctx: &ServeCtx, req: Request, fds: Vec<OwnedFd>) -> Response {
    let res = match req {
        Request::Start => start(sandbox, ctx).map(|_| Response::Ok),
        Request::Signal {
            process,
            signal,
            all,
        } => sandbox
            .signal(process, signal, all)
            .map(|_| Response::Ok)
            .map_err(|e| e.to_string()),
        Request::Exec { process, tty } => match exec_io(fds, tty) {
            Some(io) => sandbox
                .exec(&process, io)
                .map(|process| Response::Exec { process })
                .map_err(|e| e.to_string()),
            None => Err("exec: wrong number of stdio fds".to_string()),
        },
        Request::Wait { process } => sandbox
            .wait(process)
            .map(|status| Response::Exited { status })
            .map_err(|e| e.to_string()),
        Request::Resize {
            process,
            rows,
            cols,
        } => sandbox
            .resize(process, rows, cols)
            .map(|_| Response::Ok)
            .map_err(|e| e.to_string()),
        Request::Stats => sandbox
            .stats()
            .map(|stats| Response::Stats { stats })
            .map_err(|e| e.to_string()),
        Request::Pause => sandbox
            .pause()
            .map(|_| Response::Ok)
            .map_err(|e| e.to_string()),
        Request::Resume => sandbox
            .resume()
            .map(|_| Response::Ok)
            .map_err(|e| e.to_string()),
        Request::Update { resources } => sandbox
            .update(&resources)
            .map(|_| Response::Ok)
            .map_err(|e| e.to_string()),
        Request::Pids => sandbox
            .host_pids()
            .map(|pids| Response::Pids { pids })
            .map_err(|e| e.to_string()),
    };
    res.unwrap_or_else(|msg| Response::Error { msg })
}

fn start(sandbox: &dyn Sandbox, ctx: &ServeCtx) -> Result<(), String> {
    let st = ctx.store.peek(&ctx.id).map_err(|e| e.to_string())?;
    if st.status != Status::Created {
        return Err(format!("cannot start a container in state {}", st.status));
    }
    let hooks = ctx.bundle.spec.hooks().as_ref();
    if let Err(e) = hooks::run_all(
        "startContainer",
        hooks.and_then(|h| h.start_container().as_ref()),
        &st.oci_json(),
    ) {
        // A failed startContainer hook ends the container, as with runc.
        sandbox.shutdown();
        return Err(e.to_string());
    }
    // The size set on the master so far (docker sets it between create and
    // start) reaches the guest pty before the workload runs.
    if let Some((rows, cols)) = ctx.tty.as_ref().and_then(console::set_size) {
        sandbox
            .resize(INIT, rows, cols)
            .map_err(|e| e.to_string())?;
    }
    sandbox.start().map_err(|e| e.to_string())
}

fn exec_io(fds: Vec<OwnedFd>, tty: bool) -> Option<ProcessIo> {
    let mut it = fds.into_iter();
    match (tty, it.len()) {
        (true, 1) => Some(ProcessIo::Terminal(it.next()?)),
        (false, 3) => Some(ProcessIo::Pipes {
            stdin: it.next()?,
            stdout: it.next()?,
            stderr: it.next()?,
        }),
        _ => None,
    }
}
