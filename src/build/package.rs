//! The `[output.deb|rpm|arch|apk]` of a build: pick the layers a package takes, flatten just
//! those (with `tree::images::flatten`, contents spilled so the writers can stream them), collect
//! the payload, and write each package atomically with its manifest record.
//!
//! Layer selection (docs/packages.md): `layers = [i, ...]` names `[[layer]]` tables by index;
//! by default every `[[layer]]` but the first (the base filesystem, such as StageX's
//! core-filesystem, stays with the target system). A box with a single `[[layer]]` is one
//! image — a StageX package image is core-filesystem plus the package's own layer — so its
//! default is that image's layers but its first. With `paths` and no `layers`, all layers.

use crate::emit::pkg::{self, Meta, Payload};
use crate::error::{Error, IoContext, Result};
use super::Plan;
use crate::measure::{stage_file, OutputRecord};
use crate::source::ResolvedImage;
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
pub fn emit(plan: &Plan, p: &PackageSpec, out: &Path) -> Result<OutputRecord> {
    let (spec, sde, threads) = (&plan.spec, plan.sde, plan.threads);
    let chosen = select(spec, p, &plan.images)?;
    let tree = crate::tree::images::flatten(&plan.store, &chosen, sde, threads, ContentMode::Spill, &plan.progress)?;
    let payload = Payload::collect(&tree, p.paths.as_deref(), p.format)?;
    let sources = chosen.iter().map(|i| (i.reference.text.clone(), i.pin.to_string())).collect();
    let meta = Meta::resolve(p, &plan.sopts.platform.arch, sources, sde)?;
    let name = meta.file_name(p.format);
    plan.progress.set_message(format!("write {name}"));
    stage_file(out, p.format.key(), name, |file, path| {
        let werr = |e: std::io::Error| Error::io(path, e);
        match p.format {
            PackageFormat::Deb => pkg::deb::write(&payload, &meta, threads, &mut *file).map_err(werr)?,
            PackageFormat::Rpm => pkg::rpm::write(&payload, &meta, threads, &mut *file).map_err(werr)?,
            PackageFormat::Arch => pkg::arch::write(&payload, &meta, threads, std::io::BufWriter::with_capacity(1 << 20, &mut *file)).map_err(werr)?,
            PackageFormat::Apk => pkg::apk::write(&payload, &meta, threads, out, std::io::BufWriter::with_capacity(1 << 20, &mut *file)).map_err(werr)?,
        }
        std::io::Write::flush(file).at(path)?;
        Ok(None)
    })
}
