//! Tree → ISO 9660 image: build the ISO's own tree (the rootfs plus the caller's extra files
//! and the boot catalog), name it three ways (ISO 9660 identifiers, Rock Ridge names, Joliet
//! names), lay every structure out, then write it, and fill file contents at their extents.
//!
//! Layout, in blocks of 2048 bytes: the zero system area (0-15); the primary volume
//! descriptor (16), the El Torito boot record (when booting), the Joliet supplementary
//! descriptor, the terminator; the four path tables (ISO L and M, Joliet L and M); the ISO
//! directories in path-table order, then the Joliet directories; the Rock Ridge continuation
//! areas; the boot catalog; file contents, one extent per inode, in bytewise path order; the
//! caller's tail reserve. Every position depends on the tree alone.

use super::format::{self as f, BLOCK};
use super::{BootEntry, IsoFile, IsoLayout, IsoOptions};
use crate::error::{Error, IoContext, Result};
use crate::tree::{ContentRef, Kind, Tree};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Where one file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Tree(ContentRef),
    Host(PathBuf),
    Catalog,
}

#[derive(Debug)]
struct Data {
    source: Source,
    len: u64,
    lba: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeKind {
    Dir { children: Vec<usize> },
    File { data: usize },
    Symlink(Vec<u8>),
    Dev { block: bool, major: u32, minor: u32 },
    Fifo,
}

#[derive(Debug)]
struct Node {
    /// The real name (Rock Ridge NM); empty for the root.
    name: Vec<u8>,
    path: Vec<u8>,
    parent: usize,
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    nlink: u32,
    ino: u32,
    /// ISO 9660 identifier as recorded (files end in ";1").
    iso_id: Vec<u8>,
    /// Joliet identifier, UCS-2 big-endian.
    joliet_id: Vec<u8>,
}

impl Node {
    fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }
    fn type_bits(&self) -> u32 {
        match self.kind {
            NodeKind::Dir { .. } => f::S_IFDIR,
            NodeKind::File { .. } => f::S_IFREG,
            NodeKind::Symlink(_) => f::S_IFLNK,
            NodeKind::Dev { block: true, .. } => f::S_IFBLK,
            NodeKind::Dev { block: false, .. } => f::S_IFCHR,
            NodeKind::Fifo => f::S_IFIFO,
        }
    }
    fn children(&self) -> &[usize] {
        match &self.kind {
            NodeKind::Dir { children } => children,
            _ => &[],
        }
    }
}

/// What a directory record points at.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A directory, by node.
    Dir(usize),
    /// One extent of a file: (data item, extent index).
    Data(usize, usize),
    /// Symlinks, devices, FIFOs: no data.
    None,
}

/// One directory record to write.
#[derive(Debug)]
struct Record {
    id: Vec<u8>,
    flags: u8,
    date: u64,
    target: Target,
    /// System use entries recorded in the record itself (without the CE).
    su: Vec<u8>,
    /// First continuation piece, when the entries did not all fit.
    ce: Option<usize>,
    /// Offset in the directory's extent.
    offset: u32,
}

/// One directory's records, its size in blocks, and its Rock Ridge continuation pieces,
/// which follow its extent directly (libarchive reads a continuation area only when it
/// comes right after the directory that refers to it, as libisofs lays them out).
#[derive(Debug)]
struct DirPlan {
    node: usize,
    records: Vec<Record>,
    blocks: u32,
    lba: u32,
    pieces: std::ops::Range<usize>,
    ce_blocks: u32,
}

/// A continuation area piece: entries, the next piece, and its place in the CE area.
#[derive(Debug)]
struct Piece {
    entries: Vec<u8>,
    next: Option<usize>,
    block: u32,
    offset: u32,
}

/// Everything laid out; [`Plan::write`] only serializes it.
pub(super) struct Plan<'t> {
    tree: &'t Tree,
    nodes: Vec<Node>,
    data: Vec<Data>,
    iso_dirs: Vec<DirPlan>,
    joliet_dirs: Vec<DirPlan>,
    pieces: Vec<Piece>,
    volume_id: Vec<u8>,
    joliet_volume_id: Vec<u8>,
    sde: u64,
    boot: Vec<(u8, usize)>,
    catalog_lba: u32,
    catalog_node: Option<usize>,
    vd_blocks: u32,
    ptables: [(u32, Vec<u8>); 4],
    data_lba: u32,
    blocks: u32,
    extra_paths: Vec<(String, usize)>,
}

