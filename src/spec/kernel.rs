//! Kernel definitions (`kernels/NAME.toml`) and a box's `[kernel]` table.
//!
//! A definition names the image that holds a kernel, where the kernel, its config and its
//! modules are inside it, a default command line, and the initramfs compressions the kernel
//! can unpack (used only when the image carries no config to read them from). A box either
//! points at a definition (`definition = "kernels/generic.toml"`, relative to the box file;
//! a relative path not found there is looked up in the box's ancestors, like pallets) or
//! writes the same keys inline (`image`, `path`, ...); its `cmdline` replaces the default.
//!
//! ```toml
//! name = "generic"
//! image = "stagex/user-linux-generic:latest"  # unpinned: BOX.lock must pin it
//! path = "/bzImage"
//! config = "/linux.config"
//! modules = "/usr/lib/modules"
//! cmdline = "console=ttyS0"
//! compressions = ["gzip", "zstd", "xz", "none"]
//! ```
//!
//! A definition may pin one image per platform instead: each `[platforms."OS/ARCH"]` table
//! names that platform's `image` and overrides any other key (`path`, `config`, `modules`,
//! `cmdline`, `compressions`); the keys outside the tables are the defaults every platform
//! shares, and a top-level `image` is then refused (which platform would it be for?). A build
//! takes the table of its platform (the box's `platform`, or `--platform`:
//! [`KernelSpec::select_platform`]); a platform the definition has no table for is an error
//! naming the definition and the platforms it has. A definition without `platforms` is one
//! image for every platform, as before (the image itself is then checked against the box's
//! platform when it is resolved).
//!
//! ```toml
//! name = "nitro"
//! config = "/linux.config"
//! [platforms."linux/amd64"]
//! image = "stagex/user-linux-nitro@sha256:…"
//! [platforms."linux/arm64"]
//! image = "stagex/user-linux-nitro@sha256:…"   # the arm64 manifest
//! path = "/Image"
//! ```

use super::{Compression, Location, ModuleSelection, Source};
use crate::error::Result;
use crate::reference::{ImageRef, RefKind};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Where the kernel is in StageX's `user-linux-*` images.
pub const DEFAULT_KERNEL_PATH: &str = "/bzImage";
/// Where StageX's kernel images keep the config the kernel was built with.
pub const DEFAULT_CONFIG_PATH: &str = "/linux.config";

/// A kernel: the image it comes from and what to take out of it.
#[derive(Debug, Clone)]
pub struct KernelDef {
    /// The definition file, or `None` for an inline `[kernel]` table.
    pub file: Option<PathBuf>,
    pub name: String,
    pub image: ImageRef,
    /// Where `image` was written (for "not pinned" errors).
    pub image_at: Location,
    /// Absolute path of the kernel inside the image.
    pub path: String,
    /// Absolute path of the kernel config inside the image.
    pub config: String,
    /// True when the config path was written out: then the image must hold it. The default
    /// path is read only if it exists.
    pub config_required: bool,
    /// Directory of the kernel's modules inside the image: the release directory itself, or
    /// the directory holding it (`/usr/lib/modules`). Unset: the one directory under
    /// `/usr/lib/modules/` or `/lib/modules/`.
    pub modules: Option<String>,
    /// The default command line.
    pub cmdline: String,
    /// Initramfs compressions the kernel unpacks, when written. A config in the image wins.
    pub compressions: Option<Vec<Compression>>,
    /// `[platforms."OS/ARCH"]`: the whole definition for each platform it pins (each with no
    /// `platforms` of its own). Empty for a one-image definition. When not empty, the fields
    /// above are those of the platform last selected ([`KernelSpec::select_platform`]; at
    /// load, the box's own `platform`, else the first table).
    pub platforms: BTreeMap<String, KernelDef>,
}

