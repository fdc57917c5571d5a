//! The guest's lookup references, so that a directory listing can hand one
//! out again without the passthrough's lookup.
//!
//! READDIRPLUS gives the guest a lookup reference and the attributes of
//! every entry. The passthrough's lookup costs three system calls per entry
//! (an O_PATH open, statx, close), also for a file the guest already holds,
//! and a listing of a directory the guest has just filled (`ls -l` after
//! creating files) holds nothing else. A file already handed out under the
//! same directory is found again by its device and inode number, which a
//! `statx` of the name gives: one system call.
//!
//! The passthrough counts the references it handed out and drops a node
//! when the guest forgets them all. References handed out here are
//! *extra*: the passthrough never saw them, so they are taken off the
//! guest's FORGETs before the rest reaches it. An extra reference is handed
//! out only while the passthrough holds one of its own for the guest, and a
//! FORGET takes the extra ones first, so the passthrough never drops a node
//! the guest still holds. A node number stands for one host file for the
//! passthrough's lifetime, so a stale key finds nothing held, never another
//! file.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// A file as a listing finds it: (directory node, device, inode number).
pub type Key = (u64, u64, u64);

/// Keys remembered at most; past that they start afresh (they are only a
/// way to find a node, the counts live in `nodes`). A node's last key goes
/// with it; others (a file also listed under another name) stay until then.
const MAX_KEYS: usize = 1 << 18;

struct Held {
    /// References the guest holds, extra ones included.
    all: u64,
    /// Of those, the ones the passthrough never saw.
    extra: u64,
    /// The last key it was handed out under.
    key: Key,
}

#[derive(Default)]
struct Table {
    nodes: HashMap<u64, Held>,
    keys: HashMap<Key, u64>,
}

impl Table {
    /// Drops `node` once the guest holds no reference to it.
    fn drop_if_unheld(&mut self, node: u64) {
        let Some(held) = self.nodes.get(&node) else {
            return;
        };
        if held.all > 0 {
            return;
        }
        if self.keys.get(&held.key) == Some(&node) {
            self.keys.remove(&held.key);
        }
        self.nodes.remove(&node);
    }
}

#[derive(Default)]
pub struct Known {
    table: Mutex<Table>,
}

impl Known {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The passthrough handed `node` to the guest, found as `key`.
    pub fn handed(&self, node: u64, key: Key) {
        let mut t = self.table();
        let held = t.nodes.entry(node).or_insert(Held {
            all: 0,
            extra: 0,
            key,
        });
        held.all += 1;
        held.key = key;
        if t.keys.len() >= MAX_KEYS {
            t.keys.clear();
        }
        t.keys.insert(key, node);
    }

    /// Whether a file could be known as `key`: worth a statx to find out.
    pub fn may_know(&self, key: Key) -> bool {
        self.table().keys.contains_key(&key)
    }

    /// An extra reference to the node known as `key`, if the guest holds
    /// one the passthrough counts.
    pub fn take(&self, key: Key) -> Option<u64> {
        let mut t = self.table();
        let node = *t.keys.get(&key)?;
        let held = t.nodes.get_mut(&node)?;
        if held.all <= held.extra {
            return None;
        }
        held.all += 1;
        held.extra += 1;
        Some(node)
    }

    /// A reference counted by `take` (extra) or `handed` that never reached
    /// the guest; returns how many the passthrough must forget.
    pub fn undo(&self, node: u64, extra: bool) -> u64 {
        let mut t = self.table();
        let Some(held) = t.nodes.get_mut(&node) else {
            return u64::from(!extra);
        };
        held.all = held.all.saturating_sub(1);
        if extra {
            held.extra = held.extra.saturating_sub(1);
        }
        t.drop_if_unheld(node);
        u64::from(!extra)
    }

    /// The guest forgets `count` references to `node`; returns how many of
    /// them the passthrough must forget.
    pub fn forget(&self, node: u64, count: u64) -> u64 {
        let mut t = self.table();
        let Some(held) = t.nodes.get_mut(&node) else {
            return count;
        };
        let extra = held.extra.min(count);
        held.extra -= extra;
        held.all = held.all.saturating_sub(count);
        t.drop_if_unheld(node);
        count - extra
    }

    pub fn clear(&self) {
        *self.table() = Table::default();
    }

    #[cfg(test)]
    pub fn extra(&self, node: u64) -> u64 {
        self.table().nodes.get(&node).map_or(0, |h| h.extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_references_only_while_the_passthrough_holds_one() {
        let k = Known::default();
        let key = (1, 2, 3);
        assert_eq!(k.take(key), None, "never handed");
        k.handed(7, key);
        assert_eq!(k.take(key), Some(7));
        assert_eq!(k.take(key), Some(7));
        // Three held, two extra: the first two forgotten are the extra ones.
        assert_eq!(k.forget(7, 1), 0);
        assert_eq!(k.forget(7, 1), 0);
        assert_eq!(k.take(key), Some(7), "the passthrough still holds one");
        assert_eq!(k.forget(7, 2), 1, "the last one reaches the passthrough");
        assert_eq!(k.take(key), None, "nothing held any more");
        assert!(!k.may_know(key), "its key went with it");
    }

    #[test]
    fn a_stale_key_finds_nothing_held() {
        let k = Known::default();
        k.handed(7, (1, 2, 3));
        // The same file found under another name too, then forgotten.
        k.handed(7, (4, 2, 3));
        assert_eq!(k.forget(7, 2), 2);
        assert!(k.may_know((1, 2, 3)), "not its last key: stays");
        assert_eq!(k.take((1, 2, 3)), None);
    }

    #[test]
    fn forgetting_more_than_held_never_leaves_extra_references() {
        let k = Known::default();
        k.handed(7, (1, 2, 3));
        assert_eq!(k.take((1, 2, 3)), Some(7));
        assert_eq!(k.forget(7, 100), 99);
        assert_eq!(k.extra(7), 0);
        assert_eq!(k.take((1, 2, 3)), None);
        // Unknown nodes pass through unchanged.
        assert_eq!(k.forget(8, 5), 5);
    }

    #[test]
    fn undone_references_give_back_what_they_took() {
        let k = Known::default();
        k.handed(7, (1, 2, 3));
        assert_eq!(k.take((1, 2, 3)), Some(7));
        assert_eq!(k.undo(7, true), 0, "an extra one is ours alone");
        assert_eq!(k.extra(7), 0);
        k.handed(7, (1, 2, 3));
        assert_eq!(k.undo(7, false), 1, "a passthrough one goes back to it");
        assert_eq!(k.forget(7, 1), 1);
        assert_eq!(k.take((1, 2, 3)), None);
    }
}
