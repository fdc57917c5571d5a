//! The control stream from the monitor: one request at a time, one reply
//! each; process exits are reported as they happen, each only once that
//! process's stdout and stderr are delivered. A VM holds one container, or
//! several that share namespaces (a pod), each with its own init, root and
//! cgroup. The VM ends once an init has exited and the monitor closes the
//! stream (it does so when it has no container left).

use crate::cgroup::Cgroup;
use crate::init::HelperConfig;
use crate::spawn::{self, ChildStdio, Spawned};
use crate::stdio::Streams;
use microrun_protocol::frame::{self, Decoder};
use microrun_protocol::relay::{self, shutdown_write};
use microrun_protocol::{GuestMount, Hello, Join, ProcessId, Reply, Request, PROTOCOL_VERSION};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Exits of pids nobody registered yet (a process that died at once).
const MAX_EARLY: usize = 1024;

type Out = Arc<Mutex<Option<UnixStream>>>;
/// A helper's stdio fds (none with a terminal), the terminal's stream, and
/// the output relays to wait for.
type Stdio = (Option<ChildStdio>, Option<UnixStream>, Vec<JoinHandle<()>>);

/// False when the monitor could not be told (no connection, or it broke).
fn send(out: &Out, reply: &Reply) -> bool {
    let Ok(bytes) = frame::encode(reply) else {
        return false;
    };
    let Ok(mut o) = out.lock() else {
        return false;
    };
    o.as_mut().is_some_and(|s| s.write_all(&bytes).is_ok())
}

struct Entry {
    process: ProcessId,
    relays: Vec<JoinHandle<()>>,
    /// A container's init.
    init: bool,
}

#[derive(Default)]
struct Table {
    by_pid: HashMap<libc::pid_t, Entry>,
    early: HashMap<libc::pid_t, i32>,
    masters: HashMap<ProcessId, OwnedFd>,
    pids: HashMap<ProcessId, libc::pid_t>,
}

struct Container {
    spec: Spec,
    cgroup: Cgroup,
    init: Spawned,
}

pub struct Agent {
    out: Out,
    table: Arc<Mutex<Table>>,
    streams: Streams,
    /// By the id the runtime's caller gave.
    containers: HashMap<String, Container>,
    say: fn(&str),
}

fn no_container(id: &str) -> Reply {
    err(format!("no container {id} in this VM"))
}

fn err(msg: impl std::fmt::Display) -> Reply {
    Reply::Error {
        msg: msg.to_string(),
    }
}

fn decode_status(status: i32) -> (Option<i32>, Option<i32>) {
    if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (Some(libc::WEXITSTATUS(status)), None)
    }
}

/// The namespace kinds another container's init can share, with their
/// clone flags.
const JOINABLE: [(&str, libc::c_int); 3] = [
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("pid", libc::CLONE_NEWPID),
];

fn kind_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Pid => "pid",
        _ => "",
    }
}

/// CLONE_NEW* flags for the spec's namespaces. The network namespace is
/// the guest's own (its devices are the container's); a namespace with a
/// path is joined when the host named it in `joins` (another container's in
/// this VM) and refused otherwise. A new user namespace owns the others
/// made with it.
fn clone_flags(spec: &Spec, joins: &[Join]) -> Result<libc::c_int, String> {
    let mut flags = 0;
    let nss = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in nss {
        let f = match ns.typ() {
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::User => libc::CLONE_NEWUSER,
            // Unshared by the helper once it is in the container's cgroup
            // (see init::cgroup_ns): made at clone time, its root would be
            // the agent's cgroup.
            LinuxNamespaceType::Cgroup => continue,
            LinuxNamespaceType::Network => continue,
            other => {
                return Err(format!(
                    "{other:?} namespaces are not supported in microrun guests"
                ))
            }
        };
        if joins.iter().any(|j| j.kind == kind_name(ns.typ())) {
            continue;
        }
        if ns.path().is_some() {
            return Err(format!(
                "joining an existing {:?} namespace by path is not supported in microrun guests",
                ns.typ()
            ));
        }
        flags |= f;
    }
    // The container always gets its own mount namespace: its root is set
    // up there.
    Ok(flags | libc::CLONE_NEWNS)
}

