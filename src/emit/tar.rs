//! Reproducible rootfs tarballs: bytewise path order, mtimes clamped to SOURCE_DATE_EPOCH,
//! numeric owners only, hardlinks written once (the first path in order carries the data),
//! xattrs as PAX records. The root directory itself is not an entry.

use crate::tarfmt::{self, Head, TarKind};
use crate::tree::{ContentRef, Kind, Node, Tree};
use std::collections::HashMap;
use std::io::{self, Write};

/// The header for one tree entry, and the content to write after it (for the first path
/// of each file inode; later paths of the inode become hardlinks to that first path).
fn head_for<'a>(
    path: &'a [u8],
    node: &'a Node,
    tree: &Tree,
    sde: u64,
    first_path: &mut HashMap<u64, &'a [u8]>,
) -> (Head<'a>, Option<ContentRef>) {
    let m = &node.meta;
    let mut h = Head {
        path,
        kind: TarKind::Dir,
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        mtime: m.clamped_mtime(sde),
        size: 0,
        link: b"",
        dev: (0, 0),
        xattrs: &m.xattrs,
    };
    let mut data = None;
    match &node.kind {
        Kind::Dir => {}
        Kind::Symlink { target } => {
            h.kind = TarKind::Symlink;
            h.link = target;
        }
        Kind::Char { major, minor } => {
            h.kind = TarKind::Char;
            h.dev = (*major, *minor);
        }
        Kind::Block { major, minor } => {
            h.kind = TarKind::Block;
            h.dev = (*major, *minor);
        }
        Kind::Fifo => h.kind = TarKind::Fifo,
        Kind::File { content, inode } => {
            if let Some(first) = first_path.get(inode) {
                h.kind = TarKind::Hardlink;
                h.link = first;
            } else {
                if tree.maybe_linked(*inode) {
                    first_path.insert(*inode, path);
                }
                h.kind = TarKind::File;
                h.size = content.len;
                data = Some(*content);
            }
        }
    }
    (h, data)
}

/// Write the whole tree as an uncompressed tar stream (wrap `w` to compress).
pub fn write(tree: &Tree, sde: u64, w: &mut impl Write) -> io::Result<()> {
    let mut first_path: HashMap<u64, &[u8]> = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    for (path, node) in tree.walk() {
        if path.is_empty() {
            continue;
        }
        let (h, data) = head_for(path, node, tree, sde, &mut first_path);
        tarfmt::write_header(w, &h)?;
        if let Some(c) = data {
            crate::fsutil::copy_exact(&mut tree.open(&c), w, c.len, &mut buf)?;
            tarfmt::pad(w, c.len)?;
        }
    }
    tarfmt::finish(w)
}
