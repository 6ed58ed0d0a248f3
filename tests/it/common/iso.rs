//! Helpers for the ISO tests: run the independent ISO readers (isoinfo from genisoimage,
//! bsdtar, xorriso, 7z) and turn their listings into comparable data.

use super::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One entry as `isoinfo -l` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoinfoEntry {
    /// Type character: `-`, `d`, `l`, `c`, `b`, `p`.
    pub kind: char,
    pub mode: u32,
    pub nlink: u32,
    /// `None` when isoinfo prints uid and gid run together (it does for large ids).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: u64,
    pub extent: u32,
    pub link: Option<String>,
}

/// Permission bits from an `ls -l` style string (`-rwsr-x--T`).
pub fn parse_perms(s: &str) -> (char, u32) {
    let c: Vec<char> = s.chars().collect();
    assert_eq!(c.len(), 10, "permission string {s:?}");
    let mut mode = 0;
    for (i, bit) in [(1, 0o400), (2, 0o200), (4, 0o040), (5, 0o020), (7, 0o004), (8, 0o002)] {
        if c[i] != '-' {
            mode |= bit;
        }
    }
    for (i, x, special) in [(3, 0o100, 0o4000), (6, 0o010, 0o2000), (9, 0o001, 0o1000)] {
        match c[i] {
            'x' => mode |= x,
            's' | 't' => mode |= x | special,
            'S' | 'T' => mode |= special,
            _ => {}
        }
    }
    (c[0], mode)
}

/// `isoinfo -l` with Rock Ridge (`-R`) or Joliet (`-J`): path (relative, no leading `/`) →
/// entry. Fails on any stderr output.
pub fn isoinfo_listing(iso: &Path, flag: &str) -> BTreeMap<String, IsoinfoEntry> {
    require_tool("isoinfo");
    let mut c = Command::new("isoinfo");
    c.arg(flag).arg("-l").arg("-i").arg(iso);
    if flag == "-J" {
        // isoinfo knows no UTF-8; Latin-1 holds the test's Joliet names
        c.args(["-j", "iso8859-1"]);
    }
    let o = run(&mut c);
    assert!(o.stderr.is_empty(), "isoinfo {flag} printed:\n{}", String::from_utf8_lossy(&o.stderr));
    let text = if flag == "-J" {
        o.stdout.iter().map(|b| *b as char).collect()
    } else {
        String::from_utf8(o.stdout).expect("isoinfo -R prints the UTF-8 names as they are")
    };
    let mut out = BTreeMap::new();
    let mut dir = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("Directory listing of /") {
            dir = d.to_string();
            continue;
        }
        let Some((left, name)) = line.split_once("]  ") else { continue };
        let name = name.strip_suffix(' ').unwrap_or(name);
        if name == "." || name == ".." {
            continue;
        }
        let t: Vec<&str> = left.split_whitespace().collect();
        let (kind, mode) = parse_perms(t[0]);
        // isoinfo shows a FIFO as `f`
        let kind = if kind == 'f' { 'p' } else { kind };
        let (name, link) = match name.split_once(" -> ") {
            Some((n, l)) if kind == 'l' => (n.to_string(), Some(l.to_string())),
            _ => (name.to_string(), None),
        };
        // from the right: size, month, day, year, "[", extent, flags; nlink, uid, gid before
        let n = t.len();
        let extent = t[n - 2].trim_start_matches('[').parse().unwrap_or_else(|_| panic!("extent in {line:?}"));
        let ids = &t[1..n - 7];
        // isoinfo prints uid and gid in octal
        let octal = |s: &str| u32::from_str_radix(s, 8).ok();
        let (uid, gid) = if ids.len() == 3 { (octal(ids[1]), octal(ids[2])) } else { (None, None) };
        let e = IsoinfoEntry {
            kind,
            mode,
            nlink: ids[0].parse().unwrap_or_else(|_| panic!("nlink in {line:?}")),
            uid,
            gid,
            size: t[n - 7].parse().unwrap_or_else(|_| panic!("size in {line:?}")),
            extent,
            link,
        };
        out.insert(format!("{dir}{name}"), e);
    }
    out
}

/// Extract an ISO with bsdtar (libarchive's reader: Rock Ridge, hardlinks by serial number),
/// keeping owners, modes and device nodes. Fails on any stderr output.
pub fn bsdtar_extract(iso: &Path, dest: &Path) {
    require_tool("bsdtar");
    std::fs::create_dir_all(dest).unwrap();
    let o = run(Command::new("bsdtar").args(["-x", "-p", "--numeric-owner", "-f"]).arg(iso).arg("-C").arg(dest));
    assert!(o.stderr.is_empty(), "bsdtar extracting {} printed:\n{}", iso.display(), String::from_utf8_lossy(&o.stderr));
}

/// Extract an ISO with xorriso (libisofs' reader), hardlinks restored from PX serial numbers,
/// device files included.
pub fn xorriso_extract(iso: &Path, dest: &Path) -> String {
    require_tool("xorriso");
    let o = run(Command::new("xorriso")
        .args(["-osirrox", "on:device_files:auto_chmod_on:sort_lba_off", "-hardlinks", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/"])
        .arg(dest));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lines of xorriso's messages that report a problem with the image.
pub fn xorriso_complaints(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| ["FAILURE", "SORRY", "WARNING", "MISHAP", "FATAL", "ABORT"].iter().any(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// A snapshot without xattrs (ISO 9660 as we write it has no xattrs).
pub fn without_xattrs(mut s: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    for n in s.values_mut() {
        n.xattrs.clear();
    }
    s
}

/// `xorriso -report_el_torito plain`: (platform, load size, LBA) per boot image, and the
/// options lines.
pub fn el_torito_report(iso: &Path) -> (Vec<(String, u32, u32)>, String) {
    require_tool("xorriso");
    let o = run(Command::new("xorriso").arg("-indev").arg(iso).args(["-report_el_torito", "plain"]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut v = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("El Torito boot img :") {
            let t: Vec<&str> = rest.split_whitespace().collect();
            // N Pltf B Emul Ld_seg Hdpt Ldsiz LBA
            v.push((t[1].to_string(), t[6].parse().unwrap(), t[7].parse().unwrap()));
        }
    }
    (v, text)
}

/// `7z l -slt`: path → (is_dir, size), with 7-Zip's own reading of the image.
pub fn sevenzip_listing(iso: &Path) -> BTreeMap<String, (bool, u64)> {
    require_tool("7z");
    let o = run(Command::new("7z").args(["l", "-slt", "-sccUTF-8"]).arg(iso));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut out = BTreeMap::new();
    let mut path: Option<String> = None;
    let mut size = 0u64;
    let mut dir = false;
    let mut started = false;
    for l in text.lines().chain(std::iter::once("")) {
        if l.starts_with("----------") {
            started = true;
            continue;
        }
        if !started {
            continue;
        }
        if l.is_empty() {
            if let Some(p) = path.take() {
                out.insert(p, (dir, size));
            }
            size = 0;
            dir = false;
        } else if let Some(p) = l.strip_prefix("Path = ") {
            path = Some(p.to_string());
        } else if let Some(s) = l.strip_prefix("Size = ") {
            size = s.parse().unwrap_or(0);
        } else if let Some(a) = l.strip_prefix("Folder = ") {
            dir = a == "+";
        }
    }
    out
}
