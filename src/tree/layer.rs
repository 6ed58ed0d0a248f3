//! Reading one layer blob: verify its digest and `diff_id` while decompressing (gzip, zstd or
//! plain tar, sniffed from the first bytes), list its entries, and spill file contents to an
//! unnamed temp file so the tree holds offsets, not bytes (or, for a tree wanted for its
//! metadata only, keep no contents at all: see [`ContentMode`]).

use super::{ContentRef, Meta};
use crate::digest::HashReader;
use crate::error::{Error, Result};
use crate::source::LayerBlob;
use std::fs::File;
use super::tarread::{Kind, Reader, TarError};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// Caps against decompression bombs and hostile archives.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of file content one layer may unpack to.
    pub max_layer_bytes: u64,
    /// Most entries one layer may hold. They wait on disk (see [`Entries`]), so this bounds
    /// time and temp space, not memory.
    pub max_entries: usize,
    /// Most paths the flattened tree may hold, all layers together, and most bytes of
    /// paths, symlink targets and xattrs: what bounds memory (see docs/limits.md for the
    /// measurement behind the defaults).
    pub max_tree_entries: usize,
    pub max_tree_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_layer_bytes: 64 << 30, max_entries: 4_000_000, max_tree_entries: 500_000, max_tree_bytes: 48 << 20 }
    }
}

/// Most bytes the tar reader may consume on its own between two entries (headers, PAX and
/// GNU long-name records, which the `tar` crate reads into memory, plus the previous
/// entry's skipped data), and after the end-of-archive marker. Without it a small gzip
/// could inflate into gigabytes of RAM, or of CPU work no limit counts.
pub const MAX_META_BYTES: u64 = 16 << 20;

