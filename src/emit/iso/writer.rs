//! Tree → ISO 9660 image: index the ISO's own tree (the rootfs plus the caller's extra files
//! and the boot catalog), lay every structure out, then write it, and fill file contents at
//! their extents.
//!
//! Memory stays small whatever the tree: an entry is 32 bytes (its path and node borrowed
//! from the tree, a serial number, a link), and names, identifiers and records are made one
//! directory at a time. The layout pass makes each directory's records to learn its size (and
//! keeps only that, per directory); the write pass makes them again, the same way, and
//! writes them out.
//!
//! Layout, in blocks of 2048 bytes: the zero system area (0-15); the primary volume
//! descriptor (16), the El Torito boot record (when booting), the Joliet supplementary
//! descriptor, the terminator; the four path tables (ISO L and M, Joliet L and M); the ISO
//! directories in path-table order, then the Joliet directories; the Rock Ridge continuation
//! areas; the boot catalog; file contents, one extent per inode, in bytewise path order; the
//! caller's tail reserve. Every position depends on the tree alone.

use super::format::{self as f, BLOCK};
use super::{BootEntry, IsoLayout, IsoOptions};
use crate::error::{Error, IoContext, Result};
use crate::tree::{self, path::show, Kind, Tree};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// One path of the ISO's tree. Nothing owned: a rootfs at the path cap has half a million.
#[derive(Debug, Clone, Copy)]
struct Entry<'t> {
    /// The path without its leading `/` (empty for the root), borrowed from the tree or the
    /// options.
    path: &'t [u8],
    /// The tree's node; `None` for what the caller added ([`Plan::added`]).
    node: Option<&'t tree::Node>,
    /// Rock Ridge serial number (PX): hardlinks share one.
    ino: u32,
    /// A file's data item, a directory's number in [`Plan::dirs`]; 0 for the rest.
    link: u32,
}

/// An entry that is not in the tree.
#[derive(Debug, Clone, Copy)]
enum Added {
    /// `IsoOptions::extra[i]`.
    Extra(usize),
    Catalog,
    /// A parent of an added file that the tree does not have.
    Dir,
}

/// What an entry is, with what its records need.
enum What<'t> {
    Dir,
    File,
    Symlink(&'t [u8]),
    Dev { block: bool, major: u32, minor: u32 },
    Fifo,
}

/// An entry's kind and Rock Ridge attributes.
struct Attrs<'t> {
    what: What<'t>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

impl Attrs<'_> {
    fn type_bits(&self) -> u32 {
        match self.what {
            What::Dir => f::S_IFDIR,
            What::File => f::S_IFREG,
            What::Symlink(_) => f::S_IFLNK,
            What::Dev { block: true, .. } => f::S_IFBLK,
            What::Dev { block: false, .. } => f::S_IFCHR,
            What::Fifo => f::S_IFIFO,
        }
    }
}

/// One extent's worth of file bytes: the entry it was first seen at, and its first block.
#[derive(Debug, Clone, Copy)]
struct Data {
    entry: u32,
    lba: u32,
}

/// `Data::entry` of an item whose inode turned out to have the same bytes (same span of
/// the same spill file) as an earlier item's: its `lba` field holds that item's number, and
/// it takes no blocks.
const SHARED: u32 = u32::MAX;

/// A directory: its entry, its parent's number, its children (a range of [`Plan::kids`], in
/// bytewise order of their names), and its place in the ISO and Joliet hierarchies.
#[derive(Debug)]
struct Dir {
    entry: u32,
    parent: u32,
    kids: std::ops::Range<u32>,
    subdirs: u32,
    side: [Side; 2],
}

/// A directory in one of the two hierarchies (0: ISO 9660 with Rock Ridge, 1: Joliet).
#[derive(Debug, Default)]
struct Side {
    /// Its identifier in its parent (path table form: the root's is a 0 byte).
    id: Vec<u8>,
    /// Path table number (from 1).
    num: u16,
    lba: u32,
    blocks: u32,
    /// Blocks of its Rock Ridge continuation area, right after its extent.
    ce_blocks: u32,
}

/// What a directory record points at.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A directory, by number.
    Dir(u32),
    /// One extent of a file: (data item, extent index).
    Data(u32, usize),
    /// Symlinks, devices, FIFOs: no data.
    None,
}

/// One directory record, placed in its directory's extent.
#[derive(Debug)]
struct Record<'a> {
    id: &'a [u8],
    flags: u8,
    /// The entry whose mtime is the record's date.
    entry: u32,
    target: Target,
    /// System use entries recorded in the record itself (without the CE).
    su: Vec<u8>,
    /// Continuation pieces, when the entries did not all fit: their entries (without the CE
    /// to the next piece), block in the directory's continuation area and offset there.
    /// libarchive reads a continuation area only when it comes right after the directory
    /// that refers to it, as libisofs lays them out.
    pieces: Vec<(Vec<u8>, u32, u32)>,
    /// Offset in the directory's extent.
    offset: u32,
}

impl Record<'_> {
    /// The CE entry that leads to piece `k` (of `ce_base`, the continuation area's block).
    fn ce(&self, k: usize, ce_base: u32) -> Vec<u8> {
        let (body, block, offset) = &self.pieces[k];
        let len = body.len() + if k + 1 < self.pieces.len() { f::CE_LEN } else { 0 };
        f::ce(ce_base + block, *offset, len as u32)
    }
}

/// The identifiers of one directory's children, in [`Plan::kids`] order, and that order
/// sorted as the records go.
struct Ids {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    sorted: Vec<u32>,
    /// The children that got a `_N` suffix: (place in [`Plan::kids`], N).
    renamed: Vec<(u32, u32)>,
}

impl Ids {
    fn get(&self, k: u32) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k as usize - 1] as usize };
        &self.bytes[start..self.ends[k as usize] as usize]
    }
}

/// A hardlinked inode: its data item, serial number and link count.
#[derive(Debug, Clone, Copy)]
struct Link {
    data: u32,
    ino: u32,
    count: u32,
}

