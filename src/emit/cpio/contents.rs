//! File contents in an emitter's order, read straight from the layer streams of a tree
//! flattened in [`ContentMode::Index`](crate::tree::layer::ContentMode::Index) mode, so a
//! streaming emitter (cpio, compressed) needs no spill file.
//!
//! Writing the flattened rootfs to spill files costs more than anything else an initramfs
//! build does (fresh page-cache pages are slow to fill on our machines: 600 MB take seconds),
//! so the archive is fed from the layers themselves: every layer is decompressed once more,
//! front to back, and each file's bytes are taken as the stream passes them. A layer whose
//! tar is in path order (what Debian, StageX and most image builders write) is consumed in one
//! forward pass; bytes the archive needs *after* the stream has passed them (a layer out of
//! path order) are captured on the way into a small temp file. [`Contents::new`] works out
//! which those are before anything is read.
//!
//! Each re-read blob is hashed again and checked against its digest and size when it has been
//! read to the end ([`Contents::finish`]), so a blob changed in the store between the two
//! passes fails the build (the output is then never committed).

use crate::digest::HashReader;
use crate::source::LayerBlob;
use crate::tree::{ContentRef, Tree};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::rc::Rc;

/// Shares the compressed-blob hasher between the decompressor and the final check.
struct Shared(Rc<RefCell<HashReader<BufReader<File>>>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// One layer blob being re-read from the start.
struct Stream {
    outer: Rc<RefCell<HashReader<BufReader<File>>>>,
    inner: Box<dyn Read>,
    /// Offset in the uncompressed tar stream.
    pos: u64,
}

/// Hands out file contents in a fixed order: from spill files, from the layer streams, or
/// from what was captured from them earlier.
pub struct Contents<'a> {
    tree: &'a Tree,
    layers: &'a [(PathBuf, LayerBlob)],
    streams: Vec<Option<Stream>>,
    /// Per layer: ranges (offset, len) to capture while skipping, by offset.
    capture: Vec<VecDeque<(u64, u64)>>,
    /// (layer, offset) → offset in `spill`.
    captured: HashMap<(u32, u64), u64>,
    spill: Option<File>,
    spill_len: u64,
    buf: Vec<u8>,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<'a> Contents<'a> {
    /// Plan reads for the contents in `order` (the order [`Contents::copy`] will be called in).
    /// `layers` are the tree's layers as flattened: a content's `spill` index is its layer.
    pub fn new(tree: &'a Tree, layers: &'a [(PathBuf, LayerBlob)], order: impl IntoIterator<Item = ContentRef>) -> Self {
        let mut pos = vec![0u64; layers.len()];
        let mut capture: Vec<Vec<(u64, u64)>> = vec![Vec::new(); layers.len()];
        for c in order {
            if c.len == 0 || tree.is_spilled(&c) {
                continue;
            }
            let l = c.spill as usize;
            if c.offset >= pos[l] {
                pos[l] = c.offset + c.len;
            } else {
                capture[l].push((c.offset, c.len));
            }
        }
        let capture = capture
            .into_iter()
            .map(|mut v| {
                v.sort_unstable();
                v.into()
            })
            .collect();
        Contents {
            tree,
            layers,
            streams: (0..layers.len()).map(|_| None).collect(),
            capture,
            captured: HashMap::new(),
            spill: None,
            spill_len: 0,
            buf: vec![0u8; 1 << 20],
        }
    }

    fn stream(&mut self, l: usize) -> io::Result<&mut Stream> {
        if l >= self.layers.len() {
            return Err(bad(format!("internal: layer {l}'s contents are not spilled and its stream was not given")));
        }
        if self.streams[l].is_none() {
            let (path, blob) = &self.layers[l];
            let f = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let outer = Rc::new(RefCell::new(HashReader::new(BufReader::with_capacity(1 << 18, f))));
            let inner = crate::tree::layer::open_decompressed(Shared(outer.clone()))
                .map_err(|e| bad(format!("layer {}: decompressing: {e}", blob.label)))?;
            self.streams[l] = Some(Stream { outer, inner, pos: 0 });
        }
        Ok(self.streams[l].as_mut().expect("opened"))
    }

    /// Move layer `l`'s stream to `to`, capturing planned ranges on the way.
    fn advance(&mut self, l: usize, to: u64, buf: &mut [u8]) -> io::Result<()> {
        loop {
            let next = match self.capture[l].front() {
                Some(&(o, len)) if o < to => Some((o, len)),
                _ => None,
            };
            let target = next.map(|(o, _)| o).unwrap_or(to);
            self.skip(l, target)?;
            let Some((o, len)) = next else { return Ok(()) };
            self.capture[l].pop_front();
            if self.spill.is_none() {
                self.spill = Some(tempfile::tempfile()?);
            }
            let at = self.spill_len;
            let mut spill = self.spill.take().expect("spill");
            spill.seek(SeekFrom::Start(at))?;
            let r = self.copy_from_stream(l, len, &mut spill, buf);
            self.spill = Some(spill);
            r?;
            self.captured.insert((l as u32, o), at);
            self.spill_len += len;
        }
    }

    fn skip(&mut self, l: usize, to: u64) -> io::Result<()> {
        let label = self.layers[l].1.label.clone();
        let s = self.stream(l)?;
        if to < s.pos {
            return Err(bad(format!("layer {label}: internal: content at {to} requested after the stream passed it ({})", s.pos)));
        }
        let n = io::copy(&mut (&mut s.inner).take(to - s.pos), &mut io::sink())?;
        s.pos += n;
        if s.pos != to {
            return Err(bad(format!("layer {label}: stream ends at {} before content offset {to}", s.pos)));
        }
        Ok(())
    }

    fn copy_from_stream(&mut self, l: usize, len: u64, w: &mut dyn Write, buf: &mut [u8]) -> io::Result<()> {
        let label = self.layers[l].1.label.clone();
        let s = self.stream(l)?;
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = s.inner.read(&mut buf[..want])?;
            if n == 0 {
                return Err(bad(format!("layer {label}: stream ends inside a file's content")));
            }
            w.write_all(&buf[..n])?;
            s.pos += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    /// Write the bytes of `c` to `w`. Calls must come in the order given to [`Contents::new`].
    pub fn copy(&mut self, c: &ContentRef, w: &mut dyn Write) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.copy_inner(c, w, &mut buf);
        self.buf = buf;
        r
    }

    fn copy_inner(&mut self, c: &ContentRef, w: &mut dyn Write, buf: &mut [u8]) -> io::Result<()> {
        if c.len == 0 {
            return Ok(());
        }
        if self.tree.is_spilled(c) {
            return crate::fsutil::copy_exact(&mut self.tree.open(c), &mut &mut *w, c.len, buf);
        }
        let l = c.spill as usize;
        if let Some(&at) = self.captured.get(&(c.spill, c.offset)) {
            let spill = self.spill.as_mut().expect("captured content has a spill file");
            spill.seek(SeekFrom::Start(at))?;
            return crate::fsutil::copy_exact(&mut (&*spill).take(c.len), &mut &mut *w, c.len, buf);
        }
        self.advance(l, c.offset, buf)?;
        self.copy_from_stream(l, c.len, w, buf)
    }

    /// Read every re-opened layer to its end and check its digest and size again.
    pub fn finish(mut self) -> io::Result<()> {
        for (l, s) in self.streams.iter_mut().enumerate() {
            let Some(s) = s.take() else { continue };
            let blob = &self.layers[l].1;
            let Stream { outer, mut inner, .. } = s;
            io::copy(&mut inner, &mut io::sink())?;
            drop(inner);
            let outer = Rc::try_unwrap(outer).map_err(|_| bad("internal: layer reader still shared".into()))?.into_inner();
            let (digest, size, _) = outer.drain_and_finish()?;
            if digest != blob.digest || size != blob.size {
                return Err(bad(format!(
                    "layer blob {} changed while it was read: expected {} ({} bytes), found {digest} ({size} bytes)",
                    blob.label, blob.digest, blob.size
                )));
            }
        }
        Ok(())
    }
}

/// The first `max` bytes of `c`, however the tree holds it (for a look at one file, such as
/// an init script's `#!` line).
pub fn head(tree: &Tree, layers: &[(PathBuf, LayerBlob)], c: &ContentRef, max: u64) -> io::Result<Vec<u8>> {
    let part = ContentRef { len: c.len.min(max), ..*c };
    let mut out = Vec::new();
    if tree.is_spilled(&part) {
        tree.open(&part).read_to_end(&mut out)?;
        return Ok(out);
    }
    let mut contents = Contents::new(tree, layers, [part]);
    contents.copy(&part, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::tree::layer::{ContentMode, Limits};

    /// A layer blob (gzip) of `files`, in the order given, in `dir`.
    fn blob(dir: &std::path::Path, name: &str, files: &[(&str, Vec<u8>)]) -> (PathBuf, LayerBlob) {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_path(p).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        let raw = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        let path = dir.join(name);
        std::fs::write(&path, &gz).unwrap();
        let lb = LayerBlob {
            digest: Digest::of_bytes(&gz),
            size: gz.len() as u64,
            diff_id: Digest::of_bytes(&raw),
            media_type: crate::source::MT_OCI_LAYER_GZIP.into(),
            label: name.into(),
        };
        (path, lb)
    }

    fn archive(layers: &[(PathBuf, LayerBlob)], mode: ContentMode) -> Vec<u8> {
        let tree = crate::tree::flatten(layers, 1, Limits::default(), 2, mode, &crate::progress::Progress::new(true)).unwrap();
        let mut v = Vec::new();
        crate::emit::cpio::write_with(&tree, 1, layers, &mut v).unwrap();
        v
    }

    #[test]
    fn layer_streams_give_the_spilled_bytes_even_out_of_order() {
        let d = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // Layer 0 is in reverse path order, so every file but the first must be captured;
        // layer 1 replaces one file and is in order.
        let l0 = blob(d.path(), "l0", &[("z/last", b"zz".to_vec()), ("m/big", big.clone()), ("a/first", b"aa".to_vec()), ("a/empty", Vec::new())]);
        let l1 = blob(d.path(), "l1", &[("b/new", b"new".to_vec()), ("z/last", b"replaced".to_vec())]);
        let layers = vec![l0, l1];
        let spilled = archive(&layers, ContentMode::Spill);
        let streamed = archive(&layers, ContentMode::Index);
        assert!(spilled == streamed, "index mode wrote other bytes");
        let (es, _) = crate::emit::cpio::format::parse(&streamed).unwrap();
        let get = |n: &str| es.iter().find(|e| e.name == n.as_bytes()).unwrap().data;
        assert_eq!((get("a/first"), get("z/last"), get("b/new")), (&b"aa"[..], &b"replaced"[..], &b"new"[..]));
        assert!(get("m/big") == big.as_slice());
    }

    #[test]
    fn a_blob_changed_between_the_reads_fails() {
        let d = tempfile::tempdir().unwrap();
        let layers = vec![blob(d.path(), "l0", &[("a", b"one".to_vec()), ("b", b"two".to_vec())])];
        let tree = crate::tree::flatten(&layers, 1, Limits::default(), 1, ContentMode::Index, &crate::progress::Progress::new(true)).unwrap();
        // The same tar, gzipped at another level: it decompresses alike, but it is not the
        // blob that was verified.
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&layers[0].0).unwrap()).read_to_end(&mut raw).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&raw).unwrap();
        std::fs::write(&layers[0].0, gz.finish().unwrap()).unwrap();
        let err = crate::emit::cpio::write_with(&tree, 1, &layers, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("changed while it was read"), "{err}");
    }
}
