//! Reading one layer blob: verify its digest and `diff_id` while decompressing (gzip, zstd or
//! plain tar, sniffed from the first bytes), list its entries, and spill file contents to an
//! unnamed temp file so the tree holds offsets, not bytes.

use super::{ContentRef, Meta};
use crate::digest::HashReader;
use crate::error::{Error, Result};
use crate::source::LayerBlob;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::Path;

/// Caps against decompression bombs and hostile archives.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of file content one layer may unpack to.
    pub max_layer_bytes: u64,
    /// Most entries one layer may hold.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_layer_bytes: 64 << 30, max_entries: 4_000_000 }
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

/// A layer's entries in archive order, plus the spill file holding their contents.
pub struct ParsedLayer {
    pub label: String,
    pub entries: Vec<RawEntry>,
    pub spill: File,
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
    /// Copy nothing; offsets point into the layer's uncompressed tar stream, and an emitter
    /// that lays out its output first fetches the bytes with [`fill`] (one write of the data
    /// instead of two). GNU sparse entries have no single stream span, so a layer holding
    /// one must be read in `Spill` mode: [`parse_with`] then returns `None`.
    Index,
}

/// Parse the layer at `blob_path` in [`ContentMode::Spill`] mode, checking the compressed
/// digest and size against `blob` and the uncompressed digest against its `diff_id`.
pub fn parse(blob_path: &Path, blob: &LayerBlob, spill_index: u32, limits: Limits) -> Result<ParsedLayer> {
    Ok(parse_with(blob_path, blob, spill_index, limits, ContentMode::Spill)?.expect("spill mode always succeeds"))
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

    /// Like [`Verified::open`] without hashing the decompressed stream (see [`fill`]).
    fn open_unhashed(blob_path: &Path, blob: &LayerBlob) -> Result<(Self, Box<dyn Read>)> {
        let (v, inner) = Self::open(blob_path, blob)?;
        Ok((v, inner.into_inner()))
    }

    /// Check only the compressed digest and size: the rest of the blob is hashed without
    /// being decompressed. Enough when the same blob already passed [`Verified::finish`]:
    /// equal compressed bytes decompress to equal bytes.
    fn finish_blob(self, decompressor: impl Sized, blob: &LayerBlob) -> Result<()> {
        drop(decompressor);
        self.check_blob(blob)
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

/// Copy the bytes of the regular files at the given stream offsets (`wanted`: offset in the
/// uncompressed tar stream → offset in `out`) into `out` with positioned writes. The blob
/// is read a second time, so its compressed digest and size are checked again (the
/// diff_id was checked on the first read, and equal compressed bytes decompress to equal
/// bytes); decompression stops after the last wanted file.
pub fn fill(blob_path: &Path, blob: &LayerBlob, wanted: &std::collections::HashMap<u64, u64>, out: &File) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let (v, inner) = Verified::open_unhashed(blob_path, blob)?;
    let mut ar = tar::Archive::new(inner);
    let bad_tar = |e: io::Error| layer_err(blob, b"", format!("not a readable tar stream: {e}"));
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    for e in ar.entries().map_err(bad_tar)? {
        if done == wanted.len() {
            break;
        }
        let mut e = e.map_err(bad_tar)?;
        let Some(&dst) = wanted.get(&e.raw_file_position()) else { continue };
        if !matches!(e.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous) {
            continue;
        }
        let mut at = dst;
        loop {
            let n = e.read(&mut buf).map_err(|err| layer_err(blob, &e.path_bytes(), format!("reading file data: {err}")))?;
            if n == 0 {
                break;
            }
            out.write_all_at(&buf[..n], at).map_err(|err| Error::other(format!("writing output: {err}")))?;
            at += n as u64;
        }
        done += 1;
    }
    if done != wanted.len() {
        return Err(layer_err(blob, b"", "layer changed between reads: file data not found again"));
    }
    v.finish_blob(ar, blob)
}

/// Parse the layer at `blob_path` (see [`ContentMode`]).
pub fn parse_with(blob_path: &Path, blob: &LayerBlob, spill_index: u32, limits: Limits, mode: ContentMode) -> Result<Option<ParsedLayer>> {
    let (verified, inner) = Verified::open(blob_path, blob)?;
    let mut ar = tar::Archive::new(inner);

    let spill_file = tempfile::tempfile().map_err(|e| Error::other(format!("creating a spill file in the temp dir: {e}")))?;
    let mut spill = BufWriter::with_capacity(1 << 20, crate::fsutil::PreallocFile::new(spill_file));
    let mut offset = 0u64;
    let mut entries = Vec::new();
    let bad_tar = |e: io::Error| layer_err(blob, b"", format!("not a readable tar stream: {e}"));

    // Bytes the entries claim (file data, and data the reader skips for other entries).
    let mut unpacked = 0u64;
    let mut next_skip = 0u64;
    let mut iter = ar.entries().map_err(bad_tar)?;
    loop {
        // Between entries the tar reader skips the previous entry's data and reads headers
        // and extension records on its own: bound that; an entry's own data is bounded by
        // its size, checked below.
        verified.allow(next_skip.saturating_add(MAX_META_BYTES));
        let Some(e) = iter.next() else { break };
        verified.allow(u64::MAX);
        let mut e = e.map_err(bad_tar)?;
        next_skip = e.size().saturating_add(511) & !511;
        if entries.len() >= limits.max_entries {
            return Err(layer_err(blob, b"", format!("more than {} entries; refusing (possible archive bomb)", limits.max_entries)));
        }
        let path = e.path_bytes().into_owned();
        let h = e.header().clone();
        let mut meta = Meta {
            mode: h.mode().map_err(|err| layer_err(blob, &path, format!("bad mode field: {err}")))? & 0o7777,
            uid: h.uid().map_err(|err| layer_err(blob, &path, format!("bad uid field: {err}")))?,
            gid: h.gid().map_err(|err| layer_err(blob, &path, format!("bad gid field: {err}")))?,
            mtime: h.mtime().unwrap_or(0) as i64,
            xattrs: BTreeMap::new(),
        };
        if let Some(pax) = e.pax_extensions().map_err(|err| layer_err(blob, &path, format!("bad PAX header: {err}")))? {
            for ext in pax {
                let ext = ext.map_err(|err| layer_err(blob, &path, format!("bad PAX record: {err}")))?;
                let key = ext.key_bytes();
                let num = || std::str::from_utf8(ext.value_bytes()).ok().and_then(|s| s.split('.').next()?.parse::<i64>().ok());
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    // A record with an empty value deletes the keyword (POSIX pax), and Go's
                    // archive/tar (umoci, containerd, Docker) sets no xattr for it.
                    let name = String::from_utf8_lossy(name).into_owned();
                    if ext.value_bytes().is_empty() {
                        meta.xattrs.remove(&name);
                    } else {
                        meta.xattrs.insert(name, ext.value_bytes().to_vec());
                    }
                } else if key == b"uid" {
                    meta.uid = num().filter(|v| *v >= 0).ok_or_else(|| layer_err(blob, &path, "bad PAX uid"))? as u64;
                } else if key == b"gid" {
                    meta.gid = num().filter(|v| *v >= 0).ok_or_else(|| layer_err(blob, &path, "bad PAX gid"))? as u64;
                } else if key == b"mtime" {
                    meta.mtime = num().ok_or_else(|| layer_err(blob, &path, "bad PAX mtime"))?;
                }
            }
        }
        unpacked = unpacked.saturating_add(e.size());
        if unpacked > limits.max_layer_bytes {
            return Err(layer_err(
                blob,
                &path,
                format!("layer unpacks to more than {} bytes; refusing (possible decompression bomb)", limits.max_layer_bytes),
            ));
        }
        use tar::EntryType as T;
        let link = || e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        // Linux device numbers have a 12-bit major and a 20-bit minor; every output format
        // holds those (a larger one would not fit a ustar header's 7 octal digits).
        let dev = |h: &tar::Header| -> Result<(u32, u32)> {
            let bad = |err: io::Error| layer_err(blob, &path, format!("bad device number field: {err}"));
            let major = h.device_major().map_err(bad)?.unwrap_or(0);
            let minor = h.device_minor().map_err(bad)?.unwrap_or(0);
            if major > 0xfff || minor > 0xf_ffff {
                return Err(layer_err(blob, &path, format!("device number {major}:{minor} is out of range (majors go to 4095, minors to 1048575)")));
            }
            Ok((major, minor))
        };
        let kind = match h.entry_type() {
            T::Directory => RawKind::Dir,
            T::Symlink => RawKind::Symlink(link()),
            T::Link => RawKind::Hardlink(link()),
            T::Char => {
                let (a, b) = dev(&h)?;
                RawKind::Char(a, b)
            }
            T::Block => {
                let (a, b) = dev(&h)?;
                RawKind::Block(a, b)
            }
            T::Fifo => RawKind::Fifo,
            T::XGlobalHeader => continue,
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = e.size();
                if mode == ContentMode::Index {
                    if h.entry_type() == T::GNUSparse {
                        return Ok(None);
                    }
                    offset += size;
                    RawKind::File(ContentRef { spill: spill_index, offset: e.raw_file_position(), len: size })
                } else {
                    let n = io::copy(&mut e, &mut spill).map_err(|err| layer_err(blob, &path, format!("reading file data: {err}")))?;
                    if n != size {
                        return Err(layer_err(blob, &path, format!("file data truncated: {n} of {size} bytes")));
                    }
                    let c = ContentRef { spill: spill_index, offset, len: n };
                    offset += n;
                    RawKind::File(c)
                }
            }
            other => return Err(layer_err(blob, &path, format!("unsupported tar entry type {:?}", other.as_byte() as char))),
        };
        entries.push(RawEntry { path, kind, meta });
    }
    verified.finish(ar.into_inner(), blob)?;
    let spill = spill
        .into_inner()
        .map_err(|e| Error::other(format!("writing the spill file: {}", e.error())))?
        .finish()
        .map_err(|e| Error::other(format!("writing the spill file: {e}")))?;
    Ok(Some(ParsedLayer { label: blob.label.clone(), entries, spill }))
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
