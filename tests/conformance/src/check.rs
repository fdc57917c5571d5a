//! The in-container checker: reads the config the driver placed beside it
//! and verifies each property the spec sets, from inside the container.

use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};
use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

struct Report {
    failed: usize,
}

impl Report {
    fn expect(&mut self, area: &str, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            println!("ok {area}: {what}");
        } else {
            self.failed += 1;
            println!("not ok {area}: {what}: {}", detail());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, area: &str, what: &str, got: T, want: T) {
        let ok = got == want;
        self.expect(area, what, ok, || format!("got {got:?}, want {want:?}"));
    }
}

pub fn run() -> i32 {
    let path = format!("{}/config.json", crate::DIR);
    let spec: Spec = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            println!("not ok setup: read {path}: {e}");
            return 0;
        }
    };
    let mut r = Report { failed: 0 };
    // First, before anything opens a file: the descriptors and signals
    // exactly as the runtime handed them over.
    fds(&mut r);
    signals(&mut r);
    process(&mut r, &spec);
    identity(&mut r, &spec);
    capabilities(&mut r, &spec);
    limits(&mut r, &spec);
    names(&mut r, &spec);
    mounts(&mut r, &spec);
    paths(&mut r, &spec);
    devices(&mut r, &spec);
    sysctls(&mut r, &spec);
    cgroups(&mut r, &spec);
    seccomp(&mut r, &spec);
    println!("checked: {} failed", r.failed);
    0
}

fn status_field(name: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

fn fds(r: &mut Report) {
    // fcntl probes opens nothing, unlike listing /proc/self/fd.
    let open: Vec<i32> = (0..1024)
        // SAFETY: F_GETFD on any number only reads the fd table.
        .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0)
        .collect();
    r.eq("process", "open file descriptors", open, vec![0, 1, 2]);
}

/// Signals 32 and 33 belong to the C library's threads and no program may
/// use them; runc's Go init leaves 32 ignored. The rest must be defaults.
const LIBC_INTERNAL: u64 = 0b11 << 31;

fn signal_set(field: &str) -> Option<u64> {
    status_field(field)
        .and_then(|h| u64::from_str_radix(&h, 16).ok())
        .map(|s| s & !LIBC_INTERNAL)
}

fn signals(r: &mut Report) {
    r.eq(
        "process",
        "no signal ignored",
        signal_set("SigIgn:"),
        Some(0),
    );
    r.eq(
        "process",
        "no signal blocked",
        signal_set("SigBlk:"),
        Some(0),
    );
}

fn process(r: &mut Report, spec: &Spec) {
    let Some(p) = spec.process() else { return };
    let args: Vec<String> = std::env::args().collect();
    r.eq(
        "process",
        "args",
        args,
        p.args().clone().unwrap_or_default(),
    );
    for e in p.env().iter().flatten() {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        r.eq(
            "process",
            &format!("env {k}"),
            std::env::var(k).ok(),
            Some(v.to_string()),
        );
    }
    r.eq(
        "process",
        "cwd",
        std::env::current_dir().ok(),
        Some(p.cwd().clone()),
    );
    if p.user().umask().is_some() {
        let got = status_field("Umask:").and_then(|u| u32::from_str_radix(&u, 8).ok());
        r.eq("process", "umask", got, p.user().umask());
    }
    let nnp = status_field("NoNewPrivs:").as_deref() == Some("1");
    r.eq(
        "process",
        "noNewPrivileges",
        nnp,
        p.no_new_privileges().unwrap_or(false),
    );
    if let Some(adj) = p.oom_score_adj() {
        let got = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        r.eq("process", "oomScoreAdj", got, Some(adj));
    }
}

fn identity(r: &mut Report, spec: &Spec) {
    let Some(p) = spec.process() else { return };
    let u = p.user();
    // SAFETY: plain id getters.
    let (uid, euid, gid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    r.eq("user", "uid", (uid, euid), (u.uid(), u.uid()));
    r.eq("user", "gid", (gid, egid), (u.gid(), u.gid()));
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds 256 entries.
    let n = unsafe { libc::getgroups(256, groups.as_mut_ptr()) };
    groups.truncate(n.max(0) as usize);
    let got: BTreeSet<u32> = groups.into_iter().collect();
    let want: BTreeSet<u32> = u.additional_gids().iter().flatten().copied().collect();
    r.eq("user", "additionalGids", got, want);
    if let Some(linux) = spec.linux() {
        for (file, maps) in [
            ("uid_map", linux.uid_mappings()),
            ("gid_map", linux.gid_mappings()),
        ] {
            let Some(maps) = maps else { continue };
            let got: Vec<Vec<u64>> = std::fs::read_to_string(format!("/proc/self/{file}"))
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    l.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
                .collect();
            let want: Vec<Vec<u64>> = maps
                .iter()
                .map(|m| vec![m.container_id() as u64, m.host_id() as u64, m.size() as u64])
                .collect();
            r.eq("namespaces", file, got, want);
        }
    }
}

/// Capability names in bit order, as the kernel numbers them.
const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn cap_mask(set: &Option<oci_spec::runtime::Capabilities>, known: u64) -> u64 {
    set.iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| {
            let name = v.as_str()?.strip_prefix("CAP_")?.to_string();
            CAPS.iter().position(|c| *c == name)
        })
        .fold(0u64, |m, bit| m | 1 << bit)
        & known
}

