//! Compression of tar and cpio streams at fixed settings, so the same input always gives the
//! same bytes, whatever the number of threads.
//!
//! - gzip: level 6, no name, mtime 0, OS 3 (as `gzip -n`). Parallel the way `pigz` does it: the
//!   input is cut into fixed [`GZIP_BLOCK`]-byte blocks, each deflated on its own (primed with
//!   the previous block's last 32 KiB as dictionary, ended with a sync flush so the next block
//!   starts on a byte boundary), and the pieces are concatenated into one gzip member whose
//!   CRC-32 is combined from the blocks'. Block boundaries depend only on the input, so the
//!   bytes are the same for 1 or 64 threads. The result is a single ordinary gzip member:
//!   `gzip -d`, zlib and the kernel's inflate read it as usual.
//! - zstd: level 3 with a checksum, always through libzstd's multithreaded ("zstdmt") path
//!   with at least one worker. Its job boundaries come from the compression parameters only
//!   (job size = 4 × window), and zstd's maintainers guarantee that streaming multithreaded
//!   output is identical for any worker count >= 1 (facebook/zstd#2238, #2327; the one-shot
//!   `ZSTD_e_end` shortcut that broke this is never used by a streaming writer). Single-threaded
//!   mode (0 workers) gives different bytes, so it is never used. `threads_give_same_bytes`
//!   checks it on an input of several jobs.
//! - xz (initramfs only): preset 6 with a CRC-32 check (the kernel's XZ decoder has no
//!   SHA-256 and older ones no CRC-64), through liblzma's multithreaded encoder with a fixed
//!   [`XZ_BLOCK`] size: every block is compressed independently and block boundaries depend on
//!   the size only, so the output does not depend on the thread count. liblzma is built from
//!   its bundled sources and linked statically (the `static` feature), so neither CI nor a
//!   user needs `liblzma-dev`, and a system upgrade cannot change our bytes.
//!
//! Changing a level, a block size or a backend version changes every pinned digest.

use crate::spec::Compression;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// gzip level: the `gzip` default, what initramfs and package tools use.
pub const GZIP_LEVEL: u32 = 6;
/// zstd level: the `zstd` CLI default.
pub const ZSTD_LEVEL: i32 = 3;
/// xz preset: the `xz` default (8 MiB dictionary).
pub const XZ_PRESET: u32 = 6;
/// Uncompressed bytes per independently deflated gzip block. pigz uses 128 KiB; 1 MiB costs
/// less ratio (one 32 KiB window reset and a 5-byte sync marker per MiB) and still gives
/// dozens of blocks to share out for a typical rootfs. Part of the output format.
pub const GZIP_BLOCK: usize = 1 << 20;
/// Dictionary carried from one gzip block to the next: deflate's whole window.
const GZIP_DICT: usize = 32 << 10;
/// Uncompressed bytes per xz block: 3 × the preset-6 dictionary, xz's own default block size
/// in multithreaded mode. Part of the output format.
pub const XZ_BLOCK: u64 = 24 << 20;

/// The thread count to use for `threads` as given on the command line (0 = one per core).
pub fn effective_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        threads
    }
}

/// A writer that compresses into `W`; call [`Encoder::finish`] to get `W` back.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(Box<ParGzip<W>>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(liblzma::write::XzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// An encoder using one thread per core (the output does not depend on it).
    pub fn new(c: Compression, w: W) -> io::Result<Self> {
        Self::with_threads(c, 0, w)
    }

    /// An encoder using `threads` threads (0 = one per core). The bytes written are the same
    /// for every value.
    pub fn with_threads(c: Compression, threads: usize, w: W) -> io::Result<Self> {
        let threads = effective_threads(threads);
        Ok(match c {
            Compression::None => Encoder::None(w),
            Compression::Gzip => Encoder::Gzip(Box::new(ParGzip::new(w, threads))),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
                e.include_checksum(true)?;
                // Never 0: single-threaded mode writes different bytes than any worker count.
                e.multithread(threads.clamp(1, 256) as u32)?;
                Encoder::Zstd(e)
            }
            Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new_stream(w, xz_stream(threads, XZ_BLOCK)?)),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            // Flushing a compressor would end a block or job early and change the bytes:
            // only finish() ends one. Flush the writer underneath instead.
            Encoder::Gzip(e) => e.inner.flush(),
            Encoder::Zstd(e) => e.get_mut().flush(),
            Encoder::Xz(e) => e.get_mut().flush(),
        }
    }
}

