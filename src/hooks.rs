//! OCI hooks: each gets the state JSON on stdin, its own env and args, and
//! is killed when its timeout passes.

use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HookError {
    #[error("{kind} hook {path}: cannot run: {source}")]
    Spawn {
        kind: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{kind} hook {path} failed: {status}{stderr}")]
    Failed {
        kind: &'static str,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{kind} hook {path}: timed out after {secs}s")]
    Timeout {
        kind: &'static str,
        path: String,
        secs: i64,
    },
}

/// Runs the hooks in order; the first failure stops the rest.
pub fn run_all(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state_json: &str,
) -> Result<(), HookError> {
    for hook in hooks.into_iter().flatten() {
        run_one(kind, hook, state_json)?;
    }
    Ok(())
}

fn run_one(kind: &'static str, hook: &Hook, state_json: &str) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let mut cmd = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores stdin may close it early; that is not a failure.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let stderr = child.stderr.take();
    let reader = microrun_protocol::threads::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            use std::io::Read;
            let _ = e.by_ref().take(4096).read_to_string(&mut s);
        }
        s
    });
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn { kind, path, source });
            }
        }
        if let Some((secs, at)) = deadline {
            if Instant::now() >= at {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout { kind, path, secs });
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(HookError::Failed {
        kind,
        path,
        status: status.to_string(),
        stderr: if stderr.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", stderr.trim())
        },
    })
}
