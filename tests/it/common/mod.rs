//! Shared helpers for the integration tests: fixtures built at test time (nothing binary is
//! committed), the independent tools we check our outputs with, and a file-tree walker.
//!
//! Use it from a test file with `mod common;`. What is here:
//! - [`require_tool`] / [`run`] / [`stagebox`]: run external tools and the binary under test;
//!   [`peak_rss`] measures a run's peak memory.
//!   A missing tool is a test failure that says `run scripts/install-test-deps.sh`, never a skip.
//! - [`deb`] / [`deb_layer`]: Debian packages from `apt-get download`, cached under
//!   `target/test-cache/debs/` so reruns are offline; `dpkg-deb --fsys-tarfile` turns one into
//!   a layer, like a StageX package image has one layer per package.
//! - [`Entry`] / [`layer`]: hand-made layer tarballs (whiteouts, opaque dirs, hardlinks,
//!   devices, PAX xattrs, long names) written with the `tar` crate's headers.
//! - [`umoci_image`]: an OCI layout assembled by `umoci raw add-layer` (gzip layers);
//!   [`Layout`]: a layout written by hand (any compression, media type, nested indexes).
//! - [`snapshot`] / [`assert_same_tree`]: walk an unpacked rootfs into comparable data
//!   (type, mode, owner, xattrs, content sha256, hardlink groups); [`mtimes`] and
//!   [`mode_tree`] for times and permissions; [`hash_tree`] for output directories.
//! - [`gnu_tar_extract`] / [`tar_members`]: read an output tarball with GNU tar or the `tar` crate.
//! - [`pallet_layers`]: the standard fixture image: a core-filesystem layer, Debian packages,
//!   and two layers of edge cases ([`edge_layer_a`], [`edge_layer_b`]).
//!
//! Shared fixtures of one test binary go in [`fixture_dir`] behind a `OnceLock` (the common
//! ones, images with a store and the images of a disk box, are made by [`fixture`]); per-test
//! scratch space comes from [`tempdir`].
#![allow(dead_code)]

pub mod arm64;
pub mod boot;
pub mod eif_reader;
pub mod fixture;
pub mod iso;
pub mod kernel_mount;
pub mod pkg;
pub mod prove;

use sha2::{Digest as _, Sha256};
use std::borrow::BorrowMut;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

pub const INSTALL_HINT: &str = "run scripts/install-test-deps.sh";

// ---------------------------------------------------------------------------------------------
// Paths, tools, processes
// ---------------------------------------------------------------------------------------------

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary under test.
pub fn stagebox_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stagebox"))
}

/// `target/test-cache/`: downloads kept across runs (so a rerun needs no network).
pub fn test_cache() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`; its parent honours CARGO_TARGET_DIR.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("test-cache");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh directory `target/tmp/<name>` for fixtures shared by the tests of one test
/// binary (wiped when the binary first asks for it, kept afterwards for debugging).
pub fn fixture_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d).unwrap_or_else(|e| panic!("cannot clear {}: {e}", d.display()));
    }
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A temp dir under `target/tmp` (removed when dropped).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("t-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The path of tool `name`; fails the test (not a skip) when it is not installed.
pub fn require_tool(name: &str) -> PathBuf {
    find_in_path(name).unwrap_or_else(|| panic!("`{name}` is not installed (not in PATH): {INSTALL_HINT}"))
}

pub fn require_tools(names: &[&str]) {
    for n in names {
        require_tool(n);
    }
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if let Some(d) = cmd.get_current_dir() {
        s.push_str(&format!("  (in {})", d.display()));
    }
    s
}

/// Run `cmd` to completion, capturing its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound { format!(" ({INSTALL_HINT})") } else { String::new() };
        panic!("cannot run {}: {e}{hint}", describe(cmd))
    })
}

/// Run `cmd` and fail the test unless it exits 0.
pub fn run(cmd: &mut Command) -> Output {
    let out = output(cmd);
    if !out.status.success() {
        panic!(
            "{} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// `stagebox ARGS…` (not yet run).
pub fn stagebox<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(stagebox_bin());
    c.args(args);
    c.env_remove("SOURCE_DATE_EPOCH").env_remove("STAGEBOX_CACHE");
    c
}

/// Run `cmd` (its program, arguments, environment changes and directory; stdout discarded)
/// under GNU time and return its exit code, stderr and peak resident memory in KiB. (Not
/// `wait4` on our own child: Linux carries the forking process's high-water mark over an
/// exec, so the child of a test process that holds big inputs would be charged for them.)
/// Fails the test when the command panicked or was killed by a signal.
pub fn peak_rss(cmd: &Command) -> (i32, String, i64) {
    let time = require_tool("time");
    let scratch = tempdir();
    let (err_path, rss_path) = (scratch.path().join("stderr.txt"), scratch.path().join("rss.txt"));
    let mut timed = Command::new(time);
    timed.arg("-f").arg("%M").arg("-o").arg(&rss_path).arg(cmd.get_program()).args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        timed.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let status = timed.stdout(Stdio::null()).stderr(std::fs::File::create(&err_path).unwrap()).status().unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    let rss = std::fs::read_to_string(&rss_path).unwrap();
    assert!(!stderr.contains("panicked") && !stderr.contains("terminated by signal") && !rss.contains("terminated by signal"), "{stderr}{rss}");
    let kib = rss.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("GNU time wrote {rss:?}"));
    (status.code().expect("exit code"), stderr, kib)
}

/// One `<sha256>  <path>` line of `stagebox build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub sha256: String,
    pub path: PathBuf,
}