/// A box's `[kernel]`: a definition plus the box's own command line.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    pub def: KernelDef,
    /// The box's `cmdline`, else the definition's.
    pub cmdline: String,
    /// Where `[kernel]` stands in the box file.
    pub at: Location,
    /// `load_modules`: the modules (with their dependencies) to put where the kernel needs
    /// them first, the initramfs or a disk's early initrd (see `boot::modules`).
    pub load_modules: Option<ModuleSelection>,
    /// `modules_into`: whether they go where the kernel needs them first (`boot`: the
    /// initramfs, a disk's initrd) and into the box's tree (`root`).
    pub modules_boot: bool,
    pub modules_root: bool,
    /// Whether the box wrote its own `cmdline` (then no platform's default replaces it).
    pub box_cmdline: bool,
}

impl KernelSpec {
    /// Take the definition's table for `platform` ("OS/ARCH") when it pins per platform; a
    /// one-image definition is left as it is. Call it with the build's platform before the
    /// kernel image is resolved or pinned.
    pub fn select_platform(&mut self, platform: &str) -> Result<()> {
        if self.def.platforms.is_empty() {
            return Ok(());
        }
        let Some(pick) = self.def.platforms.get(platform) else {
            let file = self.def.file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "the inline [kernel]".into());
            return Err(self.at.error(format!(
                "kernel {:?} ({file}) has no image for {platform}: it pins {}; add a [platforms.\"{platform}\"] table with that platform's `image`, or build for one of those (the box's `platform`, or --platform)",
                self.def.name,
                self.def.platforms.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let pick = pick.clone();
        let platforms = std::mem::take(&mut self.def.platforms);
        self.def = KernelDef { platforms, ..pick };
        if !self.box_cmdline {
            self.cmdline = self.def.cmdline.clone();
        }
        Ok(())
    }
}

/// The keys a definition file and an inline `[kernel]` table share.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "KernelDefinition")]
struct RawDef {
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    path: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    config: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    modules: Option<Spanned<String>>,
    cmdline: Option<String>,
    compressions: Option<Vec<Compression>>,
    /// One table per platform ("OS/ARCH", e.g. "linux/arm64"), each with that platform's
    /// `image` and any key above it overrides.
    #[schemars(with = "Option<BTreeMap<String, RawPin>>")]
    platforms: Option<BTreeMap<String, Spanned<RawPin>>>,
}

/// A `[platforms."OS/ARCH"]` table of a kernel definition.
#[derive(Deserialize, JsonSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "KernelPlatform")]
struct RawPin {
    #[schemars(with = "String")]
    image: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    path: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    config: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    modules: Option<Spanned<String>>,
    cmdline: Option<String>,
    compressions: Option<Vec<Compression>>,
}

/// A box's `[kernel]` table as written.
#[derive(Deserialize, JsonSchema, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Kernel")]
pub(crate) struct RawBoxKernel {
    #[schemars(with = "Option<String>")]
    definition: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    path: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    config: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    modules: Option<Spanned<String>>,
    cmdline: Option<String>,
    compressions: Option<Vec<Compression>>,
    /// Modules to load at boot, with their dependencies: names, or `"all"`.
    #[schemars(with = "Option<ModuleSelection>")]
    load_modules: Option<Spanned<ModuleSelection>>,
    /// Where `load_modules` go: `"boot"` (the initramfs, a disk's initrd) and/or `"root"`
    /// (the box's tree, `lib/modules/RELEASE/`); default `["boot"]`.
    #[schemars(with = "Option<Vec<String>>")]
    modules_into: Option<Spanned<Vec<String>>>,
}

/// The schema of a kernel definition file, registered in `g`.
pub(super) fn schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<RawDef>()
}

fn abs_path(src: &Source, v: &Spanned<String>, what: &str) -> Result<String> {
    let s = v.get_ref();
    if s.is_empty() || s.contains('\0') {
        return Err(src.loc(v.span()).error(format!("{what} must be a path inside the image, like /bzImage")));
    }
    Ok(if s.starts_with('/') { s.clone() } else { format!("/{s}") })
}

fn build_def(src: &Source, mut raw: RawDef, file: Option<PathBuf>, default_name: &str, at: Location) -> Result<KernelDef> {
    let _ = raw.description;
    if let Some(tables) = raw.platforms.take() {
        if let Some(i) = &raw.image {
            return Err(src.loc(i.span()).error(
                "with [platforms] each platform names its own image: move `image` into its [platforms.\"OS/ARCH\"] table (e.g. [platforms.\"linux/amd64\"])",
            ));
        }
        if tables.is_empty() {
            return Err(at.error("[platforms] is empty: give at least one [platforms.\"OS/ARCH\"] table with an `image`"));
        }
        let mut platforms = BTreeMap::new();
        for (key, pin) in tables {
            let pat = src.loc(pin.span());
            if !matches!(key.split_once('/'), Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/')) {
                return Err(pat.error(format!("[platforms.{key:?}]: a platform is OS/ARCH in OCI's names, e.g. \"linux/amd64\" or \"linux/arm64\"")));
            }
            let pin = pin.into_inner();
            if pin.image.is_none() {
                return Err(pat.error(format!("[platforms.{key:?}] needs `image`: the image that holds this platform's kernel")));
            }
            let one = RawDef {
                name: raw.name.clone(),
                description: None,
                image: pin.image,
                path: pin.path.or_else(|| raw.path.clone()),
                config: pin.config.or_else(|| raw.config.clone()),
                modules: pin.modules.or_else(|| raw.modules.clone()),
                cmdline: pin.cmdline.or_else(|| raw.cmdline.clone()),
                compressions: pin.compressions.or_else(|| raw.compressions.clone()),
                platforms: None,
            };
            platforms.insert(key, build_def(src, one, file.clone(), default_name, pat)?);
        }
        let first = platforms.values().next().expect("not empty").clone();
        return Ok(KernelDef { platforms, ..first });
    }
    let image = raw.image.as_ref().ok_or_else(|| at.error("a kernel needs `image`: the image that holds it"))?;
    let image_at = src.loc(image.span());
    let parsed = ImageRef::parse(image.get_ref(), &src.dir()).map_err(|m| image_at.error(m))?;
    if matches!(parsed.kind, RefKind::Dir { .. }) {
        return Err(image_at.error("a kernel comes from an image, not a dir: reference"));
    }
    let path = match &raw.path {
        Some(p) => abs_path(src, p, "path")?,
        None => DEFAULT_KERNEL_PATH.to_string(),
    };
    let (config, config_required) = match &raw.config {
        Some(c) => (abs_path(src, c, "config")?, true),
        None => (DEFAULT_CONFIG_PATH.to_string(), false),
    };
    let modules = raw.modules.as_ref().map(|m| abs_path(src, m, "modules")).transpose()?;
    if let Some(c) = &raw.compressions {
        if c.is_empty() {
            return Err(at.error("compressions must list at least one of none, gzip, zstd, xz"));
        }
    }
    Ok(KernelDef {
        file,
        name: raw.name.unwrap_or_else(|| default_name.to_string()),
        image: parsed,
        image_at,
        path,
        config,
        config_required,
        modules,
        cmdline: raw.cmdline.unwrap_or_default(),
        compressions: raw.compressions,
        platforms: BTreeMap::new(),
    })
}

/// Read and validate a kernel definition file.
pub fn load_kernel(path: &Path) -> Result<KernelDef> {
    let src = Source::read(path)?;
    let raw: RawDef = src.parse()?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    build_def(&src, raw, Some(path.to_path_buf()), &stem, src.loc(0..0))
}

/// A definition path from a box file: relative to the box's directory, else (for a relative
/// path) the same relative path under one of its ancestors.
pub(crate) fn find_definition(box_dir: &Path, rel: &str) -> Option<PathBuf> {
    let p = box_dir.join(rel);
    if p.is_file() || Path::new(rel).is_absolute() {
        return p.is_file().then_some(p);
    }
    let abs = std::path::absolute(box_dir).ok()?;
    abs.ancestors().map(|a| a.join(rel)).find(|p| p.is_file())
}

/// Turn a box's `[kernel]` table into a [`KernelSpec`]. `box_name` names an inline kernel.
pub(crate) fn box_kernel(src: &Source, raw: &Spanned<RawBoxKernel>, box_name: &str) -> Result<KernelSpec> {
    let at = src.loc(raw.span());
    let r = raw.get_ref();
    let def = match (&r.definition, &r.image) {
        (Some(_), Some(i)) => {
            return Err(src.loc(i.span()).error("[kernel] takes either `definition` or an inline `image`, not both"));
        }
        (None, None) => {
            return Err(at.error("[kernel] needs `definition = \"kernels/NAME.toml\"` or an inline `image = \"...\"`"));
        }
        (Some(d), None) => {
            let dat = src.loc(d.span());
            if let Some((key, span)) = [("path", &r.path), ("config", &r.config), ("modules", &r.modules)]
                .into_iter()
                .find_map(|(k, v)| v.as_ref().map(|v| (k, v.span())))
            {
                return Err(src.loc(span).error(format!(
                    "`{key}` belongs in the kernel definition; with `definition` a box sets only `cmdline`"
                )));
            }
            if r.compressions.is_some() {
                return Err(at.error("`compressions` belongs in the kernel definition"));
            }
            let file = find_definition(&src.dir(), d.get_ref()).ok_or_else(|| {
                dat.error(format!("kernel definition {:?} not found beside the box file or in its parent directories", d.get_ref()))
            })?;
            load_kernel(&file)?
        }
        (None, Some(_)) => {
            let inline = RawDef {
                name: Some(format!("{box_name} (inline)")),
                description: None,
                image: r.image.clone(),
                path: r.path.clone(),
                config: r.config.clone(),
                modules: r.modules.clone(),
                cmdline: None,
                compressions: r.compressions.clone(),
                platforms: None,
            };
            build_def(src, inline, None, box_name, at.clone())?
        }
    };
    let cmdline = r.cmdline.clone().unwrap_or_else(|| def.cmdline.clone());
    let (load_modules, modules_boot, modules_root) = super::modules::box_modules(src, &r.load_modules, &r.modules_into)?;
    Ok(KernelSpec { def, cmdline, at, load_modules, modules_boot, modules_root, box_cmdline: r.cmdline.is_some() })
}

/// The init the kernel runs from an initramfs: the last `rdinit=` on the command line, else
/// `/init` (the kernel's `ramdisk_execute_command`).
pub fn rdinit(cmdline: &str) -> String {
    cmdline
        .split_ascii_whitespace()
        .take_while(|w| *w != "--") // after "--" everything goes to init
        .filter_map(|w| w.strip_prefix("rdinit="))
        .last()
        .map(str::to_string)
        .unwrap_or_else(|| "/init".to_string())
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
    fn definition_defaults_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "kernels/k.toml", "image = \"stagex/user-linux-airgap:latest\"\ncompressions = [\"gzip\", \"none\"]\n");
        let k = load_kernel(&p).unwrap();
        assert_eq!((k.name.as_str(), k.path.as_str(), k.config.as_str()), ("k", "/bzImage", "/linux.config"));
        assert!(!k.config_required && !k.image.is_pinned());
        assert_eq!(k.compressions, Some(vec![Compression::Gzip, Compression::None]));

        let p = write(d.path(), "kernels/bad.toml", "image = \"x\"\ncompressions = [\"lz4\"]\n");
        let e = load_kernel(&p).unwrap_err().to_string();
        assert!(e.contains("bad.toml:2:") && e.contains("lz4"), "{e}");
        let p = write(d.path(), "kernels/noimg.toml", "path = \"/bzImage\"\n");
        assert!(load_kernel(&p).unwrap_err().to_string().contains("needs `image`"));
        let p = write(d.path(), "kernels/typo.toml", "image = \"x\"\nkernel_path = \"/bzImage\"\n");
        assert!(load_kernel(&p).unwrap_err().to_string().contains("typo.toml:2:1"));
    }

