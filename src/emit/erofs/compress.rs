//! Regular files' data as EROFS compressed extents: each extent's bytes compressed into one
//! 4 KiB physical cluster (pcluster), and the full lcluster indexes that map them.
//!
//! EROFS compresses to a fixed output size, not a fixed input size: each pcluster holds as
//! much of the file as its codec fits in 4 KiB ("destSize" compression). lz4 and lz4hc come
//! from liblz4 through `lz4-sys` (the C library mkfs.erofs uses, built statically), because
//! `LZ4_compress_destSize` / `LZ4_compress_HC_destSize` are what this needs and no pure-Rust
//! lz4 (lz4_flex included) offers destSize or a high-compression mode; `lz4-sys` does not
//! declare those two stable functions, so they are declared here with lz4.h's signatures.
//! lzma is liblzma's MicroLZMA encoder (`lzma_microlzma_encoder`, which also fills a fixed
//! output), the format the kernel's `decompressor_lzma.c` decodes, through `liblzma-sys`.
//!
//! Rules, as mkfs.erofs 1.5 follows them: an extent is compressed only when it saves a block
//! (more than 4 KiB of input in its 4 KiB pcluster), else it is a PLAIN extent of 4 KiB (or
//! the file's rest) stored as is; compressed bytes sit at the end of their pcluster after
//! zeros (`INCOMPAT_ZERO_PADDING`); a file whose extents take as many blocks as storing it
//! flat is stored flat. An extent reads at most [`MAX_EXTENT`] bytes. Each file is
//! compressed on one thread, start to end, so the bytes never depend on the thread count.

use super::format::{self as f, BLOCK};
use crate::spec::ErofsCompression;
use crate::tree::{Kind, Node, Tree};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

// Links liblz4 (lz4-sys builds it); the functions below are its stable API.
extern crate lz4_sys;

unsafe extern "C" {
    fn LZ4_compress_destSize(src: *const c_char, dst: *mut c_char, src_size: *mut c_int, target_dst_size: c_int) -> c_int;
    fn LZ4_sizeofStateHC() -> c_int;
    fn LZ4_compress_HC_destSize(state: *mut c_void, src: *const c_char, dst: *mut c_char, src_size: *mut c_int, target_dst_size: c_int, level: c_int) -> c_int;
}

/// The most input one extent reads: bounds decompression work per 4 KiB read and the lzma
/// dictionary (which the kernel allocates per CPU). Changing it changes the bytes.
pub const MAX_EXTENT: usize = 128 << 10;
/// lz4hc level: mkfs.erofs's default (LZ4HC_CLEVEL_DEFAULT). Part of the bytes.
const LZ4HC_LEVEL: c_int = 9;
/// lzma preset: mkfs.erofs's default. Part of the bytes.
const LZMA_PRESET: u32 = 6;
/// lzma dictionary: one extent's input is all a stream ever sees. Written to the superblock.
pub const LZMA_DICT: u32 = MAX_EXTENT as u32;

/// One extent of a file, in order: `len` bytes of the file in one pcluster.
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    pub len: u32,
    pub plain: bool,
}

impl Extent {
    /// Its 4 bytes in an extent spill file: the length, the top bit set when plain.
    fn encode(self) -> [u8; 4] {
        (self.len | (self.plain as u32) << 31).to_le_bytes()
    }

    fn decode(b: &[u8]) -> Self {
        let v = u32::from_le_bytes(b.try_into().expect("4 bytes"));
        Extent { len: v & !(1 << 31), plain: v >> 31 == 1 }
    }
}

/// A file's compressed data, waiting in its worker's spill files ([`Spills`]): `count`
/// pclusters at `offset` in data spill `spill`, their extents (4 bytes each) at `extents`
/// in the same worker's extent spill. Fixed-size, so memory does not grow with file sizes.
#[derive(Debug, Clone, Copy)]
pub struct Packed {
    pub spill: u32,
    pub count: u32,
    pub offset: u64,
    pub extents: u64,
}

/// The spill files of [`files()`]: each worker's pclusters and extents.
pub struct Spills {
    data: Vec<File>,
    extents: Vec<File>,
}

impl Spills {
    /// Copy a file's pclusters (`count` blocks) to `out`.
    pub fn copy_data(&self, p: &Packed, out: &mut impl Write, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let mut left = p.count as u64 * BLOCK;
        let mut at = p.offset;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.data[p.spill as usize].read_exact_at(&mut buf[..n], at)?;
            out.write_all(&buf[..n])?;
            left -= n as u64;
            at += n as u64;
        }
        Ok(())
    }

    /// Append a file's lcluster indexes ([`indexes`]) to `out`, its first pcluster being
    /// block `blkaddr`; the extents are read back a bounded run at a time.
    pub fn indexes(&self, p: &Packed, blkaddr: u32, out: &mut Vec<u8>) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        const RUN: u64 = 16 << 10;
        let mut ix = Indexer::new(blkaddr);
        let mut buf = Vec::new();
        let mut done = 0u64;
        while done < p.count as u64 {
            let n = (p.count as u64 - done).min(RUN);
            buf.resize(n as usize * 4, 0);
            self.extents[p.spill as usize].read_exact_at(&mut buf, p.extents + done * 4)?;
            for e in buf.chunks(4) {
                ix.push(Extent::decode(e), out);
            }
            done += n;
        }
        ix.finish(out);
        Ok(())
    }
}

