//! `oci:DIR` sources: an OCI image layout on disk (index → nested index → platform manifest),
//! selected by tag or by digest.
//!
//! The resolution is written once over `LayoutFiles`, so an `oci-archive:` (the same layout
//! as members of a tar, [`super::oci_archive`]) is read, checked and reported in the same way.

use super::{diff_ids, LayerBlob, Platform, ResolvedImage, SourceOptions, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::ImageRef;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use std::io::Read;
use std::path::{Path, PathBuf};

pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn err(r: &ImageRef, message: impl Into<String>) -> Error {
    Error::Resolve { reference: r.text.clone(), message: message.into() }
}

/// The path of blob `d` inside a layout (`blobs/sha256/HEX`).
pub(crate) fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The files of an OCI image layout wherever they are kept: a directory ([`DirFiles`]) or the
/// members of a tar file ([`super::oci_archive::ArchiveFiles`]). `name` is a path inside the
/// layout: `oci-layout`, `index.json`, `blobs/sha256/HEX`. Shared by the threads of
/// [`import_all`].
pub(crate) trait LayoutFiles: Sync {
    /// The layout as a whole, for messages (the directory or the archive file).
    fn describe(&self) -> String;
    /// Where `name` is, for messages.
    fn location(&self, name: &str) -> String;
    /// The size of `name`; an error when it is absent.
    fn len(&self, name: &str) -> std::io::Result<u64>;
    /// Read `name` (at most `len` bytes are ever returned).
    fn open(&self, name: &str) -> std::io::Result<Box<dyn Read + '_>>;
    /// Copy blob `d` (member `name`) into the store, checking digest and size.
    fn import(&self, store: &Store, label: &str, d: &Digest, size: u64) -> Result<()>;
}

/// A layout directory.
pub(crate) struct DirFiles<'a>(pub &'a Path);

impl DirFiles<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl LayoutFiles for DirFiles<'_> {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
    fn location(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    fn len(&self, name: &str) -> std::io::Result<u64> {
        let m = std::fs::metadata(self.path(name))?;
        if !m.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(m.len())
    }
    fn open(&self, name: &str) -> std::io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(std::fs::File::open(self.path(name))?))
    }
    fn import(&self, store: &Store, label: &str, d: &Digest, size: u64) -> Result<()> {
        store.put_file(label, d, Some(size), &self.path(&blob_name(d)))
    }
}

/// Read a small blob from the layout, checking digest (and size when known).
/// Largest manifest, index or config read into memory (registries cap manifests at 4 MiB).
/// A config is parsed into a JSON value tree, which can take ~30 times its text (`[[],[],..]`):
/// 4 MiB keeps that parse well under 200 MiB (docs/limits.md).
pub const MAX_JSON_BLOB: u64 = 4 << 20;

fn read_blob(r: &ImageRef, files: &dyn LayoutFiles, what: &str, d: &Digest, size: Option<u64>) -> Result<Vec<u8>> {
    let name = blob_name(d);
    let at = files.location(&name);
    let have = files.len(&name).map_err(|e| err(r, format!("{what} {d}: cannot read {at}: {e}")))?;
    if let Some(s) = size.filter(|s| *s != have) {
        return Err(Error::SizeMismatch { what: format!("{what} {d} of {}", r.text), expected: s, found: have });
    }
    if have > MAX_JSON_BLOB {
        return Err(err(r, format!("{what} {d} is {have} bytes; refusing JSON blobs over {MAX_JSON_BLOB}")));
    }
    let mut data = Vec::with_capacity(have as usize);
    files
        .open(&name)
        .and_then(|f| f.take(have).read_to_end(&mut data))
        .map_err(|e| err(r, format!("{what} {d}: cannot read {at}: {e}")))?;
    let found = Digest::of_bytes(&data);
    if &found != d {
        return Err(Error::DigestMismatch { what: format!("{what} {at} of {}", r.text), expected: d.to_string(), found: found.to_string() });
    }
    if let Some(s) = size {
        if s != data.len() as u64 {
            return Err(Error::SizeMismatch { what: format!("{what} {d} of {}", r.text), expected: s, found: data.len() as u64 });
        }
    }
    Ok(data)
}

