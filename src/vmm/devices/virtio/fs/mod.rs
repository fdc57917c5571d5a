//! virtio-fs: the guest's FUSE requests served in-process by
//! fuse-backend-rs's passthrough file system, rooted at the container's
//! share directory (see `vmm::share`).
//!
//! Containment is layered: the passthrough resolves one name at a time
//! under the root with O_NOFOLLOW (symlinks are returned to the guest and
//! resolved there, inside the guest), maps `..` of the root to the root,
//! and the share itself lives in the monitor's private mount namespace
//! where read-only binds are enforced by the host kernel.

mod backend;
mod keep_cache;
mod known;

use super::{read_config_bytes, DeviceError, VirtioDevice, TYPE_FS, VIRTIO_F_VERSION_1};
use crate::vmm::memory::Memory;
use backend::SharedFs;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes};

/// Queue 0 is the high-priority queue (FORGET, INTERRUPT), 1 the requests.
/// Room for a few 1 MiB requests (one page per descriptor) at once.
const QUEUE_SIZE: u16 = 1024;
const TAG_LEN: usize = 36;
/// The guest polls for an answer for up to 2 ms before it sleeps
/// (kernel-config/patches/virtio-fs-poll-for-answers.patch), and a program
/// that works through files sends its next request soon after: polling as
/// long spares both the notification and the interrupt, a VM exit each.
/// Both windows adapt below that (`virtio::poll`); 2 ms is what a create
/// in an overlay rootfs takes in the nested, emulated test host.
const POLL: Duration = Duration::from_millis(2);
/// How long the guest may trust what it was told of a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// A tree the host changes while the container runs (volumes, docker's
    /// /etc files): lookups and attributes for 1 s (the "auto" policy).
    Shared,
    /// The container's own tree (its rootfs): lookups, attributes and
    /// absent names for 10 s, and the guest's own writes keep its pages.
    Private,
}

impl Caching {
    pub fn timeout(self) -> Duration {
        match self {
            Caching::Shared => Duration::from_secs(1),
            Caching::Private => Duration::from_secs(10),
        }
    }
}

/// Requests the guest does not wait for: FORGET and BATCH_FORGET (on the
/// high-priority queue, no reply) and RELEASE/RELEASEDIR, which the guest
/// sends in the background on close.
const OP_RELEASE: u32 = 18;
const OP_RELEASEDIR: u32 = 29;

pub struct Fs {
    server: Server<Arc<SharedFs>>,
    config: [u8; TAG_LEN + 4],
    /// Whether every request of the last `process` was one the guest does
    /// not wait for.
    unwaited: bool,
}

impl Fs {
    pub fn new(tag: &str, root: &Path, caching: Caching) -> std::io::Result<Fs> {
        if tag.is_empty() || tag.len() > TAG_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("virtio-fs tag {tag:?} must be 1 to {TAG_LEN} bytes"),
            ));
        }
        let root_dir = root
            .to_str()
            .ok_or_else(|| std::io::Error::other("virtio-fs root is not UTF-8"))?
            .to_string();
        let fs = PassthroughFs::new(Config {
            root_dir,
            cache_policy: CachePolicy::Auto,
            entry_timeout: caching.timeout(),
            attr_timeout: caching.timeout(),
            xattr: true,
            do_import: true,
            writeback: false,
            // Privileges are dropped on write by the host, not by a
            // getxattr(security.capability) round trip before every write.
            killpriv_v2: true,
            ..Default::default()
        })?;
        fs.import()?;
        let mut config = [0u8; TAG_LEN + 4];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_LEN..].copy_from_slice(&1u32.to_le_bytes());
        Ok(Fs {
            server: Server::new(Arc::new(SharedFs::new(fs, root, caching))),
            config,
            unwaited: false,
        })
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn can_defer(&self) -> bool {
        self.unwaited
    }

    /// The guest kernel adds FORGETs (high-priority queue) and background
    /// RELEASEs without a notification
    /// (kernel-config/patches/virtio-fs-lazy-kick.patch).
    fn notify_serves_all_queues(&self) -> bool {
        true
    }

    fn poll_window(&self) -> Option<Duration> {
        Some(POLL)
    }

    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &Memory,
    ) -> Result<bool, DeviceError> {
        let bad = |e: &dyn std::fmt::Display| DeviceError::BadRequest(format!("virtio-fs: {e}"));
        let mut used = false;
        self.unwaited = true;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            if index != 0 && !matches!(opcode(mem, &chain), Some(OP_RELEASE | OP_RELEASEDIR)) {
                self.unwaited = false;
            }
            let reader = Reader::from_descriptor_chain(mem, chain.clone()).map_err(|e| bad(&e))?;
            let writer = VirtioFsWriter::new(mem, chain).map_err(|e| bad(&e))?;
            // File system errors are replies to the guest; an error here is
            // a request the FUSE protocol cannot even answer.
            let written = self
                .server
                .handle_message(reader, writer.into(), None, None)
                .map_err(|e| bad(&e))?;
            queue.add_used(mem, head, u32::try_from(written).unwrap_or(u32::MAX))?;
            used = true;
        }
        Ok(used)
    }
}