pub fn parse_build_stdout(stdout: &[u8]) -> Vec<Built> {
    String::from_utf8(stdout.to_vec())
        .expect("build output is UTF-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sha, path) = l.split_once("  ").unwrap_or_else(|| panic!("not a `<sha256>  <path>` line: {l:?}"));
            assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "bad sha256 in {l:?}");
            Built { sha256: sha.to_string(), path: PathBuf::from(path) }
        })
        .collect()
}

/// `stagebox build BOX --out OUT --cache CACHE -q`, which must succeed; returns its lines.
pub fn build(box_file: &Path, out: &Path, cache: &Path) -> Vec<Built> {
    let o = run(stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()])
        .borrow_mut());
    parse_build_stdout(&o.stdout)
}

pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&read(path)).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// sha256 of every regular file under `dir`, by relative path (symlinks and dirs listed too,
/// so an extra or missing entry shows).
pub fn hash_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                m.insert(rel, "dir".into());
                stack.push(p);
            } else if ft.is_symlink() {
                m.insert(rel, format!("symlink {}", std::fs::read_link(&p).unwrap().display()));
            } else {
                m.insert(rel, sha256_file(&p));
            }
        }
    }
    m
}

/// `f(metadata)` of every path under `root` (not `root` itself, not following symlinks),
/// by relative path.
pub fn meta_tree<T>(root: &Path, f: impl Fn(&std::fs::Metadata) -> T) -> BTreeMap<String, T> {
    let mut m = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            m.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned(), f(&md));
        }
    }
    m
}

/// Permission bits of everything under `dir` (not `dir` itself), by relative path.
pub fn mode_tree(dir: &Path) -> BTreeMap<String, u32> {
    meta_tree(dir, |md| md.mode() & 0o7777)
}

// ---------------------------------------------------------------------------------------------
// Debian packages
// ---------------------------------------------------------------------------------------------

/// The `.deb` of `pkg` (current Debian version), from `target/test-cache/debs/` or
/// `apt-get download` (after one `apt-get update` if the first try fails).
pub fn deb(pkg: &str) -> PathBuf {
    static LOCK: Mutex<bool> = Mutex::new(false);
    let mut updated = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_cache().join("debs");
    std::fs::create_dir_all(&dir).unwrap();
    let dst = dir.join(format!("{pkg}.deb"));
    if dst.is_file() {
        return dst;
    }
    require_tool("apt-get");
    let tmp = tempfile::Builder::new().prefix(".dl-").tempdir_in(&dir).unwrap();
    let try_download = || output(Command::new("apt-get").args(["download", "-q", pkg]).current_dir(tmp.path()));
    let mut o = try_download();
    if !o.status.success() && !*updated {
        run(Command::new("apt-get").args(["update", "-q"]));
        *updated = true;
        o = try_download();
    }
    if !o.status.success() {
        panic!(
            "apt-get download {pkg} failed (the tests need Debian's package index; {INSTALL_HINT}):\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let got: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("deb")))
        .collect();
    assert_eq!(got.len(), 1, "apt-get download {pkg} left {got:?}");
    std::fs::rename(&got[0], &dst).unwrap();
    dst
}

/// `dpkg-deb --fsys-tarfile PKG.deb`: the package's files as a layer tarball.
pub fn deb_layer(pkg: &str) -> Vec<u8> {
    require_tool("dpkg-deb");
    run(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb(pkg))).stdout
}

/// Rewrite a tarball without the directory entries named in `drop` (`bin`, `lib`, ...), so
/// that its `bin/x` lands through a lower layer's `bin -> usr/bin` symlink (a directory entry
/// would replace the symlink, as Docker, containerd and umoci do).
pub fn drop_dir_entries(tar_bytes: &[u8], drop: &[&str]) -> Vec<u8> {
    filter_entries(tar_bytes, |path, kind| !(kind == tar::EntryType::Directory && drop.contains(&path)))
}

/// Rewrite a tarball keeping only the entries for which `keep(path, type)` holds (`path`
/// without a leading `./` or trailing `/`).
pub fn filter_entries(tar_bytes: &[u8], keep: impl Fn(&str, tar::EntryType) -> bool) -> Vec<u8> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut b = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let clean = path.trim_start_matches("./").trim_end_matches('/');
        let mut h = e.header().clone();
        if !keep(clean, h.entry_type()) {
            continue;
        }
        match h.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e.link_name_bytes().unwrap().into_owned();
                b.append_link(&mut h, &path, OsStr::from_bytes(&target)).unwrap();
            }
            _ => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                b.append_data(&mut h, &path, data.as_slice()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Hand-made layers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

/// One tar member of a hand-made layer. Built with [`Entry::file`] etc., then adjusted with
/// the builder methods.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Write a path or link target longer than 100 bytes as a GNU `L`/`K` record instead
    /// of a PAX `path`/`linkpath` record.
    pub gnu_long: bool,
}

