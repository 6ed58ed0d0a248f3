//! Flattening resolved images from the content store: the layer list of a set of images,
//! the limits and worker count a flatten uses, and eviction of store blobs that changed.

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::source::{LayerBlob, ResolvedImage, Store};
use crate::tree::{layer::ContentMode, layer::Limits, Tree};
use std::path::PathBuf;

/// Every layer of `images`, bottom first, with its blob in the store: the list
/// [`flatten`] reads, whose positions are the trees' content `spill` indexes.
fn layer_list(store: &Store, images: &[ResolvedImage]) -> Vec<(PathBuf, LayerBlob)> {
    images.iter().flat_map(|i| i.layers.iter().map(|l| (store.blob_path(&l.digest), l.clone()))).collect()
}

/// Flatten resolved images, bottom first.
pub fn flatten(store: &Store, images: &[ResolvedImage], sde: u64, threads: usize, mode: ContentMode, progress: &Progress) -> Result<Tree> {
    let layers = layer_list(store, images);
    super::flatten(&layers, sde as i64, limits(), worker_threads(threads), mode, progress).map_err(|e| evict_changed(store, &layers, e))
}

/// After a failed flatten: drop every layer blob whose bytes no longer match its name. The
/// store hardlinks layout blobs, so a layout file rewritten in place changes the store's
/// copy too; evicting it keeps the store honest and lets the next build import it again.
fn evict_changed(store: &Store, layers: &[(PathBuf, LayerBlob)], e: Error) -> Error {
    let evicted: Vec<&str> = layers.iter().filter(|(_, l)| store.evict_if_changed(&l.digest)).map(|(_, l)| l.digest.short()).collect();
    if evicted.is_empty() {
        return e;
    }
    Error::other(format!(
        "{e}\n  (the store's copy of {} no longer matched its digest, most likely because the source file was changed in place after an import; removed it from the store)",
        evicted.join(", ")
    ))
}

/// The default limits; `STAGEBOX_MAX_LAYER_BYTES` (undocumented, for tests) replaces the
/// decompression-bomb limit so a test can trip it without inflating 64 GiB.
fn limits() -> Limits {
    let mut l = Limits::default();
    if let Some(v) = std::env::var("STAGEBOX_MAX_LAYER_BYTES").ok().and_then(|v| v.trim().parse().ok()) {
        l.max_layer_bytes = v;
    }
    l
}

/// Worker threads for `threads` as asked on the command line: 0 = one per core.
pub fn worker_threads(threads: usize) -> usize {
    if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads }
}