/// The opcode of the FUSE request a chain starts with (its in-header's
/// second field), if the first descriptor holds it.
fn opcode(mem: &Memory, chain: &DescriptorChain<&Memory>) -> Option<u32> {
    let first = chain.clone().next()?;
    if first.is_write_only() || first.len() < 8 {
        return None;
    }
    mem.read_obj::<u32>(first.addr().checked_add(4)?)
        .ok()
        .map(u32::from_le)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const IN: u64 = 0x10_0000;
    const OUT: u64 = 0x20_0000;
    const OP_LOOKUP: u32 = 1;
    const OP_INIT: u32 = 26;
    const ROOT: u64 = 1;

    /// One FUSE request: header (len, opcode, unique, nodeid, uid, gid, pid,
    /// extlen, pad) and body.
    fn request(opcode: u32, nodeid: u64, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(((40 + body.len()) as u32).to_le_bytes());
        v.extend(opcode.to_le_bytes());
        v.extend(7u64.to_le_bytes());
        v.extend(nodeid.to_le_bytes());
        v.extend([0u8; 16]);
        v.extend(body);
        v
    }

    /// Puts one request on queue `index` and runs the device on it.
    fn send(fs: &mut Fs, m: &Memory, index: usize, req: &[u8]) -> Result<bool, DeviceError> {
        m.write_slice(req, GuestAddress(IN)).unwrap();
        let vq = MockSplitQueue::new(m, 16);
        vq.build_desc_chain(&[
            RawDescriptor::from(Descriptor::new(IN, req.len() as u32, NEXT, 1)),
            RawDescriptor::from(Descriptor::new(OUT, 4096, WRITE, 0)),
        ])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        fs.process(index, &mut q, m)
    }

    /// Sends one request; returns (error, body) of the reply.
    fn call(fs: &mut Fs, m: &Memory, req: &[u8]) -> (i32, Vec<u8>) {
        assert!(send(fs, m, 1, req).unwrap());
        let mut out = vec![0u8; 4096];
        m.read_slice(&mut out, GuestAddress(OUT)).unwrap();
        let len = u32::from_le_bytes(out[0..4].try_into().unwrap()) as usize;
        let err = i32::from_le_bytes(out[4..8].try_into().unwrap());
        (err, out[16..len.max(16)].to_vec())
    }

    fn init(fs: &mut Fs, m: &Memory) {
        init_with(fs, m, 0);
    }

    /// INIT offering `flags`; returns the reply body.
    fn init_with(fs: &mut Fs, m: &Memory, flags: u32) -> Vec<u8> {
        let mut body = Vec::new();
        for v in [7u32, 31, 0, flags] {
            body.extend(v.to_le_bytes());
        }
        body.extend([0u8; 48]);
        let (err, out) = call(fs, m, &request(OP_INIT, 0, &body));
        assert_eq!(err, 0);
        out
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn init_asks_for_one_mebibyte_requests() {
        const BIG_WRITES: u32 = 0x20;
        const MAX_PAGES: u32 = 0x40_0000;
        let d = tempfile::tempdir().unwrap();
        let m = mem();
        let mut fs = Fs::new("t", d.path(), Caching::Shared).unwrap();
        let out = init_with(&mut fs, &m, BIG_WRITES | MAX_PAGES);
        assert_eq!(
            u32_at(&out, 12) & (BIG_WRITES | MAX_PAGES),
            BIG_WRITES | MAX_PAGES
        );
        assert_eq!(u32_at(&out, 20), 1 << 20, "max_write");
        assert_eq!(u16::from_le_bytes([out[28], out[29]]), 256, "max_pages");
    }

    /// `rm -rf`: read a chunk, remove what it listed, continue at the last
    /// offset. Every entry must be listed once even where the host's
    /// offsets are positions (tmpfs before Linux 6.6, as in the test host,
    /// where this runs on /dev/shm).
    #[test]
    fn removing_while_listing_sees_every_entry() {
        const OP_UNLINK: u32 = 10;
        const OP_OPENDIR: u32 = 27;
        const OP_READDIR: u32 = 28;
        let shm = std::path::Path::new("/dev/shm");
        let d = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        std::fs::create_dir(d.path().join("d")).unwrap();
        for i in 0..300 {
            std::fs::write(d.path().join(format!("d/file-{i:04}")), b"").unwrap();
        }
        let m = mem();
        let mut fs = Fs::new("t", d.path(), Caching::Shared).unwrap();
        init(&mut fs, &m);
        let (err, dir) = lookup(&mut fs, &m, ROOT, "d");
        assert_eq!(err, 0);
        let (err, out) = call(&mut fs, &m, &request(OP_OPENDIR, dir, &[0u8; 8]));
        assert_eq!(err, 0);
        let fh = u64_at(&out, 0);
        let (mut offset, mut seen) = (0u64, 0);
        loop {
            let mut body = Vec::new();
            body.extend(fh.to_le_bytes());
            body.extend(offset.to_le_bytes());
            body.extend(1024u32.to_le_bytes());
            body.extend([0u8; 20]);
            let (err, out) = call(&mut fs, &m, &request(OP_READDIR, dir, &body));
            assert_eq!(err, 0);
            if out.is_empty() {
                break;
            }
            let mut at = 0;
            while at + 24 <= out.len() {
                offset = u64_at(&out, at + 8);
                let len = u32_at(&out, at + 16) as usize;
                let mut name = out[at + 24..at + 24 + len].to_vec();
                at += (24 + len).div_ceil(8) * 8;
                if name == b"." || name == b".." {
                    continue;
                }
                name.push(0);
                let (err, _) = call(&mut fs, &m, &request(OP_UNLINK, dir, &name));
                assert_eq!(err, 0);
                seen += 1;
            }
        }
        assert_eq!(seen, 300);
        assert_eq!(std::fs::read_dir(d.path().join("d")).unwrap().count(), 0);
    }

    /// Every entry of directory `node` through OPENDIR and READDIR (or
    /// READDIRPLUS): (name, d_ino, d_type, attr's ino if plus).
    fn list(fs: &mut Fs, m: &Memory, node: u64, plus: bool) -> Vec<(String, u64, u32, u64)> {
        const OP_OPENDIR: u32 = 27;
        const OP_READDIR: u32 = 28;
        const OP_READDIRPLUS: u32 = 44;
        let (err, out) = call(fs, m, &request(OP_OPENDIR, node, &[0u8; 8]));
        assert_eq!(err, 0);
        let fh = u64_at(&out, 0);
        let (mut offset, mut all) = (0u64, Vec::new());
        // An entry_out before each dirent with plus.
        let skip = if plus { 128 } else { 0 };
        loop {
            let mut body = Vec::new();
            body.extend(fh.to_le_bytes());
            body.extend(offset.to_le_bytes());
            body.extend(2048u32.to_le_bytes());
            body.extend([0u8; 20]);
            let op = if plus { OP_READDIRPLUS } else { OP_READDIR };
            let (err, out) = call(fs, m, &request(op, node, &body));
            assert_eq!(err, 0);
            if out.is_empty() {
                return all;
            }
            let mut at = 0;
            while at + skip + 24 <= out.len() {
                // fuse_attr's ino is the first field after four u64 and two u32.
                let attr_ino = if plus { u64_at(&out, at + 40) } else { 0 };
                let d = at + skip;
                offset = u64_at(&out, d + 8);
                let len = u32_at(&out, d + 16) as usize;
                let name = String::from_utf8(out[d + 24..d + 24 + len].to_vec()).unwrap();
                all.push((name, u64_at(&out, d), u32_at(&out, d + 20), attr_ino));
                at = d + (24 + len).div_ceil(8) * 8;
            }
        }
    }

    /// A listing is read from the host directory itself, and gives what
    /// stat gives: the host's inode numbers and file types.
    #[test]
    fn listings_give_the_hosts_inode_numbers_and_types() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("share");
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        for i in 0..100 {
            std::fs::write(root.join(format!("d/f{i}")), b"").unwrap();
        }
        std::os::unix::fs::symlink("f0", root.join("d/l")).unwrap();
        let m = mem();
        let mut fs = Fs::new("t", &root, Caching::Shared).unwrap();
        init(&mut fs, &m);
        let (err, dir) = lookup(&mut fs, &m, ROOT, "d");
        assert_eq!(err, 0);
        let want = |name: &str| {
            let md = std::fs::symlink_metadata(root.join("d").join(name)).unwrap();
            let t = match md.file_type() {
                t if t.is_dir() => libc::DT_DIR,
                t if t.is_symlink() => libc::DT_LNK,
                _ => libc::DT_REG,
            };
            (md.ino(), u32::from(t))
        };
        for plus in [false, true] {
            let got = list(&mut fs, &m, dir, plus);
            assert_eq!(
                got.len(),
                104,
                "plus {plus}: every entry once, . and .. too"
            );
            let names: std::collections::HashSet<_> = got.iter().map(|e| e.0.clone()).collect();
            assert_eq!(names.len(), 104);
            for (name, ino, type_, attr_ino) in &got {
                assert_eq!((*ino, *type_), want(name), "{name} (plus {plus})");
                if plus {
                    assert_eq!(*attr_ino, *ino, "{name}");
                }
            }
        }
        // Moved out of the share on the host, the directory is still the
        // guest's: its listing comes from the passthrough instead.
        std::fs::rename(root.join("d"), d.path().join("moved")).unwrap();
        let got = list(&mut fs, &m, dir, false);
        assert_eq!(
            got.len(),
            102,
            "the passthrough's listing, without . and .."
        );
    }

    const OP_OPEN: u32 = 14;
    /// FOPEN_KEEP_CACHE in an OPEN reply's flags.
    const KEEP_CACHE: u32 = 2;

    /// An OPEN of `node` that must succeed; returns (fh, open_flags).
    fn open(fs: &mut Fs, m: &Memory, node: u64) -> (u64, u32) {
        let (err, out) = call(fs, m, &request(OP_OPEN, node, &[0u8; 8]));
        assert_eq!(err, 0);
        (u64_at(&out, 0), u32_at(&out, 8))
    }

    /// A device serving a directory that holds the file `f` with `data`,
    /// initialised; returns it with f's node id.
    fn with_file(d: &Path, m: &Memory, data: &[u8]) -> (Fs, u64) {
        with_file_cached(d, m, data, Caching::Shared)
    }

    fn with_file_cached(d: &Path, m: &Memory, data: &[u8], caching: Caching) -> (Fs, u64) {
        std::fs::write(d.join("f"), data).unwrap();
        let mut fs = Fs::new("t", d, caching).unwrap();
        init(&mut fs, m);
        let (err, node) = lookup(&mut fs, m, ROOT, "f");
        assert_eq!(err, 0);
        (fs, node)
    }

    fn lookup(fs: &mut Fs, m: &Memory, parent: u64, name: &str) -> (i32, u64) {
        let mut body = name.as_bytes().to_vec();
        body.push(0);
        let (err, out) = call(fs, m, &request(OP_LOOKUP, parent, &body));
        let node = out
            .get(0..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap_or(0);
        (err, node)
    }

    #[test]
    fn only_forget_and_release_replies_may_wait_for_an_interrupt() {
        const OP_FORGET: u32 = 2;
        let d = tempfile::tempdir().unwrap();
        let m = mem();
        let (mut fs, node) = with_file(d.path(), &m, b"x");
        assert!(!fs.can_defer(), "a LOOKUP is waited for");
        let (fh, _) = open(&mut fs, &m, node);
        assert!(!fs.can_defer());
        let mut body = fh.to_le_bytes().to_vec();
        body.extend([0u8; 16]);
        let (err, _) = call(&mut fs, &m, &request(OP_RELEASE, node, &body));
        assert_eq!(err, 0);
        assert!(fs.can_defer(), "the guest sends RELEASE in the background");
        assert!(send(
            &mut fs,
            &m,
            0,
            &request(OP_FORGET, node, &1u64.to_le_bytes())
        )
        .unwrap());
        assert!(fs.can_defer(), "FORGET has no reply");
        // Too short to hold an opcode: nothing is assumed of it.
        assert!(send(&mut fs, &m, 1, &[0u8; 4]).is_err());
        assert!(!fs.can_defer());
    }

    #[test]
    fn config_space_holds_the_tag_and_one_request_queue() {
        let d = tempfile::tempdir().unwrap();
        let fs = Fs::new("microrun", d.path(), Caching::Shared).unwrap();
        let mut tag = [0u8; 36];
        fs.read_config(0, &mut tag);
        assert_eq!(&tag[..9], b"microrun\0");
        let mut n = [0u8; 4];
        fs.read_config(36, &mut n);
        assert_eq!(u32::from_le_bytes(n), 1);
        assert!(Fs::new("", d.path(), Caching::Shared).is_err());
        assert!(Fs::new(&"x".repeat(37), d.path(), Caching::Shared).is_err());
    }

    #[test]
    fn lookups_stay_beneath_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("share");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::write(d.path().join("canary"), b"secret").unwrap();
        std::fs::write(root.join("dir/file"), b"x").unwrap();
        std::os::unix::fs::symlink("../../canary", root.join("dir/link")).unwrap();
        let m = mem();
        let mut fs = Fs::new("t", &root, Caching::Shared).unwrap();
        init(&mut fs, &m);
        let (err, dir) = lookup(&mut fs, &m, ROOT, "dir");
        assert_eq!(err, 0);
        assert!(dir > ROOT);
        assert_eq!(lookup(&mut fs, &m, dir, "file").0, 0);
        // `..` of the root is the root; the canary beside it is unreachable.
        assert_eq!(lookup(&mut fs, &m, ROOT, ".."), (0, ROOT));
        assert_eq!(lookup(&mut fs, &m, dir, ".."), (0, ROOT));
        assert_eq!(lookup(&mut fs, &m, ROOT, "canary").0, -libc::ENOENT);
        // A name is one component; a symlink is an entry, not followed here.
        assert_eq!(lookup(&mut fs, &m, ROOT, "../canary").0, -libc::EINVAL);
        let (err, link) = lookup(&mut fs, &m, dir, "link");
        assert_eq!(err, 0);
        assert_eq!(lookup(&mut fs, &m, link, "x").0, -libc::ENOTDIR);
    }

    /// FLUSH is refused with ENOSYS, which makes the guest's FUSE stop
    /// sending it (no_flush): a close(2) costs no round trip.
    #[test]
    fn flush_is_declined_so_the_guest_stops_sending_it() {
        const OP_FLUSH: u32 = 25;
        let d = tempfile::tempdir().unwrap();
        let m = mem();
        let (mut fs, node) = with_file(d.path(), &m, b"x");
        let (fh, _) = open(&mut fs, &m, node);
        let mut body = fh.to_le_bytes().to_vec();
        body.extend([0u8; 16]); // unused, padding, lock_owner
        let (err, _) = call(&mut fs, &m, &request(OP_FLUSH, node, &body));
        assert_eq!(err, -libc::ENOSYS);
    }

    /// A file unchanged since its last open keeps the guest's cached pages
    /// (FOPEN_KEEP_CACHE); one changed on the host in between does not.
    #[test]
    fn reopening_an_unchanged_file_keeps_the_guest_cache() {
        let d = tempfile::tempdir().unwrap();
        let m = mem();
        let (mut fs, node) = with_file(d.path(), &m, b"one");
        let mut keeps = || open(&mut fs, &m, node).1 & KEEP_CACHE != 0;
        assert!(!keeps(), "first open");
        assert!(keeps(), "unchanged");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(d.path().join("f"), b"two").unwrap();
        assert!(!keeps(), "changed on the host, same size");
        assert!(keeps());
    }

    /// Only the container's own tree answers an absent name with a
    /// negative entry the guest keeps; a shared one says ENOENT (uncached).
    #[test]
    fn absent_names_are_remembered_only_in_the_containers_own_tree() {
        let d = tempfile::tempdir().unwrap();
        let m = mem();
        let (mut shared, _) = with_file_cached(d.path(), &m, b"", Caching::Shared);
        assert_eq!(lookup(&mut shared, &m, ROOT, "absent").0, -libc::ENOENT);
        let (mut own, _) = with_file_cached(d.path(), &m, b"", Caching::Private);
        let (err, out) = call(&mut own, &m, &request(OP_LOOKUP, ROOT, b"absent\0"));
        assert_eq!(err, 0);
        assert_eq!(u64_at(&out, 0), 0, "node id 0: a negative entry");
        assert_eq!(u64_at(&out, 16), 10, "kept 10 s");
        assert_eq!(lookup(&mut own, &m, ROOT, "f").0, 0);
    }

    /// In the container's own tree a file changed between an open and its
    /// release (as by the guest's writes) keeps the guest's pages at the
    /// next open; in a shared tree such a change drops them.
    #[test]
    fn own_writes_keep_the_cache_only_in_the_containers_own_tree() {
        const OP_RELEASE: u32 = 18;
        for (caching, kept) in [(Caching::Private, true), (Caching::Shared, false)] {
            let d = tempfile::tempdir().unwrap();
            let m = mem();
            let (mut fs, node) = with_file_cached(d.path(), &m, b"one", caching);
            let (fh, _) = open(&mut fs, &m, node);
            std::thread::sleep(Duration::from_millis(20));
            std::fs::write(d.path().join("f"), b"two!").unwrap();
            let mut body = fh.to_le_bytes().to_vec();
            body.extend([0u8; 16]); // flags, release flags, lock owner
            assert_eq!(call(&mut fs, &m, &request(OP_RELEASE, node, &body)).0, 0);
            let (_, flags) = open(&mut fs, &m, node);
            assert_eq!(flags & KEEP_CACHE != 0, kept, "{caching:?}");
        }
    }

    /// Thousands of random requests (every opcode, random node ids, random
    /// bodies, often with plausible names): no panic, and nothing outside
    /// the root is touched.
    #[test]
    fn random_requests_stay_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("share");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::write(root.join("dir/file"), b"x").unwrap();
        std::fs::write(d.path().join("canary"), b"secret").unwrap();
        let m = mem();
        let mut fs = Fs::new("t", &root, Caching::Shared).unwrap();
        init(&mut fs, &m);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let names: [&[u8]; 6] = [
            b"..\0",
            b".\0",
            b"dir\0",
            b"file\0",
            b"../canary\0",
            b"new\0",
        ];
        for _ in 0..5000 {
            let opcode = (next() % 52) as u32;
            // FUSE_DESTROY would end the session for the rest of the run.
            if opcode == 38 {
                continue;
            }
            let node = next() % 8;
            let mut body: Vec<u8> = (0..next() % 96).map(|_| next() as u8).collect();
            if next() % 2 == 0 {
                body.extend(names[(next() % 6) as usize]);
                body.extend(names[(next() % 6) as usize]);
            }
            let req = request(opcode, node, &body);
            m.write_slice(&req, GuestAddress(IN)).unwrap();
            let vq = MockSplitQueue::new(&m, 16);
            vq.build_desc_chain(&[
                RawDescriptor::from(Descriptor::new(IN, req.len() as u32, NEXT, 1)),
                RawDescriptor::from(Descriptor::new(OUT, 4096, WRITE, 0)),
            ])
            .unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            let _ = fs.process(1, &mut q, &m);
        }
        let mut outside: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        outside.sort();
        assert_eq!(outside, ["canary", "share"]);
        assert_eq!(std::fs::read(d.path().join("canary")).unwrap(), b"secret");
    }

    #[test]
    fn hostile_chains_fail_the_device_instead_of_crashing() {
        let d = tempfile::tempdir().unwrap();
        let m = mem();
        let mut fs = Fs::new("t", d.path(), Caching::Shared).unwrap();
        // Out of guest memory.
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[
            RawDescriptor::from(Descriptor::new(0xffff_f000, 0x2000, NEXT, 1)),
            RawDescriptor::from(Descriptor::new(OUT, 4096, WRITE, 0)),
        ])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(fs.process(1, &mut q, &m).is_err());
        // No request at all: only a writable buffer.
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(OUT, 4096, WRITE, 0))])
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(fs.process(1, &mut q, &m).is_err());
        // A header claiming more than was sent, and no room for a reply.
        let mut req = request(OP_LOOKUP, ROOT, b"x\0");
        req[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        m.write_slice(&req, GuestAddress(IN)).unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(
            IN,
            req.len() as u32,
            0,
            0,
        ))])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let _ = fs.process(1, &mut q, &m);
    }
}
