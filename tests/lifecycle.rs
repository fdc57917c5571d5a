//! The container life cycle through the CLI and the real monitor, with the
//! sandbox double (`microrun-double`) in place of the microVM.
#![cfg(feature = "test-double")]

mod common;
use common::{become_subreaper, reap, wait_for_file, Env};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use std::io::{Read, Write};
use std::process::Stdio;

fn env() -> Env {
    become_subreaper();
    Env::new(env!("CARGO_BIN_EXE_microrun-double"))
}

#[test]
fn status_state_machine_and_invalid_transitions() {
    let e = env();
    let b = e.bundle("b", "sleep 100");
    let pid = e.create(&b, "c");
    assert_eq!(e.status("c"), "created");
    assert!(pid > 0);
    e.fails(
        &["create", "--bundle", b.to_str().unwrap(), "c"],
        "container with id exists",
    );
    e.fails(&["pause", "c"], "container not running");
    e.fails(&["resume", "c"], "not paused");
    e.ok(&["start", "c"]);
    assert_eq!(e.status("c"), "running");
    e.fails(&["start", "c"], "cannot start an already running container");
    e.fails(
        &["delete", "c"],
        "cannot delete container c that is not stopped: running",
    );
    e.ok(&["pause", "c"]);
    assert_eq!(e.status("c"), "paused");
    e.fails(&["pause", "c"], "already paused");
    e.fails(&["start", "c"], "cannot start a paused container");
    e.fails(&["delete", "c"], "not stopped: paused");
    e.ok(&["resume", "c"]);
    assert_eq!(e.status("c"), "running");
    e.fails(&["resume", "c"], "not paused");
    e.ok(&["kill", "c", "TERM"]);
    assert_eq!(
        reap(pid),
        WaitStatus::Signaled(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM, false)
    );
    let st = e.state("c");
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["pid"], 0);
    e.fails(&["kill", "c", "TERM"], "container not running");
    e.fails(&["start", "c"], "cannot start a container that has stopped");
    e.fails(&["pause", "c"], "container not running");
    e.ok(&["delete", "c"]);
    e.fails(&["state", "c"], "does not exist");
    assert!(e.root_is_empty());
}

