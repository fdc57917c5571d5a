//! Lifecycle rules, driven from outside: state at each step, errors for
//! operations a state does not allow, hooks in order with the state they
//! are given, the pid file, kill and delete semantics, create without
//! start, the config read once at create, and bad input that must leave
//! nothing behind.

use crate::drive::{run_cmd, Bench, Outcome};
use crate::spec::{self, set, CHECKER};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Case = fn(&Bench, &str) -> Outcome;

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("state-after-create", state_after_create),
        ("running-then-stopped", running_then_stopped),
        ("errors-by-state", errors_by_state),
        ("delete-force", delete_force),
        ("delete-created", delete_created),
        ("duplicate-id", duplicate_id),
        ("unknown-id", unknown_id),
        ("hooks-in-order", hooks_in_order),
        ("kill-signal-forms", kill_signal_forms),
        ("kill-all", kill_all),
        ("create-without-start", create_without_start),
        ("config-read-at-create", config_read_at_create),
        ("bad-config-leaves-nothing", bad_config),
        ("missing-rootfs-leaves-nothing", missing_rootfs),
        ("bad-id", bad_id),
    ]
}

/// Fails the case with `msg` unless `ok`.
macro_rules! ensure {
    ($ok:expr, $($msg:tt)+) => {
        if !$ok {
            return Outcome::fail(format!($($msg)+));
        }
    };
}

fn sleeper() -> Value {
    let mut s = spec::base();
    set(&mut s, "process/args", json!([CHECKER, "sleep"]));
    s
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

/// `create` with its stdio on files in the bundle (a detached container
/// keeps them), and a pid file.
fn create(b: &Bench, bundle: &Path, id: &str) -> Result<(), String> {
    let out = std::fs::File::create(bundle.join("stdio")).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&b.runtime);
    cmd.args(["create", "--bundle", &path_str(bundle), "--pid-file"])
        .arg(bundle.join("pid"))
        .arg(id)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let st = cmd.status().map_err(|e| e.to_string())?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "create failed: {}",
            std::fs::read_to_string(bundle.join("stdio")).unwrap_or_default()
        ))
    }
}

fn state(b: &Bench, id: &str) -> Option<Value> {
    let r = b.cmd(&["state", id]);
    (r.code == Some(0))
        .then(|| serde_json::from_str(&r.out).ok())
        .flatten()
}

fn status(b: &Bench, id: &str) -> String {
    state(b, id)
        .and_then(|s| s["status"].as_str().map(str::to_string))
        .unwrap_or_else(|| "gone".into())
}

fn wait_status(b: &Bench, id: &str, want: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if status(b, id) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A bundle, then the case's body, then whatever is left removed.
fn with_bundle(
    b: &Bench,
    id: &str,
    config: &Value,
    body: impl FnOnce(&Path) -> Outcome,
) -> Outcome {
    let bundle = match b.bundle(id, config) {
        Ok(p) => p,
        Err(e) => return Outcome::fail(format!("bundle: {e}")),
    };
    let _ = b.cmd(&["delete", "--force", id]);
    let o = body(&bundle);
    let _ = b.cmd(&["delete", "--force", id]);
    let _ = std::fs::remove_dir_all(&bundle);
    o
}

fn ok(detail: &str) -> Outcome {
    Outcome {
        passed: true,
        detail: detail.into(),
    }
}

fn state_after_create(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &sleeper(), |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        let Some(s) = state(b, id) else {
            return Outcome::fail("no state after create");
        };
        ensure!(s["status"] == "created", "status {}", s["status"]);
        ensure!(s["id"] == id, "id {}", s["id"]);
        ensure!(s["ociVersion"].is_string(), "no ociVersion");
        ensure!(
            s["bundle"].as_str().map(PathBuf::from) == Some(bundle.to_path_buf()),
            "bundle {}",
            s["bundle"]
        );
        let pid = s["pid"].as_i64().unwrap_or(0);
        ensure!(pid > 0, "pid {pid}");
        let file = std::fs::read_to_string(bundle.join("pid")).unwrap_or_default();
        ensure!(
            file == pid.to_string(),
            "pid file {file:?}, state pid {pid}"
        );
        ensure!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} is not a live process"
        );
        ok("created, pid and pid file agree")
    })
}

fn running_then_stopped(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &sleeper(), |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        let r = b.cmd(&["start", id]);
        ensure!(r.code == Some(0), "start: {}", r.out);
        ensure!(
            wait_status(b, id, "running"),
            "not running: {}",
            status(b, id)
        );
        let r = b.cmd(&["kill", id, "KILL"]);
        ensure!(r.code == Some(0), "kill: {}", r.out);
        ensure!(
            wait_status(b, id, "stopped"),
            "not stopped: {}",
            status(b, id)
        );
        let pid = state(b, id).and_then(|s| s["pid"].as_i64());
        ensure!(
            pid == Some(0),
            "a stopped container's pid is {pid:?}, not 0"
        );
        let r = b.cmd(&["delete", id]);
        ensure!(r.code == Some(0), "delete: {}", r.out);
        ensure!(state(b, id).is_none(), "state after delete");
        ok("created -> running -> stopped -> gone")
    })
}

