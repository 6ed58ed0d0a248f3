//! The kernel of a box: resolve its image through the same sources and store as layers, take
//! out the kernel and its config, and check the box's initramfs against them before anything
//! is written.
//!
//! Two checks catch boxes that would build but never boot: the initramfs compression must be
//! one the kernel unpacks (read from `CONFIG_BLK_DEV_INITRD` and `CONFIG_RD_*` in the image's
//! kernel config when it has one — the definition's `config` file, else the config built into the
//! kernel (`CONFIG_IKCONFIG`) — else from the definition's `compressions`), and the init the
//! kernel will run (`rdinit=` or `/init`) must exist in the tree as an executable file, after
//! following symlinks inside the tree, with its `#!` interpreter present too.
//!
//! The kernel file's form (`kernelfmt`: x86 bzImage, arm64 `Image` with or without its EFI
//! stub, `Image.gz`, EFI zboot) is read when the kernel is resolved and checked against the
//! box's platform: a bzImage in a linux/arm64 box, or an arm64 kernel in a linux/amd64 one, is
//! an error naming the image and path. Each loader is then handed only what it boots: QEMU's
//! `-kernel` (an initramfs output) takes every arm64 form; UEFI loaders (systemd-boot, GRUB's
//! EFI `linux`, an ISO's or disk's ESP) need an EFI application, so `Image.gz` and an `Image`
//! without its EFI stub are refused there with the reason (stagebox does not decompress
//! `Image.gz` for them: the box should name a kernel built with `CONFIG_EFI_STUB`, or
//! `CONFIG_EFI_ZBOOT` for a compressed one; docs/arm64.md). An arm64 kernel's built-in config
//! (IKCONFIG) is read from the `Image`, or from the unpacked `Image.gz` or zboot payload.

use crate::digest::HashWriter;
use crate::error::{Error, IoContext, Result};
use crate::measure::{stage_bytes, stage_file, InputRecord, OutputRecord};
use crate::boot::Import;
use crate::source::ResolvedImage;
use crate::spec::{self, Compression, KernelSpec, Location};
use crate::kernelfmt::{Arch, Form};
use crate::tree::{ContentRef, Kind, Node, Tree};
use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

/// Largest kernel file read whole to look for a config built into it.
const MAX_KERNEL: u64 = 256 << 20;

/// A kernel config (`.config` format): `CONFIG_X=value` lines; `# CONFIG_X is not set` and
/// absent options both read as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    pub options: BTreeMap<String, String>,
}