/// The algorithm number a codec writes in map headers (`None`: not compressed).
pub fn algorithm(c: ErofsCompression) -> Option<u8> {
    match c {
        ErofsCompression::None => None,
        ErofsCompression::Lz4 | ErofsCompression::Lz4hc => Some(f::ALG_LZ4),
        ErofsCompression::Lzma => Some(f::ALG_LZMA),
    }
}

/// A codec's state on one thread.
enum Encoder {
    Lz4,
    Lz4hc(Vec<u64>),
    Lzma(Box<liblzma_sys::lzma_stream>, liblzma_sys::lzma_options_lzma),
}

impl Drop for Encoder {
    fn drop(&mut self) {
        if let Encoder::Lzma(s, _) = self {
            // SAFETY: the stream was zero-initialised (LZMA_STREAM_INIT) and only ever passed
            // to liblzma; lzma_end accepts one that was never set up.
            unsafe { liblzma_sys::lzma_end(&mut **s) };
        }
    }
}

impl Encoder {
    fn new(c: ErofsCompression) -> io::Result<Self> {
        Ok(match c {
            ErofsCompression::None => unreachable!("no encoder for uncompressed images"),
            ErofsCompression::Lz4 => Encoder::Lz4,
            ErofsCompression::Lz4hc => {
                // SAFETY: a pure size query.
                let n = unsafe { LZ4_sizeofStateHC() } as usize;
                Encoder::Lz4hc(vec![0u64; n.div_ceil(8)])
            }
            ErofsCompression::Lzma => {
                // SAFETY: lzma_options_lzma and lzma_stream are plain C structs for which
                // all-zero is the documented initial state; lzma_lzma_preset fills the former.
                let mut o: liblzma_sys::lzma_options_lzma = unsafe { std::mem::zeroed() };
                if unsafe { liblzma_sys::lzma_lzma_preset(&mut o, LZMA_PRESET) } != 0 {
                    return Err(io::Error::other("liblzma refused its own preset"));
                }
                o.dict_size = LZMA_DICT;
                Encoder::Lzma(Box::new(unsafe { std::mem::zeroed() }), o)
            }
        })
    }

    /// Compress the longest prefix of `input` that fits `out` (one block), the compressed
    /// bytes at the end of `out` after zeros; returns how much input that took.
    fn fill(&mut self, input: &[u8], out: &mut [u8; BLOCK as usize]) -> io::Result<usize> {
        let mut dst = [0u8; BLOCK as usize];
        let mut consumed = input.len().min(c_int::MAX as usize) as c_int;
        let n = match self {
            // SAFETY: src is valid for `consumed` bytes and dst for BLOCK; liblz4 writes at
            // most target_dst_size bytes and stores what it read back into `consumed`.
            Encoder::Lz4 => unsafe { LZ4_compress_destSize(input.as_ptr().cast(), dst.as_mut_ptr().cast(), &mut consumed, BLOCK as c_int) },
            Encoder::Lz4hc(state) => unsafe {
                LZ4_compress_HC_destSize(state.as_mut_ptr().cast(), input.as_ptr().cast(), dst.as_mut_ptr().cast(), &mut consumed, BLOCK as c_int, LZ4HC_LEVEL)
            },
            Encoder::Lzma(s, o) => {
                // SAFETY: as above; the stream is reset by each encoder init, and next_in /
                // next_out point at buffers that outlive the lzma_code call.
                unsafe {
                    let r = liblzma_sys::lzma_microlzma_encoder(&mut **s, o);
                    if r != liblzma_sys::LZMA_OK {
                        return Err(io::Error::other(format!("liblzma: MicroLZMA encoder setup failed ({r})")));
                    }
                    s.next_in = input.as_ptr();
                    s.avail_in = input.len();
                    s.next_out = dst.as_mut_ptr();
                    s.avail_out = dst.len();
                    let r = liblzma_sys::lzma_code(&mut **s, liblzma_sys::LZMA_FINISH);
                    if r != liblzma_sys::LZMA_STREAM_END {
                        return Err(io::Error::other(format!("liblzma: MicroLZMA encoding failed ({r})")));
                    }
                    consumed = s.total_in as c_int;
                    s.total_out as c_int
                }
            }
        };
        if n <= 0 || n as u64 > BLOCK {
            return Err(io::Error::other("the compressor failed on a 4 KiB cluster"));
        }
        let n = n as usize;
        out.fill(0);
        out[BLOCK as usize - n..].copy_from_slice(&dst[..n]);
        debug_assert_ne!(out[BLOCK as usize - n], 0, "a compressed stream never starts with a zero byte");
        Ok(consumed as usize)
    }
}