impl Entry {
    fn new(path: &str, kind: EntryKind, mode: u32) -> Self {
        Entry { path: path.into(), kind, mode, uid: 0, gid: 0, mtime: 1_600_000_000, xattrs: Vec::new(), gnu_long: false }
    }
    pub fn dir(path: &str) -> Self {
        Self::new(path, EntryKind::Dir, 0o755)
    }
    pub fn file(path: &str, data: impl AsRef<[u8]>) -> Self {
        Self::new(path, EntryKind::File(data.as_ref().to_vec()), 0o644)
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, EntryKind::Symlink(target.into()), 0o777)
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        Self::new(path, EntryKind::Hardlink(target.into()), 0o644)
    }
    pub fn fifo(path: &str) -> Self {
        Self::new(path, EntryKind::Fifo, 0o644)
    }
    pub fn char_dev(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, EntryKind::Char(major, minor), 0o666)
    }
    pub fn block_dev(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, EntryKind::Block(major, minor), 0o660)
    }
    /// `DIR/.wh.NAME`, deleting `DIR/NAME` from lower layers.
    pub fn whiteout(victim: &str) -> Self {
        let (dir, name) = victim.rsplit_once('/').map(|(d, n)| (format!("{d}/"), n)).unwrap_or((String::new(), victim));
        Self::file(&format!("{dir}.wh.{name}"), b"")
    }
    /// `DIR/.wh..wh..opq`, hiding every lower-layer child of `DIR`.
    pub fn opaque(dir: &str) -> Self {
        Self::file(&format!("{dir}/.wh..wh..opq"), b"")
    }
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> Self {
        self.mtime = t;
        self
    }
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Self {
        self.xattrs.push((key.into(), value.to_vec()));
        self
    }
    pub fn gnu_long(mut self) -> Self {
        self.gnu_long = true;
        self
    }
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn put_raw(out: &mut Vec<u8>, h: &tar::Header, data: &[u8]) {
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let rem = data.len() % 512;
    if rem != 0 {
        out.extend(std::iter::repeat_n(0u8, 512 - rem));
    }
}

fn set_name_raw(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    let n = name.len().min(100);
    field[..n].copy_from_slice(&name[..n]);
}

fn set_link_raw(h: &mut tar::Header, link: &[u8]) {
    let field = &mut h.as_old_mut().linkname;
    field.fill(0);
    let n = link.len().min(100);
    field[..n].copy_from_slice(&link[..n]);
}

fn gnu_long_record(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let mut h = tar::Header::new_gnu();
    set_name_raw(&mut h, b"././@LongLink");
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let mut data = value.to_vec();
    data.push(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    put_raw(out, &h, &data);
}

fn append_entry(out: &mut Vec<u8>, e: &Entry) {
    let mut h = if e.gnu_long { tar::Header::new_gnu() } else { tar::Header::new_ustar() };
    let mut pax = Vec::new();
    let mut path = e.path.clone().into_bytes();
    if e.kind == EntryKind::Dir && !path.ends_with(b"/") {
        path.push(b'/');
    }
    if path.len() > 100 {
        if e.gnu_long {
            gnu_long_record(out, b'L', &path);
        } else {
            pax_record(&mut pax, "path", &path);
        }
    }
    set_name_raw(&mut h, &path);
    let (ty, data): (tar::EntryType, &[u8]) = match &e.kind {
        EntryKind::Dir => (tar::EntryType::Directory, b""),
        EntryKind::File(d) => (tar::EntryType::Regular, d),
        EntryKind::Symlink(_) => (tar::EntryType::Symlink, b""),
        EntryKind::Hardlink(_) => (tar::EntryType::Link, b""),
        EntryKind::Fifo => (tar::EntryType::Fifo, b""),
        EntryKind::Char(..) => (tar::EntryType::Char, b""),
        EntryKind::Block(..) => (tar::EntryType::Block, b""),
    };
    if let EntryKind::Symlink(t) | EntryKind::Hardlink(t) = &e.kind {
        if t.len() > 100 {
            if e.gnu_long {
                gnu_long_record(out, b'K', t.as_bytes());
            } else {
                pax_record(&mut pax, "linkpath", t.as_bytes());
            }
        }
        set_link_raw(&mut h, t.as_bytes());
    }
    if let EntryKind::Char(a, b) | EntryKind::Block(a, b) = e.kind {
        h.set_device_major(a).unwrap();
        h.set_device_minor(b).unwrap();
    }
    // ids beyond the 7 octal digits of a ustar field go in PAX records as well (the header
    // then holds the tar crate's base-256 form).
    if e.uid > 0o7777777 {
        pax_record(&mut pax, "uid", e.uid.to_string().as_bytes());
    }
    if e.gid > 0o7777777 {
        pax_record(&mut pax, "gid", e.gid.to_string().as_bytes());
    }
    for (k, v) in &e.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
    }
    if !pax.is_empty() {
        let mut ph = tar::Header::new_ustar();
        let base = e.path.trim_end_matches('/').rsplit('/').next().unwrap_or("x");
        set_name_raw(&mut ph, format!("PaxHeaders.0/{}", &base[..base.len().min(80)]).as_bytes());
        ph.set_entry_type(tar::EntryType::XHeader);
        ph.set_mode(0o644);
        ph.set_uid(0);
        ph.set_gid(0);
        ph.set_mtime(e.mtime);
        ph.set_size(pax.len() as u64);
        ph.set_cksum();
        put_raw(out, &ph, &pax);
    }
    h.set_entry_type(ty);
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(data.len() as u64);
    h.set_cksum();
    put_raw(out, &h, data);
}

