//! `stagebox diff A B`: what differs between two outputs of the same format, as entries and
//! sections rather than byte offsets — tar (plain, gzip, zstd, xz), newc cpio (the same;
//! prepended archives included), OCI image layouts, EIFs, ISO images (volumes, boot
//! catalog, system area, Rock Ridge tree), GPT disk images (and the file systems in their
//! partitions), SquashFS and EROFS images, and `.deb`, `.rpm`, Arch and Alpine packages
//! (their payload's entries).
//!
//! Each side is read with the readers `inspect` already uses (the `tar` crate over
//! [`crate::emit::readback::decompressed`], [`crate::emit::cpio::format::parse`],
//! [`crate::emit::eif::format::read`], the listings of `emit::readback`) into a list of
//! entries or fields, and the lists are compared: added, removed, changed (which fields,
//! old → new) and moved (same entries in another order). A new output format is one arm in
//! [`Format::sniff`] (`emit::readback`, the sniffer `inspect` uses too) and in `changes`.

use crate::emit::readback::{self, Format};
use crate::error::{Error, IoContext, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// One field that differs: its name and both values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub field: String,
    pub a: String,
    pub b: String,
}

/// One entry or section that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The entry path, or what part of the file (`header`, `section 2 (ramdisk)`, `PCR0`...).
    pub item: String,
    /// `added` (only in B), `removed` (only in A), `changed`, or `moved` (entries in another order).
    pub change: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.change, self.item)?;
        for (i, x) in self.fields.iter().enumerate() {
            write!(f, "{} {}: {} -> {}", if i == 0 { ":" } else { "," }, x.field, x.a, x.b)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The format compared ([`Format`]'s name), `directory` or `manifest`.
    pub format: String,
    pub a: String,
    pub b: String,
    pub identical: bool,
    pub changes: Vec<Change>,
}

/// `stagebox diff`'s exit status when the comparison itself failed (as diff(1): 2, trouble).
pub const TROUBLE: u8 = 2;

impl Report {
    /// `stagebox diff`'s exit status, as diff(1): 0 identical, 1 different.
    pub fn status(&self) -> u8 {
        if self.identical { 0 } else { 1 }
    }

    /// One line per change, then a summary line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.changes {
            s += &format!("{c}\n");
        }
        if self.identical {
            s += &format!("{} and {} are identical ({})\n", self.a, self.b, self.format);
        } else if self.changes.is_empty() {
            s += &format!("{} and {} differ in bytes only (no entry or field differs)\n", self.a, self.b);
        } else {
            s += &format!("{} change(s)\n", self.changes.len());
        }
        s
    }
}

/// Compare two outputs of one format, two output directories, or two build manifests.
pub fn diff(a: &Path, b: &Path) -> Result<Report> {
    let plain_dir = |p: &Path| p.is_dir() && !p.join("oci-layout").is_file();
    if plain_dir(a) || plain_dir(b) {
        if !(plain_dir(a) && plain_dir(b)) {
            return Err(Error::Usage(format!("{} and {}: diff compares two output directories, or two outputs", a.display(), b.display())));
        }
        let changes = dir_changes(a, b)?;
        return Ok(Report { format: "directory".into(), a: a.display().to_string(), b: b.display().to_string(), identical: changes.is_empty(), changes });
    }
    if let (Some(ma), Some(mb)) = (build_manifest(a), build_manifest(b)) {
        let changes = manifest_changes(&ma, &mb);
        let identical = crate::fsutil::compare_paths(a, b)?.is_none();
        return Ok(Report { format: "manifest".into(), a: a.display().to_string(), b: b.display().to_string(), identical, changes });
    }
    let fa = Format::sniff(a)?;
    let fb = Format::sniff(b)?;
    if fa != fb {
        return Err(Error::Usage(format!("{} is {fa:?} but {} is {fb:?}: diff compares outputs of one format", a.display(), b.display())));
    }
    let identical = crate::fsutil::compare_paths(a, b)?.is_none();
    let changes = if identical { Vec::new() } else { changes(fa, a, b)? };
    Ok(Report { format: fa.key(), a: a.display().to_string(), b: b.display().to_string(), identical, changes })
}

/// `p` as a stagebox build manifest, when it is one.
fn build_manifest(p: &Path) -> Option<crate::measure::BuildManifest> {
    if !p.is_file() || fs::metadata(p).ok()?.len() > 64 << 20 {
        return None;
    }
    serde_json::from_slice(&fs::read(p).ok()?).ok()
}

