//! The box file (`BOX.toml`): what goes in (layers), and which outputs to build.

use super::{Location, Source};
use crate::error::Result;
use crate::reference::{ImageRef, RefKind};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A validated box file. Paths are resolved against the box file's directory.
#[derive(Debug, Clone)]
pub struct BoxSpec {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub name: String,
    pub version: String,
    pub source_date_epoch: Option<u64>,
    pub layers: Vec<LayerSpec>,
    pub outputs: Outputs,
    /// `[kernel]`: the kernel initramfs-booting outputs are built for.
    pub kernel: Option<super::KernelSpec>,
    /// Where `[output.initramfs]` stands in the box file (for errors about it).
    pub initramfs_at: Option<Location>,
    /// `[policy]`: the signature quorum registry images must meet.
    pub policy: Option<super::PolicySpec>,
    /// `[policy.outputs]`: the reproduction quorum `verify-build --box` requires.
    pub output_policy: Option<super::OutputPolicy>,
    /// Where `[output.eif]` stands in the box file.
    pub eif_at: Option<Location>,
    /// `[output.deb|rpm|arch|apk]`, validated.
    pub packages: Vec<super::PackageSpec>,
    /// Where `[output.iso]` stands in the box file.
    pub iso_at: Option<Location>,
    /// `[output.iso] bootloader`: the definitions, one per kind (empty: a plain ISO).
    pub bootloaders: Vec<super::BootloaderDef>,
    /// Where `[output.disk]` stands, and its bootloaders (resolved definitions).
    pub disk_at: Option<Location>,
    pub disk_bootloaders: Vec<super::BootloaderDef>,
    /// `platform = "OS/ARCH"`: what every image must be built for (None: linux/amd64, or
    /// `--platform`), with where it was written.
    pub platform: Option<BoxPlatform>,
    /// `[output.disk] busybox`: the image whose static busybox runs the early initrd stagebox
    /// makes for `[kernel] load_modules`, and where it was written.
    pub disk_busybox: Option<(ImageRef, Location)>,
}

/// A box's `platform`, as written: `linux/arm64` is `os` "linux", `arch` "arm64" (OCI names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxPlatform {
    pub os: String,
    pub arch: String,
    pub at: Location,
}

/// One `[[layer]]`, bottom first.
#[derive(Debug, Clone)]
pub enum LayerSpec {
    Image { image: ImageRef, at: Location },
    Pallet { pallet: super::PalletSpec, at: Location },
    /// Local files; `keep_modes` keeps on-disk permission bits instead of normalizing them.
    /// `text` is the reference as written (`dir:rootfs`), for the manifest.
    Dir { text: String, path: PathBuf, keep_modes: bool, at: Location },
}

/// Compression of a tar or cpio stream. Fixed levels (see `emit::compress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    /// File name suffix after `.tar` / `.cpio`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TarOutput {
    #[serde(default)]
    pub compression: Compression,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OciOutput {
    /// Tag written as `org.opencontainers.image.ref.name`; default: the box version.
    pub tag: Option<String>,
}

/// `[output.initramfs]`: `NAME.cpio[.gz|.zst|.xz]`, the rootfs as a newc initramfs.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InitramfsOutput {
    #[serde(default)]
    pub compression: Compression,
    /// Archives put in front, uncompressed and as they are (e.g. an early microcode cpio),
    /// as written: relative to the box file.
    #[serde(default)]
    pub prepend: Vec<String>,
}

/// How `[output.eif]` makes its ramdisks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EifLayout {
    /// One newc initramfs of the whole tree, run by the box's own init (EnclaveOS, QuorumOS).
    #[default]
    Initramfs,
    /// nitro-cli's pair: a bootstrap ramdisk (`init`, `nsm.ko`) and a customer ramdisk
    /// (`rootfs/`, `cmd`, `env`).
    NitroCli,
}

/// How `[output.eif]` treats a kernel that lacks what an enclave needs (see `boot::enclave`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KernelChecks {
    /// Refuse the build, naming each missing kernel option.
    #[default]
    Strict,
    /// Print the same findings as warnings and build anyway (test kernels, e.g. Debian's).
    Warn,
}

