//! Packages for other distributions: `.deb`, `.rpm`, Arch `.pkg.tar.zst` and Alpine `.apk`.
//! This module owns what the four share: the payload (which tree entries go in, refused
//! when a target cannot hold them), per-file digests, resolved metadata, and the tar writer
//! three of them use. Each format's container is in its own module.
//!
//! Rules every format follows (docs/packages.md):
//! - owners are root (0:0), every timestamp is SOURCE_DATE_EPOCH, permission bits (with
//!   setuid/setgid/sticky) come from the layers; extended attributes are refused (no format
//!   here carries them the same way);
//! - directories of the selection are in the package with their layer mode (dpkg, pacman and
//!   apk expect them in the archive); the `.rpm` leaves out the base system's directories
//!   ([`SYSTEM_DIRS`]), which Fedora's `filesystem` package owns;
//! - refused, naming the path: device nodes (and FIFOs for apk), anything at or below the
//!   merged-/usr aliases `/bin`, `/sbin`, `/lib*` (symlinks into `/usr` on Debian 12, Fedora,
//!   Arch), and a non-directory where the base system has a directory (`/usr/bin`, `/etc`...).

pub mod apk;
pub mod arch;
pub mod deb;
pub mod rpm;

use crate::error::{Error, Result};
use crate::spec::{PackageFormat, PackageSpec};
use crate::tarfmt::{self, Head, TarKind};
use crate::tree::{path::show, ContentRef, Kind, Tree};
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};

/// Top-level names that are symlinks into `/usr` on merged-/usr systems (Debian 12, Fedora,
/// Arch). A package owning anything there breaks (or is silently aliased on) those systems.
pub const USR_ALIASES: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Directories of the base system. A package may put files below them but never replace them
/// with something else; the `.rpm` does not claim them (the target's `filesystem` package
/// owns them, with its own modes).
pub const SYSTEM_DIRS: &[&str] = &[
    "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt", "proc", "root", "run",
    "sbin", "srv", "sys", "tmp", "usr", "usr/bin", "usr/include", "usr/lib", "usr/lib32", "usr/lib64", "usr/libexec",
    "usr/local", "usr/sbin", "usr/share", "usr/share/doc", "usr/share/info", "usr/share/licenses", "usr/share/man",
    "usr/share/man/man1", "usr/share/man/man2", "usr/share/man/man3", "usr/share/man/man4", "usr/share/man/man5",
    "usr/share/man/man6", "usr/share/man/man7", "usr/share/man/man8", "usr/src", "var", "var/cache", "var/lib",
    "var/log", "var/spool", "var/tmp",
];

/// What one payload entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind<'t> {
    Dir,
    /// A regular file; paths sharing `inode` are hardlinks of one file.
    File { content: ContentRef, inode: u64 },
    Symlink(&'t [u8]),
    Fifo,
}

/// One entry of a package: path relative to the root (no leading `/`), kind, permission bits.
#[derive(Debug, Clone)]
pub struct Item<'t> {
    pub path: &'t [u8],
    pub kind: ItemKind<'t>,
    pub mode: u32,
}

/// Digests of one file's content (each format wants another).
#[derive(Debug, Clone, Copy)]
pub struct Sums {
    pub md5: [u8; 16],
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
}

/// The entries of one package, in the tree's bytewise order, with every file hashed once.
pub struct Payload<'t> {
    pub tree: &'t Tree,
    pub items: Vec<Item<'t>>,
    sums: HashMap<u64, Sums>,
    links: HashMap<u64, u32>,
}

fn under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

