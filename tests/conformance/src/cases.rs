//! The bundles the checker verifies from inside: one case per field (or a
//! few related fields) of the spec, each a change to the base config.

use crate::spec::{push, set};
use serde_json::{json, Value};
use std::path::Path;

pub struct Case {
    pub area: &'static str,
    pub name: &'static str,
    /// Changes the base config; gets the bundle directory too.
    pub config: fn(&mut Value, &Path),
    /// Work on the bundle before the run: a shared bind source, a rootfs
    /// owned by mapped ids. Gets the bundle directory.
    pub prepare: Option<fn(&Path) -> std::io::Result<()>>,
}

const fn case(area: &'static str, name: &'static str, config: fn(&mut Value, &Path)) -> Case {
    Case {
        area,
        name,
        config,
        prepare: None,
    }
}

const ALL_SETS: &[&str] = &[
    "bounding",
    "effective",
    "permitted",
    "inheritable",
    "ambient",
];

fn caps(spec: &mut Value, sets: &[&str], list: Value) {
    for s in sets {
        set(spec, &format!("process/capabilities/{s}"), list.clone());
    }
}

fn bind_source(bundle: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(bundle.join("src/d"))?;
    std::fs::write(bundle.join("src/d/f"), "bound\n")
}

/// A bind source on a mount of its own that is shared, as a systemd host's
/// mounts are, so that slave and shared binds of it show their kind.
fn shared_bind_source(bundle: &Path) -> std::io::Result<()> {
    let src = bundle.join("src");
    std::fs::create_dir_all(&src)?;
    for args in [
        vec!["-t", "tmpfs", "conformance-src"],
        vec!["--make-shared"],
    ] {
        let st = std::process::Command::new("mount")
            .args(&args)
            .arg(&src)
            .status()?;
        if !st.success() {
            return Err(std::io::Error::other(format!("mount {args:?}")));
        }
    }
    bind_source(bundle)
}

/// Owned by 100000, root of the mapped range in the user namespace case.
fn owned_by_mapped_root(bundle: &Path) -> std::io::Result<()> {
    let status = std::process::Command::new("chown")
        .args(["-R", "100000:100000"])
        .arg(bundle.join("rootfs"))
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("chown failed"))
    }
}