/// Compress one file of `size` bytes from `r`, writing its pclusters to `out` and its extents
/// to `ext`; returns how many, or `None` when that saves no block (the file is then stored
/// flat; nothing of it stays in `out` or `ext` past the positions it started at, which the
/// caller restores).
fn file(enc: &mut Encoder, r: &mut impl Read, size: u64, out: &mut impl Write, ext: &mut impl Write) -> io::Result<Option<u32>> {
    let mut buf = vec![0u8; 2 * MAX_EXTENT];
    let (mut start, mut end) = (0usize, 0usize);
    let mut read = 0u64;
    let mut extents = 0u64;
    let mut pc = [0u8; BLOCK as usize];
    let flat_blocks = size.div_ceil(BLOCK);
    while read < size || start < end {
        if end - start < MAX_EXTENT && read < size {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            let want = ((buf.len() - end) as u64).min(size - read) as usize;
            r.read_exact(&mut buf[end..end + want])?;
            end += want;
            read += want as u64;
        }
        let window = &buf[start..end.min(start + MAX_EXTENT)];
        let consumed = enc.fill(window, &mut pc)?;
        let e = if consumed as u64 > BLOCK {
            Extent { len: consumed as u32, plain: false }
        } else {
            let len = window.len().min(BLOCK as usize);
            pc[..len].copy_from_slice(&window[..len]);
            pc[len..].fill(0);
            Extent { len: len as u32, plain: true }
        };
        extents += 1;
        ext.write_all(&e.encode())?;
        out.write_all(&pc)?;
        start += e.len as usize;
        if extents >= flat_blocks {
            return Ok(None);
        }
    }
    Ok(Some(u32::try_from(extents).map_err(|_| io::Error::other("a file of more than 2^32 extents"))?))
}

/// The full lcluster indexes of a file's extents whose first pcluster is block `blkaddr`,
/// as mkfs.erofs writes them (`vle_write_indexes`): the lcluster where an extent starts gets
/// a HEAD (or PLAIN) index, each further lcluster it covers entirely or starts a NONHEAD
/// one, and when the file ends inside an lcluster a last PLAIN index marks that end.
/// One index per 4 KiB of the file.
pub fn indexes(extents: &[Extent], blkaddr: u32) -> Vec<u8> {
    let mut v = Vec::new();
    let mut ix = Indexer::new(blkaddr);
    for e in extents {
        ix.push(*e, &mut v);
    }
    ix.finish(&mut v);
    v
}

/// [`indexes`] one extent at a time.
pub struct Indexer {
    blkaddr: u32,
    /// Extents pushed so far.
    k: u32,
    /// Where the next extent starts in its lcluster.
    ctx_ofs: u64,
    /// An extent ended inside the lcluster it started in (only the file's last may).
    tail: bool,
}

impl Indexer {
    pub fn new(blkaddr: u32) -> Self {
        Indexer { blkaddr, k: 0, ctx_ofs: 0, tail: false }
    }

    /// The indexes of the next extent, appended to `v`.
    pub fn push(&mut self, e: Extent, v: &mut Vec<u8>) {
        debug_assert!(!self.tail, "a tail extent inside one lcluster is only the file's last");
        let blkaddr = self.blkaddr + self.k;
        self.k += 1;
        let kind = if e.plain { f::LCLUSTER_PLAIN } else { f::LCLUSTER_HEAD };
        let head_ofs = self.ctx_ofs as u16;
        let mut count = e.len as u64;
        let mut d1 = (self.ctx_ofs + count) / BLOCK;
        if d1 == 0 {
            v.extend(f::head_index(kind, head_ofs, blkaddr));
            self.ctx_ofs = 0;
            self.tail = true;
            return;
        }
        let mut d0 = 0u64;
        let mut ofs = self.ctx_ofs;
        loop {
            if d0 == 0 {
                v.extend(f::head_index(kind, head_ofs, blkaddr));
            } else {
                debug_assert!(d0 < f::D0_CBLKCNT);
                v.extend(f::nonhead_index(head_ofs, d0 as u16, d1 as u16));
            }
            count -= BLOCK - ofs;
            ofs = 0;
            d0 += 1;
            d1 -= 1;
            if ofs + count < BLOCK {
                break;
            }
        }
        self.ctx_ofs = ofs + count;
    }

