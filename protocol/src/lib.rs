//! The host ↔ guest-agent protocol of microrun, shared by both sides:
//! versioned, length-prefixed JSON frames. See docs/protocol.md.

pub mod frame;
pub mod relay;
pub mod threads;

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; host and agent refuse a mismatch.
pub const PROTOCOL_VERSION: u32 = 3;

/// The vsock port the agent listens on for the monitor's control stream.
pub const AGENT_PORT: u32 = 1024;

/// The line the agent writes to the console once it runs as /init; the
/// e2e suite and boot benchmarks look for it.
pub const READY_MARKER: &str = "microrun-agent: ready";

/// First message in each direction on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub agent: String,
}

/// Port of the stdio streams. Each starts with one line `<process> <name>`:
/// the process id (0 is the container's init, exec processes count up) and
/// `stdin`, `stdout`, `stderr`, or `tty` for a terminal process's one stream.
pub const STDIO_PORT: u32 = 1025;

/// Host port the agent connects to for each relayed DNS exchange: nameservers
/// on the container's loopback (Docker's 127.0.0.11) live in its network
/// namespace on the host, not in the guest. The stream starts with one line
/// `udp <address>` or `tcp <address>`; udp carries one query and its answer,
/// each prefixed by a 2-byte big-endian length (as DNS over TCP), tcp is the
/// DNS-over-TCP byte stream itself.
pub const DNS_PORT: u32 = 1026;

/// The mount options the guest agent turns into mount flags (others go to
/// the file system as data); `features` reports them.
pub const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// Identifies a process of the container: 0 is its init.
pub type ProcessId = u32;

/// The names a stdio stream's first line may carry.
pub const STREAM_NAMES: [&str; 4] = ["stdin", "stdout", "stderr", "tty"];

/// Host → agent requests on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello(Hello),
    /// Prepare a container's init up to the start barrier. The spec is the
    /// bundle's, with `root.path` and bind-mount sources rewritten to paths
    /// inside the guest and the hooks (which run on the host) removed. A VM
    /// holds one container, or several that share namespaces (a pod).
    Create {
        id: String,
        /// The process id of its init: 0 for the VM's first container, a
        /// fresh one (from the same count as exec'd processes) for others.
        #[serde(default)]
        init: ProcessId,
        /// Namespaces the init joins instead of making new ones: those of
        /// another container's init in this VM.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        joins: Vec<Join>,
        spec: Box<oci_spec::runtime::Spec>,
        /// What the agent mounts first, in order: the virtio-fs share with
        /// the rootfs and bind sources, or a block-device root.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mounts: Vec<GuestMount>,
        /// The VM's network interfaces, in device order (eth0, eth1, ...
        /// as the guest kernel names them), and the routes over them. When
        /// there are interfaces, the container uses the guest's network
        /// namespace, where they live.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        interfaces: Vec<NetInterface>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        routes: Vec<NetRoute>,
        /// Network sysctls of the host namespace the guest's must match
        /// (e.g. Docker disables IPv6 there): (net.x.y, value).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        net_sysctls: Vec<(String, String)>,
        /// Loopback nameservers of the container's resolv.conf the agent
        /// answers on (port 53, UDP and TCP) by relaying to DNS_PORT.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dns_relay: Vec<std::net::Ipv4Addr>,
    },
    /// Interfaces hotplugged after create: the agent probes each device
    /// (the guest's platform device name, `virtio-mmio.<n>`), then
    /// configures the interfaces (found by MAC) and the full route list.
    Network {
        devices: Vec<String>,
        interfaces: Vec<NetInterface>,
        routes: Vec<NetRoute>,
    },
    Start {
        id: String,
    },
    /// Signal one process, or with `all` every process of the container.
    Signal {
        id: String,
        process: ProcessId,
        signal: i32,
        all: bool,
    },
    /// Start an extra process; its stdio streams must be open first.
    Exec {
        id: String,
        process: ProcessId,
        spec: Box<oci_spec::runtime::Process>,
    },
    Resize {
        process: ProcessId,
        rows: u16,
        cols: u16,
    },
    Stats {
        id: String,
    },
    Update {
        id: String,
        resources: Box<oci_spec::runtime::LinuxResources>,
    },
    /// Freezes (or thaws) every process of the container through its
    /// cgroup: pausing one container of a VM that holds others.
    Freeze {
        id: String,
        frozen: bool,
    },
    /// Forgets a container whose init has exited: what is left of its
    /// processes is killed and its cgroup removed.
    Remove {
        id: String,
    },
    /// Changes other processes made on the host beneath the volumes, for
    /// the guest's inotify watchers. Best effort: a change to a directory
    /// the guest cannot open is skipped.
    HostChanges {
        changes: Vec<HostChange>,
    },
}

/// A namespace a container's init joins: `kind` is `ipc`, `uts` or `pid`
/// (the network namespace is the guest's own for every container), taken
/// from the init of the container that has process id `process`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub kind: String,
    pub process: ProcessId,
}

/// One change made on the host: the entry `name` of the guest directory
/// `dir` (beneath the share), with inotify's event bits (IN_CREATE,
/// IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO, IN_MODIFY, IN_ATTRIB,
/// IN_CLOSE_WRITE, and IN_ISDIR for a directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostChange {
    pub dir: String,
    pub name: String,
    pub mask: u32,
}

/// A file system the agent mounts for the container (not one of the
/// container's own mounts): a virtio-fs tag or a block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    pub source: String,
    pub target: String,
    /// Empty: whichever block file system the guest kernel recognises.
    pub fstype: String,
    pub read_only: bool,
}

/// One network interface as the container's namespace on the host has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    pub name: String,
    /// aa:bb:cc:dd:ee:ff
    pub mac: String,
    pub mtu: u32,
    /// IPv4 CIDRs, e.g. 172.17.0.2/16.
    pub addresses: Vec<String>,
}

/// An IPv4 route: destination CIDR (0.0.0.0/0 for the default), gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRoute {
    pub destination: String,
    pub gateway: Option<String>,
    pub device: String,
}

/// Resource figures of the container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
}

/// Agent → host messages on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello(Hello),
    Ok,
    Error {
        msg: String,
    },
    Stats(Stats),
    /// A process exited; sent only after its stdout and stderr are
    /// delivered. The init's exit ends the VM.
    Exited {
        process: ProcessId,
        code: Option<i32>,
        signal: Option<i32>,
    },
}
