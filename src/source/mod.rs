//! Image sources: resolve a reference to a platform manifest, copy every blob into the
//! content store (checking digest and size), and hand back the layers to flatten.
//!
//! `oci:` layouts ([`oci_layout`]), `oci-archive:` files ([`oci_archive`]), `docker-archive:`
//! files ([`docker_archive`]) and local directories ([`localdir`]) are read here; registries
//! ([`registry`]) over the OCI distribution API.

pub mod attestation;
pub mod docker_archive;
pub mod localdir;
pub mod oci_archive;
pub mod oci_layout;
pub mod registry;
pub mod signature;
pub mod store;

use crate::digest::Digest;
use crate::error::{Error, Result};
pub use crate::reference;
use reference::{ImageRef, RefKind};
pub use store::Store;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Whether [`for_each_parallel`] goes on taking items after one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    /// Start no item after a failure (items already started run to their end).
    Stop,
    /// Run every item whatever fails.
    Continue,
}

/// Run `f` on each of `items` on up to `threads` scoped threads, which take the items in list
/// order (an atomic index); the blob imports and downloads of every source. Returns the
/// failures with their indexes, in list order, so which failure comes first never depends on
/// the scheduling: with [`OnError::Stop`], every item before a failed one was taken earlier
/// and so has finished.
pub(crate) fn for_each_parallel<T: Sync>(items: &[T], threads: usize, on_error: OnError, f: impl Fn(&T) -> Result<()> + Sync) -> Vec<(usize, Error)> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (next, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while !(on_error == OnError::Stop && failed.load(Ordering::SeqCst)) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::SeqCst);
                        errors.lock().unwrap_or_else(|p| p.into_inner()).push((i, e));
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    errors.sort_by_key(|(i, _)| *i);
    errors
}

/// The platform to pick from multi-platform indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

impl Default for Platform {
    fn default() -> Self {
        Platform { os: "linux".into(), arch: "amd64".into() }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((os, arch)) if !os.is_empty() && !arch.is_empty() => Ok(Platform { os: os.into(), arch: arch.into() }),
            _ => Err(format!("platform {s:?} must look like os/arch, e.g. linux/amd64")),
        }
    }
}

impl Platform {
    /// The platform a build of `spec` resolves images for: `--platform` (`cli`), else the
    /// box's `platform`, else linux/amd64.
    pub fn for_box(cli: Option<&Platform>, spec: &crate::spec::BoxSpec) -> Platform {
        match (cli, &spec.platform) {
            (Some(p), _) => p.clone(),
            (None, Some(b)) => Platform { os: b.os.clone(), arch: b.arch.clone() },
            (None, None) => Platform::default(),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// Whether `img`'s config is for `want` (its `os` and `architecture`); `Err` says what it is
/// for. A `dir:` layer is for any platform; a config that names no architecture is taken as
/// it is (nothing to compare).
pub fn check_platform(img: &ResolvedImage, want: &Platform) -> std::result::Result<(), String> {
    if matches!(img.reference.kind, RefKind::Dir { .. }) {
        return Ok(());
    }
    let arch = img.config["architecture"].as_str();
    let os = img.config["os"].as_str();
    match (os, arch) {
        (_, None) => Ok(()),
        (os, Some(arch)) if arch == want.arch && os.is_none_or(|o| o == want.os) => Ok(()),
        (os, Some(arch)) => Err(format!(
            "its image config is for {}/{arch}{}",
            os.unwrap_or("?"),
            img.config["variant"].as_str().map(|v| format!("/{v}")).unwrap_or_default()
        )),
    }
}

/// One layer blob in the store, with what it must decompress to.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub media_type: String,
    /// For messages: the image reference and the layer's position in it.
    pub label: String,
}

/// An image resolved to one platform manifest, with all blobs in the store.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub reference: ImageRef,
    /// The digest a lock file pins: the platform manifest digest for `oci:` and
    /// `oci-archive:` (and registries), the image ID
    /// (config digest) for `docker-archive:`, the layer digest for `dir:`.
    pub pin: Digest,
    pub manifest_digest: Digest,
    pub config: serde_json::Value,
    pub layers: Vec<LayerBlob>,
}

/// Options every source needs.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub platform: Platform,
    pub source_date_epoch: u64,
    /// Use the store only: never contact a registry; say what is missing.
    pub offline: bool,
}