impl KernelConfig {
    pub fn parse(text: &str) -> Self {
        let options = text
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .filter(|(k, _)| k.starts_with("CONFIG_"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        KernelConfig { options }
    }

    /// True when the option is built in (`=y`).
    pub fn builtin(&self, option: &str) -> bool {
        self.options.get(option).is_some_and(|v| v == "y")
    }

    /// True when the option is built as a module (`=m`).
    pub fn module(&self, option: &str) -> bool {
        self.options.get(option).is_some_and(|v| v == "m")
    }

    /// The config a kernel carries in itself (`CONFIG_IKCONFIG`): the bzImage's payload
    /// (gzip, xz or zstd, as `payload_offset`/`payload_length` in its setup header place it)
    /// unpacked, then the gzip between the `IKCFG_ST` and `IKCFG_ED` markers, as the kernel's
    /// `scripts/extract-ikconfig` finds it. None when the kernel has none, or its payload is
    /// compressed some other way (lz4, lzma, bzip2).
    pub fn from_bzimage(k: &[u8]) -> Option<Self> {
        use std::io::Read as _;
        crate::emit::eif::format::bzimage::check(k).ok()?;
        let u32_at = |o: usize| Some(u32::from_le_bytes(k.get(o..o + 4)?.try_into().ok()?) as usize);
        let setup_sects = match k[0x1f1] {
            0 => 4,
            n => n as usize,
        };
        let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
        let payload = k.get(start..start.checked_add(u32_at(0x24c)?)?)?;
        // Unpacked kernels are tens of MiB; the cap keeps a hostile image from filling memory.
        const MAX: u64 = 512 << 20;
        let mut vmlinux = Vec::new();
        let read = match payload {
            [0x1f, 0x8b, ..] => flate2::read::GzDecoder::new(payload).take(MAX).read_to_end(&mut vmlinux),
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => liblzma::read::XzDecoder::new(payload).take(MAX).read_to_end(&mut vmlinux),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => zstd::stream::read::Decoder::new(payload).ok()?.take(MAX).read_to_end(&mut vmlinux),
            _ => return None,
        };
        // A payload with trailing bytes after its stream still gives the whole vmlinux.
        if read.is_err() && vmlinux.is_empty() {
            return None;
        }
        let at = vmlinux.windows(8).position(|w| w == b"IKCFG_ST")? + 8;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&vmlinux[at..]).take(MAX).read_to_string(&mut text).ok()?;
        Some(Self::parse(&text))
    }

    /// The config an arm64 kernel carries in itself (`CONFIG_IKCONFIG`): found in an `Image`
    /// as it is, in an `Image.gz` once unpacked, in an EFI zboot image once its gzip or
    /// zstd payload is unpacked. None for other forms, or when it has none.
    pub fn from_arm64(k: &[u8], form: &Form) -> Option<Self> {
        use std::io::Read as _;
        const MAX: u64 = 512 << 20;
        let unpack = |payload: &[u8]| -> Option<Vec<u8>> {
            let mut v = Vec::new();
            let r = match payload {
                [0x1f, 0x8b, ..] => flate2::read::GzDecoder::new(payload).take(MAX).read_to_end(&mut v),
                [0x28, 0xb5, 0x2f, 0xfd, ..] => zstd::stream::read::Decoder::new(payload).ok()?.take(MAX).read_to_end(&mut v),
                _ => return None,
            };
            (r.is_ok() || !v.is_empty()).then_some(v)
        };
        let unpacked;
        let image: &[u8] = match form {
            Form::Arm64Image { .. } => k,
            Form::Gzip => {
                unpacked = unpack(k)?;
                &unpacked
            }
            Form::Zboot { payload_offset, payload_size, .. } => {
                let start = *payload_offset as usize;
                unpacked = unpack(k.get(start..start.checked_add(*payload_size as usize)?)?)?;
                &unpacked
            }
            Form::BzImage => return None,
        };
        let at = image.windows(8).position(|w| w == b"IKCFG_ST")? + 8;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&image[at..]).take(MAX).read_to_string(&mut text).ok()?;
        Some(Self::parse(&text))
    }

    /// The option a compression needs besides `CONFIG_BLK_DEV_INITRD`.
    pub fn option_for(c: Compression) -> Option<&'static str> {
        match c {
            Compression::None => None,
            Compression::Gzip => Some("CONFIG_RD_GZIP"),
            Compression::Zstd => Some("CONFIG_RD_ZSTD"),
            Compression::Xz => Some("CONFIG_RD_XZ"),
        }
    }

    /// The initramfs compressions this kernel unpacks (none at all without initrd support).
    pub fn initramfs_compressions(&self) -> Vec<Compression> {
        if !self.builtin("CONFIG_BLK_DEV_INITRD") {
            return Vec::new();
        }
        [Compression::None, Compression::Gzip, Compression::Zstd, Compression::Xz]
            .into_iter()
            .filter(|c| Self::option_for(*c).is_none_or(|o| self.builtin(o)))
            .collect()
    }
}

/// A box's kernel, resolved: the image, its flattened files, and what was found in them.
pub struct Kernel {
    pub spec: KernelSpec,
    pub image: ResolvedImage,
    pub tree: Tree,
    /// The kernel file's contents in `tree`.
    pub kernel: ContentRef,
    /// The config, when the image has one at the definition's config path, else the one
    /// built into the kernel (`CONFIG_IKCONFIG`) if it has one.
    pub config: Option<KernelConfig>,
    /// True when `config` came from inside the kernel file.
    pub config_in_kernel: bool,
    /// The kernel file's form, when `kernelfmt` knows it (an amd64 box's kernel that it does
    /// not know is taken as it is, as before; an arm64 box's must be known).
    pub form: Option<Form>,
    /// The architecture the kernel is for: the form's, else the box's platform.
    pub arch: Arch,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("name", &self.spec.def.name).field("image", &self.image.reference.text).finish()
    }
}