fn errors_by_state(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &sleeper(), |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        ensure!(b.cmd(&["start", id]).code == Some(0), "start");
        ensure!(wait_status(b, id, "running"), "not running");
        let r = b.cmd(&["start", id]);
        ensure!(r.code != Some(0), "a second start succeeded");
        let r = b.cmd(&["delete", id]);
        ensure!(r.code != Some(0), "delete of a running container succeeded");
        ensure!(
            status(b, id) == "running",
            "delete without --force changed it"
        );
        let _ = b.cmd(&["kill", id, "KILL"]);
        ensure!(wait_status(b, id, "stopped"), "not stopped");
        let r = b.cmd(&["kill", id, "TERM"]);
        ensure!(r.code != Some(0), "kill of a stopped container succeeded");
        ensure!(
            r.out.contains("not running"),
            "kill of a stopped container said: {}",
            r.out.trim()
        );
        let r = b.cmd(&["start", id]);
        ensure!(r.code != Some(0), "start of a stopped container succeeded");
        ok("second start, delete while running, kill and start when stopped refused")
    })
}

fn delete_force(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &sleeper(), |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        ensure!(b.cmd(&["start", id]).code == Some(0), "start");
        let pid = state(b, id).and_then(|s| s["pid"].as_i64()).unwrap_or(0);
        let r = b.cmd(&["delete", "--force", id]);
        ensure!(r.code == Some(0), "delete --force: {}", r.out);
        ensure!(state(b, id).is_none(), "state after delete --force");
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        ensure!(gone, "pid {pid} outlived delete --force");
        let r = b.cmd(&["delete", "--force", "conf-never-created"]);
        ensure!(
            r.code == Some(0),
            "delete --force of an unknown id: {}",
            r.out
        );
        ok("running container and its process gone; unknown id is fine")
    })
}

fn delete_created(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &sleeper(), |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        let r = b.cmd(&["delete", id]);
        ensure!(
            r.code == Some(0),
            "delete of a created container: {}",
            r.out
        );
        ensure!(state(b, id).is_none(), "state after delete");
        ok("a created container is deleted without --force")
    })
}

fn duplicate_id(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &sleeper(), |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        let again = create(b, bundle, id);
        ensure!(again.is_err(), "a second create with the same id succeeded");
        ensure!(
            status(b, id) == "created",
            "the first container is {}",
            status(b, id)
        );
        ok("refused, the first one intact")
    })
}

fn unknown_id(b: &Bench, _id: &str) -> Outcome {
    for verb in ["state", "start", "kill", "delete"] {
        let r = b.cmd(&[verb, "conf-no-such-container"]);
        ensure!(r.code != Some(0), "{verb} of an unknown id succeeded");
        ensure!(
            r.out.contains("does not exist"),
            "{verb} of an unknown id said: {}",
            r.out.trim()
        );
    }
    ok("state, start, kill, delete: does not exist")
}

fn hooks_in_order(b: &Bench, id: &str) -> Outcome {
    let log = b.work.join(format!("{id}.hooks"));
    let _ = std::fs::remove_file(&log);
    let hook = |name: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
            "s=$(cat | tr -d ' \\n' | grep -o '\"status\":\"[a-z]*\"' | cut -d'\"' -f4); echo {name} $s >> {}",
            log.display())]})
    };
    let mut config = sleeper();
    for name in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        set(&mut config, &format!("hooks/{name}"), json!([hook(name)]));
    }
    with_bundle(b, id, &config, |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        ensure!(b.cmd(&["start", id]).code == Some(0), "start");
        ensure!(wait_status(b, id, "running"), "not running");
        let _ = b.cmd(&["kill", id, "KILL"]);
        ensure!(wait_status(b, id, "stopped"), "not stopped");
        ensure!(b.cmd(&["delete", id]).code == Some(0), "delete");
        let got = std::fs::read_to_string(&log).unwrap_or_default();
        let want = "prestart creating\ncreateRuntime creating\ncreateContainer creating\n\
                    poststart running\npoststop stopped\n";
        ensure!(got == want, "hooks ran as {got:?}");
        ok("five hooks in order, each with its state")
    })
}

