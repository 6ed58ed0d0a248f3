//! Bootloader definitions (`kernels/NAME.toml` with a `kind`) and the `bootloader` key of a
//! box's `[output.iso]`.
//!
//! A definition names the image holding a boot chain and where its files are inside it, per
//! kind: `syslinux` (BIOS: `isolinux.bin`, the isohybrid MBR code `isohdpfx.bin`, and
//! `ldlinux.c32`), `systemd-boot` (UEFI: `systemd-bootx64.efi`) or `grub` (UEFI: a GRUB
//! platform directory such as `/usr/lib/grub/x86_64-efi`, from which stagebox assembles the
//! EFI core image itself, see `emit::grub` and `boot::bootloader`). The image may be left out
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
use crate::reference::{ImageRef, RefKind};
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
    /// UEFI: systemd-boot as `EFI/BOOT/BOOTX64.EFI` (`BOOTAA64.EFI` on arm64) in the ESP.
    SystemdBoot,
    /// UEFI: a GRUB core image that stagebox assembles from a platform directory
    /// (`emit::grub`: `x86_64-efi` or `arm64-efi`, as the box's platform wants), as
    /// `EFI/BOOT/BOOTX64.EFI` (`BOOTAA64.EFI`) in the ESP.
    Grub,
    /// BIOS: GRUB's i386-pc core image in a disk's BIOS boot partition and its `boot.img` in
    /// the MBR (`emit::grub::pc`): a `kind = "grub"` definition whose `platform` directory
    /// is `.../i386-pc`.
    GrubPc,
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
            BootloaderKind::Grub => &[("platform", "the GRUB platform directory (kernel.img, *.mod, moddep.lst), e.g. /usr/lib/grub/x86_64-efi")],
            BootloaderKind::GrubPc => &[("platform", "the GRUB i386-pc platform directory (kernel.img, *.mod, moddep.lst, lzma_decompress.img, diskboot.img, boot.img)")],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BootloaderKind::Syslinux => "syslinux",
            BootloaderKind::SystemdBoot => "systemd-boot",
            BootloaderKind::Grub => "grub",
            BootloaderKind::GrubPc => "grub (i386-pc)",
        }
    }

    /// Whether it boots UEFI firmware (and so lives in an ESP).
    pub fn is_uefi(self) -> bool {
        matches!(self, BootloaderKind::SystemdBoot | BootloaderKind::Grub)
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
    /// Where a grub definition's `platform` was written (the build checks its architecture
    /// against the box's platform there).
    pub platform_at: Option<Location>,
}

/// `kind` as a definition writes it: the kinds outputs boot with, and `grub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum RawKind {
    Syslinux,
    SystemdBoot,
    Grub,
}

impl RawKind {
    fn roles(self) -> &'static [(&'static str, &'static str)] {
        match self {
            RawKind::Syslinux => BootloaderKind::Syslinux.roles(),
            RawKind::SystemdBoot => BootloaderKind::SystemdBoot.roles(),
            RawKind::Grub => BootloaderKind::Grub.roles(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            RawKind::Syslinux => "syslinux",
            RawKind::SystemdBoot => "systemd-boot",
            RawKind::Grub => "grub",
        }
    }
}

/// GRUB platforms (`grub-mkimage -O`) stagebox builds EFI images for; the last component of
/// a grub definition's `platform` directory.
pub const GRUB_PLATFORMS: &[&str] = &["x86_64-efi", "arm64-efi"];

/// A `kind = "grub"` definition, with the box's image applied.
#[derive(Debug, Clone)]
pub struct GrubDef {
    pub file: PathBuf,
    pub name: String,
    pub image: ImageRef,
    /// Where `image` was written (the definition, or the box when the box gives it).
    pub image_at: Location,
    /// Absolute path of the platform directory inside the image.
    pub platform: String,
    /// The platform name, one of [`GRUB_PLATFORMS`] (the directory's last component).
    pub target: String,
}

/// A bootloader definition file: its kind, image and where its files are in that image.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BootloaderDefinition")]
struct RawDef {
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[schemars(with = "RawKind")]
    kind: Spanned<RawKind>,
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
    #[schemars(with = "Option<String>")]
    platform: Option<Spanned<String>>,
}

/// The schema of a bootloader definition file, registered in `g`.
pub(super) fn schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<RawDef>()
}