    #[test]
    fn per_platform_pins() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "kernels/multi.toml",
            "name = \"multi\"\ncmdline = \"console=ttyS0\"\n[platforms.\"linux/amd64\"]\nimage = \"stagex/user-linux-nitro:amd\"\n[platforms.\"linux/arm64\"]\nimage = \"stagex/user-linux-nitro:arm\"\npath = \"/Image\"\ncmdline = \"console=ttyAMA0\"\n",
        );
        let k = load_kernel(&p).unwrap();
        assert_eq!(k.platforms.keys().map(String::as_str).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
        let arm = &k.platforms["linux/arm64"];
        assert_eq!((arm.image.text.as_str(), arm.path.as_str(), arm.cmdline.as_str()), ("stagex/user-linux-nitro:arm", "/Image", "console=ttyAMA0"));
        let amd = &k.platforms["linux/amd64"];
        assert_eq!((amd.path.as_str(), amd.cmdline.as_str(), amd.config.as_str()), ("/bzImage", "console=ttyS0", "/linux.config"));
        let mut spec = KernelSpec { def: k, cmdline: "console=ttyS0".into(), at: Location { file: p.clone(), line: 3, column: 1 }, load_modules: None, modules_boot: true, modules_root: false, box_cmdline: false };
        spec.select_platform("linux/arm64").unwrap();
        assert_eq!((spec.def.path.as_str(), spec.cmdline.as_str(), spec.def.platforms.len()), ("/Image", "console=ttyAMA0", 2));
        spec.select_platform("linux/amd64").unwrap();
        assert_eq!((spec.def.image.text.as_str(), spec.cmdline.as_str()), ("stagex/user-linux-nitro:amd", "console=ttyS0"));
        let e = spec.select_platform("linux/riscv64").unwrap_err().to_string();
        assert!(e.contains("multi.toml") && e.contains("no image for linux/riscv64") && e.contains("it pins linux/amd64, linux/arm64"), "{e}");
        // A box's own cmdline stays whatever the platform.
        spec.box_cmdline = true;
        spec.cmdline = "quiet".into();
        spec.select_platform("linux/arm64").unwrap();
        assert_eq!(spec.cmdline, "quiet");
        // A one-image definition is for every platform, unchanged.
        let one = write(d.path(), "kernels/one.toml", "image = \"x\"\n");
        let mut s1 = KernelSpec { def: load_kernel(&one).unwrap(), ..spec.clone() };
        s1.select_platform("linux/arm64").unwrap();
        assert_eq!(s1.def.image.text, "x");

        for (text, want) in [
            ("image = \"x\"\n[platforms.\"linux/arm64\"]\nimage = \"y\"\n", "bad.toml:1:9: with [platforms] each platform names its own image"),
            ("[platforms.\"arm64\"]\nimage = \"y\"\n", "a platform is OS/ARCH"),
            ("[platforms.\"linux/arm64\"]\npath = \"/Image\"\n", "[platforms.\"linux/arm64\"] needs `image`"),
            ("[platforms.\"linux/arm64\"]\nimage = \"y\"\nkernel = \"/Image\"\n", "bad.toml:3:1"),
        ] {
            let p = write(d.path(), "kernels/bad.toml", text);
            let e = load_kernel(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn shipped_definitions_load_pinned() {
        for name in ["generic", "airgap", "nitro"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels").join(format!("{name}.toml"));
            let k = load_kernel(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(k.name, name);
            assert_eq!((k.path.as_str(), k.config.as_str(), k.config_required), ("/bzImage", "/linux.config", true));
            assert!(k.image.is_pinned(), "{name}: pinned to a StageX release");
            assert!(k.image.text.starts_with(&format!("stagex/user-linux-{name}@sha256:")));
        }
    }

    #[test]
    fn rdinit_from_cmdline() {
        assert_eq!(rdinit("console=ttyS0"), "/init");
        assert_eq!(rdinit("rdinit=/sbin/init quiet rdinit=/bin/sh"), "/bin/sh");
        assert_eq!(rdinit("quiet -- rdinit=/x"), "/init");
    }
}
