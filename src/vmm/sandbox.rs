//! The production sandbox: the container runs in a microVM whose guest
//! agent the monitor drives over virtio-vsock.
//!
//! The rootfs reaches the guest, for now, as a copy: a cpio archive of the
//! bundle's rootfs appended to the initramfs (virtio-fs sharing is the
//! planned replacement; see docs/architecture.md).

use super::image;
use super::vcpu::VmEnd;
use super::vm::{Vm, VmConfig};
use crate::sandbox::{
    ContainerConfig, ExitStatus, ProcessId, ProcessIo, Sandbox, SandboxError, Stats, INIT,
};
use microrun_protocol::frame::{self, Decoder};
use microrun_protocol::{
    Hello, ProcessSpec, Reply, Request, AGENT_PORT, PROTOCOL_VERSION, STDIO_PORT,
};
use oci_spec::runtime::{LinuxResources, Process};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Guest memory when the spec sets no limit; added on top of a limit for the agent.
const DEFAULT_MEM: u64 = 256 << 20;
const AGENT_RESERVE: u64 = 64 << 20;
const GUEST_ROOTFS: &str = "container/rootfs";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

fn fail(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Failed(e.to_string())
}

pub struct VmSandbox {
    config: ContainerConfig,
    vm: Mutex<Option<Vm>>,
    ctl: Mutex<Option<UnixStream>>,
    replies: Mutex<Option<Receiver<Reply>>>,
    /// The init's exit, set by the reader thread.
    exit: Arc<ExitSlot>,
    relays: Mutex<Vec<JoinHandle<()>>>,
}

impl VmSandbox {
    pub fn new(config: ContainerConfig) -> Self {
        VmSandbox {
            config,
            vm: Mutex::new(None),
            ctl: Mutex::new(None),
            replies: Mutex::new(None),
            exit: Arc::new(ExitSlot::default()),
            relays: Mutex::new(Vec::new()),
        }
    }

    fn vsock_path(&self) -> PathBuf {
        self.config.state_dir.join("vsock.sock")
    }