    /// The end marker, when the file ends inside an lcluster.
    pub fn finish(self, v: &mut Vec<u8>) {
        if self.ctx_ofs != 0 {
            v.extend(f::head_index(f::LCLUSTER_PLAIN, self.ctx_ofs as u16, 0));
        }
    }
}

/// Compress the regular files at `files` (indexes into `nodes`, the tree's walk) on
/// `threads` threads, each into its own spill files; returns the files that save a block
/// with where their data went, by index, and the spill files. Which thread compressed a
/// file never shows in the image: the writer copies each file's pclusters in inode order.
pub fn files(tree: &Tree, nodes: &[(&[u8], &Node)], files: &[u32], c: ErofsCompression, threads: usize) -> io::Result<(Vec<(u32, Packed)>, Spills)> {
    let next = AtomicUsize::new(0);
    let threads = threads.max(1).min(files.len().max(1));
    // Per worker: its spill files and the (node index, packed) it made.
    type Done = (File, File, Vec<(u32, Packed)>);
    let results: Vec<io::Result<Done>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let next = &next;
                s.spawn(move || -> io::Result<Done> {
                    let mut enc = Encoder::new(c)?;
                    let mut w = io::BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
                    let mut e = io::BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
                    let (mut pos, mut epos) = (0u64, 0u64);
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = files.get(k) else { break };
                        let (path, node) = nodes[i as usize];
                        let Kind::File { content, .. } = node.kind else { unreachable!("only regular files are compressed") };
                        let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", crate::tree::path::show(path)));
                        match file(&mut enc, &mut tree.open(&content), content.len, &mut w, &mut e).map_err(at)? {
                            Some(count) => {
                                done.push((i, Packed { spill: t as u32, count, offset: pos, extents: epos }));
                                pos += count as u64 * BLOCK;
                                epos += count as u64 * 4;
                            }
                            None => {
                                w.seek(SeekFrom::Start(pos))?;
                                e.seek(SeekFrom::Start(epos))?;
                            }
                        }
                    }
                    let (w, e) = (w.into_inner().map_err(|e| e.into_error())?, e.into_inner().map_err(|e| e.into_error())?);
                    w.set_len(pos)?;
                    e.set_len(epos)?;
                    Ok((w, e, done))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("erofs compression thread panicked")).collect()
    });
    let mut packed = Vec::new();
    let mut spills = Spills { data: Vec::new(), extents: Vec::new() };
    for r in results {
        let (w, e, done) = r?;
        spills.data.push(w);
        spills.extents.push(e);
        packed.extend(done);
    }
    packed.sort_unstable_by_key(|p| p.0);
    Ok((packed, spills))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(len: u32, plain: bool) -> Extent {
        Extent { len, plain }
    }

    #[test]
    fn one_index_per_lcluster_and_an_end_marker_inside_the_last() {
        // 10000 + 4096 (plain) + 2000 = 16096 bytes: 4 lclusters.
        let v = indexes(&[ext(10000, false), ext(4096, true), ext(2000, true)], 7);
        assert_eq!(v.len(), 4 * 8);
        assert_eq!(&v[0..8], &f::head_index(f::LCLUSTER_HEAD, 0, 7));
        assert_eq!(&v[8..16], &f::nonhead_index(0, 1, 1));
        // The plain extent starts at 10000 = lcluster 2 + 1808.
        assert_eq!(&v[16..24], &f::head_index(f::LCLUSTER_PLAIN, 1808, 8));
        // The last extent starts at 14096 = lcluster 3 + 1808 and ends the file inside it.
        assert_eq!(&v[24..32], &f::head_index(f::LCLUSTER_PLAIN, 1808, 9));
    }

    #[test]
    fn a_file_ending_on_an_lcluster_boundary_has_no_end_marker() {
        let v = indexes(&[ext(8192, false)], 3);
        assert_eq!(v.len(), 2 * 8);
        assert_eq!(&v[8..16], &f::nonhead_index(0, 1, 1));
        let v = indexes(&[ext(6000, false), ext(2192, true)], 3);
        assert_eq!(v.len(), 2 * 8);
        assert_eq!(&v[8..16], &f::head_index(f::LCLUSTER_PLAIN, 6000 - 4096, 4));
    }

    #[test]
    fn every_codec_fills_a_block_from_compressible_input() {
        let input: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 ^ (i / 1000) as u8).collect();
        for c in [ErofsCompression::Lz4, ErofsCompression::Lz4hc, ErofsCompression::Lzma] {
            let mut enc = Encoder::new(c).unwrap();
            let mut out = [0u8; BLOCK as usize];
            let n = enc.fill(&input, &mut out).unwrap();
            assert!(n as u64 > BLOCK, "{c:?} took only {n} bytes");
            let mut again = [0u8; BLOCK as usize];
            assert_eq!(enc.fill(&input, &mut again).unwrap(), n, "{c:?} is not deterministic");
            assert_eq!(out, again);
        }
    }
}
