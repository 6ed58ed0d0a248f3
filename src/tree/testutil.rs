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
    t.apply(ParsedLayer { label: "test".into(), entries: entries.try_into().unwrap(), spill: Some(spill) }).unwrap();
    t
}


/// A layer blob file and its description, as [`super::flatten`] takes them.
pub type LayerFile = (std::path::PathBuf, crate::source::LayerBlob);

/// A layer blob (gzip) of `files`, in the order given, in `dir`, with its digests.
pub fn layer_blob(dir: &std::path::Path, name: &str, files: &[(&str, Vec<u8>)]) -> LayerFile {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(p).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    let raw = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let gz = gz.finish().unwrap();
    let path = dir.join(name);
    std::fs::write(&path, &gz).unwrap();
    let lb = crate::source::LayerBlob {
        digest: crate::digest::Digest::of_bytes(&gz),
        size: gz.len() as u64,
        diff_id: crate::digest::Digest::of_bytes(&raw),
        media_type: crate::source::MT_OCI_LAYER_GZIP.into(),
        label: name.into(),
    };
    (path, lb)
}