/// Everything laid out; [`Plan::write`] makes the bytes.
pub(super) struct Plan<'t> {
    tree: &'t Tree,
    opts: &'t IsoOptions,
    /// In bytewise path order (parents first); the root is entry 0.
    entries: Vec<Entry<'t>>,
    /// The entries not in the tree, by entry number (ascending).
    added: Vec<(u32, Added)>,
    /// Byte length of each extra file (`stat` once).
    extra_len: Vec<u64>,
    /// Inodes the tree says may have several paths.
    linked: HashMap<u64, Link>,
    /// Every directory's children, directory after directory.
    kids: Vec<u32>,
    /// Directory 0 is the root.
    dirs: Vec<Dir>,
    /// Directory numbers in path table order, ISO then Joliet.
    order: [Vec<u32>; 2],
    /// Per side, whether the layout has named every child, and the `_N` suffixes it gave
    /// (by place in `kids`; clashes are rare, so this is small).
    named: [bool; 2],
    renamed: [HashMap<u32, u32>; 2],
    data: Vec<Data>,
    volume_id: Vec<u8>,
    joliet_volume_id: Vec<u8>,
    sde: u64,
    /// (platform, data item)
    boot: Vec<(u8, u32)>,
    catalog_lba: u32,
    catalog: Option<u32>,
    vd_blocks: u32,
    ptables: [(u32, Vec<u8>); 4],
    data_lba: u32,
    blocks: u32,
    extra_paths: Vec<(String, u32)>,
}

fn err(msg: String) -> Error {
    Error::other(msg)
}

/// Clean an absolute ISO path from the caller into tree form (no leading `/`).
fn clean_extra(p: &str) -> Result<&[u8]> {
    let rel = p.strip_prefix('/').ok_or_else(|| err(format!("ISO path {p:?} must be absolute")))?;
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(err(format!("ISO path {p:?} must name a file with plain components (no empty, '.' or '..')")));
    }
    Ok(rel.as_bytes())
}

fn parent_of(p: &[u8]) -> &[u8] {
    p.iter().rposition(|b| *b == b'/').map_or(&p[..0], |i| &p[..i])
}

const B: u32 = BLOCK as u32;