/// Two manifests: box, version, SOURCE_DATE_EPOCH; inputs by reference; outputs by path.
fn manifest_changes(a: &crate::measure::BuildManifest, b: &crate::measure::BuildManifest) -> Vec<Change> {
    let mut head_a = Fields::new();
    let mut head_b = Fields::new();
    for (f, m) in [(&mut head_a, a), (&mut head_b, b)] {
        f.insert("box", m.name.clone());
        f.insert("version", m.version.clone());
        f.insert("source_date_epoch", m.source_date_epoch.to_string());
    }
    let mut out = Vec::new();
    let fields = compare_fields(&head_a, &head_b);
    if !fields.is_empty() {
        out.push(Change { item: "box".into(), change: "changed", fields });
    }
    let inputs = |m: &crate::measure::BuildManifest| -> Entries {
        m.inputs.iter().map(|i| (format!("input {}", i.reference), Fields::from([("digest", i.digest.clone())]))).collect()
    };
    out.extend(compare_entries("", &inputs(a), &inputs(b)));
    let outputs = |m: &crate::measure::BuildManifest| -> Entries {
        m.outputs
            .iter()
            .map(|o| {
                let mut f = Fields::from([("format", o.format.clone()), ("sha256", o.sha256.clone()), ("size", o.size.to_string())]);
                for k in ["PCR0", "PCR1", "PCR2", "PCR8"] {
                    if let Some(v) = o.pcrs.as_ref().and_then(|p| p.get(k)) {
                        f.insert(k, v.clone());
                    }
                }
                (format!("output {}", o.path), f)
            })
            .collect()
    };
    out.extend(compare_entries("", &outputs(a), &outputs(b)));
    out
}

/// Two output directories: each file (or OCI layout) by name, compared as its format is
/// (items prefixed `NAME: `), or by sha256 when it is no format stagebox reads; a manifest
/// as a manifest. Hidden names (staging, kept --check builds) are left out.
fn dir_changes(a: &Path, b: &Path) -> Result<Vec<Change>> {
    let names = |d: &Path| -> Result<std::collections::BTreeSet<String>> {
        Ok(fs::read_dir(d).at(d)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect())
    };
    let (na, nb) = (names(a)?, names(b)?);
    let mut out = Vec::new();
    for n in na.union(&nb) {
        let (pa, pb) = (a.join(n), b.join(n));
        match (na.contains(n), nb.contains(n)) {
            (true, false) => out.push(Change { item: n.clone(), change: "removed", fields: Vec::new() }),
            (false, true) => out.push(Change { item: n.clone(), change: "added", fields: Vec::new() }),
            _ => {
                if crate::fsutil::compare_paths(&pa, &pb)?.is_none() {
                    continue;
                }
                let inner = match diff(&pa, &pb) {
                    Ok(r) => r.changes,
                    Err(_) if pa.is_file() && pb.is_file() => Vec::new(),
                    Err(e) => return Err(e),
                };
                if inner.is_empty() {
                    let sha = |p: &Path| crate::digest::Digest::of_file(p).map(|(d, _)| d.hex().to_string());
                    let fields = if pa.is_file() && pb.is_file() { vec![Field { field: "sha256".into(), a: sha(&pa)?, b: sha(&pb)? }] } else { Vec::new() };
                    out.push(Change { item: n.clone(), change: "changed", fields });
                }
                out.extend(inner.into_iter().map(|mut c| {
                    c.item = format!("{n}: {}", c.item);
                    c
                }));
            }
        }
    }
    Ok(out)
}

/// What differs inside two files or partitions that are themselves images (a FAT ESP, a
/// cpio, SquashFS, ...), each `len` bytes at `at` in its file; `None` when they are not of
/// one format stagebox reads. FAT is read in place; anything else is copied out first.
fn nested(fa: &fs::File, (at_a, len_a): (u64, u64), fb: &fs::File, (at_b, len_b): (u64, u64), a: &Path, b: &Path) -> Result<Option<Vec<Change>>> {
    if readback::is_fat(fa, at_a) && readback::is_fat(fb, at_b) {
        let side = |f: &fs::File, at: u64, len: u64, p: &Path| -> Result<Entries> {
            let v = readback::fat_entries(f, at, len).map_err(|e| Error::other(format!("{}: {e}", p.display())))?;
            Ok(v.into_iter()
                .map(|(e, sha)| {
                    let mut f = Fields::from([("type", e.kind), ("size", e.size.to_string())]);
                    if let Some(s) = sha {
                        f.insert("sha256", s);
                    }
                    (e.path, f)
                })
                .collect())
        };
        return Ok(Some(compare_entries("", &side(fa, at_a, len_a, a)?, &side(fb, at_b, len_b, b)?)));
    }
    let copy = |f: &fs::File, at: u64, len: u64, p: &Path| -> Result<tempfile::NamedTempFile> {
        let t = tempfile::NamedTempFile::new().at(std::env::temp_dir())?;
        let mut r = f.try_clone().at(p)?;
        r.seek(SeekFrom::Start(at)).at(p)?;
        std::io::copy(&mut r.take(len), &mut t.as_file()).at(t.path())?;
        Ok(t)
    };
    // Only what starts like an image is copied out (not every changed file).
    let mut head = [0u8; 8];
    let known = |f: &fs::File, at: u64, head: &mut [u8; 8]| {
        std::os::unix::fs::FileExt::read_exact_at(f, head, at).is_ok()
            && (readback::compression(head) != "none" || head.starts_with(b"0707") || head.starts_with(b"hsqs") || readback::span_kind(f, at).is_some())
    };
    if !known(fa, at_a, &mut head) || !known(fb, at_b, &mut head) {
        return Ok(None);
    }
    let (ta, tb) = (copy(fa, at_a, len_a, a)?, copy(fb, at_b, len_b, b)?);
    match (Format::sniff(ta.path()), Format::sniff(tb.path())) {
        (Ok(x), Ok(y)) if x == y && x != Format::Oci => Ok(changes(x, ta.path(), tb.path()).ok()),
        _ => Ok(None),
    }
}