/// liblzma's multithreaded encoder at our fixed settings, with `block` bytes per xz block.
fn xz_stream(threads: usize, block: u64) -> io::Result<liblzma::stream::Stream> {
    liblzma::stream::MtStreamBuilder::new()
        .preset(XZ_PRESET)
        .check(liblzma::stream::Check::Crc32)
        .block_size(block)
        .threads(threads.clamp(1, 256) as u32)
        .encoder()
        .map_err(io::Error::other)
}

/// The gzip member header `gzip -n` writes at level 6: no flags, mtime 0, XFL 0, OS 3 (Unix).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// One block's result: deflate bytes, and the CRC-32 of its input.
type BlockOut = io::Result<(Vec<u8>, flate2::Crc)>;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

/// Worker threads that deflate blocks; results come back tagged with their sequence number.
struct Pool {
    jobs: Option<mpsc::SyncSender<Job>>,
    results: mpsc::Receiver<(u64, BlockOut)>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize) -> Self {
        let (jtx, jrx) = mpsc::sync_channel::<Job>(threads);
        let (rtx, rrx) = mpsc::channel();
        let jrx = Arc::new(Mutex::new(jrx));
        let handles = (0..threads)
            .map(|_| {
                let jrx = Arc::clone(&jrx);
                let rtx = rtx.clone();
                std::thread::spawn(move || loop {
                    let job = match jrx.lock().expect("job queue").recv() {
                        Ok(j) => j,
                        Err(_) => break,
                    };
                    let out = deflate_block(&job.data, &job.dict, job.last);
                    if rtx.send((job.seq, out)).is_err() {
                        break;
                    }
                })
            })
            .collect();
        Pool { jobs: Some(jtx), results: rrx, handles }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Block-parallel gzip writer (see the module doc). Call [`ParGzip::finish`] to end the member.
pub struct ParGzip<W: Write> {
    inner: W,
    threads: usize,
    pool: Option<Pool>,
    /// The block being filled.
    buf: Vec<u8>,
    /// The last [`GZIP_DICT`] bytes before `buf`.
    dict: Vec<u8>,
    next_seq: u64,
    next_out: u64,
    done: BTreeMap<u64, (Vec<u8>, flate2::Crc)>,
    crc: flate2::Crc,
    header_written: bool,
}

impl<W: Write> ParGzip<W> {
    pub fn new(inner: W, threads: usize) -> Self {
        ParGzip {
            inner,
            threads: threads.max(1),
            pool: None,
            buf: Vec::with_capacity(GZIP_BLOCK),
            dict: Vec::new(),
            next_seq: 0,
            next_out: 0,
            done: BTreeMap::new(),
            crc: flate2::Crc::new(),
            header_written: false,
        }
    }

    /// Hand the full block in `buf` (the last one when `last`) to a worker, or deflate it here.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(if last { 0 } else { GZIP_BLOCK }));
        let tail = data.len().saturating_sub(GZIP_DICT);
        let next_dict = if last { Vec::new() } else { data[tail..].to_vec() };
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.threads == 1 {
            let out = deflate_block(&data, &dict, last)?;
            return self.emit(seq, out);
        }
        if self.pool.is_none() {
            self.pool = Some(Pool::new(self.threads));
        }
        // Bound the blocks in flight (and so the memory) to twice the workers.
        while self.next_seq - self.next_out > 2 * self.threads as u64 {
            self.collect_one()?;
        }
        self.pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .expect("pool running")
            .send(Job { seq, data, dict, last })
            .map_err(|_| io::Error::other("gzip worker thread died"))
    }

    /// Wait for one finished block and write out whatever is now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, out) = self
            .pool
            .as_ref()
            .expect("pool")
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.emit(seq, out?)
    }

    fn emit(&mut self, seq: u64, out: (Vec<u8>, flate2::Crc)) -> io::Result<()> {
        self.done.insert(seq, out);
        while let Some((bytes, crc)) = self.done.remove(&self.next_out) {
            if !self.header_written {
                self.inner.write_all(&GZIP_HEADER)?;
                self.header_written = true;
            }
            self.inner.write_all(&bytes)?;
            self.crc.combine(&crc);
            self.next_out += 1;
        }
        Ok(())
    }

    /// Deflate what is left as the final block, write the trailer, and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while self.next_out < self.next_seq {
            self.collect_one()?;
        }
        self.inner.write_all(&self.crc.sum().to_le_bytes())?;
        // ISIZE: the input length modulo 2^32 (RFC 1952).
        self.inner.write_all(&self.crc.amount().to_le_bytes())?;
        self.pool.take();
        let ParGzip { inner, .. } = self;
        Ok(inner)
    }
}

