//! `stagebox build BOX.toml`: the command over [`crate::build`] (plan, tree, output table).
//! `--check` is [`super::check`]. `--json` prints [`json`] on stdout.

pub use crate::build::{BuildOptions, BuildResult};
use crate::error::Result;
use std::path::Path;

/// Build every output of the box at `box_path`.
pub fn build(box_path: &Path, opts: &BuildOptions) -> Result<BuildResult> {
    crate::build::build(box_path, opts)
}

/// What `build --json` prints: `manifest.json`'s content (box, version, source_date_epoch,
/// inputs, outputs with sha256, size and an EIF's pcrs) and the output directory `out_dir`.
/// Keys are snake_case, like every JSON stagebox prints (docs/getting-started.md).
pub fn json(res: &BuildResult) -> serde_json::Value {
    let mut v = serde_json::to_value(&res.manifest).expect("manifest serializes");
    v["out_dir"] = serde_json::Value::String(res.out_dir.display().to_string());
    v
}
