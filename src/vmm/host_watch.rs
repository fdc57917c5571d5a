//! Host changes in volumes, for the guest's inotify watchers: the monitor
//! watches the host directories of the container's directory volumes with
//! fanotify and reports each change another process made, as the guest
//! directory and entry it concerns. The agent has the guest kernel raise
//! them (kernel-config/patches/fuse-host-change-ioctl.patch). Changes this
//! process made are the virtio-fs device's, that is the guest's own, which
//! its kernel has already reported.

use microrun_protocol::HostChange;
use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// The most directories one container has watched: a volume's tree is
/// watched breadth first until then (fanotify marks cost kernel memory).
pub const MAX_DIRS: usize = 4096;
/// The most changes one report holds.
pub const MAX_BATCH: usize = 64;

/// What a change may be: fanotify's bits are inotify's (FAN_ONDIR is
/// IN_ISDIR).
const EVENTS: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_MODIFY
    | libc::FAN_ATTRIB
    | libc::FAN_CLOSE_WRITE;
const MARK: u64 = EVENTS | libc::FAN_ONDIR | libc::FAN_EVENT_ON_CHILD;
/// fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask,
/// fd, pid.
const META: usize = 24;
/// How long a wakeup waits for the rest of a burst.
const GATHER: Duration = Duration::from_millis(50);
/// MAX_HANDLE_SZ.
const HANDLE_MAX: usize = 128;

#[derive(Debug, Error)]
pub enum HostWatchError {
    #[error("fanotify_init: {0}")]
    Init(std::io::Error),
}

struct Dir {
    guest: String,
    /// The volume it is in: its root's fd decodes the directory's handle.
    root: usize,
}

pub struct HostWatch {
    fd: OwnedFd,
    /// By file system id and file handle, as fanotify reports directories.
    dirs: HashMap<Vec<u8>, Dir>,
    roots: Vec<Root>,
    pid: i32,
    buf: Vec<u8>,
    /// The kernel's queue overflowed and dropped events since the last read.
    overflowed: bool,
}

/// A volume's root directory.
struct Root {
    fd: OwnedFd,
    key: Vec<u8>,
    guest: String,
}

