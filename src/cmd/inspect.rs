//! `stagebox inspect`: what an image reference or an output file holds — an image's
//! manifest, config and layers with their digests; a tarball's entries; an EIF's sections
//! and PCRs; an ISO's volumes and boot records; a disk image's GPT and partitions; a
//! SquashFS image's superblock and entries.

use super::diff::Format;
use crate::error::{Error, IoContext, Result};
use crate::reference::{ImageRef, RefKind};
use crate::source::{self, SourceOptions, Store};
use serde::Serialize;
use std::io::Read;
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

#[derive(Debug, Serialize)]
pub struct TarEntryInfo {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: String,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TarInfo {
    pub file: String,
    pub compression: String,
    pub sha256: String,
    pub entries: Vec<TarEntryInfo>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Inspection {
    Image(ImageInfo),
    Tar(TarInfo),
    Eif(Box<crate::emit::eif::debug::Description>),
    Squashfs(Box<crate::emit::squashfs::debug::Description>),
    /// A GPT disk image: its partition tables and what each partition holds, as text.
    Disk { file: String, partitions: String },
    Iso(Box<crate::emit::iso::debug::Description>),
}

pub fn inspect(target: &str, cache: Option<&Path>, platform: Option<source::Platform>) -> Result<Inspection> {
    inspect_with(target, cache, platform, false)
}

/// [`inspect`], with `offline`: registry images come from the store only.
pub fn inspect_with(target: &str, cache: Option<&Path>, platform: Option<source::Platform>, offline: bool) -> Result<Inspection> {
    let cwd = std::env::current_dir().at(".")?;
    let looks_like_ref = target.starts_with("oci:") || target.starts_with("docker-archive:") || target.starts_with("docker://");
    let p = Path::new(target);
    if !looks_like_ref && p.is_dir() && p.join("oci-layout").is_file() {
        return inspect_with(&format!("oci:{target}"), cache, platform, offline);
    }
    if looks_like_ref || !p.exists() {
        let r = ImageRef::parse(target, &cwd).map_err(|m| Error::Usage(format!("{target}: {m}")))?;
        if matches!(r.kind, RefKind::Dir { .. }) {
            return Err(Error::Usage("inspect takes an image reference or an output file".into()));
        }
        let store = Store::open(&source::store::default_root(cache)?)?;
        let sopts = SourceOptions { platform: platform.unwrap_or_default(), source_date_epoch: 1, offline };
        let img = source::resolve(&store, &r, &sopts)?;
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
    // The format by content, with the sniffer `diff` uses; anything else is read as a tar.
    match Format::sniff(p) {
        Some(Format::Eif) => return inspect_eif(p).map(|d| Inspection::Eif(Box::new(d))),
        Some(Format::Iso) => {
            if let Some(d) = inspect_iso(p)? {
                return Ok(Inspection::Iso(Box::new(d)));
            }
        }
        Some(Format::Disk) => {
            if let Some(partitions) = crate::boot::disk::describe(p)? {
                return Ok(Inspection::Disk { file: p.display().to_string(), partitions });
            }
        }
        Some(Format::Squashfs) => {
            let d = crate::emit::squashfs::debug::describe_file(p).map_err(|e| Error::other(format!("{}: {e}", p.display())))?;
            return Ok(Inspection::Squashfs(Box::new(d)));
        }
        _ => {}
    }
    inspect_tar(p).map(Inspection::Tar)
}

/// An ISO 9660 image's volume descriptors, boot catalog and files; `None` when `p` is not one.
fn inspect_iso(p: &Path) -> Result<Option<crate::emit::iso::debug::Description>> {
    let f = std::fs::File::open(p).at(p)?;
    if !crate::emit::iso::debug::is_iso(&f) {
        return Ok(None);
    }
    let (sha, _) = crate::digest::Digest::of_file(p)?;
    crate::emit::iso::debug::describe(&f, &p.display().to_string(), sha.hex())
        .map(Some)
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

fn inspect_tar(p: &Path) -> Result<TarInfo> {
    let (sha, _) = crate::digest::Digest::of_file(p)?;
    let mut head = [0u8; 4];
    let n = std::fs::File::open(p).at(p)?.read(&mut head).at(p)?;
    let compression = crate::tree::layer::sniff(&head[..n]).to_string();
    let f = std::fs::File::open(p).at(p)?;
    let r = crate::tree::layer::open_decompressed(f).at(p)?;
    let mut ar = tar::Archive::new(r);
    let mut entries = Vec::new();
    let bad = |e: std::io::Error| Error::other(format!("{}: not a readable tar: {e}", p.display()));
    for e in ar.entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        let h = e.header();
        let kind = crate::tarfmt::kind_name(h.entry_type());
        entries.push(TarEntryInfo {
            path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            kind: kind.into(),
            mode: format!("{:04o}", h.mode().unwrap_or(0) & 0o7777),
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            size: e.size(),
            mtime: h.mtime().unwrap_or(0),
            link: e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()),
        });
    }
    Ok(TarInfo { file: p.display().to_string(), compression, sha256: sha.hex().to_string(), entries })
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
        Inspection::Squashfs(d) => s += &crate::emit::squashfs::debug::dump(d),
        Inspection::Disk { file, partitions } => s += &format!("# {file}: disk image\n{partitions}{}", crate::boot::verity::recorded(Path::new(file))),
        Inspection::Iso(d) => {
            s += &crate::emit::iso::debug::dump(d);
            // The hybrid MBR and GPT of a bootable ISO (emit::gpt), read from the same file.
            s += &crate::emit::gpt::dump_path(Path::new(&d.file));
            s += &crate::boot::verity::recorded(Path::new(&d.file));
        }
        Inspection::Tar(t) => {
            s += &crate::boot::verity::recorded(Path::new(&t.file));
            s += &format!("# {} ({}, sha256 {}, {} entries)\n", t.file, t.compression, t.sha256, t.entries.len());
            for e in &t.entries {
                let link = e.link.as_deref().map(|l| format!(" -> {l}")).unwrap_or_default();
                s += &format!("{:<8} {} {:>5}:{:<5} {:>10} {:>10}  {}{}\n", e.kind, e.mode, e.uid, e.gid, e.size, e.mtime, e.path, link);
            }
        }
    }
    s
}
