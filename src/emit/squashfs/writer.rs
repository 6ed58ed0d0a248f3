//! Tree → SquashFS 4.0 image, laid out the way mksquashfs lays it out: superblock, data
//! blocks (each file's, in path order, no fragments), then the inode, directory, id and xattr
//! tables. Identical contents are stored once, as mksquashfs's duplicate check does: a file
//! whose bytes equal an earlier file's (same length, same SHA-256; only lengths two files
//! share are hashed) points at that file's blocks. Inode numbers are given in post-order (children before their directory, the root
//! last), so every directory entry points at an inode already written; hardlinks share one
//! inode with its link count. Every input to the layout comes from the tree: the bytes depend
//! on nothing else.

use super::format::{self as f, Superblock};
use crate::emit::dirtree::{self, Dirs};
use crate::spec::SquashfsCompression;
use crate::tree::{ContentRef, Kind, Node, Tree};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Settings of one image.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub compression: SquashfsCompression,
    /// SOURCE_DATE_EPOCH: the superblock's time and the clamp of every mtime.
    pub sde: u64,
    /// Threads compressing data blocks. Never changes the bytes: each block is compressed on
    /// its own and written in order.
    pub threads: usize,
}

/// Compression levels, part of the format. xz and zstd: mksquashfs's defaults (xz preset 6
/// with a dictionary of one block, zstd 15), so sizes compare with what users get today.
/// gzip: libdeflate's level 6, which makes blocks as small as zlib's level 9 (mksquashfs's
/// default) in a third of the time: on the benchmark image's first 200 MB, in 128 KiB
/// blocks, 71,244,023 bytes in 6.7 s against zlib-rs level 9's 71,320,927 in 22.1 s
/// (docs/benchmarks.md). Its output, like zlib's, depends only on the input and the level.
const GZIP_LEVEL: i32 = 6;
const XZ_PRESET: u32 = 6;
const ZSTD_LEVEL: i32 = 15;
/// Data blocks compressed per batch (per thread): bounds memory at about 8 MiB a thread.
const BATCH_PER_THREAD: usize = 64;

fn compressor_id(c: SquashfsCompression) -> u16 {
    match c {
        SquashfsCompression::Gzip => f::COMP_GZIP,
        SquashfsCompression::Xz => f::COMP_XZ,
        SquashfsCompression::Zstd => f::COMP_ZSTD,
    }
}

thread_local! {
    /// Each compressing thread's libdeflate state (~1 MiB, made once rather than per block).
    static ZLIB: std::cell::RefCell<Option<libdeflater::Compressor>> = const { std::cell::RefCell::new(None) };
}

/// One block (data or metadata) compressed as squashfs's decompressors expect it: a zlib
/// stream, an .xz stream with a CRC-32 check and a one-block dictionary (the kernel refuses
/// a larger one without compressor options), or a zstd frame.
fn compress(c: SquashfsCompression, data: &[u8]) -> io::Result<Vec<u8>> {
    match c {
        SquashfsCompression::Gzip => ZLIB.with_borrow_mut(|z| {
            let c = z.get_or_insert_with(|| libdeflater::Compressor::new(libdeflater::CompressionLvl::new(GZIP_LEVEL).expect("level 6 is valid")));
            let mut out = vec![0; c.zlib_compress_bound(data.len())];
            let n = c.zlib_compress(data, &mut out).map_err(|e| io::Error::other(format!("zlib compression: {e:?}")))?;
            out.truncate(n);
            Ok(out)
        }),
        SquashfsCompression::Xz => {
            let mut opts = liblzma::stream::LzmaOptions::new_preset(XZ_PRESET).map_err(io::Error::other)?;
            opts.dict_size(f::BLOCK_SIZE);
            let mut filters = liblzma::stream::Filters::new();
            filters.lzma2(&opts);
            let stream = liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32).map_err(io::Error::other)?;
            let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            e.write_all(data)?;
            e.finish()
        }
        SquashfsCompression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL),
    }
}

