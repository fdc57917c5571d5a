//! `microrun-double`: the microrun CLI and monitor with an in-test sandbox
//! double that runs the workload as plain host processes. It exists only so
//! that integration tests can drive the state machine, stdio, signals and
//! exit statuses on machines without a usable KVM. It is never installed.

use microrun::sandbox::{
    ContainerConfig, ExitStatus, ProcessId, ProcessIo, Sandbox, SandboxError, Stats, INIT,
};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Condvar, Mutex, OnceLock};

const BARRIER_ARG: &str = "__double_barrier";

struct Proc {
    pid: i32,
    tty: Option<OwnedFd>,
    status: Option<ExitStatus>,
}

struct Double {
    config: ContainerConfig,
    procs: Mutex<HashMap<ProcessId, Proc>>,
    exited: Condvar,
    next: AtomicU32,
    barrier: Mutex<Option<std::fs::File>>,
}

fn err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Failed(e.to_string())
}

impl Double {
    fn spawn(
        &self,
        process: &Process,
        io: ProcessIo,
        barrier: Option<OwnedFd>,
    ) -> Result<i32, SandboxError> {
        let args = process.args().clone().unwrap_or_default();
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(BARRIER_ARG).args(&args);
        cmd.env_clear();
        for kv in process.env().iter().flatten() {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        let cwd = process.cwd();
        cmd.current_dir(if cwd.is_dir() {
            cwd.as_path()
        } else {
            std::path::Path::new("/")
        });
        let tty = match io {
            ProcessIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                cmd.stdin(Stdio::from(stdin))
                    .stdout(Stdio::from(stdout))
                    .stderr(Stdio::from(stderr));
                None
            }
            ProcessIo::Terminal(slave) => {
                let keep = slave.try_clone().map_err(err)?;
                cmd.stdin(Stdio::from(slave.try_clone().map_err(err)?))
                    .stdout(Stdio::from(slave.try_clone().map_err(err)?))
                    .stderr(Stdio::from(slave));
                Some(keep)
            }
        };
        let barrier_fd = barrier.as_ref().map(|b| b.as_raw_fd()).unwrap_or(-1);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Like a VM, the workload dies with its monitor.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setsid();
                if barrier_fd >= 0 {
                    libc::dup2(barrier_fd, 3);
                }
                Ok(())
            });
        }
        // Spawn from a thread that lives as long as the monitor: the child's
        // parent-death signal fires when the spawning thread ends.
        let child = on_spawner(move || cmd.spawn()).map_err(err)?;
        drop(barrier);
        let pid = child.id() as i32;
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        self.procs.lock().unwrap().insert(
            id,
            Proc {
                pid,
                tty,
                status: None,
            },
        );
        Ok(pid)
    }

    fn pid(&self, process: ProcessId) -> Result<i32, SandboxError> {
        let procs = self.procs.lock().unwrap();
        let p = procs.get(&process).ok_or(SandboxError::NoSuchProcess)?;
        if p.status.is_some() {
            return Err(SandboxError::NoSuchProcess);
        }
        Ok(p.pid)
    }
}

