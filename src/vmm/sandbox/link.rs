//! The control stream to the guest agent: one request, one reply, and the
//! process exits the agent reports in between.

use crate::sandbox::{ExitStatus, ProcessId, SandboxError};
use microrun_protocol::frame::{self, Decoder};
use microrun_protocol::{Reply, Request};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

use super::fail;

/// The control connection to the agent.
#[derive(Default)]
pub(super) struct AgentLink {
    pub(super) ctl: Mutex<Option<UnixStream>>,
    pub(super) replies: Mutex<Option<Receiver<Reply>>>,
}

pub(super) enum LinkError {
    Down(String),
    /// No reply in time.
    Silent,
}

impl AgentLink {
    /// One request, one reply. The connection stays locked throughout, so
    /// concurrent callers cannot take each other's replies.
    pub(super) fn call(&self, req: &Request) -> Result<Reply, LinkError> {
        let down = |e: &dyn std::fmt::Display| LinkError::Down(e.to_string());
        let bytes = frame::encode(req).map_err(|e| down(&e))?;
        let mut ctl = self.ctl.lock().map_err(|e| down(&e))?;
        ctl.as_mut()
            .ok_or_else(|| down(&"no agent connection"))?
            .write_all(&bytes)
            .map_err(|e| down(&format!("agent connection: {e}")))?;
        let rx = self.replies.lock().map_err(|e| down(&e))?;
        let reply = rx
            .as_ref()
            .ok_or_else(|| down(&"no agent connection"))?
            .recv_timeout(REPLY_TIMEOUT);
        drop(ctl);
        reply.map_err(|_| LinkError::Silent)
    }
}

/// Exits of the container's processes, as the agent reports them. `None`
/// under `dead` means the VM went away: every process is gone.
#[derive(Default)]
pub(super) struct Exits {
    done: Mutex<(HashMap<ProcessId, ExitStatus>, bool)>,
    cv: Condvar,
}

impl Exits {
    pub(super) fn set(&self, process: ProcessId, st: ExitStatus) {
        if let Ok(mut e) = self.done.lock() {
            e.0.insert(process, st);
        }
        self.cv.notify_all();
    }

    /// Whether `process` has exited (or the VM is gone).
    pub(super) fn exited(&self, process: ProcessId) -> bool {
        self.done
            .lock()
            .map(|e| e.1 || e.0.contains_key(&process))
            .unwrap_or(true)
    }

    pub(super) fn vm_gone(&self) {
        if let Ok(mut e) = self.done.lock() {
            e.1 = true;
        }
        self.cv.notify_all();
    }

    pub(super) fn wait(&self, process: ProcessId) -> Result<ExitStatus, SandboxError> {
        let mut e = self.done.lock().map_err(fail)?;
        loop {
            if let Some(st) = e.0.get(&process) {
                return Ok(*st);
            }
            if e.1 {
                return Ok(ExitStatus::Signal(libc::SIGKILL));
            }
            e = self.cv.wait(e).map_err(fail)?;
        }
    }
}

/// Reads agent messages: replies go to `call`, exits to `wait`.
pub(super) fn reader_loop(mut s: UnixStream, tx: mpsc::Sender<Reply>, exits: Arc<Exits>) {
    let mut dec = Decoder::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match dec.next_message::<Reply>() {
            Ok(Some(Reply::Exited {
                process,
                code,
                signal,
            })) => {
                let st = match (code, signal) {
                    (_, Some(sig)) => ExitStatus::Signal(sig),
                    (Some(c), None) => ExitStatus::Code(c),
                    (None, None) => ExitStatus::Code(255),
                };
                exits.set(process, st);
                continue;
            }
            Ok(Some(r)) => {
                let _ = tx.send(r);
                continue;
            }
            Ok(None) => {}
            Err(_) => break,
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => dec.feed(&buf[..n]),
        }
    }
    // The agent is gone: whatever did not report an exit died with the VM.
    exits.vm_gone();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::INIT;

    fn run_reader(bytes: &[u8]) -> (Arc<Exits>, Receiver<Reply>) {
        let (mut host_side, agent_side) = UnixStream::pair().unwrap();
        let exits = Arc::new(Exits::default());
        let (tx, rx) = mpsc::channel();
        let e = exits.clone();
        let t = std::thread::spawn(move || reader_loop(agent_side, tx, e));
        host_side.write_all(bytes).unwrap();
        drop(host_side);
        t.join().unwrap();
        (exits, rx)
    }

    #[test]
    fn exits_and_replies_are_routed() {
        let mut bytes = frame::encode(&Reply::Ok).unwrap();
        bytes.extend(
            frame::encode(&Reply::Exited {
                process: 2,
                code: Some(3),
                signal: None,
            })
            .unwrap(),
        );
        let (exits, rx) = run_reader(&bytes);
        assert_eq!(rx.try_recv().unwrap(), Reply::Ok);
        assert_eq!(exits.wait(2).unwrap(), ExitStatus::Code(3));
        // The stream ended without the init's exit: it died with the VM.
        assert_eq!(exits.wait(INIT).unwrap(), ExitStatus::Signal(libc::SIGKILL));
    }

    #[test]
    fn a_hostile_agent_cannot_hang_or_crash_the_reader() {
        for bytes in [
            u32::MAX.to_be_bytes().to_vec(),
            vec![0, 0, 0, 3, b'{', b'{', b'{'],
            b"\x00\x00\x00\x10{\"reply\":\"nope\"}".to_vec(),
        ] {
            let (exits, rx) = run_reader(&bytes);
            assert!(rx.try_recv().is_err());
            assert_eq!(exits.wait(INIT).unwrap(), ExitStatus::Signal(libc::SIGKILL));
        }
    }
}