/// A layer tarball of `entries`, in the order given.
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        append_entry(&mut out, e);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A StageX-like `core-filesystem` layer: `bin lib lib64 sbin -> usr/*`, passwd, group,
/// os-release, tmp (1777), root (0700).
pub fn core_filesystem_layer() -> Vec<u8> {
    layer(&[
        Entry::dir("."),
        Entry::symlink("bin", "usr/bin"),
        Entry::dir("dev"),
        Entry::dir("etc"),
        Entry::file("etc/group", "root:x:0:\nuser:x:1000:\n"),
        Entry::file("etc/os-release", "NAME=stagebox-test\n"),
        Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
        Entry::dir("home"),
        Entry::dir("home/user").owner(1000, 1000).mode(0o750),
        Entry::symlink("lib", "usr/lib"),
        Entry::symlink("lib64", "usr/lib"),
        Entry::dir("root").mode(0o700),
        Entry::symlink("sbin", "usr/sbin"),
        Entry::dir("tmp").mode(0o1777),
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::dir("usr/lib"),
        Entry::dir("usr/sbin"),
        Entry::dir("var"),
    ])
}

/// A path of `n` bytes or more under `opt/long/`, in components of at most 60 bytes.
pub fn long_path(n: usize, leaf: &str) -> String {
    let mut p = String::from("opt/long");
    let mut i = 0;
    while p.len() + 1 + leaf.len() < n {
        p.push_str(&format!("/d{i:02}{}", "x".repeat(50)));
        i += 1;
    }
    format!("{p}/{leaf}")
}

/// The directories of `long_path(n, …)` (so a layer can list parents first).
pub fn long_dirs(n: usize) -> Vec<String> {
    let p = long_path(n, "f");
    let comps: Vec<&str> = p.split('/').collect();
    (1..comps.len()).map(|i| comps[..i].join("/")).collect()
}

/// Edge cases, first layer: every entry type, special modes, owners, xattrs, long names,
/// symlinks (relative, absolute, dangling, to a directory), a file written through a
/// symlinked parent, hardlinks in one layer, and the lower-layer paths layer B removes.
pub fn edge_layer_a() -> Vec<u8> {
    let long = long_path(300, "file-beyond-255-bytes");
    let mid = long_path(130, "f130");
    let mut v = vec![
        Entry::dir("opt"),
        Entry::dir("opt/keep"),
        Entry::file("opt/keep/a", "keep a\n"),
        Entry::file("opt/gone", "whited out\n"),
        Entry::dir("opt/gonedir"),
        Entry::file("opt/gonedir/x", "whited out with its dir\n"),
        Entry::dir("opt/gonedir/sub"),
        Entry::file("opt/gonedir/sub/y", "deep\n"),
        Entry::dir("opt/opaque").mode(0o750),
        Entry::file("opt/opaque/old1", "hidden by the opaque marker\n"),
        Entry::dir("opt/opaque/sub"),
        Entry::file("opt/opaque/sub/old2", "hidden too\n"),
        Entry::dir("opt/hl"),
        Entry::file("opt/hl/orig", "version 1\n").mode(0o640),
        Entry::hardlink("opt/hl/same-layer", "opt/hl/orig"),
        Entry::file("opt/f2d", "a file that becomes a directory\n"),
        Entry::file("opt/readd", "lower version\n"),
        Entry::dir("opt/d2l"),
        Entry::file("opt/d2l/child", "goes away when its dir becomes a symlink\n"),
        Entry::dir("opt/d2f"),
        Entry::file("opt/d2f/child", "goes away with its dir\n"),
        Entry::file("usr/bin/suid", "#!/bin/sh\n").mode(0o4755),
        Entry::file("usr/bin/sgid", "#!/bin/sh\n").mode(0o2711),
        Entry::dir("opt/sgid-dir").mode(0o2775).owner(0, 50),
        Entry::dir("opt/sticky").mode(0o1777),
        Entry::dir("opt/private").mode(0o700),
        Entry::dir("opt/readonly").mode(0o555),
        Entry::file("opt/readonly/f", "read only\n").mode(0o444),
        Entry::file("opt/secret", "no permissions\n").mode(0o000),
        Entry::file("opt/owned", "owned by 1000:1001\n").owner(1000, 1001),
        Entry::file("opt/big-ids", "owned by big ids\n").owner(3_000_000, 3_000_001),
        Entry::file("opt/xattr", "with xattrs\n").xattr("user.foo", b"bar").xattr("user.empty", b""),
        Entry::dir("opt/xattr-dir").xattr("user.dir", b"on a directory"),
        Entry::fifo("opt/fifo").mode(0o600),
        Entry::char_dev("dev/null", 1, 3),
        Entry::char_dev("dev/tty1", 4, 1).mode(0o620).owner(0, 5),
        Entry::block_dev("dev/loop0", 7, 0),
        Entry::symlink("opt/rel", "keep/a"),
        Entry::symlink("opt/abs", "/etc/passwd"),
        Entry::symlink("opt/dangling", "/does/not/exist"),
        Entry::symlink("opt/dirlink", "keep"),
        Entry::symlink("opt/dotdot", "../usr/bin/suid"),
        // Written through a symlinked parent: lands in opt/keep/.
        Entry::file("opt/dirlink/through-link", "written through a symlink\n"),
        // Through an absolute symlink of the lower layer: lands in usr/sbin/.
        Entry::file("sbin/via-sbin", "written through sbin -> usr/sbin\n").mode(0o755),
        Entry::file("opt/ünïcödé name", "utf-8 and a space\n"),
        Entry::file("opt/empty", ""),
        Entry::file("opt/mtime-future", "mtime after SOURCE_DATE_EPOCH\n").mtime(4_000_000_000),
        Entry::file("opt/mtime-zero", "mtime 0\n").mtime(0),
        Entry::file(&format!("opt/{}", "n".repeat(150)), "a 150-byte name\n"),
    ];
    for d in long_dirs(300) {
        v.push(Entry::dir(&d));
    }
    v.push(Entry::file(&long, "long path\n"));
    v.push(Entry::file(&mid, "a 130-byte path, GNU long name\n").gnu_long());
    v.push(Entry::symlink("opt/long-target", &long));
    v.push(Entry::hardlink("opt/long-hardlink", &long).gnu_long());
    // A 2 MiB file with non-repeating content (crosses compression block sizes).
    let mut big = Vec::with_capacity(2 << 20);
    let mut x: u32 = 1;
    while big.len() < 2 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        big.extend_from_slice(&x.to_le_bytes());
    }
    v.push(Entry::file("opt/big.bin", &big));
    layer(&v)
}

