//! The process that holds a VM: it boots the VM for the container it was
//! forked for, takes the containers that join it later, serves the control
//! socket of each, and exits once the last of them is gone. Each container
//! has a stand-in process (its host pid) that holds a connection to this
//! one: when the stand-in dies (SIGKILL), its container is killed.

use super::ctl::{self, Request, Response};
use super::sync::{Handshake, SyncChannel};
use super::{exit, MonitorArgs, MonitorError, Prepared};
use crate::bundle::Bundle;
use crate::console;
use crate::hooks;
use crate::logging;
use crate::sandbox::{ContainerConfig, ProcessId, ProcessIo, Sandbox, SandboxFactory, INIT};
use crate::state::{self, Status, Store};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a container's control socket outlives its init for the
/// stand-in to fetch the status.
const STANDIN_GRACE: Duration = Duration::from_secs(10);

/// Runs in the child of the first container's monitor; never returns.
pub(super) fn run(
    args: &MonitorArgs,
    factory: SandboxFactory,
    mut chan: SyncChannel,
    p: Prepared,
    lifeline: UnixStream,
    standin: i32,
) -> ! {
    // Out of the stand-in's session: its terminal's signals are its own.
    let _ = nix::unistd::setsid();
    // Told apart from the stand-in, which has the same command line.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"microrun-vm".as_ptr(), 0, 0, 0) };
    // Signals sent to this process are not the workload's (the stand-in
    // relays those): they act as they would on any process.
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&exit::relayed_set()),
        None,
    );
    match boot(args, factory, &mut chan, p, lifeline, standin) {
        Ok(host) => {
            drop(chan);
            host.serve_until_empty()
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = chan.send(&Handshake::Error { msg: msg.clone() });
            logging::debug(&format!("monitor {}: {msg}", args.id));
            std::process::exit(1)
        }
    }
}

fn boot(
    args: &MonitorArgs,
    factory: SandboxFactory,
    chan: &mut SyncChannel,
    p: Prepared,
    mut lifeline: UnixStream,
    standin: i32,
) -> Result<Arc<Host>, MonitorError> {
    let Prepared { bundle, io, tty } = p;
    let store = Store::new(&args.root);
    let config = ContainerConfig {
        id: args.id.clone(),
        bundle: bundle.path.clone(),
        rootfs: bundle.rootfs.clone(),
        state_dir: args.root.join(&args.id),
        spec: bundle.spec.clone(),
        debug: args.debug,
        joins: Vec::new(),
        trees: None,
    };
    logging::debug(&format!("monitor {}: building the sandbox", args.id));
    let sandbox: Arc<dyn Sandbox> = Arc::from(factory(config.clone())?);
    let built = (|| {
        sandbox.boot()?;
        let st = store.peek(&args.id)?;
        let hooks = bundle.spec.hooks().as_ref();
        hooks::run_all(
            "createContainer",
            hooks.and_then(|h| h.create_container().as_ref()),
            &st.oci_json(),
        )?;
        sandbox.create(&config, io)?;
        let listener = bind_ctl(&args.root, &args.id)?;
        Ok::<_, MonitorError>(listener)
    })();
    let listener = match built {
        Ok(l) => l,
        Err(e) => {
            sandbox.shutdown();
            return Err(e);
        }
    };
    let host = Arc::new(Host {
        sandbox,
        root: args.root.clone(),
        first: args.id.clone(),
        members: Mutex::default(),
        emptied: Condvar::new(),
    });
    chan.send(&Handshake::Done {
        process: INIT,
        vmm: std::process::id() as i32,
    })?;
    // The stand-in may now wait on the control socket.
    lifeline
        .write_all(b"1")
        .map_err(|source| MonitorError::Io {
            what: "tell the stand-in",
            source,
        })?;
    host.admit(
        Hosted::new(&args.root, &args.id, bundle, tty, INIT, standin),
        listener,
        lifeline,
    );
    Ok(host)
}