/// The first differing entry of two outputs, as text, when the format is known and readable
/// (for `build --check`'s message); `None` otherwise.
pub fn first_entry(a: &Path, b: &Path) -> Option<String> {
    let f = Format::sniff(a).ok()?;
    (Format::sniff(b).ok()? == f).then_some(())?;
    changes(f, a, b).ok()?.first().map(|c| c.to_string())
}

fn changes(f: Format, a: &Path, b: &Path) -> Result<Vec<Change>> {
    match f {
        Format::Tar | Format::Arch | Format::Apk => Ok(compare_entries("", &tar_entries(fs::File::open(a).at(a)?, a)?, &tar_entries(fs::File::open(b).at(b)?, b)?)),
        Format::Deb => Ok(compare_entries("", &tar_entries(deb_data(a)?, a)?, &tar_entries(deb_data(b)?, b)?)),
        Format::Rpm => Ok(compare_entries("", &cpio_entries(&rpm_payload(a)?, a)?, &cpio_entries(&rpm_payload(b)?, b)?)),
        Format::Erofs => Ok(compare_entries("", &listed(Format::Erofs, a)?, &listed(Format::Erofs, b)?)),
        Format::Cpio => Ok(compare_entries("", &cpio_entries(&read_all(a)?, a)?, &cpio_entries(&read_all(b)?, b)?)),
        Format::Oci => oci_changes(a, b),
        Format::Eif => eif_changes(a, b),
        Format::Iso => iso_changes(a, b),
        Format::Disk => disk_changes(a, b),
        Format::Squashfs => Ok(compare_entries("", &squashfs_entries(&fs::File::open(a).at(a)?, 0, a)?, &squashfs_entries(&fs::File::open(b).at(b)?, 0, b)?)),
    }
}

/// A `.deb`'s data tar (still compressed).
fn deb_data(p: &Path) -> Result<std::io::Take<fs::File>> {
    let mut f = fs::File::open(p).at(p)?;
    let members = readback::ar_members(&f).map_err(|e| Error::other(format!("{}: damaged .deb: {e}", p.display())))?;
    let (_, at, len) = members.into_iter().find(|m| m.0.starts_with("data.tar")).ok_or_else(|| Error::other(format!("{}: damaged .deb: no data.tar member", p.display())))?;
    f.seek(SeekFrom::Start(at)).at(p)?;
    Ok(f.take(len))
}

/// An `.rpm`'s payload, decompressed (a newc cpio).
fn rpm_payload(p: &Path) -> Result<Vec<u8>> {
    let mut f = fs::File::open(p).at(p)?;
    let at = readback::rpm_payload_offset(&f).map_err(|e| Error::other(format!("{}: damaged .rpm: {e}", p.display())))?;
    f.seek(SeekFrom::Start(at)).at(p)?;
    let mut v = Vec::new();
    readback::decompressed(f).and_then(|mut r| r.read_to_end(&mut v)).map_err(|e| Error::other(format!("{}: damaged .rpm payload: {e}", p.display())))?;
    Ok(v)
}

/// The entries `inspect` lists, as fields (formats whose contents are compared through the
/// image bytes).
fn listed(f: Format, p: &Path) -> Result<Entries> {
    Ok(readback::entries(f, p)?
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let mut fields = Fields::new();
            fields.insert("type", e.kind);
            fields.insert("mode", e.mode);
            fields.insert("owner", format!("{}:{}", e.uid, e.gid));
            fields.insert("mtime", e.mtime.to_string());
            fields.insert("size", e.size.to_string());
            if let Some(l) = e.link {
                fields.insert("link", l);
            }
            (e.path, fields)
        })
        .collect())
}

/// sha256 of `len` bytes at `at` in `f` (a file's extent, a partition).
fn range_sha256(f: &fs::File, at: u64, len: u64, p: &Path) -> Result<String> {
    use sha2::Digest as _;
    use std::os::unix::fs::FileExt;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], at + done).at(p)?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// An ISO's volume descriptors, boot catalog, system area (MBR/GPT) and Rock Ridge tree with
