//! `stagebox inspect`: what an image reference or an output file holds — an image's
//! manifest, config and layers with their digests; a tarball's entries; an EIF's sections
//! and PCRs; an ISO's volumes and boot records; a disk image's GPT and partitions; a
//! SquashFS image's superblock and entries; the entries of a cpio, `.deb`, `.rpm`, Arch or
//! Alpine package and EROFS image. With `--files`: the file tree of any of them, and of an
//! image (its layers flattened as a build would).
//!
//! The format is found by content with the one sniffer, [`crate::emit::readback`]; a file
//! that is none of the formats stagebox writes is an error, never an empty listing.

use crate::emit::readback::{self, Entry, Format};
use crate::error::{Error, IoContext, Result};
use crate::reference::{ImageRef, RefKind};
use crate::source::{self, SourceOptions, Store};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    pub media_type: String,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    #[serde(rename = "ref")]
    pub reference: String,
    pub pin: String,
    pub manifest_digest: String,
    pub config: serde_json::Value,
    pub layers: Vec<LayerInfo>,
}

/// A tar, cpio, package or EROFS image, entry by entry.
#[derive(Debug, Serialize)]
pub struct ArchiveInfo {
    pub file: String,
    /// `tar`, `cpio`, `deb`, `rpm`, `arch`, `apk`, `erofs` (see [`Format`]).
    pub format: Format,
    pub compression: String,
    pub sha256: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Inspection {
    Image(ImageInfo),
    Archive(ArchiveInfo),
    Eif(Box<crate::emit::eif::debug::Description>),
    /// A SquashFS image and its path (the path finds the manifest that records a verity root
    /// hash for it).
    Squashfs {
        #[serde(flatten)]
        description: Box<crate::emit::squashfs::debug::Description>,
        file: String,
    },
    /// A GPT disk image: its partition tables and what each partition holds, as text.
    Disk { file: String, partitions: String },
    Iso(Box<crate::emit::iso::debug::Description>),
    /// `--files`: the file tree of an image or output.
    Files(FileList),
}

/// The file tree of an image (flattened) or of an output (`--files`).
#[derive(Debug, Serialize)]
pub struct FileList {
    /// The image reference or the file.
    pub target: String,
    /// `image`, or the output's format.
    pub format: String,
    pub files: Vec<Entry>,
}

pub fn inspect(target: &str, cache: Option<&Path>, platform: Option<source::Platform>) -> Result<Inspection> {
    inspect_with(target, cache, platform, false)
}

/// [`inspect`], with `offline`: registry images come from the store only.
pub fn inspect_with(target: &str, cache: Option<&Path>, platform: Option<source::Platform>, offline: bool) -> Result<Inspection> {
    inspect_opts(target, cache, platform, offline, false)
}

/// [`inspect_with`], with `files`: the file tree instead of the format's own description.
pub fn inspect_opts(target: &str, cache: Option<&Path>, platform: Option<source::Platform>, offline: bool, files: bool) -> Result<Inspection> {
    let cwd = std::env::current_dir().at(".")?;
    let looks_like_ref = target.starts_with("oci:") || target.starts_with("docker-archive:") || target.starts_with("docker://");
    let p = Path::new(target);
    if !looks_like_ref && p.is_dir() && p.join("oci-layout").is_file() {
        return inspect_opts(&format!("oci:{target}"), cache, platform, offline, files);
    }
    if looks_like_ref || !p.exists() {
        let r = ImageRef::parse(target, &cwd).map_err(|m| Error::Usage(format!("{target}: {m}")))?;
        if matches!(r.kind, RefKind::Dir { .. }) {
            return Err(Error::Usage("inspect takes an image reference or an output file".into()));
        }
        let store = Store::open(&source::store::default_root(cache)?)?;
        let sopts = SourceOptions { platform: platform.unwrap_or_default(), source_date_epoch: 1, offline };
        let img = source::resolve(&store, &r, &sopts)?;
        if files {
            return image_files(&store, img);
        }
        return Ok(Inspection::Image(ImageInfo {
            reference: img.reference.text.clone(),
            pin: img.pin.to_string(),
            manifest_digest: img.manifest_digest.to_string(),
            config: img.config.clone(),
            layers: img
                .layers
                .iter()
                .map(|l| LayerInfo { digest: l.digest.to_string(), size: l.size, diff_id: l.diff_id.to_string(), media_type: l.media_type.clone() })
                .collect(),
        }));
    }
    // The format by content (the sniffer `diff` uses); what it does not know is an error.
    let format = Format::sniff(p)?;
    if files {
        return Ok(Inspection::Files(FileList { target: p.display().to_string(), format: format.key(), files: output_files(format, p)? }));
    }
    match format {
        Format::Eif => inspect_eif(p).map(|d| Inspection::Eif(Box::new(d))),
        Format::Iso => inspect_iso(p).map(|d| Inspection::Iso(Box::new(d))),
        Format::Disk => match crate::boot::disk::describe(p)? {
            Some(partitions) => Ok(Inspection::Disk { file: p.display().to_string(), partitions }),
            None => Err(Error::other(format!("{}: damaged GPT disk image: no readable partition table", p.display()))),
        },
        Format::Squashfs => {
            let d = crate::emit::squashfs::debug::describe_file(p).map_err(|e| Error::other(format!("{}: {e}", p.display())))?;
            Ok(Inspection::Squashfs { description: Box::new(d), file: p.display().to_string() })
        }
        Format::Oci => inspect_opts(&format!("oci:{target}"), cache, platform, offline, files),
        _ => inspect_archive(format, p).map(Inspection::Archive),
    }
}

/// The image's layers flattened (as a build would, contents left in the store) into one
/// file tree, listed in path order; a hardlink names the first path of its file.
fn image_files(store: &Store, img: source::ResolvedImage) -> Result<Inspection> {
    use crate::tree::Kind;
    let target = img.reference.text.clone();
    let progress = crate::progress::Progress::new(true);
    let tree = crate::tree::images::flatten(store, std::slice::from_ref(&img), 0, 0, crate::tree::layer::ContentMode::Index, &progress)?;
    let mut first: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let mut files = Vec::new();
    for (path, node) in tree.walk() {
        if path.is_empty() {
            continue;
        }
        let path = crate::tree::path::show(path);
        let (kind, size, link) = match &node.kind {
            Kind::Dir => ("dir", 0, None),
            Kind::File { content, inode } => match first.get(inode) {
                Some(p) => ("hardlink", 0, Some(p.clone())),
                None => {
                    first.insert(*inode, path.clone());
                    ("file", content.len, None)
                }
            },
            Kind::Symlink { target } => ("symlink", target.len() as u64, Some(String::from_utf8_lossy(target).into_owned())),
            Kind::Char { .. } => ("char", 0, None),
            Kind::Block { .. } => ("block", 0, None),
            Kind::Fifo => ("fifo", 0, None),
        };
        let m = &node.meta;
        files.push(Entry { path, kind: kind.into(), mode: format!("{:04o}", m.mode & 0o7777), uid: m.uid, gid: m.gid, size, mtime: m.mtime.max(0) as u64, link });
    }
    Ok(Inspection::Files(FileList { target, format: "image".into(), files }))
}

/// The file tree of an output: an archive's or file system's entries; an EIF's ramdisks; a
/// disk image's (or a hybrid ISO's) EFI system partition and root file system.
fn output_files(format: Format, p: &Path) -> Result<Vec<Entry>> {
    if let Some(e) = readback::entries(format, p)? {
        if format != Format::Iso {
            return Ok(e);
        }
    }
    let mut out = Vec::new();
    match format {
        Format::Eif => {
            let (_, len) = crate::digest::Digest::of_file(p)?;
            let f = std::fs::File::open(p).at(p)?;
            let scan = crate::emit::eif::format::read(&mut std::io::BufReader::with_capacity(1 << 20, &f), len)
                .map_err(|e| Error::other(format!("{}: damaged EIF: {e}", p.display())))?;
            let ramdisks: Vec<_> = scan.sections.iter().filter(|s| s.kind == crate::emit::eif::format::SectionType::Ramdisk).collect();
            for (i, s) in ramdisks.iter().enumerate() {
                let mut buf = vec![0u8; s.size as usize];
                std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, s.offset + crate::emit::eif::format::SECTION_HEADER_LEN as u64).at(p)?;
                let entries = readback::cpio_entries(&buf).map_err(|e| Error::other(format!("{}: damaged EIF ramdisk {i}: {e}", p.display())))?;
                let prefix = if ramdisks.len() > 1 { format!("[ramdisk {i}] ") } else { String::new() };
                out.extend(entries.into_iter().map(|mut e| {
                    e.path = format!("{prefix}{}", e.path);
                    e
                }));
            }
        }
        Format::Iso | Format::Disk => {
            if format == Format::Iso {
                out.extend(readback::entries(format, p)?.unwrap_or_default());
            }
            let f = std::fs::File::open(p).at(p)?;
            for (i, (at, len)) in crate::emit::gpt::partition_spans(&f).into_iter().enumerate() {
                let prefix = format!("[partition {}] ", i + 1);
                let entries: Vec<Entry> = if readback::is_fat(&f, at) {
                    readback::fat_entries(&f, at, len).map_err(|e| Error::other(format!("{}: partition {}: {e}", p.display(), i + 1)))?.into_iter().map(|x| x.0).collect()
                } else if let Some(kind) = readback::span_kind(&f, at) {
                    partition_entries(&f, kind, at, p)?
                } else {
                    Vec::new()
                };
                out.extend(entries.into_iter().map(|mut e| {
                    e.path = format!("{prefix}{}", e.path);
                    e
                }));
            }
        }
        _ => {}
    }
    Ok(out)
}