    /// Memory and vCPUs from the spec's limits (see DESIGN: sizing).
    fn sizing(&self, rootfs_bytes: u64) -> (u64, u8) {
        let res = self
            .config
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref());
        let limit = res
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
            .map(|l| l as u64 + AGENT_RESERVE)
            .unwrap_or(DEFAULT_MEM);
        let cpus = res
            .and_then(|r| r.cpu().as_ref())
            .and_then(|c| Some((c.quota()?, c.period()?)))
            .filter(|(q, p)| *q > 0 && *p > 0)
            .map(|(q, p)| (q as u64).div_ceil(p))
            .unwrap_or(1)
            .clamp(1, 64) as u8;
        // The rootfs copy lives in guest RAM too.
        let mem = (limit + rootfs_bytes).div_ceil(2 << 20) * (2 << 20);
        (mem, cpus)
    }

    /// The base initramfs followed by the container's rootfs.
    fn build_initrd(&self, base: &Path) -> Result<(PathBuf, u64), SandboxError> {
        let out = self.config.state_dir.join("initrd.cpio");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&out).map_err(fail)?);
        f.write_all(
            &std::fs::read(base).map_err(|e| fail(format!("read {}: {e}", base.display())))?,
        )
        .map_err(fail)?;
        let bytes = rootfs_builder::append_tree(&mut f, &self.config.rootfs, GUEST_ROOTFS)
            .map_err(|e| fail(format!("copy rootfs {}: {e}", self.config.rootfs.display())))?;
        f.flush().map_err(fail)?;
        Ok((out, bytes))
    }

    /// Connects to a guest vsock port through the hybrid unix socket.
    fn connect(&self, port: u32, deadline: Instant) -> Result<UnixStream, SandboxError> {
        loop {
            if let Some(end) = self.vm_ended() {
                return Err(fail(format!(
                    "the VM ended before its agent answered: {end:?}"
                )));
            }
            if let Ok(mut s) = UnixStream::connect(self.vsock_path()) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                if s.write_all(format!("CONNECT {port}\n").as_bytes()).is_ok() {
                    let mut line = String::new();
                    let mut r = BufReader::new(&s);
                    if r.read_line(&mut line).is_ok() && line.starts_with("OK ") {
                        let _ = s.set_read_timeout(None);
                        return Ok(s);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(fail("timed out waiting for the guest agent"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn vm_ended(&self) -> Option<VmEnd> {
        self.vm.lock().ok()?.as_ref()?.wait_timeout(Duration::ZERO)
    }

    fn call(&self, req: &Request) -> Result<Reply, SandboxError> {
        let bytes = frame::encode(req).map_err(fail)?;
        self.ctl
            .lock()
            .map_err(fail)?
            .as_mut()
            .ok_or_else(|| fail("no agent connection"))?
            .write_all(&bytes)
            .map_err(|e| fail(format!("agent connection: {e}")))?;
        let rx = self.replies.lock().map_err(fail)?;
        match rx
            .as_ref()
            .ok_or_else(|| fail("no agent connection"))?
            .recv_timeout(REPLY_TIMEOUT)
        {
            Ok(Reply::Error { msg }) => Err(SandboxError::Failed(format!("guest agent: {msg}"))),
            Ok(r) => Ok(r),
            Err(_) => Err(fail("the guest agent did not answer")),
        }
    }
}

#[derive(Default)]
struct ExitSlot {
    status: Mutex<Option<ExitStatus>>,
    cv: Condvar,
}

impl ExitSlot {
    fn set(&self, st: ExitStatus, only_if_unset: bool) {
        if let Ok(mut e) = self.status.lock() {
            if !(only_if_unset && e.is_some()) {
                *e = Some(st);
            }
        }
        self.cv.notify_all();
    }
}

/// Reads agent messages: replies go to `call`, the exit to `wait`.
fn reader_loop(mut s: UnixStream, tx: mpsc::Sender<Reply>, exit: Arc<ExitSlot>) {
    let mut dec = Decoder::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match dec.next_message::<Reply>() {
            Ok(Some(Reply::Exited { code, signal })) => {
                let st = match (code, signal) {
                    (_, Some(sig)) => ExitStatus::Signal(sig),
                    (Some(c), None) => ExitStatus::Code(c),
                    (None, None) => ExitStatus::Code(255),
                };
                exit.set(st, false);
                continue;
            }
            Ok(Some(r)) => {
                let _ = tx.send(r);
                continue;
            }
            Ok(None) => {}
            Err(_) => break,
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => dec.feed(&buf[..n]),
        }
    }
    // The agent is gone without reporting an exit: the VM died.
    exit.set(ExitStatus::Signal(libc::SIGKILL), true);
}

fn process_spec(p: &Process) -> ProcessSpec {
    ProcessSpec {
        args: p.args().clone().unwrap_or_default(),
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().display().to_string(),
        uid: p.user().uid(),
        gid: p.user().gid(),
        additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        terminal: p.terminal().unwrap_or(false),
    }
}

fn copy_thread(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    close: Option<UnixStream>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.flush();
        if let Some(s) = close {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    })
}

impl Sandbox for VmSandbox {
    fn boot(&self) -> Result<(), SandboxError> {
        let ann = self.config.spec.annotations().clone();
        let img = image::resolve(ann.as_ref()).map_err(fail)?;
        let (initrd, rootfs_bytes) = self.build_initrd(&img.initrd)?;
        let (mem_bytes, vcpus) = self.sizing(rootfs_bytes);
        let console: Box<dyn Write + Send> = if self.config.debug {
            Box::new(
                std::fs::File::create(self.config.state_dir.join("console.log")).map_err(fail)?,
            )
        } else {
            Box::new(std::io::sink())
        };
        let vm = Vm::start(VmConfig {
            kernel: img.kernel,
            initrd: Some(initrd.clone()),
            cmdline: vec![],
            mem_bytes,
            vcpus,
            console,
            disks: vec![],
            rng: true,
            vsock: Some(self.vsock_path()),
        })
        .map_err(fail)?;
        // The guest has its copy now.
        let _ = std::fs::remove_file(&initrd);
        *self.vm.lock().map_err(fail)? = Some(vm);
        let ctl = self.connect(AGENT_PORT, Instant::now() + CONNECT_TIMEOUT)?;
        let reader = ctl.try_clone().map_err(fail)?;
        let (tx, rx) = mpsc::channel();
        *self.ctl.lock().map_err(fail)? = Some(ctl);
        *self.replies.lock().map_err(fail)? = Some(rx);
        let exit = self.exit.clone();
        std::thread::spawn(move || reader_loop(reader, tx, exit));
        match self.call(&Request::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            agent: String::new(),
        }))? {
            Reply::Hello(_) => Ok(()),
            r => Err(fail(format!("guest agent: unexpected reply {r:?}"))),
        }
    }

    fn create(&self, io: ProcessIo) -> Result<(), SandboxError> {
        let ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        } = io
        else {
            return Err(SandboxError::NotImplemented(
                "terminals (process.terminal) are not implemented in the microVM yet".into(),
            ));
        };
        let process = self
            .config
            .spec
            .process()
            .as_ref()
            .ok_or_else(|| fail("no process"))?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut streams = Vec::new();
        for name in ["stdin", "stdout", "stderr"] {
            let mut s = self.connect(STDIO_PORT, deadline)?;
            s.write_all(format!("{name}\n").as_bytes()).map_err(fail)?;
            streams.push(s);
        }
        let hostname = self.config.spec.hostname().clone();
        let req = Request::Create {
            process: process_spec(process),
            rootfs: format!("/{GUEST_ROOTFS}"),
            hostname,
        };
        self.call(&req)?;
        let err_s = streams.pop().ok_or_else(|| fail("stdio"))?;
        let out_s = streams.pop().ok_or_else(|| fail("stdio"))?;
        let in_s = streams.pop().ok_or_else(|| fail("stdio"))?;
        let in_w = in_s.try_clone().map_err(fail)?;
        // stdin is not waited for: a caller may keep it open forever.
        copy_thread(std::fs::File::from(stdin), in_w, Some(in_s));
        let mut relays = self.relays.lock().map_err(fail)?;
        relays.push(copy_thread(out_s, std::fs::File::from(stdout), None));
        relays.push(copy_thread(err_s, std::fs::File::from(stderr), None));
        Ok(())
    }

    fn start(&self) -> Result<(), SandboxError> {
        self.call(&Request::Start).map(|_| ())
    }

    fn signal(&self, process: ProcessId, signal: i32, all: bool) -> Result<(), SandboxError> {
        if process != INIT {
            return Err(SandboxError::NoSuchProcess);
        }
        self.call(&Request::Signal { signal, all }).map(|_| ())
    }

    fn exec(&self, _process: &Process, _io: ProcessIo) -> Result<ProcessId, SandboxError> {
        Err(SandboxError::NotImplemented(
            "exec in the microVM is not implemented yet".into(),
        ))
    }

    fn wait(&self, process: ProcessId) -> Result<ExitStatus, SandboxError> {
        if process != INIT {
            return Err(SandboxError::NoSuchProcess);
        }
        let mut e = self.exit.status.lock().map_err(fail)?;
        while e.is_none() {
            e = self.exit.cv.wait(e).map_err(fail)?;
        }
        let st = e.unwrap_or(ExitStatus::Code(255));
        drop(e);
        // Exit status only after stdout and stderr are fully delivered.
        for r in self.relays.lock().map_err(fail)?.drain(..) {
            let _ = r.join();
        }
        Ok(st)
    }

    fn resize(&self, _process: ProcessId, _rows: u16, _cols: u16) -> Result<(), SandboxError> {
        Err(SandboxError::NotImplemented(
            "terminals are not implemented in the microVM yet".into(),
        ))
    }

    fn stats(&self) -> Result<Stats, SandboxError> {
        Err(SandboxError::NotImplemented(
            "stats from the microVM are not implemented yet".into(),
        ))
    }

    fn pause(&self) -> Result<(), SandboxError> {
        match self.vm.lock().map_err(fail)?.as_ref() {
            Some(vm) if vm.pause() => Ok(()),
            Some(_) => Err(fail("not every vCPU paused")),
            None => Err(fail("no VM")),
        }
    }

    fn resume(&self) -> Result<(), SandboxError> {
        match self.vm.lock().map_err(fail)?.as_ref() {
            Some(vm) => {
                vm.resume();
                Ok(())
            }
            None => Err(fail("no VM")),
        }
    }

    fn update(&self, _resources: &LinuxResources) -> Result<(), SandboxError> {
        Err(SandboxError::NotImplemented(
            "update in the microVM is not implemented yet".into(),
        ))
    }

    fn host_pids(&self) -> Result<Vec<i32>, SandboxError> {
        // The VM's processes have no host pids; the monitor stands for them all.
        Ok(vec![std::process::id() as i32])
    }

    fn shutdown(&self) {
        if let Ok(mut vm) = self.vm.lock() {
            vm.take();
        }
        let _ = std::fs::remove_file(self.vsock_path());
    }
}
