//! Bootloader definitions (`kernels/NAME.toml` with a `kind`) and the `bootloader` key of a
//! box's `[output.iso]`.
//!
//! A definition names the image holding a boot chain and where its files are inside it, per
//! kind: `syslinux` (BIOS: `isolinux.bin`, the isohybrid MBR code `isohdpfx.bin`, and
//! `ldlinux.c32`) or `systemd-boot` (UEFI: `systemd-bootx64.efi`). The image may be left out
//! of a definition that only maps a layout (Debian's packages have no image of their own);
//! the box then names it:
//!
//! ```toml
//! [output.iso]
//! bootloader = ["kernels/syslinux.toml", "kernels/systemd-boot.toml"]
//! # or, giving (or replacing) a definition's image:
//! bootloader = [{ definition = "kernels/syslinux-debian.toml", image = "oci:img@sha256:..." }]
//! ```

use super::{Location, Source};
use crate::error::Result;
use crate::source::reference::{ImageRef, RefKind};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// What a bootloader boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BootloaderKind {
    /// BIOS: isolinux from a CD, its isohybrid MBR from a disk.
    Syslinux,
    /// UEFI: systemd-boot as `EFI/BOOT/BOOTX64.EFI` in the ESP.
    SystemdBoot,
}

impl BootloaderKind {
    /// The files a kind needs: (role = key in the definition, what it is).
    pub fn roles(self) -> &'static [(&'static str, &'static str)] {
        match self {
            BootloaderKind::Syslinux => &[
                ("isolinux", "isolinux.bin, the El Torito BIOS boot file"),
                ("isohdpfx", "isohdpfx.bin, the isohybrid MBR boot code"),
                ("ldlinux", "ldlinux.c32, isolinux's second stage"),
            ],
            BootloaderKind::SystemdBoot => &[("efi", "systemd-bootx64.efi, the UEFI boot manager")],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BootloaderKind::Syslinux => "syslinux",
            BootloaderKind::SystemdBoot => "systemd-boot",
        }
    }
}

/// A bootloader definition, with the box's image applied.
#[derive(Debug, Clone)]
pub struct BootloaderDef {
    pub file: PathBuf,
    pub name: String,
    pub kind: BootloaderKind,
    pub image: ImageRef,
    /// Where `image` was written (the definition, or the box when the box gives it).
    pub image_at: Location,
    /// Role (see [`BootloaderKind::roles`]) → absolute path inside the image.
    pub files: BTreeMap<String, String>,
}

/// A bootloader definition file: its kind, image and where its files are in that image.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BootloaderDefinition")]
struct RawDef {
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[schemars(with = "BootloaderKind")]
    kind: Spanned<BootloaderKind>,
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    isolinux: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    isohdpfx: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    ldlinux: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    efi: Option<Spanned<String>>,
}

/// The schema of a bootloader definition file, registered in `g`.
pub(super) fn schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<RawDef>()
}

/// One entry of `bootloader` in a box: a definition path, or a table with an image.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawBootloaderRef {
    Path(String),
    Table {
        definition: String,
        image: Option<String>,
    },
}

/// `bootloader = "..."`, `bootloader = {...}` or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawBootloaders {
    One(RawBootloaderRef),
    Many(Vec<RawBootloaderRef>),
}

impl RawBootloaders {
    pub fn list(&self) -> Vec<RawBootloaderRef> {
        match self {
            RawBootloaders::One(r) => vec![r.clone()],
            RawBootloaders::Many(v) => v.clone(),
        }
    }
}

fn abs_path(src: &Source, v: &Spanned<String>, what: &str) -> Result<String> {
    let s = v.get_ref();
    if s.is_empty() || s.contains('\0') {
        return Err(src.loc(v.span()).error(format!("{what} must be a path inside the image, like /usr/share/syslinux/isolinux.bin")));
    }
    Ok(if s.starts_with('/') { s.clone() } else { format!("/{s}") })
}

