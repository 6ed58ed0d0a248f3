//! The `[output.deb|rpm|arch|apk]` of a build: pick the layers a package takes, flatten just
//! those (with `build::flatten`, contents spilled so the writers can stream them), collect
//! the payload, and write each package atomically with its manifest record.
//!
//! Layer selection (docs/packages.md): `layers = [i, ...]` names `[[layer]]` tables by index;
//! by default every `[[layer]]` but the first (the base filesystem, such as StageX's
//! core-filesystem, stays with the target system). A box with a single `[[layer]]` is one
//! image — a StageX package image is core-filesystem plus the package's own layer — so its
//! default is that image's layers but its first. With `paths` and no `layers`, all layers.

use crate::emit::pkg::{self, Meta, Payload};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::AtomicFile;
use crate::measure::OutputRecord;
use crate::progress::Progress;
use crate::source::{ResolvedImage, Store};
use crate::spec::{BoxSpec, LayerSpec, PackageFormat, PackageSpec};
use crate::tree::layer::ContentMode;
use std::path::Path;

/// How many resolved images each `[[layer]]` table became (a pallet is several).
fn images_per_layer(spec: &BoxSpec) -> Vec<usize> {
    spec.layers
        .iter()
        .map(|l| match l {
            LayerSpec::Pallet { pallet, .. } => pallet.images.len(),
            LayerSpec::Image { .. } | LayerSpec::Dir { .. } => 1,
        })
        .collect()
}

/// The images (possibly with fewer layers) a package is made from.
pub fn select(spec: &BoxSpec, p: &PackageSpec, images: &[ResolvedImage]) -> Result<Vec<ResolvedImage>> {
    let counts = images_per_layer(spec);
    debug_assert_eq!(counts.iter().sum::<usize>(), images.len());
    let mut groups = Vec::new();
    let mut at = 0;
    for c in &counts {
        groups.push(&images[at..at + c]);
        at += c;
    }
    let chosen: Vec<ResolvedImage> = match (&p.layers, &p.paths) {
        (Some(idx), _) => idx.iter().flat_map(|i| groups[*i].iter().cloned()).collect(),
        (None, Some(_)) => images.to_vec(),
        (None, None) if groups.len() > 1 => groups[1..].iter().flat_map(|g| g.iter().cloned()).collect(),
        (None, None) => {
            let mut v = images.to_vec();
            if let Some(first) = v.first_mut() {
                if first.layers.len() > 1 {
                    first.layers.remove(0);
                } else if v.len() > 1 {
                    v.remove(0);
                } else {
                    return Err(p.at.error(format!(
                        "the box has one [[layer]] with one layer: nothing is left once the base layer is left out; set `layers = [0]` in [output.{}] to package it whole",
                        p.format.key()
                    )));
                }
            }
            v
        }
    };
    Ok(chosen)
}

/// Build one package into `out` (the build's staging directory).
#[allow(clippy::too_many_arguments)]
pub fn emit(
    spec: &BoxSpec,
    p: &PackageSpec,
    store: &Store,
    images: &[ResolvedImage],
    oci_arch: &str,
    sde: u64,
    threads: usize,
    out: &Path,
    progress: &Progress,
) -> Result<OutputRecord> {
    let chosen = select(spec, p, images)?;
    let tree = crate::build::flatten(store, &chosen, sde, threads, ContentMode::Spill, progress)?;
    let payload = Payload::collect(&tree, p.paths.as_deref(), p.format)?;
    let sources = chosen.iter().map(|i| (i.reference.text.clone(), i.pin.to_string())).collect();
    let meta = Meta::resolve(p, oci_arch, sources, sde)?;
    let name = meta.file_name(p.format);
    let path = out.join(&name);
    progress.set_message(format!("write {name}"));
    let mut af = AtomicFile::create(&path)?;
    let tmp = path.with_file_name(af.temp_name());
    let werr = |e: std::io::Error| Error::io(&path, e);
    match p.format {
        PackageFormat::Deb => pkg::deb::write(&payload, &meta, threads, af.file()).map_err(werr)?,
        PackageFormat::Rpm => pkg::rpm::write(&payload, &meta, threads, af.file()).map_err(werr)?,
        PackageFormat::Arch => pkg::arch::write(&payload, &meta, threads, std::io::BufWriter::with_capacity(1 << 20, af.file())).map_err(werr)?,
        PackageFormat::Apk => pkg::apk::write(&payload, &meta, threads, out, std::io::BufWriter::with_capacity(1 << 20, af.file())).map_err(werr)?,
    }
    std::io::Write::flush(af.file()).at(&tmp)?;
    let (d, size) = crate::digest::Digest::of_file(&tmp)?;
    af.commit()?;
    Ok(OutputRecord { format: p.format.key().into(), path: name, sha256: d.hex().to_string(), size, pcrs: None })
}
