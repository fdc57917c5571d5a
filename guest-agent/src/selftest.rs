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
    let mut s = crate::vsock::connect_host(1024)?;
    s.write_all(b"ping\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply.trim().to_string())
}
