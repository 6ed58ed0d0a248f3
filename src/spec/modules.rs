//! `[kernel] load_modules` and `modules_into`: which kernel modules a box loads and where
//! they go, checked as written (the modules themselves are found in the kernel image by
//! `boot::modules`).

use super::Source;
use crate::error::Result;
use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// `[kernel] load_modules`: `"all"`, or module names (`-` and `_` alike, as modprobe takes
/// them).
#[derive(Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum ModuleSelection {
    /// Only `"all"` is accepted.
    All(String),
    Names(Vec<String>),
}

/// The checked `load_modules` and whether they go to the boot (`"boot"`: the initramfs, a
/// disk's initrd) and into the tree (`"root"`); `modules_into` defaults to `["boot"]`.
pub(crate) fn box_modules(src: &Source, load: &Option<Spanned<ModuleSelection>>, into: &Option<Spanned<Vec<String>>>) -> Result<(Option<ModuleSelection>, bool, bool)> {
    let load_modules = match load {
        Some(m) => {
            let mat = src.loc(m.span());
            match m.get_ref() {
                ModuleSelection::All(a) if a != "all" => return Err(mat.error(format!("load_modules = {a:?}: give a list of module names or \"all\""))),
                ModuleSelection::Names(n) if n.is_empty() => return Err(mat.error("load_modules lists no module")),
                ModuleSelection::Names(n) => {
                    if let Some(bad) = n.iter().find(|n| n.is_empty() || n.contains(['/', '.', ' ', '\0'])) {
                        return Err(mat.error(format!("load_modules: {bad:?} is not a module name (like \"virtio_blk\")")));
                    }
                }
                ModuleSelection::All(_) => {}
            }
            Some(m.get_ref().clone())
        }
        None => None,
    };
    let Some(into) = into else { return Ok((load_modules, true, false)) };
    let iat = src.loc(into.span());
    if load_modules.is_none() {
        return Err(iat.error("`modules_into` says where `load_modules` go: give `load_modules` too"));
    }
    if into.get_ref().is_empty() {
        return Err(iat.error("modules_into lists no place: give \"boot\", \"root\" or both"));
    }
    let (mut boot, mut root) = (false, false);
    for w in into.get_ref() {
        match w.as_str() {
            "boot" => boot = true,
            "root" => root = true,
            other => return Err(iat.error(format!("modules_into: {other:?} is not \"boot\" (the initramfs, a disk's initrd) or \"root\" (the box's tree)"))),
        }
    }
    Ok((load_modules, boot, root))
}