/// Resolve `r` (which must be pinned, or a `dir:`) and import its blobs into `store`.
pub fn resolve(store: &Store, r: &ImageRef, opts: &SourceOptions) -> Result<ResolvedImage> {
    match &r.kind {
        RefKind::OciLayout { dir, tag } => oci_layout::resolve(store, r, dir, tag.as_deref(), opts),
        RefKind::OciArchive { file, tag } => oci_archive::resolve(store, r, file, tag.as_deref(), opts),
        RefKind::DockerArchive { file } => docker_archive::resolve(store, r, file),
        RefKind::Dir { path } => localdir::resolve(store, r, path, localdir::ModePolicy::Normalize, opts.source_date_epoch),
        RefKind::Registry { name, tag } => registry::resolve(store, r, name, tag.as_deref(), opts),
    }
}

/// Parse the config's `rootfs.diff_ids`, checking there is one per layer.
pub(crate) fn diff_ids(config: &serde_json::Value, layers: usize, reference: &str) -> Result<Vec<Digest>> {
    let ids = config["rootfs"]["diff_ids"].as_array().ok_or_else(|| Error::Resolve {
        reference: reference.into(),
        message: "image config has no rootfs.diff_ids".into(),
    })?;
    if ids.len() != layers {
        return Err(Error::Resolve {
            reference: reference.into(),
            message: format!("manifest lists {layers} layers but the config has {} diff_ids", ids.len()),
        });
    }
    ids.iter()
        .map(|v| {
            let s = v.as_str().unwrap_or_default();
            Digest::parse(s).map_err(|e| Error::Resolve { reference: reference.into(), message: format!("config diff_id: {e}") })
        })
        .collect()
}

/// Follow nested indexes from `start` down to the one manifest for `platform` (at most 8
/// levels, in case of a cycle). `fetch` returns a manifest or index blob checked against
/// its digest (and size, when a descriptor gave one). Returns the manifest's digest and bytes.
pub(crate) fn follow_to_manifest(
    r: &ImageRef,
    start: Digest,
    size: Option<u64>,
    platform: &Platform,
    mut fetch: impl FnMut(&Digest, Option<u64>) -> Result<Vec<u8>>,
) -> Result<(Digest, Vec<u8>)> {
    let err = |m: String| Error::Resolve { reference: r.text.clone(), message: m };
    let (mut digest, mut size) = (start, size);
    for _ in 0..=8 {
        let data = fetch(&digest, size)?;
        // An index always has `manifests`; an image manifest never does; an image config has
        // `rootfs` and neither `layers` nor `manifests`. (Only those keys are looked at: the
        // rest is skipped without building a value tree.)
        #[derive(serde::Deserialize)]
        struct Probe {
            manifests: Option<serde::de::IgnoredAny>,
            layers: Option<serde::de::IgnoredAny>,
            rootfs: Option<serde::de::IgnoredAny>,
        }
        // Not JSON, or not an object: the caller's parse as a manifest says what is wrong.
        let probe = serde_json::from_slice::<Probe>(&data).ok();
        if probe.as_ref().is_some_and(|p| p.rootfs.is_some() && p.layers.is_none() && p.manifests.is_none()) {
            return Err(Error::Pin {
                reference: r.text.clone(),
                message: format!("{digest} is an image config, not a manifest or index; pin the manifest that names it"),
            });
        }
        if probe.is_none_or(|p| p.manifests.is_none()) {
            return Ok((digest, data));
        }
        let idx: oci_spec::image::ImageIndex = serde_json::from_slice(&data).map_err(|e| err(format!("index {digest}: {e}")))?;
        let m = oci_layout::pick_platform(r, &idx, platform)?;
        digest = Digest::parse(m.digest().as_ref()).map_err(|e| err(e.to_string()))?;
        size = Some(m.size());
    }
    Err(err("index nesting deeper than 8 levels".into()))
}