/// One entry of `bootloader` in a box: a definition path, or a table with an image.
///
/// Deserialized by hand rather than `#[serde(untagged)]`: an untagged enum cannot refuse an
/// unknown key in the table form (it drops it) and reports a typo as "did not match any
/// variant"; here a string is a path and a table is [`BootloaderTable`], whose own errors
/// (unknown key, missing `definition`) reach the user with their location.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum RawBootloaderRef {
    Path(String),
    Table(BootloaderTable),
}

/// `{ definition = "...", image = "..." }`: a definition, and the image that replaces its own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootloaderTable {
    pub definition: String,
    pub image: Option<String>,
}

/// `bootloader = "..."`, `bootloader = {...}` or a list of them.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum RawBootloaders {
    One(RawBootloaderRef),
    Many(Vec<RawBootloaderRef>),
}

const BOOTLOADER_EXPECTED: &str = "a bootloader definition path, a table { definition = \"...\", image = \"...\" }";

/// Reads one entry: a string or a table, nothing else.
struct RefVisitor;

impl<'de> serde::de::Visitor<'de> for RefVisitor {
    type Value = RawBootloaderRef;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(BOOTLOADER_EXPECTED)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(RawBootloaderRef::Path(v.to_string()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
        BootloaderTable::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawBootloaderRef::Table)
    }
}

impl<'de> Deserialize<'de> for RawBootloaderRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(RefVisitor)
    }
}

/// Reads the whole value: one entry, or a list of entries.
struct RefsVisitor;

impl<'de> serde::de::Visitor<'de> for RefsVisitor {
    type Value = RawBootloaders;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{BOOTLOADER_EXPECTED}, or a list of them")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        RefVisitor.visit_str(v).map(RawBootloaders::One)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
        RefVisitor.visit_map(map).map(RawBootloaders::One)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(r) = seq.next_element::<RawBootloaderRef>()? {
            v.push(r);
        }
        Ok(RawBootloaders::Many(v))
    }
}

impl<'de> Deserialize<'de> for RawBootloaders {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(RefsVisitor)
    }
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

/// What every kind of definition has: the file's role paths, name and image.
struct Parsed {
    kind: Spanned<RawKind>,
    files: BTreeMap<String, String>,
    name: String,
    image: ImageRef,
    image_at: Location,
    /// Where `platform` was written (grub).
    platform_span: std::ops::Range<usize>,
    src: Source,
}

fn parse_def(path: &Path, image: Option<(&str, &Location, &Path)>) -> Result<Parsed> {
    let src = Source::read(path)?;
    let raw: RawDef = src.parse()?;
    let _ = raw.description;
    let kind = *raw.kind.get_ref();
    let given = [
        ("isolinux", &raw.isolinux),
        ("isohdpfx", &raw.isohdpfx),
        ("ldlinux", &raw.ldlinux),
        ("efi", &raw.efi),
        ("platform", &raw.platform),
    ];
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
    let platform_span = raw.platform.as_ref().map(|v| v.span()).unwrap_or(0..0);
    Ok(Parsed { kind: raw.kind, files, name: raw.name.unwrap_or(stem), image: parsed, image_at: at, platform_span, src })
}

/// Read a bootloader definition; `image` (text and where the box wrote it) replaces the
/// definition's image. Without either, the definition cannot be used. A `grub` definition
/// is checked as [`load_grub`] checks it; whether its platform (`x86_64-efi`, `arm64-efi`)
/// fits the box's is the build's check (the box's platform can come from `--platform`).
pub fn load_bootloader(path: &Path, image: Option<(&str, &Location, &Path)>) -> Result<BootloaderDef> {
    let p = parse_def(path, image)?;
    let kind = match *p.kind.get_ref() {
        RawKind::Syslinux => BootloaderKind::Syslinux,
        RawKind::SystemdBoot => BootloaderKind::SystemdBoot,
        RawKind::Grub if p.files["platform"].trim_end_matches('/').ends_with("/i386-pc") => BootloaderKind::GrubPc,
        RawKind::Grub => {
            grub_target(&p)?;
            BootloaderKind::Grub
        }
    };
    let platform_at = p.files.contains_key("platform").then(|| p.src.loc(p.platform_span.clone()));
    Ok(BootloaderDef { file: path.to_path_buf(), name: p.name, kind, image: p.image, image_at: p.image_at, files: p.files, platform_at })
}

/// The platform name of a grub definition (the `platform` directory's last component), one
/// of [`GRUB_PLATFORMS`].
fn grub_target(p: &Parsed) -> Result<String> {
    let platform = p.files["platform"].trim_end_matches('/');
    let target = platform.rsplit('/').next().unwrap_or_default().to_string();
    if !GRUB_PLATFORMS.contains(&target.as_str()) {
        return Err(p.src.loc(p.platform_span.clone()).error(format!(
            "`platform` {platform:?} is not a GRUB platform directory stagebox builds for: its name must be one of {}",
            GRUB_PLATFORMS.join(", ")
        )));
    }
    Ok(target)
}