fn bind_ctl(root: &Path, id: &str) -> Result<UnixListener, MonitorError> {
    let path = state::ctl_socket_path(root, id);
    let _ = std::fs::remove_file(&path);
    crate::unixpath::bind(&path).map_err(|source| MonitorError::Io {
        what: "bind control socket",
        source,
    })
}

struct Host {
    sandbox: Arc<dyn Sandbox>,
    root: PathBuf,
    /// The container the VM was booted for.
    first: String,
    members: Mutex<HashMap<String, Arc<Hosted>>>,
    emptied: Condvar,
}

/// A container in the VM, as this process serves it.
struct Hosted {
    id: String,
    bundle: Bundle,
    /// The init's pty slave, when it has one.
    tty: Option<OwnedFd>,
    init: ProcessId,
    /// The container's host pid.
    standin: i32,
    ctl_path: PathBuf,
    busy: InFlight,
    /// The init has exited.
    ended: AtomicBool,
    /// The stand-in has let go of its connection (exited or died).
    standin_gone: (Mutex<bool>, Condvar),
}

impl Hosted {
    fn new(
        root: &Path,
        id: &str,
        bundle: Bundle,
        tty: Option<OwnedFd>,
        init: ProcessId,
        standin: i32,
    ) -> Hosted {
        Hosted {
            id: id.to_string(),
            bundle,
            tty,
            init,
            standin,
            ctl_path: state::ctl_socket_path(root, id),
            busy: InFlight::default(),
            ended: AtomicBool::new(false),
            standin_gone: (Mutex::new(false), Condvar::new()),
        }
    }

    /// Process 0 on a container's socket is that container's init.
    fn process(&self, p: ProcessId) -> ProcessId {
        if p == INIT {
            self.init
        } else {
            p
        }
    }

    fn wait_standin_gone(&self, timeout: Duration) {
        let (m, cv) = &self.standin_gone;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cv.wait_timeout_while(g, timeout, |gone| !*gone);
    }
}

impl Host {
    /// Serves a container: its control socket, its stand-in's connection,
    /// and its end.
    fn admit(self: &Arc<Self>, hosted: Hosted, listener: UnixListener, lifeline: UnixStream) {
        let hosted = Arc::new(hosted);
        if let Ok(mut m) = self.members.lock() {
            m.insert(hosted.id.clone(), hosted.clone());
        }
        let listen_fd = listener.as_raw_fd();
        {
            let host = self.clone();
            let hosted = hosted.clone();
            microrun_protocol::threads::spawn(move || {
                while let Ok((conn, _)) = listener.accept() {
                    let host = host.clone();
                    let hosted = hosted.clone();
                    hosted.busy.enter();
                    microrun_protocol::threads::spawn(move || {
                        host.handle(&hosted, conn);
                        hosted.busy.leave();
                    });
                }
            });
        }
        {
            let host = self.clone();
            let hosted = hosted.clone();
            microrun_protocol::threads::spawn(move || {
                let mut lifeline = lifeline;
                let mut buf = [0u8; 64];
                while matches!(lifeline.read(&mut buf), Ok(n) if n > 0) {}
                {
                    let (m, cv) = &hosted.standin_gone;
                    *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    cv.notify_all();
                }
                // The stand-in died before its container: SIGKILL of the
                // container's pid kills the container, as with runc.
                if !hosted.ended.load(Ordering::SeqCst) {
                    let _ = host
                        .sandbox
                        .signal(&hosted.id, hosted.init, libc::SIGKILL, true);
                }
            });
        }
        let host = self.clone();
        microrun_protocol::threads::spawn(move || {
            let status = host.sandbox.wait(hosted.init);
            logging::debug(&format!(
                "monitor: container {} exited: {status:?}",
                hosted.id
            ));
            hosted.ended.store(true, Ordering::SeqCst);
            hosted.wait_standin_gone(STANDIN_GRACE);
            // A request that ended the container (`kill` TERM) still gets its
            // answer: the caller would take a closed connection for a failure.
            hosted.busy.wait_idle(Duration::from_secs(2));
            // SAFETY: shutdown on the listener's fd, which the accept thread
            // still owns; it only wakes that thread's accept.
            unsafe { libc::shutdown(listen_fd, libc::SHUT_RDWR) };
            if hosted.id == host.first {
                // The caller's stdio must see EOF now, not when the VM ends.
                let _ = super::detach_stdio();
            }
            host.sandbox.remove(&hosted.id);
            // Last: `delete` takes the socket's end for the container's.
            let _ = std::fs::remove_file(&hosted.ctl_path);
            if let Ok(mut m) = host.members.lock() {
                m.remove(&hosted.id);
            }
            host.emptied.notify_all();
        });
    }

