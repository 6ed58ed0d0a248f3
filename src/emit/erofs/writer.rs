//! Tree → EROFS image: the layout of inodes, directories and data blocks, flat or with
//! compressed regular files.
//!
//! Written by hand (no crate writes EROFS; composefs-rs's writer is tied to its own tree
//! type). The layout is fixed by the tree alone: 4 KiB blocks; the superblock at 1024; every
//! inode an extended (64-byte) inode, in path order from the root (whose nid must fit 16
//! bits), with its xattrs inline and, when the tail of its data is at most half a block, that
//! tail inline after it (`FLAT_INLINE`, never crossing a block); then every inode's full data
//! blocks in the same order (`FLAT_PLAIN` when the tail is larger, zero-padded). Hardlinks
//! share one inode. No shared xattrs, no superblock checksum.
//!
//! With compression, regular files larger than a block are first compressed (`compress`,
//! on the build's threads, into spill files) and those that save a block become
//! `COMPRESSED_FULL` inodes: after the inode and its xattrs, 8-aligned, the map header, 8
//! reserved bytes and one 8-byte lcluster index per 4 KiB of the file; their pclusters take
//! the place of the data blocks, in the same inode order, so the layout stays "metadata, then
//! data". The superblock gains `ZERO_PADDING`, and for lzma `COMPR_CFGS` with the lzma config
//! record right after it (the first inode moves from 1152 to 1184). Uncompressed images are
//! byte for byte what they were before compression existed.
//!
//! On-disk facts (erofs_fs.h, and composefs's "erofs: the missing manual"): nid = inode
//! offset / 32 from `meta_blkaddr` (0 here); i_format = (layout << 1) | 1 for extended
//! inodes; directories hold sorted 12-byte dirents (`.` and `..` included, sorted like the
//! rest) followed by their names, per block; xattr names lose a known prefix (index 1 user,
//! 2/3 POSIX ACLs, 4 trusted, 6 security; 0 = none), entries 4-aligned after a 12-byte header,
//! `i_xattr_icount` = (xattr bytes − 12) / 4 + 1.

use super::compress::{self, Packed};
use super::format::*;
use crate::emit::dirtree::{self, Dirs};
use crate::spec::ErofsCompression;
use crate::tree::{ContentRef, Kind, Node, Tree};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{self, Read, Write};

/// The largest data tail stored inline: half a block, mkcomposefs's heuristic.
const INLINE_MAX: u64 = BLOCK / 2;
const DIRENT_SIZE: usize = 12;
/// The first inode's offset: right after the superblock, 32-aligned.
const FIRST_INODE: u64 = SUPER_OFFSET + SUPER_SIZE;
/// Xattr name prefixes with an index; anything else is stored whole under index 0.
const XATTR_PREFIXES: [(&str, u8); 5] =
    [("user.", 1), ("system.posix_acl_access", 2), ("system.posix_acl_default", 3), ("trusted.", 4), ("security.", 6)];

/// Settings of one image.
#[derive(Debug, Clone)]
pub struct Options {
    /// SOURCE_DATE_EPOCH: the build time and the clamp of every mtime.
    pub sde: u64,
    /// Volume name (at most 16 bytes are kept).
    pub label: String,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// `d_type` of a node.
fn file_type(k: &Kind) -> u8 {
    match k {
        Kind::File { .. } => 1,
        Kind::Dir => 2,
        Kind::Char { .. } => 3,
        Kind::Block { .. } => 4,
        Kind::Fifo => 5,
        Kind::Symlink { .. } => 7,
    }
}

fn s_ifmt(k: &Kind) -> u16 {
    match k {
        Kind::File { .. } => 0o100000,
        Kind::Dir => 0o040000,
        Kind::Char { .. } => 0o020000,
        Kind::Block { .. } => 0o060000,
        Kind::Fifo => 0o010000,
        Kind::Symlink { .. } => 0o120000,
    }
}

/// The inline xattr area of an inode (header + entries), empty when it has none.
fn xattr_body(path: &[u8], x: &std::collections::BTreeMap<String, Vec<u8>>) -> io::Result<Vec<u8>> {
    if x.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = vec![0u8; 12];
    for (name, value) in x {
        let (prefix, index) = XATTR_PREFIXES.iter().find(|(p, _)| name.starts_with(p)).map_or(("", 0), |&(p, i)| (p, i));
        let suffix = &name.as_bytes()[prefix.len()..];
        if suffix.len() > 255 || value.len() > u16::MAX as usize {
            return Err(invalid(format!("{}: xattr {name:?} is too long for EROFS", crate::tree::path::show(path))));
        }
        b.push(suffix.len() as u8);
        b.push(index);
        b.extend((value.len() as u16).to_le_bytes());
        b.extend(suffix);
        b.extend(value);
        b.resize(b.len().next_multiple_of(4), 0);
    }
    Ok(b)
}

/// A directory entry: its name and the index of the node it names.
type DirEntry<'t> = (&'t [u8], usize);