/// `[output.eif]`: `NAME.eif` and `NAME.pcrs`, an AWS Nitro Enclave image of the box's
/// `[kernel]` (see `src/enclave.rs`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EifOutput {
    #[serde(default)]
    pub layout: EifLayout,
    /// nitro-cli layout: path in the box's tree of the static init for the bootstrap ramdisk.
    pub bootstrap_init: Option<String>,
    /// nitro-cli layout: the command (default: the image config's Entrypoint + Cmd).
    pub cmd: Option<Vec<String>>,
    /// nitro-cli layout: the environment, `KEY=value` (default: the image config's Env).
    pub env: Option<Vec<String>>,
    /// PEM certificate and P-384 private key to sign with (relative to the box file); both or
    /// neither.
    pub signing_certificate: Option<String>,
    pub signing_key: Option<String>,
    /// `"strict"` (default): refuse a kernel whose config lacks what a Nitro enclave needs
    /// (vsock, virtio-mmio, serial console, initramfs, devtmpfs, the NSM driver); `"warn"`:
    /// print the findings and build anyway.
    #[serde(default)]
    pub kernel_checks: KernelChecks,
}

/// Compression of a SquashFS image's data and metadata blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SquashfsCompression {
    #[default]
    Gzip,
    Xz,
    Zstd,
}

/// `[output.squashfs]`: `NAME.squashfs`, the rootfs as a read-only SquashFS image.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SquashfsOutput {
    #[serde(default)]
    pub compression: SquashfsCompression,
    /// A dm-verity hash tree beside the image (`NAME.squashfs.verity`, `NAME.roothash`).
    #[serde(default)]
    pub verity: bool,
}

/// `[output.erofs]`: `NAME.erofs`, the rootfs as an EROFS image.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErofsOutput {
    /// Volume name (at most 16 bytes); default: the box name.
    pub label: Option<String>,
    /// A dm-verity hash tree beside the image (`NAME.erofs.verity`, `NAME.roothash`).
    #[serde(default)]
    pub verity: bool,
    /// File data compression (`none`, `lz4`, `lz4hc`, `lzma`), in 4 KiB physical clusters as
    /// the kernel reads them; default `none`.
    #[serde(default)]
    pub compression: ErofsCompression,
}

/// `[output.erofs] compression`: how regular files' data is stored. lz4 and lz4hc write the
/// same format (lz4hc compresses harder, slower); lzma needs a kernel with
/// `CONFIG_EROFS_FS_ZIP_LZMA` and erofs-utils 1.6 or newer to read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErofsCompression {
    #[default]
    None,
    Lz4,
    Lz4hc,
    Lzma,
}

/// `[output.iso]`: `NAME.iso`, the tree as an ISO 9660 image (Rock Ridge + Joliet).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IsoOutput {
    /// Volume identifier (default: the box name); mapped to ISO 9660 d-characters, Joliet
    /// keeps up to 16 characters as written.
    pub volume_id: Option<String>,
    /// Boot support (`src/isoboot.rs`): bootloader definitions, one per kind (see
    /// kernels/README.md); with it the box needs a `[kernel]`.
    pub bootloader: Option<super::RawBootloaders>,
    /// Boot menus on the first serial port too.
    #[serde(default)]
    pub serial: bool,
    /// Boot-menu title (default "stagebox").
    pub label: Option<String>,
    /// Store the tree as ISO 9660 files. Default: yes for a plain data ISO, no for a
    /// bootable one (it boots kernel + initramfs, which already hold the tree).
    pub files: Option<bool>,
}

impl IsoOutput {
    /// Whether the tree goes into the ISO as files (see [`IsoOutput::files`]).
    pub fn tree_files(&self) -> bool {
        self.files.unwrap_or(self.bootloader.is_none())
    }
}

/// The root file system of a disk image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskRoot {
    #[default]
    Squashfs,
    Erofs,
}

