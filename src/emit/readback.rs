//! Reading back what stagebox writes, for `inspect` and `diff`: the one format sniffer
//! ([`Format::sniff`]: magic bytes, compression looked through, never the file name; a file
//! it does not recognize is an error, never a guess) and one entry listing ([`Entry`]) of
//! every archive and file-system format: tar (plain, gzip, zstd, xz), newc cpio (the same,
//! prepended archives included), `.deb` (its data tar), `.rpm` (its cpio payload), Arch and
//! Alpine packages (tars), EROFS, SquashFS, ISO 9660 (Rock Ridge).
//!
//! The EROFS and `ar` readers are written here by hand (no crate reads EROFS; `ar` is a
//! 60-byte header per member); they are strict and bounds-checked: a damaged image is an
//! error that says what is wrong, never a panic, and a directory loop is refused.

use crate::error::{Error, IoContext, Result};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Every format stagebox writes, as recognized by its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Tar,
    Cpio,
    Oci,
    Eif,
    Iso,
    Disk,
    Squashfs,
    Erofs,
    Deb,
    Rpm,
    Arch,
    Apk,
}

/// What [`Format::sniff`] recognizes, for messages.
pub const KNOWN: &str = "tar (plain, gzip, zstd, xz), newc cpio (plain, gzip, zstd, xz), OCI layout, EIF, ISO 9660, GPT disk image, SquashFS, EROFS, .deb, .rpm, Arch or Alpine package";

const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
const RPM_LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];

impl Format {
    /// The name in JSON output (`tar`, `cpio`, `oci`, ...: serde's name).
    pub fn key(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }

    /// The name in messages (`tar`, `EROFS image`, `.deb package`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Cpio => "cpio",
            Format::Oci => "OCI layout",
            Format::Eif => "EIF",
            Format::Iso => "ISO 9660 image",
            Format::Disk => "GPT disk image",
            Format::Squashfs => "SquashFS image",
            Format::Erofs => "EROFS image",
            Format::Deb => ".deb package",
            Format::Rpm => ".rpm package",
            Format::Arch => "Arch package",
            Format::Apk => "Alpine package",
        }
    }

    /// The format of `p` by its content. A directory must be an OCI layout; a file that is
    /// none of [`KNOWN`] is a usage error naming its first bytes.
    pub fn sniff(p: &Path) -> Result<Format> {
        let meta = std::fs::metadata(p).at(p)?;
        if meta.is_dir() {
            return match p.join("oci-layout").is_file() {
                true => Ok(Format::Oci),
                false => Err(Error::Usage(format!("{}: a directory, but not an OCI image layout (no oci-layout file)", p.display()))),
            };
        }
        let f = File::open(p).at(p)?;
        let mut head = [0u8; 16];
        let n = read_at_most(&f, &mut head, 0).at(p)?;
        let head = &head[..n];
        if n == 0 {
            return Err(Error::Usage(format!("{}: an empty file, not any of: {KNOWN}", p.display())));
        }
        if head.starts_with(&crate::emit::eif::format::MAGIC) {
            return Ok(Format::Eif);
        }
        if head.starts_with(b"hsqs") {
            return Ok(Format::Squashfs);
        }
        if head.starts_with(&RPM_LEAD_MAGIC) {
            return Ok(Format::Rpm);
        }
        if head.starts_with(b"!<arch>\n") {
            let mut name = [0u8; 13];
            return match read_at_most(&f, &mut name, 8).at(p)? == 13 && &name == b"debian-binary" {
                true => Ok(Format::Deb),
                false => Err(Error::Usage(format!("{}: an ar archive, but not a .deb (its first member is not debian-binary)", p.display()))),
            };
        }
        let mut m = [0u8; 4];
        if read_at_most(&f, &mut m, 1024).at(p)? == 4 && u32::from_le_bytes(m) == EROFS_MAGIC {
            return Ok(Format::Erofs);
        }
        if crate::emit::iso::debug::is_iso(&f) {
            return Ok(Format::Iso);
        }
        let mut g = [0u8; 8];
        if read_at_most(&f, &mut g, 512).at(p)? == 8 && &g == b"EFI PART" {
            return Ok(Format::Disk);
        }
        let comp = compression(head);
        let unknown = || Error::Usage(format!("{}: not any of: {KNOWN} (it starts with {})", p.display(), hex_head(head)));
        let mut r = decompressed(File::open(p).at(p)?).map_err(|_| unknown())?;
        let mut buf = vec![0u8; 512];
        let n = match crate::fsutil::read_full(&mut r, &mut buf) {
            Ok(n) => n,
            Err(e) if comp != "none" => return Err(Error::Usage(format!("{}: {comp} data that does not decompress: {e}", p.display()))),
            Err(_) => return Err(unknown()),
        };
        let buf = &buf[..n];
        if buf.starts_with(crate::emit::cpio::format::MAGIC) || buf.starts_with(crate::emit::cpio::format::MAGIC_CRC) {
            return Ok(Format::Cpio);
        }
        if n >= 262 && &buf[257..262] == b"ustar" {
            let first = &buf[..100];
            let first = &first[..first.iter().position(|&b| b == 0).unwrap_or(100)];
            let pkginfo = first == b".PKGINFO" || first.starts_with(b".SIGN.");
            return Ok(match (pkginfo, comp) {
                (true, "zstd") => Format::Arch,
                (true, "gzip") => Format::Apk,
                _ => Format::Tar,
            });
        }
        match comp {
            "none" => Err(unknown()),
            c => Err(Error::Usage(format!("{}: {c}-compressed, but what it holds is not any of: {KNOWN}", p.display()))),
        }
    }
}

