//! The host ↔ guest-agent protocol of microrun, shared by both sides:
//! versioned, length-prefixed JSON frames. See docs/protocol.md.

pub mod frame;

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; host and agent refuse a mismatch.
pub const PROTOCOL_VERSION: u32 = 1;

/// The vsock port the agent listens on for the monitor's control stream.
pub const AGENT_PORT: u32 = 1024;

/// The line the agent writes to the console once it runs as /init; the
/// e2e suite and boot benchmarks look for it.
pub const READY_MARKER: &str = "microrun-agent: ready";

/// First message in each direction on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub agent: String,
}