/// A directory's entries, `.` and `..` included, sorted bytewise.
fn dir_entries<'t>(i: usize, parent: usize, children: &[u32], nodes: &[(&'t [u8], &Node)]) -> Vec<DirEntry<'t>> {
    let mut v: Vec<DirEntry> = Vec::with_capacity(children.len() + 2);
    v.extend([(&b"."[..], i), (&b".."[..], parent)]);
    v.extend(children.iter().map(|&c| (dirtree::name(nodes[c as usize].0), c as usize)));
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Split sorted entries into blocks; returns the directory's size and each block's entries.
fn dir_blocks<'e, 't>(entries: &'e [DirEntry<'t>]) -> (u64, Vec<&'e [DirEntry<'t>]>) {
    let mut blocks = Vec::new();
    let (mut start, mut used) = (0, 0usize);
    for (k, (name, _)) in entries.iter().enumerate() {
        let need = DIRENT_SIZE + name.len();
        if used + need > BLOCK as usize {
            blocks.push(&entries[start..k]);
            start = k;
            used = 0;
        }
        used += need;
    }
    blocks.push(&entries[start..]);
    (BLOCK * (blocks.len() as u64 - 1) + used as u64, blocks)
}

/// One directory block's bytes (`size` of them: a full block, or the tail's length).
fn dir_block(entries: &[DirEntry], nid: &[u64], nodes: &[(&[u8], &Node)], size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(size);
    let mut nameoff = DIRENT_SIZE * entries.len();
    for (name, c) in entries {
        b.extend(nid[*c].to_le_bytes());
        b.extend((nameoff as u16).to_le_bytes());
        b.push(file_type(&nodes[*c].1.kind));
        b.push(0);
        nameoff += name.len();
    }
    for (name, _) in entries {
        b.extend(*name);
    }
    b.resize(size, 0);
    b
}

/// Write the tree as an uncompressed EROFS image into `out` (positioned at 0); returns its
/// size. File contents are read from the tree's spill files (`Tree::open`).
pub fn write<W: Write>(tree: &Tree, opts: &Options, out: &mut W) -> io::Result<u64> {
    write_compressed(tree, opts, ErofsCompression::None, 1, out)
}

/// An inode's shape, the same each time it is worked out from the tree (the layout, the
/// metadata and the data passes of [`write_compressed`] each do, rather than keep it).
struct Shape<'t> {
    size: u64,
    xattrs: Vec<u8>,
    /// Bytes of the data's tail stored after the inode.
    inline: u64,
    /// A directory's entries (empty for the rest).
    entries: Vec<DirEntry<'t>>,
}