/// A metadata table being written into `sink`: 8 KiB blocks, each compressed (or stored, when
/// that is not smaller) behind a 16-bit header.
struct MetaWriter<S: Write> {
    c: SquashfsCompression,
    sink: S,
    /// Bytes written to `sink`.
    len: u64,
    cur: Vec<u8>,
    /// Offset in the table where each block starts (for tables with an index).
    starts: Vec<u64>,
}

impl<S: Write> MetaWriter<S> {
    fn new(c: SquashfsCompression, sink: S) -> Self {
        MetaWriter { c, sink, len: 0, cur: Vec::with_capacity(f::METADATA_SIZE), starts: Vec::new() }
    }

    /// Where the next byte goes: (block start in the table, offset in the block).
    fn here(&self) -> (u64, u16) {
        (self.len, self.cur.len() as u16)
    }

    fn push(&mut self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            let n = (f::METADATA_SIZE - self.cur.len()).min(b.len());
            self.cur.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.cur.len() == f::METADATA_SIZE {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.starts.push(self.len);
        let z = compress(self.c, &self.cur)?;
        let (header, body) = if z.len() < self.cur.len() { (z.len() as u16, &z[..]) } else { (self.cur.len() as u16 | f::METADATA_UNCOMPRESSED, &self.cur[..]) };
        self.sink.write_all(&header.to_le_bytes())?;
        self.sink.write_all(body)?;
        self.len += 2 + body.len() as u64;
        self.cur.clear();
        Ok(())
    }

    /// The sink, the table's length and where its blocks start.
    fn finish(mut self) -> io::Result<(S, u64, Vec<u64>)> {
        if !self.cur.is_empty() {
            self.flush()?;
        }
        Ok((self.sink, self.len, self.starts))
    }
}

/// "No block": a file without data blocks (empty), in [`write`]'s per-path block numbers.
const NO_BLOCK: u32 = u32::MAX;
/// Bytes of one data block's record in the block list: its start in the image and its size
/// field.
const BLOCK_RECORD: usize = 12;
/// Records a [`BlockList`] reads at once.
const BLOCK_WINDOW: u64 = 4096;

/// Writes data blocks in order, compressing batches of them on `threads` threads, and records
/// where each went in `list` (a temp file: a file's inode lists its blocks' sizes, and an
/// image's blocks are bounded by its data, not by memory).
struct DataWriter<'w, W: Write> {
    out: &'w mut W,
    pos: u64,
    c: SquashfsCompression,
    threads: usize,
    /// Blocks waiting for compression.
    batch: Vec<Vec<u8>>,
    /// Blocks given to `add`: the next block's number.
    added: u64,
    list: io::BufWriter<std::fs::File>,
}

impl<W: Write> DataWriter<'_, W> {
    fn add(&mut self, block: Vec<u8>) -> io::Result<()> {
        self.batch.push(block);
        self.added += 1;
        if self.batch.len() >= self.threads * BATCH_PER_THREAD {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let c = self.c;
        let per = batch.len().div_ceil(self.threads.max(1)).max(1);
        let compressed: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch.chunks(per).map(|chunk| s.spawn(move || chunk.iter().map(|b| compress(c, b)).collect::<Vec<_>>())).collect();
            handles.into_iter().flat_map(|h| h.join().expect("compression thread panicked")).collect()
        });
        for (raw, z) in batch.into_iter().zip(compressed) {
            let z = z?;
            let (bytes, size) = if z.len() < raw.len() { (&z[..], z.len() as u32) } else { (&raw[..], raw.len() as u32 | f::DATA_UNCOMPRESSED) };
            self.list.write_all(&self.pos.to_le_bytes())?;
            self.list.write_all(&size.to_le_bytes())?;
            self.out.write_all(bytes)?;
            self.pos += bytes.len() as u64;
        }
        Ok(())
    }
}

/// The data blocks' records ([`DataWriter`]) read back by block number, a window at a time
/// (inodes ask for their files' blocks roughly in the order they were written).
struct BlockList {
    file: std::fs::File,
    count: u64,
    /// Records from block `first` on.
    window: Vec<u8>,
    first: u64,
}

