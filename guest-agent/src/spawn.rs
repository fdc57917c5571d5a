//! Starting a container process: a raw clone into the requested namespaces
//! that immediately re-executes the agent as `container-init` (see
//! init/mod.rs), which does the real setup single-threaded.

use crate::init::{HelperConfig, BARRIER_FD, CONFIG_FD, STATUS_FD};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long a helper may take to build the container before `create` fails.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest helper config (the pipe's capacity; the default pipe-max-size).
const MAX_CONFIG: usize = 1 << 20;

pub struct Spawned {
    pub pid: libc::pid_t,
    /// Write one byte to start an init (exec processes start at once).
    pub barrier: Option<OwnedFd>,
    /// A terminal process's pty master.
    pub master: Option<OwnedFd>,
}

/// The stdio a helper starts with: pipe ends, or none for a terminal process.
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec copy numbered at least 10, so that the child's dup2 onto
/// 0..=5 never has source and target equal (which would keep CLOEXEC).
fn high(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: duplicating an fd we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn dev_null() -> std::io::Result<OwnedFd> {
    Ok(std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

/// Clones a helper with `ns_flags` (CLONE_NEW*), moves it into `cgroup_procs`
/// before it reads its config, and waits until it is ready.
pub fn spawn(
    cfg: &HelperConfig,
    ns_flags: libc::c_int,
    stdio: Option<ChildStdio>,
    cgroup_procs: &std::path::Path,
) -> std::io::Result<Spawned> {
    let (cfg_r, cfg_w) = pipe()?;
    let (bar_r, bar_w) = pipe()?;
    let (st_agent, st_child) = UnixStream::pair()?;
    let stdio = match stdio {
        Some(s) => [s.stdin, s.stdout, s.stderr],
        None => [dev_null()?, dev_null()?, dev_null()?],
    };
    let child_fds: Vec<OwnedFd> = [
        &stdio[0],
        &stdio[1],
        &stdio[2],
        &cfg_r,
        &OwnedFd::from(st_child.try_clone()?),
        &bar_r,
    ]
    .iter()
    .map(|f| high(f))
    .collect::<Result<_, _>>()?;
    let raw: Vec<RawFd> = child_fds.iter().map(|f| f.as_raw_fd()).collect();
    debug_assert_eq!(raw.len(), BARRIER_FD as usize + 1);
    let _ = (CONFIG_FD, STATUS_FD);
    let exe = CString::new("/proc/self/exe").unwrap_or_default();
    let arg0 = CString::new("microrun-agent").unwrap_or_default();
    let arg1 = CString::new(crate::init::ARG).unwrap_or_default();
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let body = serde_json::to_vec(cfg).map_err(std::io::Error::other)?;
    // The config is written whole before the child reads it, without a
    // thread (a caller that joined a pid namespace cannot start threads):
    // the pipe must hold it.
    // SAFETY: F_SETPIPE_SZ on a pipe we own.
    let cap = unsafe {
        libc::fcntl(
            cfg_w.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            MAX_CONFIG as libc::c_int,
        )
    };
    if cap < 0 || body.len() > cap as usize {
        return Err(std::io::Error::other(format!(
            "container config of {} bytes exceeds the {MAX_CONFIG}-byte limit",
            body.len()
        )));
    }

    // A child in a new user namespace waits for its id maps and becomes the
    // namespace's root before it execs: exec by anyone else there would
    // drop the namespace's capabilities that building the container needs.
    let userns = ns_flags & libc::CLONE_NEWUSER != 0;
    let (maps_r, maps_w) = pipe()?;
    let maps_fd = maps_r.as_raw_fd();
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack). The child only
    // calls read, raw id syscalls (not libc's, which would signal threads
    // the child does not have), dup2, execve and _exit on data prepared
    // above before it replaces itself, so the other threads' state (locks)
    // cannot bite it.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (ns_flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            if userns {
                let mut b = 0u8;
                if libc::read(maps_fd, (&mut b as *mut u8).cast(), 1) != 1
                    || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                    || libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
                {
                    libc::_exit(125);
                }
            }
            for (target, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, target as i32) < 0 {
                    libc::_exit(126);
                }
            }
            libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    let pid = pid as libc::pid_t;
    drop(child_fds);
    drop((cfg_r, bar_r, st_child, stdio));
    let joined = std::fs::write(cgroup_procs, pid.to_string())
        .map_err(|e| std::io::Error::other(format!("join cgroup: {e}")))
        .and_then(|()| crate::child_setup::prepare(pid, cfg, ns_flags))
        .and_then(|()| std::fs::File::from(maps_w).write_all(b"m"));
    drop(maps_r);
    if let Err(e) = joined {
        // SAFETY: killing the child we just made.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(e);
    }
    std::fs::File::from(cfg_w).write_all(&body)?;
    st_agent.set_read_timeout(Some(READY_TIMEOUT))?;
    let got = crate::fdpass::recv(&st_agent, 64 * 1024);
    let fail = |msg: String| {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        Err(std::io::Error::other(msg))
    };
    match got {
        Ok((line, master)) if line == b"ready\n" => Ok(Spawned {
            pid,
            barrier: Some(bar_w),
            master,
        }),
        Ok((line, _)) if line.starts_with(b"error ") => {
            fail(String::from_utf8_lossy(&line[6..]).trim_end().to_string())
        }
        Ok(_) => fail("the container process died during setup".into()),
        Err(e) => fail(format!("waiting for the container process: {e}")),
    }
}

impl Spawned {
    pub fn start(&mut self) -> std::io::Result<()> {
        match self.barrier.take() {
            Some(b) => std::fs::File::from(b).write_all(b"g"),
            None => Err(std::io::Error::other("already started")),
        }
    }
}