impl Kernel {
    /// What this kernel unpacks and how we know: from its config, else from the definition.
    pub fn compressions(&self) -> Option<(Vec<Compression>, String)> {
        match (&self.config, &self.spec.def.compressions) {
            (Some(c), _) => Some((c.initramfs_compressions(), self.config_source())),
            (None, Some(list)) => Some((list.clone(), self.describe())),
            (None, None) => None,
        }
    }

    /// Where the config was read: the file in the image, or the kernel's IKCONFIG.
    pub fn config_source(&self) -> String {
        if self.config_in_kernel {
            format!("the config built into {} (IKCONFIG) in {}", self.spec.def.path, self.image.reference.text)
        } else {
            format!("{} in {}", self.spec.def.config, self.image.reference.text)
        }
    }

    fn describe(&self) -> String {
        match &self.spec.def.file {
            Some(f) => format!("kernel definition {}", f.display()),
            None => "the box's inline [kernel]".to_string(),
        }
    }

    /// The manifest input for the kernel image.
    pub fn input_record(&self) -> InputRecord {
        InputRecord { reference: self.image.reference.text.clone(), digest: self.image.pin.to_string() }
    }

    /// Refuse `c` when the kernel cannot unpack it. `at` is the `[output.initramfs]` table.
    pub fn check_compression(&self, c: Compression, at: &Location) -> Result<()> {
        let Some((ok, source)) = self.compressions() else { return Ok(()) };
        if ok.contains(&c) {
            return Ok(());
        }
        let name = |c: &Compression| format!("{c:?}").to_lowercase();
        let why = match (&self.config, KernelConfig::option_for(c)) {
            (Some(cfg), _) if !cfg.builtin("CONFIG_BLK_DEV_INITRD") => "CONFIG_BLK_DEV_INITRD is not set: it boots no initramfs at all".to_string(),
            (Some(_), Some(opt)) => format!("{opt} is not set"),
            _ => "it is not listed in `compressions`".to_string(),
        };
        let list: Vec<String> = ok.iter().map(name).collect();
        Err(at.error(format!(
            "kernel {:?} cannot unpack a {} initramfs ({source}: {why}); it unpacks: {}",
            self.spec.def.name,
            name(&c),
            if list.is_empty() { "nothing".to_string() } else { list.join(", ") }
        )))
    }

    /// Write `NAME.bzImage` (the kernel) and `NAME.cmdline` (its command line and a newline)
    /// into `out`, atomically.
    /// Refuse a kernel systemd-boot cannot start: UEFI needs an EFI stub, i.e. a PE header
    /// (`MZ` … `PE\0\0` at the offset in byte 0x3c) and, when the image has a config,
    /// `CONFIG_EFI_STUB=y`. `alternative` ends the message with what else the box could do.
    pub fn check_efi_stub(&self, at: &Location, alternative: &str) -> Result<()> {
        if self.arch == Arch::Arm64 {
            return self.check_arm64_efi(at, alternative);
        }
        let mut head = vec![0u8; 0x40.min(self.kernel.len as usize)];
        self.tree.open(&self.kernel).read_exact(&mut head).map_err(|e| Error::other(format!("reading the kernel: {e}")))?;
        let has_pe = head.len() == 0x40 && &head[..2] == b"MZ" && {
            let pe_at = u32::from_le_bytes([head[0x3c], head[0x3d], head[0x3e], head[0x3f]]) as u64;
            let mut sig = [0u8; 4];
            pe_at + 4 <= self.kernel.len
                && self.tree.open(&ContentRef { offset: self.kernel.offset + pe_at, len: 4, ..self.kernel }).read_exact(&mut sig).is_ok()
                && &sig == b"PE\0\0"
        };
        let cfg_says_no = self.config.as_ref().is_some_and(|c| !c.builtin("CONFIG_EFI_STUB"));
        if !has_pe || cfg_says_no {
            return Err(at.error(format!(
                "kernel {:?} has no EFI stub ({}), so systemd-boot cannot start it: use a kernel built with CONFIG_EFI_STUB=y (StageX's airgap kernel is), {alternative}",
                self.spec.def.name,
                if !has_pe { "no PE header in the kernel file" } else { "CONFIG_EFI_STUB is not set in its config" }
            )));
        }
        Ok(())
    }

