//! The flattened rootfs as plain data: bytewise-sorted paths → entries (kind, mode, owner,
//! mtime, xattrs, link target, content reference).
//!
//! Layers are applied with OCI semantics: whiteouts and opaque markers hide lower-layer
//! paths, later entries replace earlier ones, hardlinks share an inode, and a path whose
//! parent is a symlink is resolved inside the tree, never on the host. File contents stay in
//! per-layer spill files; the tree holds offsets, and [`Tree::open`] reads them back. A tree
//! flattened for its metadata only ([`layer::ContentMode::Index`]) keeps no contents: reading
//! one fails. [`Tree::walk`] is the one order every emitter uses: bytewise by path, so
//! parents come before their children.

pub mod images;
pub mod layer;
pub mod path;
pub mod tarread;
#[cfg(test)]
pub(crate) mod testutil;

use crate::error::{Error, Result};
use crate::source::LayerBlob;
use layer::{Limits, ParsedLayer, RawEntry, RawKind};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

/// Where a regular file's bytes live: a span of one layer's spill file (`spill` is the
/// layer's index). For a layer read for its metadata only the span is in its tar stream; it
/// tells contents apart, and no bytes can be read from it.
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
    pub xattrs: Xattrs,
}

/// Extended attributes (name → value), in name order. Most entries have none, so an empty
/// set takes one word instead of a map's three: a tree of a million entries is 16 MB
/// smaller. Reads go through `Deref` to the map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(clippy::box_collection)] // the box is the point: one word when empty (see above)
pub struct Xattrs(Option<Box<BTreeMap<String, Vec<u8>>>>);

static NO_XATTRS: BTreeMap<String, Vec<u8>> = BTreeMap::new();

impl std::ops::Deref for Xattrs {
    type Target = BTreeMap<String, Vec<u8>>;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&NO_XATTRS)
    }
}

impl From<BTreeMap<String, Vec<u8>>> for Xattrs {
    fn from(m: BTreeMap<String, Vec<u8>>) -> Self {
        Xattrs(if m.is_empty() { None } else { Some(Box::new(m)) })
    }
}

impl Meta {
    /// Metadata for directories the tree creates itself (a missing parent): 0755 root:root.
    pub fn implicit_dir(mtime: i64) -> Self {
        Meta { mode: 0o755, uid: 0, gid: 0, mtime, xattrs: Xattrs::default() }
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
    /// Path → where its node is. The map holds small fixed-size values: a B-tree filled in
    /// path order keeps its nodes half full, which would double the cost of a node inline.
    index: BTreeMap<Box<[u8]>, Slot>,
    /// The nodes, densely; a removed path's node becomes a free slot for the next one.
    nodes: Nodes,
    free: Vec<u32>,
    /// Per layer: its spill file, or `None` when its contents were not kept
    /// ([`layer::ContentMode::Index`]).
    spills: Vec<Option<File>>,
    /// Number of the layer being applied (from 1): a path whose [`Slot::written`] equals it
    /// was written by that layer (whiteouts leave it alone).
    layer: u32,
    /// Inodes that got a hardlink (an emitter remembers the first path only of these).
    linked: std::collections::BTreeSet<u64>,
    /// Most paths the tree may hold (see [`Limits::max_tree_entries`]).
    max_nodes: usize,
    /// Bytes of paths, symlink targets and xattrs the tree holds, and the most it may.
    bytes: u64,
    max_bytes: u64,
    next_inode: u64,
    /// mtime given to directories the tree creates for missing parents.
    implicit_mtime: i64,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("nodes", &self.index.len()).finish()
    }
}

/// Nodes in fixed chunks: one `Vec` grown by doubling would leave its old buffers behind
/// as heap holes (glibc serves large blocks from the heap once one was freed), up to as
/// much again as the nodes themselves.
#[derive(Default)]
struct Nodes {
    chunks: Vec<Vec<Node>>,
}

/// Nodes per chunk (80 bytes each: 320 KiB).
const CHUNK: usize = 4096;

impl Nodes {
    fn push(&mut self, n: Node) -> u32 {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(n),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(n);
                self.chunks.push(c);
            }
        }
        ((self.chunks.len() - 1) * CHUNK + self.chunks.last().expect("pushed").len() - 1) as u32
    }
}

impl std::ops::Index<u32> for Nodes {
    type Output = Node;
    fn index(&self, i: u32) -> &Node {
        &self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }
}

impl std::ops::IndexMut<u32> for Nodes {
    fn index_mut(&mut self, i: u32) -> &mut Node {
        &mut self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }
}

/// Where a path's node is, and which layer wrote the path itself (0: none, e.g. a parent
/// the tree made).
#[derive(Debug, Clone, Copy)]
struct Slot {
    node: u32,
    written: u32,
}

impl Tree {
    pub fn new(implicit_mtime: i64) -> Self {
        let mut t = Tree {
            index: BTreeMap::new(),
            nodes: Nodes::default(),
            free: Vec::new(),
            spills: Vec::new(),
            layer: 0,
            linked: Default::default(),
            max_nodes: Limits::default().max_tree_entries,
            bytes: 0,
            max_bytes: Limits::default().max_tree_bytes,
            next_inode: 1,
            implicit_mtime,
        };
        t.insert(Box::default(), Node { kind: Kind::Dir, meta: Meta::implicit_dir(implicit_mtime) }, 0);
        t
    }

