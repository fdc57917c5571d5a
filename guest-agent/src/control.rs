//! The control stream from the monitor: hello, create, start, signal; the
//! init's exit goes back once its stdout and stderr are delivered.

use crate::container::{self, Init};
use crate::vsock::Listener;
use microrun_protocol::frame::{self, Decoder};
use microrun_protocol::{Hello, Reply, Request, PROTOCOL_VERSION};
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

type Out = Arc<Mutex<UnixStream>>;

fn send(out: &Out, reply: &Reply) {
    if let Ok(bytes) = frame::encode(reply) {
        if let Ok(mut o) = out.lock() {
            let _ = o.write_all(&bytes);
        }
    }
}

/// Accepts the three stdio streams, each announced by its name on a line.
fn accept_stdio(l: &Listener) -> std::io::Result<[UnixStream; 3]> {
    let mut slots: [Option<UnixStream>; 3] = [None, None, None];
    while slots.iter().any(Option::is_none) {
        let s = l.accept()?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        let mut r = &s;
        while line.len() < 16 && r.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let i = match &line[..] {
            b"stdin" => 0,
            b"stdout" => 1,
            b"stderr" => 2,
            _ => continue,
        };
        slots[i] = Some(s);
    }
    let [a, b, c] = slots;
    Ok([
        a.unwrap_or_else(|| unreachable!()),
        b.unwrap_or_else(|| unreachable!()),
        c.unwrap_or_else(|| unreachable!()),
    ])
}

/// Serves one monitor connection until the init has exited.
pub fn serve(ctl: UnixStream, stdio: &Listener, say: impl Fn(&str)) {
    let Ok(w) = ctl.try_clone() else { return };
    let out: Out = Arc::new(Mutex::new(w));
    let mut reader = BufReader::new(ctl);
    let mut dec = Decoder::new();
    let mut init: Option<Init> = None;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let req = match dec.next_message::<Request>() {
            Ok(Some(r)) => r,
            Ok(None) => match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    dec.feed(&buf[..n]);
                    continue;
                }
            },
            Err(e) => {
                send(&out, &Reply::Error { msg: e.to_string() });
                return;
            }
        };
        let reply = match req {
            Request::Hello(h) if h.protocol != PROTOCOL_VERSION => Reply::Error {
                msg: format!(
                    "protocol {} not supported (agent speaks {PROTOCOL_VERSION})",
                    h.protocol
                ),
            },
            Request::Hello(_) => Reply::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                agent: env!("CARGO_PKG_VERSION").into(),
            }),
            Request::Create { .. } if init.is_some() => Reply::Error {
                msg: "container already created".into(),
            },
            Request::Create {
                process,
                rootfs,
                hostname,
            } => {
                let res = accept_stdio(stdio).and_then(|[i, o, e]| {
                    container::create(&process, &rootfs, hostname.as_deref(), i, o, e)
                });
                match res {
                    Ok(i) => {
                        watch_exit(i.pid, out.clone(), &mut init, i);
                        Reply::Ok
                    }
                    Err(e) => Reply::Error {
                        msg: format!("create: {e}"),
                    },
                }
            }
            Request::Start => match init.as_mut().map(Init::start) {
                Some(Ok(())) => Reply::Ok,
                Some(Err(e)) => Reply::Error {
                    msg: format!("start: {e}"),
                },
                None => Reply::Error {
                    msg: "no container".into(),
                },
            },
            Request::Signal { signal, all } => match &init {
                Some(i) => {
                    // SAFETY: kill with a pid (or process group) and a number.
                    let rc = unsafe { libc::kill(if all { -i.pid } else { i.pid }, signal) };
                    if rc == 0 {
                        Reply::Ok
                    } else {
                        Reply::Error {
                            msg: format!("signal: {}", std::io::Error::last_os_error()),
                        }
                    }
                }
                None => Reply::Error {
                    msg: "no container".into(),
                },
            },
        };
        send(&out, &reply);
        let _ = &say;
    }
}

/// Waits for the init (reaping every orphan, as PID 1), then for its output
/// to drain, then reports its exit and powers the VM off.
fn watch_exit(pid: libc::pid_t, out: Out, slot: &mut Option<Init>, mut init: Init) {
    let relays = std::mem::take(&mut init.relays);
    *slot = Some(init);
    std::thread::spawn(move || {
        let status = loop {
            let mut st = 0;
            // SAFETY: waitpid(-1) with a valid status pointer.
            let r = unsafe { libc::waitpid(-1, &mut st, 0) };
            if r == pid {
                break st;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break 255 << 8;
            }
        };
        for r in relays {
            let _ = r.join();
        }
        let (code, signal) = if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (Some(libc::WEXITSTATUS(status)), None)
        };
        send(&out, &Reply::Exited { code, signal });
        // Give the monitor a moment to read it before the VM goes away.
        if let Ok(o) = out.lock() {
            let _ = o.shutdown(std::net::Shutdown::Write);
            let mut r = &*o;
            let mut b = [0u8; 1];
            let _ = r.read(&mut b);
        }
        crate::power_off();
    });
}