/// Read a bootloader definition; `image` (text and where the box wrote it) replaces the
/// definition's image. Without either, the definition cannot be used.
pub fn load_bootloader(path: &Path, image: Option<(&str, &Location, &Path)>) -> Result<BootloaderDef> {
    let src = Source::read(path)?;
    let raw: RawDef = src.parse()?;
    let _ = raw.description;
    let kind = *raw.kind.get_ref();
    let given = [("isolinux", &raw.isolinux), ("isohdpfx", &raw.isohdpfx), ("ldlinux", &raw.ldlinux), ("efi", &raw.efi)];
    let mut files = BTreeMap::new();
    for (role, v) in given {
        let wanted = kind.roles().iter().any(|(r, _)| *r == role);
        match (v, wanted) {
            (Some(v), true) => {
                files.insert(role.to_string(), abs_path(&src, v, role)?);
            }
            (Some(v), false) => {
                return Err(src.loc(v.span()).error(format!("`{role}` is not a file of a {} bootloader", kind.name())));
            }
            (None, true) => {
                let what = kind.roles().iter().find(|(r, _)| *r == role).map(|(_, w)| *w).unwrap_or(role);
                return Err(src.loc(raw.kind.span()).error(format!("a {} bootloader needs `{role}`: the path of {what} in its image", kind.name())));
            }
            (None, false) => {}
        }
    }
    let (text, at, dir) = match (image, &raw.image) {
        (Some((t, at, dir)), _) => (t.to_string(), at.clone(), dir.to_path_buf()),
        (None, Some(i)) => (i.get_ref().clone(), src.loc(i.span()), src.dir()),
        (None, None) => {
            return Err(src.loc(0..0).error(
                "this bootloader definition names no `image`: give one here, or in the box (`bootloader = [{ definition = \"...\", image = \"...\" }]`)",
            ));
        }
    };
    let parsed = ImageRef::parse(&text, &dir).map_err(|m| at.error(m))?;
    if matches!(parsed.kind, RefKind::Dir { .. }) {
        return Err(at.error("a bootloader comes from an image, not a dir: reference"));
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(BootloaderDef { file: path.to_path_buf(), name: raw.name.unwrap_or(stem), kind, image: parsed, image_at: at, files })
}

/// Resolve a box's `bootloader` value (relative to the box file, else its ancestors, like
/// kernel definitions). `at` is where `[output.iso]` stands. At most one bootloader per kind.
pub fn box_bootloaders(box_dir: &Path, raw: &RawBootloaders, at: &Location) -> Result<Vec<BootloaderDef>> {
    let mut out: Vec<BootloaderDef> = Vec::new();
    for r in raw.list() {
        let (def, image) = match &r {
            RawBootloaderRef::Path(p) => (p.as_str(), None),
            RawBootloaderRef::Table { definition, image } => (definition.as_str(), image.as_deref()),
        };
        let file = super::kernel::find_definition(box_dir, def)
            .ok_or_else(|| at.error(format!("bootloader definition {def:?} not found beside the box file or in its parent directories")))?;
        let d = load_bootloader(&file, image.map(|i| (i, at, box_dir)))?;
        if let Some(o) = out.iter().find(|o| o.kind == d.kind) {
            return Err(at.error(format!("two {} bootloaders ({} and {}): give one per kind", d.kind.name(), o.name, d.name)));
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn shipped_definitions_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
        let s = load_bootloader(&root.join("syslinux.toml"), None).unwrap();
        assert_eq!((s.kind, s.files["isolinux"].as_str()), (BootloaderKind::Syslinux, "/usr/share/syslinux/isolinux.bin"));
        assert!(s.image.text.starts_with("stagex/user-syslinux@sha256:"), "pinned: {}", s.image.text);
        let at = Location { file: PathBuf::from("box.toml"), line: 1, column: 1 };
        for (f, kind) in [("syslinux-debian.toml", BootloaderKind::Syslinux), ("systemd-boot-debian.toml", BootloaderKind::SystemdBoot)] {
            let e = load_bootloader(&root.join(f), None).unwrap_err().to_string();
            assert!(e.contains("names no `image`"), "{e}");
            let d = load_bootloader(&root.join(f), Some(("stagex/x@sha256:0000000000000000000000000000000000000000000000000000000000000000", &at, &root))).unwrap();
            assert_eq!(d.kind, kind);
        }
        let d = load_bootloader(&root.join("syslinux-debian.toml"), Some(("oci:x", &at, &root))).unwrap();
        assert_eq!(d.files["ldlinux"], "/usr/lib/syslinux/modules/bios/ldlinux.c32");
    }

    #[test]
    fn definition_errors_point_at_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "a.toml", "kind = \"syslinux\"\nimage = \"x\"\nisolinux = \"/i\"\nisohdpfx = \"/h\"\n");
        let e = load_bootloader(&p, None).unwrap_err().to_string();
        assert!(e.contains("a.toml:1:") && e.contains("needs `ldlinux`"), "{e}");
        let p = write(d.path(), "b.toml", "kind = \"systemd-boot\"\nimage = \"x\"\nefi = \"/e\"\nisolinux = \"/i\"\n");
        let e = load_bootloader(&p, None).unwrap_err().to_string();
        assert!(e.contains("b.toml:4:") && e.contains("not a file of a systemd-boot"), "{e}");
        let p = write(d.path(), "c.toml", "kind = \"limine\"\n");
        assert!(load_bootloader(&p, None).unwrap_err().to_string().contains("c.toml:1:"));
    }
}