impl<'t> Plan<'t> {
    /// Index and lay out the whole image. No I/O except `stat` of the extra files.
    pub(super) fn new(tree: &'t Tree, opts: &'t IsoOptions) -> Result<Self> {
        let sde = opts.sde;
        // 1. What the caller adds, and the parents it needs that the tree does not have.
        let mut added: BTreeMap<&'t [u8], Added> = BTreeMap::new();
        let add = |p: &'t str, what: Added, added: &mut BTreeMap<&'t [u8], Added>| -> Result<()> {
            let rel = clean_extra(p)?;
            if tree.get(rel).is_some() || added.contains_key(rel) {
                return Err(err(format!("ISO file {p} collides with a path of the tree or another added file")));
            }
            let mut par = parent_of(rel);
            while !par.is_empty() {
                if let Some(n) = tree.get(par) {
                    if n.kind != Kind::Dir {
                        return Err(err(format!("ISO file {p}: its parent {} is not a directory in the tree", show(par))));
                    }
                    break;
                }
                match added.get(par) {
                    Some(Added::Dir) => break,
                    Some(_) => return Err(err(format!("ISO file {p}: its parent {} is an added file", show(par)))),
                    None => {
                        added.insert(par, Added::Dir);
                    }
                }
                par = parent_of(par);
            }
            added.insert(rel, what);
            Ok(())
        };
        for (i, x) in opts.extra.iter().enumerate() {
            add(&x.path, Added::Extra(i), &mut added)?;
        }
        // the catalog is a file of the image only when there are boot entries
        match (&opts.catalog, opts.boot.is_empty()) {
            (Some(c), false) => add(c, Added::Catalog, &mut added)?,
            (None, false) => return Err(err("an ISO with boot entries needs a boot catalog path".into())),
            (_, true) => {}
        }

        // 2. Entries in path order (the tree's walk and the added paths merged), data items
        // on first sight of an inode.
        let mut entries: Vec<Entry> = Vec::with_capacity(tree.len() + added.len());
        let mut added_at = Vec::with_capacity(added.len());
        let mut extra_len = vec![0u64; opts.extra.len()];
        let mut extra_paths = Vec::new();
        let mut linked: HashMap<u64, Link> = HashMap::new();
        let mut data: Vec<Data> = Vec::new();
        // each entry's directory (by number), and the directories by path
        let mut parents: Vec<u32> = Vec::with_capacity(entries.capacity());
        let mut dir_of: HashMap<&'t [u8], u32> = HashMap::new();
        let mut dirs: Vec<Dir> = Vec::new();
        let mut catalog = None;
        let mut next_ino = 1u32;
        let owner = |v: u64, what: &str, p: &[u8]| -> Result<u32> {
            u32::try_from(v).map_err(|_| err(format!("{}: {what} {v} does not fit Rock Ridge's 32 bits", show(p))))
        };
        let mut walk = tree.walk().peekable();
        let mut more = added.into_iter().peekable();
        loop {
            let from_tree = match (walk.peek(), more.peek()) {
                (Some((a, _)), Some((b, _))) => a < b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (p, input) = if from_tree {
                walk.next().map(|(p, n)| (p, Ok(n)))
            } else {
                more.next().map(|(p, a)| (p, Err(a)))
            }
            .expect("peeked");
            let me = entries.len() as u32;
            let parent = if p.is_empty() { 0 } else { dir_of[parent_of(p)] };
            let mut ino = next_ino;
            next_ino += 1;
            let mut link = 0;
            let is_dir = match input {
                Ok(n) => {
                    if let Kind::File { inode, .. } = n.kind {
                        link = data.len() as u32;
                        if !tree.maybe_linked(inode) {
                            data.push(Data { entry: me, lba: 0 });
                        } else if let Some(l) = linked.get_mut(&inode) {
                            (link, ino, l.count) = (l.data, l.ino, l.count + 1);
                            next_ino -= 1;
                        } else {
                            data.push(Data { entry: me, lba: 0 });
                            linked.insert(inode, Link { data: link, ino, count: 1 });
                        }
                    }
                    owner(n.meta.uid, "uid", p)?;
                    owner(n.meta.gid, "gid", p)?;
                    n.kind == Kind::Dir
                }
                Err(a) => {
                    match a {
                        Added::Extra(i) => {
                            let x = &opts.extra[i];
                            let md = std::fs::metadata(&x.source).at(&x.source)?;
                            if !md.is_file() {
                                return Err(err(format!("ISO file {}: source {} is not a regular file", x.path, x.source.display())));
                            }
                            extra_len[i] = md.len();
                            extra_paths.push((x.path.clone(), me));
                        }
                        Added::Catalog => catalog = Some(me),
                        Added::Dir => {}
                    }
                    if !matches!(a, Added::Dir) {
                        link = data.len() as u32;
                        data.push(Data { entry: me, lba: 0 });
                    }
                    added_at.push((me, a));
                    matches!(a, Added::Dir)
                }
            };
            if is_dir {
                link = dirs.len() as u32;
                dir_of.insert(p, link);
                dirs.push(Dir { entry: me, parent, kids: 0..0, subdirs: 0, side: Default::default() });
                if me != 0 {
                    dirs[parent as usize].subdirs += 1;
                }
            }
            parents.push(parent);
            entries.push(Entry { path: p, node: input.ok(), ino, link });
        }
        drop(dir_of);
        if let (Some(c), Some(n)) = (&opts.catalog, catalog) {
            extra_paths.push((c.clone(), n));
        }
        data.shrink_to_fit();

        // 3. Each directory's children, in path order (which is bytewise order of their names).
        let (start, kids) = crate::emit::dirtree::group_children(&parents, dirs.len());
        drop(parents);
        for (d, dir) in dirs.iter_mut().enumerate() {
            dir.kids = start[d]..start[d + 1];
        }

        // 4. Items with the same bytes (the same span of the same spill file) under another
        // inode share the first one's extent.
        let span = |d: &Data| match entries[d.entry as usize].node.map(|n| &n.kind) {
            Some(Kind::File { content, .. }) if content.len > 0 => Some((content.spill, content.offset, content.len)),
            _ => None,
        };
        let mut by_span: Vec<u32> = (0..data.len() as u32).filter(|&d| span(&data[d as usize]).is_some()).collect();
        by_span.sort_unstable_by_key(|&d| (span(&data[d as usize]), d));
        let mut shared = Vec::new();
        let mut first = 0;
        for w in 0..by_span.len() {
            let d = by_span[w];
            if w > 0 && span(&data[by_span[w - 1] as usize]) == span(&data[d as usize]) {
                shared.push((d, first));
            } else {
                first = d;
            }
        }
        drop(by_span);
        for (d, first) in shared {
            data[d as usize] = Data { entry: SHARED, lba: first };
        }
        for e in entries.iter_mut() {
            if let Some(tree::Node { kind: Kind::File { .. }, .. }) = e.node {
                if data[e.link as usize].entry == SHARED {
                    e.link = data[e.link as usize].lba;
                }
            }
        }

        let mut plan = Plan {
            tree,
            opts,
            entries,
            added: added_at,
            extra_len,
            linked,
            kids,
            dirs,
            order: Default::default(),
            named: [false; 2],
            renamed: Default::default(),
            data,
            volume_id: volume_id(&opts.volume_id),
            joliet_volume_id: opts.volume_id.encode_utf16().take(16).flat_map(|u| u.to_be_bytes()).collect(),
            sde,
            boot: Vec::new(),
            catalog_lba: 0,
            catalog,
            vd_blocks: 0,
            ptables: Default::default(),
            data_lba: 0,
            blocks: 0,
            extra_paths,
        };

        // boot entries must name files of the image
        for b in &opts.boot {
            let (platform, p) = match b {
                BootEntry::Bios { path } => (f::PLATFORM_X86, path),
                BootEntry::Efi { path } => (f::PLATFORM_EFI, path),
            };
            let rel = clean_extra(p)?;
            let e = plan.entries.binary_search_by(|e| e.path.cmp(rel)).map_err(|_| err(format!("boot file {p} is not in the ISO")))?;
            if !matches!(plan.attrs(e as u32).what, What::File) {
                return Err(err(format!("boot file {p} is not a regular file")));
            }
            let d = plan.entries[e].link;
            let len = plan.data_len(d);
            if platform == f::PLATFORM_X86 && len < 64 {
                return Err(err(format!("BIOS boot file {p} is {len} bytes; a boot info table needs at least 64")));
            }
            if u32::try_from(len).is_err() {
                return Err(err(format!("boot file {p} is over 4 GiB")));
            }
            plan.boot.push((platform, d));
        }
        plan.layout(opts.tail_reserve)?;
        Ok(plan)
    }

    /// What the caller added at entry `e`, when it is not the tree's.
    fn added(&self, e: u32) -> Added {
        let i = self.added.binary_search_by_key(&e, |a| a.0).expect("an entry not in the tree was added");
        self.added[i].1
    }

    /// Entry `e`'s kind and Rock Ridge attributes.
    fn attrs(&self, e: u32) -> Attrs<'t> {
        let Some(n) = self.entries[e as usize].node else {
            let (what, mode) = match self.added(e) {
                Added::Extra(i) => (What::File, self.opts.extra[i].mode & 0o7777),
                Added::Catalog => (What::File, 0o644),
                Added::Dir => (What::Dir, 0o755),
            };
            return Attrs { what, mode, uid: 0, gid: 0, mtime: self.sde };
        };
        let what = match &n.kind {
            Kind::Dir => What::Dir,
            Kind::File { .. } => What::File,
            Kind::Symlink { target } => What::Symlink(target),
            Kind::Char { major, minor } => What::Dev { block: false, major: *major, minor: *minor },
            Kind::Block { major, minor } => What::Dev { block: true, major: *major, minor: *minor },
            Kind::Fifo => What::Fifo,
        };
        // uid and gid were checked to fit when the entry was indexed
        Attrs { what, mode: n.meta.mode & 0o7777, uid: n.meta.uid as u32, gid: n.meta.gid as u32, mtime: n.meta.clamped_mtime(self.sde) }
    }

    fn is_dir(&self, e: u32) -> bool {
        matches!(self.attrs(e).what, What::Dir)
    }

