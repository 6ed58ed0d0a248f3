//! SquashFS image → readable summary and entry list, for `stagebox inspect` and reviews. Reads
//! what [`super::writer`] writes (and mksquashfs's images without fragments or with them, for
//! listing): superblock, id table, inode and directory tables. Malformed input gives an
//! error, never a panic; every offset is checked before use, and each directory is entered
//! once, so a hostile image cannot loop.

use super::format as f;
use serde::Serialize;
use std::collections::HashSet;
use std::io::Read;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub inode: u32,
    pub nlink: u32,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    pub xattrs: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Description {
    pub compression: &'static str,
    pub block_size: u32,
    pub inodes: u32,
    pub ids: Vec<u32>,
    pub mtime: u32,
    pub bytes_used: u64,
    pub fragments: u32,
    pub xattrs: bool,
    pub entries: Vec<Entry>,
}

fn bad(m: impl Into<String>) -> String {
    format!("not a valid squashfs image: {}", m.into())
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, String> {
    b.get(o..o + 2).map(|s| u16::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| bad(format!("truncated at {o}")))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, String> {
    b.get(o..o + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| bad(format!("truncated at {o}")))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, String> {
    b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| bad(format!("truncated at {o}")))
}

fn decompress(comp: u16, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let r: std::io::Result<usize> = match comp {
        f::COMP_GZIP => flate2::read::ZlibDecoder::new(data).take(limit as u64 + 1).read_to_end(&mut out),
        f::COMP_XZ => liblzma::read::XzDecoder::new(data).take(limit as u64 + 1).read_to_end(&mut out),
        f::COMP_ZSTD => zstd::stream::read::Decoder::new(data).and_then(|d| d.take(limit as u64 + 1).read_to_end(&mut out)),
        c => return Err(bad(format!("compressor {c} is not supported here"))),
    };
    r.map_err(|e| bad(format!("a block does not decompress: {e}")))?;
    if out.len() > limit {
        return Err(bad("a block decompresses to more than its size"));
    }
    Ok(out)
}

/// The parts of an image [`describe`] reads: the superblock, and the tail from the inode
/// table to the end (the data blocks before it are never read).
pub struct Image<'a> {
    pub superblock: &'a [u8],
    pub tail: &'a [u8],
    /// Absolute offset of `tail[0]`.
    pub base: u64,
}

impl<'a> Image<'a> {
    /// A whole image in memory.
    pub fn whole(img: &'a [u8]) -> Self {
        Image { superblock: img, tail: img, base: 0 }
    }

    /// `len` bytes at absolute offset `at`, from the tail.
    fn get(&self, at: u64, len: usize) -> Result<&'a [u8], String> {
        let rel = at.checked_sub(self.base).ok_or_else(|| bad(format!("offset {at} points into the data area")))? as usize;
        self.tail.get(rel..rel.saturating_add(len)).filter(|s| s.len() == len).ok_or_else(|| bad(format!("truncated at {at}")))
    }

    fn end(&self) -> u64 {
        self.base + self.tail.len() as u64
    }
}

/// A metadata table read from `start` to `end`: its uncompressed bytes, and the uncompressed
/// offset of each block by its on-disk offset from `start`.
struct Table {
    bytes: Vec<u8>,
    blocks: std::collections::HashMap<u64, usize>,
}

/// Most bytes of metadata read from the file, and decompressed into one table; most entries
/// listed and bytes of their paths: a hostile image is refused well under 200 MiB
/// (docs/limits.md).
const MAX_TAIL: u64 = 32 << 20;
const MAX_TABLE: usize = 32 << 20;
const MAX_ENTRIES: usize = 200_000;
const MAX_PATH_BYTES: usize = 32 << 20;

fn read_table(img: &Image, comp: u16, start: u64, end: u64) -> Result<Table, String> {
    if start > end || end > img.end() {
        return Err(bad("a table lies outside the image"));
    }
    let mut t = Table { bytes: Vec::new(), blocks: Default::default() };
    let mut pos = start;
    while pos < end {
        let h = u16_at(img.get(pos, 2)?, 0)?;
        let len = (h & !f::METADATA_UNCOMPRESSED) as usize;
        let data = img.get(pos + 2, len)?;
        t.blocks.insert(pos - start, t.bytes.len());
        if h & f::METADATA_UNCOMPRESSED != 0 {
            t.bytes.extend_from_slice(data);
        } else {
            t.bytes.extend(decompress(comp, data, f::METADATA_SIZE)?);
        }
        pos += 2 + len as u64;
        if t.bytes.len() > MAX_TABLE {
            return Err(bad(format!("a metadata table of more than {MAX_TABLE} bytes; refusing")));
        }
    }
    Ok(t)
}

