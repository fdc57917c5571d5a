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

use super::keep_cache::Stamps;
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

type Inode = u64;
const ROOT: Inode = fuse_backend_rs::api::filesystem::ROOT_ID;
type Handle = u64;

struct Item {
    ino: u64,
    type_: u32,
    name: Vec<u8>,
}

/// One directory handle's entries, read when the guest started at 0.
/// Offsets given to the guest are indices + 1.
struct Listing {
    items: Vec<Item>,
    bytes: usize,
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
            caching,
        }
    }

    /// The directory `inode` opened for reading, found by its path beneath
    /// the root and checked to be the same directory: a path can change
    /// under a guest that renames, and resolving it follows no symlink and
    /// never leaves the root. None if any of that fails.
    fn open_dir(&self, ctx: &Context, inode: Inode) -> Option<Dir> {
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
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
        let (want, _) = self.inner.getattr(ctx, inode, None).ok()?;
        if (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino) {
            return None;
        }
        Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)).ok()
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
            bytes: 0,
        };
        if let Some(mut dir) = self.open_dir(ctx, inode) {
            for entry in dir.iter() {
                let entry = entry.map_err(io::Error::from)?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
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
            return Ok(Some(listing));
        }
        let mut offset = 0;
        loop {
            let before = listing.items.len();
            self.inner
                .readdir(ctx, inode, handle, LISTING_CHUNK, offset, &mut |e| {
                    offset = e.offset;
                    listing.bytes += ITEM_OVERHEAD + e.name.len();
                    listing.items.push(Item {
                        ino: e.ino,
                        type_: e.type_,
                        name: e.name.to_vec(),
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
        match self.inner.lookup(ctx, parent, name) {
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
                name: &item.name,
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
                .readdirplus(ctx, inode, handle, size, offset, add_entry);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, item) in listing.items.iter().enumerate().skip(start) {
            let mut name = item.name.clone();
            name.push(0);
            let Ok(cname) = CStr::from_bytes_with_nul(&name) else {
                continue;
            };
            // Each entry handed over carries a lookup reference the guest
            // later forgets; one that does not fit must give it back.
            let entry = match self.inner.lookup(ctx, inode, cname) {
                Ok(entry) => entry,
                // Removed since the listing was read.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return end(i > start, e),
            };
            let node = entry.inode;
            let dir_entry = DirEntry {
                ino: entry.attr.st_ino,
                offset: i as u64 + 1,
                type_: item.type_,
                name: &item.name,
            };
            match add_entry(dir_entry, entry) {
                Ok(0) => {
                    self.inner.forget(ctx, node, 1);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    self.inner.forget(ctx, node, 1);
                    return end(i > start, e);
                }
            }
        }
        Ok(())
    }

    forward! {
        fn destroy(&self);
        fn statfs(&self, ctx: &Context, inode: Inode) -> io::Result<statvfs64>;
        fn forget(&self, ctx: &Context, inode: Inode, count: u64);
        fn batch_forget(&self, ctx: &Context, requests: Vec<(Inode, u64)>);
        fn opendir(&self, ctx: &Context, inode: Inode, flags: u32)
            -> io::Result<(Option<Handle>, OpenOptions)>;
        fn mkdir(&self, ctx: &Context, parent: Inode, name: &CStr, mode: u32, umask: u32)
            -> io::Result<Entry>;
        fn rmdir(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<()>;
        fn create(&self, ctx: &Context, parent: Inode, name: &CStr, args: CreateIn)
            -> io::Result<(Entry, Option<Handle>, OpenOptions, Option<u32>)>;
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
        fn mknod(&self, ctx: &Context, parent: Inode, name: &CStr, mode: u32, rdev: u32,
            umask: u32) -> io::Result<Entry>;
        fn link(&self, ctx: &Context, inode: Inode, newparent: Inode, newname: &CStr)
            -> io::Result<Entry>;
        fn symlink(&self, ctx: &Context, linkname: &CStr, parent: Inode, name: &CStr)
            -> io::Result<Entry>;
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