/// The sleeper exits when SIGUSR1 arrives (it has a handler for it).
fn kill_signal_forms(b: &Bench, id: &str) -> Outcome {
    let mut config = sleeper();
    set(
        &mut config,
        "process/args",
        json!([CHECKER, "sleep", "usr1"]),
    );
    for form in ["USR1", "SIGUSR1", "10"] {
        let o = with_bundle(b, id, &config, |bundle| {
            if let Err(e) = create(b, bundle, id) {
                return Outcome::fail(e);
            }
            ensure!(b.cmd(&["start", id]).code == Some(0), "start");
            let ready = bundle.join("rootfs/.conformance/ready");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !ready.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            ensure!(ready.exists(), "the workload never installed its handler");
            let r = b.cmd(&["kill", id, form]);
            ensure!(r.code == Some(0), "kill {form}: {}", r.out);
            ensure!(
                wait_status(b, id, "stopped"),
                "kill {form} did not reach the handler"
            );
            ok("")
        });
        if !o.passed {
            return o;
        }
    }
    ok("USR1, SIGUSR1 and 10 delivered")
}

fn kill_all(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &sleeper(), |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        ensure!(b.cmd(&["start", id]).code == Some(0), "start");
        ensure!(wait_status(b, id, "running"), "not running");
        let r = b.cmd(&["kill", "--all", id, "KILL"]);
        ensure!(r.code == Some(0), "kill --all: {}", r.out);
        ensure!(wait_status(b, id, "stopped"), "not stopped");
        ok("kill --all stops it")
    })
}

fn create_without_start(b: &Bench, id: &str) -> Outcome {
    let mut config = spec::base();
    set(
        &mut config,
        "process/args",
        json!(["/bin/sh", "-c", "touch /ran"]),
    );
    with_bundle(b, id, &config, |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        std::thread::sleep(Duration::from_secs(2));
        let ran = bundle.join("rootfs/ran");
        ensure!(!ran.exists(), "the process ran before start");
        ensure!(b.cmd(&["delete", id]).code == Some(0), "delete");
        ensure!(!ran.exists(), "the process ran at delete");
        ok("the process never ran")
    })
}

fn config_read_at_create(b: &Bench, id: &str) -> Outcome {
    let mut config = spec::base();
    set(&mut config, "process/oomScoreAdj", json!(300));
    set(&mut config, "hostname", json!("at-create"));
    with_bundle(b, id, &config, |bundle| {
        if let Err(e) = create(b, bundle, id) {
            return Outcome::fail(e);
        }
        let mut changed = config.clone();
        set(&mut changed, "process/args", json!(["/bin/false"]));
        set(&mut changed, "process/oomScoreAdj", json!(600));
        set(&mut changed, "hostname", json!("rewritten"));
        if let Err(e) = std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&changed).unwrap_or_default(),
        ) {
            return Outcome::fail(e.to_string());
        }
        ensure!(b.cmd(&["start", id]).code == Some(0), "start");
        ensure!(wait_status(b, id, "stopped"), "not stopped");
        let out = std::fs::read_to_string(bundle.join("stdio")).unwrap_or_default();
        ensure!(
            out.contains("checked: 0 failed"),
            "the checker saw: {}",
            out.lines()
                .filter(|l| l.starts_with("not ok"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        ok("the process, oomScoreAdj and hostname are create's")
    })
}

/// Nothing of `id` is left: no state, no state directory under any root
/// the runtime may use.
fn nothing_left(b: &Bench, id: &str) -> Result<(), String> {
    if state(b, id).is_some() {
        return Err("state answers".into());
    }
    for root in ["/run/runc", "/run/microrun"] {
        if Path::new(root).join(id).exists() {
            return Err(format!("{root}/{id} is left"));
        }
    }
    Ok(())
}

fn bad_config(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &spec::base(), |bundle| {
        let _ = std::fs::write(bundle.join("config.json"), "{\"ociVersion\": ");
        ensure!(
            create(b, bundle, id).is_err(),
            "create with a broken config.json succeeded"
        );
        if let Err(e) = nothing_left(b, id) {
            return Outcome::fail(e);
        }
        ok("refused, nothing left")
    })
}

fn missing_rootfs(b: &Bench, id: &str) -> Outcome {
    let mut config = spec::base();
    set(&mut config, "root/path", json!("no-such-rootfs"));
    with_bundle(b, id, &config, |bundle| {
        ensure!(
            create(b, bundle, id).is_err(),
            "create without a rootfs succeeded"
        );
        if let Err(e) = nothing_left(b, id) {
            return Outcome::fail(e);
        }
        ok("refused, nothing left")
    })
}

fn bad_id(b: &Bench, id: &str) -> Outcome {
    with_bundle(b, id, &sleeper(), |bundle| {
        for bad in ["../escape", "a/b", ""] {
            let r = run_cmd(
                Command::new(&b.runtime).args(["create", "--bundle", &path_str(bundle), bad]),
                Duration::from_secs(60),
            );
            ensure!(r.code != Some(0), "create with id {bad:?} succeeded");
        }
        ensure!(
            !Path::new("/run/escape").exists() && !Path::new("/run/microrun/a").exists(),
            "a bad id left a directory"
        );
        ok("refused")
    })
}