impl Table {
    fn at(&self, block: u64, offset: usize) -> Result<usize, String> {
        let base = self.blocks.get(&block).ok_or_else(|| bad(format!("no metadata block at {block}")))?;
        let p = base + offset;
        if p > self.bytes.len() {
            return Err(bad("a reference points past its table"));
        }
        Ok(p)
    }
}

fn kind_name(t: u16) -> &'static str {
    match t {
        f::DIR | f::EXT_DIR => "dir",
        f::FILE | f::EXT_FILE => "file",
        f::SYMLINK | f::EXT_SYMLINK => "symlink",
        f::BLKDEV | f::EXT_BLKDEV => "block",
        f::CHRDEV | f::EXT_CHRDEV => "char",
        f::FIFO | f::EXT_FIFO => "fifo",
        _ => "socket",
    }
}

/// Read an image's superblock and every entry, root first, in directory order.
pub fn describe(im: &Image) -> Result<Description, String> {
    let img = im.superblock;
    if img.len() < f::Superblock::SIZE || u32_at(img, 0)? != f::MAGIC {
        return Err(bad("no squashfs superblock (magic hsqs)"));
    }
    if u16_at(img, 28)? != 4 {
        return Err(bad(format!("version {}.{}, only 4.0 is read", u16_at(img, 28)?, u16_at(img, 30)?)));
    }
    let inodes = u32_at(img, 4)?;
    let comp = u16_at(img, 20)?;
    let flags = u16_at(img, 24)?;
    let id_count = u16_at(img, 26)? as usize;
    let root = u64_at(img, 32)?;
    let bytes_used = u64_at(img, 40)?;
    let id_table = u64_at(img, 48)?;
    let inode_table = u64_at(img, 64)?;
    let dir_table = u64_at(img, 72)?;
    let frag_table = u64_at(img, 80)?;
    let fragments = u32_at(img, 16)?;
    // The id index: one u64 per metadata block of ids.
    let mut ids = Vec::new();
    let mut first_id_block = u64::MAX;
    for i in 0..(id_count * 4).div_ceil(f::METADATA_SIZE) {
        let blk = u64_at(im.get(id_table.saturating_add(8 * i as u64), 8)?, 0)?;
        first_id_block = first_id_block.min(blk);
        let h = u16_at(im.get(blk, 2)?, 0)?;
        let len = (h & !f::METADATA_UNCOMPRESSED) as usize;
        let data = im.get(blk + 2, len)?;
        let raw = if h & f::METADATA_UNCOMPRESSED != 0 { data.to_vec() } else { decompress(comp, data, f::METADATA_SIZE)? };
        ids.extend(raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).take(id_count - ids.len()));
    }
    // The directory table ends where the next table starts (fragments, export, ids).
    let dir_end = [frag_table, u64_at(img, 88)?, first_id_block, id_table]
        .into_iter()
        .filter(|&t| t > dir_table && t <= bytes_used)
        .min()
        .unwrap_or(bytes_used);
    let itab = read_table(im, comp, inode_table, dir_table)?;
    let dtab = read_table(im, comp, dir_table, dir_end)?;
    let id = |i: u16| ids.get(i as usize).copied().ok_or_else(|| bad(format!("owner index {i} past the id table")));

    let mut entries = Vec::new();
    let mut seen_dirs = HashSet::new();
    let mut stack = vec![(String::new(), root)];
    let mut path_bytes = 0;
    while let Some((path, r)) = stack.pop() {
        path_bytes += path.len();
        if entries.len() >= MAX_ENTRIES || path_bytes > MAX_PATH_BYTES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries or {MAX_PATH_BYTES} bytes of paths; refusing")));
        }
        let p = itab.at(r >> 16, (r & 0xffff) as usize)?;
        let b = &itab.bytes[p..];
        let t = u16_at(b, 0)?;
        let mode = u16_at(b, 2)?;
        let (uid, gid, mtime, number) = (id(u16_at(b, 4)?)?, id(u16_at(b, 6)?)?, u32_at(b, 8)?, u32_at(b, 12)?);
        let mut e = Entry {
            path: if path.is_empty() { "/".into() } else { path.clone() },
            kind: kind_name(t),
            mode: format!("{mode:04o}"),
            uid,
            gid,
            mtime,
            inode: number,
            nlink: 1,
            size: 0,
            target: None,
            rdev: None,
            xattrs: false,
        };
        match t {
            f::DIR | f::EXT_DIR => {
                let (block, nlink, size, offset) = if t == f::DIR {
                    (u32_at(b, 16)? as u64, u32_at(b, 20)?, u16_at(b, 24)? as u64, u16_at(b, 26)? as usize)
                } else {
                    e.xattrs = u32_at(b, 36)? != f::INVALID_U32;
                    (u32_at(b, 24)? as u64, u32_at(b, 16)?, u32_at(b, 20)? as u64, u16_at(b, 34)? as usize)
                };
                e.nlink = nlink;
                e.size = size;
                entries.push(e);
                if !seen_dirs.insert(r) {
                    return Err(bad(format!("{path}: a directory appears twice (a loop)")));
                }
                let start = dtab.at(block, offset)?;
                let end = start + (size as usize).saturating_sub(3);
                let listing = dtab.bytes.get(start..end).ok_or_else(|| bad(format!("{path}: listing past the directory table")))?;
                let mut children = Vec::new();
                let mut q = 0;
                while q < listing.len() {
                    let count = u32_at(listing, q)? as usize + 1;
                    let iblock = u32_at(listing, q + 4)? as u64;
                    q += 12;
                    for _ in 0..count {
                        let off = u16_at(listing, q)? as u64;
                        let nlen = u16_at(listing, q + 6)? as usize + 1;
                        let name = listing.get(q + 8..q + 8 + nlen).ok_or_else(|| bad(format!("{path}: truncated entry")))?;
                        let name = String::from_utf8_lossy(name);
                        if name.contains('/') || name == "." || name == ".." {
                            return Err(bad(format!("{path}: entry name {name:?}")));
                        }
                        children.push((format!("{path}/{name}"), (iblock << 16) | off));
                        q += 8 + nlen;
                    }
                }
                stack.extend(children.into_iter().rev());
                continue;
            }
            f::FILE => e.size = u32_at(b, 28)? as u64,
            f::EXT_FILE => {
                e.size = u64_at(b, 24)?;
                e.nlink = u32_at(b, 40)?;
                e.xattrs = u32_at(b, 52)? != f::INVALID_U32;
            }
            f::SYMLINK | f::EXT_SYMLINK => {
                e.nlink = u32_at(b, 16)?;
                let n = u32_at(b, 20)? as usize;
                let target = b.get(24..24 + n).ok_or_else(|| bad(format!("{path}: truncated symlink")))?;
                e.target = Some(String::from_utf8_lossy(target).into_owned());
                e.size = n as u64;
                e.xattrs = t == f::EXT_SYMLINK && u32_at(b, 24 + n)? != f::INVALID_U32;
            }
            f::BLKDEV | f::CHRDEV | f::EXT_BLKDEV | f::EXT_CHRDEV => {
                e.nlink = u32_at(b, 16)?;
                let d = u32_at(b, 20)?;
                e.rdev = Some(((d >> 8) & 0xfff, (d & 0xff) | ((d >> 12) & 0xfff00)));
                e.xattrs = matches!(t, f::EXT_BLKDEV | f::EXT_CHRDEV) && u32_at(b, 24)? != f::INVALID_U32;
            }
            f::FIFO | f::EXT_FIFO | 7 | 14 => {
                e.nlink = u32_at(b, 16)?;
                e.xattrs = t >= f::EXT_FIFO && u32_at(b, 20)? != f::INVALID_U32;
            }
            other => return Err(bad(format!("{path}: inode type {other}"))),
        }
        entries.push(e);
    }
    Ok(Description {
        compression: match comp {
            f::COMP_GZIP => "gzip",
            f::COMP_XZ => "xz",
            f::COMP_ZSTD => "zstd",
            _ => "other",
        },
        block_size: u32_at(img, 12)?,
        inodes,
        ids,
        mtime: u32_at(img, 8)?,
        bytes_used,
        fragments,
        xattrs: flags & f::FLAG_NO_XATTRS == 0 && u64_at(img, 56)? != f::INVALID_U64,
        entries,
    })
}