/// `[output.disk]`: `NAME.img`, a raw GPT disk: an EFI system partition with the UEFI boot
/// loader, the box's kernel and an optional early initramfs, and a read-only root partition
/// holding the tree, named on the kernel command line by its PARTUUID.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskOutput {
    /// The UEFI boot loader: a systemd-boot definition (or a table with its image).
    pub bootloader: super::RawBootloaders,
    #[serde(default)]
    pub root: DiskRoot,
    /// Compression of a SquashFS root.
    #[serde(default)]
    pub compression: SquashfsCompression,
    /// Early initramfs archives (relative to the box file), concatenated into the initrd the
    /// loader hands the kernel: what it needs to reach the root partition (drivers, a
    /// `/init` that mounts it). None: the kernel mounts `root=PARTUUID=...` itself.
    #[serde(default)]
    pub initrd: Vec<String>,
    /// The image size in bytes (at least what the partitions need); default: minimal.
    pub size: Option<u64>,
    /// Protect the root partition with dm-verity: the hash tree in a third partition (the
    /// Discoverable Partitions root-verity type), the root hash on the kernel command line.
    #[serde(default)]
    pub verity: bool,
    /// Also write `NAME.qcow2`: the same disk as a sparse, deterministic qcow2 (version 3).
    #[serde(default)]
    pub qcow2: bool,
    /// How the qcow2 stores its clusters: `"none"` (default) or `"zlib"` (what
    /// `qemu-img convert -c` writes).
    #[serde(default)]
    pub qcow2_compression: Qcow2Compression,
    /// An image holding a static busybox (`/bin/busybox` or `/usr/bin/busybox`): with
    /// `[kernel] load_modules` and no `initrd`, stagebox makes the early initrd itself, an
    /// `/init` run by this busybox that loads the modules and mounts the root partition.
    pub busybox: Option<String>,
}

/// Cluster compression of a qcow2 image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Qcow2Compression {
    #[default]
    None,
    Zlib,
}

/// `[output.*]` tables. Each present table is one output.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    pub tar: Option<TarOutput>,
    pub oci: Option<OciOutput>,
    pub initramfs: Option<InitramfsOutput>,
    pub eif: Option<EifOutput>,
    pub squashfs: Option<SquashfsOutput>,
    pub erofs: Option<ErofsOutput>,
    /// `[output.sbom]`: `NAME.spdx.json` (see `measure::sbom`).
    pub sbom: Option<Empty>,
    /// `[output.provenance]`: `NAME.intoto.json` (see `measure::provenance`).
    pub provenance: Option<Empty>,
    /// Packages for other distributions (see `spec::package`).
    pub deb: Option<super::PackageOutput>,
    pub rpm: Option<super::PackageOutput>,
    pub arch: Option<super::PackageOutput>,
    pub apk: Option<super::PackageOutput>,
    pub iso: Option<IsoOutput>,
    pub disk: Option<DiskOutput>,
}

impl BoxSpec {
    /// Make the box's platform-dependent parts (its kernel definition's `[platforms]` table)
    /// those of `platform` ("OS/ARCH"): every command calls this with the platform it builds,
    /// locks or pulls for, before it resolves an image.
    pub fn select_platform(&mut self, platform: &str) -> Result<()> {
        match &mut self.kernel {
            Some(k) => k.select_platform(platform),
            None => Ok(()),
        }
    }

    /// SOURCE_DATE_EPOCH: the box file's, else the environment's, else 1 (what StageX uses).
    pub fn source_date_epoch(&self) -> Result<u64> {
        if let Some(v) = self.source_date_epoch {
            return Ok(v);
        }
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => v
                .trim()
                .parse::<u64>()
                .map_err(|_| crate::Error::Usage(format!("SOURCE_DATE_EPOCH={v:?} is not a non-negative integer"))),
            _ => Ok(1),
        }
    }

    /// Every image reference of the box, in layer order, then kernel and bootloaders, with
    /// where each was written.
    pub fn image_refs(&self) -> Vec<(ImageRef, Location)> {
        let mut v = Vec::new();
        for l in &self.layers {
            match l {
                LayerSpec::Image { image, at } => v.push((image.clone(), at.clone())),
                LayerSpec::Pallet { pallet, .. } => v.extend(pallet.images.iter().cloned()),
                LayerSpec::Dir { .. } => {}
            }
        }
        if let Some(k) = &self.kernel {
            v.push((k.def.image.clone(), k.def.image_at.clone()));
        }
        v.extend(self.bootloaders.iter().map(|b| (b.image.clone(), b.image_at.clone())));
        v.extend(self.disk_bootloaders.iter().map(|b| (b.image.clone(), b.image_at.clone())));
        v.extend(self.disk_busybox.iter().cloned());
        v
    }

    /// The second build of `build --check`: read the n-th `dir` layer from `dirs/n` instead.
    pub fn use_dir_copies(&mut self, dirs: &Path) {
        let mut n = 0;
        for l in &mut self.layers {
            if let LayerSpec::Dir { path, .. } = l {
                *path = dirs.join(n.to_string());
                n += 1;
            }
        }
    }
}

