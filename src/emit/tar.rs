//! Reproducible rootfs tarballs: bytewise path order, mtimes clamped to SOURCE_DATE_EPOCH,
//! numeric owners only, hardlinks written once (the first path in order carries the data),
//! xattrs as PAX records. The root directory itself is not an entry.

use crate::tarfmt::{self, Head, TarKind};
use crate::tree::{Kind, Tree};
use std::collections::HashMap;
use std::io::{self, Write};

/// Write the whole tree as an uncompressed tar stream (wrap `w` to compress).
pub fn write(tree: &Tree, sde: u64, w: &mut impl Write) -> io::Result<()> {
    let mut first_path: HashMap<u64, &[u8]> = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    for (path, node) in tree.walk() {
        if path.is_empty() {
            continue;
        }
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
                    first_path.insert(*inode, path);
                    h.kind = TarKind::File;
                    h.size = content.len;
                    tarfmt::write_header(w, &h)?;
                    let mut r = tree.open(content);
                    copy_exact(&mut r, w, content.len, &mut buf)?;
                    tarfmt::pad(w, content.len)?;
                    continue;
                }
            }
        }
        tarfmt::write_header(w, &h)?;
    }
    tarfmt::finish(w)
}

/// Copy exactly `len` bytes, failing if the source is short.
pub fn copy_exact(r: &mut impl io::Read, w: &mut impl Write, len: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file content shorter than recorded"));
        }
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}
