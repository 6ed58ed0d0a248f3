//! Tree → newc cpio bytes: one entry per path in the tree's walk order, inode numbers and link
//! counts computed from the tree, data of each hardlink group written once.
//!
//! Each entry is planned ([`planned`]: name, inode number, nlink, whether it carries the data)
//! and written ([`write()`]) in walk order, holding no list of every entry; [`plan`] collects
//! the same plan as plain data for the EIF ramdisk and for tests.

use super::format::{self, Header, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG};
use crate::tree::{ContentRef, Kind, Tree};
use std::collections::HashMap;
use std::io::{self, Write};

/// What follows an entry's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'t> {
    None,
    /// A symlink's target.
    Target(&'t [u8]),
    /// A file's contents (the last path of a hardlink group, or a file with one path).
    Content(ContentRef),
}

/// One planned archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned<'t> {
    /// `.` for the root, else the tree path (no leading `/` or `./`).
    pub name: &'t [u8],
    pub header: Header,
    pub body: Body<'t>,
}

fn too_big(path: &[u8], what: &str, v: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what} {v} does not fit in newc's 32-bit field", String::from_utf8_lossy(if path.is_empty() { b"." } else { path })),
    )
}

fn u32_field(path: &[u8], what: &str, v: u64) -> io::Result<u32> {
    u32::try_from(v).map_err(|_| too_big(path, what, v))
}

/// Lay out the archive: every entry's header and body, in walk order.
///
/// - Inode numbers count from 1 in walk order; all paths of one tree inode share the number
///   the first of them got.
/// - nlink: a directory has 2 + its subdirectories (as on a real file system); a file has
///   the size of its hardlink group; everything else 1.
/// - The data of a hardlink group goes with its last path in walk order and the others have
///   size 0: what GNU cpio writes and expects (it defers size-0 links until the data comes),
///   and what the kernel accepts (it creates the first path, links later ones to it, and
///   writes whatever data a later entry carries into the shared inode).
pub fn plan(tree: &Tree, sde: u64) -> io::Result<Vec<Planned<'_>>> {
    planned(tree, sde).collect()
}

