//! What the agent does to a freshly cloned helper from outside, before the
//! helper reads its config: the id maps of its new user namespace, and the
//! resource limits and oom_score_adj that a process inside a user
//! namespace could not raise by itself (the host caller's RLIMIT_NOFILE,
//! say, is above the guest's default hard limit). The helper sets the
//! exact values itself, which then needs no privilege.

use crate::init::HelperConfig;
use oci_spec::runtime::{LinuxIdMapping, PosixRlimitType, Process};

fn process_of(cfg: &HelperConfig) -> Option<&Process> {
    match cfg {
        HelperConfig::Init { spec } => spec.process().as_ref(),
        HelperConfig::Exec { process, .. } => Some(process.as_ref()),
    }
}

/// The `uid_map` / `gid_map` text for a list of mappings.
pub fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

fn write_maps(pid: libc::pid_t, cfg: &HelperConfig) -> std::io::Result<()> {
    let HelperConfig::Init { spec } = cfg else {
        return Ok(());
    };
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    for (file, maps) in [
        ("uid_map", linux.uid_mappings()),
        ("gid_map", linux.gid_mappings()),
    ] {
        let maps = maps.clone().unwrap_or_default();
        if maps.is_empty() {
            return Err(std::io::Error::other(format!(
                "a user namespace needs {file} entries (linux.uidMappings and gidMappings)"
            )));
        }
        std::fs::write(format!("/proc/{pid}/{file}"), map_text(&maps))
            .map_err(|e| std::io::Error::other(format!("write {file}: {e}")))?;
    }
    Ok(())
}

/// The process's RLIMIT_NOFILE may be the host caller's, whose hard limit
/// can exceed the guest's per-process maximum (fs.nr_open, 1048576 by
/// default): raise that maximum, as the host's own must have been.
fn room_for_nofile(p: &Process) {
    let want = p
        .rlimits()
        .iter()
        .flatten()
        .filter(|r| r.typ() == PosixRlimitType::RlimitNofile)
        .map(|r| r.hard().max(r.soft()))
        .max();
    let path = "/proc/sys/fs/nr_open";
    let have = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let (Some(want), Some(have)) = (want, have) {
        if want > have {
            // Best effort: past the kernel's own ceiling the helper's
            // setrlimit reports the error.
            let _ = std::fs::write(path, want.to_string());
        }
    }
}

/// Raises (never lowers) the helper's hard limits to the process's, and
/// sets its oom_score_adj; best effort, the helper's own calls report what
/// did not take. Only raising, so that a small limit cannot hamper the
/// helper while it builds the container: it sets the exact values itself
/// just before exec, which then needs no privilege (runc likewise sets
/// limits from outside, once its init is ready).
fn limits(pid: libc::pid_t, p: &Process) {
    room_for_nofile(p);
    for r in p.rlimits().iter().flatten() {
        let res = crate::init::rlimit_resource(r.typ());
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out pointer; nothing is set.
        if unsafe { libc::prlimit(pid, res, std::ptr::null(), &mut old) } != 0
            || old.rlim_max >= r.hard()
        {
            continue;
        }
        let new = libc::rlimit {
            rlim_cur: old.rlim_cur.min(r.hard()),
            rlim_max: r.hard(),
        };
        // SAFETY: a valid rlimit struct; the old value is not asked for.
        unsafe { libc::prlimit(pid, res, &new, std::ptr::null_mut()) };
    }
    if let Some(adj) = p.oom_score_adj() {
        let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string());
    }
}

/// Runs between the clone and the config write.
pub fn prepare(pid: libc::pid_t, cfg: &HelperConfig, ns_flags: libc::c_int) -> std::io::Result<()> {
    if ns_flags & libc::CLONE_NEWUSER != 0 {
        write_maps(pid, cfg)?;
    }
    if let Some(p) = process_of(cfg) {
        limits(pid, p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    #[test]
    fn maps_are_one_line_each() {
        let m = |c: u32, h: u32, s: u32| {
            LinuxIdMappingBuilder::default()
                .container_id(c)
                .host_id(h)
                .size(s)
                .build()
                .unwrap()
        };
        assert_eq!(
            map_text(&[m(0, 100000, 1000), m(1000, 1000, 1)]),
            "0 100000 1000\n1000 1000 1\n"
        );
    }
}