impl HostWatch {
    /// Watches each (host directory, guest directory) pair's tree.
    pub fn new(volumes: &[(PathBuf, String)]) -> Result<Self, HostWatchError> {
        // SAFETY: plain system call; the fd is owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_REPORT_DFID_NAME,
                (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
            )
        };
        if fd < 0 {
            return Err(HostWatchError::Init(std::io::Error::last_os_error()));
        }
        let mut w = HostWatch {
            // SAFETY: a new fd owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            dirs: HashMap::new(),
            roots: Vec::new(),
            pid: std::process::id() as i32,
            buf: vec![0; 256 * 1024],
            overflowed: false,
        };
        for (host, guest) in volumes {
            // Not O_PATH: open_by_handle_at takes no such fd for the mount.
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            let Ok(root) = open_at(libc::AT_FDCWD, host.as_os_str().as_bytes(), flags) else {
                continue;
            };
            let Some(key) = handle_key(&root) else {
                continue;
            };
            w.roots.push(Root {
                fd: root,
                key: key.clone(),
                guest: guest.clone(),
            });
            w.add_tree(w.roots.len() - 1, key, guest.clone(), false);
        }
        Ok(w)
    }

    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    /// Watches a directory and the directories beneath it, breadth first,
    /// while the budget lasts. The tree is the guest's to change under us:
    /// every step is one name below an open directory, never followed if
    /// it is a symlink, so no path can lead the watch out of the volume.
    /// `again` walks the directories already watched too, setting their
    /// guest paths to where they are now.
    fn add_tree(&mut self, root: usize, key: Vec<u8>, guest: String, again: bool) {
        let mut queue = VecDeque::from([(key, guest)]);
        while let Some((key, g)) = queue.pop_front() {
            let known = self.dirs.contains_key(&key);
            if known && !again {
                continue;
            }
            if !known && self.dirs.len() >= MAX_DIRS {
                return;
            }
            let Some(dir) = self.open_dir(root, &key, libc::O_RDONLY) else {
                continue;
            };
            if !known {
                // SAFETY: a NULL path marks the object `dir` refers to.
                let r = unsafe {
                    libc::fanotify_mark(
                        self.fd.as_raw_fd(),
                        libc::FAN_MARK_ADD | libc::FAN_MARK_ONLYDIR,
                        MARK,
                        dir.as_raw_fd(),
                        std::ptr::null(),
                    )
                };
                if r != 0 {
                    continue;
                }
            }
            self.dirs.insert(
                key,
                Dir {
                    guest: g.clone(),
                    root,
                },
            );
            let Ok(mut entries) = nix::dir::Dir::from_fd(dir.into_raw_fd()) else {
                continue;
            };
            let at = entries.as_raw_fd();
            for e in entries.iter().flatten() {
                let name = e.file_name().to_bytes();
                let maybe_dir = matches!(e.file_type(), None | Some(nix::dir::Type::Directory));
                if !maybe_dir || name == b"." || name == b".." {
                    continue;
                }
                let (Some(child), Ok(n)) = (subdir_key(at, name), std::str::from_utf8(name)) else {
                    continue;
                };
                queue.push_back((child, format!("{g}/{n}")));
            }
        }
    }

    /// After an overflow the lost events may have named new or moved
    /// directories: each volume is walked again.
    fn rewalk(&mut self) {
        self.overflowed = false;
        for i in 0..self.roots.len() {
            let (key, guest) = (self.roots[i].key.clone(), self.roots[i].guest.clone());
            self.add_tree(i, key, guest, true);
        }
    }

    /// A watched directory moved within its volume, by the guest or the
    /// host: it and what is watched below it are now under `to`.
    fn moved(&mut self, root: usize, key: &[u8], to: &str) {
        let Some(from) = self.dirs.get(key).map(|d| d.guest.clone()) else {
            return;
        };
        let below = format!("{from}/");
        for d in self.dirs.values_mut().filter(|d| d.root == root) {
            if d.guest == from {
                d.guest = to.to_string();
            } else if let Some(rest) = d.guest.strip_prefix(&below) {
                d.guest = format!("{to}/{rest}");
            }
        }
    }

    /// A watched directory, opened by its handle: where it is now, whatever
    /// its path has become.
    fn open_dir(&self, root: usize, key: &[u8], flags: i32) -> Option<OwnedFd> {
        let mount = &self.roots.get(root)?.fd;
        let data = key.get(12..)?;
        if data.len() > HANDLE_MAX {
            return None;
        }
        let mut h = Handle {
            bytes: data.len() as u32,
            kind: i32::from_ne_bytes(key.get(8..12)?.try_into().ok()?),
            data: [0; HANDLE_MAX],
        };
        h.data[..data.len()].copy_from_slice(data);
        // SAFETY: `h` starts like struct file_handle with `bytes` valid
        // bytes of handle; the fd is owned below.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                (&mut h as *mut Handle).cast(),
                flags | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: a new fd owned by nobody else.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Waits up to `timeout` for host changes and returns those other
    /// processes made (reading stops once MAX_BATCH are in; the rest come
    /// next time).
    pub fn wait(&mut self, timeout: Duration) -> Vec<HostChange> {
        let mut out = Vec::new();
        if !self.readable(timeout) {
            return out;
        }
        // The guest's own changes come here too, thousands a second while
        // it creates files: one wakeup a burst, not one an event.
        std::thread::sleep(GATHER);
        while out.len() < MAX_BATCH && self.readable(Duration::ZERO) {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            let Ok(n) = usize::try_from(n) else { break };
            let buf = std::mem::take(&mut self.buf);
            self.parse(&buf[..n], &mut out);
            self.buf = buf;
        }
        if self.overflowed {
            self.rewalk();
        }
        out
    }

    fn readable(&self, timeout: Duration) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    /// Events as the kernel lays them out, each with its info records.
    fn parse(&mut self, buf: &[u8], out: &mut Vec<HostChange>) {
        let mut at = 0;
        while at + META <= buf.len() {
            let len = u32_at(buf, at) as usize;
            let meta_len = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]) as usize;
            if len < META || meta_len < META || meta_len > len || at + len > buf.len() {
                return;
            }
            let ev = &buf[at..at + len];
            at += len;
            let mask = u64::from_ne_bytes(ev[8..16].try_into().unwrap_or_default());
            let pid = u32_at(ev, 20) as i32;
            if mask & libc::FAN_Q_OVERFLOW != 0 {
                self.overflowed = true;
            }
            let mut i = meta_len;
            while i + 4 <= ev.len() {
                let (kind, rec_len) = (ev[i], u16::from_ne_bytes([ev[i + 2], ev[i + 3]]) as usize);
                if rec_len < 4 || i + rec_len > ev.len() {
                    break;
                }
                let rec = &ev[i..i + rec_len];
                i += rec_len;
                if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
                    if let Some((key, name)) = dfid_name(rec) {
                        self.event(mask, pid, &key, name, out);
                    }
                }
            }
        }
    }

    fn event(&mut self, mask: u64, pid: i32, key: &[u8], name: &[u8], out: &mut Vec<HostChange>) {
        let Ok(name) = std::str::from_utf8(name) else {
            return;
        };
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return;
        }
        let Some(dir) = self.dirs.get(key) else {
            return;
        };
        let (guest, root) = (dir.guest.clone(), dir.root);
        let came = mask & (libc::FAN_CREATE | libc::FAN_MOVED_TO) != 0;
        let went = mask & (libc::FAN_DELETE | libc::FAN_MOVED_FROM) != 0;
        let new_dir = mask & libc::FAN_ONDIR != 0 && came;
        let mine = pid == self.pid;
        // Only what needs the directory opens it.
        let at = if new_dir || (!mine && came && went) {
            self.open_dir(root, key, libc::O_PATH)
        } else {
            None
        };
        if new_dir {
            if let Some(child) = at
                .as_ref()
                .and_then(|at| subdir_key(at.as_raw_fd(), name.as_bytes()))
            {
                let to = format!("{guest}/{name}");
                if self.dirs.contains_key(&child) {
                    self.moved(root, &child, &to);
                } else {
                    self.add_tree(root, child, to, false);
                }
            }
        }
        if mine {
            return;
        }
        // fanotify merges the unread events of one entry into one mask;
        // inotify reports one event per bit. An entry that came and went
        // is there now if it went first.
        let went_first =
            came && went && at.is_some_and(|at| exists_at(at.as_raw_fd(), name.as_bytes()));
        let order = if went_first { WENT_FIRST } else { CAME_FIRST };
        let dir_bit = if mask & libc::FAN_ONDIR != 0 {
            libc::IN_ISDIR
        } else {
            0
        };
        for bit in order.into_iter().filter(|b| mask & b != 0) {
            let mask = bit as u32 | dir_bit;
            // A write comes as many MODIFYs: one is enough.
            if out
                .last()
                .is_some_and(|c| c.mask == mask && c.name == name && c.dir == guest)
            {
                continue;
            }
            out.push(HostChange {
                dir: guest.clone(),
                name: name.to_string(),
                mask,
            });
        }
    }
}

