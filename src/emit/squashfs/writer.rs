//! Tree → SquashFS 4.0 image, laid out the way mksquashfs lays it out: superblock, data
//! blocks (each file's, in path order, no fragments), then the inode, directory, id and xattr
//! tables. Identical contents are stored once, as mksquashfs's duplicate check does: a file
//! whose bytes equal an earlier file's (same length, same SHA-256; only lengths two files
//! share are hashed) points at that file's blocks. Inode numbers are given in post-order (children before their directory, the root
//! last), so every directory entry points at an inode already written; hardlinks share one
//! inode with its link count. Every input to the layout comes from the tree: the bytes depend
//! on nothing else.

use super::format::{self as f, Superblock};
use crate::spec::SquashfsCompression;
use crate::tree::{Kind, Node, Tree};
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

/// Compression levels: mksquashfs's defaults (gzip 9, xz preset 6 with a dictionary of one
/// block, zstd 15), so sizes compare with what users get today. Part of the format.
const GZIP_LEVEL: u32 = 9;
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

/// One block (data or metadata) compressed as squashfs's decompressors expect it: a zlib
/// stream, an .xz stream with a CRC-32 check and a one-block dictionary (the kernel refuses
/// a larger one without compressor options), or a zstd frame.
fn compress(c: SquashfsCompression, data: &[u8]) -> io::Result<Vec<u8>> {
    match c {
        SquashfsCompression::Gzip => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
            e.write_all(data)?;
            e.finish()
        }
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

/// A metadata table being written: 8 KiB blocks, each compressed (or stored, when that is not
/// smaller) behind a 16-bit header.
struct MetaWriter {
    c: SquashfsCompression,
    done: Vec<u8>,
    cur: Vec<u8>,
    /// Offset in `done` where each block starts (for tables with an index).
    starts: Vec<u64>,
}

impl MetaWriter {
    fn new(c: SquashfsCompression) -> Self {
        MetaWriter { c, done: Vec::new(), cur: Vec::with_capacity(f::METADATA_SIZE), starts: Vec::new() }
    }

    /// Where the next byte goes: (block start in the table, offset in the block).
    fn here(&self) -> (u64, u16) {
        (self.done.len() as u64, self.cur.len() as u16)
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
        self.starts.push(self.done.len() as u64);
        let z = compress(self.c, &self.cur)?;
        if z.len() < self.cur.len() {
            self.done.extend((z.len() as u16).to_le_bytes());
            self.done.extend(z);
        } else {
            self.done.extend((self.cur.len() as u16 | f::METADATA_UNCOMPRESSED).to_le_bytes());
            self.done.extend_from_slice(&self.cur);
        }
        self.cur.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<(Vec<u8>, Vec<u64>)> {
        if !self.cur.is_empty() {
            self.flush()?;
        }
        Ok((self.done, self.starts))
    }
}

/// Where one file's data went.
#[derive(Debug, Clone, Default)]
struct FileData {
    start: u64,
    sizes: Vec<u32>,
}

/// Writes data blocks in order, compressing batches of them on `threads` threads.
struct DataWriter<'w, W: Write> {
    out: &'w mut W,
    pos: u64,
    c: SquashfsCompression,
    threads: usize,
    /// Blocks waiting for compression: (tree inode, raw bytes).
    batch: Vec<(u64, Vec<u8>)>,
    files: HashMap<u64, FileData>,
}

impl<W: Write> DataWriter<'_, W> {
    fn add(&mut self, inode: u64, block: Vec<u8>) -> io::Result<()> {
        self.batch.push((inode, block));
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
            let handles: Vec<_> = batch.chunks(per).map(|chunk| s.spawn(move || chunk.iter().map(|(_, b)| compress(c, b)).collect::<Vec<_>>())).collect();
            handles.into_iter().flat_map(|h| h.join().expect("compression thread panicked")).collect()
        });
        for ((inode, raw), z) in batch.into_iter().zip(compressed) {
            let z = z?;
            let (bytes, size) = if z.len() < raw.len() { (&z[..], z.len() as u32) } else { (&raw[..], raw.len() as u32 | f::DATA_UNCOMPRESSED) };
            let fd = self.files.entry(inode).or_default();
            if fd.sizes.is_empty() {
                fd.start = self.pos;
            }
            fd.sizes.push(size);
            self.out.write_all(bytes)?;
            self.pos += bytes.len() as u64;
        }
        Ok(())
    }
}