fn hex_head(h: &[u8]) -> String {
    h.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Read up to `buf.len()` bytes at `at` (fewer at the end of the file).
fn read_at_most(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read_at(&mut buf[n..], at + n as u64)?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// The compression of a stream by its first bytes: `gzip`, `zstd`, `xz` or `none`.
pub fn compression(head: &[u8]) -> &'static str {
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz"
    } else {
        crate::tree::layer::sniff(head)
    }
}

/// Decompress gzip (every member), zstd or xz (every stream), or pass through.
pub fn decompressed<R: Read + 'static>(mut r: R) -> io::Result<Box<dyn Read>> {
    let mut head = [0u8; 6];
    let n = crate::fsutil::read_full(&mut r, &mut head)?;
    let r = io::Cursor::new(head[..n].to_vec()).chain(r);
    if compression(&head[..n]) == "xz" {
        return Ok(Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)));
    }
    crate::tree::layer::open_decompressed(r)
}

/// One entry of an archive or file system, as `inspect` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits, four octal digits.
    pub mode: String,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Entry {
    /// `TYPE MODE UID:GID SIZE MTIME PATH [-> LINK]`, one line.
    pub fn line(&self) -> String {
        let link = self.link.as_deref().map(|l| format!(" -> {l}")).unwrap_or_default();
        format!("{:<8} {} {:>5}:{:<5} {:>10} {:>10}  {}{}", self.kind, self.mode, self.uid, self.gid, self.size, self.mtime, self.path, link)
    }
}

/// The compression of what an output holds: the data tar of a `.deb`, the payload of an
/// `.rpm`, the stream itself for tar, cpio and packages; `none` for file-system images.
pub fn content_compression(format: Format, p: &Path) -> Result<&'static str> {
    let f = File::open(p).at(p)?;
    let at = match format {
        Format::Deb => ar_members(&f).ok().and_then(|m| m.into_iter().find(|m| m.0.starts_with("data.tar"))).map(|m| m.1),
        Format::Rpm => rpm_payload_offset(&f).ok(),
        Format::Tar | Format::Cpio | Format::Arch | Format::Apk => Some(0),
        _ => None,
    };
    let Some(at) = at else { return Ok("none") };
    let mut head = [0u8; 6];
    let n = read_at_most(&f, &mut head, at).at(p)?;
    Ok(compression(&head[..n]))
}

/// The type name of `S_IFMT` bits.
pub fn kind_of_mode(mode: u32) -> &'static str {
    match mode & 0o170000 {
        0o100000 => "file",
        0o040000 => "dir",
        0o120000 => "symlink",
        0o020000 => "char",
        0o060000 => "block",
        0o010000 => "fifo",
        0o140000 => "socket",
        _ => "unknown",
    }
}