/// The order of an entry's merged events.
const CAME_FIRST: [u64; 7] = [
    libc::FAN_CREATE,
    libc::FAN_MOVED_TO,
    libc::FAN_MODIFY,
    libc::FAN_ATTRIB,
    libc::FAN_CLOSE_WRITE,
    libc::FAN_MOVED_FROM,
    libc::FAN_DELETE,
];
const WENT_FIRST: [u64; 7] = [
    libc::FAN_MOVED_FROM,
    libc::FAN_DELETE,
    libc::FAN_CREATE,
    libc::FAN_MOVED_TO,
    libc::FAN_MODIFY,
    libc::FAN_ATTRIB,
    libc::FAN_CLOSE_WRITE,
];

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A DFID_NAME record: header (4), fsid (8), handle_bytes (4), handle_type
/// (4), the handle, the entry's name ending in NUL. Returns the directory's
/// key (as `handle_key` makes it) and the name.
fn dfid_name(rec: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let bytes = u32_at(rec.get(..16)?, 12) as usize;
    let end = 20usize.checked_add(bytes)?;
    let handle = rec.get(20..end)?;
    let mut key = Vec::with_capacity(12 + bytes);
    key.extend_from_slice(&rec[4..12]);
    key.extend_from_slice(&rec[16..20]);
    key.extend_from_slice(handle);
    let rest = &rec[end..];
    let name = &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())];
    Some((key, name))
}

/// struct file_handle with room for the largest handle.
#[repr(C)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; HANDLE_MAX],
}