/// each file's content hash (read from its extent), from `emit::iso::debug`.
fn iso_changes(a: &Path, b: &Path) -> Result<Vec<Change>> {
    let side = |p: &Path| -> Result<(Entries, Entries)> {
        let f = fs::File::open(p).at(p)?;
        let d = crate::emit::iso::debug::describe(&f, &p.display().to_string(), "").map_err(|e| Error::other(format!("{}: {e}", p.display())))?;
        let mut meta = Entries::new();
        let mut fields = Fields::new();
        fields.insert("sha256", range_sha256(&f, 0, 32768.min(d.size), p)?);
        meta.push(("system area (MBR, GPT)".into(), fields));
        for v in &d.volumes {
            let mut fields = Fields::new();
            fields.insert("volume_id", format!("{:?}", v.volume_id));
            fields.insert("blocks", format!("{:?}", v.blocks));
            fields.insert("created", format!("{:?}", v.created));
            meta.push((format!("volume descriptor {} at {}", v.kind, v.lba), fields));
        }
        for (i, r) in d.boot.iter().flat_map(|b| b.entries.iter()).enumerate() {
            let mut fields = Fields::new();
            fields.insert("platform", r.platform.clone());
            fields.insert("media", r.media.clone());
            fields.insert("load_sectors", r.load_sectors.to_string());
            fields.insert("lba", r.lba.to_string());
            meta.push((format!("boot entry {i}"), fields));
        }
        let mut files = Entries::new();
        for e in &d.entries {
            let mut fields = Fields::new();
            fields.insert("type", e.kind.clone());
            fields.insert("mode", e.mode.clone());
            fields.insert("owner", format!("{}:{}", e.uid, e.gid));
            fields.insert("nlink", e.nlink.to_string());
            fields.insert("size", e.size.to_string());
            if let Some(l) = &e.link {
                fields.insert("link", l.clone());
            }
            if let Some((ma, mi)) = e.rdev {
                fields.insert("rdev", format!("{ma},{mi}"));
            }
            if e.kind == "file" {
                fields.insert("sha256", range_sha256(&f, e.lba as u64 * 2048, e.size, p)?);
            }
            files.push((e.path.clone(), fields));
        }
        Ok((meta, files))
    };
    let ((ma, fa), (mb, fb)) = (side(a)?, side(b)?);
    let mut out = compare_entries("", &ma, &mb);
    // A changed file that is itself an image (an ESP, an initramfs) is compared entry by entry.
    let (da, db) = (fs::File::open(a).at(a)?, fs::File::open(b).at(b)?);
    let (xa, xb) = (iso_extents(&da, a)?, iso_extents(&db, b)?);
    for c in compare_entries("", &fa, &fb) {
        let inner = match (c.change, xa.get(&c.item), xb.get(&c.item)) {
            ("changed", Some(x), Some(y)) if c.fields.iter().any(|f| f.field == "sha256") => nested(&da, *x, &db, *y, a, b)?,
            _ => None,
        };
        match inner {
            Some(v) if !v.is_empty() => {
                let item = c.item.clone();
                out.push(c);
                out.extend(v.into_iter().map(|mut x| {
                    x.item = format!("{item}: {}", x.item);
                    x
                }));
            }
            _ => out.push(c),
        }
    }
    // The EFI system partition of a hybrid ISO (in its GPT), file by file.
    out.extend(partition_changes(&da, &db, a, b, true)?);
    Ok(out)
}

/// Each regular file of an ISO: path → (byte offset, size).
fn iso_extents(f: &fs::File, p: &Path) -> Result<BTreeMap<String, (u64, u64)>> {
    let d = crate::emit::iso::debug::describe(f, &p.display().to_string(), "").map_err(|e| Error::other(format!("{}: {e}", p.display())))?;
    Ok(d.entries.iter().filter(|e| e.kind == "file").map(|e| (e.path.clone(), (e.lba as u64 * 2048, e.size))).collect())
}

/// The GPT partitions of two images compared by position, entry by entry where both hold a
/// file system stagebox reads (FAT, SquashFS, EROFS); `fat_only` for a hybrid ISO, whose
/// other partitions are the ISO itself.
fn partition_changes(fa: &fs::File, fb: &fs::File, a: &Path, b: &Path, fat_only: bool) -> Result<Vec<Change>> {
    let (pa, pb) = (crate::emit::gpt::partition_spans(fa), crate::emit::gpt::partition_spans(fb));
    let mut out = Vec::new();
    for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
        let prefix = format!("partition {}: ", i + 1);
        let inner = if readback::is_fat(fa, x.0) && readback::is_fat(fb, y.0) {
            nested(fa, *x, fb, *y, a, b)?
        } else if fat_only {
            None
        } else {
            match (readback::span_kind(fa, x.0), readback::span_kind(fb, y.0)) {
                (Some(Format::Squashfs), Some(Format::Squashfs)) => Some(compare_entries("", &squashfs_entries(fa, x.0, a)?, &squashfs_entries(fb, y.0, b)?)),
                (Some(Format::Erofs), Some(Format::Erofs)) => {
                    let side = |f: &fs::File, at: u64, p: &Path| readback::erofs_entries(f, at).map_err(|e| Error::other(format!("{}: {e}", p.display())));
                    let fields = |v: Vec<readback::Entry>| -> Entries {
                        v.into_iter()
                            .map(|e| (e.path, Fields::from([("type", e.kind), ("mode", e.mode), ("owner", format!("{}:{}", e.uid, e.gid)), ("size", e.size.to_string())])))
                            .collect()
                    };
                    Some(compare_entries("", &fields(side(fa, x.0, a)?), &fields(side(fb, y.0, b)?)))
                }
                _ => None,
            }
        };
        out.extend(inner.unwrap_or_default().into_iter().map(|mut c| {
            c.item = format!("{prefix}{}", c.item);
            c
        }));
    }
    Ok(out)
}