/// [`plan`] one entry at a time, in walk order, so that writing an archive holds no
/// per-entry list: only the hardlink groups and the directories with subdirectories are
/// counted first (a file with one path gets its inode number and data where it stands).
pub fn planned(tree: &Tree, sde: u64) -> impl Iterator<Item = io::Result<Planned<'_>>> {
    // Per tree inode that has (or had) several paths: how many, and the index of the last
    // one in walk order.
    let mut groups: HashMap<u64, (u32, usize)> = HashMap::new();
    // Subdirectory counts per directory path.
    let mut subdirs: HashMap<&[u8], u32> = HashMap::new();
    for (i, (path, node)) in tree.walk().enumerate() {
        match node.kind {
            Kind::File { inode, .. } if tree.maybe_linked(inode) => {
                let g = groups.entry(inode).or_insert((0, i));
                g.0 += 1;
                g.1 = i;
            }
            Kind::Dir if !path.is_empty() => {
                let parent = path.iter().rposition(|b| *b == b'/').map(|p| &path[..p]).unwrap_or(b"");
                *subdirs.entry(parent).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    // Inode numbers given to hardlink groups so far.
    let mut inos: HashMap<u64, u32> = HashMap::new();
    let mut next_ino: u32 = 1;
    tree.walk().enumerate().map(move |(i, (path, node))| {
        let m = &node.meta;
        let mut h = Header {
            ino: 0,
            mode: m.mode & 0o7777,
            uid: u32_field(path, "uid", m.uid)?,
            gid: u32_field(path, "gid", m.gid)?,
            nlink: 1,
            mtime: u32_field(path, "mtime", m.clamped_mtime(sde))?,
            ..Header::default()
        };
        let mut fresh_ino = true;
        let body = match &node.kind {
            Kind::Dir => {
                h.mode |= S_IFDIR;
                h.nlink = 2 + subdirs.get(path).copied().unwrap_or(0);
                Body::None
            }
            Kind::File { content, inode } => {
                h.mode |= S_IFREG;
                let (count, last) = groups.get(inode).copied().unwrap_or((1, i));
                h.nlink = count;
                if count > 1 {
                    match inos.get(inode) {
                        Some(&n) => {
                            h.ino = n;
                            fresh_ino = false;
                        }
                        None => {
                            inos.insert(*inode, next_ino);
                        }
                    }
                }
                if last == i {
                    h.filesize = u32_field(path, "file size", content.len)?;
                    Body::Content(*content)
                } else {
                    Body::None
                }
            }
            Kind::Symlink { target } => {
                h.mode |= S_IFLNK;
                h.filesize = u32_field(path, "symlink target length", target.len() as u64)?;
                Body::Target(target)
            }
            Kind::Char { major, minor } => {
                h.mode |= S_IFCHR;
                (h.rdevmajor, h.rdevminor) = (*major, *minor);
                Body::None
            }
            Kind::Block { major, minor } => {
                h.mode |= S_IFBLK;
                (h.rdevmajor, h.rdevminor) = (*major, *minor);
                Body::None
            }
            Kind::Fifo => {
                h.mode |= S_IFIFO;
                Body::None
            }
        };
        if fresh_ino {
            h.ino = next_ino;
            next_ino = next_ino.checked_add(1).ok_or_else(|| too_big(path, "inode count", u64::from(u32::MAX) + 1))?;
        }
        let name: &[u8] = if path.is_empty() { b"." } else { path };
        Ok(Planned { name, header: h, body })
    })
}

/// Write the tree as one uncompressed newc archive, ending with `TRAILER!!!` (no padding to
/// 512 bytes: nothing needs it and the kernel skips none). Returns the bytes written.
/// File contents are read from the tree's spill files ([`Tree::open`]).
pub fn write(tree: &Tree, sde: u64, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut w = crate::emit::Counter { inner: w, n: 0 };
    for e in planned(tree, sde) {
        let e = e?;
        format::write_header(&mut w, &e.header, e.name)?;
        let len = match e.body {
            Body::None => 0,
            Body::Target(t) => {
                w.write_all(t)?;
                t.len() as u64
            }
            Body::Content(c) => {
                crate::fsutil::copy_exact(&mut tree.open(&c), &mut w, c.len, &mut buf).map_err(|err| {
                    io::Error::new(err.kind(), format!("{}: {err}", String::from_utf8_lossy(e.name)))
                })?;
                c.len
            }
        };
        w.write_all(&[0u8; 3][..format::pad4(len)])?;
        debug_assert_eq!(w.n % 4, 0);
    }
    format::write_trailer(&mut w)?;
    Ok(w.n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::cpio::{debug, format};
    use crate::tree::testutil::tree;

    fn fixture() -> Tree {
        tree(&[
            ("bin", "dir", 0o755, 5),
            ("bin/busybox", "file:#!busybox\n", 0o4755, 100),
            ("bin/sh", "link:busybox", 0o777, 5),
            ("bin/ash", "hard:bin/busybox", 0o4755, 100),
            ("dev", "dir", 0o755, 5),
            ("dev/console", "chr:5,1", 0o600, 5),
            ("etc", "dir", 0o755, 5),
            ("etc/a", "file:x", 0o644, 5),
            ("etc/sub", "dir", 0o700, 5),
            ("run", "fifo", 0o644, 5),
        ])
    }

    #[test]
    fn layout_of_a_small_tree() {
        let t = fixture();
        let mut v = Vec::new();
        let n = write(&t, 10, &mut v).unwrap();
        assert_eq!(n, v.len() as u64);
        // Hardlinks share inode 2 and nlink 2, and only the last path (bin/busybox) carries
        // the data; mtimes are clamped to 10; the root has 2 + 3 subdirectories.
        let want = "\
1 040755 5 0:0 1 0 0,0 .
2 040755 2 0:0 5 0 0,0 bin
3 104755 2 0:0 10 0 0,0 bin/ash
3 104755 2 0:0 10 10 0,0 bin/busybox
4 120777 1 0:0 5 7 0,0 bin/sh -> busybox
5 040755 2 0:0 5 0 0,0 dev
6 020600 1 0:0 5 0 5,1 dev/console
7 040755 3 0:0 5 0 0,0 etc
8 100644 1 0:0 5 1 0,0 etc/a
9 040700 2 0:0 5 0 0,0 etc/sub
10 010644 1 0:0 5 0 0,0 run
";
        let got = debug::dump(&v);
        assert!(got.starts_with(want), "got:\n{got}");
        assert!(got.ends_with(&format!("TRAILER!!! ends at {}\n", v.len())));
        let (es, _) = format::parse(&v).unwrap();
        let bb = es.iter().find(|e| e.name == b"bin/busybox").unwrap();
        assert_eq!(bb.data, b"#!busybox\n");
    }
}

/// Archives of trees flattened from real layer blobs: contents come from the spill files, and
/// a tree flattened for its metadata only cannot be archived.
#[cfg(test)]
mod layers {
    use crate::tree::layer::{ContentMode, Limits};
    use crate::tree::testutil::{layer_blob, LayerFile};

    fn flatten(layers: &[LayerFile], mode: ContentMode) -> crate::tree::Tree {
        crate::tree::flatten(layers, 1, Limits::default(), 2, mode, &crate::progress::Progress::new(true)).unwrap()
    }

    #[test]
    fn contents_come_from_the_spill_files_even_out_of_order() {
        let d = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // Layer 0 is in reverse path order; layer 1 replaces one file and is in order.
        let l0 = layer_blob(d.path(), "l0", &[("z/last", b"zz".to_vec()), ("m/big", big.clone()), ("a/first", b"aa".to_vec()), ("a/empty", Vec::new())]);
        let l1 = layer_blob(d.path(), "l1", &[("b/new", b"new".to_vec()), ("z/last", b"replaced".to_vec())]);
        let mut v = Vec::new();
        crate::emit::cpio::write(&flatten(&[l0, l1], ContentMode::Spill), 1, &mut v).unwrap();
        let (es, _) = crate::emit::cpio::format::parse(&v).unwrap();
        let get = |n: &str| es.iter().find(|e| e.name == n.as_bytes()).unwrap().data;
        assert_eq!((get("a/first"), get("z/last"), get("b/new"), get("a/empty")), (&b"aa"[..], &b"replaced"[..], &b"new"[..], &b""[..]));
        assert!(get("m/big") == big.as_slice());
    }

    #[test]
    fn a_tree_flattened_for_metadata_only_fails_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let layers = vec![layer_blob(d.path(), "l0", &[("a", b"one".to_vec()), ("b", b"two".to_vec())])];
        let err = crate::emit::cpio::write(&flatten(&layers, ContentMode::Index), 1, &mut Vec::new()).unwrap_err().to_string();
        assert_eq!(err, format!("a: {}", crate::tree::NOT_KEPT));
    }
}
