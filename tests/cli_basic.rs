//! The shipped `microrun` binary: flags, errors, bundles and ids. Nothing
//! here needs a VM; every failure must leave --root empty.

mod common;
use common::Env;

fn env() -> Env {
    Env::new(env!("CARGO_BIN_EXE_microrun"))
}

#[test]
fn help_lists_every_verb_and_flag() {
    let e = env();
    let help = e.ok(&["--help"]);
    for verb in [
        "create",
        "start",
        "run",
        "state",
        "kill",
        "delete",
        "exec",
        "ps",
        "pause",
        "resume",
        "update",
        "events",
        "features",
        "spec",
        "list",
        "checkpoint",
        "restore",
        "check",
    ] {
        assert!(help.contains(verb), "--help lacks {verb}");
    }
    for flag in [
        "--root",
        "--log",
        "--log-format",
        "--debug",
        "--systemd-cgroup",
        "--rootless",
        "--criu",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let exec = e.ok(&["exec", "--help"]);
    for flag in [
        "--process",
        "--detach",
        "--pid-file",
        "--console-socket",
        "--tty",
        "--cwd",
        "--env",
        "--user",
    ] {
        assert!(exec.contains(flag), "exec --help lacks {flag}");
    }
    let v = e.ok(&["--version"]);
    assert!(v.contains("commit:") && v.contains("spec: 1.2.0"), "{v}");
}

#[test]
fn unknown_id_does_not_exist_and_logs_json() {
    let e = env();
    let log = e.path("log.json");
    let o = e.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let line = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("does not exist"));
    assert!(v["time"].is_string());
    // Global flags are also accepted after the verb, and harmless ones are ignored.
    e.fails(
        &["--systemd-cgroup", "kill", "nope", "KILL"],
        "does not exist",
    );
    e.fails(&["start", "--debug", "nope"], "does not exist");
    assert!(e.root_is_empty());
}

#[test]
fn debug_adds_debug_lines() {
    let e = env();
    let log = e.path("debug.log");
    let b = e.bundle("b", "true");
    let _ = e.run(&[
        "--debug",
        "--log",
        log.to_str().unwrap(),
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "d",
    ]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("level=debug"), "{text}");
    assert!(text.contains("starting monitor"), "{text}");
    assert!(e.root_is_empty());
}

#[test]
fn bad_ids_are_rejected_and_leave_nothing() {
    let e = env();
    let b = e.bundle("b", "true");
    let long = "x".repeat(1025);
    for id in ["", "a/b", "..", "a..b", "a b", long.as_str()] {
        e.fails(
            &["create", "--bundle", b.to_str().unwrap(), id],
            "invalid container id",
        );
        assert!(e.root_is_empty(), "id {id:?} left state behind");
    }
    // NUL cannot cross argv; the validator is unit-tested for it.
}

type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn bad_bundles_are_rejected_and_leave_nothing() {
    let e = env();
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "version",
            Box::new(|c| c["ociVersion"] = "2.0.0".into()),
            "unsupported ociVersion",
        ),
        (
            "noroot",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("root");
            }),
            "has no root",
        ),
        (
            "rootfs",
            Box::new(|c| c["root"]["path"] = "missing".into()),
            "does not exist",
        ),
        (
            "args",
            Box::new(|c| c["process"]["args"] = serde_json::json!([])),
            "must not be empty",
        ),
        (
            "noproc",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("process");
            }),
            "has no process",
        ),
        (
            "tty",
            Box::new(|c| c["process"]["terminal"] = true.into()),
            "console socket",
        ),
    ];
    for (name, edit, want) in cases {
        let b = e.bundle_with(name, "true", |c| edit(c));
        e.fails(&["create", "--bundle", b.to_str().unwrap(), name], want);
        assert!(e.root_is_empty(), "{name} left state behind");
    }
    let b = e.bundle("garbage", "true");
    std::fs::write(b.join("config.json"), "{not json").unwrap();
    e.fails(
        &["create", "-b", b.to_str().unwrap(), "g"],
        "invalid config.json",
    );
    std::fs::remove_file(b.join("config.json")).unwrap();
    e.fails(
        &["create", "-b", b.to_str().unwrap(), "g"],
        "config.json does not exist",
    );
    assert!(e.root_is_empty());
}

#[test]
fn create_without_a_vm_fails_clearly_and_leaves_nothing() {
    let e = env();
    let b = e.bundle("b", "echo hi");
    let o = e.run(&["create", "--bundle", b.to_str().unwrap(), "novm"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not implemented") || err.contains("KVM") || err.contains("kvm"),
        "unclear error: {err}"
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("hi"),
        "workload ran outside a VM"
    );
    assert!(e.root_is_empty());
}

#[test]
fn spec_writes_a_loadable_config() {
    let e = env();
    let b = e.path("spec");
    std::fs::create_dir_all(b.join("rootfs")).unwrap();
    e.ok(&["spec", "--bundle", b.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["root"]["path"], "rootfs");
    assert!(v["process"]["args"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    assert!(v["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    e.fails(&["spec", "--bundle", b.to_str().unwrap()], "exists");
    let rl = e.path("rootless");
    std::fs::create_dir_all(&rl).unwrap();
    e.ok(&["spec", "--rootless", "--bundle", rl.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rl.join("config.json")).unwrap()).unwrap();
    assert!(
        v["linux"]["uidMappings"].is_array(),
        "rootless spec has uid mappings"
    );
}

#[test]
fn features_is_runc_layout() {
    let e = env();
    let out = e.ok(&["features"]);
    assert!(
        out.contains("\n    \"ociVersionMin\""),
        "4-space indent: {out}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ociVersionMin"], "1.0.0");
    assert!(v["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == "prestart"));
    assert!(v["linux"]["namespaces"].is_array());
    assert!(v["linux"]["cgroup"].is_object());
    assert!(v["annotations"].is_object());
}

#[test]
fn unimplemented_verbs_say_so() {
    let e = env();
    e.fails(&["checkpoint", "x"], "not implemented");
    e.fails(
        &["restore", "-no-subreaper", "--bundle", ".", "x"],
        "not implemented",
    );
    e.ok(&["delete", "--force", "never-existed"]);
    e.fails(&["delete", "never-existed"], "does not exist");
    assert_eq!(e.ok(&["list", "-q"]), "");
}