/// What one tar entry asks for, before its path is resolved against the tree.
#[derive(Debug, Clone)]
pub enum RawKind {
    Dir,
    File(ContentRef),
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
pub struct RawEntry {
    pub path: Vec<u8>,
    pub kind: RawKind,
    pub meta: Meta,
}

/// A layer's entries in archive order, plus the spill file holding their contents (`None`
/// when the layer was read in [`ContentMode::Index`]: its contents were not kept).
pub struct ParsedLayer {
    pub label: String,
    pub entries: Entries,
    pub spill: Option<File>,
}

/// A layer's entries in archive order, encoded one after another in an unnamed temp file:
/// held in memory, a layer of a million small files took ~150 MB on top of the tree being
/// built from it. Written once while the layer is parsed, read once when it is applied.
pub struct Entries {
    file: BufWriter<File>,
    count: usize,
    /// Bytes of paths, link targets and xattrs pushed.
    names: u64,
}

/// Most bytes of paths, link targets and xattrs one layer's entry list may hold: the tree
/// holds at most 48 MiB of them (see [`Limits::max_tree_bytes`]); a layer may rewrite
/// paths, so its list may be longer, but not without bound (it takes temp space).
pub const MAX_ENTRY_NAMES: u64 = 256 << 20;

impl Entries {
    pub fn new() -> io::Result<Self> {
        Ok(Entries { file: BufWriter::with_capacity(1 << 16, tempfile::tempfile()?), count: 0, names: 0 })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn push(&mut self, e: &RawEntry) -> io::Result<()> {
        let w = &mut self.file;
        let names = &mut self.names;
        let mut bytes = |w: &mut BufWriter<File>, b: &[u8]| -> io::Result<()> {
            *names += b.len() as u64;
            w.write_all(&(b.len() as u32).to_le_bytes())?;
            w.write_all(b)
        };
        bytes(w, &e.path)?;
        match &e.kind {
            RawKind::Dir => w.write_all(&[0])?,
            RawKind::File(c) => {
                w.write_all(&[1])?;
                w.write_all(&c.spill.to_le_bytes())?;
                w.write_all(&c.offset.to_le_bytes())?;
                w.write_all(&c.len.to_le_bytes())?;
            }
            RawKind::Symlink(t) => {
                w.write_all(&[2])?;
                bytes(w, t)?;
            }
            RawKind::Hardlink(t) => {
                w.write_all(&[3])?;
                bytes(w, t)?;
            }
            RawKind::Char(a, b) | RawKind::Block(a, b) => {
                w.write_all(&[if matches!(e.kind, RawKind::Char(..)) { 4 } else { 5 }])?;
                w.write_all(&a.to_le_bytes())?;
                w.write_all(&b.to_le_bytes())?;
            }
            RawKind::Fifo => w.write_all(&[6])?,
        }
        let m = &e.meta;
        w.write_all(&m.mode.to_le_bytes())?;
        w.write_all(&m.uid.to_le_bytes())?;
        w.write_all(&m.gid.to_le_bytes())?;
        w.write_all(&m.mtime.to_le_bytes())?;
        w.write_all(&(m.xattrs.len() as u32).to_le_bytes())?;
        for (k, v) in m.xattrs.iter() {
            bytes(w, k.as_bytes())?;
            bytes(w, v)?;
        }
        self.count += 1;
        Ok(())
    }

    /// The entries in the order they were pushed.
    pub fn read(self) -> io::Result<impl Iterator<Item = io::Result<RawEntry>>> {
        use std::io::Seek;
        let mut f = self.file.into_inner().map_err(|e| e.into_error())?;
        f.seek(io::SeekFrom::Start(0))?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        Ok((0..self.count).map(move |_| read_entry(&mut r)))
    }
}

impl TryFrom<Vec<RawEntry>> for Entries {
    type Error = io::Error;
    fn try_from(v: Vec<RawEntry>) -> io::Result<Self> {
        let mut e = Entries::new()?;
        for x in &v {
            e.push(x)?;
        }
        Ok(e)
    }
}

fn read_entry(r: &mut impl Read) -> io::Result<RawEntry> {
    fn n<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        r.read_exact(&mut b)?;
        Ok(b)
    }
    fn bytes(r: &mut impl Read) -> io::Result<Vec<u8>> {
        let len = u32::from_le_bytes(n(r)?) as usize;
        let mut v = vec![0u8; len];
        r.read_exact(&mut v)?;
        Ok(v)
    }
    fn u32_(r: &mut impl Read) -> io::Result<u32> {
        Ok(u32::from_le_bytes(n(r)?))
    }
    let path = bytes(r)?;
    let kind = match n::<1>(r)?[0] {
        0 => RawKind::Dir,
        1 => {
            let spill = u32_(r)?;
            let offset = u64::from_le_bytes(n(r)?);
            let len = u64::from_le_bytes(n(r)?);
            RawKind::File(ContentRef { spill, offset, len })
        }
        2 => RawKind::Symlink(bytes(r)?),
        3 => RawKind::Hardlink(bytes(r)?),
        4 => RawKind::Char(u32_(r)?, u32_(r)?),
        5 => RawKind::Block(u32_(r)?, u32_(r)?),
        6 => RawKind::Fifo,
        t => return Err(io::Error::other(format!("entry list: bad kind {t}"))),
    };
    let mode = u32_(r)?;
    let uid = u64::from_le_bytes(n(r)?);
    let gid = u64::from_le_bytes(n(r)?);
    let mtime = i64::from_le_bytes(n(r)?);
    let mut xattrs = std::collections::BTreeMap::new();
    for _ in 0..u32_(r)? {
        let k = String::from_utf8(bytes(r)?).map_err(|_| io::Error::other("entry list: xattr name not UTF-8"))?;
        xattrs.insert(k, bytes(r)?);
    }
    Ok(RawEntry { path, kind, meta: Meta { mode, uid, gid, mtime, xattrs: xattrs.into() } })
}

/// Compression of a blob, from its first bytes.
pub fn sniff(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        "none"
    }
}

fn tar_err(blob: &LayerBlob, e: TarError) -> Error {
    layer_err(blob, &e.path, e.message)
}

/// Write `n` zero bytes.
fn zeros(w: &mut impl Write, mut n: u64) -> io::Result<()> {
    let z = [0u8; 1 << 16];
    while n > 0 {
        let k = n.min(z.len() as u64) as usize;
        w.write_all(&z[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn layer_err(blob: &LayerBlob, path: &[u8], message: impl Into<String>) -> Error {
    Error::Layer { layer: blob.label.clone(), path: super::path::show(path), message: message.into() }
}

/// Open a (possibly compressed) layer stream. The returned reader yields the tar bytes.
pub fn open_decompressed<R: Read + 'static>(mut r: R) -> io::Result<Box<dyn Read>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        let k = r.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let kind = sniff(&head[..n]);
    let r = io::Cursor::new(head[..n].to_vec()).chain(r);
    Ok(match kind {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, r))),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(r)?),
        _ => Box::new(r),
    })
}

/// Where file contents go while a layer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// Copy every file's bytes to the layer's spill file; [`ContentRef`] offsets point there.
    Spill,
    /// Metadata only: keep no contents and no spill file. Offsets point into the layer's
    /// uncompressed tar stream, which only tells contents apart; reading one through the
    /// tree fails ([`super::Tree::open`]). For what needs no file bytes (`inspect`, a build
    /// whose outputs are only packages and provenance). A GNU sparse entry is recorded by
    /// its logical size like any file (the reader has already checked its map).
    Index,
}

