//! The file system behind the virtio-fs device: fuse-backend-rs's
//! passthrough with two things changed that it does not let us configure.
//!
//! - INIT: the passthrough never asks for BIG_WRITES or MAX_PAGES, which
//!   leaves the guest at 8 KiB per write request; every request is a VM
//!   exit round trip, so large requests are most of sequential throughput.
//! - Directory listings: the passthrough seeks the host directory to the
//!   guest's offset on every READDIR. On file systems whose offsets are
//!   positions (tmpfs before 6.6, for one), entries removed between two
//!   requests shift the rest, and `rm -rf` skipped half a directory. A
//!   listing is therefore read whole when the guest starts at offset 0 and
//!   served from memory by index, as libfuse's high-level API does; beyond
//!   a memory budget it falls back to the passthrough's positional reads.
//!   The listing is read from a directory fd of our own: the passthrough's
//!   READDIR looks every entry up on the host (open, stat, close) only to
//!   give its node id as d_ino, which a READDIRPLUS then did again.
//! - READDIRPLUS of a file the guest already holds under that directory
//!   costs one statx instead of the passthrough's lookup (`known.rs`).

use super::keep_cache::Stamps;
use super::known::{Key, Known};
use super::Caching;
use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, CreateIn};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter,
};
use fuse_backend_rs::passthrough::PassthroughFs;
use nix::dir::{Dir, Type};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What we ask for on top of the passthrough's own options.
const EXTRA_OPTIONS: FsOptions = FsOptions::BIG_WRITES
    .union(FsOptions::MAX_PAGES)
    .union(FsOptions::ASYNC_READ)
    .union(FsOptions::PARALLEL_DIROPS);
/// getdents64 buffer per host read while taking a listing.
const LISTING_CHUNK: u32 = 64 * 1024;
/// Memory all held listings may take together; a guest opening many huge
/// directories gets positional reads instead of growing the monitor.
const LISTINGS_BUDGET: usize = 64 << 20;
/// Bookkeeping per entry beyond its name.
const ITEM_OVERHEAD: usize = std::mem::size_of::<Item>();
/// Counted against the budget per listing beyond its entries: each holds a
/// directory fd, so this bounds those too (16 384 at most).
const LISTING_OVERHEAD: usize = 4096;

type Inode = u64;
const ROOT: Inode = fuse_backend_rs::api::filesystem::ROOT_ID;
type Handle = u64;

struct Item {
    ino: u64,
    type_: u32,
    /// NUL-terminated.
    name: Vec<u8>,
}

impl Item {
    fn name(&self) -> &[u8] {
        &self.name[..self.name.len() - 1]
    }

    fn is_dot(&self) -> bool {
        matches!(self.name(), b"." | b"..")
    }
}

/// READDIRPLUS's entry for `.` or `..`: listed as any host directory lists
/// them (`ls -a` shows them, as under runc), without a node or a
/// reference, which the guest kernel takes from its own tree.
fn dot_entry(item: &Item) -> Entry {
    // SAFETY: stat64 is plain old data; all zeroes is valid.
    let mut attr: stat64 = unsafe { std::mem::zeroed() };
    attr.st_ino = item.ino;
    attr.st_mode = libc::S_IFDIR;
    Entry {
        inode: 0,
        generation: 0,
        attr,
        attr_flags: 0,
        attr_timeout: Duration::ZERO,
        entry_timeout: Duration::ZERO,
    }
}

/// One directory handle's entries, read when the guest started at 0.
/// Offsets given to the guest are indices + 1.
struct Listing {
    items: Vec<Item>,
    bytes: usize,
    /// The directory it was read from, if it was our own fd (d_ino is then
    /// the host's inode number).
    dir: Option<ListedDir>,
}

/// A directory opened by us beneath the root, as statx saw it.
struct ListedDir {
    fd: OwnedFd,
    dev: u64,
    mnt: u64,
}

#[derive(Default)]
struct Listings {
    by_handle: HashMap<Handle, Arc<Listing>>,
    bytes: usize,
}

