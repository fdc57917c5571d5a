//! microrun's guest agent: PID 1 of every microVM. It brings the guest's
//! base system up, then serves the monitor over vsock and builds and runs
//! the container. Run as `microrun-agent container-init` it is instead the
//! helper that sets up one container process (see init/).

mod cgroup;
mod child_setup;
mod control;
mod dns;
mod fdpass;
mod host_change;
mod init;
mod modules;
mod mounts;
mod net;
mod selftest;
mod spawn;
mod stdio;
mod vsock;

use std::io::Write;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(init::ARG) {
        init::main();
    }
    if std::process::id() != 1 {
        eprintln!("microrun-agent must run as PID 1 inside a microrun guest");
        std::process::exit(1);
    }
    if let Err(e) = mounts::base() {
        console(&format!("microrun-agent: {e}"));
        power_off();
    }
    // A kernel with its drivers as modules: load them before anything
    // looks for its devices.
    for e in modules::load_listed() {
        console(&format!("microrun-agent: module {e}"));
    }
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    console(&format!(
        "{} (agent {}, protocol {}, uptime {}s)",
        microrun_protocol::READY_MARKER,
        env!("CARGO_PKG_VERSION"),
        microrun_protocol::PROTOCOL_VERSION,
        uptime.split_whitespace().next().unwrap_or("?")
    ));
    if selftest::requested() {
        selftest::run(console);
        selftest::vsock(console);
        power_off();
    }
    // Binding works without a transport too: check for the device, so a VM
    // without one (the QEMU boot check) ends instead of waiting forever.
    // Drivers loaded as modules may bind a moment later.
    let mut tries = if modules::listed() { 100 } else { 0 };
    while !vsock::device_present() && tries > 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        tries -= 1;
    }
    if !vsock::device_present() {
        console("microrun-agent: no virtio-vsock device; nothing to serve");
        power_off();
    }
    let listeners = vsock::Listener::bind(microrun_protocol::AGENT_PORT)
        .and_then(|c| Ok((c, vsock::Listener::bind(microrun_protocol::STDIO_PORT)?)));
    let (ctl, stdio) = match listeners {
        Ok(l) => l,
        Err(e) => {
            console(&format!("microrun-agent: vsock: {e}"));
            power_off();
        }
    };
    let streams = stdio::Streams::default();
    streams.serve(stdio);
    let mut agent = control::Agent::new(streams, console);
    // One monitor connection at a time; a dropped one may reconnect.
    loop {
        match ctl.accept() {
            Ok(conn) => agent.serve(conn),
            Err(e) => {
                console(&format!("microrun-agent: accept: {e}"));
                power_off();
            }
        }
    }
}

pub(crate) fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Ends the VM. Without ACPI a power-off cannot be signalled, so reboot:
/// the kernel (reboot=k) resets through the i8042, which the VMM turns
/// into the end of the VM.
pub(crate) fn power_off() -> ! {
    console("microrun-agent: powering off");
    // SAFETY: sync and reboot take no pointers; as PID 1 we are allowed to.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_RESTART);
    }
    std::process::exit(1)
}