/// Parse the layer at `blob_path` in [`ContentMode::Spill`] mode, checking the compressed
/// digest and size against `blob` and the uncompressed digest against its `diff_id`.
pub fn parse(blob_path: &Path, blob: &LayerBlob, spill_index: u32, limits: Limits) -> Result<ParsedLayer> {
    parse_with(blob_path, blob, spill_index, limits, ContentMode::Spill)
}

/// Compressed blob → hasher → decompressor → hasher: the tar stream of a layer, with both
/// digests available once it has been read to the end (see [`Verified::finish`]).
struct Verified {
    outer: std::rc::Rc<std::cell::RefCell<HashReader<BufReader<File>>>>,
    /// Decompressed bytes the tar stream may still yield; unlimited until [`Verified::allow`].
    budget: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Verified {
    fn open(blob_path: &Path, blob: &LayerBlob) -> Result<(Self, HashReader<Box<dyn Read>>)> {
        let f = File::open(blob_path).map_err(|e| layer_err(blob, b"", format!("cannot open blob {}: {e}", blob_path.display())))?;
        let outer = std::rc::Rc::new(std::cell::RefCell::new(HashReader::new(BufReader::with_capacity(1 << 20, f))));
        let decompressed = open_decompressed(SharedReader(outer.clone())).map_err(|e| layer_err(blob, b"", format!("decompressing: {e}")))?;
        let budget = std::rc::Rc::new(std::cell::Cell::new(u64::MAX));
        let limited: Box<dyn Read> = Box::new(Budget { inner: decompressed, left: budget.clone() });
        Ok((Verified { outer, budget }, HashReader::new(limited)))
    }

    /// Let the tar stream yield at most `n` more bytes.
    fn allow(&self, n: u64) {
        self.budget.set(n);
    }

    /// Hash the rest of the compressed blob and compare digest and size with the descriptor.
    fn check_blob(self, blob: &LayerBlob) -> Result<()> {
        let outer = std::rc::Rc::try_unwrap(self.outer).map_err(|_| Error::other("internal: layer reader still shared"))?.into_inner();
        let (digest, size, _) = outer.drain_and_finish().map_err(|e| layer_err(blob, b"", format!("reading blob: {e}")))?;
        if digest != blob.digest {
            return Err(Error::DigestMismatch { what: format!("layer blob {}", blob.label), expected: blob.digest.to_string(), found: digest.to_string() });
        }
        if size != blob.size {
            return Err(Error::SizeMismatch { what: format!("layer blob {}", blob.label), expected: blob.size, found: size });
        }
        Ok(())
    }

    /// Drain both streams (at most [`MAX_META_BYTES`] after the archive's end) and check
    /// the diff_id, the digest and the size.
    fn finish(self, inner: HashReader<Box<dyn Read>>, blob: &LayerBlob) -> Result<()> {
        self.allow(MAX_META_BYTES);
        let (diff_id, _, decoder) = inner.drain_and_finish().map_err(|e| layer_err(blob, b"", format!("decompressing: {e}")))?;
        drop(decoder);
        if diff_id != blob.diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed layer {} (diff_id)", blob.label),
                expected: blob.diff_id.to_string(),
                found: diff_id.to_string(),
            });
        }
        self.check_blob(blob)
    }
}