impl Agent {
    pub fn new(streams: Streams, say: fn(&str)) -> Agent {
        let agent = Agent {
            out: Arc::new(Mutex::new(None)),
            table: Arc::default(),
            streams,
            containers: HashMap::new(),
            say,
        };
        agent.reap();
        agent
    }

    /// Serves one monitor connection until it closes.
    pub fn serve(&mut self, ctl: UnixStream) {
        let Ok(w) = ctl.try_clone() else { return };
        if let Ok(mut o) = self.out.lock() {
            *o = Some(w);
        }
        let mut reader = BufReader::new(ctl);
        let mut dec = Decoder::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let req = match dec.next_message::<Request>() {
                Ok(Some(r)) => r,
                Ok(None) => match reader.read(&mut buf) {
                    Ok(0) => break,
                    Err(e) => {
                        (self.say)(&format!("microrun-agent: monitor connection: {e}"));
                        break;
                    }
                    Ok(n) => {
                        dec.feed(&buf[..n]);
                        continue;
                    }
                },
                Err(e) => {
                    // A broken stream cannot be resynchronised: drop it.
                    send(&self.out, &err(e));
                    break;
                }
            };
            let reply = self.handle(req);
            send(&self.out, &reply);
        }
        if let Ok(mut o) = self.out.lock() {
            *o = None;
        }
    }

    fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::Hello(h) if h.protocol != PROTOCOL_VERSION => err(format!(
                "protocol {} not supported (agent speaks {PROTOCOL_VERSION})",
                h.protocol
            )),
            Request::Hello(_) => Reply::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                agent: env!("CARGO_PKG_VERSION").into(),
            }),
            Request::Create { ref id, .. } if self.containers.contains_key(id) => {
                err(format!("container {id} already exists in this VM"))
            }
            Request::Create {
                id,
                init,
                joins,
                spec,
                mounts,
                interfaces,
                routes,
                net_sysctls,
                dns_relay,
            } => match crate::net::sysctls(&net_sysctls)
                .and_then(|()| crate::net::configure(&interfaces, &routes))
                .map_err(|e| format!("network: {e}"))
                .and_then(|()| crate::dns::serve(&dns_relay).map_err(|e| format!("DNS relay: {e}")))
                .and_then(|()| self.create(id, init, *spec, &mounts, &joins))
            {
                Ok(()) => Reply::Ok,
                Err(e) => err(e),
            },
            Request::Network {
                devices,
                interfaces,
                routes,
            } => match crate::net::probe(&devices)
                .and_then(|()| crate::net::configure(&interfaces, &routes))
            {
                Ok(()) => Reply::Ok,
                Err(e) => err(format!("network: {e}")),
            },
            Request::Start { id } => match self.containers.get_mut(&id).map(|c| c.init.start()) {
                Some(Ok(())) => Reply::Ok,
                Some(Err(e)) => err(format!("start: {e}")),
                None => no_container(&id),
            },
            Request::Signal {
                id,
                process,
                signal,
                all,
            } => self.signal(&id, process, signal, all),
            Request::Exec { id, process, spec } => match self.exec(&id, process, &spec) {
                Ok(()) => Reply::Ok,
                Err(e) => err(e),
            },
            Request::Resize {
                process,
                rows,
                cols,
            } => self.resize(process, rows, cols),
            Request::Stats { id } => match self.containers.get(&id) {
                Some(c) => Reply::Stats(c.cgroup.stats()),
                None => no_container(&id),
            },
            Request::Update { id, resources } => match self.containers.get(&id) {
                Some(c) => match c.cgroup.apply(&resources) {
                    Ok(()) => Reply::Ok,
                    Err(e) => err(format!("update: {e}")),
                },
                None => no_container(&id),
            },
            Request::Freeze { id, frozen } => match self.containers.get(&id) {
                Some(c) => match c.cgroup.freeze(frozen) {
                    Ok(()) => Reply::Ok,
                    Err(e) => err(format!("freeze: {e}")),
                },
                None => no_container(&id),
            },
            Request::Remove { id } => match self.containers.remove(&id) {
                Some(c) => match c.cgroup.remove() {
                    Ok(()) => Reply::Ok,
                    Err(e) => err(format!("remove the container's cgroup: {e}")),
                },
                None => no_container(&id),
            },
            Request::HostChanges { changes } => {
                crate::host_change::apply(&changes);
                Reply::Ok
            }
        }
    }

    /// Claims the process's streams and makes the fds its helper starts with.
    fn stdio(&self, process: ProcessId, terminal: bool) -> std::io::Result<Stdio> {
        if terminal {
            return Ok((None, Some(self.streams.claim(process, "tty")?), Vec::new()));
        }
        let sin = self.streams.claim(process, "stdin")?;
        let sout = self.streams.claim(process, "stdout")?;
        let serr = self.streams.claim(process, "stderr")?;
        let (in_r, in_w) = spawn::pipe()?;
        let (out_r, out_w) = spawn::pipe()?;
        let (err_r, err_w) = spawn::pipe()?;
        // stdin is not waited for: the host may keep it open forever.
        relay::spawn(sin, std::fs::File::from(in_w), drop);
        let relays = vec![
            relay::spawn(std::fs::File::from(out_r), sout, shutdown_write),
            relay::spawn(std::fs::File::from(err_r), serr, shutdown_write),
        ];
        let child = ChildStdio {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        };
        Ok((Some(child), None, relays))
    }

    /// Registers a started process; relays of a terminal run on its master.
    fn register(
        &self,
        process: ProcessId,
        init: bool,
        sp: &mut Spawned,
        tty: Option<UnixStream>,
        mut relays: Vec<JoinHandle<()>>,
    ) -> std::io::Result<()> {
        if let (Some(tty), Some(master)) = (tty, sp.master.take()) {
            let r = std::fs::File::from(master.try_clone()?);
            let w = std::fs::File::from(master.try_clone()?);
            relay::spawn(tty.try_clone()?, w, drop);
            relays.push(relay::spawn(r, tty, shutdown_write));
            if let Ok(mut t) = self.table.lock() {
                t.masters.insert(process, master);
            }
        }
        let mut t = self
            .table
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        t.pids.insert(process, sp.pid);
        let entry = Entry {
            process,
            relays,
            init,
        };
        match t.early.remove(&sp.pid) {
            Some(status) => {
                drop(t);
                finish(&self.out, entry, status);
            }
            None => {
                t.by_pid.insert(sp.pid, entry);
            }
        }
        Ok(())
    }

    fn create(
        &mut self,
        id: String,
        init: ProcessId,
        spec: Spec,
        mounts: &[GuestMount],
        joins: &[Join],
    ) -> Result<(), String> {
        let process = spec.process().clone().ok_or("spec has no process")?;
        for m in mounts {
            crate::mounts::guest_mount(m).map_err(|e| e.to_string())?;
        }
        let flags = clone_flags(&spec, joins)?;
        // The namespaces to join, opened before anything is made.
        let mut join_fds = Vec::new();
        for j in joins {
            let flag = JOINABLE
                .iter()
                .find(|(k, _)| *k == j.kind)
                .map(|(_, f)| *f)
                .ok_or_else(|| format!("cannot join a {} namespace", j.kind))?;
            let pid = self
                .table
                .lock()
                .ok()
                .and_then(|t| t.pids.get(&j.process).copied())
                .ok_or_else(|| {
                    format!(
                        "the container whose {} namespace is to be joined has no running init",
                        j.kind
                    )
                })?;
            let path = format!("/proc/{pid}/ns/{}", j.kind);
            let f = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            join_fds.push((flag, f));
        }
        // Made here: the root of a user namespace may not write to /run.
        std::fs::create_dir_all(crate::init::STAGING)
            .map_err(|e| format!("create {}: {e}", crate::init::STAGING))?;
        if process.apparmor_profile().is_some() || process.selinux_label().is_some() {
            (self.say)("microrun-agent: warning: apparmor/selinux labels do not apply in the guest; ignored");
        }
        // The VM's first container keeps the name it always had.
        let name = if init == 0 {
            "container".to_string()
        } else {
            format!("container-{init}")
        };
        let cgroup = Cgroup::create(&name).map_err(|e| format!("cgroup: {e}"))?;
        let made = (|| {
            if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
                cgroup.apply(r).map_err(|e| format!("cgroup limits: {e}"))?;
            }
            let terminal = process.terminal().unwrap_or(false);
            let (child, tty, relays) = self.stdio(init, terminal).map_err(|e| e.to_string())?;
            let cfg = HelperConfig::Init {
                spec: Box::new(spec.clone()),
            };
            let procs = cgroup.procs_file();
            let mut sp =
                spawn_joined(&join_fds, &cfg, flags, child, &procs).map_err(|e| e.to_string())?;
            self.register(init, true, &mut sp, tty, relays)
                .map_err(|e| e.to_string())?;
            Ok(sp)
        })();
        match made {
            Ok(sp) => {
                self.containers.insert(
                    id,
                    Container {
                        spec,
                        cgroup,
                        init: sp,
                    },
                );
                Ok(())
            }
            Err(e) => {
                let _ = cgroup.remove();
                Err(e)
            }
        }
    }

    fn exec(&mut self, id: &str, process: ProcessId, p: &Process) -> Result<(), String> {
        let c = self
            .containers
            .get(id)
            .ok_or_else(|| format!("no container {id} in this VM"))?;
        if self
            .table
            .lock()
            .map(|t| t.pids.contains_key(&process))
            .unwrap_or(true)
        {
            return Err(format!("process {process} exists already"));
        }
        let init_pid = c.init.pid;
        let cfg = HelperConfig::Exec {
            init_pid,
            process: Box::new(p.clone()),
            seccomp: c
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().clone())
                .map(Box::new),
        };
        let (child, tty, relays) = self
            .stdio(process, p.terminal().unwrap_or(false))
            .map_err(|e| e.to_string())?;
        let procs = c.cgroup.procs_file();
        // The helper is cloned into the container's pid namespace.
        let pid_ns = std::fs::File::open(format!("/proc/{init_pid}/ns/pid"))
            .map_err(|e| format!("open the pid namespace of {init_pid}: {e}"))?;
        let mut sp = spawn_joined(&[(libc::CLONE_NEWPID, pid_ns)], &cfg, 0, child, &procs)
            .map_err(|e| e.to_string())?;
        sp.barrier = None;
        self.register(process, false, &mut sp, tty, relays)
            .map_err(|e| e.to_string())
    }

    fn signal(&self, id: &str, process: ProcessId, signal: i32, all: bool) -> Reply {
        let Some(c) = self.containers.get(id) else {
            return no_container(id);
        };
        let pids = if all {
            c.cgroup.pids()
        } else {
            match self
                .table
                .lock()
                .ok()
                .and_then(|t| t.pids.get(&process).copied())
            {
                Some(p) => vec![p],
                None => return err(format!("no process {process}")),
            }
        };
        for pid in pids {
            // SAFETY: kill with a pid and a number.
            if unsafe { libc::kill(pid, signal) } != 0 && !all {
                return err(format!("signal: {}", std::io::Error::last_os_error()));
            }
        }
        Reply::Ok
    }

    fn resize(&self, process: ProcessId, rows: u16, cols: u16) -> Reply {
        let Ok(t) = self.table.lock() else {
            return err("poisoned");
        };
        let Some(m) = t.masters.get(&process) else {
            return err(format!("process {process} has no terminal"));
        };
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a valid winsize on a pty master.
        if unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return err(format!("resize: {}", std::io::Error::last_os_error()));
        }
        Reply::Ok
    }

    /// As PID 1, reaps every child and orphan; tracked ones are reported.
    fn reap(&self) {
        let table = self.table.clone();
        let out = self.out.clone();
        microrun_protocol::threads::spawn(move || loop {
            let mut st = 0;
            // SAFETY: waitpid(-1) with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
            if pid < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                continue;
            }
            let Ok(mut t) = table.lock() else { return };
            match t.by_pid.remove(&pid) {
                Some(entry) => {
                    drop(t);
                    let out = out.clone();
                    microrun_protocol::threads::spawn(move || finish(&out, entry, st));
                }
                None => {
                    if t.early.len() < MAX_EARLY {
                        t.early.insert(pid, st);
                    }
                }
            }
        });
    }
}