/// Files whose contents equal an earlier file's: tree inode → the first inode with the same
/// bytes. Only files sharing their length with another are read (and hashed) for this.
fn duplicates(tree: &Tree, nodes: &[(&[u8], &Node)]) -> io::Result<HashMap<u64, u64>> {
    use sha2::{Digest as _, Sha256};
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    let mut per_len: HashMap<u64, u32> = HashMap::new();
    for (path, node) in nodes {
        if let Kind::File { content, inode } = node.kind {
            if content.len > 0 && seen.insert(inode) {
                files.push((*path, content, inode));
                *per_len.entry(content.len).or_insert(0) += 1;
            }
        }
    }
    let mut first: HashMap<(u64, [u8; 32]), u64> = HashMap::new();
    let mut same_as = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    for (path, content, inode) in files {
        if per_len[&content.len] < 2 {
            continue;
        }
        let mut h = Sha256::new();
        let mut r = tree.open(&content);
        loop {
            let n = r.read(&mut buf).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", crate::tree::path::show(path))))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let key = (content.len, h.finalize().into());
        match first.get(&key) {
            Some(&f) => {
                same_as.insert(inode, f);
            }
            None => {
                first.insert(key, inode);
            }
        }
    }
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

/// Parent index and name of every node but the root (index 0), from the walk order.
fn parents<'t>(nodes: &[(&'t [u8], &'t Node)]) -> Vec<(usize, &'t [u8])> {
    let index: HashMap<&[u8], usize> = nodes.iter().enumerate().map(|(i, (p, _))| (*p, i)).collect();
    nodes
        .iter()
        .map(|(p, _)| match p.iter().rposition(|&b| b == b'/') {
            _ if p.is_empty() => (0, &p[..]),
            Some(i) => (index[&p[..i]], &p[i + 1..]),
            None => (0, &p[..]),
        })
        .collect()
}

/// Interns xattr sets: the key/value table and the id table entries, in first-use order.
struct Xattrs {
    kv: MetaWriter,
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

/// Write the tree as a SquashFS image into `out` (positioned at 0); returns its size.
/// File contents are read from the tree's spill files (`Tree::open`).
pub fn write<W: Write + Seek>(tree: &Tree, opts: &Options, out: &mut W) -> io::Result<u64> {
    let c = opts.compression;
    let nodes: Vec<(&[u8], &Node)> = tree.walk().collect();
    let parent = parents(&nodes);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for i in 1..nodes.len() {
        children[parent[i].0].push(i);
    }

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

    // Duplicates: files (inodes) whose contents equal an earlier one's, by path order.
    let same_as = duplicates(tree, &nodes)?;

    // Data, in path order, each file once.
    out.write_all(&[0u8; Superblock::SIZE])?;
    let mut dw = DataWriter { out: &mut *out, pos: Superblock::SIZE as u64, c, threads: opts.threads.max(1), batch: Vec::new(), files: HashMap::new() };
    let mut written = std::collections::HashSet::new();
    for (path, node) in &nodes {
        if let Kind::File { content, inode } = node.kind {
            if !written.insert(inode) || content.len == 0 || same_as.contains_key(&inode) {
                continue;
            }
            let mut r = tree.open(&content);
            let mut left = content.len;
            while left > 0 {
                let n = left.min(f::BLOCK_SIZE as u64) as usize;
                let mut buf = vec![0u8; n];
                r.read_exact(&mut buf).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", crate::tree::path::show(path))))?;
                dw.add(inode, buf)?;
                left -= n as u64;
            }
        }
    }
    dw.drain()?;
    let data_end = dw.pos;
    let mut files = std::mem::take(&mut dw.files);
    for (inode, first) in &same_as {
        let fd = files.get(first).cloned().unwrap_or_default();
        files.insert(*inode, fd);
    }

    // Inode numbers in post-order; hardlinks share their first path's number.
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack = vec![(0usize, false)];
    while let Some((i, expanded)) = stack.pop() {
        if expanded {
            order.push(i);
        } else {
            stack.push((i, true));
            stack.extend(children[i].iter().rev().map(|&c| (c, false)));
        }
    }
    let mut number = vec![0u32; nodes.len()];
    let mut by_inode: HashMap<u64, u32> = HashMap::new();
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut next = 1u32;
    for &i in &order {
        number[i] = match nodes[i].1.kind {
            Kind::File { inode, .. } => {
                *links.entry(inode).or_insert(0) += 1;
                *by_inode.entry(inode).or_insert_with(|| {
                    next += 1;
                    next - 1
                })
            }
            _ => {
                next += 1;
                next - 1
            }
        };
    }
    let inode_count = next - 1;

    // Inodes and directory listings, in the same order.
    let mut inodes = MetaWriter::new(c);
    let mut dirs = MetaWriter::new(c);
    let mut xattrs = Xattrs { kv: MetaWriter::new(c), ids: Vec::new(), known: BTreeMap::new() };
    let mut refs = vec![0u64; nodes.len()];
    let mut file_refs: HashMap<u64, u64> = HashMap::new();
    for &i in &order {
        let (path, node) = nodes[i];
        if let Kind::File { inode, .. } = node.kind {
            if let Some(&r) = file_refs.get(&inode) {
                refs[i] = r;
                continue;
            }
        }
        let m = &node.meta;
        let mode = (m.mode & 0o7777) as u16;
        let (uid, gid) = (id_of(m.uid, path)?, id_of(m.gid, path)?);
        let mtime = m.clamped_mtime(opts.sde).min(u32::MAX as u64) as u32;
        let xattr = xattrs.id(path, &m.xattrs)?;
        let mut b = Vec::with_capacity(64);
        let header = |b: &mut Vec<u8>, kind: u16| f::inode_header(b, kind, mode, uid, gid, mtime, number[i]);
        match &node.kind {
            Kind::Dir => {
                let (block, offset) = dirs.here();
                let listing = listing(&children[i], &nodes, &number, &refs, &parent)?;
                dirs.push(&listing)?;
                let size = listing.len() as u64 + 3;
                let subdirs = children[i].iter().filter(|&&c| nodes[c].1.kind == Kind::Dir).count() as u32;
                let parent_no = if i == 0 { inode_count + 1 } else { number[parent[i].0] };
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
                let fd = files.get(inode).cloned().unwrap_or_default();
                let nlink = links[inode];
                if nlink == 1 && xattr == f::INVALID_U32 && content.len <= u32::MAX as u64 && fd.start <= u32::MAX as u64 {
                    header(&mut b, f::FILE);
                    b.extend((fd.start as u32).to_le_bytes());
                    b.extend(f::INVALID_U32.to_le_bytes()); // no fragment
                    b.extend(0u32.to_le_bytes());
                    b.extend((content.len as u32).to_le_bytes());
                } else {
                    header(&mut b, f::EXT_FILE);
                    b.extend(fd.start.to_le_bytes());
                    b.extend(content.len.to_le_bytes());
                    b.extend(0u64.to_le_bytes()); // sparse bytes
                    b.extend(nlink.to_le_bytes());
                    b.extend(f::INVALID_U32.to_le_bytes());
                    b.extend(0u32.to_le_bytes());
                    b.extend(xattr.to_le_bytes());
                }
                for s in &fd.sizes {
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
            file_refs.insert(inode, refs[i]);
        }
        inodes.push(&b)?;
    }

    // Tables, in mksquashfs's order: inodes, directories, (no fragments, no export table),
    // ids, xattrs last (the kernel wants the xattr id index to end the image).
    let (inode_bytes, _) = inodes.finish()?;
    let (dir_bytes, _) = dirs.finish()?;
    let inode_table = data_end;
    let directory_table = inode_table + inode_bytes.len() as u64;
    let ids_start = directory_table + dir_bytes.len() as u64;
    let mut idw = MetaWriter::new(c);
    for id in &ids {
        idw.push(&id.to_le_bytes())?;
    }
    let (id_bytes, id_starts) = idw.finish()?;
    let id_table = ids_start + id_bytes.len() as u64;
    let mut tail = Vec::new();
    tail.extend(&inode_bytes);
    tail.extend(&dir_bytes);
    tail.extend(&id_bytes);
    for s in &id_starts {
        tail.extend((ids_start + s).to_le_bytes());
    }
    let mut xattr_table = f::INVALID_U64;
    if !xattrs.ids.is_empty() {
        let kv_start = id_table + 8 * id_starts.len() as u64;
        let (kv_bytes, _) = xattrs.kv.finish()?;
        let mut xw = MetaWriter::new(c);
        for (r, count, size) in &xattrs.ids {
            let mut e = r.to_le_bytes().to_vec();
            e.extend(count.to_le_bytes());
            e.extend(size.to_le_bytes());
            xw.push(&e)?;
        }
        let (x_bytes, x_starts) = xw.finish()?;
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
    let bytes_used = data_end + tail.len() as u64;
    let size = bytes_used.next_multiple_of(f::PAD_TO);
    out.write_all(&vec![0u8; (size - bytes_used) as usize])?;
    let sb = Superblock {
        inode_count,
        mtime: opts.sde.min(u32::MAX as u64) as u32,
        compressor: compressor_id(c),
        flags: f::FLAG_NO_FRAGMENTS | if xattr_table == f::INVALID_U64 { f::FLAG_NO_XATTRS } else { 0 },
        id_count: ids.len() as u16,
        root_inode: refs[0],
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

/// A directory's listing: runs of entries under headers. A new header starts when the
/// entries' inodes move to another metadata block, when an inode number is too far from the
/// run's base for the 16-bit delta, or after 256 entries.
fn listing(children: &[usize], nodes: &[(&[u8], &Node)], number: &[u32], refs: &[u64], parent: &[(usize, &[u8])]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let flush = |run: &mut Vec<usize>, out: &mut Vec<u8>| {
        let Some(&first) = run.first() else { return };
        let (block, base) = (refs[first] >> 16, number[first]);
        out.extend((run.len() as u32 - 1).to_le_bytes());
        out.extend((block as u32).to_le_bytes());
        out.extend(base.to_le_bytes());
        for &c in run.iter() {
            let name = parent[c].1;
            out.extend(((refs[c] & 0xffff) as u16).to_le_bytes());
            out.extend(((number[c] as i64 - base as i64) as i16).to_le_bytes());
            out.extend(basic_type(&nodes[c].1.kind).to_le_bytes());
            out.extend((name.len() as u16 - 1).to_le_bytes());
            out.extend(name);
        }
        run.clear();
    };
    for &c in children {
        let name = parent[c].1;
        if name.is_empty() || name.len() > 256 {
            return Err(invalid(format!("{}: a squashfs name is 1 to 256 bytes", crate::tree::path::show(nodes[c].0))));
        }
        if let Some(&first) = run.first() {
            let same_block = refs[first] >> 16 == refs[c] >> 16;
            let near = (number[c] as i64 - number[first] as i64).abs() <= i16::MAX as i64;
            if !same_block || !near || run.len() == f::DIR_HEADER_MAX {
                flush(&mut run, &mut out);
            }
        }
        run.push(c);
    }
    flush(&mut run, &mut out);
    Ok(out)
}
