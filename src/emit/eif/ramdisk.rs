//! The two ramdisks of the nitro-cli layout, as uncompressed newc archives (DESIGN §7):
//! - the bootstrap ramdisk (rd0, measured into PCR1): `dev/`, `init` (the small static init
//!   nitro-cli ships, which mounts the customer's root and runs `cmd` with `env`), and `nsm.ko`
//!   when the kernel image ships the NSM driver as a module;
//! - the customer ramdisk (rd1, PCR2): `cmd`, `env` and `rootfs/` (the box's tree, with empty
//!   `dev run sys var proc tmp` added where the tree has none, as nitro-cli adds them).
//!
//! The rootfs entries come from [`crate::emit::cpio::plan`] (same inode numbers, link counts,
//! hardlink data placement as `[output.initramfs]`), renamed under `rootfs/`, merged with the
//! extra entries in bytewise name order; extra entries take inode numbers after the tree's.
//! Owners are 0:0 and mtimes SOURCE_DATE_EPOCH for everything the tree does not provide.

use crate::emit::cpio::format::{self, Header, S_IFDIR, S_IFREG};
use crate::emit::cpio::writer::Body;
use crate::tree::Tree;
use std::io::{self, Write};

/// Directories nitro-cli creates (empty) in the customer's root; `tmp` sticky and world-writable.
pub const ROOTFS_DIRS: [(&str, u32); 6] = [("dev", 0o755), ("proc", 0o755), ("run", 0o755), ("sys", 0o755), ("tmp", 0o1777), ("var", 0o755)];

/// One item per line, each ended by `\n` (the `cmd` and `env` files). Items may not hold a
/// newline (the bootstrap init splits on it).
pub fn lines(items: &[String], what: &str) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    for i in items {
        if i.contains('\n') || i.contains('\0') {
            return Err(format!("{what} item {i:?} contains a newline or NUL: {what} is written one item a line"));
        }
        v.extend_from_slice(i.as_bytes());
        v.push(b'\n');
    }
    Ok(v)
}

fn mtime(sde: u64) -> io::Result<u32> {
    u32::try_from(sde).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("SOURCE_DATE_EPOCH {sde} does not fit in newc's 32-bit mtime")))
}

fn dir(ino: u32, mode: u32, sde: u64) -> io::Result<Header> {
    Ok(Header { ino, mode: S_IFDIR | mode, nlink: 2, mtime: mtime(sde)?, ..Header::default() })
}

fn file(ino: u32, mode: u32, len: usize, sde: u64) -> io::Result<Header> {
    let filesize = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large for newc"))?;
    Ok(Header { ino, mode: S_IFREG | mode, nlink: 1, mtime: mtime(sde)?, filesize, ..Header::default() })
}

fn entry(w: &mut impl Write, h: &Header, name: &[u8], data: &[u8]) -> io::Result<()> {
    format::write_header(w, h, name)?;
    w.write_all(data)?;
    w.write_all(&[0u8; 3][..format::pad4(data.len() as u64)])
}

/// Write the bootstrap ramdisk: `dev/`, `init` (0755) and `nsm.ko` (0644) when given.
pub fn write_bootstrap(sde: u64, init: &[u8], nsm: Option<&[u8]>, w: &mut impl Write) -> io::Result<()> {
    entry(w, &dir(1, 0o755, sde)?, b"dev", &[])?;
    entry(w, &file(2, 0o755, init.len(), sde)?, b"init", init)?;
    if let Some(m) = nsm {
        entry(w, &file(3, 0o644, m.len(), sde)?, b"nsm.ko", m)?;
    }
    format::write_trailer(w)
}

/// Write the customer ramdisk: `cmd`, `env`, and the tree under `rootfs/`.
pub fn write_customer(tree: &Tree, sde: u64, cmd: &[u8], env: &[u8], w: &mut impl Write) -> io::Result<()> {
    let planned = crate::emit::cpio::plan(tree, sde)?;
    let mut next_ino = planned.iter().map(|p| p.header.ino).max().unwrap_or(0) + 1;
    let mut ino = || {
        let i = next_ino;
        next_ino += 1;
        i
    };
    enum B<'t> {
        Bytes(&'t [u8]),
        Planned(Body<'t>),
    }
    let mut entries: Vec<(Vec<u8>, Header, B)> = Vec::with_capacity(planned.len() + 8);
    entries.push((b"cmd".to_vec(), file(ino(), 0o644, cmd.len(), sde)?, B::Bytes(cmd)));
    entries.push((b"env".to_vec(), file(ino(), 0o644, env.len(), sde)?, B::Bytes(env)));
    let mut added = 0;
    for (name, mode) in ROOTFS_DIRS {
        if tree.get(name.as_bytes()).is_none() {
            entries.push((format!("rootfs/{name}").into_bytes(), dir(ino(), mode, sde)?, B::Bytes(&[])));
            added += 1;
        }
    }
    for p in planned {
        let mut h = p.header;
        let name = if p.name == b"." {
            h.nlink += added;
            b"rootfs".to_vec()
        } else {
            [&b"rootfs/"[..], p.name].concat()
        };
        entries.push((name, h, B::Planned(p.body)));
    }
    // Prefixing keeps the tree's (bytewise) order; the extras slot in by name.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = vec![0u8; 1 << 20];
    for (name, h, body) in &entries {
        match body {
            B::Bytes(d) => entry(w, h, name, d)?,
            B::Planned(Body::None) => entry(w, h, name, &[])?,
            B::Planned(Body::Target(t)) => entry(w, h, name, t)?,
            B::Planned(Body::Content(c)) => {
                format::write_header(w, h, name)?;
                crate::fsutil::copy_exact(&mut tree.open(c), w, c.len, &mut buf)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", String::from_utf8_lossy(name))))?;
                w.write_all(&[0u8; 3][..format::pad4(c.len)])?;
            }
        }
    }
    format::write_trailer(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_layout() {
        let mut v = Vec::new();
        write_bootstrap(7, b"#!init\n", Some(b"ko"), &mut v).unwrap();
        let (es, end) = format::parse(&v).unwrap();
        assert_eq!(end, v.len());
        let got: Vec<(String, u32, &[u8])> =
            es.iter().map(|e| (String::from_utf8_lossy(e.name).into_owned(), e.header.mode, e.data)).collect();
        assert_eq!(
            got,
            [
                ("dev".to_string(), 0o40755, &b""[..]),
                ("init".to_string(), 0o100755, &b"#!init\n"[..]),
                ("nsm.ko".to_string(), 0o100644, &b"ko"[..])
            ]
        );
        assert!(es.iter().all(|e| e.header.mtime == 7 && e.header.uid == 0));
    }

    #[test]
    fn lines_end_with_newlines() {
        assert_eq!(lines(&["/bin/sh".into(), "-c".into(), "echo hi".into()], "cmd").unwrap(), b"/bin/sh\n-c\necho hi\n");
        assert_eq!(lines(&[], "env").unwrap(), b"");
        assert!(lines(&["a\nb".into()], "env").unwrap_err().contains("newline"));
    }
}