impl Listings {
    fn remove(&mut self, handle: Handle) {
        if let Some(old) = self.by_handle.remove(&handle) {
            self.bytes -= old.bytes;
        }
    }
}

/// The share's root, to open directories beneath it for listings.
struct Root {
    fd: OwnedFd,
    /// The root as /proc/self/fd shows it, which paths of inodes start with.
    path: PathBuf,
}

pub struct SharedFs {
    inner: PassthroughFs,
    /// None when the root cannot be opened or named: listings then come
    /// from the passthrough.
    root: Option<Root>,
    listings: Mutex<Listings>,
    stamps: Stamps,
    known: Known,
    caching: Caching,
}

impl SharedFs {
    /// `inner` must serve `root` and have been imported.
    pub fn new(inner: PassthroughFs, root: &Path, caching: Caching) -> SharedFs {
        let root = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .and_then(|fd| {
            // SAFETY: open returned a new fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let path = inner.readlinkat_proc_file(ROOT).ok()?;
            Some(Root { fd, path })
        });
        SharedFs {
            inner,
            root,
            listings: Mutex::new(Listings::default()),
            stamps: Stamps::default(),
            known: Known::default(),
            caching,
        }
    }

    /// The directory `inode` opened for reading, found by its path beneath
    /// the root and checked to be the same directory: a path can change
    /// under a guest that renames, and resolving it follows no symlink and
    /// never leaves the root. None if any of that fails.
    fn open_dir(&self, ctx: &Context, inode: Inode) -> Option<(Dir, ListedDir)> {
        let root = self.root.as_ref()?;
        let path = self.inner.readlinkat_proc_file(inode).ok()?;
        let rel = path.strip_prefix(&root.path).ok()?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let fd = openat2(root.fd.as_raw_fd(), rel, how).ok()?;
        // SAFETY: openat2 returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (st, mnt) = statx_at(&fd, c"", libc::AT_EMPTY_PATH).ok()?;
        let (want, _) = self.inner.getattr(ctx, inode, None).ok()?;
        if (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino) {
            return None;
        }
        let kept = fd.try_clone().ok()?;
        let dir = Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)).ok()?;
        Some((
            dir,
            ListedDir {
                fd: kept,
                dev: st.st_dev,
                mnt,
            },
        ))
    }

    fn listings(&self) -> std::sync::MutexGuard<'_, Listings> {
        self.listings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The listing to serve `offset` of `handle` from; None means the
    /// passthrough's positional reads serve this handle.
    fn listing(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        offset: u64,
    ) -> io::Result<Option<Arc<Listing>>> {
        if offset != 0 {
            return Ok(self.listings().by_handle.get(&handle).cloned());
        }
        self.listings().remove(handle);
        let room = LISTINGS_BUDGET.saturating_sub(self.listings().bytes);
        let Some(listing) = self.read_whole(ctx, inode, handle, room)? else {
            return Ok(None);
        };
        let listing = Arc::new(listing);
        let mut all = self.listings();
        if all.bytes + listing.bytes > LISTINGS_BUDGET {
            return Ok(None);
        }
        all.bytes += listing.bytes;
        all.by_handle.insert(handle, listing.clone());
        Ok(Some(listing))
    }

    /// Reads the directory from its start; None once it exceeds `room`.
    fn read_whole(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        room: usize,
    ) -> io::Result<Option<Listing>> {
        let mut listing = Listing {
            items: Vec::new(),
            bytes: LISTING_OVERHEAD,
            dir: None,
        };
        if let Some((mut dir, listed)) = self.open_dir(ctx, inode) {
            for entry in dir.iter() {
                let entry = entry.map_err(io::Error::from)?;
                let name = entry.file_name().to_bytes_with_nul();
                listing.bytes += ITEM_OVERHEAD + name.len();
                if listing.bytes > room {
                    return Ok(None);
                }
                listing.items.push(Item {
                    ino: entry.ino(),
                    type_: entry
                        .file_type()
                        .map_or(libc::DT_UNKNOWN, dirent_type)
                        .into(),
                    name: name.to_vec(),
                });
            }
            listing.dir = Some(listed);
            return Ok(Some(listing));
        }
        let mut offset = 0;
        loop {
            let before = listing.items.len();
            self.inner
                .readdir(ctx, inode, handle, LISTING_CHUNK, offset, &mut |e| {
                    offset = e.offset;
                    listing.bytes += ITEM_OVERHEAD + e.name.len() + 1;
                    let mut name = e.name.to_vec();
                    name.push(0);
                    listing.items.push(Item {
                        ino: e.ino,
                        type_: e.type_,
                        name,
                    });
                    Ok(1)
                })?;
            if listing.bytes > room {
                return Ok(None);
            }
            if listing.items.len() == before {
                return Ok(Some(listing));
            }
        }
    }
}

