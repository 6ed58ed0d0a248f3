//! The flattened rootfs as plain data: bytewise-sorted paths → entries (kind, mode, owner,
//! mtime, xattrs, link target, content reference).
//!
//! Layers are applied with OCI semantics: whiteouts and opaque markers hide lower-layer
//! paths, later entries replace earlier ones, hardlinks share an inode, and a path whose
//! parent is a symlink is resolved inside the tree, never on the host. File contents stay in
//! per-layer spill files; the tree holds offsets. [`Tree::walk`] is the one order every
//! emitter uses: bytewise by path, so parents come before their children.

pub mod layer;
pub mod path;

use crate::error::{Error, Result};
use crate::source::LayerBlob;
use layer::{Limits, ParsedLayer, RawEntry, RawKind};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

/// Where a regular file's bytes live: a span of one layer's spill file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRef {
    pub spill: u32,
    pub offset: u64,
    pub len: u64,
}

/// Metadata as the layer recorded it. Emitters clamp `mtime` to SOURCE_DATE_EPOCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`), no file type bits.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Meta {
    /// Metadata for directories the tree creates itself (a missing parent): 0755 root:root.
    pub fn implicit_dir(mtime: i64) -> Self {
        Meta { mode: 0o755, uid: 0, gid: 0, mtime, xattrs: BTreeMap::new() }
    }

    /// The mtime every emitter writes: clamped to `[0, sde]`.
    pub fn clamped_mtime(&self, sde: u64) -> u64 {
        (self.mtime.max(0) as u64).min(sde)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file. Paths with the same `inode` are hardlinks of one file.
    File { content: ContentRef, inode: u64 },
    Symlink { target: Vec<u8> },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub meta: Meta,
}

/// Most symlinks followed while resolving one path (Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// The flattened rootfs. The root is the empty path and always a directory.
pub struct Tree {
    nodes: BTreeMap<Vec<u8>, Node>,
    spills: Vec<File>,
    next_inode: u64,
    /// mtime given to directories the tree creates for missing parents.
    implicit_mtime: i64,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("nodes", &self.nodes.len()).finish()
    }
}