impl<W: Write> Write for ParGzip<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            // A full block is sent only once more input arrives, so that the final block
            // (deflated with BFINAL) is never empty unless the whole input is.
            if self.buf.len() == GZIP_BLOCK {
                self.dispatch(false)?;
            }
            let take = (GZIP_BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Raw-deflate one block at [`GZIP_LEVEL`], primed with `dict`, ending with a sync flush (or
/// the final block marker when `last`).
fn deflate_block(data: &[u8], dict: &[u8], last: bool) -> BlockOut {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        let consumed = c.total_in() as usize;
        let st = c.compress_vec(&data[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        let room = out.len() < out.capacity();
        match st {
            Status::StreamEnd => break,
            _ if !last && all_in && room => break,
            _ => {
                if !room {
                    out.reserve(out.capacity().max(4096));
                }
            }
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    Ok((out, crc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Compressible but not trivial: text-like lines with a slowly changing counter, plus a
    /// stretch of pseudo-random bytes, so deflate and zstd both emit matches and literals.
    fn sample(len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut i = 0u64;
        while v.len() < len {
            if (i / 1000) % 7 == 3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(&x.to_le_bytes());
            } else {
                v.extend_from_slice(format!("line {i} of the sample /usr/lib/x86_64-linux-gnu/libfoo.so.{}\n", i % 97).as_bytes());
            }
            i += 1;
        }
        v.truncate(len);
        v
    }

    fn compress(c: Compression, threads: usize, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut e = Encoder::with_threads(c, threads, Vec::new()).unwrap();
        for part in data.chunks(chunk.max(1)) {
            e.write_all(part).unwrap();
        }
        e.finish().unwrap()
    }

    fn decompress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match c {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
            }
            Compression::Zstd => {
                zstd::stream::read::Decoder::new(data).unwrap().read_to_end(&mut out).unwrap();
            }
            Compression::Xz => {
                liblzma::read::XzDecoder::new(data).read_to_end(&mut out).unwrap();
            }
        }
        out
    }

    #[test]
    fn threads_give_same_bytes() {
        // 20 MiB: 20 gzip blocks, and more than two zstd jobs (8 MiB each at level 3).
        let data = sample(20 << 20);
        for c in [Compression::Gzip, Compression::Zstd] {
            let one = compress(c, 1, &data, 1 << 16);
            for t in [2, 4] {
                let many = compress(c, t, &data, 1 << 16);
                assert!(one == many, "{c:?}: {t} threads gave other bytes than 1 thread");
            }
            assert_eq!(decompress(c, &one), data, "{c:?} round trip");
        }
    }

    #[test]
    fn xz_threads_give_same_bytes() {
        // The same encoder with 256 KiB blocks (the real 24 MiB ones make this test slow):
        // five blocks and a bit, shared out over 1, 2 and 4 threads.
        let data = sample(5 * (256 << 10) + 1000);
        let xz = |threads| {
            let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), xz_stream(threads, 256 << 10).unwrap());
            for part in data.chunks(65536) {
                e.write_all(part).unwrap();
            }
            e.finish().unwrap()
        };
        let one = xz(1);
        assert!(one == xz(2) && one == xz(4), "xz: thread count changed the bytes");
        assert_eq!(decompress(Compression::Xz, &one), data);
        let small = compress(Compression::Xz, 2, b"hello", 1);
        assert_eq!(decompress(Compression::Xz, &small), b"hello");
        // Stream flags: CRC32 check (0x01), as the kernel requires.
        assert_eq!(&small[..8], b"\xfd7zXZ\x00\x00\x01");
        assert_eq!(&one[..8], &small[..8]);
    }

    #[test]
    fn gzip_edges_round_trip_and_ignore_write_sizes() {
        for len in [0, 1, GZIP_DICT, GZIP_BLOCK - 1, GZIP_BLOCK, GZIP_BLOCK + 1, 3 * GZIP_BLOCK] {
            let data = sample(len);
            let a = compress(Compression::Gzip, 3, &data, 7919);
            let b = compress(Compression::Gzip, 1, &data, 1 << 20);
            assert!(a == b, "len {len}: write sizes or threads changed the bytes");
            assert_eq!(&a[..10], &GZIP_HEADER);
            assert_eq!(decompress(Compression::Gzip, &a), data, "len {len}");
        }
    }

    #[test]
    fn gzip_single_block_matches_plain_gzip_n() {
        // Below one block the output is plain single-stream deflate, like `gzip -n -6`'s zlib.
        let data = sample(100_000);
        let ours = compress(Compression::Gzip, 2, &data, 4096);
        let mut plain = flate2::GzBuilder::new().mtime(0).operating_system(3).write(Vec::new(), flate2::Compression::new(6));
        plain.write_all(&data).unwrap();
        assert!(ours == plain.finish().unwrap());
    }
}