#[test]
fn delete_of_created_container_kills_it() {
    let e = env();
    let b = e.bundle("b", "echo must-not-run > ran");
    let pid = e.create(&b, "c");
    e.ok(&["delete", "c"]);
    assert!(matches!(
        reap(pid),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    assert!(e.root_is_empty());
}

#[test]
fn exit_codes_and_signals_map_like_runc() {
    let e = env();
    let b = e.bundle("code", "exit 7");
    let o = e.run(&["run", "--bundle", b.to_str().unwrap(), "r7"]);
    assert_eq!(o.status.code(), Some(7));
    let dbg = e.path("dbg");
    let b = e.bundle(
        "sig",
        &format!(
            "kill -TERM $$; grep Sig /proc/self/status > {}",
            dbg.display()
        ),
    );
    let o = e.run(&["run", "--bundle", b.to_str().unwrap(), "rt"]);
    assert_eq!(
        o.status.code(),
        Some(143),
        "{}",
        std::fs::read_to_string(&dbg).unwrap_or_default()
    );
    assert!(e.root_is_empty(), "run removes the container");

    // The monitor itself exits like the workload (the shim reaps it).
    let b = e.bundle("long", "sleep 100");
    let pid = e.create(&b, "k");
    e.ok(&["start", "k"]);
    e.ok(&["kill", "k", "9"]);
    assert!(matches!(
        reap(pid),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    let b = e.bundle("seven", "exit 3");
    let pid = e.create(&b, "x");
    e.ok(&["start", "x"]);
    assert!(matches!(reap(pid), WaitStatus::Exited(_, 3)));
}

#[test]
fn signals_are_relayed_to_the_workload() {
    let e = env();
    let marker = e.path("usr1");
    let script = format!(
        "trap 'echo usr1 >> {m}' USR1; trap 'echo term >> {m}; exit 0' TERM; echo ready >> {m}; while :; do sleep 0.05; done",
        m = marker.display()
    );
    let b = e.bundle("b", &script);
    let pid = e.create(&b, "s");
    e.ok(&["start", "s"]);
    wait_for_file(&marker);
    e.ok(&["kill", "s", "SIGUSR1"]);
    // Standard signals coalesce: send the next only once this one was handled.
    while !std::fs::read_to_string(&marker).unwrap().contains("usr1") {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // A signal sent straight to the monitor (the container's host pid) is relayed too.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&marker)
        .unwrap()
        .matches("usr1")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "USR1 not relayed twice: {}",
            std::fs::read_to_string(&marker).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    e.ok(&["kill", "s"]);
    assert!(matches!(reap(pid), WaitStatus::Exited(_, 0)));
    assert!(std::fs::read_to_string(&marker).unwrap().contains("term"));
}

#[test]
fn pid_file_is_digits_without_newline() {
    let e = env();
    let b = e.bundle("b", "sleep 100");
    let pf = e.path("pid");
    e.ok(&[
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "--pid-file",
        pf.to_str().unwrap(),
        "p",
    ]);
    let s = std::fs::read_to_string(&pf).unwrap();
    assert!(
        !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()),
        "{s:?}"
    );
    assert_eq!(
        s.parse::<i64>().unwrap(),
        e.state("p")["pid"].as_i64().unwrap()
    );
    e.ok(&["delete", "--force", "p"]);
    reap(s.parse().unwrap());
}

#[test]
fn stdio_passes_through_and_eof_follows_the_workload() {
    let e = env();
    let b = e.bundle("b", "cat; echo to-stderr >&2; exit 5");
    let mut create = e
        .cmd(&["create", "--bundle", b.to_str().unwrap(), "io"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = create.stdin.take().unwrap();
    let mut stdout = create.stdout.take().unwrap();
    let mut stderr = create.stderr.take().unwrap();
    assert!(create.wait().unwrap().success());
    let pid = e.state("io")["pid"].as_i64().unwrap() as i32;
    e.ok(&["start", "io"]);
    let payload = vec![b'x'; 1 << 20];
    let writer = std::thread::spawn(move || {
        stdin.write_all(&payload).unwrap();
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(out.len(), 1 << 20);
    assert!(out.iter().all(|&c| c == b'x'));
    assert_eq!(err, "to-stderr\n");
    assert!(matches!(reap(pid), WaitStatus::Exited(_, 5)));
}

#[test]
fn console_socket_receives_a_working_pty_master() {
    use std::os::unix::net::UnixListener;
    let e = env();
    let sock = e.path("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let b = e.bundle_with("b", "read line; echo got:$line; tty", |c| {
        c["process"]["terminal"] = true.into()
    });
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let (n, mut fds) = microrun::fdpass::recv(&conn, &mut buf).unwrap();
        assert_eq!(fds.len(), 1, "exactly one fd");
        (
            String::from_utf8_lossy(&buf[..n]).into_owned(),
            fds.pop().unwrap(),
        )
    });
    e.ok(&[
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        "t",
    ]);
    let (name, master) = receiver.join().unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    let pid = e.state("t")["pid"].as_i64().unwrap() as i32;
    e.ok(&["start", "t"]);
    let mut m = std::fs::File::from(master);
    m.write_all(b"hello\n").unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&out).contains("/dev/pts/") {
        match m.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("got:hello"), "{text}");
    assert!(text.contains(&name), "tty prints the pty: {text}");
    assert!(matches!(reap(pid), WaitStatus::Exited(_, 0)));
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    let e = env();
    let log = e.path("hooks.log");
    let hook = |kind: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo {kind} $(cat) >> {}", log.display())],
        })
    };
    // The workload lives until poststart has run, so poststart sees "running".
    let go = e.path("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.01; done", go.display());
    let poststart = serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("echo poststart $(cat) >> {}; touch {}", log.display(), go.display())],
    });
    let b = e.bundle_with("b", &script, |c| {
        c["hooks"] = serde_json::json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            "startContainer": [hook("startContainer")],
            "poststart": [poststart],
            "poststop": [hook("poststop")],
        });
    });
    let pid = e.create(&b, "h");
    e.ok(&["start", "h"]);
    reap(pid);
    e.ok(&["delete", "h"]);
    let text = std::fs::read_to_string(&log).unwrap();
    let kinds: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    for line in text.lines() {
        let (kind, json) = line.split_once(' ').unwrap();
        let v: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|_| panic!("{kind}: {json}"));
        assert_eq!(v["id"], "h", "{kind}");
        assert_eq!(v["bundle"], b.to_str().unwrap(), "{kind}");
        let want = match kind {
            "prestart" | "createRuntime" | "createContainer" => "creating",
            "startContainer" => "created",
            "poststart" => "running",
            _ => "stopped",
        };
        assert_eq!(v["status"], want, "{kind}");
        if kind != "poststop" {
            assert_eq!(v["pid"], pid, "{kind}");
        }
    }
}