impl Tree {
    pub fn new(implicit_mtime: i64) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(Vec::new(), Node { kind: Kind::Dir, meta: Meta::implicit_dir(implicit_mtime) });
        Tree { nodes, spills: Vec::new(), next_inode: 1, implicit_mtime }
    }

    /// Every entry, root first, then bytewise by path (parents before children).
    pub fn walk(&self) -> impl Iterator<Item = (&[u8], &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_slice(), v))
    }

    pub fn get(&self, path: &[u8]) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// A reader over a file's bytes (positioned reads; many may be open at once).
    pub fn open(&self, c: &ContentRef) -> ContentReader<'_> {
        ContentReader { file: &self.spills[c.spill as usize], pos: c.offset, end: c.offset + c.len }
    }

    /// How many paths share each file inode (for hardlink-aware emitters).
    pub fn link_counts(&self) -> HashMap<u64, u32> {
        let mut m = HashMap::new();
        for n in self.nodes.values() {
            if let Kind::File { inode, .. } = n.kind {
                *m.entry(inode).or_insert(0) += 1;
            }
        }
        m
    }

    /// Total bytes of regular-file content, each inode counted once.
    pub fn content_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.nodes
            .values()
            .filter_map(|n| match n.kind {
                Kind::File { content, inode } if seen.insert(inode) => Some(content.len),
                _ => None,
            })
            .sum()
    }

    /// Apply a parsed layer: its whiteouts first (they only hide lower layers, wherever they
    /// stand in the archive), then its entries in archive order (later ones win).
    pub fn apply(&mut self, layer: ParsedLayer) -> Result<()> {
        let spill = self.spills.len() as u32;
        self.spills.push(layer.spill);
        let label = layer.label;
        let err = |p: &[u8], m: String| Error::Layer { layer: label.clone(), path: path::show(p), message: m };

        let mut rest = Vec::with_capacity(layer.entries.len());
        for e in layer.entries {
            let comps = path::clean(&e.path).map_err(|m| err(&e.path, m))?;
            let Some(base) = comps.last() else {
                rest.push((comps, e));
                continue;
            };
            let Some(name) = base.strip_prefix(b".wh.") else {
                rest.push((comps, e));
                continue;
            };
            let parent = self.resolve_parent(&comps).map_err(|m| err(&e.path, m))?;
            if name == b".wh..opq" {
                self.remove_children(&parent);
            } else if name.starts_with(b".wh.") {
                // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not a deletion.
            } else if name.is_empty() {
                return Err(err(&e.path, "invalid whiteout: '.wh.' names nothing".into()));
            } else if name == b"." || name == b".." {
                return Err(err(&e.path, "invalid whiteout of '.' or '..'".into()));
            } else {
                let mut victim = parent.clone();
                if !victim.is_empty() {
                    victim.push(b'/');
                }
                victim.extend_from_slice(name);
                self.remove_subtree(&victim);
            }
        }

        for (comps, e) in rest {
            self.apply_entry(comps, e, spill).map_err(|m| err_path(&label, m))?;
        }
        Ok(())
    }

    fn apply_entry(&mut self, comps: Vec<Vec<u8>>, e: RawEntry, spill: u32) -> Result<(), (Vec<u8>, String)> {
        let RawEntry { path: raw, kind, meta } = e;
        if comps.is_empty() {
            // The root itself: only a directory may stand there.
            return match kind {
                RawKind::Dir => {
                    self.nodes.insert(Vec::new(), Node { kind: Kind::Dir, meta });
                    Ok(())
                }
                _ => Err((raw, "only a directory can replace the root".into())),
            };
        }
        let parent = self.resolve_parent(&comps).map_err(|m| (raw.clone(), m))?;
        self.make_parents(&parent);
        let mut key = parent;
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(comps.last().expect("non-empty"));

        let node = match kind {
            RawKind::Dir => Node { kind: Kind::Dir, meta },
            RawKind::File(content) => {
                let inode = self.next_inode;
                self.next_inode += 1;
                Node { kind: Kind::File { content: ContentRef { spill, ..content }, inode }, meta }
            }
            RawKind::Symlink(target) => {
                if target.is_empty() {
                    return Err((raw, "symlink with an empty target".into()));
                }
                Node { kind: Kind::Symlink { target }, meta }
            }
            RawKind::Char(major, minor) => Node { kind: Kind::Char { major, minor }, meta },
            RawKind::Block(major, minor) => Node { kind: Kind::Block { major, minor }, meta },
            RawKind::Fifo => Node { kind: Kind::Fifo, meta },
            RawKind::Hardlink(target) => {
                let tcomps = path::clean(&target).map_err(|m| (raw.clone(), format!("hardlink target {}: {m}", show_raw(&target))))?;
                if tcomps.is_empty() {
                    return Err((raw, "hardlink to the root directory".into()));
                }
                let tparent = self.resolve_parent(&tcomps).map_err(|m| (raw.clone(), format!("hardlink target: {m}")))?;
                let mut tkey = tparent;
                if !tkey.is_empty() {
                    tkey.push(b'/');
                }
                tkey.extend_from_slice(tcomps.last().expect("non-empty"));
                if tkey == key {
                    return Ok(()); // a link to itself changes nothing
                }
                match self.nodes.get(&tkey) {
                    None => {
                        return Err((raw, format!("hardlink to {}, which does not exist in the rootfs", path::show(&tkey))));
                    }
                    Some(Node { kind: Kind::Dir, .. }) => {
                        return Err((raw, format!("hardlink to directory {}", path::show(&tkey))));
                    }
                    // The link shares the target's inode as it is now; a later
                    // replacement of the target does not change it.
                    Some(n) => n.clone(),
                }
            }
        };

        match self.nodes.get_mut(&key) {
            Some(existing) if existing.kind == Kind::Dir && node.kind == Kind::Dir => {
                existing.meta = node.meta; // merge: children stay
            }
            Some(_) => {
                self.remove_subtree(&key);
                self.nodes.insert(key, node);
            }
            None => {
                self.nodes.insert(key, node);
            }
        }
        Ok(())
    }

    /// Resolve all but the last component of `comps` inside the tree, following symlinks
    /// (absolute targets from the tree's root, `..` clamped at the root). Returns the parent's key.
    fn resolve_parent(&self, comps: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        let mut queue: std::collections::VecDeque<Vec<u8>> = comps[..comps.len().saturating_sub(1)].iter().cloned().collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        let mut missing = false;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            if missing {
                continue;
            }
            let key = path::join(&cur);
            match self.nodes.get(&key).map(|n| &n.kind) {
                None => missing = true,
                Some(Kind::Dir) => {}
                Some(Kind::Symlink { target }) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(format!("too many levels of symlinks resolving {}", path::show(&key)));
                    }
                    cur.pop();
                    if target.first() == Some(&b'/') {
                        cur.clear();
                    }
                    for t in target.split(|b| *b == b'/').rev() {
                        queue.push_front(t.to_vec());
                    }
                }
                Some(_) => return Err(format!("parent {} is not a directory", path::show(&key))),
            }
        }
        Ok(path::join(&cur))
    }

    /// Create missing directories along `dir` (a resolved key).
    fn make_parents(&mut self, dir: &[u8]) {
        if dir.is_empty() || self.nodes.contains_key(dir) {
            return;
        }
        let mut end = 0;
        while end < dir.len() {
            end = dir[end..].iter().position(|b| *b == b'/').map(|i| end + i).unwrap_or(dir.len());
            let key = &dir[..end];
            if !self.nodes.contains_key(key) {
                self.nodes.insert(key.to_vec(), Node { kind: Kind::Dir, meta: Meta::implicit_dir(self.implicit_mtime) });
            }
            end += 1;
        }
    }

    fn descendant_keys(&self, p: &[u8]) -> Vec<Vec<u8>> {
        let (lo, hi) = path::descendants_range(p);
        match hi {
            Some(hi) => self.nodes.range(lo..hi).map(|(k, _)| k.clone()).collect(),
            None => self.nodes.keys().filter(|k| !k.is_empty()).cloned().collect(),
        }
    }

    /// Remove `p` and everything below it. Removing the root only empties it.
    fn remove_subtree(&mut self, p: &[u8]) {
        for k in self.descendant_keys(p) {
            self.nodes.remove(&k);
        }
        if !p.is_empty() {
            self.nodes.remove(p);
        }
    }

    /// Remove everything below `p` (an opaque directory), keeping `p` itself.
    fn remove_children(&mut self, p: &[u8]) {
        for k in self.descendant_keys(p) {
            self.nodes.remove(&k);
        }
    }
}