impl Outputs {
    /// The package tables present, in the order `PackageFormat::ALL` lists them.
    pub fn packages(&self) -> Vec<(super::PackageFormat, &super::PackageOutput)> {
        let t = [&self.deb, &self.rpm, &self.arch, &self.apk];
        super::PackageFormat::ALL.into_iter().zip(t).filter_map(|(f, o)| o.as_ref().map(|o| (f, o))).collect()
    }

    /// True when no output table is present. Names every field on purpose: a new output
    /// type must be counted here.
    pub fn is_empty(&self) -> bool {
        let Outputs { tar, oci, initramfs, eif, iso, squashfs, erofs, disk, sbom, provenance, deb, rpm, arch, apk } = self;
        tar.is_none()
            && iso.is_none()
            && disk.is_none()
            && oci.is_none()
            && initramfs.is_none()
            && eif.is_none()
            && squashfs.is_none()
            && erofs.is_none()
            && sbom.is_none()
            && provenance.is_none()
            && deb.is_none()
            && rpm.is_none()
            && arch.is_none()
            && apk.is_none()
    }
}

/// An output table that takes no keys.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A box file: the layers, kernel and outputs of one build.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BoxFile")]
struct RawBox {
    #[schemars(with = "String")]
    name: Spanned<String>,
    #[schemars(with = "Option<String>")]
    version: Option<Spanned<String>>,
    #[schemars(with = "Option<i64>")]
    source_date_epoch: Option<Spanned<i64>>,
    /// The platform every image is resolved for and checked against, `OS/ARCH` in OCI's
    /// names (default "linux/amd64"; `--platform` overrides it for one build).
    #[schemars(with = "Option<String>")]
    platform: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawLayer>")]
    layer: Vec<Spanned<RawLayer>>,
    output: Option<Outputs>,
    #[schemars(with = "Option<super::kernel::RawBoxKernel>")]
    kernel: Option<Spanned<super::kernel::RawBoxKernel>>,
    policy: Option<super::policy::RawPolicy>,
}

/// One `[[layer]]`: exactly one of `image`, `pallet`, `dir`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Layer")]
struct RawLayer {
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pallet: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    dir: Option<Spanned<String>>,
    /// For `dir` layers: "normalize" (default) or "keep".
    #[schemars(with = "Option<String>")]
    modes: Option<Spanned<String>>,
}

/// The schema of a box file, its parts registered in `g`.
pub(super) fn schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<RawBox>()
}