pub fn all() -> Vec<Case> {
    let mut v = vec![
        case("process", "defaults", |_, _| {}),
        case("process", "args", |s, _| {
            push(s, "process/args", json!("with space"));
            push(s, "process/args", json!("ünïcode"));
            push(s, "process/args", json!(""));
        }),
        case("process", "env", |s, _| {
            push(s, "process/env", json!("EMPTY="));
            push(s, "process/env", json!("WITH_EQUALS=a=b"));
        }),
        case("process", "cwd", |s, _| {
            set(s, "process/cwd", json!("/tmp"))
        }),
        case("process", "no-new-privileges-off", |s, _| {
            set(s, "process/noNewPrivileges", json!(false))
        }),
        case("process", "oom-score-adj", |s, _| {
            set(s, "process/oomScoreAdj", json!(500))
        }),
        case("process", "oom-score-adj-negative", |s, _| {
            set(s, "process/oomScoreAdj", json!(-100))
        }),
        case("user", "uid-gid-groups", |s, _| {
            set(
                s,
                "process/user",
                json!({"uid": 1000, "gid": 1000, "additionalGids": [1001, 1002]}),
            )
        }),
        case("user", "umask", |s, _| {
            set(s, "process/user/umask", json!(0o027))
        }),
        case("capabilities", "extended", |s, _| {
            caps(
                s,
                &["bounding", "effective", "permitted", "inheritable"],
                json!([
                    "CAP_CHOWN",
                    "CAP_SYS_ADMIN",
                    "CAP_NET_ADMIN",
                    "CAP_SETUID",
                    "CAP_SETGID",
                    "CAP_KILL"
                ]),
            );
            set(s, "process/capabilities/ambient", json!(["CAP_NET_ADMIN"]));
        }),
        case("capabilities", "none", |s, _| caps(s, ALL_SETS, json!([]))),
        case("capabilities", "non-root-keeps-ambient", |s, _| {
            set(s, "process/user", json!({"uid": 1000, "gid": 1000}));
            caps(s, ALL_SETS, json!(["CAP_NET_BIND_SERVICE"]));
        }),
        case("rlimits", "several", |s, _| {
            set(
                s,
                "process/rlimits",
                json!([
                    {"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 4096},
                    {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
                    {"type": "RLIMIT_CORE", "soft": 0, "hard": 1048576},
                    {"type": "RLIMIT_STACK", "soft": 4194304, "hard": 8388608}
                ]),
            )
        }),
        // Applied just before exec: a small limit must not hamper set-up.
        case("rlimits", "small-nofile", |s, _| {
            set(
                s,
                "process/rlimits",
                json!([{"type": "RLIMIT_NOFILE", "soft": 16, "hard": 16}]),
            )
        }),
        case("namespaces", "hostname-domainname", |s, _| {
            set(s, "hostname", json!("conformance-host"));
            set(s, "domainname", json!("conformance.example"));
        }),
        case("mounts", "tmpfs-options", |s, _| {
            push(
                s,
                "mounts",
                json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "noexec", "ro", "size=1m", "mode=700"]}),
            )
        }),
        case("root", "read-only", |s, _| {
            set(s, "root/readonly", json!(true))
        }),
        case("paths", "masked-and-read-only", |s, _| {
            push(s, "linux/maskedPaths", json!("/etc/group"));
            push(s, "linux/maskedPaths", json!("/root"));
            push(s, "linux/readonlyPaths", json!("/tmp"));
        }),
        case("devices", "spec-devices", |s, _| {
            push(
                s,
                "linux/devices",
                json!({"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                       "fileMode": 0o620, "uid": 0, "gid": 0}),
            );
            push(
                s,
                "linux/devices",
                json!({"path": "/dev/sub/null2", "type": "c", "major": 1, "minor": 3,
                       "fileMode": 0o640, "uid": 1000, "gid": 1000}),
            );
        }),
        case("sysctl", "net-and-ipc", |s, _| {
            set(
                s,
                "linux/sysctl",
                json!({"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"}),
            )
        }),
        case("cgroups", "memory-pids-cpu", |s, _| {
            set(
                s,
                "linux/resources",
                json!({"memory": {"limit": 134217728}, "pids": {"limit": 77},
                       "cpu": {"quota": 50000, "period": 100000},
                       "devices": [{"allow": false, "access": "rwm"}]}),
            )
        }),
        case("seccomp", "errno-for-one-call", |s, _| {
            set(
                s,
                "linux/seccomp",
                json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                       "syscalls": [{"names": ["getpriority"], "action": "SCMP_ACT_ERRNO",
                                     "errnoRet": crate::check::SECCOMP_ERRNO}]}),
            )
        }),
    ];
    v.push(Case {
        area: "mounts",
        name: "bind-options",
        config: |s, bundle| {
            let src = bundle.join("src/d");
            for (dest, opts) in [
                ("/b-ro", json!(["rbind", "ro"])),
                ("/b-private", json!(["rbind", "rprivate"])),
                ("/b-nosuid", json!(["bind", "nosuid", "nodev", "noexec"])),
                ("/b-unbindable", json!(["rbind", "unbindable"])),
            ] {
                push(
                    s,
                    "mounts",
                    json!({"destination": dest, "type": "bind", "source": src, "options": opts}),
                );
            }
        },
        prepare: Some(bind_source),
    });
    v.push(Case {
        area: "mounts",
        name: "bind-propagation",
        config: |s, bundle| {
            let src = bundle.join("src/d");
            for opt in ["shared", "rshared", "slave", "rslave", "private"] {
                push(
                    s,
                    "mounts",
                    json!({"destination": format!("/p-{opt}"), "type": "bind", "source": src,
                           "options": ["rbind", opt]}),
                );
            }
        },
        prepare: Some(shared_bind_source),
    });
    v.push(Case {
        area: "namespaces",
        name: "user-namespace",
        config: |s, _| {
            push(s, "linux/namespaces", json!({"type": "user"}));
            let maps = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            set(s, "linux/uidMappings", maps.clone());
            set(s, "linux/gidMappings", maps);
        },
        prepare: Some(owned_by_mapped_root),
    });
    v
}