    /// Most paths, and bytes of paths, symlink targets and xattrs, the tree may hold;
    /// applying a layer that would pass either fails.
    pub fn set_limits(&mut self, limits: &Limits) {
        self.max_nodes = limits.max_tree_entries;
        self.max_bytes = limits.max_tree_bytes;
    }

    /// Every entry, root first, then bytewise by path (parents before children).
    pub fn walk(&self) -> impl Iterator<Item = (&[u8], &Node)> {
        self.index.iter().map(|(k, s)| (&k[..], &self.nodes[s.node]))
    }

    pub fn get(&self, path: &[u8]) -> Option<&Node> {
        self.index.get(path).map(|s| &self.nodes[s.node])
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.len() <= 1
    }

    /// True when `inode` has more than one path, or had one at some point (an emitter that
    /// writes hardlinks needs to remember the first path only of these).
    pub fn maybe_linked(&self, inode: u64) -> bool {
        self.linked.contains(&inode)
    }

    /// Put `node` at `key` (replacing the node there, if any), stamped as written by layer
    /// `written` (0: by none).
    fn insert(&mut self, key: Box<[u8]>, node: Node, written: u32) {
        self.bytes += heap_bytes(&node);
        if let Some(s) = self.index.get_mut(&key) {
            s.written = written;
            self.bytes -= heap_bytes(&self.nodes[s.node]);
            self.nodes[s.node] = node;
            return;
        }
        self.bytes += key.len() as u64;
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node)
            }
        };
        self.index.insert(key, Slot { node: i, written });
    }

    /// Remove the node at `key`, if any.
    fn remove(&mut self, key: &[u8]) {
        if let Some(s) = self.index.remove(key) {
            self.bytes -= key.len() as u64 + heap_bytes(&self.nodes[s.node]);
            // drop what the node owns (symlink target, xattrs) now
            self.nodes[s.node] = Node { kind: Kind::Fifo, meta: Meta::implicit_dir(0) };
            self.free.push(s.node);
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.index.contains_key(key)
    }

    /// True when the layer being applied wrote `key` itself.
    fn written_now(&self, key: &[u8]) -> bool {
        self.index.get(key).is_some_and(|s| s.written == self.layer)
    }

    /// A reader over a file's bytes in its spill file (positioned reads; many may be open at
    /// once). In a tree flattened for its metadata only ([`layer::ContentMode::Index`]) the
    /// reader fails on its first read: the bytes were not kept.
    pub fn open(&self, c: &ContentRef) -> ContentReader<'_> {
        ContentReader { file: self.spills[c.spill as usize].as_ref(), pos: c.offset, end: c.offset + c.len }
    }

    /// How many paths share each file inode (for hardlink-aware emitters).
    pub fn link_counts(&self) -> HashMap<u64, u32> {
        let mut m = HashMap::new();
        for (_, n) in self.walk() {
            if let Kind::File { inode, .. } = n.kind {
                *m.entry(inode).or_insert(0) += 1;
            }
        }
        m
    }

    /// Total bytes of regular-file content, each inode counted once.
    pub fn content_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.walk()
            .filter_map(|(_, n)| match n.kind {
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

        // One pass in archive order, as `tar -x` and umoci apply a layer. Whiteouts only
        // hide what lower layers put there: entries this layer added (tracked in
        // `Slot::written`) survive a whiteout or opaque marker wherever it stands.
        self.layer += 1;
        // AUFS meta directories (`.wh..wh.plnk/` holds hardlink sources): their entries are
        // applied so hardlinks to them resolve, then the directories are dropped.
        let mut meta_dirs: Vec<Vec<Vec<u8>>> = Vec::new();
        let entries = layer.entries.read().map_err(|e| Error::other(format!("reading the entry list: {e}")))?;
        for e in entries {
            let e = e.map_err(|e| Error::other(format!("reading the entry list: {e}")))?;
            let comps = path::clean(&e.path).map_err(|m| err(&e.path, m))?;
            let Some(name) = comps.last().and_then(|base| base.strip_prefix(b".wh.")) else {
                if let Some(i) = comps.iter().take(comps.len().saturating_sub(1)).position(|c| c.starts_with(b".wh..wh.")) {
                    if !meta_dirs.iter().any(|m| m[..] == comps[..=i]) {
                        meta_dirs.push(comps[..=i].to_vec());
                    }
                }
                self.apply_entry(comps, e, spill).map_err(|m| err_path(&label, m))?;
                continue;
            };
            let parent = self.resolve_parent(&comps).map_err(|m| err(&e.path, m))?;
            if name == b".wh..opq" {
                self.remove_lower(&parent, false);
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
                self.remove_lower(&victim, true);
            }
        }
        for m in meta_dirs {
            if let Ok(mut key) = self.resolve_parent(&m) {
                if !key.is_empty() {
                    key.push(b'/');
                }
                key.extend_from_slice(m.last().expect("non-empty"));
                self.remove_subtree(&key);
            }
        }
        Ok(())
    }

    fn apply_entry(&mut self, comps: Vec<Vec<u8>>, e: RawEntry, spill: u32) -> Result<(), (Vec<u8>, String)> {
        let RawEntry { path: raw, kind, meta } = e;
        if comps.is_empty() {
            // The root itself: only a directory may stand there.
            return match kind {
                RawKind::Dir => {
                    self.insert(Box::default(), Node { kind: Kind::Dir, meta }, 0);
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
                if target.len() > path::MAX_PATH {
                    // symlink(2) refuses it too (ENAMETOOLONG)
                    return Err((raw, format!("symlink target longer than {} bytes", path::MAX_PATH)));
                }
                if target.contains(&0) {
                    // possible in a PAX linkpath record, impossible on Linux: a resolution
                    // through it would put a NUL into paths
                    return Err((raw, "symlink target contains a NUL byte".into()));
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
                match self.get(&tkey) {
                    None => {
                        return Err((raw, format!("hardlink to {}, which does not exist in the rootfs", path::show(&tkey))));
                    }
                    Some(Node { kind: Kind::Dir, .. }) => {
                        return Err((raw, format!("hardlink to directory {}", path::show(&tkey))));
                    }
                    Some(_) if tkey == key => return Ok(()), // a link to itself changes nothing
                    // The link shares the target's inode as it is now; a later
                    // replacement of the target does not change it.
                    Some(n) => {
                        let n = n.clone();
                        if let Kind::File { inode, .. } = n.kind {
                            self.linked.insert(inode);
                        }
                        n
                    }
                }
            }
        };

        let layer = self.layer;
        match self.index.get_mut(&key[..]) {
            Some(s) if self.nodes[s.node].kind == Kind::Dir && node.kind == Kind::Dir => {
                s.written = layer;
                let n = &mut self.nodes[s.node];
                self.bytes -= heap_bytes(n);
                n.meta = node.meta; // merge: children stay
                self.bytes += heap_bytes(n);
            }
            Some(_) => {
                self.remove_subtree(&key);
                self.insert(key.into(), node, layer);
            }
            None => self.insert(key.into(), node, layer),
        }
        if self.index.len() > self.max_nodes {
            return Err((raw, format!("the rootfs would hold more than {} paths; refusing (see docs/limits.md)", self.max_nodes)));
        }
        if self.bytes > self.max_bytes {
            return Err((raw, format!("the rootfs's paths, symlink targets and xattrs would take more than {} bytes; refusing (see docs/limits.md)", self.max_bytes)));
        }
        Ok(())
    }

    /// Resolve `path` inside the tree as the kernel would: every symlink followed (absolute
    /// targets from the tree's root, `..` stopping at the root), the last one too. Returns the
    /// resolved key and its node, or why it cannot be reached. (Layers are applied with
    /// `resolve_parent`, which also walks through components that do not exist yet.)
    pub fn lookup(&self, path: &[u8]) -> Result<(Vec<u8>, &Node), String> {
        let mut queue: std::collections::VecDeque<&[u8]> = path.split(|b| *b == b'/').collect();
        let mut cur: Vec<&[u8]> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    continue;
                }
                _ => cur.push(c),
            }
            let key = cur.join(&b'/');
            let node = self.get(&key).ok_or_else(|| format!("{} does not exist", path::show(&key)))?;
            match &node.kind {
                Kind::Symlink { target } => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(format!("too many levels of symlinks at {}", path::show(&key)));
                    }
                    cur.pop();
                    if target.first() == Some(&b'/') {
                        cur.clear();
                    }
                    for t in target.split(|b| *b == b'/').rev() {
                        queue.push_front(t);
                    }
                }
                Kind::Dir => {}
                _ if queue.iter().any(|c| !c.is_empty() && *c != b".") => {
                    return Err(format!("{} is not a directory", path::show(&key)));
                }
                _ => {}
            }
        }
        let key = cur.join(&b'/');
        let node = self.get(&key).ok_or_else(|| format!("{} does not exist", path::show(&key)))?;
        Ok((key, node))
    }

    /// Resolve all but the last component of `comps` inside the tree, following symlinks
    /// (absolute targets from the tree's root, `..` clamped at the root). Returns the parent's key.
    fn resolve_parent(&self, comps: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        let mut queue: std::collections::VecDeque<Vec<u8>> = comps[..comps.len().saturating_sub(1)].iter().cloned().collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        // Depth of the first component found missing: below it nothing exists, so nothing
        // is looked up; a `..` back above it resumes the lookups.
        let mut missing: Option<usize> = None;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    if missing.is_some_and(|m| cur.len() < m) {
                        missing = None;
                    }
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            if missing.is_some() {
                continue;
            }
            let key = path::join(&cur);
            match self.get(&key).map(|n| &n.kind) {
                None => missing = Some(cur.len()),
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
        if dir.is_empty() || self.contains(dir) {
            return;
        }
        let mut end = 0;
        while end < dir.len() {
            end = dir[end..].iter().position(|b| *b == b'/').map(|i| end + i).unwrap_or(dir.len());
            let key = &dir[..end];
            if !self.contains(key) {
                self.insert(key.into(), Node { kind: Kind::Dir, meta: Meta::implicit_dir(self.implicit_mtime) }, 0);
            }
            end += 1;
        }
    }

    fn descendant_keys(&self, p: &[u8]) -> Vec<Box<[u8]>> {
        use std::ops::Bound;
        let (lo, hi) = path::descendants_range(p);
        let hi = match &hi {
            Some(hi) => Bound::Excluded(&hi[..]),
            None => Bound::Unbounded,
        };
        self.index.range::<[u8], _>((Bound::Included(&lo[..]), hi)).map(|(k, _)| k.clone()).filter(|k| !k.is_empty()).collect()
    }

    /// Remove `p` and everything below it. Removing the root only empties it.
    fn remove_subtree(&mut self, p: &[u8]) {
        for k in self.descendant_keys(p) {
            self.remove(&k);
        }
        if !p.is_empty() {
            self.remove(p);
        }
    }

    /// A whiteout: remove `p` (with `include_self`) and everything below it that lower
    /// layers put there. Paths the current layer added stay, and so do the directories
    /// leading to them.
    fn remove_lower(&mut self, p: &[u8], include_self: bool) {
        let keys = self.descendant_keys(p);
        let mut keep: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for k in keys.iter().filter(|k| self.written_now(k)) {
            let mut a: &[u8] = k;
            keep.insert(a);
            while let Some(i) = a.iter().rposition(|b| *b == b'/') {
                a = &a[..i];
                if a.len() <= p.len() {
                    break;
                }
                keep.insert(a);
            }
        }
        let gone: Vec<Box<[u8]>> = keys.iter().filter(|k| !keep.contains(&k[..])).cloned().collect();
        let self_stays = !include_self || p.is_empty() || !keep.is_empty() || self.written_now(p);
        for k in gone {
            self.remove(&k);
        }
        if !self_stays {
            self.remove(p);
        }
    }
}