/// A SquashFS image's entries (metadata; contents are compared through the image bytes).
fn squashfs_entries(f: &fs::File, at: u64, p: &Path) -> Result<Entries> {
    let d = crate::emit::squashfs::debug::describe_file_at(f, at).map_err(|e| Error::other(format!("{}: {e}", p.display())))?;
    Ok(d.entries
        .iter()
        .map(|e| {
            let mut fields = Fields::new();
            fields.insert("type", e.kind.to_string());
            fields.insert("mode", e.mode.clone());
            fields.insert("owner", format!("{}:{}", e.uid, e.gid));
            fields.insert("mtime", e.mtime.to_string());
            fields.insert("nlink", e.nlink.to_string());
            fields.insert("size", e.size.to_string());
            fields.insert("xattrs", e.xattrs.to_string());
            if let Some(t) = &e.target {
                fields.insert("link", t.clone());
            }
            (e.path.clone(), fields)
        })
        .collect())
}

/// A GPT disk: the partition table lines (`emit::gpt::dump`), each partition's bytes, and a
/// SquashFS partition's entries.
fn disk_changes(a: &Path, b: &Path) -> Result<Vec<Change>> {
    let side = |p: &Path| -> Result<(Entries, Vec<(u64, u64)>)> {
        let f = fs::File::open(p).at(p)?;
        let text = crate::emit::gpt::dump(&f, p)?.unwrap_or_default();
        let mut e = Entries::new();
        let mut parts = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let mut fields = Fields::new();
            fields.insert("line", line.trim().to_string());
            e.push((format!("partition table line {i}"), fields));
            // "  partition N: "NAME" type … sectors A..=B attributes …" (GPT entries).
            if let Some(r) = line.split(" sectors ").nth(1).filter(|_| line.contains(" GUID ")) {
                let r = r.split_whitespace().next().unwrap_or("");
                if let Some((x, y)) = r.split_once("..=") {
                    if let (Ok(x), Ok(y)) = (x.parse::<u64>(), y.parse::<u64>()) {
                        parts.push((x * 512, (y + 1 - x) * 512));
                    }
                }
            }
        }
        for (i, (at, len)) in parts.iter().enumerate() {
            let mut fields = Fields::new();
            fields.insert("sha256", range_sha256(&f, *at, *len, p)?);
            e.push((format!("partition {} bytes", i + 1), fields));
        }
        Ok((e, parts))
    };
    let ((ea, _), (eb, _)) = (side(a)?, side(b)?);
    let mut out = compare_entries("", &ea, &eb);
    let (fa, fb) = (fs::File::open(a).at(a)?, fs::File::open(b).at(b)?);
    out.extend(partition_changes(&fa, &fb, a, b, false)?);
    Ok(out)
}

/// What one entry of an archive says; compared field by field.
type Fields = BTreeMap<&'static str, String>;

/// An archive's entries in archive order: (path, fields).
type Entries = Vec<(String, Fields)>;

fn compare_entries(prefix: &str, a: &Entries, b: &Entries) -> Vec<Change> {
    let ma: BTreeMap<&str, &Fields> = a.iter().map(|(p, f)| (p.as_str(), f)).collect();
    let mb: BTreeMap<&str, &Fields> = b.iter().map(|(p, f)| (p.as_str(), f)).collect();
    let mut out = Vec::new();
    // Walk in A's order, then B's additions in B's order: the first change is the first in
    // the archive.
    for (p, fa) in a {
        match mb.get(p.as_str()) {
            None => out.push(Change { item: format!("{prefix}{p}"), change: "removed", fields: Vec::new() }),
            Some(fb) => {
                let fields = compare_fields(fa, fb);
                if !fields.is_empty() {
                    out.push(Change { item: format!("{prefix}{p}"), change: "changed", fields });
                }
            }
        }
    }
    for (p, _) in b {
        if !ma.contains_key(p.as_str()) {
            out.push(Change { item: format!("{prefix}{p}"), change: "added", fields: Vec::new() });
        }
    }
    let oa: Vec<&str> = a.iter().map(|(p, _)| p.as_str()).filter(|p| mb.contains_key(p)).collect();
    let ob: Vec<&str> = b.iter().map(|(p, _)| p.as_str()).filter(|p| ma.contains_key(p)).collect();
    if let Some(i) = oa.iter().zip(&ob).position(|(x, y)| x != y) {
        out.push(Change {
            item: format!("{prefix}{}", oa[i]),
            change: "moved",
            fields: vec![Field { field: "position".into(), a: format!("{} is entry {i}", oa[i]), b: format!("{} is entry {i}", ob[i]) }],
        });
    }
    out
}

fn compare_fields(a: &Fields, b: &Fields) -> Vec<Field> {
    let keys: std::collections::BTreeSet<&&str> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(*k), b.get(*k));
            (x != y).then(|| Field { field: k.to_string(), a: x.cloned().unwrap_or_else(|| "-".into()), b: y.cloned().unwrap_or_else(|| "-".into()) })
        })
        .collect()
}

