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
use crate::tree::{ContentRef, Tree};
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

/// A file's compressed data, waiting in a spill file: `extents.len()` pclusters at `offset`.
#[derive(Debug)]
pub struct Packed {
    pub extents: Vec<Extent>,
    pub spill: usize,
    pub offset: u64,
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

/// Compress one file of `size` bytes from `r`, writing its pclusters to `out`; returns its
/// extents, or `None` when that saves no block (the file is then stored flat; nothing of it
/// stays in `out` past the position it started at, which the caller restores).
fn file(enc: &mut Encoder, r: &mut impl Read, size: u64, out: &mut impl Write) -> io::Result<Option<Vec<Extent>>> {
    let mut buf = vec![0u8; 2 * MAX_EXTENT];
    let (mut start, mut end) = (0usize, 0usize);
    let mut read = 0u64;
    let mut extents = Vec::new();
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
        let len = if consumed as u64 > BLOCK {
            extents.push(Extent { len: consumed as u32, plain: false });
            consumed
        } else {
            let len = window.len().min(BLOCK as usize);
            pc[..len].copy_from_slice(&window[..len]);
            pc[len..].fill(0);
            extents.push(Extent { len: len as u32, plain: true });
            len
        };
        out.write_all(&pc)?;
        start += len;
        if extents.len() as u64 >= flat_blocks {
            return Ok(None);
        }
    }
    Ok(Some(extents))
}

/// The full lcluster indexes of a file's extents whose first pcluster is block `blkaddr`,
/// as mkfs.erofs writes them (`vle_write_indexes`): the lcluster where an extent starts gets
/// a HEAD (or PLAIN) index, each further lcluster it covers entirely or starts a NONHEAD
/// one, and when the file ends inside an lcluster a last PLAIN index marks that end.
/// One index per 4 KiB of the file.
pub fn indexes(extents: &[Extent], blkaddr: u32) -> Vec<u8> {
    let mut v = Vec::new();
    let mut ctx_ofs = 0u64;
    for (k, e) in extents.iter().enumerate() {
        let kind = if e.plain { f::LCLUSTER_PLAIN } else { f::LCLUSTER_HEAD };
        let head_ofs = ctx_ofs as u16;
        let mut count = e.len as u64;
        let mut d1 = (ctx_ofs + count) / BLOCK;
        if d1 == 0 {
            // A tail extent inside one lcluster: only the file's last.
            debug_assert_eq!(k + 1, extents.len());
            v.extend(f::head_index(kind, head_ofs, blkaddr + k as u32));
            ctx_ofs = 0;
            continue;
        }
        let mut d0 = 0u64;
        let mut ofs = ctx_ofs;
        loop {
            if d0 == 0 {
                v.extend(f::head_index(kind, head_ofs, blkaddr + k as u32));
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
        ctx_ofs = ofs + count;
    }
    if ctx_ofs != 0 {
        v.extend(f::head_index(f::LCLUSTER_PLAIN, ctx_ofs as u16, 0));
    }
    v
}

/// Compress `files` (path, content) on `threads` threads, each into its own spill file;
/// returns, per file in the same order, its packed extents or `None` (store flat), and the
/// spill files. Which thread compressed a file never shows in the image: the writer copies
/// each file's pclusters in inode order.
pub fn files(tree: &Tree, files: &[(&[u8], ContentRef)], c: ErofsCompression, threads: usize) -> io::Result<(Vec<Option<Packed>>, Vec<File>)> {
    let next = AtomicUsize::new(0);
    let threads = threads.max(1).min(files.len().max(1));
    // Per worker: its spill file and the (file index, packed extents) it made.
    type Done = (File, Vec<(usize, Option<Packed>)>);
    let results: Vec<io::Result<Done>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let next = &next;
                s.spawn(move || -> io::Result<Done> {
                    let mut enc = Encoder::new(c)?;
                    let spill = tempfile::tempfile()?;
                    let mut w = io::BufWriter::with_capacity(1 << 20, spill);
                    let mut pos = 0u64;
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, content)) = files.get(i) else { break };
                        let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", crate::tree::path::show(path)));
                        match file(&mut enc, &mut tree.open(content), content.len, &mut w).map_err(at)? {
                            Some(extents) => {
                                let n = extents.len() as u64 * BLOCK;
                                done.push((i, Some(Packed { extents, spill: t, offset: pos })));
                                pos += n;
                            }
                            None => {
                                w.seek(SeekFrom::Start(pos))?;
                                done.push((i, None));
                            }
                        }
                    }
                    w.flush()?;
                    let spill = w.into_inner().map_err(|e| e.into_error())?;
                    spill.set_len(pos)?;
                    Ok((spill, done))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("erofs compression thread panicked")).collect()
    });
    let mut out: Vec<Option<Packed>> = (0..files.len()).map(|_| None).collect();
    let mut spills = Vec::new();
    for r in results {
        let (spill, done) = r?;
        spills.push(spill);
        for (i, p) in done {
            out[i] = p;
        }
    }
    Ok((out, spills))
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
