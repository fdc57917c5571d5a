//! The base bundle config every case starts from: `runc spec`'s defaults
//! (namespaces, mounts, masked and read-only paths, capabilities), with
//! the checker as the process and a writable root.

use serde_json::{json, Value};

pub const CHECKER: &str = "/.conformance/oci-conformance";

pub fn base() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": [CHECKER, "check"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": caps, "ambient": caps
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "conformance",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Sets `value` at a slash-separated path of object keys, making objects.
pub fn set(spec: &mut Value, path: &str, value: Value) {
    let mut at = spec;
    let keys: Vec<&str> = path.split('/').collect();
    for k in &keys[..keys.len() - 1] {
        if !at.get(*k).is_some_and(Value::is_object) {
            at[*k] = json!({});
        }
        at = &mut at[*k];
    }
    at[keys[keys.len() - 1]] = value;
}

/// Appends to the array at `path` (made when missing).
pub fn push(spec: &mut Value, path: &str, value: Value) {
    let mut at = &mut *spec;
    for k in path.split('/') {
        at = &mut at[k];
    }
    match at.as_array_mut() {
        Some(a) => a.push(value),
        None => *at = json!([value]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_parses_as_an_oci_spec() {
        let s: oci_spec::runtime::Spec = serde_json::from_value(base()).unwrap();
        assert_eq!(
            s.process().as_ref().unwrap().args().as_ref().unwrap()[0],
            CHECKER
        );
    }

    #[test]
    fn set_and_push_make_what_is_missing() {
        let mut v = json!({});
        set(&mut v, "linux/sysctl/kernel.msgmax", json!("4096"));
        push(&mut v, "linux/maskedPaths", json!("/x"));
        push(&mut v, "linux/maskedPaths", json!("/y"));
        assert_eq!(v["linux"]["sysctl"]["kernel.msgmax"], "4096");
        assert_eq!(v["linux"]["maskedPaths"], json!(["/x", "/y"]));
    }
}
