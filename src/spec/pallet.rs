//! Pallet files (`pallets/NAME.toml`): a named, ordered list of pinned image references,
//! applied bottom first like StageX's pallet images.

use super::{Location, Source};
use crate::error::Result;
use crate::reference::ImageRef;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct PalletSpec {
    pub path: PathBuf,
    pub name: String,
    pub images: Vec<(ImageRef, Location)>,
}

/// A pallet file (`pallets/NAME.toml`): a named list of pinned images, bottom first.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PalletFile")]
struct RawPallet {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[schemars(with = "Vec<String>")]
    images: Vec<Spanned<String>>,
}

/// The schema of a pallet file, registered in `g`.
pub(super) fn schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<RawPallet>()
}

pub fn load_pallet(path: &Path) -> Result<PalletSpec> {
    let src = Source::read(path)?;
    let raw: RawPallet = src.parse()?;
    let _ = raw.description;
    let dir = src.dir();
    let mut images = Vec::new();
    for i in &raw.images {
        let at = src.loc(i.span());
        let r = ImageRef::parse(i.get_ref(), &dir).map_err(|m| at.error(m))?;
        if matches!(r.kind, crate::reference::RefKind::Dir { .. }) {
            return Err(at.error("pallets hold images only; use a [[layer]] dir = ... in the box file"));
        }
        images.push((r, at));
    }
    if images.is_empty() {
        return Err(src.loc(0..0).error("a pallet needs at least one image"));
    }
    Ok(PalletSpec { path: path.to_path_buf(), name: raw.name, images })
}
