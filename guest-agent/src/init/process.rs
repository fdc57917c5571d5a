//! The workload's identity and limits, applied in runc's order, then exec:
//! rlimits, oom_score_adj, umask, groups and ids (keeping capabilities
//! across the switch), capability sets, no_new_privs, seccomp last.

use super::{seccomp, InitError};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What is resolved before the start barrier, so a missing executable fails
/// `create` as it does under runc.
pub struct Prepared {
    exe: PathBuf,
    env: Vec<String>,
}

fn last_err(what: &str) -> InitError {
    InitError::io(what, std::io::Error::last_os_error())
}

fn env_var<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|e| e.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Finds argv[0] with the process's PATH, as execvp would.
fn resolve(arg0: &str, env: &[String], cwd: &Path) -> Result<PathBuf, InitError> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if arg0.contains('/') {
        // As runc's lookup words it (a directory too is "permission
        // denied"): docker maps that to exit 126, a missing file to 127.
        let why = match std::fs::metadata(cwd.join(arg0)) {
            Ok(m) if !m.is_dir() && m.permissions().mode() & 0o111 != 0 => {
                return Ok(PathBuf::from(arg0))
            }
            Ok(_) => "permission denied",
            Err(_) => "no such file or directory",
        };
        return Err(InitError(format!("exec: {arg0:?}: {why}")));
    }
    env_var(env, "PATH")
        .unwrap_or(DEFAULT_PATH)
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(arg0))
        .find(|p| runnable(p))
        .ok_or_else(|| {
            InitError(format!(
                "exec: {arg0:?}: executable file not found in $PATH"
            ))
        })
}

/// HOME from /etc/passwd when the spec does not set it (runc does the same).
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 5 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".into())
}

pub fn prepare(p: &Process) -> Result<Prepared, InitError> {
    let args = p.args().clone().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| InitError("process.args is empty".into()))?;
    let mut env = p.env().clone().unwrap_or_default();
    if env_var(&env, "HOME").is_none() {
        env.push(format!("HOME={}", home_of(p.user().uid())));
    }
    let exe = resolve(arg0, &env, p.cwd())?;
    Ok(Prepared { exe, env })
}

/// A pty from the container's own devpts, made this process's controlling
/// terminal and stdio; returns the master for the agent.
pub fn terminal() -> Result<OwnedFd, InitError> {
    // SAFETY: plain libc calls on fds this function owns.
    unsafe {
        let m = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if m < 0 {
            return Err(last_err("open /dev/ptmx"));
        }
        let master = OwnedFd::from_raw_fd(m);
        if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            return Err(last_err("unlock pty"));
        }
        let mut name = [0 as libc::c_char; 64];
        if libc::ptsname_r(m, name.as_mut_ptr(), name.len()) != 0 {
            return Err(last_err("ptsname"));
        }
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if s < 0 {
            return Err(last_err("open pty slave"));
        }
        libc::setsid();
        if libc::ioctl(s, libc::TIOCSCTTY, 0) != 0 {
            return Err(last_err("set controlling terminal"));
        }
        for fd in 0..3 {
            libc::dup2(s, fd);
        }
        if s > 2 {
            libc::close(s);
        }
        Ok(master)
    }
}

pub fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn to_caps(set: &Option<oci_spec::runtime::Capabilities>) -> caps::CapsHashSet {
    set.iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Sets effective, permitted and inheritable in one capset(2): set one at a
/// time, the kernel's subset rules reject valid targets midway.
fn capset(
    eff: &caps::CapsHashSet,
    perm: &caps::CapsHashSet,
    inh: &caps::CapsHashSet,
) -> Result<(), InitError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut data = [Data::default(); 2];
    let bit = |set: &caps::CapsHashSet, word: usize| -> u32 {
        set.iter()
            .map(|c| c.index() as usize)
            .filter(|i| i / 32 == word)
            .fold(0, |acc, i| acc | 1 << (i % 32))
    };
    for (w, d) in data.iter_mut().enumerate() {
        d.effective = bit(eff, w);
        d.permitted = bit(perm, w);
        d.inheritable = bit(inh, w);
    }
    let mut hdr = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    // SAFETY: a v3 header and the two data words the v3 ABI expects.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
        return Err(last_err("capset"));
    }
    Ok(())
}

/// Shrinks the bounding set; needs CAP_SETPCAP, so it runs before the
/// switch to the workload's ids.
fn drop_bounding(c: &LinuxCapabilities) -> Result<(), InitError> {
    let bounding = to_caps(c.bounding());
    let supported = caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
    for cap in supported {
        if !bounding.contains(&cap) {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| InitError(format!("drop {cap} from the bounding set: {e}")))?;
        }
    }
    Ok(())
}