    /// The real name (Rock Ridge NM); empty for the root.
    fn name(&self, e: u32) -> &'t [u8] {
        crate::emit::dirtree::name(self.entries[e as usize].path)
    }

    /// Rock Ridge link count: 2 + subdirectories for a directory, the paths of its inode for
    /// a file.
    fn nlink(&self, e: u32) -> u32 {
        let entry = &self.entries[e as usize];
        match entry.node.map(|n| &n.kind) {
            Some(Kind::File { inode, .. }) => self.linked.get(inode).map_or(1, |l| l.count),
            _ if self.is_dir(e) => 2 + self.dirs[entry.link as usize].subdirs,
            _ => 1,
        }
    }

    /// Byte length of data item `d`.
    fn data_len(&self, d: u32) -> u64 {
        let e = self.data[d as usize].entry;
        match self.entries[e as usize].node.map(|n| &n.kind) {
            Some(Kind::File { content, .. }) => content.len,
            Some(_) => unreachable!("data items are files"),
            None => match self.added(e) {
                Added::Extra(i) => self.extra_len[i],
                _ => BLOCK,
            },
        }
    }

    /// The identifiers of directory `d`'s children for ISO 9660 (d-characters, ";1" on
    /// files) or Joliet (UCS-2 big-endian): unique in the directory, given in bytewise order
    /// of the real names; and the order of the records (ECMA-119 9.3 for ISO 9660, by
    /// identifier bytes for Joliet).
    fn ids(&self, d: u32, joliet: bool) -> Ids {
        let side = joliet as usize;
        let range = self.dirs[d as usize].kids.clone();
        let kids = &self.kids[range.start as usize..range.end as usize];
        let mut ids = Ids { bytes: Vec::new(), ends: Vec::with_capacity(kids.len()), sorted: (0..kids.len() as u32).collect(), renamed: Vec::new() };
        let mut used = BTreeSet::new();
        for (k, &c) in kids.iter().enumerate() {
            let (name, dir, at) = (self.name(c), self.is_dir(c), range.start + k as u32);
            let cand = if joliet { joliet_candidate } else { iso_candidate };
            let id = if self.named[side] {
                // made before, by the layout, which kept the suffixes it added
                cand(name, dir, self.renamed[side].get(&at).map_or(0, |n| *n as usize))
            } else {
                let (n, id) = if joliet {
                    // Windows reads Joliet case-insensitively: "Read.me" and "read.me" must
                    // differ by more than case
                    let (n, id) = first_free(name, dir, cand, |j| used.contains(&fold(j)));
                    used.insert(fold(&id));
                    (n, id)
                } else {
                    let (n, id) = first_free(name, dir, cand, |c| used.contains(c));
                    used.insert(id.clone());
                    (n, id)
                };
                if n > 0 {
                    ids.renamed.push((at, n as u32));
                }
                id
            };
            if joliet {
                ids.bytes.extend(id.iter().flat_map(|u| u.to_be_bytes()));
            } else {
                ids.bytes.extend(iso_identifier(&id, dir));
            }
            ids.ends.push(ids.bytes.len() as u32);
        }
        drop(used);
        let mut sorted = std::mem::take(&mut ids.sorted);
        if joliet {
            sorted.sort_by(|a, b| ids.get(*a).cmp(ids.get(*b)));
        } else {
            sorted.sort_by(|a, b| iso_order(ids.get(*a), ids.get(*b)));
        }
        ids.sorted = sorted;
        ids
    }

    /// The Rock Ridge entries of an entry's record (`root_dot`: the root's "." record, which
    /// opens with SP and carries ER).
    fn rr_entries(&self, e: u32, name: bool, root_dot: bool) -> Vec<Vec<u8>> {
        let a = self.attrs(e);
        let mut v = Vec::new();
        if root_dot {
            v.push(f::sp());
        }
        v.push(f::px(a.type_bits() | a.mode, self.nlink(e), a.uid, a.gid, self.entries[e as usize].ino));
        v.push(f::tf(a.mtime));
        match a.what {
            What::Dev { major, minor, .. } => v.push(f::pn(major, minor)),
            What::Symlink(t) => v.extend(f::sl(t)),
            _ => {}
        }
        if name {
            v.extend(f::nm(self.name(e)));
        }
        if root_dot {
            v.push(f::er());
        }
        v
    }

    /// Directory `d`'s records ("." and ".." first, then its children in the order of
    /// `ids`), placed, handed to `each` in order. Returns the blocks of the directory's
    /// extent and of its continuation area. The layout and the write both call this: the
    /// records are made the same way twice and never all kept.
    fn records(&self, d: u32, joliet: bool, ids: &Ids, mut each: impl FnMut(&Record) -> Result<()>) -> Result<(u32, u32)> {
        let dir = &self.dirs[d as usize];
        let (mut pos, mut ce) = (0u32, 0u32);
        let mut put = |id: &[u8], flags: u8, entry: u32, target: Target, rr: Option<Vec<Vec<u8>>>| -> Result<()> {
            debug_assert!(joliet || id.len() <= 37);
            let (su, pieces) = match rr {
                Some(e) => split_su(e, f::DIR_RECORD_MAX - 1 - f::dir_record_len(id.len(), 0)),
                None => (Vec::new(), Vec::new()),
            };
            let len = f::dir_record_len(id.len(), su.len() + if pieces.is_empty() { 0 } else { f::CE_LEN }).next_multiple_of(2) as u32;
            if pos % B + len > B {
                pos = pos.next_multiple_of(B);
            }
            let offset = pos;
            pos += len;
            // continuation pieces: packed, never crossing a block
            let n = pieces.len();
            let pieces = pieces
                .into_iter()
                .enumerate()
                .map(|(k, body)| {
                    let len = (body.len() + if k + 1 < n { f::CE_LEN } else { 0 }) as u32;
                    if ce % B + len > B {
                        ce = ce.next_multiple_of(B);
                    }
                    let at = (ce / B, ce % B);
                    ce += len;
                    (body, at.0, at.1)
                })
                .collect();
            each(&Record { id, flags, entry, target, su, pieces, offset })
        };
        let rr = |e: u32, name: bool, root_dot: bool| (!joliet).then(|| self.rr_entries(e, name, root_dot));
        let parent = self.dirs[dir.parent as usize].entry;
        put(&[0], f::FLAG_DIR, dir.entry, Target::Dir(d), rr(dir.entry, false, d == 0))?;
        put(&[1], f::FLAG_DIR, parent, Target::Dir(dir.parent), rr(parent, false, false))?;
        for &k in &ids.sorted {
            let c = self.kids[(dir.kids.start + k) as usize];
            let id = ids.get(k);
            let link = self.entries[c as usize].link;
            match self.attrs(c).what {
                What::Dir => put(id, f::FLAG_DIR, c, Target::Dir(link), rr(c, true, false))?,
                What::File => {
                    for (x, (_, _, flags)) in f::file_extents(0, self.data_len(link)).into_iter().enumerate() {
                        put(id, flags, c, Target::Data(link, x), rr(c, true, false))?;
                    }
                }
                _ => put(id, 0, c, Target::None, rr(c, true, false))?,
            }
        }
        Ok((pos.div_ceil(B).max(1), ce.div_ceil(B)))
    }

    /// Assign every block.
    fn layout(&mut self, tail_reserve: u64) -> Result<()> {
        if self.dirs.len() > u16::MAX as usize {
            return Err(err(format!(
                "{} directories: ISO 9660 path tables number directories with 16 bits (at most {})",
                self.dirs.len(),
                u16::MAX
            )));
        }
        // Directories in path table order (ECMA-119 9.4.4: by level, then parent number,
        // then identifier): breadth first with each directory's subdirectories sorted; the
        // size of each as it comes.
        for side in 0..2 {
            let joliet = side == 1;
            let mut order = vec![0u32];
            self.dirs[0].side[side].id = vec![0];
            let mut i = 0;
            while i < order.len() {
                let d = order[i];
                let ids = self.ids(d, joliet);
                let (blocks, ce_blocks) = self.records(d, joliet, &ids, |_| Ok(()))?;
                self.renamed[side].extend(ids.renamed.iter().copied());
                let dir = &mut self.dirs[d as usize];
                (dir.side[side].blocks, dir.side[side].ce_blocks, dir.side[side].num) = (blocks, ce_blocks, i as u16 + 1);
                let start = dir.kids.start;
                for &k in &ids.sorted {
                    let c = self.kids[(start + k) as usize];
                    if self.is_dir(c) {
                        let sub = self.entries[c as usize].link;
                        self.dirs[sub as usize].side[side].id = ids.get(k).to_vec();
                        order.push(sub);
                    }
                }
                i += 1;
            }
            self.order[side] = order;
            self.named[side] = true;
        }

        // volume descriptors
        let mut lba = f::SYSTEM_AREA_BLOCKS;
        self.vd_blocks = 1 + (!self.boot.is_empty()) as u32 + 1 + 1;
        lba += self.vd_blocks;
        // path tables: ISO L, ISO M, Joliet L, Joliet M
        let pt_size = |side: usize| -> u32 { self.order[side].iter().map(|&d| f::path_record_len(self.dirs[d as usize].side[side].id.len()) as u32).sum() };
        let (iso_pt, jol_pt) = (pt_size(0), pt_size(1));
        for (i, size) in [iso_pt, iso_pt, jol_pt, jol_pt].into_iter().enumerate() {
            self.ptables[i].0 = lba;
            lba += size.div_ceil(B);
        }
        for side in 0..2 {
            for &d in &self.order[side] {
                let s = &mut self.dirs[d as usize].side[side];
                s.lba = lba;
                lba += s.blocks + s.ce_blocks;
            }
        }
        if self.catalog.is_some() {
            self.catalog_lba = lba;
            lba += 1;
        }
        self.data_lba = lba;
        let mut blocks = lba as u64;
        for d in 0..self.data.len() as u32 {
            let item = self.data[d as usize];
            if item.entry == SHARED {
                continue;
            }
            let len = self.data_len(d);
            if Some(item.entry) == self.catalog {
                self.data[d as usize].lba = self.catalog_lba;
            } else if len > 0 {
                self.data[d as usize].lba = u32::try_from(blocks).map_err(|_| err("the image exceeds ISO 9660's 2^32 blocks (8 TiB)".into()))?;
                blocks += len.div_ceil(BLOCK);
            }
        }
        blocks += tail_reserve.div_ceil(BLOCK);
        self.blocks = u32::try_from(blocks).map_err(|_| err("the image exceeds ISO 9660's 2^32 blocks (8 TiB)".into()))?;
        // path tables now that directories have blocks
        for (i, (side, le)) in [(0, true), (0, false), (1, true), (1, false)].into_iter().enumerate() {
            let mut t = Vec::new();
            for &d in &self.order[side] {
                let dir = &self.dirs[d as usize];
                let parent = self.dirs[dir.parent as usize].side[side].num;
                t.extend(f::path_record(&dir.side[side].id, dir.side[side].lba, parent, le));
            }
            self.ptables[i].1 = t;
        }
        Ok(())
    }

    /// (first block, byte length) of directory `d`'s extent on one side.
    fn dir_extent(&self, d: u32, side: usize) -> (u32, u32) {
        let s = &self.dirs[d as usize].side[side];
        (s.lba, s.blocks * B)
    }

    /// Write directory `d`'s extent and continuation area on one side.
    fn write_dir(&self, out: &File, d: u32, side: usize) -> Result<()> {
        let werr = |e: std::io::Error| err(format!("writing ISO output: {e}"));
        let s = &self.dirs[d as usize].side[side];
        let ce_base = s.lba + s.blocks;
        let mut ext = Seq::new(out, s.lba as u64 * BLOCK);
        let mut cont = Seq::new(out, ce_base as u64 * BLOCK);
        let ids = self.ids(d, side == 1);
        let (blocks, ce_blocks) = self.records(d, side == 1, &ids, |r| {
            let (extent, len) = match r.target {
                Target::Dir(n) => self.dir_extent(n, side),
                Target::Data(item, k) => {
                    let x = f::file_extents(self.data[item as usize].lba, self.data_len(item))[k];
                    (x.0, x.1)
                }
                Target::None => (0, 0),
            };
            let mut su = r.su.clone();
            if !r.pieces.is_empty() {
                su.extend(r.ce(0, ce_base));
            }
            if (f::dir_record_len(r.id.len(), su.len())) % 2 == 1 {
                su.push(0);
            }
            let date = f::date7(self.attrs(r.entry).mtime);
            ext.put(r.offset as u64, &f::dir_record(extent, len, date, r.flags, r.id, &su)).map_err(werr)?;
            for (k, (body, block, offset)) in r.pieces.iter().enumerate() {
                cont.put(*block as u64 * BLOCK + *offset as u64, body).map_err(werr)?;
                if k + 1 < r.pieces.len() {
                    cont.append(&r.ce(k + 1, ce_base)).map_err(werr)?;
                }
            }
            Ok(())
        })?;
        debug_assert_eq!((blocks, ce_blocks), (s.blocks, s.ce_blocks));
        ext.finish(s.blocks as u64 * BLOCK).map_err(werr)?;
        cont.finish(s.ce_blocks as u64 * BLOCK).map_err(werr)
    }

    /// Write everything: the descriptors, path tables and directories, then the file
    /// contents.
    pub(super) fn write(&self, out: &File) -> Result<IsoLayout> {
        let werr = |e: std::io::Error| err(format!("writing ISO output: {e}"));
        let total = self.blocks as u64 * BLOCK;
        out.set_len(total).map_err(werr)?;

        let root_rec = |side: usize| {
            let (l, n) = self.dir_extent(0, side);
            f::dir_record(l, n, f::date7(self.sde), f::FLAG_DIR, &[0], &[])
        };
        let vd = |kind, joliet: bool| {
            let root = root_rec(joliet as usize);
            f::volume_descriptor(&f::VolumeDescriptor {
                kind,
                volume_id: if joliet { &self.joliet_volume_id } else { &self.volume_id },
                system_id: if joliet { &[0, b'L', 0, b'I', 0, b'N', 0, b'U', 0, b'X'] } else { b"LINUX" },
                application_id: if joliet { &[0, b'S', 0, b'T', 0, b'A', 0, b'G', 0, b'E', 0, b'B', 0, b'O', 0, b'X'] } else { b"STAGEBOX" },
                joliet,
                blocks: self.blocks,
                path_table_size: self.ptables[if joliet { 2 } else { 0 }].1.len() as u32,
                l_table: self.ptables[if joliet { 2 } else { 0 }].0,
                m_table: self.ptables[if joliet { 3 } else { 1 }].0,
                root: &root,
                date: self.sde,
            })
        };
        let mut head = Seq::new(out, f::SYSTEM_AREA_BLOCKS as u64 * BLOCK);
        head.append(&vd(f::VD_PRIMARY, false)).map_err(werr)?;
        if !self.boot.is_empty() {
            head.append(&f::boot_record(self.catalog_lba)).map_err(werr)?;
        }
        head.append(&vd(f::VD_SUPPLEMENTARY, true)).map_err(werr)?;
        head.append(&f::terminator()).map_err(werr)?;
        for (lba, t) in &self.ptables {
            head.put((lba - f::SYSTEM_AREA_BLOCKS) as u64 * BLOCK, t).map_err(werr)?;
        }
        let end = self.dirs[0].side[0].lba - f::SYSTEM_AREA_BLOCKS;
        head.finish(end as u64 * BLOCK).map_err(werr)?;
        for side in 0..2 {
            for &d in &self.order[side] {
                self.write_dir(out, d, side)?;
            }
        }
        if self.catalog.is_some() {
            let entries: Vec<f::CatalogEntry> = self
                .boot
                .iter()
                .map(|&(platform, d)| f::CatalogEntry { platform, sectors: self.load_sectors(platform, d), lba: self.data[d as usize].lba })
                .collect();
            out.write_all_at(&f::boot_catalog(&entries), self.catalog_lba as u64 * BLOCK).map_err(werr)?;
        }

        // file contents
        let mut buf = vec![0u8; 1 << 20];
        for (d, item) in self.data.iter().enumerate() {
            let len = if item.entry == SHARED { 0 } else { self.data_len(d as u32) };
            if len == 0 || Some(item.entry) == self.catalog {
                continue;
            }
            let dst = item.lba as u64 * BLOCK;
            match self.entries[item.entry as usize].node.map(|n| &n.kind) {
                Some(Kind::File { content, .. }) => copy_at(&mut self.tree.open(content), out, dst, len, &mut buf).map_err(werr)?,
                _ => {
                    let Added::Extra(i) = self.added(item.entry) else { unreachable!("the catalog is written above") };
                    let p = &self.opts.extra[i].source;
                    let mut r = File::open(p).at(p)?;
                    copy_at(&mut r, out, dst, len, &mut buf).map_err(|e| err(format!("{}: {e}", p.display())))?;
                }
            }
        }
        drop(buf);
        // boot info tables, now that the boot files are in place
        for &(platform, d) in &self.boot {
            if platform == f::PLATFORM_X86 {
                // the sum covers the file from byte 64, read back in 4-byte aligned chunks
                let (dst, len) = (self.data[d as usize].lba as u64 * BLOCK, self.data_len(d));
                let mut sum = 0u32;
                let mut chunk = vec![0u8; 1 << 20];
                let mut at = 64u64;
                while at < len {
                    let n = (len - at).min(chunk.len() as u64) as usize;
                    out.read_exact_at(&mut chunk[..n], dst + at).map_err(werr)?;
                    sum = word_sum(sum, &chunk[..n]);
                    at += n as u64;
                }
                let table = boot_info_table(f::SYSTEM_AREA_BLOCKS, self.data[d as usize].lba, len as u32, sum);
                out.write_all_at(&table, dst + f::BOOT_INFO_OFFSET as u64).map_err(werr)?;
            }
        }
        let mut files = BTreeMap::new();
        for (p, e) in &self.extra_paths {
            let d = self.entries[*e as usize].link;
            files.insert(p.clone(), (self.data[d as usize].lba as u64, self.data_len(d)));
        }
        Ok(IsoLayout { size: total, files })
    }

    /// Sectors of 512 bytes the firmware loads for an entry: 4 for BIOS (isolinux loads the
    /// rest itself); the whole FAT image for EFI, as xorriso 1.5 sets it, and 0 when that
    /// does not fit 16 bits (xorriso's value too: UEFI firmware reads the image's own size).
    fn load_sectors(&self, platform: u8, d: u32) -> u16 {
        if platform == f::PLATFORM_X86 {
            f::BIOS_LOAD_SECTORS
        } else {
            u16::try_from(self.data_len(d).div_ceil(512)).unwrap_or(0)
        }
    }
}