/// Clones a helper after joining `nss` ((CLONE_NEW* flag, namespace fd)),
/// from a thread of its own: joining changes the namespaces of the thread
/// that joins (and the pid namespace of its children), not the agent's.
fn spawn_joined(
    nss: &[(libc::c_int, std::fs::File)],
    cfg: &HelperConfig,
    flags: libc::c_int,
    child: Option<ChildStdio>,
    procs: &std::path::Path,
) -> std::io::Result<Spawned> {
    std::thread::scope(|s| {
        s.spawn(|| {
            for (flag, f) in nss {
                // SAFETY: an open namespace fd and its type.
                if unsafe { libc::setns(f.as_raw_fd(), *flag) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            spawn::spawn(cfg, flags, child, procs)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("helper thread panicked")))
    })
}

/// Reports an exit once the process's output is delivered; after an init's
/// exit the VM ends once the monitor closes the stream (which it does when
/// no container is left in the VM).
fn finish(out: &Out, entry: Entry, status: i32) {
    for r in entry.relays {
        let _ = r.join();
    }
    let (code, signal) = decode_status(status);
    if entry.init {
        // The monitor ends the VM as soon as it reads this exit: what the
        // container wrote to a block-device root must be on the disk first.
        // SAFETY: sync takes no arguments.
        unsafe { libc::sync() };
    }
    let told = send(
        out,
        &Reply::Exited {
            process: entry.process,
            code,
            signal,
        },
    );
    if !entry.init {
        return;
    }
    if !told {
        crate::console(
            "microrun-agent: the init's exit could not be reported: no monitor connection",
        );
    }
    // Output may still be queued in the guest's vsock buffers, waiting for
    // credit: the VM must live until the monitor has drained it and closes
    // the control stream (it ends the VM itself right after).
    while out.lock().map(|o| o.is_some()).unwrap_or(false) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    crate::power_off();
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder};

    fn spec(nss: &[(LinuxNamespaceType, Option<&str>)]) -> Spec {
        let nss: Vec<_> = nss
            .iter()
            .map(|(t, p)| {
                let mut b = LinuxNamespaceBuilder::default().typ(*t);
                if let Some(p) = p {
                    b = b.path(*p);
                }
                b.build().unwrap()
            })
            .collect();
        let mut s = Spec::default();
        s.set_linux(Some(
            LinuxBuilder::default().namespaces(nss).build().unwrap(),
        ));
        s
    }

    #[test]
    fn joined_namespaces_are_not_made_and_others_by_path_are_refused() {
        let s = spec(&[
            (LinuxNamespaceType::Ipc, Some("/proc/9/ns/ipc")),
            (LinuxNamespaceType::Pid, None),
            (LinuxNamespaceType::Network, Some("/proc/9/ns/net")),
        ]);
        let joins = [Join {
            kind: "ipc".into(),
            process: 0,
        }];
        let f = clone_flags(&s, &joins).unwrap();
        assert_eq!(f & libc::CLONE_NEWIPC, 0);
        assert_ne!(f & libc::CLONE_NEWPID, 0);
        assert_ne!(f & libc::CLONE_NEWNS, 0);
        let e = clone_flags(&s, &[]).unwrap_err();
        assert!(e.contains("Ipc namespace by path"), "{e}");
        let user = spec(&[(LinuxNamespaceType::User, Some("/proc/9/ns/user"))]);
        assert!(clone_flags(&user, &joins).is_err());
    }
}
