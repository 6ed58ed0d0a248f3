//! `dir:PATH` and `[[layer]] dir = "…"`: local files as a layer.
//!
//! The directory is walked in bytewise order and written as an uncompressed tar into the
//! store (so it gets a digest like any other layer). Owners are 0:0 and mtimes the
//! SOURCE_DATE_EPOCH. Modes are normalized as git stores them (directories and executable
//! files 0755, other files 0644, setuid/setgid/sticky kept), because a checkout's modes
//! depend on the umask of whoever cloned it; hardlinks inside the directory stay hardlinks.

use super::{LayerBlob, ResolvedImage, Store};
use crate::error::{Error, IoContext, Result};
use crate::reference::ImageRef;
use crate::tarfmt::{self, Head, TarKind};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModePolicy {
    /// 0755 / 0644 by the owner's execute bit, plus setuid/setgid/sticky.
    Normalize,
    /// Keep the permission bits as they are on disk.
    Keep,
}

fn mode_for(policy: ModePolicy, is_dir: bool, mode: u32) -> u32 {
    match policy {
        ModePolicy::Keep => mode & 0o7777,
        ModePolicy::Normalize => {
            let special = mode & 0o7000;
            if is_dir || mode & 0o100 != 0 { 0o755 | special } else { 0o644 | special }
        }
    }
}

/// Write `root` as a tar stream.
pub fn write_tar(root: &Path, policy: ModePolicy, sde: u64, w: &mut impl Write) -> Result<()> {
    let meta = fs::symlink_metadata(root).at(root)?;
    if !meta.is_dir() {
        return Err(Error::io(root, std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory")));
    }
    let mut seen: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let empty = BTreeMap::new();
    let mut stack = vec![Vec::<u8>::new()];
    let mut buf = vec![0u8; 1 << 16];
    // Collect all paths first, then sort bytewise, so the order never depends on readdir.
    let mut paths: Vec<Vec<u8>> = Vec::new();
    while let Some(rel) = stack.pop() {
        let dir = root.join(std::ffi::OsStr::from_bytes(&rel));
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(e.file_name().as_bytes());
            if e.file_type().at(e.path())?.is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    for rel in &paths {
        let full = root.join(std::ffi::OsStr::from_bytes(rel));
        let m = fs::symlink_metadata(&full).at(&full)?;
        let ft = m.file_type();
        let mut h = Head {
            path: rel,
            kind: TarKind::Dir,
            mode: mode_for(policy, ft.is_dir(), m.mode()),
            uid: 0,
            gid: 0,
            mtime: sde,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &empty,
        };
        let target;
        if ft.is_dir() {
        } else if ft.is_symlink() {
            target = fs::read_link(&full).at(&full)?;
            h.kind = TarKind::Symlink;
            h.mode = 0o777;
            h.link = target.as_os_str().as_bytes();
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = seen.get(&(m.dev(), m.ino())).cloned() {
                    h.kind = TarKind::Hardlink;
                    h.link = &first;
                    tarfmt::write_header(w, &h).at(&full)?;
                    continue;
                }
                seen.insert((m.dev(), m.ino()), rel.clone());
            }
            h.kind = TarKind::File;
            h.size = m.len();
            tarfmt::write_header(w, &h).at(&full)?;
            let mut f = fs::File::open(&full).at(&full)?;
            crate::fsutil::copy_exact(&mut f, w, m.len(), &mut buf).at(&full)?;
            tarfmt::pad(w, m.len()).at(&full)?;
            continue;
        } else if ft.is_fifo() {
            h.kind = TarKind::Fifo;
        } else if ft.is_char_device() || ft.is_block_device() {
            h.kind = if ft.is_char_device() { TarKind::Char } else { TarKind::Block };
            let rdev = m.rdev();
            h.dev = (libc_major(rdev), libc_minor(rdev));
        } else {
            return Err(Error::other(format!("{}: sockets cannot go into a layer", full.display())));
        }
        tarfmt::write_header(w, &h).at(&full)?;
    }
    tarfmt::finish(w).at(root)
}

fn libc_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}

fn libc_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

pub fn resolve(store: &Store, r: &ImageRef, path: &Path, policy: ModePolicy, sde: u64) -> Result<ResolvedImage> {
    let tmp = tempfile::tempfile().map_err(|e| Error::other(format!("temp file for {}: {e}", r.text)))?;
    let mut w = BufWriter::new(tmp);
    write_tar(path, policy, sde, &mut w)?;
    let mut f = w.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0)).at(path)?;
    let (digest, size) = store.put_reader(&r.text, None, None, f)?;
    let label = format!("{} ({})", r.text, digest.short());
    let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [digest.as_str()]}});
    Ok(ResolvedImage {
        reference: r.clone(),
        pin: digest.clone(),
        manifest_digest: digest.clone(),
        config,
        layers: vec![LayerBlob { digest: digest.clone(), size, diff_id: digest, media_type: super::MT_OCI_LAYER.into(), label }],
    })
}