    /// The arm64 half of [`Kernel::check_efi_stub`]: UEFI loaders start an `Image` with its
    /// EFI stub or an EFI zboot image; `Image.gz` and a stub-less `Image` only boot with
    /// QEMU's `-kernel` (or U-Boot's `booti`).
    fn check_arm64_efi(&self, at: &Location, alternative: &str) -> Result<()> {
        let form = self.form.as_ref().expect("an arm64 kernel's form is known");
        let cfg_says_no = self.config.as_ref().is_some_and(|c| !c.builtin("CONFIG_EFI_STUB"));
        if form.is_efi_application() && !cfg_says_no {
            return Ok(());
        }
        let why = if !form.is_efi_application() { format!("{} {} in {} is {}", self.spec.def.name, self.spec.def.path, self.image.reference.text, form.describe()) } else { "CONFIG_EFI_STUB is not set in its config".to_string() };
        Err(at.error(format!(
            "kernel {:?} is no EFI application ({why}), so UEFI firmware, GRUB arm64-efi and systemd-boot cannot start it: use an arm64 kernel built with CONFIG_EFI_STUB=y (an Image, or an EFI zboot image with CONFIG_EFI_ZBOOT; Debian's arm64 vmlinuz is one), {alternative}",
            self.spec.def.name
        )))
    }

    /// Refuse a UEFI loader (`efi`, the bytes of `what`) built for another architecture
    /// than this kernel: firmware would not start it. Loaders whose PE machine is neither
    /// amd64 nor arm64 are refused too; files that are no PE image are left to the firmware
    /// (as before, for amd64).
    pub fn check_loader_arch(&self, efi: &[u8], what: &str, at: &Location) -> Result<()> {
        let head = &efi[..efi.len().min(crate::kernelfmt::HEAD)];
        match crate::kernelfmt::pe_arch(head) {
            Some(a) if a != self.arch => Err(at.error(format!(
                "{what} is an EFI application for {}, but the kernel {:?} is for {}: the ESP's {} must be a loader for {}",
                a.uname(),
                self.spec.def.name,
                self.arch.uname(),
                self.arch.efi_boot_file(),
                self.arch.uname()
            ))),
            None if self.arch != Arch::Amd64 => Err(at.error(format!("{what} is not an EFI application for {} (no PE header for machine 0xaa64)", self.arch.uname()))),
            _ => Ok(()),
        }
    }

    /// The manifest's `arch` for outputs this kernel boots: None for amd64 (the default a
    /// manifest without the key means), else the OCI name.
    pub fn manifest_arch(&self) -> Option<String> {
        (self.arch != Arch::Amd64).then(|| self.arch.oci().to_string())
    }

    pub fn write(&self, box_name: &str, out: &Path) -> Result<Vec<OutputRecord>> {
        let name = format!("{box_name}.{}", self.form.as_ref().map(Form::file_suffix).unwrap_or("bzImage"));
        let mut kernel = stage_file(out, "kernel", name, |file, path| {
            let mut hw = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
            let mut buf = vec![0u8; 1 << 20];
            crate::fsutil::copy_exact(&mut self.tree.open(&self.kernel), &mut hw, self.kernel.len, &mut buf).at(path)?;
            let (d, size, mut bw) = hw.finish_with_inner();
            bw.flush().at(path)?;
            Ok(Some((d, size)))
        })?;
        kernel.arch = self.manifest_arch();
        let cmdline = stage_bytes(out, "cmdline", format!("{box_name}.cmdline"), format!("{}\n", self.spec.cmdline).as_bytes())?;
        Ok(vec![kernel, cmdline])
    }
}