/// The entries of an archive-like output (`Tar`, `Cpio`, `Deb`, `Rpm`, `Arch`, `Apk`,
/// `Erofs`, `Squashfs`, `Iso`); `None` for the others (OCI, EIF, disk images).
pub fn entries(format: Format, p: &Path) -> Result<Option<Vec<Entry>>> {
    let bad = |what: &str, e: String| Error::other(format!("{}: damaged {what}: {e}", p.display()));
    Ok(Some(match format {
        Format::Tar | Format::Arch | Format::Apk => tar_entries(File::open(p).at(p)?).map_err(|e| bad(format.name(), e.to_string()))?,
        Format::Cpio => cpio_entries(&std::fs::read(p).at(p)?).map_err(|e| bad("cpio", e))?,
        Format::Deb => {
            let f = File::open(p).at(p)?;
            let members = ar_members(&f).map_err(|e| bad(".deb", e))?;
            let (_, at, len) = members
                .iter()
                .find(|(n, _, _)| n.starts_with("data.tar"))
                .ok_or_else(|| bad(".deb", format!("no data.tar member (members: {})", members.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", "))))?;
            let mut f = File::open(p).at(p)?;
            f.seek(SeekFrom::Start(*at)).at(p)?;
            tar_entries(f.take(*len)).map_err(|e| bad(".deb data.tar", e.to_string()))?
        }
        Format::Rpm => {
            let f = File::open(p).at(p)?;
            let at = rpm_payload_offset(&f).map_err(|e| bad(".rpm", e))?;
            let mut f = File::open(p).at(p)?;
            f.seek(SeekFrom::Start(at)).at(p)?;
            let mut payload = Vec::new();
            decompressed(f).and_then(|mut r| r.read_to_end(&mut payload)).map_err(|e| bad(".rpm payload", e.to_string()))?;
            cpio_entries(&payload).map_err(|e| bad(".rpm payload", e))?
        }
        Format::Erofs => erofs_entries(&File::open(p).at(p)?, 0).map_err(|e| bad("EROFS image", e))?,
        Format::Squashfs => squashfs_entries(&File::open(p).at(p)?, 0).map_err(|e| bad("SquashFS image", e))?,
        Format::Iso => {
            let f = File::open(p).at(p)?;
            let d = crate::emit::iso::debug::describe(&f, &p.display().to_string(), "").map_err(|e| bad("ISO 9660 image", e))?;
            // (ISO 9660 directory records carry no mtime stagebox compares: 0.)
            d.entries.iter().map(|e| dumped(&e.path, &e.kind, &e.mode, (e.uid, e.gid), e.size, 0, &e.link)).collect()
        }
        Format::Oci | Format::Eif | Format::Disk => return Ok(None),
    }))
}

/// The entries of the SquashFS image at byte `at` of `f`.
pub fn squashfs_entries(f: &File, at: u64) -> std::result::Result<Vec<Entry>, String> {
    let d = crate::emit::squashfs::debug::describe_file_at(f, at).map_err(|e| e.to_string())?;
    Ok(d.entries.iter().map(|e| dumped(&e.path, e.kind, &e.mode, (e.uid, e.gid), e.size, e.mtime as u64, &e.target)).collect())
}

/// An [`Entry`] from one entry of a format's debug description (ISO and SquashFS describe
/// theirs alike): the mode string reduced to its permission bits.
fn dumped(path: &str, kind: &str, mode: &str, (uid, gid): (u32, u32), size: u64, mtime: u64, link: &Option<String>) -> Entry {
    Entry { path: path.to_string(), kind: kind.to_string(), mode: perm(mode), uid: uid as u64, gid: gid as u64, size, mtime, link: link.clone() }
}

/// The last four octal digits of a mode string (`0100755` or `-rwxr-xr-x` style kept as is).
fn perm(s: &str) -> String {
    match u32::from_str_radix(s, 8) {
        Ok(m) => format!("{:04o}", m & 0o7777),
        Err(_) => s.to_string(),
    }
}

