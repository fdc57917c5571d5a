//! `features`: what this runtime really implements, in runc's layout.
//! Lists grow as capabilities land; nothing is claimed before it works.

use super::{Ctx, Result};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Hooks run by the host side of microrun.
const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];
/// Namespaces microrun sets up today (the network namespace is the monitor's).
const NAMESPACES: &[&str] = &["network"];

pub fn document() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::state::OCI_VERSION,
        "hooks": HOOKS,
        "mountOptions": [],
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": [],
            "cgroup": {"v1": false, "v2": false, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false}
        },
        "annotations": {
            "io.github.microrun.version": super::VERSION,
            "io.microrun.kernel": "path of the guest kernel (vmlinux) for this container",
            "io.microrun.initrd": "path of the guest initramfs for this container"
        }
    })
}

pub fn run(_ctx: &Ctx, _args: Args) -> Result<i32> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    document()
        .serialize(&mut ser)
        .map_err(|e| super::CliError::Msg(e.to_string()))?;
    println!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}
