//! Small trees for unit tests: rows of (path, what, mode, mtime), where `what` is `dir`,
//! `fifo`, `file:CONTENT`, `link:TARGET`, `hard:TARGET` or `chr:MAJOR,MINOR`.

use super::layer::{ParsedLayer, RawEntry, RawKind};
use super::{ContentRef, Meta, Tree};
use std::io::{Seek, SeekFrom, Write};

/// A tree from (path, kind, mode, mtime) rows; file contents are the given strings.
pub fn tree(rows: &[(&str, &str, u32, i64)]) -> Tree {
    let mut spill = tempfile::tempfile().unwrap();
    let mut entries = Vec::new();
    let mut off = 0u64;
    for (path, what, mode, mtime) in rows {
        let meta = Meta { mode: *mode, uid: 0, gid: 0, mtime: *mtime, xattrs: Default::default() };
        let kind = match what.split_once(':') {
            Some(("file", data)) => {
                spill.write_all(data.as_bytes()).unwrap();
                let c = ContentRef { spill: 0, offset: off, len: data.len() as u64 };
                off += data.len() as u64;
                RawKind::File(c)
            }
            Some(("link", t)) => RawKind::Symlink(t.as_bytes().to_vec()),
            Some(("hard", t)) => RawKind::Hardlink(t.as_bytes().to_vec()),
            Some(("chr", d)) => {
                let (a, b) = d.split_once(',').unwrap();
                RawKind::Char(a.parse().unwrap(), b.parse().unwrap())
            }
            _ if *what == "dir" => RawKind::Dir,
            _ if *what == "fifo" => RawKind::Fifo,
            _ => panic!("bad row {what}"),
        };
        entries.push(RawEntry { path: path.as_bytes().to_vec(), kind, meta });
    }
    spill.seek(SeekFrom::Start(0)).unwrap();
    let mut t = Tree::new(1);
    t.apply(ParsedLayer { label: "test".into(), entries: entries.try_into().unwrap(), spill }).unwrap();
    t
}

