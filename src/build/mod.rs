//! `stagebox build`: box file → [`Plan`] (pinned inputs, kernel, bootloaders, policy) →
//! flattened tree → every output of the [`outputs`] table, written atomically, plus
//! `manifest.json` with the sha256 of each.

pub mod outputs;
pub mod package;
pub mod plan;

use crate::error::{IoContext, Result};
use crate::measure::{BuildManifest, InputRecord};
use crate::source::Platform;
pub use plan::Plan;
use std::path::{Path, PathBuf};

/// Settings from the command line.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub out: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub platform: Option<Platform>,
    /// Worker threads for reading layers; 0 = one per core. Never changes the output.
    pub threads: usize,
    pub quiet: bool,
    /// Use the content store only (no registry access).
    pub offline: bool,
    /// Refuse a missing, incomplete or stale BOX.lock (exit 2).
    pub locked: bool,
    /// The second build of `--check` (see `crate::check`): read the n-th `dir` layer from
    /// `DIR/n`.
    pub check_variant: Option<PathBuf>,
}

#[derive(Debug)]
pub struct BuildResult {
    pub out_dir: PathBuf,
    pub manifest: BuildManifest,
}

/// Build every output of the box at `box_path`.
pub fn build(box_path: &Path, opts: &BuildOptions) -> Result<BuildResult> {
    let plan = Plan::new(box_path, opts)?;
    let (spec, progress) = (&plan.spec, &plan.progress);
    let t0 = std::time::Instant::now();
    let mut tree = crate::tree::images::flatten(&plan.store, &plan.images, plan.sde, plan.threads, plan.content_mode(), progress)?;
    // `[kernel] modules_into = ["root"]`: the modules as one more layer on top of the tree.
    if let (Some(m), true) = (&plan.modules, spec.kernel.as_ref().is_some_and(|k| k.modules_root)) {
        tree.apply_from(m.root_layer(plan.sde)?, None)?;
    }
    progress.timing(&format!("flatten ({} entries, {} bytes)", tree.len(), tree.content_bytes()), t0);
    // The tree's init runs from an initramfs output or an initramfs-layout EIF (a nitro-cli
    // EIF runs its bootstrap init instead).
    let tree_init = spec.outputs.initramfs.is_some()
        || !plan.bootloaders.is_empty()
        || spec.outputs.eif.as_ref().is_some_and(|e| e.layout == crate::spec::EifLayout::Initramfs);
    // The layer blobs, for the checks and emitters that read file contents from them.
    let layers = plan.layers();
    if let (Some(k), true) = (&plan.kernel, tree_init) {
        crate::boot::kernel::check_init(&tree, &layers, &k.spec.cmdline, &k.spec.at)?;
    }
    let t0 = std::time::Instant::now();

    let final_out = opts.out.clone().unwrap_or_else(|| spec.dir.join("out"));
    std::fs::create_dir_all(&final_out).at(&final_out)?;
    // Every output is written into a staging directory in `out` and moved into place only
    // once all of them are complete: a build failing halfway (a bad prepend file, a full
    // disk) leaves the previous outputs and their manifest.json as they were.
    let staging = tempfile::Builder::new().prefix(".stagebox-tmp-").tempdir_in(&final_out).at(&final_out)?;
    let out = staging.path().to_path_buf();
    let mut made = outputs::Made::default();
    for o in plan.outputs() {
        o.emit(&plan, &tree, &layers, &out, &mut made)?;
    }
    progress.timing("emit", t0);
    let inputs: Vec<InputRecord> = plan.image_inputs().into_iter().chain(made.inputs).collect();
    let mut outputs = made.outputs;
    let known = crate::measure::sbom::SbomInput {
        name: &spec.name,
        version: &spec.version,
        source_date_epoch: plan.sde,
        inputs: &inputs,
        images: &plan.images,
        signatures: &plan.signatures,
        tree: &tree,
    };
    crate::measure::emit_attestations(spec, &known, &out, &mut outputs, progress)?;
    progress.finish();

    let manifest = BuildManifest { name: spec.name.clone(), version: spec.version.clone(), source_date_epoch: plan.sde, inputs, outputs };
    for o in &manifest.outputs {
        crate::fsutil::replace(&out.join(&o.path), &final_out.join(&o.path))?;
    }
    drop(staging);
    manifest.write(&final_out)?;
    Ok(BuildResult { out_dir: final_out, manifest })
}