/// Edge cases, second layer: whiteouts of a file and of a directory, an opaque directory
/// (marker after a same-layer child: it still applies only to lower layers), a hardlink to
/// a lower-layer file whose target is then replaced (the link keeps the old content), type
/// changes file <-> directory -> symlink, a whiteout after a same-layer entry of the same
/// path, a mode change of an existing directory, and a whiteout and a
/// hardlink target that resolve through a symlinked parent. Needs `usr/bin/dash` below it.
pub fn edge_layer_b() -> Vec<u8> {
    layer(&[
        Entry::dir("opt"),
        Entry::whiteout("opt/gone"),
        Entry::whiteout("opt/gonedir"),
        Entry::dir("opt/opaque").mode(0o755),
        Entry::file("opt/opaque/new", "survives its own opaque marker\n"),
        Entry::opaque("opt/opaque"),
        Entry::hardlink("opt/hl/cross-layer", "opt/hl/orig"),
        Entry::file("opt/hl/orig", "version 2\n"),
        Entry::dir("opt/f2d"),
        Entry::file("opt/f2d/child", "now a directory\n"),
        Entry::file("opt/d2f", "now a file\n"),
        Entry::symlink("opt/d2l", "keep"),
        // Re-added, then whited out later in the same layer: the whiteout hides only the
        // lower layer's file, so this one stays.
        Entry::file("opt/readd", "upper version\n"),
        Entry::whiteout("opt/readd"),
        Entry::dir("opt/keep").mode(0o711),
        // Paths through the core layer's `bin -> usr/bin`: a whiteout (deletes usr/bin/hostname,
        // harmless where it is absent) and a hardlink target (usr/bin/dash, which must exist).
        Entry::whiteout("bin/hostname"),
        Entry::hardlink("opt/hl/dash-via-symlink", "bin/dash"),
    ])
}

/// The Debian packages of the standard fixture (about 1.5 MB of downloads).
pub const DEBS: &[&str] = &["base-files", "dash", "hostname", "zlib1g", "sed", "busybox-static"];

/// The standard fixture image's layers, bottom first, each `(name, uncompressed tar)`:
/// core-filesystem, one layer per Debian package (with their `bin/`, `lib/`, `sbin/` directory
/// entries dropped so their files land through the core layer's symlinks, like a StageX
/// pallet), then the two edge-case layers.
pub fn pallet_layers() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![("core-filesystem".to_string(), core_filesystem_layer())];
    for p in DEBS {
        v.push((p.to_string(), drop_dir_entries(&deb_layer(p), &["bin", "lib", "lib64", "sbin"])));
    }
    v.push(("edge-a".into(), edge_layer_a()));
    v.push(("edge-b".into(), edge_layer_b()));
    v
}

// ---------------------------------------------------------------------------------------------
// OCI layouts
// ---------------------------------------------------------------------------------------------

/// The standard fixture image ([`pallet_layers`]) as an OCI layout in `fixture_dir(name)`:
/// its `oci:DIR@sha256:…` reference and the fixture directory (for caches and scratch).
pub fn pallet_image(name: &str) -> (String, PathBuf) {
    let dir = fixture_dir(name);
    let digest = umoci_image(&dir.join("layout"), "fixture", &pallet_layers());
    (format!("oci:{}@{digest}", dir.join("layout").display()), dir)
}

/// A box file named `name` with `image` as its one layer plus the `extra` TOML, in a fresh
/// directory (kept alive by the returned guard).
pub fn image_box(image: &str, name: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempdir();
    let p = d.path().join(format!("{name}.toml"));
    write(&p, format!("name = \"{name}\"\n[[layer]]\nimage = \"{image}\"\n{extra}"));
    (d, p)
}

/// Add an image `layout:tag` made of `layers` (uncompressed tarballs, bottom first) with
/// `umoci init`/`new`/`raw add-layer` (umoci stores them gzip-compressed). Returns the
/// manifest digest (`sha256:…`).
pub fn umoci_image(layout: &Path, tag: &str, layers: &[(String, Vec<u8>)]) -> String {
    require_tool("umoci");
    if !layout.join("oci-layout").exists() {
        run(Command::new("umoci").arg("init").arg("--layout").arg(layout));
    }
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image]));
    let tmp = tempdir();
    for (i, (name, tar)) in layers.iter().enumerate() {
        let f = tmp.path().join(format!("{i}-{name}.tar"));
        write(&f, tar);
        run(Command::new("umoci").args(["raw", "add-layer", "--history.created_by", name, "--image", &image]).arg(&f));
    }
    oci_tag_digest(layout, tag)
}

/// The manifest digest `index.json` of `layout` lists under `tag`.
pub fn oci_tag_digest(layout: &Path, tag: &str) -> String {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How a hand-written layout stores a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    None,
    /// `gzip -n` (the real tool).
    Gzip,
    /// `zstd` (the real tool).
    Zstd,
}