/// Resolve the box's kernel image (pinned by the box, its definition or `lock`), flatten it,
/// and find the kernel and config in it.
pub fn resolve(k: &KernelSpec, import: &Import) -> Result<Kernel> {
    let def = &k.def;
    let (image, tree) = import.image_tree(&def.image, &def.image_at, "kernel")?;
    let in_image = |what: &str, p: &str, m: String| Error::Resolve {
        reference: image.reference.text.clone(),
        message: format!("{what} {p} (from {}): {m}", def.file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "[kernel]".into())),
    };
    let kernel = regular_file(&tree, &def.path).map_err(|m| in_image("kernel", &def.path, m))?;
    let (form, arch) = kernel_form(&tree, &kernel, &import.sopts.platform.arch).map_err(|m| in_image("kernel", &def.path, m))?;
    let mut config_in_kernel = false;
    let config = match tree.lookup(def.config.as_bytes()) {
        Ok((_, Node { kind: Kind::File { content, .. }, .. })) => {
            let mut text = String::new();
            let mut r = tree.open(content).take(content.len);
            r.read_to_string(&mut text).map_err(|e| in_image("config", &def.config, e.to_string()))?;
            Some(KernelConfig::parse(&text))
        }
        Ok(_) if def.config_required => return Err(in_image("config", &def.config, "not a regular file".into())),
        Err(m) if def.config_required => return Err(in_image("config", &def.config, m)),
        // No config file: the one built into the kernel (CONFIG_IKCONFIG), if any.
        _ if kernel.len <= MAX_KERNEL => {
            let mut k = Vec::with_capacity(kernel.len as usize);
            tree.open(&kernel).read_to_end(&mut k).map_err(|e| in_image("kernel", &def.path, e.to_string()))?;
            let c = match &form {
                Some(f) if arch == Arch::Arm64 => KernelConfig::from_arm64(&k, f),
                _ => KernelConfig::from_bzimage(&k),
            };
            config_in_kernel = c.is_some();
            c
        }
        _ => None,
    };
    Ok(Kernel { spec: k.clone(), image, tree, kernel, config, config_in_kernel, form, arch })
}

/// The form and architecture of the kernel file `kernel` in `tree`, checked against the
/// box's architecture `box_arch` (OCI name), or why the box cannot boot it.
fn kernel_form(tree: &Tree, kernel: &ContentRef, box_arch: &str) -> Result<(Option<Form>, Arch), String> {
    let mut head = vec![0u8; (crate::kernelfmt::HEAD as u64).min(kernel.len) as usize];
    tree.open(kernel).read_exact(&mut head).map_err(|e| e.to_string())?;
    let want = Arch::from_oci(box_arch).ok_or_else(|| format!("stagebox boots linux/amd64 and linux/arm64 kernels, not {box_arch} ones"))?;
    let form = match crate::kernelfmt::identify(&head) {
        Ok(f) => f,
        // An amd64 box's kernel was never checked for its form: keep taking it as it is.
        Err(_) if want == Arch::Amd64 => return Ok((None, Arch::Amd64)),
        Err(m) => return Err(format!("{m}; a linux/arm64 box needs an arm64 Image, Image.gz or EFI zboot image")),
    };
    match (form.arch(), want) {
        (Some(a), w) if a != w => Err(format!("{} (for {}), but the box builds for linux/{} (the box's `platform`, or --platform)", form.describe(), a.uname(), w.oci())),
        (None, Arch::Amd64) => Err(format!("{}, but the box builds for linux/amd64, whose kernels are bzImages", form.describe())),
        (Some(Arch::Arm64), _) if matches!(form, Form::Arm64Image { big_endian: true, .. }) => {
            Err("a big-endian arm64 Image: stagebox boots little-endian aarch64 (what linux/arm64 images are)".into())
        }
        _ => Ok((Some(form), want)),
    }
}

/// The contents of the regular file at `path` in `tree` (symlinks followed), or why not.
pub fn regular_file(tree: &Tree, path: &str) -> Result<ContentRef, String> {
    match tree.lookup(path.as_bytes())? {
        (_, Node { kind: Kind::File { content, .. }, .. }) => Ok(*content),
        _ => Err("not a regular file".into()),
    }
}

fn show(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// Check that the init the kernel runs from the initramfs (see [`spec::rdinit`]) is an
/// executable file in `tree`, and that a script's `#!` interpreter is one too.
pub fn check_init(tree: &Tree, cmdline: &str, at: &Location) -> Result<()> {
    let init = spec::rdinit(cmdline);
    let fail = |m: String| {
        at.error(format!(
            "the kernel would run {init} from the initramfs (set with rdinit= on the command line, else /init), but {m}"
        ))
    };
    let content = executable(tree, init.as_bytes()).map_err(fail)?;
    let mut head = Vec::new();
    tree.open(&content).take(256).read_to_end(&mut head).map_err(|e| fail(format!("reading it failed: {e}")))?;
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
        let interp: Vec<u8> = line.iter().copied().skip_while(|b| *b == b' ' || *b == b'\t').take_while(|b| !b" \t\r".contains(b)).collect();
        if interp.is_empty() {
            return Err(fail("its #! line names no interpreter".into()));
        }
        executable(tree, &interp).map_err(|m| fail(format!("its interpreter {}: {m}", String::from_utf8_lossy(&interp))))?;
    }
    Ok(())
}

