//! The floor's own work for `benches/floor.sh`, done with the same codec crates and backends
//! stagebox links (flate2 on zlib-rs, libdeflate for SquashFS's blocks, libzstd's
//! multithreaded encoder), so that "the least work any composer must do" is not slowed or
//! sped up by a different implementation (GNU gzip inflates more slowly than zlib-rs; a
//! floor measured with it would flatter stagebox).
//! It never calls stagebox: it only decompresses and compresses bytes.
//!
//! ```text
//! floor inflate THREADS FILE...        decompress each layer blob (gzip or zstd, by magic) to nothing, THREADS at once
//! floor gzip THREADS LEVEL FILE        deflate FILE (from the page cache) in THREADS equal slices at once, to nothing
//! floor zlib-blocks THREADS LEVEL BLOCK FILE   zlib each BLOCK-byte block of FILE (SquashFS's unit) with libdeflate, THREADS at once
//! floor zstd THREADS LEVEL FILE        zstd FILE with THREADS libzstd workers, to nothing
//! floor hash OUTPUT LAYER...           seconds of SHA-256 (one thread, sha2 as stagebox links it) over the
//!                                      layer blobs, their decompressed streams and OUTPUT: the hashing a
//!                                      verified build must do and the floor does not count
//! ```
//! Build: `cargo build --release --example floor`.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn usage() -> ! {
    eprintln!("usage: floor inflate THREADS FILE... | gzip THREADS LEVEL FILE | zlib-blocks THREADS LEVEL BLOCK FILE | zstd THREADS LEVEL FILE | hash OUTPUT LAYER...");
    std::process::exit(2);
}

fn num<T: std::str::FromStr>(s: Option<&String>) -> T {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

/// Run `work(i)` for i in 0..n on `threads` threads, each taking the next index.
fn parallel(threads: usize, n: usize, work: impl Fn(usize) -> io::Result<()> + Sync) -> io::Result<()> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| -> io::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        work(i)?;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().expect("worker panicked"))
    })
}

fn inflate(path: &str) -> io::Result<()> {
    let mut f = io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)?;
    let f = io::Cursor::new(magic).chain(f);
    let mut sink = io::sink();
    match magic {
        [0x1f, 0x8b, ..] => io::copy(&mut flate2::read::MultiGzDecoder::new(f), &mut sink)?,
        [0x28, 0xb5, 0x2f, 0xfd] => io::copy(&mut zstd::stream::read::Decoder::new(f)?, &mut sink)?,
        _ => io::copy(&mut { f }, &mut sink)?,
    };
    Ok(())
}

/// A sink that hashes what it is given and adds the time spent hashing to `spent`.
struct Timed<'a> {
    h: sha2::Sha256,
    spent: &'a mut std::time::Duration,
}

impl Write for Timed<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        let t = std::time::Instant::now();
        self.h.update(b);
        *self.spent += t.elapsed();
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hash `path` (and, for a layer, its decompressed stream); return the seconds spent hashing.
/// Streamed (a 4× image's output is gigabytes); only the time inside SHA-256 counts.
fn hash(path: &str, layer: bool) -> io::Result<std::time::Duration> {
    let mut spent = std::time::Duration::ZERO;
    let open = || std::fs::File::open(path).map(|f| io::BufReader::with_capacity(1 << 20, f));
    io::copy(&mut open()?, &mut Timed { h: Default::default(), spent: &mut spent })?;
    if layer {
        let mut f = open()?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic)?;
        let f = io::Cursor::new(magic[..n].to_vec()).chain(f);
        let mut sink = Timed { h: Default::default(), spent: &mut spent };
        match magic {
            [0x1f, 0x8b, ..] => io::copy(&mut flate2::read::MultiGzDecoder::new(f), &mut sink)?,
            [0x28, 0xb5, 0x2f, 0xfd] => io::copy(&mut zstd::stream::read::Decoder::new(f)?, &mut sink)?,
            _ => 0,
        };
    }
    Ok(spent)
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("inflate") => {
            let files = &args[2..];
            parallel(num(args.get(1)), files.len(), |i| inflate(&files[i]))
        }
        Some("gzip") => {
            let (threads, level): (usize, u32) = (num(args.get(1)), num(args.get(2)));
            let data = std::fs::read(args.get(3).unwrap_or_else(|| usage()))?;
            let slice = data.len().div_ceil(threads.max(1)).max(1);
            let chunks: Vec<&[u8]> = data.chunks(slice).collect();
            parallel(threads, chunks.len(), |i| {
                let mut e = flate2::write::GzEncoder::new(io::sink(), flate2::Compression::new(level));
                e.write_all(chunks[i])?;
                e.finish().map(drop)
            })
        }
        Some("zlib-blocks") => {
            let (threads, level, block): (usize, i32, usize) = (num(args.get(1)), num(args.get(2)), num(args.get(3)));
            let data = Arc::new(std::fs::read(args.get(4).unwrap_or_else(|| usage()))?);
            let blocks: Vec<&[u8]> = data.chunks(block.max(1)).collect();
            let level = libdeflater::CompressionLvl::new(level).unwrap_or_else(|_| usage());
            thread_local!(static C: std::cell::RefCell<Option<libdeflater::Compressor>> = const { std::cell::RefCell::new(None) });
            parallel(threads, blocks.len(), |i| {
                C.with_borrow_mut(|c| {
                    let c = c.get_or_insert_with(|| libdeflater::Compressor::new(level));
                    let mut out = vec![0; c.zlib_compress_bound(blocks[i].len())];
                    c.zlib_compress(blocks[i], &mut out).map(drop).map_err(|e| io::Error::other(format!("{e:?}")))
                })
            })
        }
        Some("zstd") => {
            let (threads, level): (u32, i32) = (num(args.get(1)), num(args.get(2)));
            let mut f = io::BufReader::with_capacity(1 << 20, std::fs::File::open(args.get(3).unwrap_or_else(|| usage()))?);
            let mut e = zstd::stream::write::Encoder::new(io::sink(), level)?;
            e.multithread(threads)?;
            e.include_checksum(true)?;
            io::copy(&mut f, &mut e)?;
            e.finish().map(drop)
        }
        Some("hash") => {
            let out = args.get(1).unwrap_or_else(|| usage());
            let mut total = hash(out, false)?;
            for l in &args[2..] {
                total += hash(l, true)?;
            }
            println!("{:.2}", total.as_secs_f64());
            Ok(())
        }
        _ => usage(),
    }
}
