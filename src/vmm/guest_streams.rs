//! The host ends of every process's stdio streams to the guest, and the
//! relays that copy its output, so that a VM that dies can end them all.
//!
//! A process's exit is reported only after its stdout and stderr relays
//! have delivered everything, and they end when the guest closes its side.
//! A guest that crashes or resets never does: the vsock device keeps the
//! host sockets open until the VM is dropped, and the monitor waits for
//! the relays before it drops the VM. Shutting the sockets down when the
//! VM ends lets each relay drain what already arrived, then see EOF.

use crate::sandbox::ProcessId;
use std::collections::HashMap;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Default)]
pub struct GuestStreams {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    by_process: HashMap<ProcessId, Process>,
    ended: bool,
}

#[derive(Default)]
struct Process {
    sockets: Vec<UnixStream>,
    /// Output relays, joined before the process's exit is reported.
    relays: Vec<JoinHandle<()>>,
}

impl GuestStreams {
    /// Keeps a handle on `s` for `process`; after the VM ended, shuts it
    /// down at once.
    pub fn add(&self, process: ProcessId, s: &UnixStream) -> std::io::Result<()> {
        let s = s.try_clone()?;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.ended {
            let _ = s.shutdown(Shutdown::Both);
        }
        g.by_process.entry(process).or_default().sockets.push(s);
        Ok(())
    }

    /// The relays copying `process`'s output.
    pub fn set_relays(&self, process: ProcessId, relays: Vec<JoinHandle<()>>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_process.entry(process).or_default().relays = relays;
    }

    /// Waits until `process`'s output is delivered, then lets its streams
    /// go. The sockets stay registered meanwhile, so a VM that ends during
    /// the wait still ends them.
    pub fn finish(&self, process: ProcessId) {
        let relays = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.by_process
                .get_mut(&process)
                .map(|p| std::mem::take(&mut p.relays))
                .unwrap_or_default()
        };
        for r in relays {
            let _ = r.join();
        }
        self.forget(process);
    }

    /// Drops `process`'s streams and relays without waiting.
    pub fn forget(&self, process: ProcessId) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_process.remove(&process);
    }

    /// The VM is gone: every stream reads what is queued, then EOF.
    pub fn end_all(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.ended = true;
        for s in g.by_process.values().flat_map(|p| &p.sockets) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microrun_protocol::relay;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn ending_lets_a_relay_deliver_what_arrived_and_finish() {
        let streams = GuestStreams::default();
        // `guest` stands for the vsock device's end, which never closes.
        let (host, mut guest) = UnixStream::pair().unwrap();
        let (mut out_r, out_w) = UnixStream::pair().unwrap();
        streams.add(1, &host).unwrap();
        let relay = relay::spawn(host, out_w, drop);
        guest.write_all(b"last words").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!relay.is_finished(), "the relay waits for the guest");
        streams.set_relays(1, vec![relay]);
        let waiter = streams.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            waiter.finish(1);
            tx.send(())
        });
        std::thread::sleep(Duration::from_millis(100));
        streams.end_all();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(()));
        assert!(streams.inner.lock().unwrap().by_process.is_empty());
        let mut got = Vec::new();
        out_r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words");
        drop(guest);
    }

    #[test]
    fn a_stream_added_after_the_end_is_ended_at_once() {
        let streams = GuestStreams::default();
        streams.end_all();
        let (host, _guest) = UnixStream::pair().unwrap();
        streams.add(2, &host).unwrap();
        let mut b = [0u8; 1];
        assert_eq!((&host).read(&mut b).unwrap(), 0);
        streams.forget(2);
        assert!(streams.inner.lock().unwrap().by_process.is_empty());
    }
}
