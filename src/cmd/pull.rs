//! `stagebox pull BOX.toml… | REF…`: fill the content store with every image a box needs (its
//! layers, pallets, kernel and bootloaders, for its platform) or with the images named, so a
//! later `build --offline` (on this machine, or on one the store is carried to) needs no
//! network.
//!
//! Pulling is resolving: each image goes through [`crate::source::resolve`], the same code a
//! build uses, which verifies every blob into the store and records a pulled tag for an
//! offline `lock`. There is no second fetch path.

use crate::error::{IoContext, Result};
use crate::reference::{ImageRef, RefKind};
use crate::source::{self, Platform, SourceOptions, Store};
use crate::spec;
use std::path::{Path, PathBuf};

/// Settings of `stagebox pull`.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub cache: Option<PathBuf>,
    /// Overrides each box's `platform` (and the default linux/amd64 for references).
    pub platform: Option<Platform>,
}

/// One image now in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pulled {
    /// The reference as written (in the box, pallet or definition, or on the command line).
    #[serde(rename = "ref")]
    pub reference: String,
    /// What it is pinned by (manifest digest; image ID for `docker-archive:`).
    pub digest: String,
    pub platform: String,
}

/// Whether a command-line target names a box file rather than an image reference.
fn is_box_file(target: &str) -> bool {
    target.ends_with(".toml")
}

/// Pull every target into the store; a box's images are pinned by the box or its BOX.lock
/// (a reference neither pins is pulled by tag, and the tag recorded for `lock --offline`).
pub fn pull(targets: &[String], opts: &PullOptions) -> Result<Vec<Pulled>> {
    let store = Store::open(&source::store::default_root(opts.cache.as_deref())?)?;
    let cwd = std::env::current_dir().at(".")?;
    let mut out: Vec<Pulled> = Vec::new();
    let mut pull_one = |r: &ImageRef, platform: &Platform, at: Option<&spec::Location>| -> Result<()> {
        if matches!(r.kind, RefKind::Dir { .. }) || out.iter().any(|p| p.reference == r.text && p.platform == platform.to_string()) {
            return Ok(());
        }
        let sopts = SourceOptions { platform: platform.clone(), source_date_epoch: 1, offline: false };
        let img = source::resolve(&store, r, &sopts).map_err(|e| match at {
            Some(at) => at.locate(e),
            None => e,
        })?;
        out.push(Pulled { reference: r.text.clone(), digest: img.pin.to_string(), platform: platform.to_string() });
        Ok(())
    };
    for t in targets {
        if is_box_file(t) {
            let mut spec = spec::load_box(Path::new(t))?;
            let platform = Platform::for_box(opts.platform.as_ref(), &spec);
            spec.select_platform(&platform.to_string())?;
            let lock = spec::LockFile::load(&spec::lock_path(&spec.path))?;
            for (r, at) in spec.image_refs() {
                let pinned = match (&r.digest, lock.as_ref().and_then(|l| l.get(&r.text))) {
                    (None, Some(d)) => r.with_digest(d),
                    _ => r.clone(),
                };
                pull_one(&pinned, &platform, Some(&at))?;
            }
        } else {
            let r = ImageRef::parse(t, &cwd).map_err(|m| crate::Error::Usage(format!("{t}: {m}")))?;
            pull_one(&r, &opts.platform.clone().unwrap_or_default(), None)?;
        }
    }
    Ok(out)
}