    fn serve_until_empty(&self) -> ! {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        while !m.is_empty() {
            m = self.emptied.wait(m).unwrap_or_else(|e| e.into_inner());
        }
        drop(m);
        self.sandbox.shutdown();
        std::process::exit(0)
    }

    fn handle(self: &Arc<Self>, hosted: &Arc<Hosted>, conn: UnixStream) {
        let resp = match ctl::read_request(&conn) {
            Ok((Request::Join { .. }, _)) if hosted.ended.load(Ordering::SeqCst) => {
                Response::Error {
                    msg: format!("container {} is not running", hosted.id),
                }
            }
            Ok((
                Request::Join {
                    id,
                    bundle,
                    tty,
                    joins,
                    debug,
                    bind_trees,
                },
                fds,
            )) => {
                match self.join(&conn, id, &bundle, tty, joins, debug, bind_trees, fds) {
                    // The connection is the new stand-in's: it is watched.
                    Ok(()) => return,
                    Err(msg) => Response::Error { msg },
                }
            }
            Ok((req, fds)) => self.dispatch(hosted, req, fds),
            Err(e) => Response::Error { msg: e.to_string() },
        };
        let _ = ctl::write_response(&conn, &resp);
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        self: &Arc<Self>,
        conn: &UnixStream,
        id: String,
        bundle: &Path,
        tty: bool,
        joins: Vec<(String, String)>,
        debug: bool,
        bind_trees: Vec<usize>,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), String> {
        let n_stdio = if tty { 1 } else { 3 };
        if fds.len() != n_stdio + 1 + bind_trees.len() {
            return Err("join: wrong number of fds".into());
        }
        let mut tree_fds = fds.split_off(n_stdio).into_iter();
        let trees = crate::vmm::share::Trees {
            root: tree_fds.next(),
            binds: bind_trees.into_iter().zip(tree_fds).collect(),
        };
        crate::ids::validate(&id).map_err(|e| e.to_string())?;
        if self
            .members
            .lock()
            .map_err(|e| e.to_string())?
            .contains_key(&id)
        {
            return Err(format!("container {id} is already in this microVM"));
        }
        let io = exec_io(fds, tty).ok_or("join: wrong number of stdio fds")?;
        let bundle = Bundle::load(bundle).map_err(|e| e.to_string())?;
        let keep_tty = match &io {
            ProcessIo::Terminal(t) => Some(t.try_clone().map_err(|e| e.to_string())?),
            ProcessIo::Pipes { .. } => None,
        };
        let standin =
            nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
                .map(|c| c.pid())
                .map_err(|e| format!("join: peer of the control socket: {e}"))?;
        let st = Store::new(&self.root)
            .peek(&id)
            .map_err(|e| e.to_string())?;
        let hooks = bundle.spec.hooks().as_ref();
        hooks::run_all(
            "createContainer",
            hooks.and_then(|h| h.create_container().as_ref()),
            &st.oci_json(),
        )
        .map_err(|e| e.to_string())?;
        let config = ContainerConfig {
            id: id.clone(),
            bundle: bundle.path.clone(),
            rootfs: bundle.rootfs.clone(),
            state_dir: self.root.join(&id),
            spec: bundle.spec.clone(),
            debug,
            joins,
            trees: Some(Arc::new(trees)),
        };
        let init = self
            .sandbox
            .create(&config, io)
            .map_err(|e| e.to_string())?;
        let listener = match bind_ctl(&self.root, &id) {
            Ok(l) => l,
            Err(e) => {
                let _ = self.sandbox.signal(&id, init, libc::SIGKILL, true);
                self.sandbox.remove(&id);
                return Err(e.to_string());
            }
        };
        let lifeline = conn.try_clone().map_err(|e| e.to_string())?;
        let resp = Response::Joined {
            vmm: std::process::id() as i32,
        };
        self.admit(
            Hosted::new(&self.root, &id, bundle, keep_tty, init, standin),
            listener,
            lifeline,
        );
        // A stand-in that is gone by now is seen by the lifeline's watcher.
        let _ = ctl::write_response(conn, &resp);
        Ok(())
    }