fn err_path(label: &str, (p, m): (Vec<u8>, String)) -> Error {
    Error::Layer { layer: label.to_string(), path: path::show(&p), message: m }
}

fn show_raw(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Reads one file's bytes from a spill file with positioned reads.
pub struct ContentReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spill file shorter than recorded"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Flatten `layers` (bottom first) into a tree. Layers are read and decompressed on up to
/// `threads` threads; they are applied strictly in order, so the result never depends on
/// the thread count.
pub fn flatten(
    layers: &[(PathBuf, LayerBlob)],
    implicit_mtime: i64,
    limits: Limits,
    threads: usize,
    progress: &crate::progress::Progress,
) -> Result<Tree> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let n = layers.len();
    let results: Vec<Mutex<Option<Result<ParsedLayer>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let ready = std::sync::Condvar::new();
    let gate = Mutex::new(());
    let mut tree = Tree::new(implicit_mtime);
    let threads = threads.clamp(1, n.max(1));
    // Workers parse at most `threads` layers ahead of the one being applied, which bounds
    // the spill files and entry lists held at once.
    let applied = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || failed.load(Ordering::SeqCst) {
                    break;
                }
                {
                    let mut g = gate.lock().unwrap();
                    while i >= applied.load(Ordering::SeqCst) + threads * 2 && !failed.load(Ordering::SeqCst) {
                        g = ready.wait(g).unwrap();
                    }
                }
                let (p, blob) = &layers[i];
                let r = layer::parse(p, blob, i as u32, limits);
                *results[i].lock().unwrap() = Some(r);
                let _g = gate.lock().unwrap();
                ready.notify_all();
            });
        }
        for (i, slot) in results.iter().enumerate() {
            let parsed = {
                let mut g = gate.lock().unwrap();
                loop {
                    if let Some(r) = slot.lock().unwrap().take() {
                        break r;
                    }
                    g = ready.wait(g).unwrap();
                }
            };
            let parsed = match parsed {
                Ok(p) => p,
                Err(e) => {
                    failed.store(true, Ordering::SeqCst);
                    ready.notify_all();
                    return Err(e);
                }
            };
            progress.set_message(format!("flatten layer {}/{n}", i + 1));
            // spill indexes must match the order spills are pushed
            debug_assert_eq!(tree.spills.len(), i);
            if let Err(e) = tree.apply(parsed) {
                failed.store(true, Ordering::SeqCst);
                ready.notify_all();
                return Err(e);
            }
            applied.fetch_add(1, Ordering::SeqCst);
            let _g = gate.lock().unwrap();
            ready.notify_all();
        }
        Ok(())
    })?;
    Ok(tree)
}