/// Read a `kind = "grub"` definition (`image` as for [`load_bootloader`]); its `platform`
/// directory must end in one of [`GRUB_PLATFORMS`].
pub fn load_grub(path: &Path, image: Option<(&str, &Location, &Path)>) -> Result<GrubDef> {
    let p = parse_def(path, image)?;
    if *p.kind.get_ref() != RawKind::Grub {
        return Err(p.src.loc(p.kind.span()).error(format!("a {} definition where a grub one was expected", p.kind.get_ref().name())));
    }
    let target = grub_target(&p)?;
    let platform = p.files["platform"].trim_end_matches('/').to_string();
    Ok(GrubDef { file: path.to_path_buf(), name: p.name, image: p.image, image_at: p.image_at, platform, target })
}

/// Resolve a box's `bootloader` value (relative to the box file, else its ancestors, like
/// kernel definitions). `at` is where `[output.iso]` stands. At most one bootloader per kind.
pub fn box_bootloaders(box_dir: &Path, raw: &RawBootloaders, at: &Location) -> Result<Vec<BootloaderDef>> {
    let mut out: Vec<BootloaderDef> = Vec::new();
    for r in raw.list() {
        let (def, image) = match &r {
            RawBootloaderRef::Path(p) => (p.as_str(), None),
            RawBootloaderRef::Table(BootloaderTable { definition, image }) => (definition.as_str(), image.as_deref()),
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

        let g = load_grub(&root.join("grub.toml"), None).unwrap();
        assert!(g.image.text.starts_with("stagex/user-grub@sha256:"), "pinned: {}", g.image.text);
        assert_eq!((g.platform.as_str(), g.target.as_str()), ("/usr/lib/grub/x86_64-efi", "x86_64-efi"));
        let e = load_grub(&root.join("grub-debian.toml"), None).unwrap_err().to_string();
        assert!(e.contains("names no `image`"), "{e}");
        let g = load_grub(&root.join("grub-debian.toml"), Some(("oci:x", &at, &root))).unwrap();
        assert_eq!(g.target, "x86_64-efi");
        // Usable by outputs as the UEFI loader.
        let d = load_bootloader(&root.join("grub.toml"), None).unwrap();
        assert_eq!((d.kind, d.files["platform"].as_str()), (BootloaderKind::Grub, "/usr/lib/grub/x86_64-efi"));
        // An arm64 directory is taken (the build checks it against the box's platform), and
        // where `platform` was written is kept for that check's error.
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.toml", "kind = \"grub\"\nimage = \"x\"\nplatform = \"/usr/lib/grub/arm64-efi\"\n");
        let d = load_bootloader(&p, None).unwrap();
        assert_eq!((d.kind, d.platform_at.unwrap().line), (BootloaderKind::Grub, 3));
    }

    #[test]
    fn grub_definition_errors_point_at_the_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "g.toml", "kind = \"grub\"\nimage = \"x\"\nplatform = \"/usr/lib/grub/i386-pc\"\n");
        let e = load_grub(&p, None).unwrap_err().to_string();
        assert!(e.contains("g.toml:3:") && e.contains("x86_64-efi, arm64-efi"), "{e}");
        let p = write(d.path(), "h.toml", "kind = \"grub\"\nimage = \"x\"\n");
        let e = load_grub(&p, None).unwrap_err().to_string();
        assert!(e.contains("h.toml:1:") && e.contains("needs `platform`"), "{e}");
        let p = write(d.path(), "i.toml", "kind = \"grub\"\nimage = \"x\"\nplatform = \"/p/arm64-efi/\"\nefi = \"/e\"\n");
        let e = load_grub(&p, None).unwrap_err().to_string();
        assert!(e.contains("i.toml:4:") && e.contains("not a file of a grub"), "{e}");
        let p = write(d.path(), "j.toml", "kind = \"systemd-boot\"\nimage = \"x\"\nefi = \"/e\"\n");
        assert!(load_grub(&p, None).unwrap_err().to_string().contains("where a grub one was expected"));
        let p = write(d.path(), "k.toml", "kind = \"grub\"\nimage = \"x\"\nplatform = \"/p/arm64-efi/\"\n");
        assert_eq!(load_grub(&p, None).unwrap().target, "arm64-efi");
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
