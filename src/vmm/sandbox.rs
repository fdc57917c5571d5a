//! The production sandbox: the container runs in a microVM whose guest
//! agent the monitor drives over virtio-vsock.
//!
//! The rootfs and the sources of bind mounts reach the guest through one
//! virtio-fs device serving the container's share (`vmm::share`): writes
//! on either side are seen by the other.

use super::devices::console_tail::ConsoleTail;
use super::devices::virtio::fs::Caching;
use super::guest_streams::GuestStreams;
use super::host_watch::HostWatch;
use super::image;
use super::net::{self, Network};
use super::share::{self, Share};
use super::vcpu::VmEnd;
use super::vm::{DiskConfig, NetConfig, Vm, VmConfig};
use crate::monitor::netns;
use crate::sandbox::{
    ContainerConfig, ExitStatus, ProcessId, ProcessIo, Sandbox, SandboxError, Stats, INIT,
};
use microrun_protocol::frame::{self, Decoder};
use microrun_protocol::relay;
use microrun_protocol::{
    GuestMount, Hello, Reply, Request, AGENT_PORT, DNS_PORT, PROTOCOL_VERSION, STDIO_PORT,
};
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, PosixRlimit, Process, Spec};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Guest memory when the spec sets no limit; added on top of a limit for the agent.
const DEFAULT_MEM: u64 = 256 << 20;
const AGENT_RESERVE: u64 = 64 << 20;
/// Names a block device or raw image (ext4, ...) to attach as the root
/// with virtio-blk instead of sharing root.path.
pub const BLOCK_ROOT_ANNOTATION: &str = "io.microrun.rootfs-block";
const GUEST_BLOCK_ROOT: &str = "/run/microrun/root-block";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

fn fail(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Failed(e.to_string())
}

pub struct VmSandbox {
    config: ContainerConfig,
    vm: Mutex<Option<Vm>>,
    link: Arc<AgentLink>,
    /// Process exits, set by the reader thread.
    exits: Arc<Exits>,
    next_exec: AtomicU32,
    /// What the virtio-fs device serves, built at boot.
    share: Mutex<Option<Share>>,
    /// The container's network namespace, wired to the VM.
    network: Mutex<Option<Network>>,
    /// Loopback nameservers the agent relays to the namespace.
    dns_relay: Mutex<Vec<std::net::Ipv4Addr>>,
    /// The end of the guest console, for errors about a guest that died.
    console: ConsoleTail,
    /// Every process's stdio sockets and output relays; the sockets are
    /// ended when the VM ends.
    streams: GuestStreams,
    /// The caller's resource limits, for what a process's spec leaves unset.
    rlimits: Vec<PosixRlimit>,
}

impl VmSandbox {
    pub fn new(config: ContainerConfig) -> Self {
        VmSandbox {
            config,
            vm: Mutex::new(None),
            link: Arc::default(),
            exits: Arc::new(Exits::default()),
            next_exec: AtomicU32::new(1),
            share: Mutex::new(None),
            network: Mutex::new(None),
            dns_relay: Mutex::new(Vec::new()),
            console: ConsoleTail::default(),
            streams: GuestStreams::default(),
            rlimits: crate::rlimits::current(),
        }
    }

    fn vsock_path(&self) -> PathBuf {
        self.config.state_dir.join("vsock.sock")
    }

    /// Where the guest's connections to host port `port` arrive.
    fn vsock_host_port_path(&self, port: u32) -> PathBuf {
        self.config.state_dir.join(format!("vsock.sock_{port}"))
    }

    /// Memory and vCPUs from the spec's limits (see DESIGN: sizing).
    fn sizing(&self) -> (u64, u8) {
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
        let mem = limit.div_ceil(2 << 20) * (2 << 20);
        (mem, cpus)
    }