fn capabilities(r: &mut Report, spec: &Spec) {
    let Some(c) = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
    else {
        return;
    };
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let known = (1u64 << (last.min(CAPS.len() as u32 - 1) + 1)) - 1;
    for (field, set) in [
        ("CapInh:", c.inheritable()),
        ("CapPrm:", c.permitted()),
        ("CapEff:", c.effective()),
        ("CapBnd:", c.bounding()),
        ("CapAmb:", c.ambient()),
    ] {
        let got = status_field(field).and_then(|h| u64::from_str_radix(&h, 16).ok());
        r.eq(
            "capabilities",
            field.trim_end_matches(':'),
            got.map(|g| g & known),
            Some(cap_mask(set, known)),
        );
    }
}

fn limits(r: &mut Report, spec: &Spec) {
    let Some(p) = spec.process() else { return };
    for l in p.rlimits().iter().flatten() {
        let name = serde_json::to_value(l.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let Some(res) = rlimit_number(&name) else {
            continue;
        };
        let mut got = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out pointer.
        unsafe { libc::getrlimit(res, &mut got) };
        r.eq(
            "rlimits",
            &name,
            (got.rlim_cur, got.rlim_max),
            (l.soft(), l.hard()),
        );
    }
}

fn rlimit_number(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

fn names(r: &mut Report, spec: &Spec) {
    if let Some(h) = spec.hostname() {
        let got = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        r.eq("namespaces", "hostname", got.trim(), h.as_str());
    }
    if let Some(d) = spec.domainname() {
        let got = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default();
        r.eq("namespaces", "domainname", got.trim(), d.as_str());
    }
    let nss = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    if nss
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none())
    {
        r.eq("namespaces", "pid: the process is 1", std::process::id(), 1);
    }
}

/// One /proc/self/mountinfo line: mount point, per-mount options, the
/// kinds of its optional fields (shared, master, unbindable), fs type.
struct MountInfo {
    point: String,
    options: Vec<String>,
    propagation: BTreeSet<String>,
    fstype: String,
}

fn mountinfo() -> Vec<MountInfo> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some(MountInfo {
                point: f.get(4)?.replace("\\040", " "),
                options: f.get(5)?.split(',').map(str::to_string).collect(),
                propagation: f[6..dash]
                    .iter()
                    .map(|o| o.split(':').next().unwrap_or("").to_string())
                    .collect(),
                fstype: f.get(dash + 1)?.to_string(),
            })
        })
        .collect()
}

fn mounts(r: &mut Report, spec: &Spec) {
    let table = mountinfo();
    for m in spec.mounts().iter().flatten() {
        check_mount(r, &table, m);
    }
    if let Some(ro) = spec.root().as_ref().and_then(|r| r.readonly()) {
        r.eq("root", "readonly", read_only(Path::new("/")), Some(ro));
    }
}

fn check_mount(r: &mut Report, table: &[MountInfo], m: &Mount) {
    let dest = m.destination().to_string_lossy().to_string();
    let Some(got) = table.iter().rev().find(|t| t.point == dest) else {
        r.expect("mounts", &dest, false, || "not mounted".into());
        return;
    };
    let opts = m.options().clone().unwrap_or_default();
    let has = |o: &str| opts.iter().any(|x| x == o);
    let bind = has("bind") || has("rbind") || m.typ().as_deref() == Some("bind");
    if !bind {
        let want = m.typ().clone().unwrap_or_default();
        let ok = got.fstype == want || (want == "cgroup" && got.fstype == "cgroup2");
        r.expect("mounts", &format!("{dest} type"), ok, || {
            format!("got {}, want {want}", got.fstype)
        });
    }
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        if has(flag) {
            let ok = got.options.iter().any(|o| o == flag);
            r.expect("mounts", &format!("{dest} {flag}"), ok, || {
                format!("options {}", got.options.join(","))
            });
        }
    }
    let want = if has("shared") || has("rshared") {
        Some("shared")
    } else if has("slave") || has("rslave") {
        Some("master")
    } else if has("unbindable") || has("runbindable") {
        Some("unbindable")
    } else {
        None
    };
    if let Some(w) = want {
        r.expect(
            "mounts",
            &format!("{dest} propagation {w}"),
            got.propagation.contains(w),
            || format!("{:?}", got.propagation),
        );
    } else if has("private") || has("rprivate") {
        let ok = !got.propagation.contains("shared") && !got.propagation.contains("master");
        r.expect("mounts", &format!("{dest} propagation private"), ok, || {
            format!("{:?}", got.propagation)
        });
    }
}