fn apply_caps(c: &LinuxCapabilities) -> Result<(), InitError> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| InitError(format!("capabilities: {e}"));
    capset(
        &to_caps(c.effective()),
        &to_caps(c.permitted()),
        &to_caps(c.inheritable()),
    )?;
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    for cap in to_caps(c.ambient()) {
        caps::raise(None, CapSet::Ambient, cap).map_err(err)?;
    }
    Ok(())
}

/// Root of the user namespace we are in (its uid and gid 0, no extra
/// groups), as runc's init becomes before it builds the root: files and
/// mounts made from here on belong to the container's root, and the
/// capabilities of the namespace stay effective.
pub fn become_root() -> Result<(), InitError> {
    // SAFETY: plain id syscalls.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 {
            return Err(last_err("setgid 0 in the user namespace"));
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(last_err("setgroups in the user namespace"));
        }
        if libc::setresuid(0, 0, 0) != 0 {
            return Err(last_err("setuid 0 in the user namespace"));
        }
    }
    Ok(())
}

fn set_ids(p: &Process) -> Result<(), InitError> {
    let u = p.user();
    let gids = u.additional_gids().clone().unwrap_or_default();
    // SAFETY: plain id syscalls with a valid array.
    unsafe {
        if libc::setgroups(gids.len(), gids.as_ptr()) != 0 {
            return Err(last_err("setgroups"));
        }
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(last_err("keep capabilities"));
        }
        if libc::setresgid(u.gid(), u.gid(), u.gid()) != 0 {
            return Err(last_err("setgid"));
        }
        if libc::setresuid(u.uid(), u.uid(), u.uid()) != 0 {
            return Err(last_err("setuid"));
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    Ok(())
}

fn cstrings(v: &[String]) -> Result<Vec<CString>, InitError> {
    v.iter()
        .map(|s| CString::new(s.as_str()).map_err(|_| InitError(format!("NUL byte in {s:?}"))))
        .collect()
}

/// Every signal at its default disposition and none blocked, as runc
/// starts a workload. The agent is a Rust program, which ignores SIGPIPE;
/// an ignored signal stays ignored across exec, and a pipeline's writer
/// would then never die when its reader goes.
fn default_signals() -> Result<(), InitError> {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL needs no handler; a number the kernel does not
        // let us change (glibc's internal ones) only fails.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty set built by sigemptyset.
    let rc = unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(last_err("unblock signals"));
    }
    Ok(())
}

pub fn finish_and_exec(
    p: &Process,
    prep: Prepared,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<std::convert::Infallible, InitError> {
    // Only stdio reaches the workload, as under runc: the status socket and
    // the barrier close at exec. (Before seccomp, which may refuse it.)
    // SAFETY: close_range only flags our own descriptor table.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } != 0
    {
        return Err(last_err("close_range"));
    }
    for r in p.rlimits().iter().flatten() {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: a valid rlimit struct.
        if unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) } != 0 {
            return Err(last_err("setrlimit"));
        }
    }
    if let Some(adj) = p.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| InitError::io("oom_score_adj", e))?;
    }
    if let Some(m) = p.user().umask() {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(m as libc::mode_t) };
    }
    std::env::set_current_dir(p.cwd())
        .map_err(|e| InitError::io(format!("chdir {}", p.cwd().display()), e))?;
    let nnp = p.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
    // while we still have it (runc's order); the profile must then allow the
    // id and capability calls that follow.
    if !nnp {
        if let Some(s) = seccomp {
            seccomp::load(s)?;
        }
    }
    if let Some(c) = p.capabilities() {
        drop_bounding(c)?;
    }
    set_ids(p)?;
    if let Some(c) = p.capabilities() {
        apply_caps(c)?;
    }
    if nnp {
        // SAFETY: a plain prctl.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(last_err("no_new_privs"));
        }
        if let Some(s) = seccomp {
            seccomp::load(s)?;
        }
    }
    default_signals()?;
    let args = cstrings(&p.args().clone().unwrap_or_default())?;
    let env = cstrings(&prep.env)?;
    let exe = CString::new(prep.exe.to_string_lossy().as_bytes())
        .map_err(|_| InitError("NUL byte in the executable path".into()))?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid strings that outlive the call.
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(InitError::io(
        format!("exec {}", prep.exe.display()),
        std::io::Error::last_os_error(),
    ))
}