    fn dispatch(&self, hosted: &Hosted, req: Request, fds: Vec<OwnedFd>) -> Response {
        let sb = &*self.sandbox;
        let id = hosted.id.as_str();
        let done = |r: Result<(), crate::sandbox::SandboxError>| {
            r.map(|_| Response::Ok).map_err(|e| e.to_string())
        };
        let res = match req {
            Request::Start => self.start(hosted).map(|_| Response::Ok),
            Request::Signal {
                process,
                signal,
                all,
            } => done(sb.signal(id, hosted.process(process), signal, all)),
            Request::Exec { process, tty } => match exec_io(fds, tty) {
                Some(io) => sb
                    .exec(id, &process, io)
                    .map(|process| Response::Exec { process })
                    .map_err(|e| e.to_string()),
                None => Err("exec: wrong number of stdio fds".to_string()),
            },
            Request::Wait { process } => sb
                .wait(hosted.process(process))
                .map(|status| Response::Exited { status })
                .map_err(|e| e.to_string()),
            Request::Resize {
                process,
                rows,
                cols,
            } => done(sb.resize(hosted.process(process), rows, cols)),
            Request::Stats => sb
                .stats(id)
                .map(|stats| Response::Stats { stats })
                .map_err(|e| e.to_string()),
            Request::Pause => done(sb.pause(id)),
            Request::Resume => done(sb.resume(id)),
            Request::Update { resources } => done(sb.update(id, &resources)),
            Request::Pids => sb
                .host_pids(id)
                .map(|more| {
                    let mut pids = vec![hosted.standin];
                    pids.extend(more);
                    Response::Pids { pids }
                })
                .map_err(|e| e.to_string()),
            Request::Join { .. } => Err("join: handled elsewhere".to_string()),
        };
        res.unwrap_or_else(|msg| Response::Error { msg })
    }

    fn start(&self, hosted: &Hosted) -> Result<(), String> {
        let store = Store::new(&self.root);
        let st = store.peek(&hosted.id).map_err(|e| e.to_string())?;
        if st.status != Status::Created {
            return Err(format!("cannot start a container in state {}", st.status));
        }
        let hooks = hosted.bundle.spec.hooks().as_ref();
        if let Err(e) = hooks::run_all(
            "startContainer",
            hooks.and_then(|h| h.start_container().as_ref()),
            &st.oci_json(),
        ) {
            // A failed startContainer hook ends the container, as with runc.
            let _ = self
                .sandbox
                .signal(&hosted.id, hosted.init, libc::SIGKILL, true);
            return Err(e.to_string());
        }
        // The size set on the master so far (docker sets it between create and
        // start) reaches the guest pty before the workload runs.
        if let Some((rows, cols)) = hosted.tty.as_ref().and_then(console::set_size) {
            self.sandbox
                .resize(hosted.init, rows, cols)
                .map_err(|e| e.to_string())?;
        }
        self.sandbox.start(&hosted.id).map_err(|e| e.to_string())
    }
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

/// Control requests being served.
#[derive(Default)]
struct InFlight {
    n: Mutex<usize>,
    idle: Condvar,
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
    fn wait_idle(&self, timeout: Duration) {
        let n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.idle.wait_timeout_while(n, timeout, |n| *n > 0);
    }
}