impl Sandbox for Double {
    fn boot(&self) -> Result<(), SandboxError> {
        if self
            .config
            .spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get("test.fail-boot"))
            .is_some()
        {
            return Err(SandboxError::Failed(
                "double: boot failed as the test asked".into(),
            ));
        }
        Ok(())
    }

    fn create(&self, c: &ContainerConfig, io: ProcessIo) -> Result<ProcessId, SandboxError> {
        if c.id != self.config.id {
            return Err(SandboxError::NotImplemented(
                "the test double holds one container: joining it is not implemented".into(),
            ));
        }
        let (r, w) = nix::unistd::pipe().map_err(err)?;
        let process = self
            .config
            .spec
            .process()
            .clone()
            .ok_or_else(|| err("no process"))?;
        *self.barrier.lock().unwrap() = Some(std::fs::File::from(w));
        self.spawn(&process, io, Some(r))?;
        Ok(INIT)
    }

    fn start(&self, _id: &str) -> Result<(), SandboxError> {
        match self.barrier.lock().unwrap().take() {
            Some(mut w) => w.write_all(b"g").map_err(err),
            None => Err(err("already started")),
        }
    }

    fn signal(
        &self,
        _id: &str,
        process: ProcessId,
        signal: i32,
        all: bool,
    ) -> Result<(), SandboxError> {
        let sig = Signal::try_from(signal).map_err(err)?;
        if all {
            let procs = self.procs.lock().unwrap();
            for p in procs.values().filter(|p| p.status.is_none()) {
                let _ = killpg(Pid::from_raw(p.pid), sig);
            }
            return Ok(());
        }
        kill(Pid::from_raw(self.pid(process)?), sig).map_err(|_| SandboxError::NoSuchProcess)
    }

    fn exec(&self, _id: &str, process: &Process, io: ProcessIo) -> Result<ProcessId, SandboxError> {
        let id = self.next.load(Ordering::SeqCst);
        self.spawn(process, io, None)?;
        Ok(id)
    }

    fn wait(&self, process: ProcessId) -> Result<ExitStatus, SandboxError> {
        let pid = {
            let procs = self.procs.lock().unwrap();
            let p = procs.get(&process).ok_or(SandboxError::NoSuchProcess)?;
            if let Some(s) = p.status {
                return Ok(s);
            }
            p.pid
        };
        let status = match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => Some(ExitStatus::Code(c)),
            Ok(WaitStatus::Signaled(_, s, _)) => Some(ExitStatus::Signal(s as i32)),
            _ => None,
        };
        let mut procs = self.procs.lock().unwrap();
        if let Some(s) = status {
            if let Some(p) = procs.get_mut(&process) {
                p.status = Some(s);
                p.tty = None;
            }
            self.exited.notify_all();
            return Ok(s);
        }
        // Another thread reaped it: wait for its record.
        loop {
            if let Some(s) = procs.get(&process).and_then(|p| p.status) {
                return Ok(s);
            }
            procs = self.exited.wait(procs).unwrap();
        }
    }

    fn resize(&self, process: ProcessId, rows: u16, cols: u16) -> Result<(), SandboxError> {
        let procs = self.procs.lock().unwrap();
        let p = procs.get(&process).ok_or(SandboxError::NoSuchProcess)?;
        match &p.tty {
            Some(t) => microrun::console::set_window_size(t, rows, cols).map_err(err),
            None => Err(err("process has no terminal")),
        }
    }

    fn stats(&self, _id: &str) -> Result<Stats, SandboxError> {
        let procs = self.procs.lock().unwrap();
        Ok(Stats {
            pids_current: procs.values().filter(|p| p.status.is_none()).count() as u64,
            ..Stats::default()
        })
    }

    fn pause(&self, id: &str) -> Result<(), SandboxError> {
        self.signal(id, INIT, libc::SIGSTOP, true)
    }

    fn resume(&self, id: &str) -> Result<(), SandboxError> {
        self.signal(id, INIT, libc::SIGCONT, true)
    }

    fn update(&self, _id: &str, _resources: &LinuxResources) -> Result<(), SandboxError> {
        Ok(())
    }

    fn host_pids(&self, _id: &str) -> Result<Vec<i32>, SandboxError> {
        let procs = self.procs.lock().unwrap();
        Ok(procs
            .values()
            .filter(|p| p.status.is_none())
            .map(|p| p.pid)
            .collect())
    }

    fn shutdown(&self) {
        let _ = self.signal("", INIT, libc::SIGKILL, true);
    }

    fn remove(&self, id: &str) {
        let _ = self.signal(id, INIT, libc::SIGKILL, true);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on the process-lifetime spawner thread and returns its result.
fn on_spawner<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for job in rx {
                job();
            }
        });
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = rtx.send(f());
    });
    tx.lock().unwrap().send(job).expect("spawner thread runs");
    rrx.recv().expect("spawner answers")
}

fn factory(config: ContainerConfig) -> Result<Box<dyn Sandbox>, SandboxError> {
    Ok(Box::new(Double {
        config,
        procs: Mutex::new(HashMap::new()),
        exited: Condvar::new(),
        next: AtomicU32::new(INIT),
        barrier: Mutex::new(None),
    }))
}

/// The pre-start stage of a double workload: wait at the barrier (fd 3, if
/// any), then become the workload.
fn barrier_main(args: Vec<String>) -> ! {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 3 is the barrier pipe placed by the double (or absent, in
    // which case fstat fails and we skip it).
    if nix::sys::stat::fstat(3).is_ok() {
        let mut f = unsafe { std::fs::File::from_raw_fd(3) };
        let mut b = [0u8; 1];
        if f.read(&mut b).unwrap_or(0) == 0 {
            // The monitor went away before start: never run the workload.
            std::process::exit(137);
        }
    }
    let Some((prog, rest)) = args.split_first() else {
        std::process::exit(127)
    };
    let e = Command::new(prog).args(rest).exec();
    eprintln!("double: exec {prog}: {e}");
    std::process::exit(127)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(BARRIER_ARG) {
        barrier_main(args[2..].to_vec());
    }
    std::process::exit(microrun::cli::main(factory));
}