fn sha256_hex(d: &[u8]) -> String {
    crate::digest::Digest::of_bytes(d).hex().to_string()
}

fn read_all(p: &Path) -> Result<Vec<u8>> {
    fs::read(p).at(p)
}

fn tar_entries<R: Read + 'static>(r: R, p: &Path) -> Result<Entries> {
    let bad = |e: std::io::Error| Error::other(format!("{}: not a readable tar: {e}", p.display()));
    let mut ar = tar::Archive::new(readback::decompressed(r).map_err(bad)?);
    let mut out = Vec::new();
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let h = e.header().clone();
        let kind = crate::tarfmt::kind_name(h.entry_type());
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut f = Fields::new();
        f.insert("type", kind.into());
        f.insert("mode", format!("{:04o}", h.mode().unwrap_or(0) & 0o7777));
        f.insert("owner", format!("{}:{}", h.uid().unwrap_or(0), h.gid().unwrap_or(0)));
        f.insert("mtime", h.mtime().unwrap_or(0).to_string());
        f.insert("size", e.size().to_string());
        if let Some(l) = e.link_name_bytes() {
            f.insert("link", String::from_utf8_lossy(&l).into_owned());
        }
        if matches!(kind, "char" | "block") {
            f.insert("device", format!("{},{}", h.device_major().ok().flatten().unwrap_or(0), h.device_minor().ok().flatten().unwrap_or(0)));
        }
        if let Ok(Some(x)) = e.pax_extensions() {
            for x in x.flatten() {
                if let Ok(k) = x.key() {
                    if k.starts_with("SCHILY.xattr.") {
                        f.insert("xattrs", format!("{}{}={}", f.get("xattrs").map(|s| format!("{s} ")).unwrap_or_default(), k, sha256_hex(x.value_bytes())));
                    }
                }
            }
        }
        if kind == "file" {
            let mut h = crate::digest::HashWriter::new(std::io::sink());
            std::io::copy(&mut e, &mut h).map_err(bad)?;
            f.insert("content", h.finish().0.hex().to_string());
        }
        out.push((path, f));
    }
    Ok(out)
}

/// Every entry of every archive in `buf` (concatenated, maybe compressed after uncompressed
/// prepended ones, as the kernel reads an initramfs). With more than one archive, names are
/// prefixed `[N] `.
fn cpio_entries(buf: &[u8], p: &Path) -> Result<Entries> {
    use crate::emit::cpio::format::{self, S_IFLNK, S_IFMT, S_IFREG};
    let mut archives: Vec<Entries> = Vec::new();
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut rest: &[u8] = buf;
    let mut owned: Vec<u8>;
    loop {
        while let Some((0, r)) = rest.split_first().map(|(b, r)| (*b, r)) {
            rest = r;
        }
        if rest.is_empty() {
            break;
        }
        if rest.starts_with(format::MAGIC) || rest.starts_with(format::MAGIC_CRC) {
            let (entries, end) = format::parse(rest).map_err(|e| Error::other(format!("{}: damaged cpio: {e}", p.display())))?;
            let mut v = Entries::new();
            for e in &entries {
                let h = &e.header;
                let mut f = Fields::new();
                f.insert("mode", format!("{:06o}", h.mode));
                f.insert("owner", format!("{}:{}", h.uid, h.gid));
                f.insert("mtime", h.mtime.to_string());
                f.insert("size", h.filesize.to_string());
                        // A directory's link count follows from its subdirectories (reported as
                // added or removed themselves); a file's says which paths share it.
                if h.mode & S_IFMT != crate::emit::cpio::format::S_IFDIR {
                    f.insert("nlink", h.nlink.to_string());
                }
                f.insert("rdev", format!("{},{}", h.rdevmajor, h.rdevminor));
                match h.mode & S_IFMT {
                    S_IFLNK => {
                        f.insert("link", String::from_utf8_lossy(e.data).into_owned());
                    }
                    S_IFREG => {
                        f.insert("content", sha256_hex(e.data));
                    }
                    _ => {}
                }
                v.push((String::from_utf8_lossy(e.name).into_owned(), f));
            }
            archives.push(v);
            rest = &rest[end..];
        } else {
            let mut d = readback::decompressed(std::io::Cursor::new(rest.to_vec())).map_err(|e| Error::io(p, e))?;
            owned = Vec::new();
            d.read_to_end(&mut owned).map_err(|e| Error::other(format!("{}: damaged compressed cpio: {e}", p.display())))?;
            if owned.as_slice() == rest {
                return Err(Error::other(format!("{}: neither a cpio archive nor compressed data at byte {}", p.display(), buf.len() - rest.len())));
            }
            bufs.push(std::mem::take(&mut owned));
            // The decompressed stream holds the rest (the kernel reads to its end).
            let inner = cpio_entries(bufs.last().expect("pushed"), p)?;
            archives.push(inner);
            break;
        }
    }
    if archives.len() == 1 {
        return Ok(archives.pop().expect("one"));
    }
    Ok(archives.into_iter().enumerate().flat_map(|(n, v)| v.into_iter().map(move |(p, f)| (format!("[{n}] {p}"), f))).collect())
}

