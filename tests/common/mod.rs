//! Helpers shared by the integration tests: bundles, running a microrun
//! binary against a private --root, and reaping monitors as their subreaper.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub struct Env {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new(bin: &str) -> Env {
        Env {
            bin: PathBuf::from(bin),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A bundle whose process runs `sh -c script` (on the host, under the double).
    pub fn bundle(&self, name: &str, script: &str) -> PathBuf {
        self.bundle_with(name, script, |_| {})
    }

    pub fn bundle_with(&self, name: &str, script: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.dir.path().join(name);
        std::fs::create_dir_all(b.join("rootfs")).unwrap();
        let mut cfg = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {
                "cwd": "/",
                "args": ["sh", "-c", script],
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "user": {"uid": 0, "gid": 0}
            },
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        });
        edit(&mut cfg);
        std::fs::write(b.join("config.json"), cfg.to_string()).unwrap();
        b
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root()).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs to completion. stdout/stderr go to files, not pipes: a monitor
    /// inherits them and holds them for as long as the container lives.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let status = self
            .cmd(args)
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .status()
            .unwrap();
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut v).unwrap();
            v
        };
        Output {
            status,
            stdout: read(out),
            stderr: read(err),
        }
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "microrun {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs and asserts failure with exit status 1 and `needle` in stderr.
    pub fn fails(&self, args: &[&str], needle: &str) {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(1),
            "microrun {args:?}: want exit 1, stderr: {err}"
        );
        assert!(
            err.contains(needle),
            "microrun {args:?}: want {needle:?} in stderr, got: {err}"
        );
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    /// Creates with the given bundle and returns the monitor pid.
    pub fn create(&self, bundle: &Path, id: &str) -> i32 {
        self.ok(&["create", "--bundle", bundle.to_str().unwrap(), id]);
        self.state(id)["pid"].as_i64().unwrap() as i32
    }

    pub fn root_is_empty(&self) -> bool {
        match std::fs::read_dir(self.root()) {
            Ok(mut d) => d.next().is_none(),
            Err(_) => true,
        }
    }

    pub fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status(id) != want {
            assert!(Instant::now() < deadline, "{id} never became {want}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Env {
    /// A failed test must not leave containers running.
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.root())
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            let _ = self.run(&["delete", "--force", &id]);
        }
    }
}

/// Makes this test process the subreaper of orphaned monitors so a test can
/// collect a monitor's exit status, as containerd's shim does.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0);
    });
}

/// Waits for an (adopted) monitor and returns how it ended.
pub fn reap(pid: i32) -> nix::sys::wait::WaitStatus {
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap()
}

pub fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
