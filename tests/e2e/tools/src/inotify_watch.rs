//! `inotify-watch DIR STOP`: prints the inotify events of DIR's entries, one
//! line each ("CREATE name", "MODIFY name", ...; ISDIR appended for
//! directories), until an entry named STOP is created. Prints "ready" once
//! the watch is in place, so that a script knows when to start. Busybox has
//! no inotify applet; the suite runs this in containers of both runtimes.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

const EVENTS: [(u32, &str); 7] = [
    (libc::IN_CREATE, "CREATE"),
    (libc::IN_DELETE, "DELETE"),
    (libc::IN_MODIFY, "MODIFY"),
    (libc::IN_ATTRIB, "ATTRIB"),
    (libc::IN_CLOSE_WRITE, "CLOSE_WRITE"),
    (libc::IN_MOVED_FROM, "MOVED_FROM"),
    (libc::IN_MOVED_TO, "MOVED_TO"),
];
/// The header of an inotify event: wd, mask, cookie, len.
const HEADER: usize = 16;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let [dir, stop] = args.as_slice() else {
        eprintln!("usage: inotify-watch DIR STOP");
        return ExitCode::from(2);
    };
    match watch(dir.as_bytes(), stop.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inotify-watch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn watch(dir: &[u8], stop: &[u8]) -> std::io::Result<()> {
    let path = CString::new(dir).map_err(std::io::Error::other)?;
    // SAFETY: plain system call; the fd is closed at exit.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mask = EVENTS.iter().fold(0, |m, (bit, _)| m | bit);
    // SAFETY: `path` is a valid NUL-terminated string.
    if unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
        let mut at = 0;
        while at + HEADER <= n {
            let word = |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap());
            let (mask, len) = (word(4), word(12) as usize);
            let end = (at + HEADER + len).min(n);
            let raw = &buf[at + HEADER..end];
            let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            at = end;
            for (bit, what) in EVENTS {
                if mask & bit != 0 {
                    let dir = if mask & libc::IN_ISDIR != 0 {
                        " ISDIR"
                    } else {
                        ""
                    };
                    writeln!(out, "{what} {}{dir}", String::from_utf8_lossy(name))?;
                }
            }
            if mask & libc::IN_CREATE != 0 && name == stop {
                return out.flush();
            }
        }
        out.flush()?;
    }
}