/// Parse the layer at `blob_path` (see [`ContentMode`]).
pub fn parse_with(blob_path: &Path, blob: &LayerBlob, spill_index: u32, limits: Limits, mode: ContentMode) -> Result<ParsedLayer> {
    let (verified, inner) = Verified::open(blob_path, blob)?;
    let mut ar = Reader::new(inner, MAX_META_BYTES);

    let mut spill = match mode {
        ContentMode::Spill => {
            let f = tempfile::tempfile().map_err(|e| Error::other(format!("creating a spill file in the temp dir: {e}")))?;
            Some(BufWriter::with_capacity(1 << 20, crate::fsutil::PreallocFile::new(f)))
        }
        ContentMode::Index => None,
    };
    let mut offset = 0u64;
    let mut entries = Entries::new().map_err(|e| Error::other(format!("creating an entry list in the temp dir: {e}")))?;
    let mut buf = vec![0u8; 1 << 16];

    // Logical bytes the files unpack to (a sparse file's real size, holes included).
    let mut unpacked = 0u64;
    loop {
        // Between entries the reader skips the previous entry's data and reads headers and
        // extension records on its own: bound that; an entry's own data is bounded by its
        // size, checked below.
        let skip = ar.pending();
        verified.allow(skip.saturating_add(MAX_META_BYTES));
        let Some(mut e) = ar.next().map_err(|e| tar_err(blob, e))? else { break };
        verified.allow(u64::MAX);
        if entries.len() >= limits.max_entries {
            return Err(layer_err(blob, b"", format!("more than {} entries; refusing (possible archive bomb)", limits.max_entries)));
        }
        let path = e.path.clone();
        let meta = Meta { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, xattrs: std::mem::take(&mut e.xattrs).into() };
        unpacked = unpacked.saturating_add(e.size);
        if unpacked > limits.max_layer_bytes {
            return Err(layer_err(
                blob,
                &path,
                format!("layer unpacks to more than {} bytes; refusing (possible decompression bomb)", limits.max_layer_bytes),
            ));
        }
        // Linux device numbers have a 12-bit major and a 20-bit minor; every output format
        // holds those (a larger one would not fit a ustar header's 7 octal digits).
        let dev = || -> Result<(u32, u32)> {
            let (major, minor) = e.dev;
            if major > 0xfff || minor > 0xf_ffff {
                return Err(layer_err(blob, &path, format!("device number {major}:{minor} is out of range (majors go to 4095, minors to 1048575)")));
            }
            Ok((major as u32, minor as u32))
        };
        let kind = match e.kind {
            Kind::Dir => RawKind::Dir,
            Kind::Symlink => RawKind::Symlink(e.link.clone()),
            Kind::Hardlink => RawKind::Hardlink(e.link.clone()),
            Kind::Char => {
                let (a, b) = dev()?;
                RawKind::Char(a, b)
            }
            Kind::Block => {
                let (a, b) = dev()?;
                RawKind::Block(a, b)
            }
            Kind::Fifo => RawKind::Fifo,
            Kind::File => {
                if let Some(spill) = spill.as_mut() {
                    let start = offset;
                    let mut copy = |n: u64, spill: &mut BufWriter<crate::fsutil::PreallocFile>, offset: &mut u64| -> Result<()> {
                        let mut left = n;
                        while left > 0 {
                            let want = left.min(buf.len() as u64) as usize;
                            let k = ar.read_data(&mut buf[..want]).map_err(|err| layer_err(blob, &path, format!("reading file data: {err}")))?;
                            if k == 0 {
                                return Err(layer_err(blob, &path, "file data truncated"));
                            }
                            spill.write_all(&buf[..k]).map_err(|err| Error::other(format!("writing the spill file: {err}")))?;
                            left -= k as u64;
                            *offset += k as u64;
                        }
                        Ok(())
                    };
                    match &e.sparse {
                        None => copy(e.size, spill, &mut offset)?,
                        Some(map) => {
                            // Holes become zeros: the outputs have no way to say "hole".
                            let mut at = 0u64;
                            for &(off, len) in map {
                                zeros(spill, off - at).map_err(|err| Error::other(format!("writing the spill file: {err}")))?;
                                offset += off - at;
                                copy(len, spill, &mut offset)?;
                                at = off + len;
                            }
                            zeros(spill, e.size - at).map_err(|err| Error::other(format!("writing the spill file: {err}")))?;
                            offset += e.size - at;
                        }
                    }
                    RawKind::File(ContentRef { spill: spill_index, offset: start, len: e.size })
                } else {
                    RawKind::File(ContentRef { spill: spill_index, offset: e.data_pos, len: e.size })
                }
            }
        };
        if path.len() > super::path::MAX_PATH {
            // (refused here rather than when applied: the entry list is not for megabytes of names)
            return Err(layer_err(blob, &path, format!("path is longer than {} bytes", super::path::MAX_PATH)));
        }
        entries.push(&RawEntry { path, kind, meta }).map_err(|e| Error::other(format!("writing the entry list: {e}")))?;
        if entries.names > MAX_ENTRY_NAMES {
            return Err(layer_err(blob, b"", format!("more than {MAX_ENTRY_NAMES} bytes of paths, link targets and xattrs; refusing (possible archive bomb)")));
        }
    }
    verified.finish(ar.into_inner(), blob)?;
    let spill = match spill {
        Some(w) => Some(
            w.into_inner()
                .map_err(|e| Error::other(format!("writing the spill file: {}", e.error())))?
                .finish()
                .map_err(|e| Error::other(format!("writing the spill file: {e}")))?,
        ),
        None => None,
    };
    Ok(ParsedLayer { label: blob.label.clone(), entries, spill })
}

/// The decompressed stream with an allowance the parser sets: reads past it fail.
struct Budget<R> {
    inner: R,
    left: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "more than {MAX_META_BYTES} bytes of tar metadata or trailing data; refusing (possible archive bomb)"
            )));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

/// Lets the decompressor read through a hasher we can still reach after it is done.
struct SharedReader<R>(std::rc::Rc<std::cell::RefCell<R>>);

impl<R: Read> Read for SharedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}
