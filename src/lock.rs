//! `stagebox lock`: resolve every image reference of a box to the digest a build pins, and
//! write `BOX.lock` beside the box file.

use crate::build::image_refs;
use crate::error::Result;
use crate::source::reference::RefKind;
use crate::source::{self, SourceOptions, Store};
use crate::spec::{self, LockFile, LockedImage};
use std::path::Path;

pub fn lock(box_path: &Path, cache: Option<&Path>, platform: Option<source::Platform>) -> Result<LockFile> {
    let spec = spec::load_box(box_path)?;
    let sde = crate::build::source_date_epoch(&spec)?;
    let store = Store::open(&source::store::default_root(cache)?)?;
    let sopts = SourceOptions { platform: platform.unwrap_or_default(), source_date_epoch: sde };
    let mut lock = LockFile { version: 1, images: Vec::new() };
    for (r, _) in image_refs(&spec) {
        if matches!(r.kind, RefKind::Dir { .. }) || lock.images.iter().any(|i| i.reference == r.text) {
            continue;
        }
        let res = source::resolve(&store, &r, &sopts)?;
        lock.images.push(LockedImage { reference: r.text.clone(), digest: res.pin.to_string() });
    }
    crate::fsutil::write_atomic(&spec::lock_path(box_path), lock.to_toml().as_bytes())?;
    Ok(lock)
}