impl<'t> Payload<'t> {
    /// Take the entries of `tree` (only those at or below one of `paths`, plus their parent
    /// directories, when given), refusing what `format` cannot hold.
    pub fn collect(tree: &'t Tree, paths: Option<&[Vec<u8>]>, format: PackageFormat) -> Result<Self> {
        if let Some(ps) = paths {
            for p in ps {
                if !p.is_empty() && tree.get(p).is_none() {
                    return Err(Error::other(format!("{}: path {} is not in the selected layers", format.key(), show(p))));
                }
            }
        }
        let refuse = |p: &[u8], why: String| Error::other(format!("cannot make a {} package: {}: {why}", format.key(), show(p)));
        let mut items = Vec::new();
        for (path, node) in tree.walk() {
            if path.is_empty() {
                continue;
            }
            if let Some(ps) = paths {
                let keep = ps.iter().any(|p| under(path, p) || (matches!(node.kind, Kind::Dir) && under(p, path)));
                if !keep {
                    continue;
                }
            }
            let top = path.split(|b| *b == b'/').next().unwrap_or(b"");
            if USR_ALIASES.iter().any(|a| a.as_bytes() == top) {
                // Name the first file below an alias directory, which is what has to move.
                let path = match node.kind {
                    Kind::Dir => tree.walk().find(|(p, n)| under(p, path) && !matches!(n.kind, Kind::Dir)).map(|(p, _)| p).unwrap_or(path),
                    _ => path,
                };
                let usr = format!("/usr/{}", show(path).trim_start_matches('/'));
                return Err(refuse(
                    path,
                    format!(
                        "/{} is a symlink into /usr on merged-/usr systems (Debian 12, Fedora, Arch); a package must not own it or anything below it (install to {usr} instead, or leave it out with `paths`)",
                        String::from_utf8_lossy(top)
                    ),
                ));
            }
            let is_system_dir = SYSTEM_DIRS.iter().any(|d| d.as_bytes() == path);
            if is_system_dir && !matches!(node.kind, Kind::Dir) {
                return Err(refuse(path, "the base system has a directory here; a package may not replace it with a file or symlink".into()));
            }
            if path.contains(&b'\n') || path.contains(&b'\r') {
                return Err(refuse(path, "a line break in a path cannot be listed in package metadata".into()));
            }
            if !node.meta.xattrs.is_empty() {
                let keys: Vec<&str> = node.meta.xattrs.keys().map(|k| k.as_str()).collect();
                return Err(refuse(path, format!("extended attributes ({}) cannot be carried by the package", keys.join(", "))));
            }
            let kind = match &node.kind {
                Kind::Dir => ItemKind::Dir,
                Kind::File { content, inode } => {
                    if format == PackageFormat::Rpm && content.len >= u32::MAX as u64 {
                        return Err(refuse(path, "files of 4 GiB or more are not supported in .rpm output".into()));
                    }
                    ItemKind::File { content: *content, inode: *inode }
                }
                Kind::Symlink { target } => ItemKind::Symlink(target),
                Kind::Char { .. } | Kind::Block { .. } => {
                    return Err(refuse(path, "device nodes cannot be installed by a package (create them at run time instead)".into()));
                }
                Kind::Fifo if format == PackageFormat::Apk => {
                    return Err(refuse(path, "apk packages cannot hold FIFOs".into()));
                }
                Kind::Fifo => ItemKind::Fifo,
            };
            items.push(Item { path, kind, mode: node.meta.mode & 0o7777 });
        }
        if !items.iter().any(|i| !matches!(i.kind, ItemKind::Dir)) {
            return Err(Error::other(format!(
                "{}: the selection holds no files (check `layers` and `paths`: by default a package takes every [[layer]] but the first)",
                format.key()
            )));
        }
        let mut sums = HashMap::new();
        let mut links = HashMap::new();
        let mut buf = vec![0u8; 1 << 16];
        for it in &items {
            if let ItemKind::File { content, inode } = it.kind {
                *links.entry(inode).or_insert(0u32) += 1;
                if sums.contains_key(&inode) {
                    continue;
                }
                let mut r = tree.open(&content);
                let (mut m, mut s1, mut s2) = (md5::Md5::new(), sha1::Sha1::new(), sha2::Sha256::new());
                let mut left = content.len;
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = r.read(&mut buf[..want]).map_err(|e| Error::other(format!("{}: {e}", show(it.path))))?;
                    if n == 0 {
                        return Err(Error::other(format!("{}: file content shorter than recorded", show(it.path))));
                    }
                    m.update(&buf[..n]);
                    s1.update(&buf[..n]);
                    s2.update(&buf[..n]);
                    left -= n as u64;
                }
                sums.insert(inode, Sums { md5: m.finalize().into(), sha1: s1.finalize().into(), sha256: s2.finalize().into() });
            }
        }
        Ok(Payload { tree, items, sums, links })
    }

    /// Digests of the file with `inode`.
    pub fn sums(&self, inode: u64) -> &Sums {
        &self.sums[&inode]
    }

    /// How many paths of this payload share `inode`.
    pub fn links(&self, inode: u64) -> u32 {
        self.links.get(&inode).copied().unwrap_or(1)
    }

    /// Bytes the files take once installed (each inode once).
    pub fn installed_size(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.items
            .iter()
            .filter_map(|i| match i.kind {
                ItemKind::File { content, inode } if seen.insert(inode) => Some(content.len),
                _ => None,
            })
            .sum()
    }

    /// Copy one file's bytes into `w`.
    pub fn copy(&self, content: &ContentRef, w: &mut impl Write) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        crate::fsutil::copy_exact(&mut self.tree.open(content), w, content.len, &mut buf)
    }
}