/// The entries of a SquashFS or EROFS partition.
fn partition_entries(f: &std::fs::File, kind: Format, at: u64, p: &Path) -> Result<Vec<Entry>> {
    let r = match kind {
        Format::Erofs => readback::erofs_entries(f, at),
        _ => readback::squashfs_entries(f, at),
    };
    r.map_err(|e| Error::other(format!("{}: damaged {} at byte {at}: {e}", p.display(), kind.name())))
}

/// A tar, cpio, package or EROFS image, entry by entry.
fn inspect_archive(format: Format, p: &Path) -> Result<ArchiveInfo> {
    let (sha, _) = crate::digest::Digest::of_file(p)?;
    let compression = readback::content_compression(format, p)?.to_string();
    let entries = readback::entries(format, p)?.unwrap_or_default();
    Ok(ArchiveInfo { file: p.display().to_string(), format, compression, sha256: sha.hex().to_string(), entries })
}

/// An ISO 9660 image's volume descriptors, boot catalog and files.
fn inspect_iso(p: &Path) -> Result<crate::emit::iso::debug::Description> {
    let f = std::fs::File::open(p).at(p)?;
    let (sha, _) = crate::digest::Digest::of_file(p)?;
    crate::emit::iso::debug::describe(&f, &p.display().to_string(), sha.hex())
        .map_err(|e| Error::other(format!("{}: damaged ISO 9660 image: {e}", p.display())))
}