/// Every member of a tar stream (any compression), in archive order.
pub fn tar_entries<R: Read + 'static>(r: R) -> io::Result<Vec<Entry>> {
    let mut ar = tar::Archive::new(decompressed(r)?);
    let mut out = Vec::new();
    for e in ar.entries()? {
        let e = e?;
        let h = e.header();
        out.push(Entry {
            path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            kind: crate::tarfmt::kind_name(h.entry_type()).into(),
            mode: format!("{:04o}", h.mode().unwrap_or(0) & 0o7777),
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            size: e.size(),
            mtime: h.mtime().unwrap_or(0),
            link: e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()),
        });
    }
    Ok(out)
}

/// Every entry of every newc archive in `buf` (concatenated; a compressed one after
/// uncompressed prepended ones, as the kernel reads an initramfs).
pub fn cpio_entries(buf: &[u8]) -> std::result::Result<Vec<Entry>, String> {
    use crate::emit::cpio::format;
    let mut out = Vec::new();
    let mut rest = buf;
    loop {
        while let [0, r @ ..] = rest {
            rest = r;
        }
        if rest.is_empty() {
            return Ok(out);
        }
        if rest.starts_with(format::MAGIC) || rest.starts_with(format::MAGIC_CRC) {
            let (entries, end) = format::parse(rest)?;
            for e in &entries {
                let h = &e.header;
                let kind = kind_of_mode(h.mode);
                out.push(Entry {
                    path: String::from_utf8_lossy(e.name).into_owned(),
                    kind: kind.into(),
                    mode: format!("{:04o}", h.mode & 0o7777),
                    uid: h.uid as u64,
                    gid: h.gid as u64,
                    size: h.filesize as u64,
                    mtime: h.mtime as u64,
                    link: (kind == "symlink").then(|| String::from_utf8_lossy(e.data).into_owned()),
                });
            }
            rest = &rest[end..];
        } else {
            let at = buf.len() - rest.len();
            if compression(rest) == "none" {
                return Err(format!("neither a cpio archive nor compressed data at byte {at}"));
            }
            let mut inner = Vec::new();
            decompressed(io::Cursor::new(rest.to_vec()))
                .and_then(|mut d| d.read_to_end(&mut inner))
                .map_err(|e| format!("compressed data at byte {at}: {e}"))?;
            out.extend(cpio_entries(&inner)?);
            return Ok(out);
        }
    }
}

/// The members of an `ar` archive: (name, data offset, size).
pub fn ar_members(f: &File) -> std::result::Result<Vec<(String, u64, u64)>, String> {
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut out = Vec::new();
    let mut at = 8u64;
    while at < len {
        let mut h = [0u8; 60];
        if read_at_most(f, &mut h, at).map_err(|e| e.to_string())? < 60 || &h[58..60] != b"`\n" {
            return Err(format!("bad ar member header at byte {at}"));
        }
        let name = String::from_utf8_lossy(&h[..16]).trim_end().trim_end_matches('/').to_string();
        let size: u64 = std::str::from_utf8(&h[48..58]).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| format!("bad ar member size at byte {at}"))?;
        if at + 60 + size > len {
            return Err(format!("ar member {name:?} runs past the end of the file"));
        }
        out.push((name, at + 60, size));
        at += 60 + size + (size & 1);
    }
    Ok(out)
}

/// Where an rpm's payload starts: after the 96-byte lead, the signature header (padded to 8)
/// and the main header.
pub fn rpm_payload_offset(f: &File) -> std::result::Result<u64, String> {
    let header_len = |at: u64| -> std::result::Result<u64, String> {
        let mut h = [0u8; 16];
        if read_at_most(f, &mut h, at).map_err(|e| e.to_string())? < 16 || h[..4] != [0x8e, 0xad, 0xe8, 0x01] {
            return Err(format!("no rpm header at byte {at}"));
        }
        let n = u32::from_be_bytes(h[8..12].try_into().expect("4")) as u64;
        let size = u32::from_be_bytes(h[12..16].try_into().expect("4")) as u64;
        Ok(16 + 16 * n + size)
    };
    let sig = header_len(96)?;
    let main = 96 + sig.next_multiple_of(8);
    Ok(main + header_len(main)?)
}

