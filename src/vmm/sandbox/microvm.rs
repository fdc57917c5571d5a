//! The microVM: devices, guest agent link, share, size and lifetime, for
//! the container it is built for and those that join it.

use super::super::devices::console_tail::ConsoleTail;
use super::super::devices::virtio::fs::Caching;
use super::super::guest_streams::GuestStreams;
use super::super::host_watch::HostWatch;
use super::super::image;
use super::super::net::{self, Network};
use super::super::share::{self, Part, Share};
use super::super::vcpu::VmEnd;
use super::super::vm::{DiskConfig, NetConfig, Vm, VmConfig};
use super::container::{self, Member};
use super::fail;
use super::link::{self, AgentLink, Exits, LinkError};
use crate::netns;
use crate::sandbox::{
    ContainerConfig, ExitStatus, ProcessId, ProcessIo, Sandbox, SandboxError, Stats, INIT,
};
use microrun_protocol::relay;
use microrun_protocol::{
    GuestMount, Hello, Reply, Request, AGENT_PORT, DNS_PORT, PROTOCOL_VERSION, STDIO_PORT,
};
use oci_spec::runtime::{LinuxResources, PosixRlimit, Process};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
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
/// The VM's own sockets live here, under the state root, not in a
/// container's directory: the VM can outlive the container it was built for.
const VM_DIR_PREFIX: &str = ".vm-";

pub struct VmSandbox {
    /// The container the VM is built for: its size, kernel, network and
    /// block root come from it.
    first: ContainerConfig,
    vm: Mutex<Option<Vm>>,
    link: Arc<AgentLink>,
    /// Process exits, set by the reader thread.
    exits: Arc<Exits>,
    /// Process ids of inits that join and of exec'd processes.
    next_process: AtomicU32,
    /// What the virtio-fs device serves, built at boot.
    share: Mutex<Option<Share>>,
    /// The first container's part of the share, until its create takes it.
    first_part: Mutex<Option<Part>>,
    /// The containers in the VM, by id.
    members: Mutex<HashMap<String, Member>>,
    /// The vCPUs are paused (pausing the VM's only container).
    vcpus_paused: AtomicBool,
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
    pub fn new(first: ContainerConfig) -> Self {
        VmSandbox {
            first,
            vm: Mutex::new(None),
            link: Arc::default(),
            exits: Arc::new(Exits::default()),
            next_process: AtomicU32::new(1),
            share: Mutex::new(None),
            first_part: Mutex::new(None),
            members: Mutex::new(HashMap::new()),
            vcpus_paused: AtomicBool::new(false),
            network: Mutex::new(None),
            dns_relay: Mutex::new(Vec::new()),
            console: ConsoleTail::default(),
            streams: GuestStreams::default(),
            rlimits: crate::rlimits::current(),
        }
    }

    /// The VM's directory: beside the containers' in the state root.
    fn vm_dir(&self) -> PathBuf {
        let root = self
            .first
            .state_dir
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        root.join(format!(
            "{VM_DIR_PREFIX}{}-{}",
            self.first.id,
            std::process::id()
        ))
    }

    fn vsock_path(&self) -> PathBuf {
        self.vm_dir().join("vsock.sock")
    }

    /// Where the guest's connections to host port `port` arrive.
    fn vsock_host_port_path(&self, port: u32) -> PathBuf {
        self.vm_dir().join(format!("vsock.sock_{port}"))
    }

