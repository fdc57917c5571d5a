//! The one narrow interface through which the monitor drives a container's
//! VM. The shipped binary's only implementation is the microVM (`vmm`);
//! integration tests plug in a double to exercise the state machine.

use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("{0}")]
    NotImplemented(String),
    #[error("no such process")]
    NoSuchProcess,
    #[error("{0}")]
    Failed(String),
}

/// Identifies a process inside the sandbox; 0 is the container's init.
pub type ProcessId = u32;
pub const INIT: ProcessId = 0;

/// How a process ended, as its host stand-in must reproduce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention clients see: N, or 128+signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// The stdio of a sandboxed process: the caller's own fds, or a pty slave.
pub enum ProcessIo {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Terminal(OwnedFd),
}

/// What a sandbox needs to know to build a container.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub state_dir: PathBuf,
    pub spec: Spec,
    pub debug: bool,
    /// Namespaces shared with another container of the same VM:
    /// (`ipc`, `uts` or `pid`; that container's id).
    pub joins: Vec<(String, String)>,
    /// A joining container's rootfs and bind sources as mount trees its
    /// stand-in cloned in the caller's mount namespace.
    pub trees: Option<std::sync::Arc<crate::vmm::share::Trees>>,
}

/// Resource usage, in the shape of runc's `events --stats` data: the
/// guest agent's figures, passed through as they are.
pub use microrun_protocol::Stats;

/// One VM (or, for the double, one group of host processes) holding the
/// container it was built for and any that join it later (a pod). Process
/// ids are unique across the containers of one sandbox.
pub trait Sandbox: Send + Sync {
    /// Boots the sandbox (the VM) up to the point where it can take a container.
    fn boot(&self) -> Result<(), SandboxError>;
    /// Prepares a container's init up to the start barrier: first the one
    /// the sandbox was built for, then any that join it. Returns its init's
    /// process id.
    fn create(&self, container: &ContainerConfig, io: ProcessIo)
        -> Result<ProcessId, SandboxError>;
    /// Releases the container's start barrier: the workload runs.
    fn start(&self, id: &str) -> Result<(), SandboxError>;
    /// Signals one process, or with `all` every process of the container.
    fn signal(
        &self,
        id: &str,
        process: ProcessId,
        signal: i32,
        all: bool,
    ) -> Result<(), SandboxError>;
    /// Starts an extra process in the running container.
    fn exec(&self, id: &str, process: &Process, io: ProcessIo) -> Result<ProcessId, SandboxError>;
    /// Blocks until the process has exited and its output is fully delivered.
    fn wait(&self, process: ProcessId) -> Result<ExitStatus, SandboxError>;
    fn resize(&self, process: ProcessId, rows: u16, cols: u16) -> Result<(), SandboxError>;
    fn stats(&self, id: &str) -> Result<Stats, SandboxError>;
    fn pause(&self, id: &str) -> Result<(), SandboxError>;
    fn resume(&self, id: &str) -> Result<(), SandboxError>;
    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), SandboxError>;
    /// Host pids that run the container's processes, besides its stand-in
    /// (none for a VM).
    fn host_pids(&self, id: &str) -> Result<Vec<i32>, SandboxError>;
    /// Forgets a container whose init has ended: what is left of it is
    /// killed and its parts of the sandbox released.
    fn remove(&self, id: &str);
    /// Ends everything: processes, VM, devices.
    fn shutdown(&self);
}

/// Builds the sandbox for the container it is first created for.
pub type SandboxFactory = fn(ContainerConfig) -> Result<Box<dyn Sandbox>, SandboxError>;
