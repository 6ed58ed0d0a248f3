//! Content access for emitters: file contents in an emitter's order, from the spill files or
//! read straight from the layer streams of a tree flattened in
//! [`ContentMode::Index`](super::layer::ContentMode::Index) mode, so a streaming emitter (cpio,
//! compressed) needs no spill file and never sees a layer blob (the tree keeps its layers).
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

use super::{ContentRef, Tree};
use crate::digest::HashReader;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
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
    /// A content's `spill` index is its layer; the tree knows which layers are streams.
    pub fn new(tree: &'a Tree, order: impl IntoIterator<Item = ContentRef>) -> Self {
        let layers = tree.streams.len();
        let mut pos = vec![0u64; layers];
        let mut capture: Vec<Vec<(u64, u64)>> = vec![Vec::new(); layers];
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
            streams: (0..layers).map(|_| None).collect(),
            capture,
            captured: HashMap::new(),
            spill: None,
            spill_len: 0,
            buf: vec![0u8; 1 << 20],
        }
    }

    fn stream(&mut self, l: usize) -> io::Result<&mut Stream> {
        let Some((path, blob)) = self.tree.streams.get(l).and_then(|s| s.as_ref()) else {
            return Err(bad(format!("internal: layer {l}'s contents are not spilled and the tree holds no stream for it")));
        };
        if self.streams[l].is_none() {
            let f = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let outer = Rc::new(RefCell::new(HashReader::new(BufReader::with_capacity(1 << 18, f))));
            let inner = crate::tree::layer::open_decompressed(Shared(outer.clone()))
                .map_err(|e| bad(format!("layer {}: decompressing: {e}", blob.label)))?;
            self.streams[l] = Some(Stream { outer, inner, pos: 0 });
        }
        Ok(self.streams[l].as_mut().expect("opened"))
    }

    fn label(&self, l: usize) -> String {
        self.tree.streams.get(l).and_then(|s| s.as_ref()).map(|(_, b)| b.label.clone()).unwrap_or_else(|| l.to_string())
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
        let label = self.label(l);
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
        let label = self.label(l);
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
            let Some((_, blob)) = self.tree.streams[l].as_ref() else { continue };
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
pub fn head(tree: &Tree, c: &ContentRef, max: u64) -> io::Result<Vec<u8>> {
    let part = ContentRef { len: c.len.min(max), ..*c };
    let mut out = Vec::new();
    if tree.is_spilled(&part) {
        tree.open(&part).read_to_end(&mut out)?;
        return Ok(out);
    }
    let mut contents = Contents::new(tree, [part]);
    contents.copy(&part, &mut out)?;
    Ok(out)
}

