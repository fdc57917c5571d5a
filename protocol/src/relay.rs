//! Copying a stdio stream between a socket and a pipe, on either side.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

const CHUNK: usize = 64 * 1024;

/// Copies `from` to `to` until EOF or an error; returns the bytes moved.
///
/// Deliberately not `std::io::copy`: between a socket and a pipe it uses
/// splice(2), which holds the pipe's lock while it waits for the socket.
/// Every other writer of that pipe (the caller's shell sharing our stderr)
/// and the close of its last reader (a workload exiting) then block in
/// uninterruptible sleep until the socket has data, possibly forever.
pub fn copy<R: Read + ?Sized, W: Write + ?Sized>(from: &mut R, to: &mut W) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Copies `from` to `to` in a thread until EOF, then hands `to` to `done`
/// (dropped, or half-closed with [`shutdown_write`]).
pub fn spawn<R, W>(mut from: R, mut to: W, done: impl FnOnce(W) + Send + 'static) -> JoinHandle<()>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    crate::threads::spawn(move || {
        let _ = copy(&mut from, &mut to);
        let _ = to.flush();
        done(to);
    })
}

/// Ends a stream in one direction: the peer reads EOF, the other way stays open.
pub fn shutdown_write(s: UnixStream) {
    let _ = s.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_everything_until_eof() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        assert_eq!(copy(&mut &data[..], &mut out).unwrap(), data.len() as u64);
        assert_eq!(out, data);
    }

    /// A socket with no data must not stop another writer of the same pipe
    /// (splice-based copies did, holding the pipe lock).
    #[test]
    fn idle_socket_does_not_block_other_pipe_writers() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (r, mut w1) = std::io::pipe().unwrap();
        let mut w2 = w1.try_clone().unwrap();
        std::thread::spawn(move || copy(&mut a, &mut w1));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(w2.write_all(b"x").is_ok()));
        let wrote = rx.recv_timeout(std::time::Duration::from_secs(10));
        // On failure closing the pipe would block too: leave it to exit.
        std::mem::forget(r);
        b.write_all(b"y").unwrap();
        assert_eq!(wrote, Ok(true));
    }
}
