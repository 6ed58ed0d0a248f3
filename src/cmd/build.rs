//! `stagebox build BOX.toml`: the command over [`crate::build`] (plan, tree, output table).
//! `--check` is [`super::check`].

pub use crate::build::{BuildOptions, BuildResult};
use crate::error::Result;
use std::path::Path;

/// Build every output of the box at `box_path`.
pub fn build(box_path: &Path, opts: &BuildOptions) -> Result<BuildResult> {
    crate::build::build(box_path, opts)
}