impl BlockList {
    /// Where the `n` blocks from block `first` went: the first one's start and each one's size.
    fn run(&mut self, first: u32, n: u64, sizes: &mut Vec<u32>) -> io::Result<u64> {
        use std::os::unix::fs::FileExt as _;
        let first = first as u64;
        let have = (self.window.len() / BLOCK_RECORD) as u64;
        if first < self.first || first + n > self.first + have {
            let m = n.max(BLOCK_WINDOW).min(self.count - first);
            self.window.resize(m as usize * BLOCK_RECORD, 0);
            self.file.read_exact_at(&mut self.window, first * BLOCK_RECORD as u64)?;
            self.first = first;
        }
        let at = (first - self.first) as usize * BLOCK_RECORD;
        let records = &self.window[at..at + n as usize * BLOCK_RECORD];
        sizes.clear();
        sizes.extend(records.chunks(BLOCK_RECORD).map(|r| u32::from_le_bytes(r[8..12].try_into().expect("4 bytes"))));
        Ok(u64::from_le_bytes(records[..8].try_into().expect("8 bytes")))
    }
}

/// Regular files whose contents equal an earlier file's, as (path index, index of the first
/// path with the same bytes), by path index. Only the first path of each inode counts
/// (`first_of` names it for inodes with several), and only files sharing their length with
/// another are read for this. Files are told apart by length and SHA-256, as before; to keep
/// memory at 16 bytes a candidate, the first pass keeps 64 bits of each hash, and only files
/// whose 64 bits meet are hashed again for the whole key.
fn duplicates(tree: &Tree, nodes: &[(&[u8], &Node)], first_of: &HashMap<u64, u32>) -> io::Result<Vec<(u32, u32)>> {
    use sha2::{Digest as _, Sha256};
    let file = |i: usize| match nodes[i].1.kind {
        Kind::File { content, inode } if content.len > 0 && first_of.get(&inode).is_none_or(|&f| f as usize == i) => Some(content),
        _ => None,
    };
    let mut per_len: HashMap<u64, u32> = HashMap::new();
    for i in 0..nodes.len() {
        if let Some(content) = file(i) {
            *per_len.entry(content.len).or_insert(0) += 1;
        }
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut hash = |i: usize, content: ContentRef| -> io::Result<[u8; 32]> {
        let mut h = Sha256::new();
        let mut r = tree.open(&content);
        loop {
            let n = r.read(&mut buf).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", crate::tree::path::show(nodes[i].0))))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().into())
    };
    let mut candidates: Vec<(u64, u32)> = Vec::new();
    for i in 0..nodes.len() {
        let Some(content) = file(i) else { continue };
        if per_len[&content.len] < 2 {
            continue;
        }
        let h = hash(i, content)?;
        candidates.push((u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) ^ content.len, i as u32));
    }
    drop(per_len);
    candidates.sort_unstable();
    let mut same_as = Vec::new();
    for run in candidates.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
        // In path order (the run is sorted by index): the first of each whole key stays.
        let mut first: HashMap<(u64, [u8; 32]), u32> = HashMap::new();
        for &(_, i) in run {
            let content = file(i as usize).expect("a candidate is a file");
            let key = (content.len, hash(i as usize, content)?);
            match first.get(&key) {
                Some(&f) => same_as.push((i, f)),
                None => {
                    first.insert(key, i);
                }
            }
        }
    }
    same_as.sort_unstable();
    Ok(same_as)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The basic inode type of a node (what directory entries carry).
fn basic_type(k: &Kind) -> u16 {
    match k {
        Kind::Dir => f::DIR,
        Kind::File { .. } => f::FILE,
        Kind::Symlink { .. } => f::SYMLINK,
        Kind::Block { .. } => f::BLKDEV,
        Kind::Char { .. } => f::CHRDEV,
        Kind::Fifo => f::FIFO,
    }
}

/// Interns xattr sets: the key/value table and the id table entries, in first-use order.
struct Xattrs {
    kv: MetaWriter<Vec<u8>>,
    /// (kv reference, count, size) per id.
    ids: Vec<(u64, u32, u32)>,
    known: BTreeMap<Vec<(String, Vec<u8>)>, u32>,
}

impl Xattrs {
    fn id(&mut self, path: &[u8], x: &BTreeMap<String, Vec<u8>>) -> io::Result<u32> {
        if x.is_empty() {
            return Ok(f::INVALID_U32);
        }
        let key: Vec<(String, Vec<u8>)> = x.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(&id) = self.known.get(&key) {
            return Ok(id);
        }
        let (start, off) = self.kv.here();
        let mut bytes = Vec::new();
        for (name, value) in &key {
            let Some((prefix, ty)) = f::XATTR_PREFIXES.iter().find(|(p, _)| name.starts_with(p)) else {
                return Err(invalid(format!(
                    "{}: xattr {name:?}: squashfs stores only user., trusted. and security. attributes",
                    crate::tree::path::show(path)
                )));
            };
            let short = &name[prefix.len()..];
            bytes.extend(ty.to_le_bytes());
            bytes.extend((short.len() as u16).to_le_bytes());
            bytes.extend(short.as_bytes());
            bytes.extend((value.len() as u32).to_le_bytes());
            bytes.extend(value);
        }
        self.kv.push(&bytes)?;
        let id = self.ids.len() as u32;
        self.ids.push((f::inode_ref(start, off), key.len() as u32, bytes.len() as u32));
        self.known.insert(key, id);
        Ok(id)
    }
}

/// What [`write`] keeps of an inode that several paths share (hardlinks): its number, its
/// paths, and its reference once written.
struct Linked {
    number: u32,
    nlink: u32,
    iref: Option<u64>,
}

/// Write the tree as a SquashFS image into `out` (positioned at 0); returns its size.
/// File contents are read from the tree's spill files (`Tree::open`).
///
/// Memory: per path, its walk entry, [`Dirs`], its first data block's number, its inode
/// number and reference (about 60 bytes); per hardlinked inode a [`Linked`]. Data block
/// records and the directory table go to temp files, the inode table straight to `out`.
pub fn write<W: Write + Seek>(tree: &Tree, opts: &Options, out: &mut W) -> io::Result<u64> {
    let c = opts.compression;
    let nodes: Vec<(&[u8], &Node)> = tree.walk().collect();
    let dirs = Dirs::new(&nodes);

    // Ids (uids and gids), in first-use order.
    let mut ids: Vec<u32> = Vec::new();
    let mut id_index: HashMap<u32, u16> = HashMap::new();
    let mut id_of = |v: u64, path: &[u8]| -> io::Result<u16> {
        let v = u32::try_from(v).map_err(|_| invalid(format!("{}: owner {v} does not fit squashfs's 32 bits", crate::tree::path::show(path))))?;
        if let Some(&i) = id_index.get(&v) {
            return Ok(i);
        }
        let i = u16::try_from(ids.len()).map_err(|_| invalid("more than 65535 distinct owners".into()))?;
        ids.push(v);
        id_index.insert(v, i);
        Ok(i)
    };

    // The first path (in path order) of each inode that may have several.
    let mut first_of: HashMap<u64, u32> = HashMap::new();
    for (i, (_, node)) in nodes.iter().enumerate() {
        if let Kind::File { inode, .. } = node.kind {
            if tree.maybe_linked(inode) {
                first_of.entry(inode).or_insert(i as u32);
            }
        }
    }

    // Duplicates: files (inodes) whose contents equal an earlier one's, by path order.
    let same_as = duplicates(tree, &nodes, &first_of)?;

    // Data, in path order, each file once; `blk` is each file's first block's number.
    out.write_all(&[0u8; Superblock::SIZE])?;
    let list = io::BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
    let mut dw = DataWriter { out: &mut *out, pos: Superblock::SIZE as u64, c, threads: opts.threads.max(1), batch: Vec::new(), added: 0, list };
    let mut blk = vec![NO_BLOCK; nodes.len()];
    let mut dups = same_as.iter().peekable();
    for (i, (path, node)) in nodes.iter().enumerate() {
        let Kind::File { content, inode } = node.kind else { continue };
        if content.len == 0 {
            continue;
        }
        if let Some(&f) = first_of.get(&inode) {
            if f as usize != i {
                blk[i] = blk[f as usize];
                continue;
            }
        }
        if let Some(&(_, f)) = dups.next_if(|d| d.0 as usize == i) {
            blk[i] = blk[f as usize];
            continue;
        }
        blk[i] = u32::try_from(dw.added).ok().filter(|&b| b != NO_BLOCK).ok_or_else(|| invalid("more data blocks than squashfs's writer counts".into()))?;
        let mut r = tree.open(&content);
        let mut left = content.len;
        while left > 0 {
            let n = left.min(f::BLOCK_SIZE as u64) as usize;
            let mut buf = vec![0u8; n];
            r.read_exact(&mut buf).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", crate::tree::path::show(path))))?;
            dw.add(buf)?;
            left -= n as u64;
        }
    }
    drop(same_as);
    dw.drain()?;
    let data_end = dw.pos;
    let mut blocks = BlockList { file: dw.list.into_inner().map_err(|e| e.into_error())?, count: dw.added, window: Vec::new(), first: 0 };

    // Inode numbers in post-order; hardlinks share their first path's number.
    let mut number = vec![0u32; nodes.len()];
    let mut links: HashMap<u64, Linked> = HashMap::new();
    let mut next = 1u32;
    for i in dirs.post_order() {
        number[i] = match nodes[i].1.kind {
            Kind::File { inode, .. } if first_of.contains_key(&inode) => {
                let l = links.entry(inode).or_insert_with(|| {
                    next += 1;
                    Linked { number: next - 1, nlink: 0, iref: None }
                });
                l.nlink += 1;
                l.number
            }
            _ => {
                next += 1;
                next - 1
            }
        };
    }
    drop(first_of);
    let inode_count = next - 1;

    // Inodes (straight into the image, after the data) and directory listings (into a temp
    // file), in the same order.
    let mut inodes = MetaWriter::new(c, &mut *out);
    let mut listings = MetaWriter::new(c, io::BufWriter::with_capacity(1 << 16, tempfile::tempfile()?));
    let mut xattrs = Xattrs { kv: MetaWriter::new(c, Vec::new()), ids: Vec::new(), known: BTreeMap::new() };
    let mut refs = vec![0u64; nodes.len()];
    let mut sizes = Vec::new();
    let mut b = Vec::with_capacity(64);
    for i in dirs.post_order() {
        let (path, node) = nodes[i];
        if let Kind::File { inode, .. } = node.kind {
            if let Some(r) = links.get(&inode).and_then(|l| l.iref) {
                refs[i] = r;
                continue;
            }
        }
        let m = &node.meta;
        let mode = (m.mode & 0o7777) as u16;
        let (uid, gid) = (id_of(m.uid, path)?, id_of(m.gid, path)?);
        let mtime = m.clamped_mtime(opts.sde).min(u32::MAX as u64) as u32;
        let xattr = xattrs.id(path, &m.xattrs)?;
        b.clear();
        let header = |b: &mut Vec<u8>, kind: u16| f::inode_header(b, kind, mode, uid, gid, mtime, number[i]);
        match &node.kind {
            Kind::Dir => {
                let (block, offset) = listings.here();
                let children = dirs.children(i);
                let len = listing(children, &nodes, &number, &refs, &mut listings)?;
                let size = len + 3;
                let subdirs = children.iter().filter(|&&c| nodes[c as usize].1.kind == Kind::Dir).count() as u32;
                let parent_no = if i == 0 { inode_count + 1 } else { number[dirs.parent(i)] };
                if size <= u16::MAX as u64 && xattr == f::INVALID_U32 {
                    header(&mut b, f::DIR);
                    b.extend((block as u32).to_le_bytes());
                    b.extend((2 + subdirs).to_le_bytes());
                    b.extend((size as u16).to_le_bytes());
                    b.extend(offset.to_le_bytes());
                    b.extend(parent_no.to_le_bytes());
                } else {
                    header(&mut b, f::EXT_DIR);
                    b.extend((2 + subdirs).to_le_bytes());
                    b.extend((size as u32).to_le_bytes());
                    b.extend((block as u32).to_le_bytes());
                    b.extend(parent_no.to_le_bytes());
                    b.extend(0u16.to_le_bytes()); // no directory index
                    b.extend(offset.to_le_bytes());
                    b.extend(xattr.to_le_bytes());
                }
            }
            Kind::File { content, inode } => {
                let start = if blk[i] == NO_BLOCK {
                    sizes.clear();
                    0
                } else {
                    blocks.run(blk[i], content.len.div_ceil(f::BLOCK_SIZE as u64), &mut sizes)?
                };
                let nlink = links.get(inode).map_or(1, |l| l.nlink);
                if nlink == 1 && xattr == f::INVALID_U32 && content.len <= u32::MAX as u64 && start <= u32::MAX as u64 {
                    header(&mut b, f::FILE);
                    b.extend((start as u32).to_le_bytes());
                    b.extend(f::INVALID_U32.to_le_bytes()); // no fragment
                    b.extend(0u32.to_le_bytes());
                    b.extend((content.len as u32).to_le_bytes());
                } else {
                    header(&mut b, f::EXT_FILE);
                    b.extend(start.to_le_bytes());
                    b.extend(content.len.to_le_bytes());
                    b.extend(0u64.to_le_bytes()); // sparse bytes
                    b.extend(nlink.to_le_bytes());
                    b.extend(f::INVALID_U32.to_le_bytes());
                    b.extend(0u32.to_le_bytes());
                    b.extend(xattr.to_le_bytes());
                }
                for s in &sizes {
                    b.extend(s.to_le_bytes());
                }
            }
            Kind::Symlink { target } => {
                header(&mut b, if xattr == f::INVALID_U32 { f::SYMLINK } else { f::EXT_SYMLINK });
                b.extend(1u32.to_le_bytes());
                b.extend((target.len() as u32).to_le_bytes());
                b.extend(target);
                if xattr != f::INVALID_U32 {
                    b.extend(xattr.to_le_bytes());
                }
            }
            Kind::Block { major, minor } | Kind::Char { major, minor } => {
                let block = matches!(node.kind, Kind::Block { .. });
                let kind = match (block, xattr == f::INVALID_U32) {
                    (true, true) => f::BLKDEV,
                    (true, false) => f::EXT_BLKDEV,
                    (false, true) => f::CHRDEV,
                    (false, false) => f::EXT_CHRDEV,
                };
                header(&mut b, kind);
                b.extend(1u32.to_le_bytes());
                b.extend(f::encode_dev(*major, *minor).to_le_bytes());
                if xattr != f::INVALID_U32 {
                    b.extend(xattr.to_le_bytes());
                }
            }
            Kind::Fifo => {
                header(&mut b, if xattr == f::INVALID_U32 { f::FIFO } else { f::EXT_FIFO });
                b.extend(1u32.to_le_bytes());
                if xattr != f::INVALID_U32 {
                    b.extend(xattr.to_le_bytes());
                }
            }
        }
        let (block, offset) = inodes.here();
        refs[i] = f::inode_ref(block, offset);
        if let Kind::File { inode, .. } = node.kind {
            if let Some(l) = links.get_mut(&inode) {
                l.iref = Some(refs[i]);
            }
        }
        inodes.push(&b)?;
    }
    let root_inode = refs[0];
    drop((refs, number, blk, links, blocks));

    // Tables, in mksquashfs's order: inodes, directories, (no fragments, no export table),
    // ids, xattrs last (the kernel wants the xattr id index to end the image).
    let (_, inode_len, _) = inodes.finish()?;
    let (listings, dir_len, _) = listings.finish()?;
    let mut listings = listings.into_inner().map_err(|e| e.into_error())?;
    listings.seek(SeekFrom::Start(0))?;
    let copied = io::copy(&mut listings, out)?;
    debug_assert_eq!(copied, dir_len);
    drop(listings);
    let inode_table = data_end;
    let directory_table = inode_table + inode_len;
    let ids_start = directory_table + dir_len;
    let mut idw = MetaWriter::new(c, Vec::new());
    for id in &ids {
        idw.push(&id.to_le_bytes())?;
    }
    let (id_bytes, _, id_starts) = idw.finish()?;
    let id_table = ids_start + id_bytes.len() as u64;
    let mut tail = Vec::new();
    tail.extend(&id_bytes);
    for s in &id_starts {
        tail.extend((ids_start + s).to_le_bytes());
    }
    let mut xattr_table = f::INVALID_U64;
    if !xattrs.ids.is_empty() {
        let kv_start = id_table + 8 * id_starts.len() as u64;
        let (kv_bytes, _, _) = xattrs.kv.finish()?;
        let mut xw = MetaWriter::new(c, Vec::new());
        for (r, count, size) in &xattrs.ids {
            let mut e = r.to_le_bytes().to_vec();
            e.extend(count.to_le_bytes());
            e.extend(size.to_le_bytes());
            xw.push(&e)?;
        }
        let (x_bytes, _, x_starts) = xw.finish()?;
        let x_meta = kv_start + kv_bytes.len() as u64;
        xattr_table = x_meta + x_bytes.len() as u64;
        tail.extend(&kv_bytes);
        tail.extend(&x_bytes);
        tail.extend(kv_start.to_le_bytes());
        tail.extend((xattrs.ids.len() as u32).to_le_bytes());
        tail.extend(0u32.to_le_bytes());
        for s in &x_starts {
            tail.extend((x_meta + s).to_le_bytes());
        }
    }
    out.write_all(&tail)?;
    let bytes_used = ids_start + tail.len() as u64;
    let size = bytes_used.next_multiple_of(f::PAD_TO);
    out.write_all(&vec![0u8; (size - bytes_used) as usize])?;
    let sb = Superblock {
        inode_count,
        mtime: opts.sde.min(u32::MAX as u64) as u32,
        compressor: compressor_id(c),
        flags: f::FLAG_NO_FRAGMENTS | if xattr_table == f::INVALID_U64 { f::FLAG_NO_XATTRS } else { 0 },
        id_count: ids.len() as u16,
        root_inode,
        bytes_used,
        id_table,
        xattr_table,
        inode_table,
        directory_table,
        fragment_table: ids_start,
    };
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&sb.encode())?;
    out.seek(SeekFrom::Start(size))?;
    Ok(size)
}