/// Split system use entries between the record (`room` bytes) and continuation pieces of at
/// most a block each (every piece but the last keeps room for the CE to the next).
fn split_su(entries: Vec<Vec<u8>>, room: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let total: usize = entries.iter().map(Vec::len).sum();
    if total <= room {
        return (entries.concat(), Vec::new());
    }
    let mut it = entries.into_iter().peekable();
    let mut inline = Vec::new();
    while let Some(e) = it.peek() {
        if inline.len() + e.len() > room - f::CE_LEN {
            break;
        }
        inline.extend(it.next().unwrap());
    }
    let rest: Vec<Vec<u8>> = it.collect();
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let left: usize = rest[i..].iter().map(Vec::len).sum();
        let mut body = Vec::new();
        if left <= BLOCK as usize {
            for e in &rest[i..] {
                body.extend_from_slice(e);
            }
            i = rest.len();
        } else {
            while i < rest.len() && body.len() + rest[i].len() <= BLOCK as usize - f::CE_LEN {
                body.extend_from_slice(&rest[i]);
                i += 1;
            }
        }
        pieces.push(body);
    }
    (inline, pieces)
}

/// Writes at increasing offsets of a region of the output, through a buffer; what lies
/// between two writes is written as zeros.
struct Seq<'a> {
    out: &'a File,
    /// Where the buffer goes in the output.
    at: u64,
    buf: Vec<u8>,
    /// Bytes of the region put so far.
    len: u64,
}