impl SharedFs {
    /// The entry READDIRPLUS gives for `item` of directory `parent`, and
    /// whether its reference is an extra one (`known.rs`): a file the guest
    /// holds under this directory, not a mount point, is found by a statx
    /// of its name; anything else by the passthrough's lookup.
    fn listed(
        &self,
        ctx: &Context,
        parent: Inode,
        listing: &Listing,
        item: &Item,
        name: &CStr,
    ) -> io::Result<(Entry, bool)> {
        if let Some(dir) = &listing.dir {
            if self.known.may_know((parent, dir.dev, item.ino)) {
                if let Ok((st, mnt)) = statx_at(&dir.fd, name, 0) {
                    if (st.st_dev, mnt) == (dir.dev, dir.mnt) {
                        if let Some(node) = self.known.take((parent, st.st_dev, st.st_ino)) {
                            let timeout = self.caching.timeout();
                            let entry = Entry {
                                inode: node,
                                generation: 0,
                                attr: st,
                                attr_flags: 0,
                                attr_timeout: timeout,
                                entry_timeout: timeout,
                            };
                            return Ok((entry, true));
                        }
                    }
                }
            }
        }
        let entry = self.inner.lookup(ctx, parent, name)?;
        self.note(parent, &entry);
        Ok((entry, false))
    }

    /// The passthrough handed `entry`, found in `parent`, to the guest.
    fn note(&self, parent: Inode, entry: &Entry) {
        if entry.inode != 0 {
            let key: Key = (parent, entry.attr.st_dev, entry.attr.st_ino);
            self.known.handed(entry.inode, key);
        }
    }

    fn noted(&self, parent: Inode, entry: io::Result<Entry>) -> io::Result<Entry> {
        if let Ok(e) = &entry {
            self.note(parent, e);
        }
        entry
    }

    /// A reference READDIRPLUS took for an entry the guest did not get.
    fn give_back(&self, ctx: &Context, node: Inode, extra: bool) {
        if node == 0 {
            return;
        }
        let n = self.known.undo(node, extra);
        if n > 0 {
            self.inner.forget(ctx, node, n);
        }
    }
}

