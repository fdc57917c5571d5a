//! The container's init inside the guest: namespaces, the root, hostname,
//! credentials, stdio from the host streams; a start barrier; its exit.

use microrun_protocol::ProcessSpec;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

pub struct Init {
    pub pid: libc::pid_t,
    barrier: Option<OwnedFd>,
    pub relays: Vec<std::thread::JoinHandle<()>>,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Copies until EOF, then closes the write side.
fn relay(mut from: impl Read + Send + 'static, mut to: UnixStream) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    })
}

/// Forks the init, stopped at the barrier, with its stdio on the streams.
pub fn create(
    p: &ProcessSpec,
    rootfs: &str,
    hostname: Option<&str>,
    stdin: UnixStream,
    stdout: UnixStream,
    stderr: UnixStream,
) -> std::io::Result<Init> {
    let (bar_r, bar_w) = pipe()?;
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Everything the child needs, prepared before fork (no allocation after).
    let args: Vec<CString> = p.args.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = p.env.iter().map(|e| cstr(e)).collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let root = cstr(rootfs);
    let cwd = cstr(if p.cwd.is_empty() { "/" } else { &p.cwd });
    let host = hostname.map(cstr);
    let (proc_src, proc_dst, proc_t) = (cstr("proc"), cstr("/proc"), cstr("proc"));
    let dot = cstr(".");
    // Candidate paths for argv[0], resolved in the container's root with the
    // container's PATH (prepared now: no allocation after fork).
    let arg0 = p.args.first().cloned().unwrap_or_default();
    let path_var = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let candidates: Vec<CString> = if arg0.contains('/') {
        vec![cstr(&arg0)]
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| cstr(&format!("{d}/{arg0}")))
            .collect()
    };
    let gids: Vec<libc::gid_t> = p.additional_gids.clone();
    let fds: [RawFd; 4] = [
        bar_r.as_raw_fd(),
        in_r.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
    ];

    // SAFETY: fork in a process whose other threads hold no locks the child
    // needs: the child only makes raw syscalls on data prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY (whole block): async-signal-safe syscalls on prepared data;
        // any failure ends the child with a distinctive status.
        unsafe {
            let die = |code: i32| libc::_exit(code);
            libc::setsid();
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) != 0 {
                die(120);
            }
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            if libc::chdir(root.as_ptr()) != 0 || libc::chroot(dot.as_ptr()) != 0 {
                die(121);
            }
            libc::mkdir(proc_dst.as_ptr(), 0o555);
            libc::mount(
                proc_src.as_ptr(),
                proc_dst.as_ptr(),
                proc_t.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            );
            if let Some(h) = &host {
                libc::sethostname(h.as_ptr(), h.as_bytes().len());
            }
            libc::dup2(fds[1], 0);
            libc::dup2(fds[2], 1);
            libc::dup2(fds[3], 2);
            // Start barrier: one byte, or EOF if the host gave up.
            let mut b = 0u8;
            if libc::read(fds[0], (&mut b as *mut u8).cast(), 1) != 1 {
                die(137);
            }
            if libc::setgroups(gids.len(), gids.as_ptr()) != 0 && !gids.is_empty() {
                die(122);
            }
            if libc::setgid(p.gid) != 0 || libc::setuid(p.uid) != 0 {
                die(123);
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                die(124);
            }
            if argv.len() > 1 {
                for c in &candidates {
                    libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
                }
            }
            let msg = b"microrun-agent: exec failed\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            die(127);
        }
    }
    drop((bar_r, in_r, out_w, err_w));
    let relays = vec![
        relay(std::fs::File::from(out_r), stdout),
        relay(std::fs::File::from(err_r), stderr),
    ];
    // stdin: host stream → pipe; closing the pipe gives the workload EOF.
    let mut stdin = stdin;
    std::thread::spawn(move || {
        let mut w = std::fs::File::from(in_w);
        let _ = std::io::copy(&mut stdin, &mut w);
    });
    Ok(Init {
        pid,
        barrier: Some(bar_w),
        relays,
    })
}

impl Init {
    pub fn start(&mut self) -> std::io::Result<()> {
        match self.barrier.take() {
            Some(b) => std::fs::File::from(b).write_all(b"g"),
            None => Err(std::io::Error::other("already started")),
        }
    }
}