/// [`write()`] with regular files compressed by `compression` on `threads` threads (the bytes
/// never depend on the thread count).
///
/// Memory: per path, its walk entry, [`Dirs`] and its nid (about 52 bytes); per hardlinked
/// inode its first path and link count; per compressed file a [`Packed`] (its extents wait in
/// a spill file). Everything else is worked out again from the tree in each pass and written
/// as it goes.
pub fn write_compressed<W: Write>(tree: &Tree, opts: &Options, compression: ErofsCompression, threads: usize, out: &mut W) -> io::Result<u64> {
    let nodes: Vec<(&[u8], &Node)> = tree.walk().collect();
    for (p, _) in &nodes[1.min(nodes.len())..] {
        if dirtree::name(p).len() > 255 {
            return Err(invalid(format!("{}: an EROFS name is at most 255 bytes", crate::tree::path::show(p))));
        }
    }
    let dirs = Dirs::new(&nodes);

    // The inode of each node: hardlinks share their first path's. Only inodes that may have
    // several paths are remembered (first path, link count).
    let mut linked: HashMap<u64, (u32, u32)> = HashMap::new();
    for (i, (_, n)) in nodes.iter().enumerate() {
        if let Kind::File { inode, .. } = n.kind {
            if tree.maybe_linked(inode) {
                linked.entry(inode).or_insert((i as u32, 0)).1 += 1;
            }
        }
    }
    let owner = |i: usize| match nodes[i].1.kind {
        Kind::File { inode, .. } => linked.get(&inode).map_or(i, |&(f, _)| f as usize),
        _ => i,
    };

    // Compress regular files bigger than a block (smaller ones cannot save one).
    let alg = compress::algorithm(compression);
    let mut packed: Vec<(u32, Packed)> = Vec::new();
    let mut spills = None;
    if alg.is_some() {
        let files: Vec<u32> = (0..nodes.len())
            .filter(|&i| matches!(nodes[i].1.kind, Kind::File { content, .. } if owner(i) == i && content.len > BLOCK))
            .map(|i| i as u32)
            .collect();
        let (p, s) = compress::files(tree, &nodes, &files, compression, threads)?;
        packed = p;
        spills = Some(s);
    }
    let packed_of = |i: usize| packed.binary_search_by_key(&(i as u32), |p| p.0).ok().map(|k| &packed[k].1);
    // Compression configs after the superblock (lzma only; lz4 keeps the defaults).
    let cfgs = if alg == Some(ALG_LZMA) { lzma_cfg(compress::LZMA_DICT) } else { Vec::new() };

    let shape = |i: usize| -> io::Result<Shape> {
        let (path, node) = nodes[i];
        let mut entries = Vec::new();
        let size = match &node.kind {
            Kind::File { content, .. } => content.len,
            Kind::Symlink { target } => target.len() as u64,
            Kind::Dir => {
                entries = dir_entries(i, dirs.parent(i), dirs.children(i), &nodes);
                dir_blocks(&entries).0
            }
            _ => 0,
        };
        let xattrs = xattr_body(path, &node.meta.xattrs)?;
        let tail = size % BLOCK;
        let has_data = matches!(node.kind, Kind::File { .. } | Kind::Dir | Kind::Symlink { .. });
        let inline = if has_data && packed_of(i).is_none() && tail <= INLINE_MAX { tail } else { 0 };
        Ok(Shape { size, xattrs, inline, entries })
    };
    let data_blocks = |i: usize, s: &Shape| match packed_of(i) {
        Some(k) => k.count as u64,
        None => (s.size - s.inline).div_ceil(BLOCK),
    };

    // Lay out: sizes, inline tails, inode offsets (kept as nids), then data blocks.
    let mut uuid = Sha256::new();
    let mut nid = vec![0u64; nodes.len()];
    let mut inode_count = 0u64;
    let mut data_total = 0u64;
    let mut pos = (FIRST_INODE + cfgs.len() as u64).next_multiple_of(32);
    for (i, (path, node)) in nodes.iter().enumerate() {
        let o = owner(i);
        if o != i {
            nid[i] = nid[o];
            continue;
        }
        let s = shape(i)?;
        uuid.update(path);
        uuid.update([0]);
        uuid.update(s.size.to_le_bytes());
        uuid.update(node.meta.mode.to_le_bytes());
        // Keep the 64-byte header in one block, and the inline tail in the block where the
        // inode's metadata ends.
        if pos % BLOCK > BLOCK - INODE_SIZE {
            pos = pos.next_multiple_of(BLOCK);
        }
        let meta_end = pos + INODE_SIZE + s.xattrs.len() as u64;
        if s.inline > 0 && meta_end / BLOCK != (meta_end + s.inline - 1) / BLOCK {
            pos = pos.next_multiple_of(BLOCK);
        }
        if i == 0 && pos / 32 > u16::MAX as u64 {
            return Err(invalid("the root inode does not fit EROFS's 16-bit root nid".into()));
        }
        let meta_end = pos + INODE_SIZE + s.xattrs.len() as u64;
        let next = if packed_of(i).is_some() { meta_end.next_multiple_of(8) + FULL_INDEX_HEADER + s.size.div_ceil(BLOCK) * LCLUSTER_INDEX_SIZE } else { meta_end + s.inline };
        nid[i] = pos / 32;
        inode_count += 1;
        data_total += data_blocks(i, &s);
        pos = next.next_multiple_of(32);
    }
    let meta_blocks = pos.div_ceil(BLOCK);
    let total_blocks = meta_blocks + data_total;

    // The metadata area, in order: zeros, the superblock, inodes with their xattrs and inline
    // tails (each at its offset, zeros between).
    let mut sb = Vec::with_capacity(128);
    sb.extend(MAGIC.to_le_bytes());
    sb.extend(0u32.to_le_bytes()); // checksum (feature off)
    sb.extend(COMPAT_MTIME.to_le_bytes());
    sb.push(BLKSZBITS);
    sb.push(0); // sb_extslots
    sb.extend((nid[0] as u16).to_le_bytes());
    sb.extend(inode_count.to_le_bytes());
    sb.extend(opts.sde.to_le_bytes());
    sb.extend(0u32.to_le_bytes()); // build_time_nsec
    sb.extend(u32::try_from(total_blocks).map_err(|_| invalid("image too large for EROFS's 32-bit block count".into()))?.to_le_bytes());
    sb.extend(0u32.to_le_bytes()); // meta_blkaddr
    sb.extend(0u32.to_le_bytes()); // xattr_blkaddr
    sb.extend(&uuid.finalize()[..16]);
    let mut label = [0u8; 16];
    let l = opts.label.as_bytes();
    label[..l.len().min(16)].copy_from_slice(&l[..l.len().min(16)]);
    sb.extend(label);
    let mut incompat = 0;
    if alg.is_some() {
        incompat |= INCOMPAT_ZERO_PADDING;
    }
    if !cfgs.is_empty() {
        incompat |= INCOMPAT_COMPR_CFGS;
    }
    sb.extend(incompat.to_le_bytes());
    // available_compr_algs with COMPR_CFGS; else lz4_max_distance, 0 = lz4's default.
    let algs: u16 = if cfgs.is_empty() { 0 } else { 1 << alg.expect("configs only with compression") };
    sb.extend(algs.to_le_bytes());
    sb.resize(SUPER_SIZE as usize, 0); // the rest
    out.write_all(&[0u8; SUPER_OFFSET as usize])?;
    out.write_all(&sb)?;
    out.write_all(&cfgs)?;
    let mut at = FIRST_INODE + cfgs.len() as u64;
    let zeros = [0u8; BLOCK as usize];

    let mut block = meta_blocks;
    let mut b = Vec::new();
    for (i, (path, node)) in nodes.iter().enumerate() {
        if owner(i) != i {
            continue;
        }
        let p = shape(i)?;
        let k = packed_of(i);
        let blocks = data_blocks(i, &p);
        let blkaddr = if blocks > 0 { block } else { 0 };
        block += blocks;
        let m = &node.meta;
        let layout = if k.is_some() {
            COMPRESSED_FULL
        } else if p.inline > 0 || p.size == 0 {
            FLAT_INLINE
        } else {
            FLAT_PLAIN
        };
        let nlink = match &node.kind {
            Kind::Dir => 2 + dirs.children(i).iter().filter(|&&c| nodes[c as usize].1.kind == Kind::Dir).count() as u32,
            Kind::File { inode, .. } => linked.get(inode).map_or(1, |l| l.1),
            _ => 1,
        };
        let i_u = match &node.kind {
            Kind::Char { major, minor } | Kind::Block { major, minor } => crate::emit::squashfs::format::encode_dev(*major, *minor),
            // i_u.compressed_blocks
            _ if k.is_some() => k.map_or(0, |k| k.count),
            _ => blkaddr as u32,
        };
        let uid = u32::try_from(m.uid).map_err(|_| invalid(format!("{}: owner {} does not fit 32 bits", crate::tree::path::show(path), m.uid)))?;
        let gid = u32::try_from(m.gid).map_err(|_| invalid(format!("{}: group {} does not fit 32 bits", crate::tree::path::show(path), m.gid)))?;
        let icount = if p.xattrs.is_empty() { 0 } else { (p.xattrs.len() - 12) / 4 + 1 };
        let pos = nid[i] * 32;
        b.clear();
        b.extend(((layout << 1) | 1).to_le_bytes());
        b.extend((icount as u16).to_le_bytes());
        b.extend((s_ifmt(&node.kind) | (m.mode & 0o7777) as u16).to_le_bytes());
        b.extend(0u16.to_le_bytes());
        b.extend(p.size.to_le_bytes());
        b.extend(i_u.to_le_bytes());
        b.extend(((nid[i] & 0xffff_ffff) as u32).to_le_bytes()); // i_ino
        b.extend(uid.to_le_bytes());
        b.extend(gid.to_le_bytes());
        b.extend(m.clamped_mtime(opts.sde).to_le_bytes());
        b.extend(0u32.to_le_bytes()); // mtime_nsec
        b.extend(nlink.to_le_bytes());
        b.resize(64, 0);
        b.extend(&p.xattrs);
        if let Some(k) = k {
            b.resize(b.len().next_multiple_of(8), 0);
            b.extend(map_header(alg.expect("packed only with compression")));
            b.resize(b.len() + 8, 0);
            spills.as_ref().expect("packed only with compression").indexes(k, blkaddr as u32, &mut b)?;
            debug_assert_eq!(b.len() as u64, (pos + INODE_SIZE + p.xattrs.len() as u64).next_multiple_of(8) + FULL_INDEX_HEADER + p.size.div_ceil(BLOCK) * LCLUSTER_INDEX_SIZE - pos);
        }
        if p.inline > 0 {
            let full = p.size - p.inline;
            match &node.kind {
                Kind::File { content, .. } => {
                    let tail = ContentRef { offset: content.offset + full, len: p.inline, ..*content };
                    let at = b.len();
                    b.resize(at + p.inline as usize, 0);
                    tree.open(&tail).read_exact(&mut b[at..]).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", crate::tree::path::show(path))))?;
                }
                Kind::Symlink { target } => b.extend(target),
                Kind::Dir => {
                    let (_, blocks) = dir_blocks(&p.entries);
                    b.extend(dir_block(blocks.last().expect("a directory has . and .."), &nid, &nodes, p.inline as usize));
                }
                _ => {}
            }
        }
        debug_assert!(pos >= at);
        write_zeros(out, pos - at, &zeros)?;
        out.write_all(&b)?;
        at = pos + b.len() as u64;
    }
    write_zeros(out, meta_blocks * BLOCK - at, &zeros)?;

    // Data blocks, in inode order.
    let mut buf = vec![0u8; 1 << 20];
    for (i, (path, node)) in nodes.iter().enumerate() {
        if owner(i) != i {
            continue;
        }
        let full = match &node.kind {
            Kind::File { content, .. } => content.len,
            Kind::Symlink { target } => target.len() as u64,
            Kind::Dir => u64::MAX, // worked out below
            _ => 0,
        };
        if full == 0 {
            continue;
        }
        let p = shape(i)?;
        let full = p.size - p.inline;
        if full == 0 {
            continue;
        }
        if let Some(k) = packed_of(i) {
            spills.as_ref().expect("packed only with compression").copy_data(k, out, &mut buf)?;
            continue;
        }
        match &node.kind {
            Kind::File { content, .. } => {
                let mut r = tree.open(&ContentRef { len: full, ..*content });
                crate::fsutil::copy_exact(&mut r, out, full, &mut buf).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", crate::tree::path::show(path))))?;
            }
            Kind::Symlink { target } => out.write_all(target)?,
            Kind::Dir => {
                let (size, blocks) = dir_blocks(&p.entries);
                let n = if p.inline > 0 { blocks.len() - 1 } else { blocks.len() };
                for (k, entries) in blocks[..n].iter().enumerate() {
                    let len = if (k as u64 + 1) * BLOCK <= size { BLOCK } else { size % BLOCK };
                    out.write_all(&dir_block(entries, &nid, &nodes, len as usize))?;
                }
            }
            _ => {}
        }
        let pad = full.next_multiple_of(BLOCK) - full;
        write_zeros(out, pad, &zeros)?;
    }
    Ok(total_blocks * BLOCK)
}

/// `n` zero bytes.
fn write_zeros(out: &mut impl Write, mut n: u64, zeros: &[u8]) -> io::Result<()> {
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..k])?;
        n -= k as u64;
    }
    Ok(())
}
