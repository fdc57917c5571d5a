//! When the guest may keep a file's cached pages across an open.
//!
//! Under the `auto` policy the passthrough never sets FOPEN_KEEP_CACHE, so
//! the guest drops a file's page cache at every open: each read after a
//! reopen, and each exec of a program, goes over FUSE again (and mapped
//! pages of running programs are unmapped and fault in again). The host
//! file's stamp (inode, size, mtime, ctime) is noted at each open; an open
//! that finds the stamp of the previous one lets the guest keep its pages,
//! since everything it cached since that open was read from the file as it
//! still is. Any change in between, the guest's own writes included, moves
//! ctime, and the guest drops its pages as before. (In a shared tree not
//! noted at release: a host change while the guest had the file open would
//! be taken for the guest's own and leave stale pages. The container's own
//! rootfs notes it at release too, see `Caching::Private`.) The one blind spot is the
//! timestamp granularity of the host file system: a change of the same
//! size within the same clock tick as the previous one is not seen, as
//! with any mtime-based cache (NFS without change attributes).

use fuse_backend_rs::abi::fuse_abi::stat64;
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept at most; past that the table starts afresh (the guest then
/// rereads files once, nothing goes stale).
const MAX_ENTRIES: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(st: &stat64) -> Stamp {
        Stamp {
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

#[derive(Default)]
pub struct Stamps {
    by_inode: Mutex<HashMap<u64, Stamp>>,
}

impl Stamps {
    /// At an open: whether the guest's pages of `inode` are still the
    /// file's; notes the stamp either way.
    pub fn unchanged_since_noted(&self, inode: u64, st: &stat64) -> bool {
        let now = Stamp::of(st);
        let mut m = self.by_inode.lock().unwrap_or_else(|p| p.into_inner());
        let same = m.get(&inode) == Some(&now);
        Self::put(&mut m, inode, now);
        same
    }

    /// Notes `inode`'s stamp outside an open (see `SharedFs::release`).
    pub fn note(&self, inode: u64, st: &stat64) {
        let mut m = self.by_inode.lock().unwrap_or_else(|p| p.into_inner());
        Self::put(&mut m, inode, Stamp::of(st));
    }

    fn put(m: &mut HashMap<u64, Stamp>, inode: u64, s: Stamp) {
        if m.len() >= MAX_ENTRIES && !m.contains_key(&inode) {
            m.clear();
        }
        m.insert(inode, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(size: i64, ctime: i64) -> stat64 {
        // SAFETY: stat64 is plain old data; all zeroes is a valid value.
        let mut s: stat64 = unsafe { std::mem::zeroed() };
        s.st_ino = 7;
        s.st_size = size;
        s.st_ctime = ctime;
        s
    }

    #[test]
    fn only_an_unchanged_file_keeps_its_pages() {
        let s = Stamps::default();
        assert!(!s.unchanged_since_noted(1, &st(10, 100)), "first open");
        assert!(s.unchanged_since_noted(1, &st(10, 100)));
        // Changed since the last open (by anyone), then unchanged again.
        assert!(!s.unchanged_since_noted(1, &st(20, 101)));
        assert!(s.unchanged_since_noted(1, &st(20, 101)));
        assert!(!s.unchanged_since_noted(1, &st(20, 102)));
        assert!(!s.unchanged_since_noted(2, &st(20, 102)), "another inode");
    }

    #[test]
    fn a_stamp_noted_at_release_keeps_the_pages() {
        let s = Stamps::default();
        assert!(!s.unchanged_since_noted(1, &st(10, 100)));
        // The guest wrote (ctime moved) and released the file.
        s.note(1, &st(20, 101));
        assert!(s.unchanged_since_noted(1, &st(20, 101)));
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Stamps::default();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            s.unchanged_since_noted(i, &st(1, 1));
        }
        assert!(s.by_inode.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
