//! Kernel modules for the boot: the modules a box lists in `[kernel] load_modules` (or all
//! of them), taken out of the kernel image with their dependencies, checked against the
//! kernel, and written as a newc archive (`lib/modules/RELEASE/...` plus `modules.dep`) for
//! the initramfs or a disk's early initrd; and that early initrd itself when the disk names
//! none: a static busybox and an `/init` that loads the modules, finds the root partition
//! by the `root=PARTUUID=` of the command line and switches to it.
//!
//! Where the modules are: the kernel definition's `modules` directory (the release
//! directory itself, or the one directory under it), else the one directory under
//! `/usr/lib/modules/` or `/lib/modules/`. Dependencies come from that directory's
//! `modules.dep` when the image has one, else from each module's own `.modinfo` section
//! (`depends=`), read with a small bounds-checked ELF64 section reader (Debian's kernel
//! packages ship no `modules.dep`: `depmod` makes it at install time). Each module's
//! `vermagic=` must start with the kernel's release, read from the bzImage's setup header
//! (`kernel_version`), else from the directory name. Compressed modules (`.ko.xz`,
//! `.ko.zst`, `.ko.gz`) are stored uncompressed as `.ko`, so any busybox `insmod`/`modprobe`
//! and any kernel load them.
//!
//! `modules.dep` is written as `depmod` writes it: each module's path, then every module it
//! needs (transitively), the one to load first last; busybox's `modprobe` reads that text
//! file and never `modules.dep.bin` (its `modutils/modprobe.c` opens only `modules.dep`), so
//! no binary index is written.

use crate::boot::kernel::Kernel;
use crate::emit::cpio::format::{self, Header};
use crate::error::{Error, Result};
use crate::spec::{Location, ModuleSelection};
use crate::tree::{Kind, Node, Tree};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// One module, as it goes into the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its name with `-` as `_` (what `lsmod` shows).
    pub name: String,
    /// Path under the release directory, ending in `.ko`.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The modules a box loads, in load order (every module after the modules it needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modules {
    /// The kernel release (`uname -r`): the directory under `lib/modules/`.
    pub release: String,
    pub modules: Vec<Module>,
    /// Per module (by name): the names of every module it needs, transitively.
    pub needs: BTreeMap<String, BTreeSet<String>>,
    /// The names the box listed, in its order, to load at boot (empty for `"all"`).
    pub load: Vec<String>,
}

