//! `container-init`: the agent binary re-executed as the first process of a
//! container (or of an exec), already inside the new namespaces. Being a
//! fresh single-threaded process, it can set everything up in plain Rust:
//! the root file system, then the process's identity, and finally exec.
//!
//! File descriptors it is started with:
//! - 0, 1, 2: the process's stdio (pipes), unless it has a terminal;
//! - 3: the [`HelperConfig`] as JSON, to EOF;
//! - 4: a unix socket to the agent: one status line (`ready`, or an error),
//!   with the terminal's master fd attached when there is one;
//! - 5: the start barrier: one byte releases the exec, EOF aborts.

mod process;
mod rootfs;
mod seccomp;

pub use process::rlimit_resource;
pub use rootfs::STAGING;

use oci_spec::runtime::{LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

pub const ARG: &str = "container-init";
pub const CONFIG_FD: i32 = 3;
pub const STATUS_FD: i32 = 4;
pub const BARRIER_FD: i32 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub enum HelperConfig {
    /// The container's init: build the root, then run `spec.process`.
    Init { spec: Box<Spec> },
    /// An extra process: join the init's namespaces, then run it.
    Exec {
        init_pid: i32,
        process: Box<Process>,
        seccomp: Option<Box<LinuxSeccomp>>,
    },
}

/// Why the helper could not run the workload.
#[derive(Debug)]
pub struct InitError(pub String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl InitError {
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        InitError(format!("{what}: {e}"))
    }
}

/// A cgroup namespace rooted at the container's cgroup, so that its
/// cgroup2 mount shows its own limits (memory.max ...) at the top. The agent
/// moves the helper into that cgroup before it sends the config.
fn cgroup_ns(spec: &Spec) -> Result<(), InitError> {
    let wanted = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| {
            nss.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Cgroup)
        });
    if wanted {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| InitError(format!("cgroup namespace: {e}")))?;
    }
    Ok(())
}

/// The agent cloned us into a new user namespace and has written its id
/// maps by the time the config arrives.
fn in_new_user_ns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| {
            nss.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        })
}

/// Entry point of the helper mode; never returns.
pub fn main() -> ! {
    // SAFETY: the agent put these fds in place for us; nothing else owns them.
    let status = unsafe { OwnedFd::from_raw_fd(STATUS_FD) };
    let status = std::os::unix::net::UnixStream::from(status);
    let code = match run(&status) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = crate::fdpass::send(&status, format!("error {e}\n").as_bytes(), None);
            127
        }
    };
    std::process::exit(code)
}

fn run(status: &std::os::unix::net::UnixStream) -> Result<std::convert::Infallible, InitError> {
    // SAFETY: as above, fd 3 and 5 are ours alone.
    let mut cfg_file = unsafe { std::fs::File::from_raw_fd(CONFIG_FD) };
    let mut raw = Vec::new();
    cfg_file
        .read_to_end(&mut raw)
        .map_err(|e| InitError::io("read config", e))?;
    drop(cfg_file);
    let cfg: HelperConfig =
        serde_json::from_slice(&raw).map_err(|e| InitError(format!("config: {e}")))?;
    let (process, seccomp, is_init) = match cfg {
        HelperConfig::Init { spec } => {
            if in_new_user_ns(&spec) {
                process::become_root()?;
            }
            cgroup_ns(&spec)?;
            rootfs::setup(&spec)?;
            let p = spec
                .process()
                .clone()
                .ok_or_else(|| InitError("spec has no process".into()))?;
            let sc = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
            (p, sc, true)
        }
        HelperConfig::Exec {
            init_pid,
            process,
            seccomp,
        } => {
            rootfs::join(init_pid)?;
            (*process, seccomp.map(|s| *s), false)
        }
    };
    let prepared = process::prepare(&process)?;
    let master = if process.terminal().unwrap_or(false) {
        Some(process::terminal()?)
    } else {
        None
    };
    crate::fdpass::send(status, b"ready\n", master.as_ref())
        .map_err(|e| InitError::io("report ready", e))?;
    drop(master);
    if is_init {
        // SAFETY: fd 5 is the barrier the agent gave us.
        let mut barrier = unsafe { std::fs::File::from_raw_fd(BARRIER_FD) };
        let mut b = [0u8; 1];
        if barrier.read(&mut b).ok() != Some(1) {
            return Err(InitError("start cancelled".into()));
        }
    }
    // Past `ready` the host no longer listens for errors: they go to the
    // workload's stderr, as runc's do.
    let Err(e) = process::finish_and_exec(&process, prepared, seccomp.as_ref());
    eprintln!("microrun: {e}");
    std::process::exit(127)
}
