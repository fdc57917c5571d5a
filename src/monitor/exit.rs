//! Signal plumbing shared by the monitor and exec stand-ins: which signals
//! are relayed, and leaving with the workload's exact status.

use crate::sandbox::ExitStatus;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};

/// Every signal a stand-in relays to its workload, plus SIGWINCH (resize).
/// SIGCHLD, SIGPIPE and the unblockable ones stay out.
pub fn relayed_set() -> SigSet {
    let mut set = SigSet::empty();
    for sig in Signal::iterator() {
        if !matches!(
            sig,
            Signal::SIGCHLD
                | Signal::SIGPIPE
                | Signal::SIGKILL
                | Signal::SIGSTOP
                | Signal::SIGSEGV
                | Signal::SIGBUS
                | Signal::SIGILL
                | Signal::SIGFPE
                | Signal::SIGTTIN
                | Signal::SIGTTOU
                | Signal::SIGTSTP
        ) {
            set.add(sig);
        }
    }
    set
}

/// Blocks the relayed signals in this thread (and threads spawned after),
/// so that one thread can take them with sigwait.
pub fn block_relayed() -> SigSet {
    let set = relayed_set();
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    set
}

/// Ends this process the way the workload ended: same exit code, or death
/// by the same signal (without a core file).
pub fn exit_like(status: ExitStatus) -> ! {
    if let ExitStatus::Signal(s) = status {
        if let Ok(sig) = Signal::try_from(s) {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit reads the valid struct; signal() with SIG_DFL
            // installs no handler code.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::signal(s, libc::SIG_DFL);
            }
            let mut one = SigSet::empty();
            one.add(sig);
            let _ = signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
            let _ = signal::raise(sig);
        }
    }
    std::process::exit(status.code())
}