/// `-` and `_` are the same in module names; `_` is what the kernel shows.
fn normal(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file name, when it is a module (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
fn module_name(file: &str) -> Option<String> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().find_map(|ext| file.strip_suffix(ext)).filter(|n| !n.is_empty()).map(normal)
}

/// The release directory in the kernel image (path without a leading `/`).
fn release_dir(k: &Kernel) -> Result<String> {
    let tree = &k.tree;
    let is_dir = |p: &str| matches!(tree.lookup(p.as_bytes()), Ok((_, Node { kind: Kind::Dir, .. })));
    let subdirs = |p: &str| -> Vec<String> {
        let prefix = format!("{p}/");
        tree.walk()
            .filter_map(|(path, node)| {
                let rest = std::str::from_utf8(path).ok()?.strip_prefix(&prefix)?;
                (!rest.contains('/') && node.kind == Kind::Dir).then(|| format!("{prefix}{rest}"))
            })
            .collect()
    };
    let image = &k.image.reference.text;
    let candidates: Vec<String> = match &k.spec.def.modules {
        Some(m) => {
            let m = m.trim_matches('/').to_string();
            if !is_dir(&m) {
                return Err(k.spec.at.error(format!("kernel {:?}: modules directory /{m} is not in {image}", k.spec.def.name)));
            }
            if is_dir(&format!("{m}/kernel")) || tree.lookup(format!("{m}/modules.dep").as_bytes()).is_ok() {
                return Ok(m);
            }
            vec![m]
        }
        None => ["usr/lib/modules", "lib/modules"].iter().filter(|d| is_dir(d)).map(|d| d.to_string()).collect(),
    };
    let found: BTreeSet<String> = candidates.iter().flat_map(|c| subdirs(c)).collect();
    // /lib -> usr/lib in merged images: the same directory twice.
    let mut found: Vec<String> = found.into_iter().collect();
    if found.len() == 2 && found[0].strip_prefix("lib/") == found[1].strip_prefix("usr/lib/") {
        found.truncate(1);
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(k.spec.at.error(format!(
            "load_modules: kernel {:?} has no modules directory in {image} (looked in {})",
            k.spec.def.name,
            if candidates.is_empty() { "/usr/lib/modules and /lib/modules".to_string() } else { candidates.iter().map(|c| format!("/{c}")).collect::<Vec<_>>().join(", ") }
        ))),
        many => Err(k.spec.at.error(format!(
            "load_modules: kernel {:?} has several module directories in {image} ({}): name one with `modules` in the kernel definition",
            k.spec.def.name,
            many.iter().map(|c| format!("/{c}")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The release string of an x86 bzImage: the first word of the setup header's
/// `kernel_version` text (boot protocol 2.00+: offset at 0x20e, relative to 0x200).
pub fn bzimage_release(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let at = u16::from_le_bytes([head[0x20e], head[0x20f]]) as usize + 0x200;
    let text = head.get(at..)?;
    let end = text.iter().position(|b| *b == 0 || *b == b' ')?;
    let r = std::str::from_utf8(&text[..end]).ok()?;
    (!r.is_empty()).then(|| r.to_string())
}

/// The `.modinfo` section of an ELF64 little-endian module: its `key=value` strings.
pub fn modinfo(elf: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    let u16at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize).ok_or("truncated ELF header");
    let u32at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize).ok_or("truncated section header");
    let u64at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize).ok_or("truncated section header");
    if elf.get(..6) != Some(&b"\x7fELF\x02\x01"[..]) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let (shoff, shentsize, shnum, shstrndx) = (u64at(0x28)?, u16at(0x3a)?, u16at(0x3c)?, u16at(0x3e)?);
    if shentsize < 64 || shstrndx >= shnum {
        return Err("bad section header table".into());
    }
    let section = |i: usize| -> std::result::Result<(usize, &[u8]), String> {
        let h = shoff.checked_add(i.checked_mul(shentsize).ok_or("overflow")?).ok_or("overflow")?;
        let (name, off, size) = (u32at(h)?, u64at(h + 0x18)?, u64at(h + 0x20)?);
        let data = off.checked_add(size).and_then(|end| elf.get(off..end)).ok_or("section outside the file")?;
        Ok((name, data))
    };
    let (_, names) = section(shstrndx)?;
    for i in 0..shnum {
        let (name, data) = section(i)?;
        let n = names.get(name..).and_then(|s| s.split(|b| *b == 0).next()).unwrap_or_default();
        if n == b".modinfo" {
            return Ok(data
                .split(|b| *b == 0)
                .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect());
        }
    }
    Err("no .modinfo section".into())
}

/// The bytes of a module file, uncompressed.
fn uncompressed(file: &str, raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if file.ends_with(".xz") {
        liblzma::read::XzDecoder::new(&raw[..]).read_to_end(&mut out)?;
    } else if file.ends_with(".zst") {
        zstd::stream::read::Decoder::new(&raw[..])?.read_to_end(&mut out)?;
    } else if file.ends_with(".gz") {
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out)?;
    } else {
        return Ok(raw);
    }
    Ok(out)
}

fn read_file(tree: &Tree, path: &str) -> std::io::Result<Vec<u8>> {
    let content = crate::boot::kernel::regular_file(tree, path).map_err(std::io::Error::other)?;
    let mut v = Vec::with_capacity(content.len as usize);
    tree.open(&content).read_to_end(&mut v)?;
    Ok(v)
}

/// Pick the modules `sel` names out of the kernel image, with their dependencies, and check
/// them. Errors name the module, the kernel and what is wrong.
pub fn select(k: &Kernel, sel: &ModuleSelection) -> Result<Modules> {
    let image = &k.image.reference.text;
    let dir = release_dir(k)?;
    let prefix = format!("{dir}/");
    // Every module file of the release: name -> path under the release directory.
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for (path, node) in k.tree.walk() {
        let Some(rel) = std::str::from_utf8(path).ok().and_then(|p| p.strip_prefix(&prefix)) else { continue };
        let Some(name) = module_name(rel.rsplit('/').next().unwrap_or(rel)) else { continue };
        if matches!(node.kind, Kind::File { .. }) {
            files.entry(name).or_insert_with(|| rel.to_string());
        }
    }
    let mut head = vec![0u8; (k.kernel.len as usize).min(64 << 10)];
    k.tree.open(&k.kernel).read_exact(&mut head).map_err(|e| Error::other(format!("reading the kernel of {image}: {e}")))?;
    let release = bzimage_release(&head).unwrap_or_else(|| dir.rsplit('/').next().unwrap_or_default().to_string());

    // Dependencies from modules.dep when the image has one.
    let listed: Option<BTreeMap<String, Vec<String>>> = match read_file(&k.tree, &format!("{dir}/modules.dep")) {
        Ok(text) => {
            let mut m = BTreeMap::new();
            for line in String::from_utf8_lossy(&text).lines() {
                let Some((module, deps)) = line.split_once(':') else { continue };
                let base = |p: &str| module_name(p.rsplit('/').next().unwrap_or(p));
                if let Some(name) = base(module) {
                    m.insert(name, deps.split_whitespace().filter_map(base).collect());
                }
            }
            Some(m)
        }
        Err(_) => None,
    };

    let want: Vec<String> = match sel {
        ModuleSelection::All(_) => files.keys().cloned().collect(),
        ModuleSelection::Names(n) => n.iter().map(|n| normal(n)).collect(),
    };
    // Depth-first, dependencies first: the load order.
    let mut w = Walk { k, dir: &dir, release: &release, files: &files, listed: listed.as_ref(), loaded: BTreeMap::new(), order: Vec::new(), visiting: Vec::new() };
    for name in &want {
        w.visit(name, None)?;
    }
    let Walk { loaded, order, .. } = w;
    // Transitive needs, in load order.
    let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for n in &order {
        let mut all = BTreeSet::new();
        for d in &loaded[n].1 {
            all.insert(d.clone());
            all.extend(needs.get(d).cloned().unwrap_or_default());
        }
        needs.insert(n.clone(), all);
    }
    let modules = order.iter().map(|n| loaded[n].0.clone()).collect();
    let load = match sel {
        ModuleSelection::All(_) => Vec::new(),
        ModuleSelection::Names(_) => want,
    };
    Ok(Modules { release, modules, needs, load })
}

/// The depth-first walk of [`select`]: each module read and checked once, pushed to
/// `order` after every module it needs.
struct Walk<'a> {
    k: &'a Kernel,
    dir: &'a str,
    release: &'a str,
    files: &'a BTreeMap<String, String>,
    listed: Option<&'a BTreeMap<String, Vec<String>>>,
    loaded: BTreeMap<String, (Module, Vec<String>)>,
    order: Vec<String>,
    visiting: Vec<String>,
}

impl Walk<'_> {
    fn visit(&mut self, name: &str, by: Option<&str>) -> Result<()> {
        if self.loaded.contains_key(name) {
            return Ok(());
        }
        let (at, image, dir, release) = (&self.k.spec.at, &self.k.image.reference.text, self.dir, self.release);
        if self.visiting.iter().any(|v| v == name) {
            return Err(at.error(format!("load_modules: modules of {image} depend on each other in a loop: {} -> {name}", self.visiting.join(" -> "))));
        }
        let Some(rel) = self.files.get(name) else {
            return Err(at.error(match by {
                None => format!("load_modules: module {name:?} is not in kernel image {image} (/{dir})"),
                Some(b) => format!("load_modules: module {name:?}, needed by {b:?}, is not in kernel image {image} (/{dir})"),
            }));
        };
        let fail = |e: String| at.error(format!("load_modules: /{dir}/{rel} in {image}: {e}"));
        let raw = read_file(&self.k.tree, &format!("{dir}/{rel}")).map_err(|e| fail(e.to_string()))?;
        let bytes = uncompressed(rel, raw).map_err(|e| fail(e.to_string()))?;
        let info = modinfo(&bytes).map_err(fail)?;
        let vermagic = info.iter().find(|(k, _)| k == "vermagic").map(|(_, v)| v.as_str()).unwrap_or_default();
        let built_for = vermagic.split_whitespace().next().unwrap_or_default();
        if built_for != release {
            return Err(at.error(format!(
                "load_modules: module {name:?} (/{dir}/{rel} in {image}) was built for kernel {built_for:?} (vermagic {vermagic:?}), but the kernel is {release:?}"
            )));
        }
        let deps: Vec<String> = match self.listed {
            Some(l) => l.get(name).cloned().unwrap_or_default(),
            None => info.iter().filter(|(k, _)| k == "depends").flat_map(|(_, v)| v.split(',')).filter(|d| !d.is_empty()).map(normal).collect(),
        };
        let path = match rel.find(".ko") {
            Some(i) => format!("{}.ko", &rel[..i]),
            None => rel.clone(),
        };
        self.visiting.push(name.to_string());
        for d in &deps {
            self.visit(d, Some(name))?;
        }
        self.visiting.pop();
        self.order.push(name.to_string());
        self.loaded.insert(name.to_string(), (Module { name: name.to_string(), path, bytes }, deps));
        Ok(())
    }
}

impl Modules {
    /// `modules.dep` as depmod writes it: per module (in load order) its path, then the
    /// modules it needs, the one to load first last.
    pub fn modules_dep(&self) -> String {
        let pos: BTreeMap<&str, usize> = self.modules.iter().enumerate().map(|(i, m)| (m.name.as_str(), i)).collect();
        let mut s = String::new();
        for m in &self.modules {
            let mut deps: Vec<&String> = self.needs[&m.name].iter().collect();
            deps.sort_by_key(|d| std::cmp::Reverse(pos[d.as_str()]));
            s += &format!("{}:", m.path);
            for d in deps {
                s += &format!(" {}", self.modules[pos[d.as_str()]].path);
            }
            s += "\n";
        }
        s
    }

    /// The files under `lib/modules/RELEASE/`: the modules and `modules.dep`.
    /// (The modules' bytes are borrowed, not copied.)
    fn files(&self) -> Vec<(String, Cow<'_, [u8]>, u32)> {
        let base = format!("lib/modules/{}", self.release);
        let mut v: Vec<(String, Cow<'_, [u8]>, u32)> = self.modules.iter().map(|m| (format!("{base}/{}", m.path), Cow::Borrowed(m.bytes.as_slice()), 0o644)).collect();
        v.push((format!("{base}/modules.dep"), Cow::Owned(self.modules_dep().into_bytes()), 0o644));
        v
    }

    /// The modules as a layer for the box's tree (`modules_into = ["root"]`): regular files
    /// `lib/modules/RELEASE/...` (mode 0644, owner root, mtime SOURCE_DATE_EPOCH) and no
    /// directory entries, so a tree's `lib -> usr/lib` symlink is followed and missing
    /// parents are made as the tree makes them.
    pub fn root_layer(&self, sde: u64) -> Result<crate::tree::layer::ParsedLayer> {
        use crate::tree::layer::{Entries, ParsedLayer, RawEntry, RawKind};
        use std::io::Write;
        let spill_err = |e: std::io::Error| Error::other(format!("a spill file for the kernel modules: {e}"));
        let list_err = |e: std::io::Error| Error::other(format!("the entry list of the kernel modules: {e}"));
        let mut spill = tempfile::tempfile().map_err(spill_err)?;
        let mut entries = Entries::new().map_err(list_err)?;
        let mut offset = 0u64;
        for (path, bytes, mode) in self.files() {
            spill.write_all(&bytes).map_err(spill_err)?;
            let content = crate::tree::ContentRef { spill: 0, offset, len: bytes.len() as u64 };
            offset += bytes.len() as u64;
            let meta = crate::tree::Meta { mode, uid: 0, gid: 0, mtime: sde.min(i64::MAX as u64) as i64, xattrs: Default::default() };
            entries.push(&RawEntry { path: path.into_bytes(), kind: RawKind::File(content), meta }).map_err(list_err)?;
        }
        Ok(ParsedLayer { label: format!("kernel modules {}", self.release), entries, spill: Some(spill) })
    }

    /// The modules as one newc archive (to concatenate to an initramfs or initrd).
    pub fn archive(&self, sde: u64) -> Vec<u8> {
        newc(self.files(), sde)
    }

    /// The early initrd of a disk: busybox, the modules and an `/init` that loads the listed
    /// modules and switches to the root partition named by `root=PARTUUID=`.
    pub fn early_initrd(&self, busybox: &[u8], sde: u64) -> Vec<u8> {
        let mut files = self.files();
        files.push(("bin/busybox".into(), Cow::Borrowed(busybox), 0o755));
        files.push(("init".into(), Cow::Owned(early_init(&self.load).into_bytes()), 0o755));
        newc(files, sde)
    }
}

/// The `/init` of the early initrd (busybox sh). It prints `stagebox-init:` lines on the
/// console and, on failure, exits (the kernel then panics, naming init).
fn early_init(load: &[String]) -> String {
    format!(
        r#"#!/bin/busybox sh
# Made by stagebox: load the box's kernel modules, mount the root partition named by
# root=PARTUUID= (read from each partition's GPT entry), switch to it.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{ echo "stagebox-init: $*"; exit 1; }}
for m in {load}; do modprobe "$m" || fail "modprobe $m failed"; done
root= fstype=auto init=/sbin/init
for w in $(cat /proc/cmdline); do
  case "$w" in
    root=PARTUUID=*) root=$(echo "${{w#root=PARTUUID=}}" | tr A-F a-f) ;;
    rootfstype=*) fstype=${{w#rootfstype=}} ;;
    init=*) init=${{w#init=}} ;;
  esac
done
[ -n "$root" ] || fail "no root=PARTUUID= on the command line"
dev= i=0
while [ -z "$dev" ] && [ $i -lt 30 ]; do
  for p in /sys/class/block/*; do
    [ -f "$p/partition" ] || continue
    n=$(cat "$p/partition")
    disk=$(basename "$(dirname "$(readlink -f "$p")")")
    h=$(dd if="/dev/$disk" bs=128 skip=$((7 + n)) count=1 2>/dev/null | dd bs=1 skip=16 count=16 2>/dev/null | hexdump -v -e '1/1 "%02x"')
    a=$(echo "$h" | sed -E 's/^(..)(..)(..)(..)(..)(..)(..)(..).*/\4\3\2\1-\6\5-\8\7/')
    b=$(echo "$h" | sed -E 's/^.{{16}}(.{{4}})(.{{12}})$/\1-\2/')
    [ "$a-$b" = "$root" ] && dev=/dev/${{p##*/}} && break
  done
  [ -n "$dev" ] || {{ sleep 1; i=$((i + 1)); }}
done
[ -n "$dev" ] || fail "no partition with PARTUUID $root"
mount -t "$fstype" -o ro "$dev" /newroot || fail "cannot mount $dev ($fstype)"
for d in dev proc sys; do
  if [ -d "/newroot/$d" ]; then mount -o move "/$d" "/newroot/$d"; else umount "/$d"; fi
done
exec switch_root /newroot "$init"
"#,
        load = load.join(" ")
    )
}

/// A newc archive of `files` (path, bytes, mode) and their parent directories, in path
/// order, every mtime SOURCE_DATE_EPOCH, owner root.
fn newc(files: Vec<(String, Cow<'_, [u8]>, u32)>, sde: u64) -> Vec<u8> {
    // Path → a file's bytes and mode, or `None` for a directory.
    type Member<'a> = Option<(Cow<'a, [u8]>, u32)>;
    let mut entries: BTreeMap<String, Member<'_>> = BTreeMap::new();
    for (path, bytes, mode) in files {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            entries.entry(parent.to_string()).or_insert(None);
            p = parent;
        }
        entries.insert(path, Some((bytes, mode)));
    }
    let mtime = sde.min(u32::MAX as u64) as u32;
    let mut out = Vec::new();
    for (ino, (path, e)) in entries.iter().enumerate() {
        let (mode, nlink, data): (u32, u32, &[u8]) = match e {
            None => (format::S_IFDIR | 0o755, 2, &[]),
            Some((b, m)) => (format::S_IFREG | m, 1, b),
        };
        let h = Header { ino: ino as u32 + 1, mode, nlink, mtime, filesize: data.len() as u32, ..Header::default() };
        format::write_header(&mut out, &h, path.as_bytes()).expect("writing to a Vec");
        out.extend_from_slice(data);
        out.resize(out.len() + format::pad4(data.len() as u64), 0);
    }
    format::write_trailer(&mut out).expect("writing to a Vec");
    out
}

/// A busybox to run the early initrd: `/bin/busybox` or `/usr/bin/busybox` of `tree` (the
/// image `reference`), which must be a static ELF (no `PT_INTERP`: the initrd has no libc).
pub fn busybox_of(tree: &Tree, reference: &str, at: &Location) -> Result<Vec<u8>> {
    let found = ["bin/busybox", "usr/bin/busybox"].iter().find_map(|p| read_file(tree, p).ok());
    let bytes = found.ok_or_else(|| at.error(format!("busybox image {reference} has no /bin/busybox or /usr/bin/busybox")))?;
    if bytes.get(..4) != Some(&b"\x7fELF"[..]) {
        return Err(at.error(format!("busybox in {reference} is not an ELF executable")));
    }
    if has_interp(&bytes) {
        return Err(at.error(format!("busybox in {reference} is dynamically linked: the early initrd has no libc, give an image with a static busybox")));
    }
    Ok(bytes)
}

/// Whether an ELF64 LE file has a `PT_INTERP` program header.
fn has_interp(elf: &[u8]) -> bool {
    let rd = |o: usize, n: usize| elf.get(o..o + n).map(|b| b.iter().rev().fold(0usize, |a, x| (a << 8) | *x as usize));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd(0x20, 8), rd(0x36, 2), rd(0x38, 2)) else { return false };
    (0..phnum).any(|i| rd(phoff + i * phentsize, 4) == Some(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_and_release() {
        assert_eq!(module_name("virtio-blk.ko.xz").as_deref(), Some("virtio_blk"));
        assert_eq!(module_name("squashfs.ko").as_deref(), Some("squashfs"));
        assert_eq!(module_name("README"), None);
        let mut h = vec![0u8; 0x400];
        h[0x202..0x206].copy_from_slice(b"HdrS");
        h[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        h[0x300..0x320].copy_from_slice(b"6.1.0-18-cloud-amd64 (debian@x)\0");
        assert_eq!(bzimage_release(&h).as_deref(), Some("6.1.0-18-cloud-amd64"));
        assert_eq!(bzimage_release(&[0u8; 16]), None);
        assert!(modinfo(b"not an elf").is_err());
        assert!(modinfo(b"\x7fELF\x02\x01\0\0").is_err());
    }

    #[test]
    fn modules_dep_lists_the_first_to_load_last() {
        let m = |n: &str| Module { name: n.into(), path: format!("kernel/{n}.ko"), bytes: vec![] };
        let mods = Modules {
            release: "r".into(),
            modules: vec![m("a"), m("b"), m("c")],
            needs: BTreeMap::from([("a".into(), BTreeSet::new()), ("b".into(), BTreeSet::from(["a".into()])), ("c".into(), BTreeSet::from(["a".into(), "b".into()]))]),
            load: vec!["c".into()],
        };
        assert_eq!(mods.modules_dep(), "kernel/a.ko:\nkernel/b.ko: kernel/a.ko\nkernel/c.ko: kernel/b.ko kernel/a.ko\n");
        let a = mods.archive(7);
        let (entries, _) = format::parse(&a).unwrap();
        let names: Vec<&[u8]> = entries.iter().map(|e| e.name).collect();
        assert_eq!(names[0], b"lib");
        assert!(names.contains(&&b"lib/modules/r/modules.dep"[..]));
    }
}