fn err(msg: String) -> Error {
    Error::other(msg)
}

/// Clean an absolute ISO path from the caller into tree form (no leading `/`).
fn clean_extra(p: &str) -> Result<Vec<u8>> {
    let rel = p.strip_prefix('/').ok_or_else(|| err(format!("ISO path {p:?} must be absolute")))?;
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(err(format!("ISO path {p:?} must name a file with plain components (no empty, '.' or '..')")));
    }
    Ok(rel.as_bytes().to_vec())
}

fn parent_of(p: &[u8]) -> &[u8] {
    p.iter().rposition(|b| *b == b'/').map_or(&p[..0], |i| &p[..i])
}

fn show(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// An input to the ISO's tree in path order.
enum In<'a> {
    Tree(&'a crate::tree::Node),
    Extra(usize),
    Catalog,
    ImplicitDir,
}

impl<'t> Plan<'t> {
    /// Build and lay out the whole image. No I/O except `stat` of the extra files.
    pub(super) fn new(tree: &'t Tree, opts: &IsoOptions) -> Result<Self> {
        let sde = opts.sde;
        // 1. Merge the tree, the extra files and the catalog into one path-ordered map.
        let mut inputs: BTreeMap<Vec<u8>, In> = BTreeMap::new();
        for (p, n) in tree.walk() {
            inputs.insert(p.to_vec(), In::Tree(n));
        }
        let add = |p: &str, what: In<'t>, inputs: &mut BTreeMap<Vec<u8>, In<'t>>| -> Result<Vec<u8>> {
            let rel = clean_extra(p)?;
            if inputs.contains_key(&rel) {
                return Err(err(format!("ISO file {p} collides with a path of the tree or another added file")));
            }
            let mut par = parent_of(&rel);
            while !par.is_empty() {
                match inputs.get(par) {
                    Some(In::Tree(n)) if n.kind != Kind::Dir => {
                        return Err(err(format!("ISO file {p}: its parent {} is not a directory in the tree", show(par))))
                    }
                    Some(In::Extra(_)) | Some(In::Catalog) => {
                        return Err(err(format!("ISO file {p}: its parent {} is an added file", show(par))))
                    }
                    Some(_) => break,
                    None => {
                        inputs.insert(par.to_vec(), In::ImplicitDir);
                    }
                }
                par = parent_of(par);
            }
            inputs.insert(rel.clone(), what);
            Ok(rel)
        };
        for (i, x) in opts.extra.iter().enumerate() {
            add(&x.path, In::Extra(i), &mut inputs)?;
        }
        // the catalog is a file of the image only when there are boot entries
        match (&opts.catalog, opts.boot.is_empty()) {
            (Some(c), false) => {
                add(c, In::Catalog, &mut inputs)?;
            }
            (None, false) => return Err(err("an ISO with boot entries needs a boot catalog path".into())),
            (_, true) => {}
        }

        // 2. Nodes in path order (parents first), data items on first sight of an inode.
        let links = tree.link_counts();
        let mut nodes: Vec<Node> = Vec::new();
        let mut data: Vec<Data> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut by_inode: HashMap<u64, (usize, u32)> = HashMap::new();
        let mut by_content: HashMap<(u32, u64, u64), usize> = HashMap::new();
        let mut next_ino = 1u32;
        let mut catalog_node = None;
        let mut extra_paths = Vec::new();
        let owner = |v: u64, what: &str, p: &[u8]| -> Result<u32> {
            u32::try_from(v).map_err(|_| err(format!("{}: {what} {v} does not fit Rock Ridge's 32 bits", show(p))))
        };
        for (p, input) in &inputs {
            let parent = if p.is_empty() { 0 } else { index[parent_of(p)] };
            let name = p.rsplit(|b| *b == b'/').next().unwrap_or_default().to_vec();
            let me = nodes.len();
            let mut ino = next_ino;
            next_ino += 1;
            let (kind, mode, uid, gid, mtime, nlink) = match input {
                In::Tree(n) => {
                    let m = &n.meta;
                    let kind = match &n.kind {
                        Kind::Dir => NodeKind::Dir { children: Vec::new() },
                        Kind::Symlink { target } => NodeKind::Symlink(target.clone()),
                        Kind::Char { major, minor } => NodeKind::Dev { block: false, major: *major, minor: *minor },
                        Kind::Block { major, minor } => NodeKind::Dev { block: true, major: *major, minor: *minor },
                        Kind::Fifo => NodeKind::Fifo,
                        Kind::File { content, inode } => {
                            let d = match by_inode.get(inode) {
                                Some(&(d, i)) => {
                                    next_ino -= 1;
                                    ino = i;
                                    d
                                }
                                None => {
                                    let key = (content.spill, content.offset, content.len);
                                    let d = match by_content.get(&key) {
                                        Some(&d) if content.len > 0 => d,
                                        _ => {
                                            data.push(Data { source: Source::Tree(*content), len: content.len, lba: 0 });
                                            by_content.insert(key, data.len() - 1);
                                            data.len() - 1
                                        }
                                    };
                                    by_inode.insert(*inode, (d, ino));
                                    d
                                }
                            };
                            NodeKind::File { data: d }
                        }
                    };
                    let nlink = match &n.kind {
                        Kind::File { inode, .. } => links.get(inode).copied().unwrap_or(1),
                        _ => 1,
                    };
                    (kind, m.mode & 0o7777, owner(m.uid, "uid", p)?, owner(m.gid, "gid", p)?, m.clamped_mtime(sde), nlink)
                }
                In::Extra(i) => {
                    let x: &IsoFile = &opts.extra[*i];
                    let md = std::fs::metadata(&x.source).at(&x.source)?;
                    if !md.is_file() {
                        return Err(err(format!("ISO file {}: source {} is not a regular file", x.path, x.source.display())));
                    }
                    data.push(Data { source: Source::Host(x.source.clone()), len: md.len(), lba: 0 });
                    extra_paths.push((x.path.clone(), me));
                    (NodeKind::File { data: data.len() - 1 }, x.mode & 0o7777, 0, 0, sde, 1)
                }
                In::Catalog => {
                    data.push(Data { source: Source::Catalog, len: BLOCK, lba: 0 });
                    catalog_node = Some(me);
                    (NodeKind::File { data: data.len() - 1 }, 0o644, 0, 0, sde, 1)
                }
                In::ImplicitDir => (NodeKind::Dir { children: Vec::new() }, 0o755, 0, 0, sde, 1),
            };
            if matches!(kind, NodeKind::Dir { .. }) {
                index.insert(p.clone(), me);
            }
            nodes.push(Node { name, path: p.clone(), parent, kind, mode, uid, gid, mtime, nlink, ino, iso_id: Vec::new(), joliet_id: Vec::new() });
            if me != 0 {
                match &mut nodes[parent].kind {
                    NodeKind::Dir { children } => children.push(me),
                    _ => unreachable!("parents are directories"),
                }
            }
        }
        if let (Some(c), Some(n)) = (&opts.catalog, catalog_node) {
            extra_paths.push((c.clone(), n));
        }
        // directory link counts: 2 + subdirectories
        for i in 0..nodes.len() {
            if nodes[i].is_dir() {
                nodes[i].nlink = 2 + nodes[i].children().iter().filter(|c| nodes[**c].is_dir()).count() as u32;
            }
        }

        // 3. Names: unique per directory, in bytewise order of the real names.
        for d in 0..nodes.len() {
            let kids = nodes[d].children().to_vec();
            let mut iso_used = BTreeSet::new();
            let mut jol_used = BTreeSet::new();
            for c in kids {
                let iso = unique(&iso_used, &nodes[c].name, nodes[c].is_dir(), iso_candidate);
                iso_used.insert(iso.clone());
                // Windows reads Joliet case-insensitively: "Read.me" and "read.me" must differ
                // by more than case
                let jol = (0..)
                    .map(|n| joliet_candidate(&nodes[c].name, nodes[c].is_dir(), n))
                    .find(|j| !jol_used.contains(&fold(j)))
                    .expect("a free name");
                jol_used.insert(fold(&jol));
                nodes[c].iso_id = iso_identifier(&iso, nodes[c].is_dir());
                nodes[c].joliet_id = jol.iter().flat_map(|u| u.to_be_bytes()).collect();
            }
        }
        for n in nodes.iter_mut() {
            if let NodeKind::Dir { children } = &mut n.kind {
                children.shrink_to_fit();
            }
        }

        // boot entries must name files of the image
        let mut boot = Vec::new();
        for b in &opts.boot {
            let (platform, p) = match b {
                BootEntry::Bios { path } => (f::PLATFORM_X86, path),
                BootEntry::Efi { path } => (f::PLATFORM_EFI, path),
            };
            let rel = clean_extra(p)?;
            let node = nodes.iter().position(|n| n.path == rel).ok_or_else(|| err(format!("boot file {p} is not in the ISO")))?;
            let NodeKind::File { data: d } = nodes[node].kind else {
                return Err(err(format!("boot file {p} is not a regular file")));
            };
            if platform == f::PLATFORM_X86 && data[d].len < 64 {
                return Err(err(format!("BIOS boot file {p} is {} bytes; a boot info table needs at least 64", data[d].len)));
            }
            if u32::try_from(data[d].len).is_err() {
                return Err(err(format!("boot file {p} is over 4 GiB")));
            }
            boot.push((platform, d));
        }

        let mut plan = Plan {
            tree,
            nodes,
            data,
            iso_dirs: Vec::new(),
            joliet_dirs: Vec::new(),
            pieces: Vec::new(),
            volume_id: volume_id(&opts.volume_id),
            joliet_volume_id: opts.volume_id.encode_utf16().take(16).flat_map(|u| u.to_be_bytes()).collect(),
            sde,
            boot,
            catalog_lba: 0,
            catalog_node,
            vd_blocks: 0,
            ptables: Default::default(),
            data_lba: 0,
            blocks: 0,
            extra_paths,
        };
        plan.layout(opts.tail_reserve)?;
        Ok(plan)
    }

    /// Directories in path table order (ECMA-119 9.4.4: by level, then parent number, then
    /// identifier): breadth first with each directory's subdirectories sorted.
    fn dir_order(&self, joliet: bool) -> Vec<usize> {
        let mut order = vec![0usize];
        let mut i = 0;
        while i < order.len() {
            let mut sub: Vec<usize> = self.nodes[order[i]].children().iter().copied().filter(|c| self.nodes[*c].is_dir()).collect();
            self.sort_records(&mut sub, joliet);
            order.extend(sub);
            i += 1;
        }
        order
    }

    fn sort_records(&self, v: &mut [usize], joliet: bool) {
        if joliet {
            v.sort_by(|a, b| self.nodes[*a].joliet_id.cmp(&self.nodes[*b].joliet_id));
        } else {
            v.sort_by(|a, b| iso_order(&self.nodes[*a].iso_id, &self.nodes[*b].iso_id));
        }
    }

    /// The Rock Ridge entries of a node's record (`dot`: the root's "." record, which opens
    /// with SP and carries ER).
    fn rr_entries(&self, n: usize, name: bool, root_dot: bool) -> Vec<Vec<u8>> {
        let node = &self.nodes[n];
        let mut v = Vec::new();
        if root_dot {
            v.push(f::sp());
        }
        v.push(f::px(node.type_bits() | node.mode, node.nlink, node.uid, node.gid, node.ino));
        v.push(f::tf(node.mtime));
        match &node.kind {
            NodeKind::Dev { major, minor, .. } => v.push(f::pn(*major, *minor)),
            NodeKind::Symlink(t) => v.extend(f::sl(t)),
            _ => {}
        }
        if name {
            v.extend(f::nm(&node.name));
        }
        if root_dot {
            v.push(f::er());
        }
        v
    }

    /// Split system use entries between the record (`room` bytes) and continuation pieces.
    fn split_su(&mut self, entries: Vec<Vec<u8>>, room: usize) -> (Vec<u8>, Option<usize>) {
        let total: usize = entries.iter().map(Vec::len).sum();
        if total <= room {
            return (entries.concat(), None);
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
        let first = self.pieces.len();
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
            let next = (i < rest.len()).then_some(self.pieces.len() + 1);
            self.pieces.push(Piece { entries: body, next, block: 0, offset: 0 });
        }
        (inline, Some(first))
    }

    /// Records of one directory ("." and ".." first, then the children in identifier order).
    fn dir_records(&mut self, d: usize, joliet: bool) -> Vec<Record> {
        let mut kids = self.nodes[d].children().to_vec();
        self.sort_records(&mut kids, joliet);
        let parent = self.nodes[d].parent;
        let mut recs = Vec::new();
        let mut push = |plan: &mut Self, id: Vec<u8>, flags: u8, n: usize, target: Target, rr: Option<Vec<Vec<u8>>>| {
            let (su, ce) = match rr {
                Some(e) => {
                    let room = f::DIR_RECORD_MAX - 1 - f::dir_record_len(id.len(), 0);
                    plan.split_su(e, room)
                }
                None => (Vec::new(), None),
            };
            recs.push(Record { id, flags, date: plan.nodes[n].mtime, target, su, ce, offset: 0 });
        };
        let rr = |plan: &Self, n: usize, name: bool, root_dot: bool| (!joliet).then(|| plan.rr_entries(n, name, root_dot));
        let e = rr(self, d, false, d == 0);
        push(self, vec![0], f::FLAG_DIR, d, Target::Dir(d), e);
        let e = rr(self, parent, false, false);
        push(self, vec![1], f::FLAG_DIR, parent, Target::Dir(parent), e);
        for c in kids {
            let id = if joliet { self.nodes[c].joliet_id.clone() } else { self.nodes[c].iso_id.clone() };
            match self.nodes[c].kind {
                NodeKind::Dir { .. } => {
                    let e = rr(self, c, true, false);
                    push(self, id, f::FLAG_DIR, c, Target::Dir(c), e);
                }
                NodeKind::File { data } => {
                    let extents = f::file_extents(0, self.data[data].len);
                    for (k, (_, _, flags)) in extents.into_iter().enumerate() {
                        let e = rr(self, c, true, false);
                        push(self, id.clone(), flags, c, Target::Data(data, k), e);
                    }
                }
                _ => {
                    let e = rr(self, c, true, false);
                    push(self, id, 0, c, Target::None, e);
                }
            }
        }
        recs
    }

    /// Assign every block.
    fn layout(&mut self, tail_reserve: u64) -> Result<()> {
        let iso_order = self.dir_order(false);
        if iso_order.len() > u16::MAX as usize {
            return Err(err(format!(
                "{} directories: ISO 9660 path tables number directories with 16 bits (at most {})",
                iso_order.len(),
                u16::MAX
            )));
        }
        let joliet_order = self.dir_order(true);
        for (joliet, order) in [(false, &iso_order), (true, &joliet_order)] {
            for &d in order.iter() {
                let first_piece = self.pieces.len();
                let mut records = self.dir_records(d, joliet);
                let mut pos = 0u32;
                for r in records.iter_mut() {
                    let len = f::dir_record_len(r.id.len(), r.su.len() + r.ce.map_or(0, |_| f::CE_LEN)).next_multiple_of(2) as u32;
                    if pos % BLOCK as u32 + len > BLOCK as u32 {
                        pos = pos.next_multiple_of(BLOCK as u32);
                    }
                    r.offset = pos;
                    pos += len;
                }
                // this directory's continuation pieces: packed, never crossing a block
                let mut ce = 0u32;
                for p in self.pieces[first_piece..].iter_mut() {
                    let len = (p.entries.len() + p.next.map_or(0, |_| f::CE_LEN)) as u32;
                    if ce % BLOCK as u32 + len > BLOCK as u32 {
                        ce = ce.next_multiple_of(BLOCK as u32);
                    }
                    p.block = ce / BLOCK as u32;
                    p.offset = ce % BLOCK as u32;
                    ce += len;
                }
                let plan = DirPlan {
                    node: d,
                    records,
                    blocks: pos.div_ceil(BLOCK as u32).max(1),
                    lba: 0,
                    pieces: first_piece..self.pieces.len(),
                    ce_blocks: ce.div_ceil(BLOCK as u32),
                };
                if joliet { self.joliet_dirs.push(plan) } else { self.iso_dirs.push(plan) }
            }
        }

        // volume descriptors
        let mut lba = f::SYSTEM_AREA_BLOCKS;
        self.vd_blocks = 1 + (!self.boot.is_empty()) as u32 + 1 + 1;
        lba += self.vd_blocks;
        // path tables: ISO L, ISO M, Joliet L, Joliet M
        let iso_pt: u32 = iso_order.iter().map(|&d| f::path_record_len(self.pt_id(d, false).len()) as u32).sum();
        let jol_pt: u32 = joliet_order.iter().map(|&d| f::path_record_len(self.pt_id(d, true).len()) as u32).sum();
        for (i, size) in [iso_pt, iso_pt, jol_pt, jol_pt].into_iter().enumerate() {
            self.ptables[i].0 = lba;
            lba += size.div_ceil(BLOCK as u32);
        }
        for d in self.iso_dirs.iter_mut().chain(self.joliet_dirs.iter_mut()) {
            d.lba = lba;
            lba += d.blocks;
            for p in &mut self.pieces[d.pieces.clone()] {
                p.block += lba;
            }
            lba += d.ce_blocks;
        }
        if self.catalog_node.is_some() {
            self.catalog_lba = lba;
            lba += 1;
        }
        self.data_lba = lba;
        let mut blocks = lba as u64;
        for d in self.data.iter_mut() {
            if d.source == Source::Catalog {
                d.lba = self.catalog_lba;
            } else if d.len > 0 {
                d.lba = u32::try_from(blocks).map_err(|_| err("the image exceeds ISO 9660's 2^32 blocks (8 TiB)".into()))?;
                blocks += d.len.div_ceil(BLOCK);
            }
        }
        blocks += tail_reserve.div_ceil(BLOCK);
        self.blocks = u32::try_from(blocks).map_err(|_| err("the image exceeds ISO 9660's 2^32 blocks (8 TiB)".into()))?;
        // path tables now that directories have blocks
        let iso_num: HashMap<usize, u16> = iso_order.iter().enumerate().map(|(i, d)| (*d, i as u16 + 1)).collect();
        let jol_num: HashMap<usize, u16> = joliet_order.iter().enumerate().map(|(i, d)| (*d, i as u16 + 1)).collect();
        let iso_lba: HashMap<usize, u32> = self.iso_dirs.iter().map(|d| (d.node, d.lba)).collect();
        let jol_lba: HashMap<usize, u32> = self.joliet_dirs.iter().map(|d| (d.node, d.lba)).collect();
        for (i, (order, num, lbas, joliet, le)) in [
            (&iso_order, &iso_num, &iso_lba, false, true),
            (&iso_order, &iso_num, &iso_lba, false, false),
            (&joliet_order, &jol_num, &jol_lba, true, true),
            (&joliet_order, &jol_num, &jol_lba, true, false),
        ]
        .into_iter()
        .enumerate()
        {
            let mut t = Vec::new();
            for &d in order.iter() {
                t.extend(f::path_record(&self.pt_id(d, joliet), lbas[&d], num[&self.nodes[d].parent], le));
            }
            self.ptables[i].1 = t;
        }
        Ok(())
    }

    fn pt_id(&self, d: usize, joliet: bool) -> Vec<u8> {
        match (d, joliet) {
            (0, _) => vec![0],
            (_, true) => self.nodes[d].joliet_id.clone(),
            (_, false) => self.nodes[d].iso_id.clone(),
        }
    }

    /// Directory node → (first block, byte length) of its ISO or Joliet extent.
    fn dir_extents(&self, joliet: bool) -> HashMap<usize, (u32, u32)> {
        let dirs = if joliet { &self.joliet_dirs } else { &self.iso_dirs };
        dirs.iter().map(|d| (d.node, (d.lba, d.blocks * BLOCK as u32))).collect()
    }

    /// The bytes of one directory extent.
    fn dir_bytes(&self, plan: &DirPlan, joliet: bool, lbas: &HashMap<usize, (u32, u32)>) -> Vec<u8> {
        let mut out = vec![0u8; (plan.blocks as u64 * BLOCK) as usize];
        for r in &plan.records {
            let (extent, len) = match r.target {
                Target::Dir(n) => lbas[&n],
                Target::Data(d, k) => {
                    let x = f::file_extents(self.data[d].lba, self.data[d].len)[k];
                    (x.0, x.1)
                }
                Target::None => (0, 0),
            };
            let mut su = r.su.clone();
            if let Some(p) = r.ce {
                su.extend(self.ce_entry(p));
            }
            if (f::dir_record_len(r.id.len(), su.len())) % 2 == 1 {
                su.push(0);
            }
            let bytes = f::dir_record(extent, len, f::date7(r.date), r.flags, &r.id, &su);
            out[r.offset as usize..r.offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        debug_assert!(joliet || plan.records.iter().all(|r| r.id.len() <= 37));
        out
    }

    fn ce_entry(&self, p: usize) -> Vec<u8> {
        let piece = &self.pieces[p];
        let len = piece.entries.len() + piece.next.map_or(0, |_| f::CE_LEN);
        f::ce(piece.block, piece.offset, len as u32)
    }

    /// Serialize everything, then fill the file contents.
    pub(super) fn write(&self, out: &File) -> Result<IsoLayout> {
        let werr = |e: std::io::Error| err(format!("writing ISO output: {e}"));
        let total = self.blocks as u64 * BLOCK;
        out.set_len(total).map_err(werr)?;
        let mut meta: Vec<u8> = Vec::with_capacity(((self.data_lba - f::SYSTEM_AREA_BLOCKS) as u64 * BLOCK) as usize);
        let at = |meta: &Vec<u8>| f::SYSTEM_AREA_BLOCKS as u64 + meta.len() as u64 / BLOCK;

        let iso_lbas = self.dir_extents(false);
        let jol_lbas = self.dir_extents(true);
        let root_rec = |joliet: bool| {
            let (l, n) = if joliet { jol_lbas[&0] } else { iso_lbas[&0] };
            f::dir_record(l, n, f::date7(self.sde), f::FLAG_DIR, &[0], &[])
        };
        let vd = |kind, joliet: bool| {
            let root = root_rec(joliet);
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
        meta.extend_from_slice(&vd(f::VD_PRIMARY, false));
        if !self.boot.is_empty() {
            meta.extend_from_slice(&f::boot_record(self.catalog_lba));
        }
        meta.extend_from_slice(&vd(f::VD_SUPPLEMENTARY, true));
        meta.extend_from_slice(&f::terminator());
        for (lba, t) in &self.ptables {
            debug_assert_eq!(at(&meta), *lba as u64);
            meta.extend_from_slice(t);
            meta.resize(meta.len().next_multiple_of(BLOCK as usize), 0);
        }
        for (joliet, dirs, lbas) in [(false, &self.iso_dirs, &iso_lbas), (true, &self.joliet_dirs, &jol_lbas)] {
            for d in dirs {
                debug_assert_eq!(at(&meta), d.lba as u64);
                meta.extend(self.dir_bytes(d, joliet, lbas));
                for i in d.pieces.clone() {
                    let p = &self.pieces[i];
                    let pos = ((p.block - f::SYSTEM_AREA_BLOCKS) as u64 * BLOCK) as usize + p.offset as usize;
                    debug_assert!(pos >= meta.len());
                    meta.resize(pos, 0);
                    meta.extend_from_slice(&p.entries);
                    if p.next.is_some() {
                        meta.extend(self.ce_entry(i + 1));
                    }
                }
                meta.resize(meta.len().next_multiple_of(BLOCK as usize), 0);
                debug_assert_eq!(at(&meta), (d.lba + d.blocks + d.ce_blocks) as u64);
            }
        }
        if self.catalog_node.is_some() {
            debug_assert_eq!(at(&meta), self.catalog_lba as u64);
            let entries: Vec<f::CatalogEntry> = self
                .boot
                .iter()
                .map(|&(platform, d)| f::CatalogEntry { platform, sectors: self.load_sectors(platform, d), lba: self.data[d].lba })
                .collect();
            meta.extend_from_slice(&f::boot_catalog(&entries));
        }
        debug_assert_eq!(at(&meta), self.data_lba as u64);
        out.write_all_at(&meta, f::SYSTEM_AREA_BLOCKS as u64 * BLOCK).map_err(werr)?;
        drop(meta);

        // file contents
        let mut buf = vec![0u8; 1 << 20];
        for d in &self.data {
            let dst = d.lba as u64 * BLOCK;
            match &d.source {
                Source::Catalog => {}
                _ if d.len == 0 => {}
                Source::Tree(c) => copy_at(&mut self.tree.open(c), out, dst, d.len, &mut buf).map_err(werr)?,
                Source::Host(p) => {
                    let mut r = File::open(p).at(p)?;
                    copy_at(&mut r, out, dst, d.len, &mut buf).map_err(|e| err(format!("{}: {e}", p.display())))?;
                }
            }
        }
        drop(buf);
        // boot info tables, now that the boot files are in place
        for &(platform, d) in &self.boot {
            if platform == f::PLATFORM_X86 {
                // the sum covers the file from byte 64, read back in 4-byte aligned chunks
                let (dst, len) = (self.data[d].lba as u64 * BLOCK, self.data[d].len);
                let mut sum = 0u32;
                let mut chunk = vec![0u8; 1 << 20];
                let mut at = 64u64;
                while at < len {
                    let n = (len - at).min(chunk.len() as u64) as usize;
                    out.read_exact_at(&mut chunk[..n], dst + at).map_err(werr)?;
                    sum = word_sum(sum, &chunk[..n]);
                    at += n as u64;
                }
                let table = boot_info_table(f::SYSTEM_AREA_BLOCKS, self.data[d].lba, len as u32, sum);
                out.write_all_at(&table, dst + f::BOOT_INFO_OFFSET as u64).map_err(werr)?;
            }
        }
        let mut files = BTreeMap::new();
        for (p, n) in &self.extra_paths {
            if let NodeKind::File { data: d } = self.nodes[*n].kind {
                files.insert(p.clone(), (self.data[d].lba as u64, self.data[d].len));
            }
        }
        Ok(IsoLayout { size: total, files })
    }

    /// Sectors of 512 bytes the firmware loads for an entry: 4 for BIOS (isolinux loads the
    /// rest itself); the whole FAT image for EFI, as xorriso 1.5 sets it, and 0 when that
    /// does not fit 16 bits (xorriso's value too: UEFI firmware reads the image's own size).
    fn load_sectors(&self, platform: u8, d: usize) -> u16 {
        if platform == f::PLATFORM_X86 {
            f::BIOS_LOAD_SECTORS
        } else {
            u16::try_from(self.data[d].len.div_ceil(512)).unwrap_or(0)
        }
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

/// The first candidate not used yet in the directory (compared case-sensitively as
/// recorded; ISO names are already uppercase).
fn unique(used: &BTreeSet<Vec<u16>>, name: &[u8], dir: bool, cand: fn(&[u8], bool, usize) -> Vec<u16>) -> Vec<u16> {
    (0..).map(|n| cand(name, dir, n)).find(|c| !used.contains(c)).expect("a free name")
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
    let split = |x: &[u8]| {
        let x = x.strip_suffix(b";1").unwrap_or(x);
        match x.iter().position(|c| *c == b'.') {
            Some(i) => (x[..i].to_vec(), x[i + 1..].to_vec()),
            None => (x.to_vec(), Vec::new()),
        }
    };
    let padded = |x: &[u8], y: &[u8]| {
        let n = x.len().max(y.len());
        let p = |v: &[u8]| {
            let mut v = v.to_vec();
            v.resize(n, b' ');
            v
        };
        p(x).cmp(&p(y))
    };
    let (an, ae) = split(a);
    let (bn, be) = split(b);
    padded(&an, &bn).then_with(|| padded(&ae, &be))
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

    #[test]
    fn iso_names_are_d_characters_and_unique() {
        let mut used = BTreeSet::new();
        let mut out = Vec::new();
        for n in ["README.md", "readme.md", "a-b.tar.gz", ".bashrc", "x".repeat(100).as_str(), "noext"] {
            let c = unique(&used, n.as_bytes(), false, iso_candidate);
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
        assert_eq!(d.len, 9 << 30);
        for (joliet, dirs) in [(false, &plan.iso_dirs), (true, &plan.joliet_dirs)] {
            let recs: Vec<&Record> = dirs[0].records.iter().filter(|r| matches!(r.target, Target::Data(..))).collect();
            assert_eq!(recs.len(), 3, "joliet {joliet}");
            assert_eq!(recs.iter().map(|r| r.flags).collect::<Vec<_>>(), [f::FLAG_MULTI_EXTENT, f::FLAG_MULTI_EXTENT, 0]);
            assert!(recs.iter().all(|r| r.id == recs[0].id));
            // the records follow each other in the directory, and so do the extents
            assert!(recs.windows(2).all(|w| w[0].offset < w[1].offset));
        }
        let x = f::file_extents(d.lba, d.len);
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