/// An EIF's header, sections, metadata and PCRs. A truncated or malformed file, or one whose
/// CRC does not match its content, is an error (exit 1) that says what is wrong.
fn inspect_eif(p: &Path) -> Result<crate::emit::eif::debug::Description> {
    let (sha, len) = crate::digest::Digest::of_file(p)?;
    let f = std::fs::File::open(p).at(p)?;
    let scan = crate::emit::eif::format::read(&mut std::io::BufReader::with_capacity(1 << 20, f), len)
        .map_err(|e| Error::other(format!("{}: damaged EIF: {e}", p.display())))?;
    if !scan.crc_ok() {
        return Err(Error::other(format!(
            "{}: damaged EIF: CRC32 mismatch: the header says 0x{:08x}, the content gives 0x{:08x}",
            p.display(),
            scan.header.crc32,
            scan.computed_crc
        )));
    }
    Ok(crate::emit::eif::debug::describe(&scan, &p.display().to_string(), sha.hex()))
}

/// Human-readable text for an inspection.
pub fn render(i: &Inspection) -> String {
    let mut s = String::new();
    match i {
        Inspection::Image(img) => {
            s += &format!("image     {}\npin       {}\nmanifest  {}\n", img.reference, img.pin, img.manifest_digest);
            if let Some(c) = img.config.get("config") {
                for k in ["Entrypoint", "Cmd", "Env", "WorkingDir", "User"] {
                    if let Some(v) = c.get(k).filter(|v| !v.is_null()) {
                        s += &format!("{:<10}{}\n", k.to_lowercase(), v);
                    }
                }
            }
            s += &format!("layers    {}\n", img.layers.len());
            for (n, l) in img.layers.iter().enumerate() {
                s += &format!("  {:>2}  {}  {:>12}  {}\n      diff_id {}\n", n + 1, l.digest, l.size, l.media_type, l.diff_id);
            }
        }
        Inspection::Eif(d) => s += &crate::emit::eif::debug::dump(d),
        Inspection::Squashfs { description, file } => {
            s += &crate::emit::squashfs::debug::dump(description);
            s += &crate::boot::verity::recorded(Path::new(file));
        }
        Inspection::Disk { file, partitions } => s += &format!("# {file}: disk image\n{partitions}{}", crate::boot::verity::recorded(Path::new(file))),
        Inspection::Iso(d) => {
            s += &crate::emit::iso::debug::dump(d);
            // The hybrid MBR and GPT of a bootable ISO (emit::gpt), read from the same file.
            s += &crate::emit::gpt::dump_path(Path::new(&d.file));
            s += &crate::boot::verity::recorded(Path::new(&d.file));
        }
        Inspection::Archive(t) => {
            s += &crate::boot::verity::recorded(Path::new(&t.file));
            let what = match t.format {
                Format::Tar => String::new(),
                f => format!("{}, ", f.name()),
            };
            s += &format!("# {} ({what}{}, sha256 {}, {} entries)\n", t.file, t.compression, t.sha256, t.entries.len());
            for e in &t.entries {
                s += &e.line();
                s.push('\n');
            }
        }
        Inspection::Files(l) => {
            s += &format!("# {} ({}, {} entries)\n", l.target, l.format, l.files.len());
            for e in &l.files {
                s += &e.line();
                s.push('\n');
            }
        }
    }
    s
}