/// Extra PAX records for one member: `(key, value)` pairs.
pub type PaxFn = dyn Fn(&Item, Option<&Sums>) -> Vec<(&'static str, Vec<u8>)>;

/// How [`write_tar`] names and annotates members.
pub struct TarStyle<'a> {
    /// Put in front of every path (`./` for dpkg).
    pub prefix: &'a [u8],
    /// Also write the root directory (as `prefix` itself).
    pub root: bool,
    /// Write the two end-of-archive blocks (apk's control part is written without them).
    pub end: bool,
    /// Extra PAX records for a member (Alpine's per-file SHA1).
    pub pax: &'a PaxFn,
}

/// A tar member made in memory (control files, `.PKGINFO`...), root-owned, mode 0644.
pub fn tar_file(w: &mut impl Write, name: &[u8], data: &[u8], sde: u64) -> io::Result<()> {
    let x = BTreeMap::new();
    let h = Head { path: name, kind: TarKind::File, mode: 0o644, uid: 0, gid: 0, mtime: sde, size: data.len() as u64, link: b"", dev: (0, 0), xattrs: &x };
    tarfmt::write_header(w, &h)?;
    w.write_all(data)?;
    tarfmt::pad(w, data.len() as u64)
}

/// Write the payload as tar members in order: root-owned, mtime `sde`, hardlinks after
/// their first path (which carries the data).
pub fn write_tar(p: &Payload, sde: u64, style: &TarStyle, w: &mut impl Write) -> io::Result<()> {
    let x = BTreeMap::new();
    let mut first: HashMap<u64, Vec<u8>> = HashMap::new();
    if style.root {
        let h = Head { path: style.prefix, kind: TarKind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: sde, size: 0, link: b"", dev: (0, 0), xattrs: &x };
        tarfmt::write_header(w, &h)?;
    }
    for it in &p.items {
        let name = [style.prefix, it.path].concat();
        let mut h = Head { path: &name, kind: TarKind::Dir, mode: it.mode, uid: 0, gid: 0, mtime: sde, size: 0, link: b"", dev: (0, 0), xattrs: &x };
        let mut data = None;
        let mut sums = None;
        let link_name;
        match &it.kind {
            ItemKind::Dir => {}
            ItemKind::Symlink(t) => {
                h.kind = TarKind::Symlink;
                h.link = t;
            }
            ItemKind::Fifo => h.kind = TarKind::Fifo,
            ItemKind::File { content, inode } => {
                sums = Some(p.sums(*inode));
                if let Some(f) = first.get(inode) {
                    link_name = f.clone();
                    h.kind = TarKind::Hardlink;
                    h.link = &link_name;
                } else {
                    first.insert(*inode, name.clone());
                    h.kind = TarKind::File;
                    h.size = content.len;
                    data = Some(*content);
                }
            }
        }
        let extra = (style.pax)(it, sums);
        let extra: Vec<(&str, &[u8])> = extra.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        tarfmt::write_header_with(w, &h, &extra)?;
        if let Some(c) = data {
            p.copy(&c, w)?;
            tarfmt::pad(w, c.len)?;
        }
    }
    if style.end {
        tarfmt::finish(w)?;
    }
    Ok(())
}

/// Package metadata with every default filled in for one format.
#[derive(Debug, Clone)]
pub struct Meta {
    pub name: String,
    pub version: String,
    pub release: u32,
    pub arch: String,
    pub summary: String,
    /// The long description, ending with the source images and their digests.
    pub description: String,
    pub maintainer: Option<String>,
    pub license: Option<String>,
    pub url: Option<String>,
    pub depends: Vec<String>,
    pub conflicts: Vec<String>,
    pub provides: Vec<String>,
    pub replaces: Vec<String>,
    /// `(reference, digest)` of every image the package content came from.
    pub sources: Vec<(String, String)>,
    pub sde: u64,
}

