//! The container's cgroup v2 inside the guest: limits from the spec's
//! linux.resources, the figures behind `events --stats`, and its pids.

use microrun_protocol::Stats;
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

pub struct Cgroup {
    dir: PathBuf,
}

fn write(dir: &Path, file: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{file}={value}: {e}")))
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `cpu.weight` from cgroup v1 shares, as runc converts them.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl Cgroup {
    /// Enables the controllers for children of the root, then makes `name`.
    pub fn create(name: &str) -> std::io::Result<Cgroup> {
        let root = Path::new(ROOT);
        let available = std::fs::read_to_string(root.join("cgroup.controllers"))?;
        let enable: Vec<String> = available
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect();
        write(root, "cgroup.subtree_control", &enable.join(" "))?;
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(Cgroup { dir })
    }

    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    pub fn apply(&self, r: &LinuxResources) -> std::io::Result<()> {
        let d = &self.dir;
        if let Some(m) = r.memory() {
            // 0 leaves the limit as it is (an update of something else);
            // a negative one lifts it.
            if let Some(l) = m.limit().filter(|l| *l != 0) {
                write(
                    d,
                    "memory.max",
                    &if l > 0 { l.to_string() } else { "max".into() },
                )?;
            }
            if let Some(l) = m.reservation().filter(|l| *l > 0) {
                write(d, "memory.low", &l.to_string())?;
            }
        }
        if let Some(c) = r.cpu() {
            // 0 is "not set", as runc takes it: `docker update --memory`
            // sends the CPU fields as zeros.
            let quota = c.quota().filter(|q| *q > 0);
            let period = c.period().filter(|p| *p > 0);
            if quota.is_some() || period.is_some() {
                let quota = quota.map_or("max".to_string(), |q| q.to_string());
                let period = period.unwrap_or(100_000);
                write(d, "cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(s) = c.shares().filter(|s| *s > 0) {
                write(d, "cpu.weight", &shares_to_weight(s).to_string())?;
            }
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                write(d, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                write(d, "cpuset.mems", mems)?;
            }
        }
        if let Some(p) = r.pids().as_ref().filter(|p| p.limit() != 0) {
            let l = p.limit();
            write(
                d,
                "pids.max",
                &if l > 0 { l.to_string() } else { "max".into() },
            )?;
        }
        Ok(())
    }

    /// Freezes or thaws every process in it, and waits until that holds
    /// (cgroup.events says so), as runc's freezer does.
    pub fn freeze(&self, frozen: bool) -> std::io::Result<()> {
        write(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        for _ in 0..500 {
            let events = std::fs::read_to_string(self.dir.join("cgroup.events"))?;
            if events.lines().any(|l| l == want) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Err(std::io::Error::other(format!(
            "cgroup did not reach `{want}`"
        )))
    }

    /// Kills what is left in it and removes it.
    pub fn remove(&self) -> std::io::Result<()> {
        // Frozen processes die only once thawed.
        let _ = write(&self.dir, "cgroup.freeze", "0");
        if write(&self.dir, "cgroup.kill", "1").is_err() {
            for pid in self.pids() {
                // SAFETY: kill with a pid and a signal number.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..500 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(2))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        std::fs::remove_dir(&self.dir)
    }

    pub fn pids(&self) -> Vec<libc::pid_t> {
        std::fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let d = &self.dir;
        let cpu_usec = std::fs::read_to_string(d.join("cpu.stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        Stats {
            cpu_usage_ns: cpu_usec * 1000,
            memory_usage_bytes: read_u64(d, "memory.current"),
            // "max" does not parse: 0 means no limit, as runc reports it.
            memory_limit_bytes: read_u64(d, "memory.max"),
            pids_current: read_u64(d, "pids.current"),
            pids_limit: read_u64(d, "pids.max"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 0);
    }
}