/// statx of `name` in `dir` (with `flags`, never following a last
/// symlink), as the passthrough's lookup takes it, and the mount id.
fn statx_at(dir: &OwnedFd, name: &CStr, flags: i32) -> io::Result<(stat64, u64)> {
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `name` is NUL-terminated and `stx` has room for the one
    // struct statx the kernel writes.
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed, then filled by a successful statx: every field is set.
    let x = unsafe { stx.assume_init() };
    if x.stx_mask & libc::STATX_BASIC_STATS != libc::STATX_BASIC_STATS
        || x.stx_mask & libc::STATX_MNT_ID == 0
    {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    // SAFETY: stat64 is plain old data; all zeroes is valid.
    let mut st: stat64 = unsafe { std::mem::zeroed() };
    st.st_dev = libc::makedev(x.stx_dev_major, x.stx_dev_minor);
    st.st_ino = x.stx_ino;
    st.st_mode = x.stx_mode.into();
    st.st_nlink = x.stx_nlink.into();
    st.st_uid = x.stx_uid;
    st.st_gid = x.stx_gid;
    st.st_rdev = libc::makedev(x.stx_rdev_major, x.stx_rdev_minor);
    st.st_size = x.stx_size as i64;
    st.st_blksize = x.stx_blksize.into();
    st.st_blocks = x.stx_blocks as i64;
    st.st_atime = x.stx_atime.tv_sec;
    st.st_atime_nsec = x.stx_atime.tv_nsec.into();
    st.st_mtime = x.stx_mtime.tv_sec;
    st.st_mtime_nsec = x.stx_mtime.tv_nsec.into();
    st.st_ctime = x.stx_ctime.tv_sec;
    st.st_ctime_nsec = x.stx_ctime.tv_nsec.into();
    Ok((st, x.stx_mnt_id))
}

fn dirent_type(t: Type) -> u8 {
    match t {
        Type::Fifo => libc::DT_FIFO,
        Type::CharacterDevice => libc::DT_CHR,
        Type::Directory => libc::DT_DIR,
        Type::BlockDevice => libc::DT_BLK,
        Type::File => libc::DT_REG,
        Type::Symlink => libc::DT_LNK,
        Type::Socket => libc::DT_SOCK,
    }
}

/// Entries were added: a later error is reported by ending the reply early
/// (the guest asks again), as the kernel cannot take both.
fn end(added: bool, e: io::Error) -> io::Result<()> {
    if added {
        Ok(())
    } else {
        Err(e)
    }
}

/// Methods the passthrough serves unchanged.
macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) $(-> $ret:ty)?;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
            self.inner.$name($($arg),*)
        })*
    };
}