    /// Memory and vCPUs from the spec's limits (see DESIGN: sizing).
    fn sizing(&self) -> (u64, u8) {
        let res = self
            .first
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

    fn root_read_only(&self) -> bool {
        container::root_read_only(&self.first.spec)
    }

    fn block_root_annotation(&self) -> Option<&String> {
        self.first
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
    /// enters a private mount namespace); returns its host directory and
    /// the host directory of the first container's rootfs.
    fn prepare_share(&self) -> Result<(PathBuf, PathBuf), SandboxError> {
        let mounts = self.first.spec.mounts().clone().unwrap_or_default();
        let rootfs = (!self.has_block_root()).then_some(self.first.rootfs.as_path());
        let (s, part) = share::prepare(
            &self.first.state_dir.join("share"),
            rootfs,
            self.root_read_only(),
            &mounts,
        )
        .map_err(fail)?;
        let dirs = (s.root.clone(), part.host_rootfs());
        *self.share.lock().map_err(fail)? = Some(s);
        *self.first_part.lock().map_err(fail)? = Some(part);
        Ok(dirs)
    }

    /// The virtio-fs devices: the share, and the rootfs over its place in
    /// it when the rootfs is shared.
    fn fs_devices(&self, share: &Path, rootfs: PathBuf) -> Vec<(String, PathBuf, Caching)> {
        let mut fs = vec![(share::TAG.to_string(), share.to_path_buf(), Caching::Shared)];
        if !self.has_block_root() {
            fs.push((share::ROOT_TAG.to_string(), rootfs, Caching::Private));
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
                target: format!("{}/rootfs", share::GUEST_PATH),
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
        if netns::mode(&self.first.spec) == netns::NetMode::Host {
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
        let nameservers = net::dns::loopback_nameservers(&self.first.spec);
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
        if self.network.lock().map_err(fail)?.is_none() {
            return Ok(());
        }
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
    fn watch_volumes(&self, volumes: Vec<(PathBuf, String)>) {
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

impl VmSandbox {
    /// The process id of a container's init.
    fn init_of(&self, id: &str) -> Option<ProcessId> {
        self.members.lock().ok()?.get(id).map(|m| m.init)
    }

    /// A joining container must fit in what the VM has left (until VMs
    /// can grow): its memory limit beside the limits of those already in.
    fn check_fits(&self, c: &ContainerConfig) -> Result<(), SandboxError> {
        let Some(want) = container::memory_limit(&c.spec) else {
            return Ok(());
        };
        let (mem, _) = self.sizing();
        let budget = mem.saturating_sub(AGENT_RESERVE);
        let taken: u64 = self
            .members
            .lock()
            .map_err(fail)?
            .values()
            .filter_map(|m| container::memory_limit(&m.config.spec))
            .sum();
        if taken + want > budget {
            return Err(fail(format!(
                "container {}: its memory limit of {} MiB does not fit in the microVM of container {}: \
                 {} MiB for containers, {} MiB of it already taken by the limits of those in it \
                 (a microVM does not grow yet)",
                c.id,
                want >> 20,
                self.first.id,
                budget >> 20,
                taken >> 20
            )));
        }
        Ok(())
    }

    /// The first container: its parts were made at boot.
    fn create_first(&self, c: &ContainerConfig, io: ProcessIo) -> Result<(), SandboxError> {
        let part = self.first_part.lock().map_err(fail)?.take();
        let guest_root = if self.has_block_root() {
            GUEST_BLOCK_ROOT.to_string()
        } else {
            part.as_ref()
                .map(Part::guest_rootfs)
                .ok_or_else(|| fail("the first container's share was not prepared"))?
        };
        let member = Member {
            config: c.clone(),
            init: INIT,
            part,
        };
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
            id: c.id.clone(),
            init: INIT,
            joins: Vec::new(),
            spec: Box::new(member.guest_spec(guest_root, &self.rlimits)),
            mounts: self.guest_mounts(),
            interfaces,
            routes,
            net_sysctls,
            dns_relay: self.dns_relay.lock().map_err(fail)?.clone(),
        };
        self.call(&req)?;
        self.admit(member)
    }

    /// A container that joins: its parts are bound into the running share,
    /// and the agent builds it beside the others.
    fn create_joining(
        &self,
        c: &ContainerConfig,
        io: ProcessIo,
    ) -> Result<ProcessId, SandboxError> {
        if c.spec
            .annotations()
            .as_ref()
            .is_some_and(|a| a.contains_key(BLOCK_ROOT_ANNOTATION))
        {
            return Err(fail(format!(
                "{BLOCK_ROOT_ANNOTATION} is not supported for a container that joins another's microVM"
            )));
        }
        if self.vcpus_paused.load(Ordering::SeqCst) {
            return Err(fail(format!(
                "the microVM of container {} is paused: a container cannot join it now",
                self.first.id
            )));
        }
        self.check_fits(c)?;
        let init = self.next_process.fetch_add(1, Ordering::Relaxed);
        let mounts = c.spec.mounts().clone().unwrap_or_default();
        let part = {
            let share = self.share.lock().map_err(fail)?;
            let share = share
                .as_ref()
                .ok_or_else(|| fail("this microVM has no share to add a container to"))?;
            share
                .add(
                    &format!("c{init}"),
                    &c.rootfs,
                    container::root_read_only(&c.spec),
                    &mounts,
                    c.trees.as_deref(),
                )
                .map_err(fail)?
        };
        let member = Member {
            config: c.clone(),
            init,
            part: Some(part),
        };
        let made = (|| {
            let joins = member
                .joins(|id| self.init_of(id))
                .map_err(SandboxError::Failed)?;
            let guest_root = member
                .part
                .as_ref()
                .map(Part::guest_rootfs)
                .unwrap_or_default();
            self.open_stdio(init, io)?;
            let req = Request::Create {
                id: c.id.clone(),
                init,
                joins,
                spec: Box::new(member.guest_spec(guest_root, &self.rlimits)),
                mounts: Vec::new(),
                interfaces: Vec::new(),
                routes: Vec::new(),
                net_sysctls: Vec::new(),
                dns_relay: Vec::new(),
            };
            self.call(&req)
        })();
        match made {
            Ok(_) => {
                self.admit(member)?;
                Ok(init)
            }
            Err(e) => {
                self.streams.forget(init);
                self.release_part(member.part);
                Err(e)
            }
        }
    }

    /// A container the agent has built: its read-only root is sealed, its
    /// volumes watched, and it counts as one of the VM's.
    fn admit(&self, member: Member) -> Result<(), SandboxError> {
        if let Some(p) = member.part.as_ref() {
            p.seal().map_err(fail)?;
            self.watch_volumes(p.volumes());
        }
        self.members
            .lock()
            .map_err(fail)?
            .insert(member.config.id.clone(), member);
        Ok(())
    }

    fn with_member<T>(&self, id: &str, f: impl FnOnce(&Member) -> T) -> Result<T, SandboxError> {
        let members = self.members.lock().map_err(fail)?;
        let m = members
            .get(id)
            .ok_or_else(|| fail(format!("container {id} is not in this microVM")))?;
        Ok(f(m))
    }

    /// Takes a container's part out of the share.
    fn release_part(&self, part: Option<Part>) {
        if let (Ok(share), Some(part)) = (self.share.lock(), part) {
            if let Some(s) = share.as_ref() {
                s.release(part);
            }
        }
    }

    fn alone(&self) -> bool {
        self.members.lock().map(|m| m.len() <= 1).unwrap_or(false)
    }
}

impl Sandbox for VmSandbox {
    fn boot(&self) -> Result<(), SandboxError> {
        let ann = self.first.spec.annotations().clone();
        let img = image::resolve(ann.as_ref()).map_err(fail)?;
        let block_root = self.block_root()?;
        std::fs::create_dir_all(self.vm_dir()).map_err(fail)?;
        let (share, rootfs) = self.prepare_share()?;
        raise_fd_limit();
        let nets = self.wire_network()?;
        let (mem_bytes, vcpus) = self.sizing();
        let log: Box<dyn Write + Send> = if self.first.debug {
            Box::new(std::fs::File::create(self.first.state_dir.join("console.log")).map_err(fail)?)
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
            fs: self.fs_devices(&share, rootfs),
            nets,
            // A VM that ends without the agent reporting the inits' exits
            // (guest crash, reset) still ends the containers.
            on_end: Some({
                let exits = self.exits.clone();
                let tail = self.console.clone();
                let streams = self.streams.clone();
                Box::new(move |end| {
                    streams.end_all();
                    if *end != VmEnd::Stopped && !exits.exited(INIT) {
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
        microrun_protocol::threads::spawn(move || link::reader_loop(reader, tx, exits));
        match self.call(&Request::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            agent: String::new(),
        }))? {
            Reply::Hello(_) => Ok(()),
            r => Err(fail(format!("guest agent: unexpected reply {r:?}"))),
        }
    }

    fn create(&self, c: &ContainerConfig, io: ProcessIo) -> Result<ProcessId, SandboxError> {
        let first = c.id == self.first.id
            && !self
                .members
                .lock()
                .map_err(fail)?
                .contains_key(&self.first.id);
        if first {
            self.create_first(c, io).map(|()| INIT)
        } else {
            self.create_joining(c, io)
        }
    }

    fn start(&self, id: &str) -> Result<(), SandboxError> {
        self.wire_late_interfaces()?;
        self.call(&Request::Start { id: id.into() }).map(|_| ())
    }

    fn signal(
        &self,
        id: &str,
        process: ProcessId,
        signal: i32,
        all: bool,
    ) -> Result<(), SandboxError> {
        self.call(&Request::Signal {
            id: id.into(),
            process,
            signal,
            all,
        })
        .map(|_| ())
    }

    fn exec(&self, id: &str, process: &Process, io: ProcessIo) -> Result<ProcessId, SandboxError> {
        self.with_member(id, |_| ())?;
        let n = self.next_process.fetch_add(1, Ordering::Relaxed);
        self.open_stdio(n, io)?;
        let mut process = process.clone();
        crate::rlimits::fill_unset(&mut process, &self.rlimits);
        let req = Request::Exec {
            id: id.into(),
            process: n,
            spec: Box::new(process),
        };
        match self.call(&req) {
            Ok(_) => Ok(n),
            Err(e) => {
                self.streams.forget(n);
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

    fn stats(&self, id: &str) -> Result<Stats, SandboxError> {
        match self.call(&Request::Stats { id: id.into() })? {
            Reply::Stats(s) => Ok(s),
            r => Err(fail(format!("guest agent: unexpected reply {r:?}"))),
        }
    }

    /// The VM's only container is paused with its vCPUs, as a whole; one
    /// of several through its cgroup's freezer in the guest.
    fn pause(&self, id: &str) -> Result<(), SandboxError> {
        self.with_member(id, |_| ())?;
        if !self.alone() {
            return self
                .call(&Request::Freeze {
                    id: id.into(),
                    frozen: true,
                })
                .map(|_| ());
        }
        match self.vm.lock().map_err(fail)?.as_ref() {
            Some(vm) if vm.pause() => {
                self.vcpus_paused.store(true, Ordering::SeqCst);
                Ok(())
            }
            Some(_) => Err(fail("not every vCPU paused")),
            None => Err(fail("no VM")),
        }
    }

    fn resume(&self, id: &str) -> Result<(), SandboxError> {
        self.with_member(id, |_| ())?;
        if !self.vcpus_paused.load(Ordering::SeqCst) {
            return self
                .call(&Request::Freeze {
                    id: id.into(),
                    frozen: false,
                })
                .map(|_| ());
        }
        match self.vm.lock().map_err(fail)?.as_ref() {
            Some(vm) => {
                vm.resume();
                self.vcpus_paused.store(false, Ordering::SeqCst);
                Ok(())
            }
            None => Err(fail("no VM")),
        }
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), SandboxError> {
        self.call(&Request::Update {
            id: id.into(),
            resources: Box::new(resources.clone()),
        })
        .map(|_| ())
    }

    fn host_pids(&self, id: &str) -> Result<Vec<i32>, SandboxError> {
        // The VM's processes have no host pids: the stand-in is all there is.
        self.with_member(id, |_| Vec::new())
    }

    fn remove(&self, id: &str) {
        let Some(member) = self.members.lock().ok().and_then(|mut m| m.remove(id)) else {
            return;
        };
        // A VM whose last container is gone ends: nothing to tidy inside.
        if self.members.lock().map(|m| m.is_empty()).unwrap_or(true) {
            return;
        }
        if self.vm_ended().is_none() {
            if let Err(e) = self.call(&Request::Remove { id: id.into() }) {
                crate::logging::debug(&format!("remove {id} from the VM: {e}"));
            }
        }
        self.release_part(member.part);
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
        let _ = std::fs::remove_dir(self.vm_dir());
    }
}