#[test]
fn failing_or_slow_hooks_fail_create_and_leave_nothing() {
    let e = env();
    let b = e.bundle_with("fail", "exit 0", |c| {
        c["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}]});
    });
    e.fails(
        &["create", "--bundle", b.to_str().unwrap(), "f"],
        "createRuntime hook /bin/sh failed",
    );
    assert!(e.root_is_empty());
    let b = e.bundle_with("slow", "exit 0", |c| {
        c["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    });
    e.fails(
        &["create", "--bundle", b.to_str().unwrap(), "s"],
        "timed out after 1s",
    );
    assert!(e.root_is_empty());
    let b = e.bundle_with("boot", "exit 0", |c| {
        c["annotations"] = serde_json::json!({"test.fail-boot": "1"})
    });
    e.fails(
        &["create", "--bundle", b.to_str().unwrap(), "boot"],
        "boot failed",
    );
    assert!(e.root_is_empty());
}

#[test]
fn concurrent_verbs_on_one_id_are_serialized() {
    let e = std::sync::Arc::new(env());
    let b = e.bundle("b", "sleep 100");
    let creators: Vec<_> = (0..6)
        .map(|_| {
            let e = e.clone();
            let b = b.clone();
            std::thread::spawn(move || e.run(&["create", "--bundle", b.to_str().unwrap(), "same"]))
        })
        .collect();
    let results: Vec<_> = creators.into_iter().map(|t| t.join().unwrap()).collect();
    let won = results.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "exactly one create wins");
    for o in results.iter().filter(|o| !o.status.success()) {
        assert!(String::from_utf8_lossy(&o.stderr).contains("container with id exists"));
    }
    e.ok(&["start", "same"]);
    let togglers: Vec<_> = (0..8)
        .map(|i| {
            let e = e.clone();
            std::thread::spawn(move || {
                let verb = if i % 2 == 0 { "pause" } else { "resume" };
                let _ = e.run(&[verb, "same"]);
                e.state("same")
            })
        })
        .collect();
    for t in togglers {
        let st = t.join().unwrap();
        assert!(
            matches!(st["status"].as_str(), Some("running" | "paused")),
            "{st}"
        );
    }
    let _ = e.run(&["resume", "same"]);
    let pid = e.state("same")["pid"].as_i64().unwrap() as i32;
    e.ok(&["delete", "--force", "same"]);
    reap(pid);
    assert!(e.root_is_empty());
}

#[test]
fn delete_force_after_monitor_was_sigkilled() {
    let e = env();
    let b = e.bundle("b", "sleep 100");
    let pid = e.create(&b, "k");
    e.ok(&["start", "k"]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    reap(pid);
    assert_eq!(e.status("k"), "stopped");
    e.ok(&["delete", "--force", "k"]);
    assert!(e.root_is_empty());
    e.ok(&["delete", "--force", "k"]);
}

#[test]
fn exec_detached_and_attached() {
    let e = env();
    let b = e.bundle("b", "sleep 100");
    let pid = e.create(&b, "e");
    e.ok(&["start", "e"]);
    let o = e.run(&[
        "exec",
        "e",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");

    let proc_file = e.path("process.json");
    std::fs::write(
        &proc_file,
        serde_json::json!({"cwd": "/", "args": ["sh", "-c", "exit 9"], "user": {"uid": 0, "gid": 0}}).to_string(),
    )
    .unwrap();
    let pf = e.path("exec.pid");
    e.ok(&[
        "exec",
        "--detach",
        "--process",
        proc_file.to_str().unwrap(),
        "--pid-file",
        pf.to_str().unwrap(),
        "e",
    ]);
    let standin: i32 = std::fs::read_to_string(&pf).unwrap().parse().unwrap();
    assert!(matches!(reap(standin), WaitStatus::Exited(_, 9)));
    let ps = e.ok(&["ps", "--format", "json", "e"]);
    let pids: Vec<i32> = serde_json::from_str(&ps).unwrap();
    assert!(!pids.is_empty());
    e.ok(&["kill", "e", "KILL"]);
    reap(pid);
    e.fails(&["exec", "e", "--", "true"], "stopped");
    e.ok(&["delete", "e"]);
}

/// A detached exec with a terminal lets go of the caller's stdio: the
/// containerd shim reads it to EOF before it counts the exec as started.
#[test]
fn detached_tty_exec_releases_the_callers_stdio() {
    use std::os::unix::net::UnixListener;
    let e = env();
    let b = e.bundle("b", "sleep 100");
    let pid = e.create(&b, "x");
    e.ok(&["start", "x"]);
    let sock = e.path("exec-console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        microrun::fdpass::recv(&conn, &mut buf).unwrap().1
    });
    let pf = e.path("exec-tty.pid");
    let mut cmd = e.cmd(&[
        "exec",
        "--detach",
        "--tty",
        "--console-socket",
        sock.to_str().unwrap(),
        "--pid-file",
        pf.to_str().unwrap(),
        "x",
        "--",
        "sleep",
        "100",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (tx, rx) = std::sync::mpsc::channel();
    // output() reads stdout and stderr to EOF, as the shim does.
    std::thread::spawn(move || tx.send(cmd.output().map(|o| o.status.success())));
    let done = rx.recv_timeout(std::time::Duration::from_secs(30));
    let _master = receiver.join().unwrap();
    let standin: i32 = std::fs::read_to_string(&pf)
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    e.ok(&["kill", "x", "KILL"]);
    reap(pid);
    if standin > 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(standin), Signal::SIGKILL);
        reap(standin);
    }
    assert!(
        matches!(done, Ok(Ok(true))),
        "exec --detach --tty held its stdout: {done:?}"
    );
    e.ok(&["delete", "--force", "x"]);
}
