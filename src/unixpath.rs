//! Unix sockets at paths longer than `sun_path` allows.
//!
//! State directories under docker's and containerd's roots carry 64-hex ids,
//! so a socket inside one can exceed the 108-byte address limit. A long path
//! is reached through `/proc/self/fd/N/NAME`, where N is an `O_PATH` handle
//! on its directory; the socket file still lives in (and is removed with) the
//! state directory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Room in `sockaddr_un.sun_path`, less the terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// Binds a listener at `path`, however long.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    with_short(path, |p| UnixListener::bind(p))
}

/// Connects to the socket at `path`, however long.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    with_short(path, |p| UnixStream::connect(p))
}

fn with_short<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    let dir_path = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let handle = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir_path)?;
    let short: PathBuf = Path::new(&format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name);
    if short.as_os_str().len() > SUN_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket file name too long",
        ));
    }
    f(&short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_socket_deeper_than_sun_path_binds_and_connects() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("ctl.sock");
        assert!(path.as_os_str().len() > SUN_PATH_MAX);
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "the socket file lives at the long path");
        let mut client = connect(&path).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }

    #[test]
    fn a_short_path_is_used_as_is() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.sock");
        let _l = bind(&path).unwrap();
        connect(&path).unwrap();
    }
}