/// The content of the executable regular file at `path`, or why it is not one.
fn executable(tree: &Tree, path: &[u8]) -> Result<ContentRef, String> {
    let (key, node) = tree.lookup(path)?;
    match node.kind {
        Kind::File { content, .. } if node.meta.mode & 0o111 != 0 => Ok(content),
        Kind::File { .. } => Err(format!("{} is not executable (mode {:04o})", show(&key), node.meta.mode)),
        _ => Err(format!("{} is not a regular file", show(&key))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage-shaped file (setup header, one setup sector) whose payload is `payload`.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut k = vec![0u8; 1024];
        k[0x1f1] = 1;
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        k[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        k.extend_from_slice(payload);
        k
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn ikconfig_is_found_in_gzip_and_zstd_payloads() {
        let vmlinux = [&b"\x7fELF...code..IKCFG_ST"[..], &gz(b"CONFIG_NSM=y\n# CONFIG_X is not set\n"), b"IKCFG_ED...rest"].concat();
        let c = KernelConfig::from_bzimage(&bzimage(&gz(&vmlinux))).unwrap();
        assert!(c.builtin("CONFIG_NSM") && !c.options.contains_key("CONFIG_X"));
        let z = zstd::encode_all(&vmlinux[..], 3).unwrap();
        assert!(KernelConfig::from_bzimage(&bzimage(&z)).unwrap().builtin("CONFIG_NSM"));
        assert_eq!(KernelConfig::from_bzimage(&bzimage(&gz(b"no config here"))), None);
        assert_eq!(KernelConfig::from_bzimage(&bzimage(b"LZ4?")), None);
        assert_eq!(KernelConfig::from_bzimage(b"short"), None);
    }

    #[test]
    fn ikconfig_is_found_in_arm64_image_image_gz_and_zboot() {
        let mut image = vec![0u8; 0x40];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        image.extend_from_slice(b"code..IKCFG_ST");
        image.extend_from_slice(&gz(b"CONFIG_RD_ZSTD=y\n"));
        image.extend_from_slice(b"IKCFG_ED");
        let f = crate::kernelfmt::identify(&image).unwrap();
        assert!(KernelConfig::from_arm64(&image, &f).unwrap().builtin("CONFIG_RD_ZSTD"));
        assert!(KernelConfig::from_arm64(&gz(&image), &Form::Gzip).unwrap().builtin("CONFIG_RD_ZSTD"));
        let z = zstd::encode_all(&image[..], 3).unwrap();
        let mut zboot = vec![0u8; 0x100];
        zboot.extend_from_slice(&z);
        let form = Form::Zboot { arch: Some(Arch::Arm64), compression: "zstd".into(), payload_offset: 0x100, payload_size: z.len() as u32 };
        assert!(KernelConfig::from_arm64(&zboot, &form).unwrap().builtin("CONFIG_RD_ZSTD"));
        assert_eq!(KernelConfig::from_arm64(&image[..0x48], &f), None);
    }

    #[test]
    fn config_compressions() {
        let c = KernelConfig::parse("CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\nCONFIG_RD_XZ=m\n");
        assert_eq!(c.initramfs_compressions(), vec![Compression::None, Compression::Gzip]);
        let c = KernelConfig::parse("CONFIG_RD_GZIP=y\n");
        assert!(c.initramfs_compressions().is_empty());
        let c = KernelConfig::parse("CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\nCONFIG_RD_XZ=y\nCONFIG_DEFAULT_INIT=\"/init\"\n");
        assert_eq!(c.initramfs_compressions().len(), 4);
        assert_eq!(c.options["CONFIG_DEFAULT_INIT"], "\"/init\"");
    }
}