fn read_only(p: &Path) -> Option<bool> {
    let c = std::ffi::CString::new(p.to_string_lossy().as_bytes()).ok()?;
    // SAFETY: a zeroed statvfs filled by the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and out pointer.
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then_some(s.f_flag & libc::ST_RDONLY != 0)
}

fn paths(r: &mut Report, spec: &Spec) {
    let Some(linux) = spec.linux() else { return };
    for p in linux.masked_paths().iter().flatten() {
        let path = Path::new(p);
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let empty = if meta.is_dir() {
            std::fs::read_dir(path)
                .map(|d| d.count() == 0)
                .unwrap_or(true)
        } else {
            std::fs::read(path).map(|c| c.is_empty()).unwrap_or(true)
        };
        r.expect("paths", &format!("masked {p}"), empty, || {
            "readable with content".into()
        });
    }
    for p in linux.readonly_paths().iter().flatten() {
        if Path::new(p).exists() {
            r.eq(
                "paths",
                &format!("read-only {p}"),
                read_only(Path::new(p)),
                Some(true),
            );
        }
    }
}

fn devices(r: &mut Report, spec: &Spec) {
    let dev_mounted = spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("bind"));
    if dev_mounted {
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
            let got = std::fs::metadata(format!("/dev/{name}"))
                .ok()
                .filter(|m| m.file_type().is_char_device())
                .map(|m| (libc::major(m.rdev()), libc::minor(m.rdev())));
            r.eq(
                "devices",
                &format!("/dev/{name}"),
                got,
                Some((major, minor)),
            );
        }
    }
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default()
    {
        let path = d.path().to_string_lossy().to_string();
        let Ok(m) = std::fs::metadata(d.path()) else {
            r.expect("devices", &path, false, || "missing".into());
            continue;
        };
        let kind_ok = match d.typ() {
            LinuxDeviceType::B => m.file_type().is_block_device(),
            LinuxDeviceType::P => m.file_type().is_fifo(),
            _ => m.file_type().is_char_device(),
        };
        r.expect("devices", &format!("{path} type"), kind_ok, || {
            format!("{:?}", m.file_type())
        });
        if d.typ() != LinuxDeviceType::P {
            r.eq(
                "devices",
                &format!("{path} number"),
                (libc::major(m.rdev()) as i64, libc::minor(m.rdev()) as i64),
                (d.major(), d.minor()),
            );
        }
        if let Some(mode) = d.file_mode() {
            r.eq(
                "devices",
                &format!("{path} mode"),
                m.mode() & 0o777,
                mode & 0o777,
            );
        }
        r.eq(
            "devices",
            &format!("{path} owner"),
            (m.uid(), m.gid()),
            (d.uid().unwrap_or(0), d.gid().unwrap_or(0)),
        );
    }
}

fn sysctls(r: &mut Report, spec: &Spec) {
    for (k, v) in spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().clone())
        .unwrap_or_default()
    {
        let got = std::fs::read_to_string(format!("/proc/sys/{}", k.replace('.', "/")))
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .ok();
        r.eq("sysctl", &k, got, Some(v));
    }
}

/// The first of the files (v2 then v1 layout) that exists, trimmed.
fn cgroup_file(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find_map(|f| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok())
        .map(|s| s.trim().to_string())
}

fn cgroups(r: &mut Report, spec: &Spec) {
    let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return;
    };
    if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
        let got = cgroup_file(&["memory.max", "memory/memory.limit_in_bytes"]);
        r.eq("cgroups", "memory limit", got, Some(limit.to_string()));
    }
    if let Some(p) = res.pids().as_ref().map(|p| p.limit()) {
        let got = cgroup_file(&["pids.max", "pids/pids.max"]);
        r.eq("cgroups", "pids limit", got, Some(p.to_string()));
    }
    if let Some((q, p)) = res
        .cpu()
        .as_ref()
        .and_then(|c| Some((c.quota()?, c.period()?)))
    {
        let got = cgroup_file(&["cpu.max"]).or_else(|| {
            Some(format!(
                "{} {}",
                cgroup_file(&["cpu/cpu.cfs_quota_us", "cpu,cpuacct/cpu.cfs_quota_us"])?,
                cgroup_file(&["cpu/cpu.cfs_period_us", "cpu,cpuacct/cpu.cfs_period_us"])?
            ))
        });
        r.eq(
            "cgroups",
            "cpu quota and period",
            got,
            Some(format!("{q} {p}")),
        );
    }
}

/// The driver's seccomp case refuses getpriority with this errno.
pub const SECCOMP_ERRNO: i32 = 99;

fn seccomp(r: &mut Report, spec: &Spec) {
    let filtered = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .is_some();
    r.eq(
        "seccomp",
        "mode",
        status_field("Seccomp:"),
        Some(if filtered { "2" } else { "0" }.to_string()),
    );
    if filtered {
        // SAFETY: errno is thread-local; getpriority has no pointers.
        let errno = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, 0);
            *libc::__errno_location()
        };
        r.eq("seccomp", "getpriority refused", errno, SECCOMP_ERRNO);
    }
}