/// Describe the image in file `p`, reading only its superblock and tables.
pub fn describe_file(p: &std::path::Path) -> std::io::Result<Description> {
    describe_file_at(&std::fs::File::open(p)?, 0)
}

/// Describe the image that starts `at` bytes into `f` (a partition of a disk image).
pub fn describe_file_at(f: &std::fs::File, at: u64) -> std::io::Result<Description> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len().saturating_sub(at);
    let mut sb = vec![0u8; f::Superblock::SIZE.min(len as usize)];
    f.read_exact_at(&mut sb, at)?;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let base = u64_at(&sb, 64).map_err(invalid)?.min(len);
    // Tables end at bytes_used; never read past it (a partition may be followed by others).
    let end = u64_at(&sb, 40).map_err(invalid)?.clamp(base, len);
    if end - base > MAX_TAIL {
        return Err(invalid(bad(format!("{} bytes of metadata tables; refusing more than {MAX_TAIL}", end - base))));
    }
    let mut tail = vec![0u8; (end - base) as usize];
    f.read_exact_at(&mut tail, at + base)?;
    describe(&Image { superblock: &sb, tail: &tail, base }).map_err(invalid)
}

/// The description as text: a summary, then one line per entry
/// (`TYPE MODE UID:GID NLINK SIZE MTIME PATH [-> TARGET]`).
pub fn dump(d: &Description) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "squashfs 4.0: {} compression, {} KiB blocks, {} inodes, {} fragments, ids {:?}, xattrs {}, {} bytes used, mtime {}\n",
        d.compression,
        d.block_size / 1024,
        d.inodes,
        d.fragments,
        d.ids,
        if d.xattrs { "yes" } else { "no" },
        d.bytes_used,
        d.mtime
    );
    for e in &d.entries {
        let _ = write!(s, "{:<7} {} {}:{} {} {} {} {}", e.kind, e.mode, e.uid, e.gid, e.nlink, e.size, e.mtime, e.path);
        if let Some(t) = &e.target {
            let _ = write!(s, " -> {t}");
        }
        if let Some((ma, mi)) = e.rdev {
            let _ = write!(s, " [{ma},{mi}]");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SquashfsCompression;
    use crate::tree::testutil::tree;

    fn image(c: SquashfsCompression) -> Vec<u8> {
        let t = tree(&[
            ("etc", "dir", 0o755, 5),
            ("etc/hosts", "file:127.0.0.1 localhost\n", 0o644, 5),
            ("usr", "dir", 0o755, 5),
            ("usr/bin", "dir", 0o755, 5),
            ("usr/bin/tool", "file:#!/bin/sh\n", 0o755, 5),
            ("usr/bin/alias", "hard:usr/bin/tool", 0o755, 5),
            ("usr/bin/sh", "link:tool", 0o777, 5),
            ("dev", "dir", 0o755, 5),
            ("dev/null", "chr:1,3", 0o666, 5),
            ("run", "fifo", 0o600, 5),
        ]);
        let mut out = std::io::Cursor::new(Vec::new());
        crate::emit::squashfs::write(&t, &crate::emit::squashfs::Options { compression: c, sde: 3, threads: 2 }, &mut out).unwrap();
        out.into_inner()
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        for c in [SquashfsCompression::Gzip, SquashfsCompression::Xz, SquashfsCompression::Zstd] {
            let img = image(c);
            let d = describe(&Image::whole(&img)).unwrap();
            let rows: Vec<String> = d.entries.iter().map(|e| format!("{} {} {} {} {:?} {:?}", e.kind, e.mode, e.nlink, e.path, e.target, e.rdev)).collect();
            assert_eq!(
                rows,
                [
                    "dir 0755 5 / None None",
                    "dir 0755 2 /dev None None",
                    "char 0666 1 /dev/null None Some((1, 3))",
                    "dir 0755 2 /etc None None",
                    "file 0644 1 /etc/hosts None None",
                    "fifo 0600 1 /run None None",
                    "dir 0755 3 /usr None None",
                    "dir 0755 2 /usr/bin None None",
                    "file 0755 2 /usr/bin/alias None None",
                    "symlink 0777 1 /usr/bin/sh Some(\"tool\") None",
                    "file 0755 2 /usr/bin/tool None None",
                ],
                "{c:?}"
            );
            let alias = d.entries.iter().find(|e| e.path == "/usr/bin/alias").unwrap();
            let tool = d.entries.iter().find(|e| e.path == "/usr/bin/tool").unwrap();
            assert_eq!(alias.inode, tool.inode, "hardlinks share one inode");
            // Entries at 5 are clamped to SOURCE_DATE_EPOCH (3); the implicit root keeps 1.
            assert!(d.entries.iter().all(|e| e.mtime == if e.path == "/" { 1 } else { 3 }), "{:?}", d.entries);
            assert_eq!(img.len() % 4096, 0);
        }
    }

    #[test]
    fn damaged_images_give_errors_not_panics() {
        let img = image(SquashfsCompression::Gzip);
        for cut in (0..img.len()).step_by(97) {
            let _ = describe(&Image::whole(&img[..cut]));
        }
        let mut x = 0x9e3779b97f4a7c15u64;
        for _ in 0..3000 {
            let mut m = img.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % m.len() as u64) as usize;
                m[i] ^= (x >> 32) as u8 | 1;
            }
            let _ = describe(&Image::whole(&m));
        }
    }
}