/// Bring every layer blob into the store, one per core at a time: hashing them (each is
/// checked before it is linked or copied in) is most of a resolve's time, and the blobs are
/// independent. Workers take the layers in order and each stops at its first error; a layer
/// before a failed one was taken earlier and so was finished, hence the error returned (the
/// first failed layer's) does not depend on the scheduling.
fn import_all(files: &dyn LayoutFiles, store: &Store, layers: &[LayerBlob]) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let failed = super::for_each_parallel(layers, threads, super::OnError::Stop, |l| files.import(store, &l.label, &l.digest, l.size));
    match failed.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

fn desc_digest(r: &ImageRef, d: &Descriptor) -> Result<Digest> {
    Digest::parse(d.digest().as_ref()).map_err(|e| err(r, e.to_string()))
}

/// Pick the descriptor for `platform` from an index; attestation manifests are skipped.
pub(crate) fn pick_platform<'a>(r: &ImageRef, index: &'a ImageIndex, platform: &Platform) -> Result<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|m| {
            m.annotations().as_ref().is_none_or(|a| !a.contains_key("vnd.docker.reference.type"))
        })
        .collect();
    let matching: Vec<&Descriptor> = candidates
        .iter()
        .copied()
        .filter(|m| match m.platform() {
            Some(p) => p.os().to_string() == platform.os && p.architecture().to_string() == platform.arch,
            None => false,
        })
        .collect();
    match (matching.as_slice(), candidates.as_slice()) {
        ([one], _) => Ok(one),
        ([], [only]) if only.platform().is_none() => Ok(only),
        ([], _) => {
            let has: Vec<String> = candidates
                .iter()
                .map(|m| match m.platform() {
                    Some(p) => format!("{}/{}{} ({})", p.os(), p.architecture(), p.variant().as_ref().map(|v| format!("/{v}")).unwrap_or_default(), m.digest()),
                    None => format!("no platform ({})", m.digest()),
                })
                .collect();
            Err(Error::Pin {
                reference: r.text.clone(),
                message: format!(
                    "the index has no manifest for {}/{}; it has: {} (build for one of them with the box's `platform` or --platform)",
                    platform.os,
                    platform.arch,
                    if has.is_empty() { "nothing".to_string() } else { has.join(", ") }
                ),
            })
        }
        (many, _) => Err(err(r, format!("the index has {} manifests for {}/{}; pin one by digest", many.len(), platform.os, platform.arch))),
    }
}

/// One thing a layout's index offers, for messages: a manifest or an index (`depth` 1 for
/// the platform manifests of an index the top level lists).
struct Offer {
    digest: String,
    depth: usize,
    is_index: bool,
    tag: Option<String>,
    platform: Option<String>,
    /// A manifest's config digest.
    config: Option<String>,
}