    /// The spec as the guest needs it: its root and bind sources at their
    /// paths in the share, without the hooks (they run here).
    fn guest_spec(&self) -> Result<Spec, SandboxError> {
        let mut spec = self.config.spec.clone();
        spec.set_hooks(None);
        if let Some(p) = spec.process_mut() {
            crate::rlimits::fill_unset(p, &self.rlimits);
        }
        if let Some(root) = spec.root_mut() {
            root.set_path(PathBuf::from(if self.has_block_root() {
                GUEST_BLOCK_ROOT.to_string()
            } else {
                Share::guest_rootfs()
            }));
        }
        // The VM is the container's network isolation: the container uses
        // the guest's own namespace, where the interfaces are (including
        // any hotplugged at start) and where the agent's DNS relay listens.
        if let Some(nss) = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.namespaces_mut().as_mut())
        {
            nss.retain(|n| n.typ() != LinuxNamespaceType::Network);
        }
        let binds = match self.share.lock().map_err(fail)?.as_ref() {
            Some(s) => s.binds.clone(),
            None => Vec::new(),
        };
        if let Some(mounts) = spec.mounts_mut() {
            for (i, guest) in binds {
                if let Some(m) = mounts.get_mut(i) {
                    m.set_source(Some(PathBuf::from(guest)));
                }
            }
        }
        Ok(spec)
    }

    fn root_read_only(&self) -> bool {
        self.config
            .spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false)
    }

    fn block_root_annotation(&self) -> Option<&String> {
        self.config
            .spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(BLOCK_ROOT_ANNOTATION))
    }

    fn has_block_root(&self) -> bool {
        self.block_root_annotation().is_some()
    }

    /// A block device or raw image named by the annotation, to be the root.
    fn block_root(&self) -> Result<Option<PathBuf>, SandboxError> {
        let Some(path) = self.block_root_annotation() else {
            return Ok(None);
        };
        let path = PathBuf::from(path);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() || m.file_type().is_block_device() => Ok(Some(path)),
            Ok(_) => Err(fail(format!(
                "{BLOCK_ROOT_ANNOTATION}: {} is neither a block device nor an image file",
                path.display()
            ))),
            Err(e) => Err(fail(format!(
                "{BLOCK_ROOT_ANNOTATION}: {}: {e}",
                path.display()
            ))),
        }
    }

    /// Builds the share the virtio-fs device serves (single-threaded: it
    /// enters a private mount namespace); returns its host directory.
    fn prepare_share(&self) -> Result<PathBuf, SandboxError> {
        let mounts = self.config.spec.mounts().clone().unwrap_or_default();
        let rootfs = (!self.has_block_root()).then_some(self.config.rootfs.as_path());
        let s = share::prepare(
            &self.config.state_dir.join("share"),
            rootfs,
            self.root_read_only(),
            &mounts,
        )
        .map_err(fail)?;
        let root = s.root.clone();
        *self.share.lock().map_err(fail)? = Some(s);
        Ok(root)
    }

    /// The virtio-fs devices: the share, and the rootfs over its place in
    /// it when the rootfs is shared.
    fn fs_devices(&self, share: &Path) -> Vec<(String, PathBuf, Caching)> {
        let mut fs = vec![(share::TAG.to_string(), share.to_path_buf(), Caching::Shared)];
        if !self.has_block_root() {
            fs.push((
                share::ROOT_TAG.to_string(),
                Share::host_rootfs(share),
                Caching::Private,
            ));
        }
        fs
    }

    /// What the agent mounts before the container: the share, then either
    /// the block root (the first disk, /dev/vda) or the rootfs's own
    /// virtio-fs device over its place in the share.
    fn guest_mounts(&self) -> Vec<GuestMount> {
        let mut guest = vec![GuestMount {
            source: share::TAG.into(),
            target: share::GUEST_PATH.into(),
            fstype: "virtiofs".into(),
            read_only: false,
        }];
        guest.push(if self.has_block_root() {
            GuestMount {
                source: "/dev/vda".into(),
                target: GUEST_BLOCK_ROOT.into(),
                fstype: String::new(),
                read_only: self.root_read_only(),
            }
        } else {
            GuestMount {
                source: share::ROOT_TAG.into(),
                target: Share::guest_rootfs(),
                fstype: "virtiofs".into(),
                read_only: false,
            }
        });
        guest
    }

    /// Wires the network namespace's interfaces to taps and returns their
    /// virtio-net devices. A spec without a network namespace (the host's,
    /// which a VM cannot share) gets none.
    fn wire_network(&self) -> Result<Vec<NetConfig>, SandboxError> {
        if netns::mode(&self.config.spec) == netns::NetMode::Host {
            return Ok(Vec::new());
        }
        let network = net::wire().map_err(fail)?;
        let mut devices = Vec::new();
        for w in &network.wired {
            devices.push(NetConfig {
                tap: w.tap.file().try_clone().map_err(fail)?,
                mac: w.mac,
                mtu: w.mtu,
            });
        }
        let nameservers = net::dns::loopback_nameservers(&self.config.spec);
        if !nameservers.is_empty() {
            net::dns::serve(&self.vsock_host_port_path(DNS_PORT), nameservers.clone())
                .map_err(fail)?;
            *self.dns_relay.lock().map_err(fail)? = nameservers;
        }
        *self.network.lock().map_err(fail)? = Some(network);
        Ok(devices)
    }

    /// Interfaces moved into the namespace after create (Docker ≥ 26 does
    /// so between create and start) are wired and hotplugged into the VM,
    /// and the agent configures them before the workload starts.
    fn wire_late_interfaces(&self) -> Result<(), SandboxError> {
        let mut network = self.network.lock().map_err(fail)?;
        let Some(n) = network.as_mut() else {
            return Ok(());
        };
        if n.unwired().map_err(fail)?.is_empty() {
            return Ok(());
        }
        let mut configs = Vec::new();
        let mut interfaces = Vec::new();
        for w in n.wire_new().map_err(fail)? {
            configs.push(NetConfig {
                tap: w.tap.file().try_clone().map_err(fail)?,
                mac: w.mac,
                mtu: w.mtu,
            });
            interfaces.push(w.guest.clone());
        }
        let routes = n.routes.clone();
        drop(network);
        let mut devices = Vec::new();
        {
            let vm = self.vm.lock().map_err(fail)?;
            let vm = vm.as_ref().ok_or_else(|| fail("no VM"))?;
            for c in configs {
                devices.push(vm.hotplug_net(c).map_err(fail)?);
            }
        }
        self.call(&Request::Network {
            devices,
            interfaces,
            routes,
        })
        .map(|_| ())
    }

    /// Opens a process's stdio streams and relays them to `io`.
    fn open_stdio(&self, process: ProcessId, io: ProcessIo) -> Result<(), SandboxError> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let open = |name: &str| -> Result<UnixStream, SandboxError> {
            let mut s = self.connect(STDIO_PORT, deadline)?;
            s.write_all(format!("{process} {name}\n").as_bytes())
                .map_err(fail)?;
            self.streams.add(process, &s).map_err(fail)?;
            Ok(s)
        };
        let mut out_relays = Vec::new();
        match io {
            ProcessIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let in_s = open("stdin")?;
                let out_s = open("stdout")?;
                let err_s = open("stderr")?;
                // stdin is not waited for: a caller may keep it open forever.
                relay::spawn(std::fs::File::from(stdin), in_s, relay::shutdown_write);
                out_relays.push(relay::spawn(out_s, std::fs::File::from(stdout), drop));
                out_relays.push(relay::spawn(err_s, std::fs::File::from(stderr), drop));
            }
            ProcessIo::Terminal(fd) => {
                let tty = open("tty")?;
                let w = dup_file(&fd)?;
                relay::spawn(
                    std::fs::File::from(fd),
                    tty.try_clone().map_err(fail)?,
                    drop,
                );
                out_relays.push(relay::spawn(tty, w, drop));
            }
        }
        self.streams.set_relays(process, out_relays);
        Ok(())
    }

    /// Connects to a guest vsock port through the hybrid unix socket.
    fn connect(&self, port: u32, deadline: Instant) -> Result<UnixStream, SandboxError> {
        loop {
            if let Some(end) = self.vm_ended() {
                return Err(fail(format!(
                    "the VM ended before its agent answered: {end:?}{}",
                    self.console.summary()
                )));
            }
            if let Ok(mut s) = crate::unixpath::connect(&self.vsock_path()) {
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
                return Err(self.silent_guest("timed out waiting for the guest agent"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The error for a guest that went silent: `what`, then the end of its
    /// console and where each vCPU is (" (vCPU 0 halted (rip=...))").
    fn silent_guest(&self, what: &str) -> SandboxError {
        let states = match self.vm.lock() {
            Ok(g) => g.as_ref().map(|vm| vm.vcpu_states()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let vcpus = if states.is_empty() {
            String::new()
        } else {
            format!(" ({})", states.join("; "))
        };
        fail(format!("{what}{}{vcpus}", self.console.summary()))
    }

    fn vm_ended(&self) -> Option<VmEnd> {
        self.vm.lock().ok()?.as_ref()?.wait_timeout(Duration::ZERO)
    }

    fn call(&self, req: &Request) -> Result<Reply, SandboxError> {
        match self.link.call(req) {
            Ok(Reply::Error { msg }) => Err(SandboxError::Failed(format!("guest agent: {msg}"))),
            Ok(r) => Ok(r),
            Err(LinkError::Down(msg)) => Err(fail(msg)),
            Err(LinkError::Silent) => Err(self.silent_guest("the guest agent did not answer")),
        }
    }

    /// Host changes in the directory volumes reach the guest's inotify
    /// watchers (host_watch), from a thread of their own that watches the
    /// volumes' trees first. Without fanotify (no CAP_SYS_ADMIN) they do
    /// not, and the container runs all the same.
    fn watch_volumes(&self) {
        let volumes = match self.share.lock() {
            Ok(s) => s.as_ref().map(Share::volumes).unwrap_or_default(),
            Err(_) => return,
        };
        if volumes.is_empty() {
            return;
        }
        let link = self.link.clone();
        microrun_protocol::threads::spawn(move || {
            let mut watch = match HostWatch::new(&volumes) {
                Ok(w) => w,
                Err(e) => {
                    crate::logging::debug(&format!("host changes are not watched: {e}"));
                    return;
                }
            };
            loop {
                let changes = watch.wait(Duration::from_secs(3600));
                if changes.is_empty() {
                    continue;
                }
                for chunk in changes.chunks(crate::vmm::host_watch::MAX_BATCH) {
                    let req = Request::HostChanges {
                        changes: chunk.to_vec(),
                    };
                    // A lost connection ends the watch; the VM is ending.
                    if let Err(LinkError::Down(_)) = link.call(&req) {
                        return;
                    }
                }
            }
        });
    }
}

/// The control connection to the agent.
#[derive(Default)]
struct AgentLink {
    ctl: Mutex<Option<UnixStream>>,
    replies: Mutex<Option<Receiver<Reply>>>,
}

enum LinkError {
    Down(String),
    /// No reply in time.
    Silent,
}

impl AgentLink {
    /// One request, one reply. The connection stays locked throughout, so
    /// concurrent callers cannot take each other's replies.
    fn call(&self, req: &Request) -> Result<Reply, LinkError> {
        let down = |e: &dyn std::fmt::Display| LinkError::Down(e.to_string());
        let bytes = frame::encode(req).map_err(|e| down(&e))?;
        let mut ctl = self.ctl.lock().map_err(|e| down(&e))?;
        ctl.as_mut()
            .ok_or_else(|| down(&"no agent connection"))?
            .write_all(&bytes)
            .map_err(|e| down(&format!("agent connection: {e}")))?;
        let rx = self.replies.lock().map_err(|e| down(&e))?;
        let reply = rx
            .as_ref()
            .ok_or_else(|| down(&"no agent connection"))?
            .recv_timeout(REPLY_TIMEOUT);
        drop(ctl);
        reply.map_err(|_| LinkError::Silent)
    }
}

/// The virtio-fs server holds a descriptor per file the guest has looked
/// up (and still caches): raise the monitor's limit to the system's
/// per-process maximum, as virtiofsd does; without the privilege for
/// that, to the hard limit. Past it the guest gets EMFILE, not a crash.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(n) = nr_open {
        if setrlimit(Resource::RLIMIT_NOFILE, n, n).is_ok() {
            return;
        }
    }
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn dup_file(fd: &OwnedFd) -> Result<std::fs::File, SandboxError> {
    Ok(std::fs::File::from(fd.try_clone().map_err(fail)?))
}

/// Exits of the container's processes, as the agent reports them. `None`
/// under `dead` means the VM went away: every process is gone.
#[derive(Default)]
struct Exits {
    done: Mutex<(HashMap<ProcessId, ExitStatus>, bool)>,
    cv: Condvar,
}

impl Exits {
    fn set(&self, process: ProcessId, st: ExitStatus) {
        if let Ok(mut e) = self.done.lock() {
            e.0.insert(process, st);
        }
        self.cv.notify_all();
    }

    fn init_exited(&self) -> bool {
        self.done
            .lock()
            .map(|e| e.0.contains_key(&INIT))
            .unwrap_or(true)
    }

    fn vm_gone(&self) {
        if let Ok(mut e) = self.done.lock() {
            e.1 = true;
        }
        self.cv.notify_all();
    }

    fn wait(&self, process: ProcessId) -> Result<ExitStatus, SandboxError> {
        let mut e = self.done.lock().map_err(fail)?;
        loop {
            if let Some(st) = e.0.get(&process) {
                return Ok(*st);
            }
            if e.1 {
                return Ok(ExitStatus::Signal(libc::SIGKILL));
            }
            e = self.cv.wait(e).map_err(fail)?;
        }
    }
}

/// Reads agent messages: replies go to `call`, exits to `wait`.
fn reader_loop(mut s: UnixStream, tx: mpsc::Sender<Reply>, exits: Arc<Exits>) {
    let mut dec = Decoder::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match dec.next_message::<Reply>() {
            Ok(Some(Reply::Exited {
                process,
                code,
                signal,
            })) => {
                let st = match (code, signal) {
                    (_, Some(sig)) => ExitStatus::Signal(sig),
                    (Some(c), None) => ExitStatus::Code(c),
                    (None, None) => ExitStatus::Code(255),
                };
                exits.set(process, st);
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
    // The agent is gone: whatever did not report an exit died with the VM.
    exits.vm_gone();
}

impl Sandbox for VmSandbox {
    fn boot(&self) -> Result<(), SandboxError> {
        let ann = self.config.spec.annotations().clone();
        let img = image::resolve(ann.as_ref()).map_err(fail)?;
        let block_root = self.block_root()?;
        let share = self.prepare_share()?;
        raise_fd_limit();
        let nets = self.wire_network()?;
        let (mem_bytes, vcpus) = self.sizing();
        let log: Box<dyn Write + Send> = if self.config.debug {
            Box::new(
                std::fs::File::create(self.config.state_dir.join("console.log")).map_err(fail)?,
            )
        } else {
            Box::new(std::io::sink())
        };
        let console = self.console.writer(log);
        let vm = Vm::start(VmConfig {
            kernel: img.kernel,
            initrd: Some(img.initrd),
            cmdline: vec![],
            mem_bytes,
            vcpus,
            console,
            disks: block_root
                .into_iter()
                .map(|path| DiskConfig {
                    path,
                    read_only: self.root_read_only(),
                })
                .collect(),
            rng: true,
            vsock: Some(self.vsock_path()),
            fs: self.fs_devices(&share),
            nets,
            // A VM that ends without the agent reporting the init's exit
            // (guest crash, reset) still ends the container.
            on_end: Some({
                let exits = self.exits.clone();
                let tail = self.console.clone();
                let streams = self.streams.clone();
                Box::new(move |end| {
                    streams.end_all();
                    if *end != VmEnd::Stopped && !exits.init_exited() {
                        crate::logging::error(&format!(
                            "the VM ended while the container ran: {end:?}{}",
                            tail.summary()
                        ));
                    }
                    exits.vm_gone()
                })
            }),
        })
        .map_err(fail)?;
        *self.vm.lock().map_err(fail)? = Some(vm);
        let ctl = self.connect(AGENT_PORT, Instant::now() + CONNECT_TIMEOUT)?;
        let reader = ctl.try_clone().map_err(fail)?;
        let (tx, rx) = mpsc::channel();
        *self.link.ctl.lock().map_err(fail)? = Some(ctl);
        *self.link.replies.lock().map_err(fail)? = Some(rx);
        let exits = self.exits.clone();
        microrun_protocol::threads::spawn(move || reader_loop(reader, tx, exits));
        match self.call(&Request::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            agent: String::new(),
        }))? {
            Reply::Hello(_) => Ok(()),
            r => Err(fail(format!("guest agent: unexpected reply {r:?}"))),
        }
    }

    fn create(&self, io: ProcessIo) -> Result<(), SandboxError> {
        self.open_stdio(INIT, io)?;
        let (interfaces, routes, net_sysctls) = match self.network.lock().map_err(fail)?.as_ref() {
            Some(n) => (
                n.wired.iter().map(|w| w.guest.clone()).collect(),
                n.routes.clone(),
                n.sysctls.clone(),
            ),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        let req = Request::Create {
            id: self.config.id.clone(),
            spec: Box::new(self.guest_spec()?),
            mounts: self.guest_mounts(),
            interfaces,
            routes,
            net_sysctls,
            dns_relay: self.dns_relay.lock().map_err(fail)?.clone(),
        };
        self.call(&req)?;
        if let Some(s) = self.share.lock().map_err(fail)?.as_ref() {
            s.seal().map_err(fail)?;
        }
        self.watch_volumes();
        Ok(())
    }

    fn start(&self) -> Result<(), SandboxError> {
        self.wire_late_interfaces()?;
        self.call(&Request::Start).map(|_| ())
    }

    fn signal(&self, process: ProcessId, signal: i32, all: bool) -> Result<(), SandboxError> {
        self.call(&Request::Signal {
            process,
            signal,
            all,
        })
        .map(|_| ())
    }

    fn exec(&self, process: &Process, io: ProcessIo) -> Result<ProcessId, SandboxError> {
        let id = self.next_exec.fetch_add(1, Ordering::Relaxed);
        self.open_stdio(id, io)?;
        let mut process = process.clone();
        crate::rlimits::fill_unset(&mut process, &self.rlimits);
        let req = Request::Exec {
            process: id,
            spec: Box::new(process),
        };
        match self.call(&req) {
            Ok(_) => Ok(id),
            Err(e) => {
                self.streams.forget(id);
                Err(e)
            }
        }
    }

    fn wait(&self, process: ProcessId) -> Result<ExitStatus, SandboxError> {
        let st = self.exits.wait(process)?;
        // Exit status only after stdout and stderr are fully delivered.
        self.streams.finish(process);
        Ok(st)
    }

    fn resize(&self, process: ProcessId, rows: u16, cols: u16) -> Result<(), SandboxError> {
        self.call(&Request::Resize {
            process,
            rows,
            cols,
        })
        .map(|_| ())
    }

    fn stats(&self) -> Result<Stats, SandboxError> {
        match self.call(&Request::Stats)? {
            Reply::Stats(s) => Ok(s),
            r => Err(fail(format!("guest agent: unexpected reply {r:?}"))),
        }
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

    fn update(&self, resources: &LinuxResources) -> Result<(), SandboxError> {
        self.call(&Request::Update {
            resources: Box::new(resources.clone()),
        })
        .map(|_| ())
    }

    fn host_pids(&self) -> Result<Vec<i32>, SandboxError> {
        // The VM's processes have no host pids; the monitor stands for them all.
        Ok(vec![std::process::id() as i32])
    }

    fn shutdown(&self) {
        if let Ok(mut vm) = self.vm.lock() {
            vm.take();
        }
        if let Ok(mut net) = self.network.lock() {
            if let Some(n) = net.take() {
                n.unwire();
            }
        }
        let _ = std::fs::remove_file(self.vsock_path());
        let _ = std::fs::remove_file(self.vsock_host_port_path(DNS_PORT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_reader(bytes: &[u8]) -> (Arc<Exits>, Receiver<Reply>) {
        let (mut host_side, agent_side) = UnixStream::pair().unwrap();
        let exits = Arc::new(Exits::default());
        let (tx, rx) = mpsc::channel();
        let e = exits.clone();
        let t = std::thread::spawn(move || reader_loop(agent_side, tx, e));
        host_side.write_all(bytes).unwrap();
        drop(host_side);
        t.join().unwrap();
        (exits, rx)
    }

    #[test]
    fn exits_and_replies_are_routed() {
        let mut bytes = frame::encode(&Reply::Ok).unwrap();
        bytes.extend(
            frame::encode(&Reply::Exited {
                process: 2,
                code: Some(3),
                signal: None,
            })
            .unwrap(),
        );
        let (exits, rx) = run_reader(&bytes);
        assert_eq!(rx.try_recv().unwrap(), Reply::Ok);
        assert_eq!(exits.wait(2).unwrap(), ExitStatus::Code(3));
        // The stream ended without the init's exit: it died with the VM.
        assert_eq!(exits.wait(INIT).unwrap(), ExitStatus::Signal(libc::SIGKILL));
    }

    #[test]
    fn a_hostile_agent_cannot_hang_or_crash_the_reader() {
        for bytes in [
            u32::MAX.to_be_bytes().to_vec(),
            vec![0, 0, 0, 3, b'{', b'{', b'{'],
            b"\x00\x00\x00\x10{\"reply\":\"nope\"}".to_vec(),
        ] {
            let (exits, rx) = run_reader(&bytes);
            assert!(rx.try_recv().is_err());
            assert_eq!(exits.wait(INIT).unwrap(), ExitStatus::Signal(libc::SIGKILL));
        }
    }
}
