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

/// Port of the stdio streams: each starts with one line naming the stream
/// (`stdin`, `stdout` or `stderr`) of the container's init.
pub const STDIO_PORT: u32 = 1025;

/// The process to run, as much of the OCI process as the guest applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub terminal: bool,
}

/// Host → agent requests on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello(Hello),
    /// Prepare the container's init up to the start barrier. `rootfs` is a
    /// path inside the guest.
    Create {
        process: ProcessSpec,
        rootfs: String,
        hostname: Option<String>,
    },
    Start,
    Signal {
        signal: i32,
        all: bool,
    },
}

/// Agent → host messages on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello(Hello),
    Ok,
    Error {
        msg: String,
    },
    /// The init exited; sent only after its stdout and stderr are delivered.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}