/// Everything `top` lists, with the platform manifests of each index it lists (blobs that
/// cannot be read are listed without what they would have told).
fn offers(r: &ImageRef, files: &dyn LayoutFiles, top: &ImageIndex) -> Vec<Offer> {
    fn walk(r: &ImageRef, files: &dyn LayoutFiles, list: &[Descriptor], depth: usize, out: &mut Vec<Offer>) {
        for m in list {
            let Ok(d) = desc_digest(r, m) else { continue };
            let json: Option<serde_json::Value> =
                read_blob(r, files, "manifest", &d, Some(m.size())).ok().and_then(|b| serde_json::from_slice(&b).ok());
            let nested = json.as_ref().and_then(|j| serde_json::from_value::<ImageIndex>(j.clone()).ok().filter(|_| j.get("manifests").is_some()));
            out.push(Offer {
                digest: d.to_string(),
                depth,
                is_index: nested.is_some() || m.media_type().to_string().contains("index") || m.media_type().to_string().contains("list"),
                tag: ref_name(m).map(str::to_string),
                platform: m.platform().as_ref().map(|p| format!("{}/{}", p.os(), p.architecture())),
                config: json.as_ref().and_then(|j| j["config"]["digest"].as_str()).map(str::to_string),
            });
            if let (Some(idx), true) = (nested, depth < 2) {
                walk(r, files, idx.manifests(), depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(r, files, top.manifests(), 0, &mut out);
    out
}

/// The lines of [`offers`] as a message shows them: digest, what it is, tag, platform.
fn render_offers(list: &[Offer]) -> String {
    if list.is_empty() {
        return "\n  (nothing: its index.json lists no manifest)".into();
    }
    let mut s = String::new();
    for o in list {
        s.push_str(&format!("\n  {}{} {}", "  ".repeat(o.depth), o.digest, if o.is_index { "index" } else { "manifest" }));
        if let Some(p) = &o.platform {
            s.push_str(&format!(" {p}"));
        }
        if let Some(t) = &o.tag {
            s.push_str(&format!(" (tag {t:?})"));
        }
    }
    s
}

/// A pinned digest `d` that the index does not list: fine when it is a manifest the layout
/// holds (a platform manifest of a listed index); an [`Error::Pin`] naming what the layout
/// offers when it is absent, or the image config, which is no manifest.
fn check_unlisted_pin(r: &ImageRef, files: &dyn LayoutFiles, top: &ImageIndex, d: &Digest) -> Result<()> {
    let pin_err = |message: String| Error::Pin { reference: r.text.clone(), message };
    let list = offers(r, files, top);
    if files.len(&blob_name(d)).is_err() {
        return Err(pin_err(format!("the pinned digest {d} is not in the layout {}; its index offers:{}", files.describe(), render_offers(&list))));
    }
    if let Some(o) = list.iter().find(|o| o.config.as_deref() == Some(d.as_str())) {
        return Err(pin_err(format!(
            "{d} is the image config, not a manifest or index; pin the manifest {} (`@{}`){}",
            o.digest,
            o.digest,
            o.platform.as_ref().map(|p| format!(", {p}")).unwrap_or_default()
        )));
    }
    Ok(())
}

/// The `index.json` of the OCI image layout at `layout` (the store's or an output's), read
/// with the same bound as every JSON blob ([`MAX_JSON_BLOB`]); errors name the file.
pub fn read_index(layout: &Path) -> Result<ImageIndex> {
    index_in(&DirFiles(layout))
}

/// The `index.json` of the layout `files` (a directory or an archive), read with the bound
/// of every JSON blob; errors name the file. The one reader of a layout's index: the store,
/// `oci:`/`oci-archive:` sources and `verify-build` all come here.
fn index_in(files: &dyn LayoutFiles) -> Result<ImageIndex> {
    let at = files.location("index.json");
    let len = files.len("index.json").map_err(|e| Error::io(&at, e))?;
    if len > MAX_JSON_BLOB {
        return Err(Error::other(format!("{at} is {len} bytes; refusing JSON over {MAX_JSON_BLOB}")));
    }
    let mut bytes = Vec::new();
    files.open("index.json").and_then(|f| f.take(len).read_to_end(&mut bytes)).map_err(|e| Error::io(&at, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::other(format!("{at}: {e}")))
}

/// The tag a descriptor of an index carries (its `org.opencontainers.image.ref.name`).
pub(crate) fn ref_name(m: &Descriptor) -> Option<&str> {
    m.annotations().as_ref().and_then(|a| a.get(REF_NAME)).map(String::as_str)
}

/// The digest of the manifest `index` lists under the `org.opencontainers.image.ref.name`
/// annotation `name`.
pub fn tagged(index: &ImageIndex, name: &str) -> Option<Digest> {
    let m = index.manifests().iter().find(|m| ref_name(m) == Some(name))?;
    Digest::parse(m.digest().as_ref()).ok()
}

pub fn resolve(store: &Store, r: &ImageRef, dir: &Path, tag: Option<&str>, opts: &SourceOptions) -> Result<ResolvedImage> {
    resolve_files(store, r, &DirFiles(dir), tag, opts)
}

/// Resolve `r` in the layout `files` (a directory or an archive) and import its blobs.
pub(crate) fn resolve_files(store: &Store, r: &ImageRef, files: &dyn LayoutFiles, tag: Option<&str>, opts: &SourceOptions) -> Result<ResolvedImage> {
    if files.len("oci-layout").is_err() {
        return Err(err(r, format!("{} is not an OCI image layout (no oci-layout file)", files.describe())));
    }
    let index_path = files.location("index.json");
    let top = index_in(files).map_err(|e| err(r, e.to_string()))?;

    // The starting point: a pinned digest, a tag, or the only manifest.
    let (digest, size) = if let Some(d) = &r.digest {
        let listed = top.manifests().iter().find(|m| m.digest().to_string() == d.as_str()).map(|m| m.size());
        if listed.is_none() {
            check_unlisted_pin(r, files, &top, d)?;
        }
        (d.clone(), listed)
    } else if let Some(t) = tag {
        let m = top
            .manifests()
            .iter()
            .find(|m| ref_name(m) == Some(t))
            .ok_or_else(|| err(r, format!("no manifest tagged {t:?} in {index_path}")))?;
        (desc_digest(r, m)?, Some(m.size()))
    } else {
        match top.manifests().as_slice() {
            [m] => (desc_digest(r, m)?, Some(m.size())),
            ms => return Err(err(r, format!("the layout holds {} manifests; name one with :TAG or @sha256:…", ms.len()))),
        }
    };

    let (manifest_digest, manifest_bytes) =
        super::follow_to_manifest(r, digest, size, &opts.platform, |d, size| read_blob(r, files, "manifest", d, size))?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| err(r, format!("manifest {manifest_digest}: {e}")))?;

    let cfg_desc = manifest.config();
    let cfg_digest = desc_digest(r, cfg_desc)?;
    let cfg_bytes = read_blob(r, files, "config", &cfg_digest, Some(cfg_desc.size()))?;
    let config: serde_json::Value =
        serde_json::from_slice(&cfg_bytes).map_err(|e| err(r, format!("config {cfg_digest}: {e}")))?;
    let ids = diff_ids(&config, manifest.layers().len(), &r.text)?;

    store.put_bytes(&manifest_bytes)?;
    store.put_bytes(&cfg_bytes)?;
    let mut layers = Vec::new();
    for (i, (l, diff_id)) in manifest.layers().iter().zip(ids).enumerate() {
        let d = desc_digest(r, l)?;
        let label = format!("{} #{} ({})", r.text, i + 1, d.short());
        let name = blob_name(&d);
        if files.len(&name).is_err() && !store.has(&d) {
            return Err(err(r, format!("layer {} blob {d} is missing from the layout ({})", i + 1, files.location(&name))));
        }
        layers.push(LayerBlob { digest: d, size: l.size(), diff_id, media_type: l.media_type().to_string(), label });
    }
    import_all(files, store, &layers)?;
    store.add_to_index(&format!("sha256-{}", manifest_digest.hex()), &manifest.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| super::MT_OCI_MANIFEST.into()), &manifest_digest, manifest_bytes.len() as u64)?;

    Ok(ResolvedImage { reference: r.clone(), pin: manifest_digest.clone(), manifest_digest, config, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers whose import fails (or succeeds) after a set delay.
    struct Timed(Vec<(u64, bool)>);

    impl LayoutFiles for Timed {
        fn describe(&self) -> String {
            "timed".into()
        }
        fn location(&self, name: &str) -> String {
            name.into()
        }
        fn len(&self, _: &str) -> std::io::Result<u64> {
            Ok(0)
        }
        fn open(&self, _: &str) -> std::io::Result<Box<dyn Read + '_>> {
            Ok(Box::new(std::io::empty()))
        }
        fn import(&self, _: &Store, label: &str, _: &Digest, size: u64) -> Result<()> {
            let (ms, ok) = self.0[size as usize];
            std::thread::sleep(std::time::Duration::from_millis(ms));
            if ok {
                Ok(())
            } else {
                Err(Error::other(format!("{label} failed")))
            }
        }
    }

    /// With two workers, layer 2 fails at once while layer 1 fails later: the error is
    /// layer 1's, the first in layer order, not the first in time.
    #[test]
    fn import_all_reports_the_first_failed_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"");
        let files = Timed(vec![(300, false), (0, false), (0, true)]);
        let layers: Vec<LayerBlob> = (0..files.0.len())
            .map(|i| LayerBlob { digest: d.clone(), size: i as u64, diff_id: d.clone(), media_type: String::new(), label: format!("layer #{}", i + 1) })
            .collect();
        let e = import_all(&files, &store, &layers).unwrap_err().to_string();
        assert!(e.contains("layer #1 failed"), "{e}");
        assert!(import_all(&Timed(vec![(0, true); 5]), &store, &layers[..0]).is_ok());
    }
}