/// Bytes a node owns on the heap (symlink target, xattrs), for the tree's byte limit.
fn heap_bytes(n: &Node) -> u64 {
    let target = match &n.kind {
        Kind::Symlink { target } => target.len(),
        _ => 0,
    };
    (target + n.meta.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()) as u64
}

fn err_path(label: &str, (p, m): (Vec<u8>, String)) -> Error {
    Error::Layer { layer: label.to_string(), path: path::show(&p), message: m }
}

fn show_raw(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Reads one file's bytes from a spill file with positioned reads.
pub struct ContentReader<'a> {
    /// `None`: the layer's contents were not kept.
    file: Option<&'a File>,
    pos: u64,
    end: u64,
}

/// What reading a content of a tree flattened in [`layer::ContentMode::Index`] fails with.
pub const NOT_KEPT: &str = "file contents were not kept: tree flattened for metadata only";

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let Some(file) = self.file else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, NOT_KEPT));
        };
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = file.read_at(&mut buf[..want], self.pos)?;
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
/// `mode` says where file contents go (see [`layer::ContentMode`]).
pub fn flatten(
    layers: &[(PathBuf, LayerBlob)],
    implicit_mtime: i64,
    limits: Limits,
    threads: usize,
    mode: layer::ContentMode,
    progress: &crate::progress::Progress,
) -> Result<Tree> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let n = layers.len();
    // Per layer: its parse once a worker has finished it.
    type Parsed = Mutex<Option<Result<ParsedLayer>>>;
    let results: Vec<Parsed> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let ready = std::sync::Condvar::new();
    let gate = Mutex::new(());
    let mut tree = Tree::new(implicit_mtime);
    tree.set_limits(&limits);
    let threads = threads.clamp(1, n.max(1));
    // Workers parse at most `threads` layers ahead of the one being applied, which bounds
    // the spill files and entry lists held at once.
    let applied = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    // Bytes of layer blobs applied so far, for the terminal's progress bar.
    let shown = crate::progress::bytes(&format!("flatten {n} layer(s)"), Some(layers.iter().map(|(_, b)| b.size).sum()));
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
                let r = layer::parse_with(p, blob, i as u32, limits, mode);
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
            shown.inc(layers[i].1.size);
            let _g = gate.lock().unwrap();
            ready.notify_all();
        }
        Ok(())
    })?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    //! OCI layer semantics of [`Tree::apply`], on layers built by hand (no tar involved).
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn meta(mode: u32, mtime: i64) -> Meta {
        Meta { mode, uid: 0, gid: 0, mtime, xattrs: Xattrs::default() }
    }

    /// Builds one layer: entries in archive order, file bytes in a real spill tempfile.
    struct L {
        entries: Vec<RawEntry>,
        spill: File,
        off: u64,
    }

    impl L {
        fn new() -> Self {
            L { entries: Vec::new(), spill: tempfile::tempfile().unwrap(), off: 0 }
        }
        fn push(mut self, path: &str, kind: RawKind, m: Meta) -> Self {
            self.entries.push(RawEntry { path: path.as_bytes().to_vec(), kind, meta: m });
            self
        }
        fn dir(self, path: &str) -> Self {
            self.push(path, RawKind::Dir, meta(0o755, 7))
        }
        fn dir_meta(self, path: &str, mode: u32, mtime: i64) -> Self {
            self.push(path, RawKind::Dir, meta(mode, mtime))
        }
        fn file(mut self, path: &str, data: &str) -> Self {
            self.spill.write_all(data.as_bytes()).unwrap();
            // the spill index is a placeholder: apply() sets the layer's own
            let c = ContentRef { spill: 99, offset: self.off, len: data.len() as u64 };
            self.off += data.len() as u64;
            self.push(path, RawKind::File(c), meta(0o644, 7))
        }
        fn symlink(self, path: &str, target: &str) -> Self {
            self.push(path, RawKind::Symlink(target.as_bytes().to_vec()), meta(0o777, 7))
        }
        fn hardlink(self, path: &str, target: &str) -> Self {
            self.push(path, RawKind::Hardlink(target.as_bytes().to_vec()), meta(0o644, 7))
        }
        fn whiteout(self, path: &str) -> Self {
            // whiteouts are empty regular files in the archive
            self.file(path, "")
        }
        fn build(mut self, label: &str) -> ParsedLayer {
            self.spill.seek(SeekFrom::Start(0)).unwrap();
            ParsedLayer { label: label.into(), entries: self.entries.try_into().unwrap(), spill: Some(self.spill) }
        }
    }

    fn tree(layers: Vec<L>) -> Tree {
        try_tree(layers).unwrap()
    }

    fn try_tree(layers: Vec<L>) -> Result<Tree> {
        let mut t = Tree::new(5);
        for (i, l) in layers.into_iter().enumerate() {
            t.apply(l.build(&format!("L{i}")))?;
        }
        Ok(t)
    }

    /// Every path in walk order (the root is "").
    fn paths(t: &Tree) -> Vec<String> {
        t.walk().map(|(p, _)| String::from_utf8(p.to_vec()).unwrap()).collect()
    }

    fn content(t: &Tree, p: &str) -> String {
        match &t.get(p.as_bytes()).unwrap_or_else(|| panic!("{p} missing")).kind {
            Kind::File { content, .. } => {
                let mut s = String::new();
                t.open(content).read_to_string(&mut s).unwrap();
                s
            }
            k => panic!("{p} is {k:?}, not a file"),
        }
    }

    fn inode(t: &Tree, p: &str) -> u64 {
        match t.get(p.as_bytes()).unwrap().kind {
            Kind::File { inode, .. } => inode,
            ref k => panic!("{p} is {k:?}"),
        }
    }

    fn layer_error(r: Result<Tree>) -> (String, String, String) {
        match r {
            Err(Error::Layer { layer, path, message }) => (layer, path, message),
            other => panic!("expected a layer error, got {other:?}"),
        }
    }

    #[test]
    fn whiteout_deletes_lower_file_and_lower_dir_with_children() {
        let t = tree(vec![
            L::new().dir("etc").file("etc/passwd", "root").file("etc/group", "g").dir("opt/app/lib").file("opt/app/lib/x", "x").file("opt/keep", "k"),
            L::new().whiteout("etc/.wh.passwd").whiteout("opt/.wh.app"),
        ]);
        assert_eq!(paths(&t), ["", "etc", "etc/group", "opt", "opt/keep"]);
    }

    #[test]
    fn whiteout_of_absent_path_is_harmless() {
        let t = tree(vec![L::new().file("a", "1"), L::new().whiteout("nothere/.wh.x").whiteout(".wh.y")]);
        assert_eq!(paths(&t), ["", "a"]);
    }

    #[test]
    fn whiteout_does_not_delete_same_layer_entries_wherever_it_stands() {
        // OCI: whiteouts only hide lower layers. Here the same layer re-adds the path both
        // before and after the whiteout in archive order.
        let t = tree(vec![
            L::new().file("a", "lower-a").dir("d").file("d/old", "o"),
            L::new().file("a", "upper-a").dir("d").file("d/new", "n").whiteout(".wh.a").whiteout(".wh.d").file("b", "b").whiteout(".wh.b"),
        ]);
        assert_eq!(paths(&t), ["", "a", "b", "d", "d/new"]);
        assert_eq!(content(&t, "a"), "upper-a");
        assert_eq!(content(&t, "b"), "b");
    }

    #[test]
    fn whiteout_of_a_lower_dir_keeps_what_this_layer_put_below_it() {
        // `d/new` stands before `.wh.d`: only what lower layers put in `d` goes, and `d`
        // stays as the parent of `d/new`; the same when this layer re-declares `d` itself
        let t = tree(vec![
            L::new().dir("d").file("d/old", "o").dir("d/sub").file("d/sub/x", "x").dir("e").file("e/old", "o"),
            L::new().file("d/new", "n").whiteout(".wh.d").dir("e").whiteout(".wh.e"),
        ]);
        assert_eq!(paths(&t), ["", "d", "d/new", "e"]);
    }

    #[test]
    fn whiteout_files_never_appear_in_the_tree() {
        let t = tree(vec![L::new().dir("d").whiteout("d/.wh.x").whiteout("d/.wh..wh..opq").whiteout("d/.wh..wh.plnk")]);
        assert!(t.walk().all(|(p, _)| !p.windows(4).any(|w| w == b".wh.")), "{:?}", paths(&t));
        assert_eq!(paths(&t), ["", "d"]);
    }

    #[test]
    fn opaque_dir_hides_lower_children_and_keeps_same_layer_children() {
        let t = tree(vec![
            L::new().dir_meta("d", 0o700, 3).file("d/lower1", "1").dir("d/sub").file("d/sub/lower2", "2").file("dz", "sibling"),
            // the same layer's children stand before and after the marker
            L::new().file("d/before", "b").whiteout("d/.wh..wh..opq").dir("d/sub2").file("d/sub2/after", "a"),
        ]);
        assert_eq!(paths(&t), ["", "d", "d/before", "d/sub2", "d/sub2/after", "dz"]);
        // the opaque marker keeps the directory itself (and its lower metadata, since this
        // layer did not write a `d` entry)
        assert_eq!(t.get(b"d").unwrap().meta.mode, 0o700);
    }

    #[test]
    fn opaque_at_root_empties_lower_layers() {
        let t = tree(vec![L::new().file("a", "1").dir("b").file("b/c", "2"), L::new().file("new", "n").whiteout(".wh..wh..opq")]);
        assert_eq!(paths(&t), ["", "new"]);
    }

    #[test]
    fn aufs_meta_entries_are_not_deletions() {
        let t = tree(vec![
            L::new().file("a", "1").file("plnk", "p").dir("d").file("d/x", "x"),
            // AUFS keeps hardlink sources in a `.wh..wh.plnk` directory: neither a deletion
            // nor content
            L::new()
                .whiteout(".wh..wh.plnk")
                .dir(".wh..wh.plnk")
                .file(".wh..wh.plnk/123.456", "h")
                .hardlink("usr/h", ".wh..wh.plnk/123.456")
                .whiteout("d/.wh..wh.aufs"),
        ]);
        assert_eq!(paths(&t), ["", "a", "d", "d/x", "plnk", "usr", "usr/h"]);
        assert_eq!(content(&t, "usr/h"), "h");
    }

    #[test]
    fn bare_whiteout_is_an_error_naming_layer_and_path() {
        let (layer, path, message) = layer_error(try_tree(vec![L::new().file("a", "1"), L::new().whiteout("d/.wh.")]));
        assert_eq!(layer, "L1");
        assert_eq!(path, "/d/.wh.");
        assert!(message.contains("invalid whiteout"), "{message}");
        let (_, path, message) = layer_error(try_tree(vec![L::new().whiteout(".wh..")]));
        assert_eq!(path, "/.wh..");
        assert!(message.contains("'.'"), "{message}");
    }

    #[test]
    fn dir_over_dir_merges_metadata_and_keeps_children() {
        let t = tree(vec![L::new().dir_meta("d", 0o700, 3).file("d/x", "x"), L::new().dir_meta("d", 0o750, 9)]);
        assert_eq!(paths(&t), ["", "d", "d/x"]);
        let m = &t.get(b"d").unwrap().meta;
        assert_eq!((m.mode, m.mtime), (0o750, 9));
    }

    #[test]
    fn file_over_dir_removes_the_subtree() {
        let t = tree(vec![L::new().dir("d").dir("d/e").file("d/e/f", "f").file("d0", "sibling").file("d.x", "s2"), L::new().file("d", "now a file")]);
        assert_eq!(paths(&t), ["", "d", "d.x", "d0"]);
        assert_eq!(content(&t, "d"), "now a file");
    }

    #[test]
    fn symlink_over_dir_removes_the_subtree_and_dir_over_symlink_replaces_it() {
        let t = tree(vec![L::new().dir("d").file("d/f", "f").dir("e"), L::new().symlink("d", "e").symlink("s", "e"), L::new().dir("s")]);
        assert_eq!(paths(&t), ["", "d", "e", "s"]);
        assert_eq!(t.get(b"d").unwrap().kind, Kind::Symlink { target: b"e".to_vec() });
        assert_eq!(t.get(b"s").unwrap().kind, Kind::Dir);
    }

    #[test]
    fn duplicate_path_in_one_layer_last_wins() {
        // DESIGN §3 asks us to choose between strict and last-wins for a path a layer holds
        // twice. We chose last-wins (what `tar x`, umoci and containerd do): the later entry
        // replaces the earlier one exactly as an entry of a higher layer would.
        let t = tree(vec![L::new().file("a", "first").file("a", "second").dir("d").file("d/x", "x").file("d", "file-now").symlink("s", "a").file("s", "plain")]);
        assert_eq!(paths(&t), ["", "a", "d", "s"]);
        assert_eq!(content(&t, "a"), "second");
        assert_eq!(content(&t, "d"), "file-now");
        assert_eq!(content(&t, "s"), "plain");
    }

    #[test]
    fn hardlink_shares_the_inode() {
        let t = tree(vec![L::new().file("usr/bin/a", "payload"), L::new().hardlink("usr/bin/b", "usr/bin/a").hardlink("c", "/usr/bin/a")]);
        assert_eq!(inode(&t, "usr/bin/a"), inode(&t, "usr/bin/b"));
        assert_eq!(inode(&t, "usr/bin/a"), inode(&t, "c"));
        assert_eq!(content(&t, "c"), "payload");
        assert_eq!(t.link_counts()[&inode(&t, "c")], 3);
        assert_eq!(t.content_bytes(), "payload".len() as u64);
    }

    #[test]
    fn hardlink_keeps_old_content_when_its_target_is_replaced_later() {
        let t = tree(vec![
            L::new().file("a", "old"),
            L::new().hardlink("b", "a"),
            L::new().file("a", "new"),
            L::new().file("c", "c").hardlink("d", "c").file("c", "c2"), // same layer, later entry
        ]);
        assert_eq!(content(&t, "a"), "new");
        assert_eq!(content(&t, "b"), "old");
        assert_ne!(inode(&t, "a"), inode(&t, "b"));
        assert_eq!(content(&t, "d"), "c");
        assert_eq!(content(&t, "c"), "c2");
        let t = tree(vec![L::new().file("a", "old").hardlink("b", "a"), L::new().whiteout(".wh.a")]);
        assert_eq!(paths(&t), ["", "b"]);
        assert_eq!(content(&t, "b"), "old");
    }

    #[test]
    fn hardlink_errors_name_layer_and_path() {
        let (layer, path, message) = layer_error(try_tree(vec![L::new().file("a", "1"), L::new().hardlink("b", "nothere")]));
        assert_eq!((layer.as_str(), path.as_str()), ("L1", "/b"));
        assert!(message.contains("/nothere") && message.contains("does not exist"), "{message}");
        let (_, path, message) = layer_error(try_tree(vec![L::new().dir("d").hardlink("l", "d")]));
        assert_eq!(path, "/l");
        assert!(message.contains("hardlink to directory /d"), "{message}");
        let (_, path, message) = layer_error(try_tree(vec![L::new().file("a", "1").hardlink("l", "../a")]));
        assert_eq!(path, "/l");
        assert!(message.contains("climbs above the root"), "{message}");
        let (_, _, message) = layer_error(try_tree(vec![L::new().hardlink("l", "/")]));
        assert!(message.contains("root"), "{message}");
        // a link to itself is a no-op only when the path exists
        let (_, path, message) = layer_error(try_tree(vec![L::new().hardlink("self", "self")]));
        assert_eq!(path, "/self");
        assert!(message.contains("does not exist"), "{message}");
        let t = tree(vec![L::new().file("a", "1").hardlink("a", "./a")]);
        assert_eq!(content(&t, "a"), "1");
    }

    #[test]
    fn hardlink_then_whiteout_of_its_target_in_one_layer_keeps_the_link() {
        // Archive order, as umoci and containerd apply it: the link is made while the lower
        // `a` exists; the whiteout then removes only `a`.
        let t = tree(vec![L::new().file("a", "1"), L::new().hardlink("b", "a").whiteout(".wh.a")]);
        assert_eq!(paths(&t), ["", "b"]);
        assert_eq!(content(&t, "b"), "1");
        // The other order: the target is gone when the link is applied.
        let (_, path, message) = layer_error(try_tree(vec![L::new().file("a", "1"), L::new().whiteout(".wh.a").hardlink("b", "a")]));
        assert_eq!(path, "/b");
        assert!(message.contains("does not exist"), "{message}");
    }

    #[test]
    fn whiteout_follows_a_symlink_changed_earlier_in_the_same_layer() {
        let t = tree(vec![
            L::new().file("other/x", "o").file("real/x", "r").symlink("link", "other"),
            L::new().symlink("link", "real").whiteout("link/.wh.x"),
        ]);
        assert_eq!(paths(&t), ["", "link", "other", "other/x", "real"]);
    }

    #[test]
    fn symlink_parent_is_resolved_inside_the_tree() {
        let t = tree(vec![
            L::new().dir("usr/bin").dir("usr/lib").symlink("bin", "usr/bin").symlink("lib", "/usr/lib").symlink("usr/sbin", "bin"),
            L::new().file("bin/ls", "ls").file("lib/libc.so", "libc").file("usr/sbin/init", "init"),
        ]);
        assert_eq!(
            paths(&t),
            ["", "bin", "lib", "usr", "usr/bin", "usr/bin/init", "usr/bin/ls", "usr/lib", "usr/lib/libc.so", "usr/sbin"]
        );
        assert_eq!(content(&t, "usr/bin/ls"), "ls");
        assert_eq!(content(&t, "usr/lib/libc.so"), "libc");
    }

    #[test]
    fn dotdot_in_a_symlink_target_is_clamped_at_the_root() {
        let t = tree(vec![
            L::new().dir("a/b").symlink("a/b/up", "../../../../..").symlink("a/esc", "../../../etc").symlink("a/abs", "/../../tmp"),
            L::new().file("a/b/up/passwd", "p").file("a/esc/shadow", "s").file("a/abs/t", "t"),
        ]);
        assert_eq!(paths(&t), ["", "a", "a/abs", "a/b", "a/b/up", "a/esc", "etc", "etc/shadow", "passwd", "tmp", "tmp/t"]);
    }

    #[test]
    fn dotdot_after_a_missing_component_still_resolves_symlinks() {
        // `missing/..` returns to a checked directory: what follows must be resolved again,
        // or an entry could land below a symlink (`esc/passwd` in the tree is
        // `/etc/passwd` on the host of whoever unpacks the output) or below a file.
        let t = tree(vec![
            L::new().dir("etc").symlink("esc", "/etc").symlink("l", "missing/deeper/../../esc").file("f", "1").symlink("lf", "nope/../f"),
            L::new().file("l/passwd", "p"),
        ]);
        assert_eq!(paths(&t), ["", "esc", "etc", "etc/passwd", "f", "l", "lf"]);
        let (_, path, message) = layer_error(try_tree(vec![
            L::new().file("f", "1").symlink("lf", "nope/../f"),
            L::new().file("lf/x", "x"),
        ]));
        assert_eq!(path, "/lf/x");
        assert!(message.contains("parent /f is not a directory"), "{message}");
        // a missing directory left by `..` into another missing one stays missing
        let t = tree(vec![L::new().symlink("m", "a/b/../c"), L::new().file("m/x", "x")]);
        assert_eq!(paths(&t), ["", "a", "a/c", "a/c/x", "m"]);
    }

    #[test]
    fn symlink_with_an_empty_or_nul_target_is_an_error() {
        let (_, path, message) = layer_error(try_tree(vec![L::new().symlink("s", "")]));
        assert_eq!(path, "/s");
        assert!(message.contains("empty target"), "{message}");
        let (_, path, message) = layer_error(try_tree(vec![L::new().symlink("s", "a\0b"), L::new().file("s/x", "x")]));
        assert_eq!(path, "/s");
        assert!(message.contains("NUL"), "{message}");
    }

    #[test]
    fn symlink_loop_as_parent_is_an_error() {
        let (layer, path, message) =
            layer_error(try_tree(vec![L::new().symlink("a", "b").symlink("b", "a"), L::new().file("a/x", "x")]));
        assert_eq!((layer.as_str(), path.as_str()), ("L1", "/a/x"));
        assert!(message.contains("too many levels of symlinks"), "{message}");
        let (_, _, message) = layer_error(try_tree(vec![L::new().symlink("self", "self/x"), L::new().file("self/y", "y")]));
        assert!(message.contains("too many levels of symlinks"), "{message}");
    }

    #[test]
    fn a_chain_of_forty_symlinks_resolves() {
        // Linux allows 40 hops; the 41st is a loop.
        let mut l = L::new().dir("target");
        for i in 0..40 {
            let next = if i == 39 { "target".to_string() } else { format!("s{}", i + 1) };
            l = l.symlink(&format!("s{i}"), &next);
        }
        let t = tree(vec![l, L::new().file("s0/f", "f")]);
        assert_eq!(content(&t, "target/f"), "f");
    }

    #[test]
    fn parent_that_is_a_file_is_an_error() {
        let (layer, path, message) = layer_error(try_tree(vec![L::new().file("f", "1"), L::new().file("f/x", "x")]));
        assert_eq!((layer.as_str(), path.as_str()), ("L1", "/f/x"));
        assert!(message.contains("parent /f is not a directory"), "{message}");
        // also through a symlink
        let (_, _, message) = layer_error(try_tree(vec![L::new().file("f", "1").symlink("s", "f"), L::new().file("s/x", "x")]));
        assert!(message.contains("parent /f is not a directory"), "{message}");
    }

    #[test]
    fn implicit_parents_are_created_as_root_owned_0755_dirs() {
        let t = tree(vec![L::new().file("a/b/c/f", "f")]);
        assert_eq!(paths(&t), ["", "a", "a/b", "a/b/c", "a/b/c/f"]);
        for p in ["a", "a/b", "a/b/c"] {
            let n = t.get(p.as_bytes()).unwrap();
            assert_eq!(n.kind, Kind::Dir);
            assert_eq!(n.meta, Meta::implicit_dir(5), "{p}");
        }
    }

    #[test]
    fn paths_are_cleaned_relative_to_the_root() {
        let t = tree(vec![L::new().file("/etc/x", "x").file("./etc//y", "y").dir("./").file("a/./b/../c", "c")]);
        assert_eq!(paths(&t), ["", "a", "a/c", "etc", "etc/x", "etc/y"]);
        let (_, path, message) = layer_error(try_tree(vec![L::new().file("a/../../x", "x")]));
        assert_eq!(path, "/a/../../x");
        assert!(message.contains("climbs above the root"), "{message}");
    }

    #[test]
    fn only_a_directory_can_replace_the_root() {
        let t = tree(vec![L::new().dir_meta("./", 0o700, 4)]);
        assert_eq!(t.get(b"").unwrap().meta.mode, 0o700);
        let (_, _, message) = layer_error(try_tree(vec![L::new().file("/", "x")]));
        assert!(message.contains("root"), "{message}");
    }

    #[test]
    fn walk_is_bytewise_with_parents_first() {
        let t = tree(vec![L::new().file("a-b", "1").file("a/b", "2").file("a.b", "3").file("B", "4").file("\u{e9}", "5")]);
        // bytewise: '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f), so `a-b` and `a.b` come
        // between `a` and `a/b`; parents still precede their children
        assert_eq!(paths(&t), ["", "B", "a", "a-b", "a.b", "a/b", "\u{e9}"]);
    }

    /// A tree flattened for its metadata only keeps no file bytes: reading one is an error,
    /// never the bytes of some other span (a spilled flatten of the same layer reads them).
    #[test]
    fn reading_a_content_of_a_metadata_only_tree_fails() {
        use crate::tree::testutil::layer_blob;
        let d = tempfile::tempdir().unwrap();
        let layers = vec![layer_blob(d.path(), "l0", &[("a", b"one".to_vec()), ("b", b"two".to_vec())])];
        let flat = |mode| flatten(&layers, 1, Limits::default(), 1, mode, &crate::progress::Progress::new(true)).unwrap();
        let file = |t: &Tree| match t.get(b"b").unwrap().kind {
            Kind::File { content, .. } => content,
            _ => panic!("not a file"),
        };
        let spilled = flat(layer::ContentMode::Spill);
        let mut s = String::new();
        spilled.open(&file(&spilled)).read_to_string(&mut s).unwrap();
        assert_eq!(s, "two");
        let indexed = flat(layer::ContentMode::Index);
        assert_eq!(file(&indexed).len, 3);
        let err = indexed.open(&file(&indexed)).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!((err.kind(), err.to_string()), (io::ErrorKind::Unsupported, "file contents were not kept: tree flattened for metadata only".to_string()));
    }
}