impl FileSystem for SharedFs {
    type Inode = Inode;
    type Handle = Handle;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        Ok(self.inner.init(capable)? | EXTRA_OPTIONS)
    }

    /// The passthrough emulates a close on each FLUSH (dup and close the
    /// host fd), which matters only for POSIX locks held by this process,
    /// and it holds none (locks stay in the guest: POSIX_LOCKS is not
    /// negotiated). ENOSYS makes the guest stop sending FLUSH at all: one
    /// synchronous round trip less for every close(2) in the container.
    fn flush(&self, _ctx: &Context, _inode: Inode, _handle: Handle, _owner: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    fn open(
        &self,
        ctx: &Context,
        inode: Inode,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<Handle>, OpenOptions, Option<u32>)> {
        let (handle, mut opts, passthrough) = self.inner.open(ctx, inode, flags, fuse_flags)?;
        if let Ok((st, _)) = self.inner.getattr(ctx, inode, handle) {
            if self.stamps.unchanged_since_noted(inode, &st) {
                opts |= OpenOptions::KEEP_CACHE;
            }
        }
        Ok((handle, opts, passthrough))
    }

    /// In the container's own tree an absent name is remembered by the
    /// guest too (a negative entry): PATH and library searches, and the
    /// lookup before every create, ask the host once per name instead of
    /// every time.
    fn lookup(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<Entry> {
        match self.noted(parent, self.inner.lookup(ctx, parent, name)) {
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT) && self.caching == Caching::Private =>
            {
                Ok(Entry {
                    inode: 0,
                    generation: 0,
                    // SAFETY: stat64 is plain old data; all zeroes is valid.
                    attr: unsafe { std::mem::zeroed() },
                    attr_flags: 0,
                    attr_timeout: Duration::ZERO,
                    entry_timeout: self.caching.timeout(),
                })
            }
            other => other,
        }
    }

    /// In the container's own tree what the guest wrote is what it has
    /// cached: noting the stamp at release keeps its pages at the next open
    /// (a file written then read back is not read over FUSE again). Only
    /// there: elsewhere a host change made while the guest had the file open
    /// would pass for the guest's own.
    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        ctx: &Context,
        inode: Inode,
        flags: u32,
        handle: Handle,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        if self.caching == Caching::Private {
            if let Ok((st, _)) = self.inner.getattr(ctx, inode, Some(handle)) {
                self.stamps.note(inode, &st);
            }
        }
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
    }

    fn releasedir(
        &self,
        ctx: &Context,
        inode: Inode,
        flags: u32,
        handle: Handle,
    ) -> io::Result<()> {
        self.listings().remove(handle);
        self.inner.releasedir(ctx, inode, flags, handle)
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let Some(listing) = self.listing(ctx, inode, handle, offset)? else {
            return self
                .inner
                .readdir(ctx, inode, handle, size, offset, add_entry);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, item) in listing.items.iter().enumerate().skip(start) {
            let entry = DirEntry {
                ino: item.ino,
                offset: i as u64 + 1,
                type_: item.type_,
                name: item.name(),
            };
            match add_entry(entry) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return end(i > start, e),
            }
        }
        Ok(())
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let Some(listing) = self.listing(ctx, inode, handle, offset)? else {
            return self
                .inner
                .readdirplus(ctx, inode, handle, size, offset, &mut |d, e| {
                    let r = add_entry(d, e);
                    if matches!(r, Ok(n) if n > 0) {
                        self.note(inode, &e);
                    }
                    r
                });
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, item) in listing.items.iter().enumerate().skip(start) {
            let Ok(cname) = CStr::from_bytes_with_nul(&item.name) else {
                continue;
            };
            // Each entry handed over carries a lookup reference the guest
            // later forgets; one that does not fit must give it back.
            let found = if item.is_dot() {
                Ok((dot_entry(item), false))
            } else {
                self.listed(ctx, inode, &listing, item, cname)
            };
            let (entry, extra) = match found {
                Ok(found) => found,
                // Removed since the listing was read.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return end(i > start, e),
            };
            let node = entry.inode;
            let dir_entry = DirEntry {
                ino: entry.attr.st_ino,
                offset: i as u64 + 1,
                type_: item.type_,
                name: item.name(),
            };
            match add_entry(dir_entry, entry) {
                Ok(0) => {
                    self.give_back(ctx, node, extra);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    self.give_back(ctx, node, extra);
                    return end(i > start, e);
                }
            }
        }
        Ok(())
    }

    /// Extra references (`known.rs`) are the guest's alone: only the rest
    /// reach the passthrough.
    fn forget(&self, ctx: &Context, inode: Inode, count: u64) {
        let n = self.known.forget(inode, count);
        if n > 0 {
            self.inner.forget(ctx, inode, n);
        }
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(Inode, u64)>) {
        let requests = requests
            .into_iter()
            .map(|(inode, count)| (inode, self.known.forget(inode, count)))
            .filter(|&(_, n)| n > 0)
            .collect();
        self.inner.batch_forget(ctx, requests);
    }

    fn destroy(&self) {
        self.known.clear();
        self.inner.destroy();
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.noted(parent, self.inner.mkdir(ctx, parent, name, mode, umask))
    }

    fn create(
        &self,
        ctx: &Context,
        parent: Inode,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<Handle>, OpenOptions, Option<u32>)> {
        let created = self.inner.create(ctx, parent, name, args)?;
        self.note(parent, &created.0);
        Ok(created)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.noted(
            parent,
            self.inner.mknod(ctx, parent, name, mode, rdev, umask),
        )
    }

    fn link(
        &self,
        ctx: &Context,
        inode: Inode,
        newparent: Inode,
        newname: &CStr,
    ) -> io::Result<Entry> {
        self.noted(newparent, self.inner.link(ctx, inode, newparent, newname))
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.noted(parent, self.inner.symlink(ctx, linkname, parent, name))
    }

    forward! {
        fn statfs(&self, ctx: &Context, inode: Inode) -> io::Result<statvfs64>;
        fn opendir(&self, ctx: &Context, inode: Inode, flags: u32)
            -> io::Result<(Option<Handle>, OpenOptions)>;
        fn rmdir(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<()>;
        fn unlink(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<()>;
        fn read(&self, ctx: &Context, inode: Inode, handle: Handle, w: &mut dyn ZeroCopyWriter,
            size: u32, offset: u64, lock_owner: Option<u64>, flags: u32) -> io::Result<usize>;
        fn write(&self, ctx: &Context, inode: Inode, handle: Handle, r: &mut dyn ZeroCopyReader,
            size: u32, offset: u64, lock_owner: Option<u64>, delayed_write: bool, flags: u32,
            fuse_flags: u32) -> io::Result<usize>;
        fn getattr(&self, ctx: &Context, inode: Inode, handle: Option<Handle>)
            -> io::Result<(stat64, Duration)>;
        fn setattr(&self, ctx: &Context, inode: Inode, attr: stat64, handle: Option<Handle>,
            valid: SetattrValid) -> io::Result<(stat64, Duration)>;
        fn rename(&self, ctx: &Context, olddir: Inode, oldname: &CStr, newdir: Inode,
            newname: &CStr, flags: u32) -> io::Result<()>;
        fn readlink(&self, ctx: &Context, inode: Inode) -> io::Result<Vec<u8>>;
        fn fsync(&self, ctx: &Context, inode: Inode, datasync: bool, handle: Handle)
            -> io::Result<()>;
        fn fsyncdir(&self, ctx: &Context, inode: Inode, datasync: bool, handle: Handle)
            -> io::Result<()>;
        fn access(&self, ctx: &Context, inode: Inode, mask: u32) -> io::Result<()>;
        fn setxattr(&self, ctx: &Context, inode: Inode, name: &CStr, value: &[u8], flags: u32)
            -> io::Result<()>;
        fn getxattr(&self, ctx: &Context, inode: Inode, name: &CStr, size: u32)
            -> io::Result<GetxattrReply>;
        fn listxattr(&self, ctx: &Context, inode: Inode, size: u32) -> io::Result<ListxattrReply>;
        fn removexattr(&self, ctx: &Context, inode: Inode, name: &CStr) -> io::Result<()>;
        fn fallocate(&self, ctx: &Context, inode: Inode, handle: Handle, mode: u32, offset: u64,
            length: u64) -> io::Result<()>;
        fn lseek(&self, ctx: &Context, inode: Inode, handle: Handle, offset: u64, whence: u32)
            -> io::Result<u64>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuse_backend_rs::passthrough::Config;

    fn shared(root: &Path) -> SharedFs {
        let inner = PassthroughFs::new(Config {
            root_dir: root.to_str().unwrap().to_string(),
            do_import: true,
            ..Default::default()
        })
        .unwrap();
        inner.import().unwrap();
        let fs = SharedFs::new(inner, root, Caching::Shared);
        fs.init(FsOptions::empty()).unwrap();
        fs
    }

    fn name(s: &str) -> std::ffi::CString {
        std::ffi::CString::new(s).unwrap()
    }

    /// READDIRPLUS of directory `dir`: (name, node, attr's ino) of each entry.
    fn plus(fs: &SharedFs, dir: Inode) -> Vec<(String, Inode, u64)> {
        let ctx = Context::default();
        let (handle, _) = fs.opendir(&ctx, dir, libc::O_RDONLY as u32).unwrap();
        let mut all = Vec::new();
        fs.readdirplus(&ctx, dir, handle.unwrap(), 1 << 20, 0, &mut |d, e| {
            all.push((
                String::from_utf8(d.name.to_vec()).unwrap(),
                e.inode,
                e.attr.st_ino,
            ));
            Ok(1)
        })
        .unwrap();
        let dots = all.iter().filter(|e| e.1 == 0).count();
        assert_eq!(dots, 2, ". and .., without a node");
        all.retain(|e| e.1 != 0);
        all.sort();
        all
    }

    /// A share holding the directory `d` with the empty files `names`, and
    /// d's node.
    fn with_dir(names: &[&str]) -> (tempfile::TempDir, SharedFs, Inode) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("d")).unwrap();
        for n in names {
            std::fs::write(d.path().join("d").join(n), b"").unwrap();
        }
        let fs = shared(d.path());
        let dir = fs
            .lookup(&Context::default(), ROOT, &name("d"))
            .unwrap()
            .inode;
        (d, fs, dir)
    }

    /// Whether the passthrough still holds `node`.
    fn alive(fs: &SharedFs, node: Inode) -> bool {
        fs.inner.getattr(&Context::default(), node, None).is_ok()
    }

    /// A file the guest holds is listed with its node, as an extra
    /// reference; the passthrough drops the node exactly when the guest has
    /// forgotten every reference, extra ones included.
    #[test]
    fn listings_hand_out_held_files_again_without_dropping_them_early() {
        use std::os::unix::fs::MetadataExt;
        let ctx = Context::default();
        let (d, fs, dir) = with_dir(&["held", "cold"]);
        let held = fs.lookup(&ctx, dir, &name("held")).unwrap().inode;
        let listed = plus(&fs, dir);
        let ino = |n: &str| std::fs::metadata(d.path().join("d").join(n)).unwrap().ino();
        assert_eq!(listed.len(), 2);
        let cold = listed[0].1;
        assert_eq!(listed[0], ("cold".into(), cold, ino("cold")));
        assert_eq!(listed[1], ("held".into(), held, ino("held")));
        assert_eq!(fs.known.extra(held), 1, "found by statx, not looked up");
        assert_eq!(fs.known.extra(cold), 0, "looked up");
        // held: one reference from LOOKUP, one extra from the listing.
        fs.forget(&ctx, held, 1);
        assert!(alive(&fs, held));
        fs.forget(&ctx, held, 1);
        assert!(!alive(&fs, held));
        fs.batch_forget(&ctx, vec![(cold, 1)]);
        assert!(!alive(&fs, cold));
    }

    /// Only the same file under the same directory is found again: a name
    /// the host replaced is looked up, and a file renamed on the host keeps
    /// its node under its new name.
    #[test]
    fn listings_find_again_only_the_same_file() {
        let ctx = Context::default();
        let (d, fs, dir) = with_dir(&["a", "b"]);
        let a = fs.lookup(&ctx, dir, &name("a")).unwrap().inode;
        let b = fs.lookup(&ctx, dir, &name("b")).unwrap().inode;
        std::fs::remove_file(d.path().join("d/a")).unwrap();
        std::fs::write(d.path().join("d/a"), b"new").unwrap();
        std::fs::rename(d.path().join("d/b"), d.path().join("d/c")).unwrap();
        let listed = plus(&fs, dir);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].0, "a");
        assert_ne!(listed[0].1, a, "a new file, a new node");
        assert_eq!(fs.known.extra(listed[0].1), 0);
        assert_eq!(listed[1].0, "c");
        assert_eq!(listed[1].1, b);
        assert_eq!(fs.known.extra(b), 1);
    }

    /// An entry the guest's buffer cannot take gives its reference back:
    /// an extra one to the table, a looked-up one to the passthrough.
    #[test]
    fn entries_that_do_not_fit_give_their_reference_back() {
        let ctx = Context::default();
        let (_d, fs, dir) = with_dir(&["held", "cold"]);
        let held = fs.lookup(&ctx, dir, &name("held")).unwrap().inode;
        let (handle, _) = fs.opendir(&ctx, dir, libc::O_RDONLY as u32).unwrap();
        let handle = handle.unwrap();
        // Each entry in turn (., .., held, cold) refused as the first one.
        let mut refused = Vec::new();
        for offset in 0..4 {
            fs.readdirplus(&ctx, dir, handle, 1 << 20, offset, &mut |_, e| {
                refused.push(e.inode);
                Ok(0)
            })
            .unwrap();
        }
        assert_eq!(refused.len(), 4);
        assert!(refused.contains(&held));
        assert_eq!(fs.known.extra(held), 0);
        fs.forget(&ctx, held, 1);
        assert!(!alive(&fs, held), "no reference left behind");
        for node in refused.into_iter().filter(|&n| n != held && n != 0) {
            assert!(!alive(&fs, node), "the looked-up one went back");
        }
    }
}