/// A directory's listing, pushed to `table`: runs of entries under headers. A new header
/// starts when the entries' inodes move to another metadata block, when an inode number is
/// too far from the run's base for the 16-bit delta, or after 256 entries. Returns its length.
fn listing<S: Write>(children: &[u32], nodes: &[(&[u8], &Node)], number: &[u32], refs: &[u64], table: &mut MetaWriter<S>) -> io::Result<u64> {
    let mut len = 0u64;
    let mut e = Vec::with_capacity(12 + 256);
    let mut flush = |run: &[u32], table: &mut MetaWriter<S>| -> io::Result<()> {
        let Some(&first) = run.first() else { return Ok(()) };
        let first = first as usize;
        let (block, base) = (refs[first] >> 16, number[first]);
        e.clear();
        e.extend((run.len() as u32 - 1).to_le_bytes());
        e.extend((block as u32).to_le_bytes());
        e.extend(base.to_le_bytes());
        table.push(&e)?;
        len += e.len() as u64;
        for &c in run {
            let c = c as usize;
            let name = dirtree::name(nodes[c].0);
            e.clear();
            e.extend(((refs[c] & 0xffff) as u16).to_le_bytes());
            e.extend(((number[c] as i64 - base as i64) as i16).to_le_bytes());
            e.extend(basic_type(&nodes[c].1.kind).to_le_bytes());
            e.extend((name.len() as u16 - 1).to_le_bytes());
            e.extend(name);
            table.push(&e)?;
            len += e.len() as u64;
        }
        Ok(())
    };
    let mut run_start = 0;
    for (k, &c) in children.iter().enumerate() {
        let name = dirtree::name(nodes[c as usize].0);
        if name.is_empty() || name.len() > 256 {
            return Err(invalid(format!("{}: a squashfs name is 1 to 256 bytes", crate::tree::path::show(nodes[c as usize].0))));
        }
        if k > run_start {
            let (first, c) = (children[run_start] as usize, c as usize);
            let same_block = refs[first] >> 16 == refs[c] >> 16;
            let near = (number[c] as i64 - number[first] as i64).abs() <= i16::MAX as i64;
            if !same_block || !near || k - run_start == f::DIR_HEADER_MAX {
                flush(&children[run_start..k], table)?;
                run_start = k;
            }
        }
    }
    flush(&children[run_start..], table)?;
    Ok(len)
}