impl<'a> Seq<'a> {
    const FLUSH: usize = 256 << 10;

    fn new(out: &'a File, start: u64) -> Self {
        Seq { out, at: start, buf: Vec::new(), len: 0 }
    }

    /// Put `bytes` at `pos` of the region, at or after the end of what was put last.
    fn put(&mut self, pos: u64, bytes: &[u8]) -> std::io::Result<()> {
        debug_assert!(pos >= self.len, "{pos} < {}", self.len);
        self.zeros(pos - self.len)?;
        self.append(bytes)
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
        if self.buf.len() >= Self::FLUSH {
            self.flush()?;
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> std::io::Result<()> {
        while n > 0 {
            let k = n.min(Self::FLUSH as u64) as usize;
            self.buf.resize(self.buf.len() + k, 0);
            self.len += k as u64;
            n -= k as u64;
            if self.buf.len() >= Self::FLUSH {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.write_all_at(&self.buf, self.at)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Zeros up to `len` bytes of region, and write out what is left.
    fn finish(mut self, len: u64) -> std::io::Result<()> {
        debug_assert!(len >= self.len, "{len} < {}", self.len);
        self.zeros(len - self.len)?;
        self.flush()
    }
}

/// The 56-byte El Torito boot info table (mkisofs `-boot-info-table`): PVD block, boot file
/// block, boot file length, and the 32-bit little-endian sum of the file's words from byte 64.
/// `sum` is [`word_sum`] over the file from byte 64.
pub fn boot_info_table(pvd: u32, lba: u32, len: u32, sum: u32) -> [u8; f::BOOT_INFO_LEN] {
    let mut t = [0u8; f::BOOT_INFO_LEN];
    t[0..4].copy_from_slice(&pvd.to_le_bytes());
    t[4..8].copy_from_slice(&lba.to_le_bytes());
    t[8..12].copy_from_slice(&len.to_le_bytes());
    t[12..16].copy_from_slice(&sum.to_le_bytes());
    t
}

/// Add the little-endian 32-bit words of `bytes` to `sum` (a short last word zero-padded).
/// Chunks passed one after another must be multiples of 4 bytes except the last.
pub fn word_sum(sum: u32, bytes: &[u8]) -> u32 {
    bytes.chunks(4).fold(sum, |s, c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        s.wrapping_add(u32::from_le_bytes(w))
    })
}

/// Copy exactly `len` bytes from `r` to `out` at `dst`.
fn copy_at(r: &mut impl std::io::Read, out: &File, mut dst: u64, len: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file is shorter than when the image was laid out"));
        }
        out.write_all_at(&buf[..n], dst)?;
        dst += n as u64;
        left -= n as u64;
    }
    Ok(())
}

/// A name as ISO 9660 d-characters: (name, extension), uppercase, anything else `_`;
/// directories have no extension. `n` > 0 adds a `_N` suffix to the name part so that a
/// collision gets a new, still deterministic identifier.
fn iso_candidate(name: &[u8], dir: bool, n: usize) -> Vec<u16> {
    let map = |b: &u8| match b {
        b'a'..=b'z' => (b - 32) as u16,
        b'A'..=b'Z' | b'0'..=b'9' | b'_' => *b as u16,
        _ => b'_' as u16,
    };
    let suffix: Vec<u16> = if n > 0 { format!("_{n}").bytes().map(u16::from).collect() } else { Vec::new() };
    if dir {
        let mut base: Vec<u16> = name.iter().map(map).collect();
        base.truncate(f::ISO_MAX_NAME + 1 - suffix.len());
        base.extend(suffix);
        return base;
    }
    let (stem, ext) = match name.iter().rposition(|b| *b == b'.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, &name[..0]),
    };
    let mut ext: Vec<u16> = ext.iter().map(map).collect();
    ext.truncate(8);
    let mut base: Vec<u16> = stem.iter().map(map).collect();
    base.truncate(f::ISO_MAX_NAME - 1 - ext.len() - suffix.len());
    base.extend(suffix);
    base.push(b'.' as u16);
    base.extend(ext);
    base
}

/// A name as Joliet UCS-2: the UTF-8 name (invalid bytes as U+FFFD); characters Joliet
/// forbids (controls, `* / : ; ? \`) and those outside the BMP become `_`; at most 64
/// characters, keeping a short extension; `n` > 0 adds `_N` before it.
fn joliet_candidate(name: &[u8], _dir: bool, n: usize) -> Vec<u16> {
    let s = String::from_utf8_lossy(name);
    let chars: Vec<u16> = s
        .chars()
        .map(|c| {
            let u = c as u32;
            if !(0x20..=0xFFFF).contains(&u) || "*/:;?\\".contains(c) { b'_' as u16 } else { u as u16 }
        })
        .collect();
    let suffix: Vec<u16> = if n > 0 { format!("_{n}").bytes().map(u16::from).collect() } else { Vec::new() };
    if chars.len() + suffix.len() <= f::JOLIET_MAX_NAME && n == 0 {
        return chars;
    }
    let dot = chars.iter().rposition(|c| *c == b'.' as u16).filter(|i| *i > 0 && chars.len() - i <= 9);
    let (stem, ext) = match dot {
        Some(i) => (&chars[..i], &chars[i..]),
        None => (&chars[..], &chars[..0]),
    };
    let mut v: Vec<u16> = stem.to_vec();
    v.truncate(f::JOLIET_MAX_NAME - ext.len() - suffix.len());
    v.extend(suffix);
    v.extend_from_slice(ext);
    v
}

/// A Joliet name with ASCII letters lowercased, for case-insensitive uniqueness.
fn fold(j: &[u16]) -> Vec<u16> {
    j.iter().map(|u| if (b'A' as u16..=b'Z' as u16).contains(u) { u + 32 } else { *u }).collect()
}

/// The first candidate for `name` that is not `taken` in the directory, and its suffix number.
fn first_free(name: &[u8], dir: bool, cand: fn(&[u8], bool, usize) -> Vec<u16>, taken: impl Fn(&[u16]) -> bool) -> (usize, Vec<u16>) {
    (0..).map(|n| (n, cand(name, dir, n))).find(|(_, c)| !taken(c)).expect("a free name")
}

/// The recorded ISO identifier: files get the version ";1".
fn iso_identifier(c: &[u16], dir: bool) -> Vec<u8> {
    let mut v: Vec<u8> = c.iter().map(|u| *u as u8).collect();
    if !dir {
        v.extend_from_slice(b";1");
    }
    v
}

/// ECMA-119 9.3 record order: name, then extension, each compared as if padded with spaces
/// (version numbers are all 1).
fn iso_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    fn split(x: &[u8]) -> (&[u8], &[u8]) {
        let x = x.strip_suffix(b";1").unwrap_or(x);
        match x.iter().position(|c| *c == b'.') {
            Some(i) => (&x[..i], &x[i + 1..]),
            None => (x, &x[..0]),
        }
    }
    fn padded(x: &[u8], y: &[u8]) -> std::cmp::Ordering {
        let n = x.len().max(y.len());
        let p = |v: &[u8], i: usize| v.get(i).copied().unwrap_or(b' ');
        (0..n).map(|i| p(x, i)).cmp((0..n).map(|i| p(y, i)))
    }
    let (an, ae) = split(a);
    let (bn, be) = split(b);
    padded(an, bn).then_with(|| padded(ae, be))
}

/// The primary volume identifier: d-characters (uppercase letters, digits, `_`), 32 at most.
fn volume_id(s: &str) -> Vec<u8> {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' => b - 32,
            b'A'..=b'Z' | b'0'..=b'9' | b'_' => b,
            _ => b'_',
        })
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::iso::IsoFile;

    #[test]
    fn iso_names_are_d_characters_and_unique() {
        let mut used = BTreeSet::new();
        let mut out = Vec::new();
        for n in ["README.md", "readme.md", "a-b.tar.gz", ".bashrc", "x".repeat(100).as_str(), "noext"] {
            let (_, c) = first_free(n.as_bytes(), false, iso_candidate, |c| used.contains(c));
            used.insert(c.clone());
            out.push(String::from_utf16(&c).unwrap());
        }
        assert_eq!(out[0], "README.MD");
        assert_eq!(out[1], "README_1.MD");
        assert_eq!(out[2], "A_B_TAR.GZ");
        assert_eq!(out[3], ".BASHRC");
        assert_eq!(out[4].len(), 30);
        assert_eq!(out[5], "NOEXT.");
        let d = iso_candidate(b"lib.d", true, 0);
        assert_eq!(String::from_utf16(&d).unwrap(), "LIB_D");
    }

    #[test]
    fn joliet_names_replace_what_ucs2_cannot_hold() {
        let c = joliet_candidate("a:b*c\u{1F600}\u{e9}".as_bytes(), false, 0);
        assert_eq!(String::from_utf16(&c).unwrap(), "a_b_c_\u{e9}");
        let long = format!("{}.conf", "n".repeat(100));
        let c = joliet_candidate(long.as_bytes(), false, 0);
        assert_eq!(c.len(), 64);
        assert!(String::from_utf16(&c).unwrap().ends_with(".conf"));
        let c2 = joliet_candidate(long.as_bytes(), false, 1);
        assert!(String::from_utf16(&c2).unwrap().ends_with("_1.conf"));
        assert_eq!(c2.len(), 64);
        let bad = joliet_candidate(b"\xff\xfe", false, 0);
        assert_eq!(String::from_utf16(&bad).unwrap(), "\u{fffd}\u{fffd}");
    }

    #[test]
    fn records_sort_by_padded_name_then_extension() {
        use std::cmp::Ordering::*;
        // "A;1" vs "A.B;1": names "A" == "A", extension "" < "B"
        assert_eq!(iso_order(b"A.;1", b"A.B;1"), Less);
        // padding with spaces: "AB" < "A_" ('B' 0x42 < '_' 0x5F) and "A" < "A0" (' ' < '0')
        assert_eq!(iso_order(b"AB.;1", b"A_.;1"), Less);
        assert_eq!(iso_order(b"A.Z;1", b"A0.;1"), Less);
    }

    #[test]
    fn a_file_over_4_gib_gets_contiguous_multi_extent_records() {
        // a sparse 9 GiB source: laying out only stats it
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big.img");
        std::fs::File::create(&src).unwrap().set_len(9 << 30).unwrap();
        let tree = Tree::new(1);
        let opts = IsoOptions {
            volume_id: "BIG".into(),
            sde: 1,
            extra: vec![IsoFile { path: "/big.img".into(), source: src, mode: 0o644 }],
            ..Default::default()
        };
        let plan = Plan::new(&tree, &opts).unwrap();
        let d = &plan.data[0];
        assert_eq!(plan.data_len(0), 9 << 30);
        for joliet in [false, true] {
            // (identifier, flags, offset) of the root's records that point at file bytes
            let mut recs = Vec::new();
            let keep = |r: &Record| {
                if matches!(r.target, Target::Data(..)) {
                    recs.push((r.id.to_vec(), r.flags, r.offset));
                }
                Ok(())
            };
            plan.records(0, joliet, &plan.ids(0, joliet), keep).unwrap();
            assert_eq!(recs.len(), 3, "joliet {joliet}");
            assert_eq!(recs.iter().map(|r| r.1).collect::<Vec<_>>(), [f::FLAG_MULTI_EXTENT, f::FLAG_MULTI_EXTENT, 0]);
            assert!(recs.iter().all(|r| r.0 == recs[0].0));
            // the records follow each other in the directory, and so do the extents
            assert!(recs.windows(2).all(|w| w[0].2 < w[1].2));
        }
        let x = f::file_extents(d.lba, plan.data_len(0));
        assert_eq!(x.iter().map(|e| e.1 as u64).sum::<u64>(), 9 << 30);
        assert_eq!(x[1].0, d.lba + (f::MAX_EXTENT / BLOCK) as u32);
        // the image ends after the last extent
        assert_eq!(plan.blocks as u64, d.lba as u64 + (9u64 << 30) / BLOCK);
    }

    #[test]
    fn boot_info_table_sums_words_from_byte_64() {
        let mut file = [0u8; 70];
        file[64..70].copy_from_slice(&[1, 0, 0, 0, 2, 0]);
        let t = boot_info_table(16, 40, 70, word_sum(0, &file[64..]));
        assert_eq!(u32::from_le_bytes(t[0..4].try_into().unwrap()), 16);
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 40);
        assert_eq!(u32::from_le_bytes(t[8..12].try_into().unwrap()), 70);
        assert_eq!(u32::from_le_bytes(t[12..16].try_into().unwrap()), 3);
        assert!(t[16..].iter().all(|b| *b == 0));
    }
}