impl Comp {
    pub fn media_type(self) -> &'static str {
        match self {
            Comp::None => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        let tool = match self {
            Comp::None => return data.to_vec(),
            Comp::Gzip => ["gzip", "-n", "-c"],
            Comp::Zstd => ["zstd", "-q", "-c"],
        };
        require_tool(tool[0]);
        let mut child = Command::new(tool[0])
            .args(&tool[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} ({INSTALL_HINT})", tool[0]));
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success(), "{} failed", tool[0]);
        out.stdout
    }
}

/// A descriptor as JSON (`mediaType`, `digest`, `size`, and optional extras).
pub type Desc = serde_json::Value;

/// An OCI image layout written by hand, for cases umoci does not produce (uncompressed or
/// zstd layers, Docker media types, nested indexes, several platforms).
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        write(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#);
        Layout { dir: dir.to_path_buf() }
    }

    /// Store a blob; returns its descriptor with `media_type`.
    pub fn blob(&self, media_type: &str, data: &[u8]) -> Desc {
        let d = sha256_hex(data);
        write(&self.dir.join("blobs/sha256").join(&d), data);
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{d}"), "size": data.len()})
    }

    /// An image of `layers` (uncompressed tarballs with how to store each) for `arch`,
    /// with `manifest_media_type` and `layer_media_type` overrides for Docker-style images.
    /// Returns the manifest descriptor (with its platform).
    pub fn image_with(&self, layers: &[(&[u8], Comp)], arch: &str, manifest_mt: &str, layer_mt: Option<&str>) -> Desc {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, comp) in layers {
            diff_ids.push(format!("sha256:{}", sha256_hex(tar)));
            descs.push(self.blob(layer_mt.unwrap_or(comp.media_type()), &comp.compress(tar)));
        }
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_mt = if manifest_mt.contains("docker") {
            "application/vnd.docker.container.image.v1+json"
        } else {
            "application/vnd.oci.image.config.v1+json"
        };
        let cfg = self.blob(config_mt, &serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": manifest_mt, "config": cfg, "layers": descs});
        let mut d = self.blob(manifest_mt, &serde_json::to_vec(&manifest).unwrap());
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        d
    }

    /// An OCI image for linux/`arch` of `layers`.
    pub fn image(&self, layers: &[(&[u8], Comp)], arch: &str) -> Desc {
        self.image_with(layers, arch, "application/vnd.oci.image.manifest.v1+json", None)
    }

    /// An index blob listing `manifests`; returns its descriptor.
    pub fn index_blob(&self, manifests: &[Desc]) -> Desc {
        let idx = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
        });
        self.blob("application/vnd.oci.image.index.v1+json", &serde_json::to_vec(&idx).unwrap())
    }

    /// Write `index.json` listing `entries` (descriptor, tag).
    pub fn set_index(&self, entries: &[(Desc, &str)]) {
        let manifests: Vec<Desc> = entries
            .iter()
            .map(|(d, tag)| {
                let mut d = d.clone();
                d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
                d
            })
            .collect();
        let idx = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
        });
        write(&self.dir.join("index.json"), serde_json::to_vec(&idx).unwrap());
    }
}

pub fn digest_of(d: &Desc) -> String {
    d["digest"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Reading trees
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File { size: u64, sha256: String },
    Symlink(String),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
    Socket,
}

/// One path of an unpacked tree, as far as a rootfs is concerned (no times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For a file with more than one link: the first of its paths in bytewise order.
    pub link_group: Option<String>,
}

fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}

fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

/// Walk `root` (not included) into path → node. Paths are relative, `/`-separated, UTF-8.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap();
            let rel = std::str::from_utf8(rel.as_os_str().as_bytes()).expect("fixture paths are UTF-8").to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                NodeKind::Dir
            } else if ft.is_symlink() {
                NodeKind::Symlink(std::str::from_utf8(std::fs::read_link(&p).unwrap().as_os_str().as_bytes()).unwrap().into())
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    inodes.entry((m.dev(), m.ino())).or_default().push(rel.clone());
                }
                NodeKind::File { size: m.len(), sha256: sha256_file(&p) }
            } else if ft.is_fifo() {
                NodeKind::Fifo
            } else if ft.is_char_device() {
                NodeKind::Char(major(m.rdev()), minor(m.rdev()))
            } else if ft.is_block_device() {
                NodeKind::Block(major(m.rdev()), minor(m.rdev()))
            } else {
                NodeKind::Socket
            };
            let mut xattrs = BTreeMap::new();
            for k in xattr::list(&p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display())) {
                let k = k.to_string_lossy().into_owned();
                let v = xattr::get(&p, &k).unwrap().unwrap_or_default();
                xattrs.insert(k, v);
            }
            out.insert(rel, Node { kind, mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), xattrs, link_group: None });
        }
    }
    for (_, mut paths) in inodes {
        paths.sort();
        for p in &paths {
            out.get_mut(p).unwrap().link_group = Some(paths[0].clone());
        }
    }
    out
}

/// mtime (seconds) of every path under `root` (not following symlinks), by relative path.
pub fn mtimes(root: &Path) -> BTreeMap<String, i64> {
    meta_tree(root, |md| md.mtime())
}

