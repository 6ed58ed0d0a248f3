//! `stagebox build`: box file → [`Plan`] (pinned inputs, kernel, bootloaders, policy) →
//! flattened tree → every output of the [`outputs`] table, written atomically, plus
//! `NAME.manifest.json` with the sha256 of each ([`publish`]: boxes may share an output
//! directory; `manifest.json` is written too while the directory holds one box only).

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
    /// The second build of `--check` (see `crate::cmd::check`): read the n-th `dir` layer from
    /// `DIR/n`.
    pub check_variant: Option<PathBuf>,
}

#[derive(Debug)]
pub struct BuildResult {
    pub out_dir: PathBuf,
    pub manifest: BuildManifest,
    /// Outputs this box's previous build wrote into the directory and this one no longer
    /// writes, now removed (file names).
    pub removed: Vec<String>,
}

/// Build every output of the box at `box_path`.
pub fn build(box_path: &Path, opts: &BuildOptions) -> Result<BuildResult> {
    let plan = Plan::new(box_path, opts)?;
    let (spec, progress) = (&plan.spec, &plan.progress);
    let t0 = std::time::Instant::now();
    let mut tree = crate::tree::images::flatten(&plan.store, &plan.images, plan.sde, plan.threads, plan.content_mode(), progress)?;
    // `[kernel] modules_into = ["root"]`: the modules as one more layer on top of the tree.
    if let (Some(m), true) = (&plan.modules, spec.kernel.as_ref().is_some_and(|k| k.modules_root)) {
        tree.apply(m.root_layer(plan.sde)?)?;
    }
    progress.timing(|| format!("flatten ({} entries, {} bytes)", tree.len(), tree.content_bytes()), t0);
    // The tree's init runs from an initramfs output or an initramfs-layout EIF (a nitro-cli
    // EIF runs its bootstrap init instead).
    let tree_init = spec.outputs.initramfs.is_some()
        || !plan.bootloaders.is_empty()
        || spec.outputs.eif.as_ref().is_some_and(|e| e.layout == crate::spec::EifLayout::Initramfs);
    if let (Some(k), true) = (&plan.kernel, tree_init) {
        crate::boot::kernel::check_init(&tree, &k.spec.cmdline, &k.spec.at)?;
    }
    // The kernel gate of an EIF (what a Nitro enclave needs of its kernel), before writing.
    if let (Some(k), Some(e)) = (&plan.kernel, &spec.outputs.eif) {
        let at = spec.eif_at.clone().unwrap_or_else(|| k.spec.at.clone());
        for w in crate::boot::enclave::check_kernel(k, e, &tree, &at, &plan.sopts.platform.arch)? {
            eprintln!("stagebox: warning: {w}");
        }
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
        o.emit(&plan, &tree, &out, &mut made)?;
    }
    progress.timing(|| "emit".into(), t0);
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
    let removed = publish(&out, &final_out, &manifest)?;
    drop(staging);
    Ok(BuildResult { out_dir: final_out, manifest, removed })
}

/// Move the outputs of `manifest` from `staged` into `out_dir`, then remove what this box's
/// previous build wrote there and this one no longer writes (never a file another box's
/// manifest lists), then write the box's manifests: `NAME.manifest.json` always, and
/// `manifest.json` while no other box's manifest is in the directory (in a shared one, a
/// `manifest.json` that is this box's, or a copy of another box's `NAME.manifest.json`, is
/// removed rather than left stale or ambiguous). Returns the removed names.
pub fn publish(staged: &Path, out_dir: &Path, manifest: &BuildManifest) -> Result<Vec<String>> {
    let found = crate::measure::manifests_in(out_dir)?;
    let own_name = manifest.file_name();
    let is_own = |p: &Path, m: &BuildManifest| m.name == manifest.name && (p.ends_with(&own_name) || p.ends_with("manifest.json"));
    let others: Vec<&BuildManifest> = found.iter().filter(|(p, m)| !is_own(p, m)).map(|(_, m)| m).collect();
    // This box's previous outputs: its own manifest, else a single-box manifest.json naming it.
    let previous = found.iter().find(|(p, m)| m.name == manifest.name && p.ends_with(&own_name)).or_else(|| found.iter().find(|(_, m)| m.name == manifest.name));
    for o in &manifest.outputs {
        crate::fsutil::replace(&staged.join(&o.path), &out_dir.join(&o.path))?;
    }
    let mut removed = Vec::new();
    if let Some((_, prev)) = previous {
        let keep: std::collections::BTreeSet<&str> =
            manifest.outputs.iter().chain(others.iter().flat_map(|m| m.outputs.iter())).map(|o| o.path.as_str()).collect();
        for o in &prev.outputs {
            let n = o.path.as_str();
            // Only plain names this box could have written; never a manifest.
            let plain = !n.is_empty() && !n.contains('/') && !n.starts_with('.') && !n.ends_with("manifest.json");
            if keep.contains(n) || !plain {
                continue;
            }
            let p = out_dir.join(n);
            let r = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(_) => continue,
            };
            r.at(&p)?;
            removed.push(n.to_string());
        }
    }
    crate::fsutil::write_atomic(&out_dir.join(&own_name), &manifest.to_json())?;
    let single = out_dir.join("manifest.json");
    if others.is_empty() {
        manifest.write(out_dir)?;
    } else if found.iter().any(|(p, m)| p == &single && (m.name == manifest.name || found.iter().any(|(q, n)| q != p && n == m))) {
        // A single-box manifest.json is this box's (now stale) or a copy of a box's own
        // NAME.manifest.json: in a shared directory only the per-box manifests stay.
        std::fs::remove_file(&single).at(&single)?;
    }
    Ok(removed)
}
