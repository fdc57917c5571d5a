//! `microrun.selftest` on the kernel command line: exercise the VM's devices
//! from inside and report on the console (used by the e2e suite).

use std::io::{Read, Seek, SeekFrom, Write};

pub fn requested() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "microrun.selftest"))
}

pub fn run(say: impl Fn(&str)) {
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    say(&format!("selftest: cpus {cpus}"));
    match std::fs::File::open("/dev/hwrng").and_then(|mut f| {
        let mut b = [0u8; 16];
        f.read_exact(&mut b).map(|_| b)
    }) {
        Ok(b) => say(&format!(
            "selftest: hwrng ok ({} nonzero of 16)",
            b.iter().filter(|x| **x != 0).count()
        )),
        Err(e) => say(&format!("selftest: hwrng unavailable: {e}")),
    }
    let disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vda");
    match disk {
        Ok(mut f) => {
            let mut b = [0u8; 16];
            let read = f.read_exact(&mut b);
            say(&format!(
                "selftest: vda read {}",
                match read {
                    Ok(()) => String::from_utf8_lossy(&b)
                        .trim_end_matches('\0')
                        .to_string(),
                    Err(e) => format!("failed: {e}"),
                }
            ));
            let w = f
                .seek(SeekFrom::Start(4096))
                .and_then(|_| f.write_all(b"written-by-guest"))
                .and_then(|_| f.sync_all());
            say(&format!(
                "selftest: vda write {}",
                if w.is_ok() {
                    "ok".into()
                } else {
                    format!("{w:?}")
                }
            ));
        }
        Err(e) => say(&format!("selftest: vda unavailable: {e}")),
    }
}

/// Connects to host port 1024 over vsock, sends a line, reports the answer.
pub fn vsock(say: impl Fn(&str)) {
    match vsock_ping() {
        Ok(reply) => say(&format!("selftest: vsock reply {reply}")),
        Err(e) => say(&format!("selftest: vsock unavailable: {e}")),
    }
}

fn vsock_ping() -> std::io::Result<String> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2) call; the fd is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket owned from here on by the UnixStream
    // wrapper (any stream socket works with its Read/Write).
    let mut s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    let addr = libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: 1024,
        svm_cid: libc::VMADDR_CID_HOST,
        svm_zero: [0; 4],
    };
    // SAFETY: addr is a valid sockaddr_vm and its size is passed.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    s.write_all(b"ping\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply.trim().to_string())
}