/// Decode umoci's rootless owner record: the `user.rootlesscontainers` xattr is a protobuf
/// `Resource { uint32 uid = 1; uint32 gid = 2; }` (absent fields are 0).
pub fn decode_rootlesscontainers(v: &[u8]) -> (u32, u32) {
    let (mut uid, mut gid) = (0u32, 0u32);
    let mut i = 0;
    while i < v.len() {
        let key = v[i];
        i += 1;
        let mut val: u64 = 0;
        let mut shift = 0;
        loop {
            let b = v[i];
            i += 1;
            val |= ((b & 0x7f) as u64) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        match key {
            0x08 => uid = val as u32,
            0x10 => gid = val as u32,
            k => panic!("unexpected field {k:#x} in user.rootlesscontainers"),
        }
    }
    (uid, gid)
}

/// Differences between two snapshots, one line each (empty when they agree).
pub fn diff_trees(a_name: &str, a: &BTreeMap<String, Node>, b_name: &str, b: &BTreeMap<String, Node>) -> Vec<String> {
    let mut d = Vec::new();
    for (p, n) in a {
        match b.get(p) {
            None => d.push(format!("only in {a_name}: {p} {n:?}")),
            Some(m) if m != n => d.push(format!("differs: {p}\n    {a_name}: {n:?}\n    {b_name}: {m:?}")),
            _ => {}
        }
    }
    for (p, n) in b {
        if !a.contains_key(p) {
            d.push(format!("only in {b_name}: {p} {n:?}"));
        }
    }
    d
}

pub fn assert_same_tree(a_name: &str, a: &BTreeMap<String, Node>, b_name: &str, b: &BTreeMap<String, Node>) {
    let d = diff_trees(a_name, a, b_name, b);
    assert!(d.is_empty(), "{a_name} and {b_name} differ in {} paths:\n{}", d.len(), d.join("\n"));
}

/// Extract `tar_file` (any compression GNU tar detects) into a new dir with GNU tar,
/// keeping owners, modes, xattrs and device nodes. Fails on any stderr output.
pub fn gnu_tar_extract(tar_file: &Path, dest: &Path) {
    require_tool("tar");
    std::fs::create_dir_all(dest).unwrap();
    let o = run(Command::new("tar")
        .args(["--extract", "--same-permissions", "--same-owner", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f"])
        .arg(tar_file)
        .arg("-C")
        .arg(dest));
    assert!(o.stderr.is_empty(), "GNU tar extracting {} printed:\n{}", tar_file.display(), String::from_utf8_lossy(&o.stderr));
}

/// One member of a tarball as the `tar` crate reads it.
#[derive(Debug, Clone)]
pub struct TarMember {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: Option<String>,
    pub pax: BTreeMap<String, Vec<u8>>,
}

/// Every member of an uncompressed tarball, in archive order.
pub fn tar_members(data: &[u8]) -> Vec<TarMember> {
    let mut ar = tar::Archive::new(data);
    let mut v = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut pax = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                pax.insert(String::from_utf8_lossy(x.key_bytes()).into_owned(), x.value_bytes().to_vec());
            }
        }
        let h = e.header();
        v.push(TarMember {
            path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: e.header().uid().unwrap(),
            gid: e.header().gid().unwrap(),
            mtime: e.header().mtime().unwrap(),
            size: e.size(),
            link: e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap()),
            pax,
        });
        let _ = e.read_to_end(&mut Vec::new());
    }
    v
}

/// The Debian cloud kernel's `.deb` for amd64 (see [`cloud_kernel_deb_for`]).
pub fn cloud_kernel_deb() -> PathBuf {
    cloud_kernel_deb_for("amd64")
}

/// The Debian cloud kernel's `.deb` for `arch` (`amd64`, `arm64`: the package the
/// `linux-image-cloud-ARCH` metapackage depends on now), cached under
/// target/test-cache/debs: a cached one is used as it is, so reruns need no network. A
/// foreign architecture needs `dpkg --add-architecture ARCH` (scripts/install-test-deps.sh).
pub fn cloud_kernel_deb_for(arch: &str) -> PathBuf {
    let suffix = format!("-cloud-{arch}");
    let cached = test_cache().join("debs");
    if let Ok(rd) = std::fs::read_dir(&cached) {
        let mut found: Vec<PathBuf> = rd
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("linux-image-") && n.ends_with(&format!("{suffix}.deb")) && n != format!("linux-image{suffix}.deb")
            })
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return p;
        }
    }
    require_tool("apt-cache");
    let meta = format!("linux-image{suffix}:{arch}");
    let depends = || {
        let o = output(Command::new("apt-cache").args(["depends", &meta]));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let pkg = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(|p| p.split(':').next().unwrap_or(p))
            .find(|p| p.starts_with("linux-image-") && p.ends_with(&suffix))
            .map(str::to_string);
        (pkg, text)
    };
    let pkg = match depends() {
        (Some(p), _) => p,
        (None, _) => {
            // A fresh machine may have no package lists yet.
            run(Command::new("apt-get").args(["update", "-q"]));
            match depends() {
                (Some(p), _) => p,
                (None, text) => panic!("{meta} depends on no linux-image-*{suffix} ({INSTALL_HINT}):\n{text}"),
            }
        }
    };
    if arch == "amd64" {
        deb(&pkg)
    } else {
        // `deb` names the cache file after its argument; keep the kernel's own name.
        let got = deb(&format!("{pkg}:{arch}"));
        let dst = got.with_file_name(format!("{pkg}.deb"));
        std::fs::rename(&got, &dst).unwrap();
        dst
    }
}

