//! Writing tar headers: POSIX ustar, with a PAX extended header when a value does not fit
//! (long paths or link targets, large ids or sizes, xattrs as `SCHILY.xattr.*`).
//!
//! Names are copied byte for byte (the `tar` crate's path setters normalize components,
//! which would change symlink targets such as `lib/`). No user or group names, no host
//! data: the same arguments always give the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

pub const BLOCK: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    File,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// One archive member's header fields.
#[derive(Debug)]
pub struct Head<'a> {
    /// Path without a leading `/`; directories get a trailing `/` added here.
    pub path: &'a [u8],
    pub kind: TarKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: &'a [u8],
    pub dev: (u32, u32),
    pub xattrs: &'a BTreeMap<String, Vec<u8>>,
}

/// Largest value an 8-byte (7 octal digits) ustar numeric field holds.
const MAX_OCTAL_7: u64 = 0o7777777;
/// Largest value the 12-byte size field holds in octal (8 GiB - 1).
const MAX_OCTAL_11: u64 = 0o77777777777;

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "%d %s=%s\n", where the length counts itself.
    let body = key.len() + value.len() + 3; // ' ' '=' '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Split a path into ustar (prefix, name) if it fits.
fn split_ustar(p: &[u8]) -> Option<(&[u8], &[u8])> {
    if p.len() <= 100 {
        return Some((b"", p));
    }
    // Split at a '/' with the prefix ≤ 155 and the name ≤ 100 bytes.
    for (i, b) in p.iter().enumerate().rev() {
        if *b == b'/' && i <= 155 && p.len() - i - 1 <= 100 && p.len() - i - 1 > 0 {
            return Some((&p[..i], &p[i + 1..]));
        }
    }
    None
}

fn octal(field: &mut [u8], v: u64) {
    // Zero-padded octal with a trailing NUL, as GNU tar writes.
    let n = field.len() - 1;
    let s = format!("{:0width$o}", v, width = n);
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

fn raw_header(name: &[u8], prefix: &[u8], typeflag: u8, h: &Head, size: u64, link: &[u8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut b[100..108], (h.mode & 0o7777) as u64);
    octal(&mut b[108..116], h.uid.min(MAX_OCTAL_7));
    octal(&mut b[116..124], h.gid.min(MAX_OCTAL_7));
    octal(&mut b[124..136], size.min(MAX_OCTAL_11));
    octal(&mut b[136..148], h.mtime.min(MAX_OCTAL_11));
    b[156] = typeflag;
    b[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if matches!(h.kind, TarKind::Char | TarKind::Block) {
        octal(&mut b[329..337], h.dev.0 as u64);
        octal(&mut b[337..345], h.dev.1 as u64);
    }
    b[345..345 + prefix.len().min(155)].copy_from_slice(&prefix[..prefix.len().min(155)]);
    // checksum: sum of all bytes with the checksum field as spaces
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|x| *x as u32).sum();
    let s = format!("{:06o}\0 ", sum);
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// Write the header (and a PAX header before it when needed) for `h`. The caller then
/// writes `h.size` bytes of data and [`pad`].
pub fn write_header(w: &mut impl Write, h: &Head) -> io::Result<()> {
    write_header_with(w, h, &[])
}

/// [`write_header`] with `extra` PAX records (key, value) after the usual ones, for formats
/// that keep their own data there (Alpine's `APK-TOOLS.checksum.SHA1`).
pub fn write_header_with(w: &mut impl Write, h: &Head, extra: &[(&str, &[u8])]) -> io::Result<()> {
    let mut path = h.path.to_vec();
    if h.kind == TarKind::Dir && !path.ends_with(b"/") {
        path.push(b'/');
    }
    let mut pax = Vec::new();
    let (prefix, name): (Vec<u8>, Vec<u8>) = match split_ustar(&path) {
        Some((p, n)) => (p.to_vec(), n.to_vec()),
        None => {
            pax_record(&mut pax, "path", &path);
            (Vec::new(), path[path.len() - 100..].to_vec())
        }
    };
    if h.link.len() > 100 {
        pax_record(&mut pax, "linkpath", h.link);
    }
    if h.uid > MAX_OCTAL_7 {
        pax_record(&mut pax, "uid", h.uid.to_string().as_bytes());
    }
    if h.gid > MAX_OCTAL_7 {
        pax_record(&mut pax, "gid", h.gid.to_string().as_bytes());
    }
    if h.size > MAX_OCTAL_11 {
        pax_record(&mut pax, "size", h.size.to_string().as_bytes());
    }
    if h.mtime > MAX_OCTAL_11 {
        pax_record(&mut pax, "mtime", h.mtime.to_string().as_bytes());
    }
    for (k, v) in h.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
    }
    for (k, v) in extra {
        pax_record(&mut pax, k, v);
    }
    if !pax.is_empty() {
        // The PAX header's own name: fixed text plus the entry's last component, as GNU tar
        // does with its default `%d/PaxHeaders/%f` minus the directory.
        let base = name.rsplit(|b| *b == b'/').find(|c| !c.is_empty()).unwrap_or(b"x");
        let mut pname = b"PaxHeaders/".to_vec();
        pname.extend_from_slice(&base[..base.len().min(88)]);
        let ph = Head { kind: TarKind::File, mode: 0o644, uid: 0, gid: 0, link: b"", dev: (0, 0), ..*h };
        w.write_all(&raw_header(&pname, b"", b'x', &ph, pax.len() as u64, b""))?;
        w.write_all(&pax)?;
        pad(w, pax.len() as u64)?;
    }
    let typeflag = match h.kind {
        TarKind::File => b'0',
        TarKind::Hardlink => b'1',
        TarKind::Symlink => b'2',
        TarKind::Char => b'3',
        TarKind::Block => b'4',
        TarKind::Dir => b'5',
        TarKind::Fifo => b'6',
    };
    let size = if h.kind == TarKind::File { h.size } else { 0 };
    w.write_all(&raw_header(&name, &prefix, typeflag, h, size, h.link))
}

/// Zero padding after `size` bytes of data, up to the next 512-byte block.
pub fn pad(w: &mut impl Write, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// The end-of-archive marker: two zero blocks.
pub fn finish(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&[0u8; BLOCK * 2])
}

/// The name `inspect` and `diff` show for a tar entry type.
pub fn kind_name(t: tar::EntryType) -> &'static str {
    use tar::EntryType as T;
    match t {
        T::Regular | T::Continuous => "file",
        T::Directory => "dir",
        T::Symlink => "symlink",
        T::Link => "hardlink",
        T::Char => "char",
        T::Block => "block",
        T::Fifo => "fifo",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", b"abc");
        assert_eq!(v, b"12 path=abc\n");
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'a'; 95]);
        assert_eq!(&v[..4], b"105 ");
        assert_eq!(v.len(), 105);
    }

    #[test]
    fn split_prefers_ustar() {
        assert!(split_ustar(&[b'a'; 100]).is_some());
        assert!(split_ustar(&[b'a'; 101]).is_none());
        let p = [vec![b'd'; 120], b"/".to_vec(), vec![b'f'; 50]].concat();
        assert_eq!(split_ustar(&p).unwrap().0.len(), 120);
    }
}
