//! `oci-conformance`: the project's own OCI runtime conformance suite.
//!
//! - `oci-conformance check` runs as a container's process and verifies,
//!   from inside, every property the bundle's config.json asked for (the
//!   driver puts the config at /.conformance/config.json). One line per
//!   assertion: `ok AREA: what` or `not ok AREA: what: detail`.
//! - `oci-conformance drive --rootfs DIR RUNTIME...` generates a bundle per
//!   case, runs every case under every runtime, and prints per-area counts
//!   side by side; it fails when the last runtime fails a case the first
//!   one passes, unless the difference is listed with its reason.
//!
//! The entry point is a C `main`: Rust's own start-up would set SIGPIPE to
//! ignored before the checker could see how the runtime left it.
#![cfg_attr(not(test), no_main)]
// The unit tests have the harness's main, which reaches none of the modes.
#![cfg_attr(test, allow(dead_code))]

mod cases;
mod check;
mod drive;
mod lifecycle;
mod spec;

/// The checker's and the config's place inside the container.
pub const DIR: &str = "/.conformance";

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("check") => check::run(),
        Some("sleep") => {
            // A workload that stays until it is signalled (lifecycle cases);
            // with `usr1`, SIGUSR1 ends it (an init without a handler
            // would not die of it).
            if args.get(2).map(String::as_str) == Some("usr1") {
                // SAFETY: the handler only calls _exit.
                unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
                // The driver signals only once the handler is in place.
                let _ = std::fs::write(format!("{DIR}/ready"), "");
            }
            std::thread::sleep(std::time::Duration::from_secs(600));
            0
        }
        Some("drive") => drive::run(&args[2..]),
        _ => {
            eprintln!(
                "usage: oci-conformance check | drive --rootfs DIR [--only REGEX] RUNTIME..."
            );
            2
        }
    }
}

#[cfg(not(test))]
extern "C" fn on_usr1(_: libc::c_int) {
    // SAFETY: async-signal-safe.
    unsafe { libc::_exit(0) }
}
