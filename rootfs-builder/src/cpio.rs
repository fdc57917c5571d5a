//! A minimal, deterministic cpio "newc" writer: the initramfs format the
//! kernel unpacks. Entries are written in the order given; callers sort.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive, without a leading '/'.
    pub path: String,
    pub mode: u32,
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
}

impl Entry {
    fn type_bits(&self) -> u32 {
        match self.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
        }
    }

    fn data(&self) -> &[u8] {
        match &self.kind {
            Kind::File(d) => d,
            Kind::Symlink(t) => t.as_bytes(),
            _ => &[],
        }
    }
}

fn pad4(w: &mut impl Write, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..pad])
}

struct Hdr<'a> {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &'a str,
}

fn header(w: &mut impl Write, h: Hdr<'_>) -> io::Result<()> {
    let namesize = h.name.len() + 1;
    // mtime is always 0: the same inputs give the same bytes.
    let fields = [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        0,
        h.size as u32,
        0,
        0,
        h.rdev.0,
        h.rdev.1,
        namesize as u32,
        0,
    ];
    let mut out = String::with_capacity(110);
    out.push_str(MAGIC);
    for f in fields {
        out.push_str(&format!("{f:08x}"));
    }
    w.write_all(out.as_bytes())?;
    w.write_all(h.name.as_bytes())?;
    w.write_all(&[0])?;
    pad4(w, 110 + namesize)
}

/// Writes one entry with inode number `ino`.
pub fn write_entry(w: &mut impl Write, ino: u32, e: &Entry) -> io::Result<()> {
    let data = e.data();
    if data.len() > u32::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is too large for cpio", e.path),
        ));
    }
    let rdev = match e.kind {
        Kind::CharDev { major, minor } => (major, minor),
        _ => (0, 0),
    };
    let hdr = Hdr {
        ino,
        mode: e.type_bits() | (e.mode & 0o7777),
        uid: e.uid,
        gid: e.gid,
        nlink: if matches!(e.kind, Kind::Dir) { 2 } else { 1 },
        size: data.len(),
        rdev,
        name: &e.path,
    };
    header(w, hdr)?;
    w.write_all(data)?;
    pad4(w, data.len())
}

pub fn write_trailer(w: &mut impl Write) -> io::Result<()> {
    let hdr = Hdr {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        size: 0,
        rdev: (0, 0),
        name: TRAILER,
    };
    header(w, hdr)
}

/// Writes the archive: every entry, then the trailer.
pub fn write(w: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    for (i, e) in entries.iter().enumerate() {
        write_entry(w, i as u32 + 1, e)?;
    }
    write_trailer(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_newc() {
        let mut out = Vec::new();
        let entries = [Entry {
            path: "init".into(),
            mode: 0o755,
            kind: Kind::File(b"abc".to_vec()),
            uid: 0,
            gid: 0,
        }];
        write(&mut out, &entries).unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // header(110) + "init\0"(5) → 115, padded to 116; data 3 → 4; trailer.
        assert_eq!(&out[116..119], b"abc");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(&text[14..22], "000081ed", "regular file, mode 0755");
    }
}
