//! microrun: an OCI runtime (a drop-in for runc) that runs every container
//! in its own KVM microVM, with the VMM in-process.

pub mod bundle;
pub mod cli;
pub mod console;
pub mod fdpass;
pub mod hooks;
pub mod ids;
pub mod logging;
pub mod monitor;
pub mod netns;
pub mod rlimits;
pub mod sandbox;
pub mod signals;
pub mod state;
pub mod unixpath;
pub mod vmm;