/// openat(2) of one name below `at`, never through a symlink.
fn open_at(at: i32, name: &[u8], flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is NUL-terminated; the fd is owned below.
    let fd = unsafe { libc::openat(at, c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The key of `name` below `at` if it is a directory (not a symlink to one).
fn subdir_key(at: i32, name: &[u8]) -> Option<Vec<u8>> {
    if name.contains(&b'/') {
        return None;
    }
    handle_key(&open_at(at, name, libc::O_PATH | libc::O_DIRECTORY).ok()?)
}

fn exists_at(at: i32, name: &[u8]) -> bool {
    open_at(at, name, libc::O_PATH).is_ok()
}

/// The file system id and file handle of an open directory, as fanotify
/// reports them.
fn handle_key(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut h = Handle {
        bytes: HANDLE_MAX as u32,
        kind: 0,
        data: [0; HANDLE_MAX],
    };
    let mut mount_id = 0;
    // SAFETY: `h` starts like struct file_handle and has room for the
    // HANDLE_MAX bytes its `bytes` field announces; "" names `fd` itself.
    let r = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            (&mut h as *mut Handle).cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 || h.bytes as usize > HANDLE_MAX {
        return None;
    }
    // SAFETY: an all-zero statfs is valid; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    // SAFETY: fsid_t is two C ints, plain data.
    let fsid: [u8; 8] = unsafe { std::mem::transmute(st.f_fsid) };
    let mut key = fsid.to_vec();
    key.extend_from_slice(&h.kind.to_ne_bytes());
    key.extend_from_slice(&h.data[..h.bytes as usize]);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fanotify needs CAP_SYS_ADMIN: these run where the tests run as root
    /// (the test host), and pass trivially elsewhere.
    fn watch(volumes: &[(PathBuf, String)]) -> Option<HostWatch> {
        HostWatch::new(volumes).ok()
    }

    fn names(changes: &[HostChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {} {:#x}", c.dir, c.name, c.mask))
            .collect()
    }

    /// Runs `cmd` with sh in `dir`: a change made by another process.
    fn elsewhere(dir: &std::path::Path, cmd: &str) {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    }

    #[test]
    fn reports_other_processes_changes_by_guest_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let Some(mut w) = watch(&[(d.path().to_path_buf(), "/g/m1".into())]) else {
            return;
        };
        assert_eq!(w.watched(), 2);
        let sub = d.path().join("sub");
        elsewhere(&sub, "echo x > f && mkdir new && rm f && touch new/inner");
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(w.wait(Duration::from_millis(100)));
        }
        let got = names(&got);
        let want = [
            format!("/g/m1/sub f {:#x}", libc::IN_CREATE),
            format!("/g/m1/sub f {:#x}", libc::IN_MODIFY),
            format!("/g/m1/sub f {:#x}", libc::IN_CLOSE_WRITE),
            format!("/g/m1/sub new {:#x}", libc::IN_CREATE | libc::IN_ISDIR),
            format!("/g/m1/sub f {:#x}", libc::IN_DELETE),
        ];
        for w in &want {
            assert!(got.contains(w), "{w} not in {got:?}");
        }
        // The new directory was watched as it came, in time or not for
        // the file made in it at once; later changes there are reported.
        assert_eq!(w.watched(), 3);
        std::fs::remove_file(sub.join("new/inner")).ok();
        elsewhere(&sub, "touch new/later");
        let later = names(&w.wait(Duration::from_secs(2)));
        assert!(
            later.contains(&format!("/g/m1/sub/new later {:#x}", libc::IN_CREATE)),
            "{later:?}"
        );
    }

    #[test]
    fn this_processs_own_changes_are_not_reported() {
        let d = tempfile::tempdir().unwrap();
        let Some(mut w) = watch(&[(d.path().to_path_buf(), "/g/m1".into())]) else {
            return;
        };
        std::fs::write(d.path().join("mine"), b"x").unwrap();
        std::fs::create_dir(d.path().join("mydir")).unwrap();
        assert!(w.wait(Duration::from_millis(300)).is_empty());
        // ...but a directory it made is watched for the others' changes.
        assert_eq!(w.watched(), 2);
    }

    #[test]
    fn a_moved_directory_replaced_by_a_symlink_does_not_lead_out() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let vol = d.path().join("vol");
        std::fs::create_dir_all(vol.join("a")).unwrap();
        std::fs::create_dir(outside.path().join("c")).unwrap();
        let Some(mut w) = watch(&[(vol.clone(), "/g".into())]) else {
            return;
        };
        assert_eq!(w.watched(), 2);
        // What a guest can do in its volume: a path through "a" now leads
        // outside, while the directory it named lives on as "b".
        std::fs::rename(vol.join("a"), vol.join("b")).unwrap();
        std::os::unix::fs::symlink(outside.path(), vol.join("a")).unwrap();
        std::fs::create_dir(vol.join("b/c")).unwrap();
        w.wait(Duration::from_millis(300));
        assert_eq!(w.watched(), 3, "the root, b and b/c");
        elsewhere(outside.path(), "touch c/leak");
        let got = names(&w.wait(Duration::from_millis(500)));
        assert!(got.iter().all(|n| !n.contains("leak")), "{got:?}");
    }

    #[test]
    fn a_moved_directory_is_reported_where_it_is_now() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        let Some(mut w) = watch(&[(d.path().to_path_buf(), "/g".into())]) else {
            return;
        };
        assert_eq!(w.watched(), 3);
        let sh = |cmd: &str| elsewhere(d.path(), cmd);
        // Moved by the device (the guest), then by another process.
        std::fs::rename(d.path().join("a"), d.path().join("x")).unwrap();
        w.wait(Duration::from_millis(300));
        sh("touch x/b/f");
        let got = names(&w.wait(Duration::from_secs(1)));
        let want = format!("/g/x/b f {:#x}", libc::IN_CREATE);
        assert!(got.contains(&want), "{want} not in {got:?}");
        sh("mv x y");
        w.wait(Duration::from_millis(300));
        sh("touch y/b/g");
        let got = names(&w.wait(Duration::from_secs(1)));
        let want = format!("/g/y/b g {:#x}", libc::IN_CREATE);
        assert!(got.contains(&want), "{want} not in {got:?}");
        assert_eq!(w.watched(), 3);
    }

    #[test]
    fn after_an_overflow_new_directories_are_watched_all_the_same() {
        let d = tempfile::tempdir().unwrap();
        let Some(mut w) = watch(&[(d.path().to_path_buf(), "/g".into())]) else {
            return;
        };
        // More events than the kernel queues (16384), as a guest's burst
        // makes them: the directory made last is lost with the rest.
        for i in 0..17000 {
            std::fs::File::create(d.path().join(format!("f{i}"))).unwrap();
        }
        std::fs::create_dir(d.path().join("new")).unwrap();
        w.wait(Duration::from_millis(300));
        assert_eq!(w.watched(), 2, "the root and new");
        elsewhere(d.path(), "touch new/x");
        let got = names(&w.wait(Duration::from_secs(1)));
        let want = format!("/g/new x {:#x}", libc::IN_CREATE);
        assert!(got.contains(&want), "{want} not in {got:?}");
    }

    #[test]
    fn records_that_do_not_fit_are_skipped() {
        assert!(dfid_name(&[0; 10]).is_none());
        let mut rec = vec![2, 0, 30, 0];
        rec.extend_from_slice(&[0; 8]);
        rec.extend_from_slice(&200u32.to_ne_bytes());
        rec.extend_from_slice(&[0; 14]);
        assert!(dfid_name(&rec).is_none(), "a handle longer than its record");
        let d = tempfile::tempdir().unwrap();
        if let Some(mut w) = watch(&[(d.path().to_path_buf(), "/g".into())]) {
            let mut out = Vec::new();
            // An event whose length runs past the buffer, one too short.
            let mut ev = vec![0u8; META];
            ev[..4].copy_from_slice(&1000u32.to_ne_bytes());
            w.parse(&ev, &mut out);
            ev[..4].copy_from_slice(&4u32.to_ne_bytes());
            w.parse(&ev, &mut out);
            assert!(out.is_empty());
        }
    }

    #[test]
    fn a_tree_is_watched_up_to_the_budget() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::create_dir_all(d.path().join(format!("a{i}/b"))).unwrap();
        }
        std::os::unix::fs::symlink("/", d.path().join("link")).unwrap();
        if let Some(w) = watch(&[(d.path().to_path_buf(), "/g".into())]) {
            assert_eq!(w.watched(), 11, "the root, five a's, five b's; no link");
        }
    }
}