/// A layer holding the Debian cloud kernel as StageX's `user-linux-*` images do:
/// `/bzImage` and `/linux.config` (the package is unpacked under `scratch`).
pub fn cloud_kernel_layer(scratch: &Path) -> Vec<u8> {
    require_tool("dpkg-deb");
    run(Command::new("dpkg-deb").arg("-x").arg(cloud_kernel_deb()).arg(scratch));
    let boot = scratch.join("boot");
    let pick = |prefix: &str| -> Vec<u8> {
        let p = std::fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* in the kernel package"));
        read(&p)
    };
    layer(&[Entry::file("bzImage", pick("vmlinuz-")), Entry::file("linux.config", pick("config-"))])
}

/// busybox-static's /bin/busybox (installed by scripts/install-test-deps.sh).
pub fn busybox() -> Vec<u8> {
    let p = Path::new("/bin/busybox");
    assert!(p.is_file(), "/bin/busybox is missing: install busybox-static ({INSTALL_HINT})");
    read(p)
}

/// DESIGN §7's EIF test vector (made by AWS's builder): kernel `KERNEL-BYTES`, cmdline
/// `console=ttyS0`, two ramdisks, fixed metadata. 875 bytes once written.
pub fn eif_test_vector() -> stagebox::emit::eif::Image<'static> {
    use stagebox::emit::eif::{format, Data, Image};
    const META: &[u8] = br#"{"ImageName":"test","ImageVersion":"1.0","BuildMetadata":{"BuildTime":"1970-01-01T00:00:00+00:00","BuildTool":"t","BuildToolVersion":"0","OperatingSystem":"OS","KernelVersion":"kernel"},"DockerInfo":null,"CustomMetadata":null}"#;
    Image {
        flags: 0,
        default_mem: format::DEFAULT_MEM,
        default_cpus: format::DEFAULT_CPUS,
        kernel: Data::Bytes(b"KERNEL-BYTES"),
        cmdline: b"console=ttyS0",
        metadata: META,
        ramdisks: vec![Data::Bytes(b"RAMDISK0"), Data::Bytes(b"RAMDISK1")],
    }
}

/// The keys the parser accepts where `bogus_key` stands in the file `at` (written with the
/// rest of `files`), read from the "unknown field" error of `stagebox build` (tests/it/docs.rs and
/// tests/it/schema.rs hold the docs and the schema to these lists).
pub fn accepted(files: &[(&str, String)], at: &str) -> std::collections::BTreeSet<String> {
    let d = tempdir();
    for (name, text) in files {
        write(&d.path().join(name), text);
    }
    let o = output(&mut stagebox(["build".as_ref(), d.path().join("box.toml").as_os_str(), "--offline".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{at}: {err}");
    assert!(err.contains(&format!("{at}:")) && err.contains("unknown field `bogus_key`"), "{at}: {err}");
    if err.contains("there are no fields") {
        return std::collections::BTreeSet::new();
    }
    let list = err.split_once("expected ").map(|(_, l)| l).unwrap_or_else(|| panic!("{err}"));
    list.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// The keys a box file accepts after `text` (a table header, or nothing for the top level).
pub fn in_box(text: &str) -> std::collections::BTreeSet<String> {
    accepted(&[("box.toml", format!("name = \"n\"\n{text}bogus_key = 1\n"))], "box.toml")
}

/// A raw ustar header block for hand-made test archives (mode 0755, owner 0:0, mtime
/// 0o14000000000, checksum computed last); `fields` overwrite (offset, bytes) before the checksum.
pub fn raw_tar_header(name: &[u8], typeflag: u8, size: u64, fields: &[(usize, &[u8])]) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(b"0000755\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"14000000000\0");
    b[156] = typeflag;
    b[257..265].copy_from_slice(b"ustar\x0000");
    for (o, v) in fields {
        b[*o..*o + v.len()].copy_from_slice(v);
    }
    fix_tar_checksum(&mut b);
    b
}

/// Recompute a ustar header's checksum (the byte sum with the checksum field read as spaces)
/// after editing its bytes.
pub fn fix_tar_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|x| *x as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// `d` padded with zeros to whole 512-byte tar blocks.
pub fn tar_padded(d: &[u8]) -> Vec<u8> {
    let mut v = d.to_vec();
    v.resize(d.len().div_ceil(512) * 512, 0);
    v
}

/// A gzip of `head`, then `zeros` zero bytes, then `tail` (the zeros streamed, not held);
/// returns the blob and the sha256 of the uncompressed stream. For bomb-sized layers.
pub fn gz_with_zeros(head: &[u8], zeros: u64, tail: &[u8]) -> (Vec<u8>, String) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    let mut sha = Sha256::new();
    let mut put = |b: &[u8]| {
        gz.write_all(b).unwrap();
        sha.update(b);
    };
    put(head);
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        put(&block[..k]);
        left -= k as u64;
    }
    put(tail);
    (gz.finish().unwrap(), hex::encode(sha.finalize()))
}

/// OVMF's code file and a fresh writable copy of its variable store in `scratch`, from the
/// pairs `stagebox run` tries ([`stagebox::cmd::run::OVMF_PAIRS`]); a failure with install
/// advice when none is installed.
pub fn ovmf_with_vars(scratch: &Path) -> (&'static str, PathBuf) {
    let (code, vars) = stagebox::cmd::run::OVMF_PAIRS
        .iter()
        .copied()
        .find(|(c, v)| !v.is_empty() && Path::new(c).is_file())
        .unwrap_or_else(|| panic!("OVMF is not installed: {INSTALL_HINT}"));
    let v = scratch.join("vars.fd");
    std::fs::copy(vars, &v).unwrap();
    (code, v)
}