/// The architecture name `format` uses for an OCI platform architecture.
pub fn arch_for(format: PackageFormat, oci_arch: &str) -> Option<&'static str> {
    use PackageFormat::*;
    Some(match (oci_arch, format) {
        ("amd64", Deb) => "amd64",
        ("amd64", _) => "x86_64",
        ("arm64", Deb) => "arm64",
        ("arm64", _) => "aarch64",
        ("386", Deb) => "i386",
        ("386", Apk) => "x86",
        ("386", _) => "i686",
        ("riscv64", _) => "riscv64",
        ("s390x", _) => "s390x",
        ("ppc64le", Deb) => "ppc64el",
        ("ppc64le", _) => "ppc64le",
        _ => return None,
    })
}

impl Meta {
    /// Fill in `spec`'s defaults: the architecture from the platform, the description with
    /// the source images appended.
    pub fn resolve(spec: &PackageSpec, oci_arch: &str, sources: Vec<(String, String)>, sde: u64) -> Result<Meta> {
        let arch = match &spec.architecture {
            Some(a) => a.clone(),
            None => arch_for(spec.format, oci_arch).map(str::to_string).ok_or_else(|| {
                spec.at.error(format!("no {} architecture name known for platform architecture {oci_arch:?}: set `architecture`", spec.format.key()))
            })?,
        };
        let mut description = spec.description.clone().unwrap_or_default().trim_end().to_string();
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str("Built by stagebox from:");
        for (r, d) in &sources {
            description.push_str(&format!("\n{r} {d}"));
        }
        Ok(Meta {
            name: spec.name.clone(),
            version: spec.version.clone(),
            release: spec.release,
            arch,
            summary: spec.summary.clone(),
            description,
            maintainer: spec.maintainer.clone(),
            license: spec.license.clone(),
            url: spec.url.clone(),
            depends: spec.depends.clone(),
            conflicts: spec.conflicts.clone(),
            provides: spec.provides.clone(),
            replaces: spec.replaces.clone(),
            sources,
            sde,
        })
    }

    /// The output file name (DESIGN §6, with the Debian revision in the `.deb` name).
    pub fn file_name(&self, format: PackageFormat) -> String {
        let (n, v, r, a) = (&self.name, &self.version, self.release, &self.arch);
        match format {
            PackageFormat::Deb => format!("{n}_{v}-{r}_{a}.deb"),
            PackageFormat::Rpm => format!("{n}-{v}-{r}.{a}.rpm"),
            PackageFormat::Arch => format!("{n}-{v}-{r}-{a}.pkg.tar.zst"),
            PackageFormat::Apk => format!("{n}-{v}-r{r}.apk"),
        }
    }
}

/// True for a regular file that is configuration (under `/etc`): conffiles for dpkg,
/// `%config(noreplace)` for rpm, `backup` for pacman.
pub fn is_config(it: &Item) -> bool {
    matches!(it.kind, ItemKind::File { .. }) && it.path.starts_with(b"etc/")
}

/// True for documentation paths (rpm's `%doc`).
pub fn is_doc(it: &Item) -> bool {
    it.path.starts_with(b"usr/share/doc/") || it.path.starts_with(b"usr/share/man/") || it.path.starts_with(b"usr/share/info/")
}

/// Hex of a byte string.
pub fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_is_component_wise() {
        assert!(under(b"usr/bin/curl", b"usr/bin"));
        assert!(under(b"usr/bin", b"usr/bin"));
        assert!(!under(b"usr/binx", b"usr/bin"));
        assert!(under(b"anything", b""));
    }

    #[test]
    fn file_names_follow_each_convention() {
        let m = Meta {
            name: "curl".into(),
            version: "8.9".into(),
            release: 2,
            arch: "x86_64".into(),
            summary: String::new(),
            description: String::new(),
            maintainer: None,
            license: None,
            url: None,
            depends: vec![],
            conflicts: vec![],
            provides: vec![],
            replaces: vec![],
            sources: vec![],
            sde: 1,
        };
        assert_eq!(m.file_name(PackageFormat::Rpm), "curl-8.9-2.x86_64.rpm");
        assert_eq!(m.file_name(PackageFormat::Arch), "curl-8.9-2-x86_64.pkg.tar.zst");
        assert_eq!(m.file_name(PackageFormat::Apk), "curl-8.9-r2.apk");
        assert_eq!(Meta { arch: "amd64".into(), ..m }.file_name(PackageFormat::Deb), "curl_8.9-2_amd64.deb");
    }
}