/// The entries of the EROFS image at byte `base` of `f`, in path order from the root
/// (uncompressed layouts only: `FLAT_PLAIN` and `FLAT_INLINE`, compact and extended inodes).
pub fn erofs_entries(f: &File, base: u64) -> std::result::Result<Vec<Entry>, String> {
    let len = f.metadata().map_err(|e| e.to_string())?.len().saturating_sub(base);
    let read = |at: u64, n: usize| -> std::result::Result<Vec<u8>, String> {
        if at.checked_add(n as u64).is_none_or(|end| end > len) {
            return Err(format!("{n} bytes at {at} run past the end of the image ({len} bytes)"));
        }
        let mut b = vec![0u8; n];
        f.read_exact_at(&mut b, base + at).map_err(|e| e.to_string())?;
        Ok(b)
    };
    let u16a = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32a = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
    let u64a = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    let sb = read(1024, 128)?;
    if u32a(&sb, 0) != EROFS_MAGIC {
        return Err("no EROFS superblock at 1024".into());
    }
    let blkszbits = sb[12];
    if !(9..=16).contains(&blkszbits) {
        return Err(format!("unsupported block size 2^{blkszbits}"));
    }
    let bs = 1u64 << blkszbits;
    let root = u16a(&sb, 14) as u64;
    let meta = u32a(&sb, 40) as u64 * bs;
    struct Ino {
        mode: u16,
        size: u64,
        u: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
        layout: u16,
        /// Where the inline tail begins (after the inode and its xattrs).
        tail: u64,
    }
    let inode = |nid: u64| -> std::result::Result<Ino, String> {
        let at = nid.checked_mul(32).and_then(|x| x.checked_add(meta)).ok_or_else(|| format!("inode number {nid} out of range"))?;
        let b = read(at, 32)?;
        let format = u16a(&b, 0);
        let icount = u16a(&b, 2) as u64;
        let xsize = if icount == 0 { 0 } else { 12 + (icount - 1) * 4 };
        let layout = (format >> 1) & 7;
        let i = if format & 1 == 1 {
            let b = read(at, 64)?;
            Ino { mode: u16a(&b, 4), size: u64a(&b, 8), u: u32a(&b, 16), uid: u32a(&b, 24), gid: u32a(&b, 28), mtime: u64a(&b, 32), layout, tail: at + 64 + xsize }
        } else {
            Ino { mode: u16a(&b, 4), size: u32a(&b, 8) as u64, u: u32a(&b, 16), uid: u16a(&b, 24) as u32, gid: u16a(&b, 26) as u32, mtime: u64a(&sb, 24), layout, tail: at + 32 + xsize }
        };
        Ok(i)
    };
    let data = |i: &Ino| -> std::result::Result<Vec<u8>, String> {
        if i.size > 64 << 20 {
            return Err(format!("a directory or symlink of {} bytes", i.size));
        }
        match i.layout {
            0 => read(i.u as u64 * bs, i.size as usize),
            2 => {
                let full = i.size / bs * bs;
                let mut v = if full > 0 { read(i.u as u64 * bs, full as usize)? } else { Vec::new() };
                v.extend(read(i.tail, (i.size - full) as usize)?);
                Ok(v)
            }
            l => Err(format!("data layout {l} (compressed or chunked) is not read here")),
        }
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // (nid, path); directories are entered once each.
    let mut stack = vec![(root, String::new())];
    while let Some((nid, path)) = stack.pop() {
        let i = inode(nid)?;
        let kind = kind_of_mode(i.mode as u32);
        let mut link = None;
        if kind == "symlink" {
            link = Some(String::from_utf8_lossy(&data(&i)?).into_owned());
        }
        out.push(Entry {
            path: if path.is_empty() { "/".into() } else { path.clone() },
            kind: kind.into(),
            mode: format!("{:04o}", i.mode & 0o7777),
            uid: i.uid as u64,
            gid: i.gid as u64,
            size: if kind == "file" || kind == "symlink" { i.size } else { 0 },
            mtime: i.mtime,
            link,
        });
        if kind != "dir" {
            continue;
        }
        if !seen.insert(nid) {
            return Err(format!("directory loop at {path:?}"));
        }
        let d = data(&i)?;
        let mut children = Vec::new();
        for block in d.chunks(bs as usize) {
            if block.len() < 12 {
                return Err(format!("{path:?}: directory block of {} bytes", block.len()));
            }
            let n = u16a(block, 8) as usize / 12;
            if n == 0 || n * 12 > block.len() {
                return Err(format!("{path:?}: bad directory block"));
            }
            for k in 0..n {
                let e = &block[k * 12..k * 12 + 12];
                let start = u16a(e, 8) as usize;
                let end = if k + 1 < n { u16a(block, (k + 1) * 12 + 8) as usize } else { block.len() };
                let name = block.get(start..end).ok_or_else(|| format!("{path:?}: name out of its block"))?;
                let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
                if name == b"." || name == b".." {
                    continue;
                }
                children.push((u64a(e, 0), format!("{path}/{}", String::from_utf8_lossy(name))));
            }
        }
        // Pushed in reverse so they come off the stack in name order.
        stack.extend(children.into_iter().rev());
    }
    Ok(out)
}

/// What a partition (or any span of a file) holds, by its first bytes.
pub fn span_kind(f: &File, at: u64) -> Option<Format> {
    let mut head = [0u8; 1100];
    read_at_most(f, &mut head, at).ok().filter(|n| *n == head.len())?;
    if &head[..4] == b"hsqs" {
        Some(Format::Squashfs)
    } else if head[1024..1028] == EROFS_MAGIC.to_le_bytes() {
        Some(Format::Erofs)
    } else {
        None
    }
}

/// Whether the span at `at` holds a FAT file system (boot sector signature and a FAT type
/// string).
pub fn is_fat(f: &File, at: u64) -> bool {
    let mut h = [0u8; 512];
    read_at_most(f, &mut h, at).ok() == Some(512) && h[510..512] == [0x55, 0xaa] && (&h[54..57] == b"FAT" || &h[82..85] == b"FAT")
}

/// A read-only window of a file (a partition), for readers that want `Read + Seek` (and,
/// for `fatfs`, `Write`, which fails here).
struct Window<'f> {
    f: &'f File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        let n = self.f.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Write for Window<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let p = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if p < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"));
        }
        self.pos = p as u64;
        Ok(self.pos)
    }
}