/// Leaf differences of two JSON values, as `/json/pointer` fields.
fn json_fields(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<Field>) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Object(x), V::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{prefix}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => json_fields(&p, u, v, out),
                    (u, v) => out.push(Field { field: p, a: show(u), b: show(v) }),
                }
            }
        }
        (V::Array(x), V::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                json_fields(&format!("{prefix}/{i}"), u, v, out);
            }
        }
        _ if a != b => out.push(Field { field: if prefix.is_empty() { "/".into() } else { prefix.into() }, a: a.to_string(), b: b.to_string() }),
        _ => {}
    }
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn read_json(p: &Path) -> Result<serde_json::Value> {
    let data = fs::read(p).at(p)?;
    serde_json::from_slice(&data).map_err(|e| Error::other(format!("{}: bad JSON: {e}", p.display())))
}

fn blob_path(layout: &Path, digest: &str) -> Result<std::path::PathBuf> {
    let d = crate::digest::Digest::parse(digest)?;
    Ok(layout.join("blobs/sha256").join(d.hex()))
}

/// OCI layouts: index.json, then per manifest (by position) the manifest, its config and
/// each layer's entries. The two `index.json` are read as raw JSON, not through
/// `source::oci_layout::read_index`: the diff reports every field that differs, including
/// ones the typed index does not know.
fn oci_changes(a: &Path, b: &Path) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let (ia, ib) = (read_json(&a.join("index.json"))?, read_json(&b.join("index.json"))?);
    let mut f = Vec::new();
    json_fields("", &ia, &ib, &mut f);
    if !f.is_empty() {
        out.push(Change { item: "index.json".into(), change: "changed", fields: f });
    }
    let empty = Vec::new();
    let ma = ia.get("manifests").and_then(|m| m.as_array()).unwrap_or(&empty);
    let mb = ib.get("manifests").and_then(|m| m.as_array()).unwrap_or(&empty);
    for (n, (da, db)) in ma.iter().zip(mb).enumerate() {
        let dig = |d: &serde_json::Value| d.get("digest").and_then(|x| x.as_str()).unwrap_or("").to_string();
        if dig(da) == dig(db) {
            continue;
        }
        let (xa, xb) = (read_json(&blob_path(a, &dig(da))?)?, read_json(&blob_path(b, &dig(db))?)?);
        let item = |s: &str| if ma.len() > 1 { format!("manifest {n}: {s}") } else { s.to_string() };
        let (ca, cb) = (&xa["config"], &xb["config"]);
        if ca != cb {
            let (ja, jb) = (read_json(&blob_path(a, ca["digest"].as_str().unwrap_or(""))?)?, read_json(&blob_path(b, cb["digest"].as_str().unwrap_or(""))?)?);
            let mut f = Vec::new();
            json_fields("", &ja, &jb, &mut f);
            out.push(Change { item: item("config"), change: "changed", fields: f });
        }
        let (la, lb) = (xa["layers"].as_array().unwrap_or(&empty), xb["layers"].as_array().unwrap_or(&empty));
        for (i, (x, y)) in la.iter().zip(lb).enumerate() {
            if x["digest"] == y["digest"] {
                continue;
            }
            let (pa, pb) = (blob_path(a, x["digest"].as_str().unwrap_or(""))?, blob_path(b, y["digest"].as_str().unwrap_or(""))?);
            let (ea, eb) = (tar_entries(fs::File::open(&pa).at(&pa)?, &pa)?, tar_entries(fs::File::open(&pb).at(&pb)?, &pb)?);
            let inner = compare_entries(&item(&format!("layer {i}: ")), &ea, &eb);
            if inner.is_empty() {
                let mut f = Vec::new();
                json_fields("", x, y, &mut f);
                out.push(Change { item: item(&format!("layer {i}")), change: "changed", fields: f });
            }
            out.extend(inner);
        }
        for (i, _) in la.iter().enumerate().skip(lb.len()) {
            out.push(Change { item: item(&format!("layer {i}")), change: "removed", fields: Vec::new() });
        }
        for (i, _) in lb.iter().enumerate().skip(la.len()) {
            out.push(Change { item: item(&format!("layer {i}")), change: "added", fields: Vec::new() });
        }
        let mut f = Vec::new();
        let strip = |m: &serde_json::Value| {
            let mut m = m.clone();
            if let Some(o) = m.as_object_mut() {
                o.remove("config");
                o.remove("layers");
            }
            m
        };
        json_fields("", &strip(&xa), &strip(&xb), &mut f);
        if !f.is_empty() {
            out.push(Change { item: item("manifest"), change: "changed", fields: f });
        }
    }
    for n in mb.len()..ma.len() {
        out.push(Change { item: format!("manifest {n}"), change: "removed", fields: Vec::new() });
    }
    for n in ma.len()..mb.len() {
        out.push(Change { item: format!("manifest {n}"), change: "added", fields: Vec::new() });
    }
    Ok(out)
}

struct EifSide {
    scan: crate::emit::eif::format::Scan,
    /// sha256 of each section's data, in file order.
    digests: Vec<String>,
    file: fs::File,
}