/// Read and validate a box file.
pub fn load_box(path: &Path) -> Result<BoxSpec> {
    let src = Source::read(path)?;
    let raw: RawBox = src.parse()?;
    let dir = src.dir();

    let name = raw.name.get_ref().clone();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)) {
        return Err(src.loc(raw.name.span()).error(format!(
            "invalid box name {name:?}: use letters, digits, '.', '_', '+' and '-' (it names the output files)"
        )));
    }
    let version = match &raw.version {
        Some(v) if v.get_ref().is_empty() || v.get_ref().contains(char::is_whitespace) => {
            return Err(src.loc(v.span()).error("version must be non-empty and contain no spaces"));
        }
        Some(v) => v.get_ref().clone(),
        None => "0".to_string(),
    };
    let source_date_epoch = match &raw.source_date_epoch {
        Some(s) if *s.get_ref() < 0 => {
            return Err(src.loc(s.span()).error("source_date_epoch must be >= 0"));
        }
        Some(s) => Some(*s.get_ref() as u64),
        None => None,
    };

    let platform = match &raw.platform {
        None => None,
        Some(p) => {
            let at = src.loc(p.span());
            match p.get_ref().split_once('/') {
                Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/') => {
                    Some(BoxPlatform { os: os.to_string(), arch: arch.to_string(), at })
                }
                _ => return Err(at.error(format!("platform {:?} must be OS/ARCH in OCI's names, e.g. \"linux/amd64\" or \"linux/arm64\"", p.get_ref()))),
            }
        }
    };

    let mut layers = Vec::new();
    for l in &raw.layer {
        let at = src.loc(l.span());
        let r = l.get_ref();
        let set = [r.image.is_some(), r.pallet.is_some(), r.dir.is_some()].iter().filter(|x| **x).count();
        if let (Some(modes), None) = (&r.modes, &r.dir) {
            return Err(src.loc(modes.span()).error("`modes` applies to `dir` layers only"));
        }
        if set != 1 {
            return Err(at.error("each [[layer]] needs exactly one of `image`, `pallet` or `dir`"));
        }
        if let Some(image) = &r.image {
            let iat = src.loc(image.span());
            let parsed = ImageRef::parse(image.get_ref(), &dir).map_err(|m| iat.error(m))?;
            if let RefKind::Dir { path } = parsed.kind {
                layers.push(LayerSpec::Dir { text: image.get_ref().clone(), path, keep_modes: false, at: iat });
            } else {
                layers.push(LayerSpec::Image { image: parsed, at: iat });
            }
        } else if let Some(p) = &r.pallet {
            let pat = src.loc(p.span());
            let file = find_pallet(&dir, p.get_ref()).ok_or_else(|| {
                pat.error(format!(
                    "pallet {:?} not found: looked for pallets/{}.toml beside the box file and in its parent directories",
                    p.get_ref(),
                    p.get_ref()
                ))
            })?;
            let pallet = super::load_pallet(&file)?;
            layers.push(LayerSpec::Pallet { pallet, at: pat });
        } else if let Some(d) = &r.dir {
            let dat = src.loc(d.span());
            if d.get_ref().is_empty() {
                return Err(dat.error("dir must name a directory"));
            }
            let keep_modes = match &r.modes {
                None => false,
                Some(m) if m.get_ref() == "normalize" => false,
                Some(m) if m.get_ref() == "keep" => true,
                Some(m) => return Err(src.loc(m.span()).error("modes must be \"normalize\" or \"keep\"")),
            };
            layers.push(LayerSpec::Dir { text: format!("dir:{}", d.get_ref()), path: dir.join(d.get_ref()), keep_modes, at: dat });
        }
    }
    if layers.is_empty() {
        return Err(src.loc(0..0).error("a box needs at least one [[layer]]"));
    }
    let (outputs, out_span) = match &raw.output {
        Some(o) => (o.clone(), src.line_start("[output").or_else(|| src.line_start("output")).map(|i| i..i).unwrap_or(0..0)),
        None => (Outputs::default(), 0..0),
    };
    if outputs.is_empty() {
        return Err(src.loc(out_span).error(
            "a box needs at least one [output.*] table (tar, oci, initramfs, eif, iso, squashfs, erofs, disk, deb, rpm, arch, apk, sbom, provenance)",
        ));
    }
    let version_at = raw.version.as_ref().map(|v| src.loc(v.span())).unwrap_or_else(|| src.loc(0..0));
    let packages = outputs
        .packages()
        .into_iter()
        .map(|(f, o)| super::package::package_spec(&src, f, o, &name, &version, version_at.clone(), raw.layer.len()))
        .collect::<Result<Vec<_>>>()?;
    let mut kernel = raw.kernel.as_ref().map(|k| super::kernel::box_kernel(&src, k, &name)).transpose()?;
    if let Some(k) = &mut kernel {
        // The box's own platform's table, when the definition has one; a build for another
        // platform selects again (and reports a missing table then).
        let p = platform.as_ref().map(|p| format!("{}/{}", p.os, p.arch)).unwrap_or_else(|| "linux/amd64".into());
        let _ = k.select_platform(&p);
    }
    let initramfs_at = outputs.initramfs.as_ref().map(|_| {
        let i = src.line_start("[output.initramfs]").or_else(|| src.text.find("initramfs")).unwrap_or(0);
        src.loc(i..i)
    });
    if let Some(i) = &outputs.initramfs {
        if let Some(p) = i.prepend.iter().find(|p| p.is_empty()) {
            return Err(initramfs_at.clone().expect("set").error(format!("prepend entry {p:?} names no file")));
        }
    }
    let eif_at = outputs.eif.as_ref().map(|_| {
        let i = src.line_start("[output.eif]").or_else(|| src.text.find("eif")).unwrap_or(0);
        src.loc(i..i)
    });
    let verity = [outputs.squashfs.as_ref().is_some_and(|o| o.verity), outputs.erofs.as_ref().is_some_and(|o| o.verity), outputs.disk.as_ref().is_some_and(|o| o.verity)];
    if verity.iter().filter(|v| **v).count() > 1 {
        // The second `verity` key line (the first is allowed).
        let mut at = 0;
        let mut starts = Vec::new();
        for line in src.text.split_inclusive('\n') {
            let t = line.trim_start();
            if t.starts_with("verity") {
                starts.push(at + line.len() - t.len());
            }
            at += line.len();
        }
        let second = starts.get(1).copied().unwrap_or(0);
        return Err(src.loc(second..second).error("`verity = true` on more than one output: each would write NAME.roothash; choose one"));
    }
    if let (Some(e), Some(eat)) = (&outputs.eif, &eif_at) {
        if kernel.is_none() {
            return Err(eat.error("[output.eif] needs a [kernel] (e.g. `definition = \"kernels/nitro.toml\"`)"));
        }
        if e.signing_certificate.is_some() != e.signing_key.is_some() {
            return Err(eat.error("signing needs both `signing_certificate` and `signing_key`"));
        }
        if e.layout == EifLayout::Initramfs && (e.bootstrap_init.is_some() || e.cmd.is_some() || e.env.is_some()) {
            return Err(eat.error("`bootstrap_init`, `cmd` and `env` belong to layout = \"nitro-cli\"; the initramfs layout runs the box's own /init"));
        }
    }
    let iso_at = outputs.iso.as_ref().map(|_| {
        let i = src.line_start("[output.iso]").or_else(|| src.text.find("iso")).unwrap_or(0);
        src.loc(i..i)
    });
    if let (Some(o), Some(at)) = (&outputs.iso, &iso_at) {
        if o.volume_id.as_ref().is_some_and(|v| v.is_empty() || v.len() > 32 || v.chars().any(char::is_control)) {
            return Err(at.error("volume_id must be 1 to 32 bytes without control characters"));
        }
    }
    let bootloaders = match (&outputs.iso, &iso_at) {
        (Some(super::IsoOutput { bootloader: Some(b), .. }), Some(at)) => {
            if kernel.is_none() {
                return Err(at.error("a bootable [output.iso] (with `bootloader`) needs a [kernel] (e.g. `definition = \"kernels/airgap.toml\"`)"));
            }
            if let Some(l) = outputs.iso.as_ref().and_then(|o| o.label.as_ref()) {
                if l.is_empty() || l.len() > 64 || l.chars().any(char::is_control) {
                    return Err(at.error("label must be 1 to 64 bytes without control characters (it goes into the boot menus)"));
                }
            }
            let list = super::box_bootloaders(&dir, b, at)?;
            if let Some(p) = list.iter().find(|b| b.kind == super::BootloaderKind::GrubPc) {
                return Err(at.error(format!("bootloader {}: GRUB i386-pc boots [output.disk] images; an ISO boots BIOS machines with syslinux", p.name)));
            }
            if list.is_empty() {
                return Err(at.error("`bootloader` lists no definition"));
            }
            list
        }
        (Some(o), Some(at)) if o.serial || o.label.is_some() => {
            return Err(at.error("`serial` and `label` are boot-menu settings: they need `bootloader`"));
        }
        (Some(o), Some(at)) if o.files == Some(false) => {
            return Err(at.error("`files = false` without `bootloader` would leave the ISO empty: a data ISO holds the tree as files"));
        }
        _ => Vec::new(),
    };
    let disk_at = outputs.disk.as_ref().map(|_| {
        let i = src.line_start("[output.disk]").or_else(|| src.text.find("disk")).unwrap_or(0);
        src.loc(i..i)
    });
    let disk_bootloaders = match (&outputs.disk, &disk_at) {
        (Some(d), Some(at)) => {
            if kernel.is_none() {
                return Err(at.error("[output.disk] needs a [kernel] (e.g. `definition = \"kernels/generic.toml\"`)"));
            }
            if d.initrd.iter().any(|p| p.is_empty()) {
                return Err(at.error("an `initrd` entry names no file"));
            }
            let defs = super::box_bootloaders(&dir, &d.bootloader, at)?;
            let bios = defs.iter().filter(|b| b.kind == super::BootloaderKind::GrubPc).count();
            if defs.iter().filter(|b| b.kind.is_uefi()).count() != 1 || defs.len() != 1 + bios {
                return Err(at.error(
                    "[output.disk] boots with UEFI: give exactly one grub or systemd-boot bootloader, and for BIOS boot also a grub one with an i386-pc `platform` (syslinux boots ISOs only)",
                ));
            }
            let wants_modules = kernel.as_ref().is_some_and(|k| k.load_modules.is_some() && k.modules_boot);
            if wants_modules && d.initrd.is_empty() && d.busybox.is_none() {
                return Err(at.error(
                    "[kernel] load_modules with no `initrd`: stagebox makes the disk's early initrd, and needs `busybox = \"IMAGE\"` (an image with a static busybox) to run its /init",
                ));
            }
            if d.busybox.is_some() && !(wants_modules && d.initrd.is_empty()) {
                return Err(at.error("`busybox` runs the early initrd stagebox makes for [kernel] load_modules when the disk names no `initrd`: remove it, or `initrd`"));
            }
            if !d.qcow2 && d.qcow2_compression != Qcow2Compression::None {
                return Err(at.error("`qcow2_compression` applies to the qcow2 image: add `qcow2 = true`"));
            }
            if d.root != DiskRoot::Squashfs && d.compression != SquashfsCompression::default() {
                return Err(at.error("`compression` applies to a squashfs root"));
            }
            defs
        }
        _ => Vec::new(),
    };
    let disk_busybox = match (outputs.disk.as_ref().and_then(|d| d.busybox.as_ref()), &disk_at) {
        (Some(b), Some(at)) => {
            let r = ImageRef::parse(b, &dir).map_err(|m| at.error(format!("busybox: {m}")))?;
            if matches!(r.kind, crate::reference::RefKind::Dir { .. }) {
                return Err(at.error("busybox comes from an image, not a dir: reference"));
            }
            Some((r, at.clone()))
        }
        _ => None,
    };
    let policy = raw.policy.as_ref().map(|p| super::policy::load_policy(&src, p)).transpose()?.flatten();
    let output_policy = raw.policy.as_ref().map(|p| super::policy::load_output_policy(&src, p)).transpose()?.flatten();
    Ok(BoxSpec {
        bootloaders,
        disk_at,
        disk_bootloaders,
        disk_busybox,
        policy,
        output_policy,
        path: path.to_path_buf(),
        dir,
        name,
        version,
        source_date_epoch,
        layers,
        outputs,
        kernel,
        initramfs_at,
        eif_at,
        packages,
        iso_at,
        platform,
    })
}

/// A pallet named `NAME` is `pallets/NAME.toml` in the box's directory or an ancestor;
/// a value with a `/` or ending in `.toml` is a path relative to the box file.
fn find_pallet(box_dir: &Path, name: &str) -> Option<PathBuf> {
    if name.contains('/') || name.ends_with(".toml") {
        let p = box_dir.join(name);
        return p.is_file().then_some(p);
    }
    let abs = std::path::absolute(box_dir).ok()?;
    abs.ancestors().map(|a| a.join("pallets").join(format!("{name}.toml"))).find(|p| p.is_file())
}