/// Every file and directory of the FAT file system in `len` bytes at `at` of `f`, with each
/// file's sha256, in path order (`fatfs` reads it; names as its long-name entries give them).
pub fn fat_entries(f: &File, at: u64, len: u64) -> std::result::Result<Vec<(Entry, Option<String>)>, String> {
    use sha2::Digest as _;
    let w = Window { f, start: at, len, pos: 0 };
    let fs = fatfs::FileSystem::new(w, fatfs::FsOptions::new()).map_err(|e| format!("FAT file system at byte {at}: {e}"))?;
    let mut out = Vec::new();
    let mut stack = vec![(fs.root_dir(), String::new(), 0usize)];
    while let Some((dir, path, depth)) = stack.pop() {
        if depth > 64 {
            return Err(format!("{path}: directories nested too deep"));
        }
        let mut here = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(|e| format!("{path}/: {e}"))?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            here.push(e);
        }
        here.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in here {
            let p = format!("{path}/{}", e.file_name());
            if e.is_dir() {
                out.push((Entry { path: p.clone(), kind: "dir".into(), mode: "0755".into(), uid: 0, gid: 0, size: 0, mtime: 0, link: None }, None));
                subdirs.push((e.to_dir(), p, depth + 1));
            } else {
                let mut h = sha2::Sha256::new();
                let mut file = e.to_file();
                let mut buf = vec![0u8; 1 << 16];
                let mut size = 0u64;
                loop {
                    let n = file.read(&mut buf).map_err(|err| format!("{p}: {err}"))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    size += n as u64;
                }
                let entry = Entry { path: p, kind: "file".into(), mode: "0644".into(), uid: 0, gid: 0, size, mtime: 0, link: None };
                out.push((entry, Some(hex::encode(h.finalize()))));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(out)
}