fn eif_side(p: &Path) -> Result<EifSide> {
    let len = fs::metadata(p).at(p)?.len();
    let f = fs::File::open(p).at(p)?;
    let scan = crate::emit::eif::format::read(&mut std::io::BufReader::with_capacity(1 << 20, &f), len)
        .map_err(|e| Error::other(format!("{}: damaged EIF: {e}", p.display())))?;
    let mut digests = Vec::new();
    for s in &scan.sections {
        let mut r = &f;
        r.seek(SeekFrom::Start(s.offset + crate::emit::eif::format::SECTION_HEADER_LEN as u64)).at(p)?;
        let mut h = crate::digest::HashWriter::new(std::io::sink());
        std::io::copy(&mut r.take(s.size), &mut h).at(p)?;
        digests.push(h.finish().0.hex().to_string());
    }
    Ok(EifSide { scan, digests, file: f })
}

fn section_bytes(side: &EifSide, i: usize, p: &Path) -> Result<Vec<u8>> {
    let s = &side.scan.sections[i];
    let mut r = &side.file;
    r.seek(SeekFrom::Start(s.offset + crate::emit::eif::format::SECTION_HEADER_LEN as u64)).at(p)?;
    let mut v = Vec::new();
    r.take(s.size).read_to_end(&mut v).at(p)?;
    Ok(v)
}

/// EIFs: header fields, PCRs, then each section by position (type, size, content; the
/// cmdline and metadata by value, ramdisks entry by entry).
fn eif_changes(a: &Path, b: &Path) -> Result<Vec<Change>> {
    let (sa, sb) = (eif_side(a)?, eif_side(b)?);
    let mut out = Vec::new();
    let (ha, hb) = (&sa.scan.header, &sb.scan.header);
    let header = |h: &crate::emit::eif::format::Header| -> Fields {
        let mut f = Fields::new();
        f.insert("version", h.version.to_string());
        f.insert("flags", h.flags.to_string());
        f.insert("default_mem", h.default_mem.to_string());
        f.insert("default_cpus", h.default_cpus.to_string());
        f.insert("num_sections", h.num_sections.to_string());
        f.insert("crc32", format!("0x{:08x}", h.crc32));
        f
    };
    let f = compare_fields(&header(ha), &header(hb));
    if !f.is_empty() {
        out.push(Change { item: "header".into(), change: "changed", fields: f });
    }
    let pcrs = |s: &crate::emit::eif::format::Scan| -> Fields { s.pcrs.entries().into_iter().map(|(n, v)| (n, hex::encode(v))).collect() };
    for fl in compare_fields(&pcrs(&sa.scan), &pcrs(&sb.scan)) {
        out.push(Change { item: fl.field.clone(), change: "changed", fields: vec![fl] });
    }
    let (la, lb) = (&sa.scan.sections, &sb.scan.sections);
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i), lb.get(i));
        let name = |s: Option<&crate::emit::eif::format::Section>| s.map(|s| s.kind.name()).unwrap_or("-");
        let item = format!("section {i} ({})", name(x.or(y)));
        let (Some(x), Some(y)) = (x, y) else {
            out.push(Change { item, change: if x.is_some() { "removed" } else { "added" }, fields: Vec::new() });
            continue;
        };
        let mut fa = Fields::new();
        let mut fb = Fields::new();
        for (f, s, d) in [(&mut fa, x, &sa.digests[i]), (&mut fb, y, &sb.digests[i])] {
            f.insert("type", s.kind.name().to_string());
            f.insert("size", s.size.to_string());
            f.insert("content", d.clone());
        }
        let fields = compare_fields(&fa, &fb);
        if fields.is_empty() {
            continue;
        }
        use crate::emit::eif::format::SectionType as S;
        match (x.kind, y.kind) {
            (S::Cmdline, S::Cmdline) => {
                let v = |s: &EifSide| String::from_utf8_lossy(&s.scan.cmdline).into_owned();
                out.push(Change { item, change: "changed", fields: vec![Field { field: "cmdline".into(), a: v(&sa), b: v(&sb) }] });
            }
            (S::Metadata, S::Metadata) => {
                let v = |s: &EifSide| s.scan.metadata.as_deref().and_then(|m| serde_json::from_slice(m).ok()).unwrap_or(serde_json::Value::Null);
                let mut f = Vec::new();
                json_fields("", &v(&sa), &v(&sb), &mut f);
                out.push(Change { item, change: "changed", fields: f });
            }
            (S::Ramdisk, S::Ramdisk) => {
                let (ra, rb) = (section_bytes(&sa, i, a)?, section_bytes(&sb, i, b)?);
                match (cpio_entries(&ra, a), cpio_entries(&rb, b)) {
                    (Ok(ea), Ok(eb)) => {
                        let inner = compare_entries(&format!("{item}: "), &ea, &eb);
                        if inner.is_empty() {
                            out.push(Change { item, change: "changed", fields });
                        }
                        out.extend(inner);
                    }
                    _ => out.push(Change { item, change: "changed", fields }),
                }
            }
            _ => out.push(Change { item, change: "changed", fields }),
        }
    }
    Ok(out)
}
