//! The stdio streams from the host: accepted on their own port, each named
//! by its first line `<process> <name>`, and handed to whichever request
//! needs them; plus the relays between them and a process's fds.

use crate::vsock::Listener;
use microrun_protocol::{ProcessId, STREAM_NAMES};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Streams not claimed within this time are dropped by the claimer's error.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds what a hostile host can park here.
const MAX_PENDING: usize = 64;

type Pending = Mutex<HashMap<(ProcessId, String), UnixStream>>;

#[derive(Default, Clone)]
pub struct Streams {
    inner: Arc<(Pending, Condvar)>,
}

fn read_preface(s: &UnixStream) -> Option<(ProcessId, String)> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut r = s;
    while line.len() < 32 {
        match r.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8(line).ok()?;
    let (proc_id, name) = text.split_once(' ')?;
    let name = STREAM_NAMES.iter().find(|n| **n == name)?;
    Some((proc_id.parse().ok()?, name.to_string()))
}

impl Streams {
    /// Accepts streams forever on `l`.
    pub fn serve(&self, l: Listener) {
        let me = self.clone();
        microrun_protocol::threads::spawn(move || {
            while let Ok(s) = l.accept() {
                let me = me.clone();
                microrun_protocol::threads::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let Some(key) = read_preface(&s) else { return };
                    let _ = s.set_read_timeout(None);
                    let (lock, cv) = &*me.inner;
                    if let Ok(mut m) = lock.lock() {
                        if m.len() < MAX_PENDING {
                            m.insert(key, s);
                        }
                    }
                    cv.notify_all();
                });
            }
        });
    }

    /// Waits for the named stream of `process`.
    pub fn claim(&self, process: ProcessId, name: &str) -> std::io::Result<UnixStream> {
        let deadline = Instant::now() + CLAIM_TIMEOUT;
        let (lock, cv) = &*self.inner;
        let mut m = lock.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        loop {
            if let Some(s) = m.remove(&(process, name.to_string())) {
                return Ok(s);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::other(format!(
                    "stream {name} of process {process} never arrived"
                )));
            }
            m = cv
                .wait_timeout(m, left)
                .map_err(|_| std::io::Error::other("poisoned"))?
                .0;
        }
    }
}
