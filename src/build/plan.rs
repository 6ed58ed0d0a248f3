//! The plan of a build: everything a build decides before it reads a layer, made once from
//! the box file (the lock loaded once, inputs resolved and pinned, the signature quorum
//! enforced, kernel and bootloaders resolved and checked) and then passed around as plain data.

use super::outputs::{self, Output};
use super::BuildOptions;
use crate::boot::bootloader::{self, Bootloader};
use crate::boot::kernel::{self, Kernel};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::reference::{ImageRef, RefKind};
use crate::source::signature::{self, Report};
use crate::source::{self, localdir, ResolvedImage, SourceOptions, Store};
use crate::spec::{self, BoxSpec, LayerSpec, LockFile};
use crate::tree::images::worker_threads;
use crate::tree::layer::ContentMode;
use std::path::PathBuf;

/// One build, decided.
pub struct Plan {
    pub spec: BoxSpec,
    /// SOURCE_DATE_EPOCH for every timestamp of every output.
    pub sde: u64,
    /// Worker threads as asked (0 = one per core); never changes an output.
    pub threads: usize,
    pub quiet: bool,
    pub progress: Progress,
    pub store: Store,
    pub sopts: SourceOptions,
    /// BOX.lock, read once (None when there is none).
    pub lock: Option<LockFile>,
    pub lock_path: PathBuf,
    /// Every layer source of the box, resolved, bottom first.
    pub images: Vec<ResolvedImage>,
    /// The signature quorum's result per registry image (`[policy]`).
    pub signatures: Vec<Report>,
    /// The kernel, when an output boots it.
    pub kernel: Option<Kernel>,
    /// The bootloaders of a bootable ISO.
    pub bootloaders: Vec<Bootloader>,
    /// The disk's boot loader.
    pub disk_bootloaders: Vec<Bootloader>,
    /// `[kernel] load_modules`, taken out of the kernel image and checked.
    pub modules: Option<crate::boot::modules::Modules>,
    /// `[output.disk] busybox`: its image and its static busybox.
    pub busybox: Option<(ResolvedImage, Vec<u8>)>,
}

impl Plan {
    /// Load, resolve and check everything; nothing is written and no layer is read yet.
    pub fn new(box_path: &std::path::Path, opts: &BuildOptions) -> Result<Plan> {
        let mut spec = spec::load_box(box_path)?;
        if let Some(dirs) = &opts.check_variant {
            spec.use_dir_copies(dirs);
        }
        let sde = spec.source_date_epoch()?;
        let store = Store::open(&source::store::default_root(opts.cache.as_deref())?)?;
        let progress = Progress::new(opts.quiet);
        let platform = source::Platform::for_box(opts.platform.as_ref(), &spec);
        check_outputs_support(&spec, &platform)?;
        spec.select_platform(&platform.to_string())?;
        let sopts = SourceOptions { platform, source_date_epoch: sde, offline: opts.offline };
        let lock_path = spec::lock_path(&spec.path);
        let lock = if opts.locked { Some(check_complete(&spec, &lock_path)?) } else { LockFile::load(&lock_path)? };

        let t0 = std::time::Instant::now();
        if sopts.offline {
            check_offline(&spec, lock.as_ref(), &lock_path, &store, &sopts)?;
        }
        let images = resolve_inputs(&spec, lock.as_ref(), &lock_path, &store, &sopts, &progress)?;
        if opts.locked {
            check_resolved(&spec, lock.as_ref().expect("loaded above"), &lock_path, &images)?;
        }
        // The signature quorum of [policy], before any layer is read or output written.
        let signatures = signature::enforce(&spec, &images)?;
        let mut plan = Plan {
            spec,
            sde,
            threads: opts.threads,
            quiet: opts.quiet,
            progress,
            store,
            sopts,
            lock,
            lock_path,
            images,
            signatures,
            kernel: None,
            bootloaders: Vec::new(),
            disk_bootloaders: Vec::new(),
            modules: None,
            busybox: None,
        };
        plan.resolve_boot()?;
        plan.progress.timing(|| "resolve and import".into(), t0);
        Ok(plan)
    }

    /// Kernel and bootloaders, each checked against what the outputs need of it.
    fn resolve_boot(&mut self) -> Result<()> {
        let spec = &self.spec;
        let import = crate::boot::Import {
            store: &self.store,
            sopts: &self.sopts,
            lock: self.lock.as_ref(),
            lock_path: &self.lock_path,
            threads: self.threads,
            progress: &self.progress,
        };
        // The kernel of an initramfs box, checked against the initramfs before anything is built.
        // An EIF without an initramfs output still needs the kernel (its ramdisks are
        // uncompressed, so there is no compression to check).
        self.kernel = match &spec.kernel {
            Some(k)
                if spec.outputs.initramfs.is_some()
                    || spec.outputs.eif.is_some()
                    || !spec.bootloaders.is_empty()
                    || spec.outputs.disk.is_some()
                    || (k.load_modules.is_some() && k.modules_root) =>
            {
                let kernel = kernel::resolve(k, &import)?;
                if let Some(i) = &spec.outputs.initramfs {
                    kernel.check_compression(i.compression, spec.initramfs_at.as_ref().unwrap_or(&k.at))?;
                }
                Some(kernel)
            }
            _ => None,
        };
        // The bootloaders of a bootable ISO, and the kernel checked against what they need.
        if let (Some(k), false) = (&self.kernel, spec.bootloaders.is_empty()) {
            let b = bootloader::resolve(&spec.bootloaders, &import)?;
            crate::boot::iso::check_kernel(k, &outputs::iso_boot(spec, k, &b))?;
            self.bootloaders = b;
        }
        // The disk's boot loader, resolved (and checked) before anything is written.
        if spec.outputs.disk.is_some() {
            let b = bootloader::resolve(&spec.disk_bootloaders, &import)?;
            if let (Some(k), Some(at)) = (&self.kernel, &spec.disk_at) {
                k.check_efi_stub(at, "or boot the tree from an [output.iso] or [output.initramfs] instead")?;
            }
            self.disk_bootloaders = b;
        }
        // The modules the box loads, checked against the kernel; the disk's busybox.
        if let (Some(k), Some(sel)) = (&self.kernel, spec.kernel.as_ref().and_then(|k| k.load_modules.as_ref())) {
            self.modules = Some(crate::boot::modules::select(k, sel)?);
        }
        if let Some((r, at)) = &spec.disk_busybox {
            let (image, tree) = import.image_tree(r, at, "busybox")?;
            let bytes = crate::boot::modules::busybox_of(&tree, &image.reference.text, at)?;
            self.busybox = Some((image, bytes));
        }
        Ok(())
    }

    /// The outputs of the box, in the order they are written and listed in the manifest.
    pub fn outputs(&self) -> Vec<Output<'_>> {
        outputs::of(&self.spec)
    }

    /// Where the flattened tree keeps file contents: spilled as soon as one output needs it.
    pub fn content_mode(&self) -> ContentMode {
        if self.outputs().iter().any(|o| o.content_mode() == ContentMode::Spill) { ContentMode::Spill } else { ContentMode::Index }
    }

    /// What the boot compositions need of this build, writing into `out`.
    pub fn job<'a>(&'a self, tree: &'a crate::tree::Tree, out: &'a std::path::Path) -> crate::boot::Job<'a> {
        crate::boot::Job {
            tree,
            spec: &self.spec,
            out,
            sde: self.sde,
            threads: self.threads,
            workers: self.workers(),
            quiet: self.quiet,
            modules: self.modules.as_ref().filter(|_| self.spec.kernel.as_ref().is_some_and(|k| k.modules_boot)),
            busybox: self.busybox.as_ref().map(|(_, b)| b.as_slice()),
        }
    }

    /// Worker threads for emitters (resolved: never 0).
    pub fn workers(&self) -> usize {
        worker_threads(self.threads)
    }

    /// The runtime config (Env, Cmd, ...) of the topmost image layer, for OCI and EIF outputs.
    pub fn top_config(&self) -> Option<&serde_json::Value> {
        self.images.iter().rev().find(|i| !matches!(i.reference.kind, RefKind::Dir { .. })).map(|i| &i.config)
    }

    /// The boxes' images as manifest inputs, in layer order.
    pub fn image_inputs(&self) -> Vec<crate::measure::InputRecord> {
        self.images.iter().map(|i| crate::measure::InputRecord { reference: i.reference.text.clone(), digest: i.pin.to_string() }).collect()
    }
}

/// Resolve every layer of the box into the store, in order.
fn resolve_inputs(
    spec: &BoxSpec,
    lock: Option<&LockFile>,
    lock_path: &std::path::Path,
    store: &Store,
    sopts: &SourceOptions,
    progress: &Progress,
) -> Result<Vec<ResolvedImage>> {
    let mut out = Vec::new();
    for l in &spec.layers {
        match l {
            LayerSpec::Dir { text, path, keep_modes, at } => {
                let r = ImageRef { text: text.clone(), kind: RefKind::Dir { path: path.clone() }, digest: None };
                progress.set_message(format!("read {}", r.text));
                let policy = if *keep_modes { localdir::ModePolicy::Keep } else { localdir::ModePolicy::Normalize };
                let res = localdir::resolve(store, &r, path, policy, sopts.source_date_epoch).map_err(|e| match &e {
                    // Out of space while writing the layer: a build failure (exit 1), not a box-file error.
                    Error::Io { source, .. } if is_out_of_space(source) => {
                        Error::other(format!("dir layer {}: writing its tar into a temporary file: {e} (out of space?)", r.text))
                    }
                    _ => at.error(format!("dir layer: {e}")),
                })?;
                out.push(res);
            }
            LayerSpec::Image { image, at } => {
                let r = spec::pin(image, at, lock, lock_path)?;
                progress.set_message(format!("import {}", r.text));
                let img = source::resolve(store, &r, sopts).map_err(|e| spec::locate_pin(image, at, lock_path, e))?;
                check_platform(&img, at, &format!("layer {}", out.len() + 1), &sopts.platform)?;
                out.push(img);
            }
            LayerSpec::Pallet { pallet, .. } => {
                for (image, at) in &pallet.images {
                    let r = spec::pin(image, at, lock, lock_path)?;
                    progress.set_message(format!("import {}", r.text));
                    let img = source::resolve(store, &r, sopts).map_err(|e| spec::locate_pin(image, at, lock_path, e))?;
                    check_platform(&img, at, &format!("layer {} (pallet {})", out.len() + 1, pallet.name), &sopts.platform)?;
                    out.push(img);
                }
            }
        }
    }
    Ok(out)
}

/// An image (`what`: "layer 2", "kernel", ...) whose config is for another platform than the
/// build's is the box file's error, at the reference.
pub(crate) fn check_platform(img: &ResolvedImage, at: &spec::Location, what: &str, platform: &source::Platform) -> Result<()> {
    source::check_platform(img, platform).map_err(|found| {
        at.error(format!(
            "{what}, {}: {found}, but the box builds for {platform} (the box's `platform`, or --platform; default linux/amd64)",
            img.reference.text
        ))
    })
}

/// Outputs that can be built for `platform`. Root file systems, archives, packages and the
/// OCI output (its config says the platform) are whatever the images are; what boots
/// (initramfs, ISO, disk, EIF) follows the box's architecture, linux/amd64 or linux/arm64
/// (UEFI only on arm64, so a BIOS bootloader on an arm64 box is the box file's error; an
/// arm64 EIF is a Graviton enclave image).
fn check_outputs_support(spec: &BoxSpec, platform: &source::Platform) -> Result<()> {
    if platform.os != "linux" {
        let at = spec.platform.as_ref().map(|p| p.at.clone()).unwrap_or_else(|| spec::Location { file: spec.path.clone(), line: 1, column: 1 });
        return Err(at.error(format!("platform {platform}: stagebox builds Linux root file systems (os \"linux\")")));
    }
    check_bootloaders_fit(spec, platform)?;
    if platform.arch == "amd64" {
        return Ok(());
    }
    let o = &spec.outputs;
    // The OCI output's config says the box's platform, whatever it is; the bootable outputs
    // and EIFs are for the two architectures stagebox boots (and Nitro Enclaves run on).
    let boots_arm64 = platform.arch == "arm64";
    let amd64_only = [
        ("initramfs", o.initramfs.is_some() && !boots_arm64),
        ("eif", o.eif.is_some() && !boots_arm64),
        ("iso", o.iso.is_some() && !boots_arm64),
        ("disk", o.disk.is_some() && !boots_arm64),
    ];
    let refused: Vec<String> = amd64_only.iter().filter(|(_, on)| *on).map(|(n, _)| format!("[output.{n}]")).collect();
    if refused.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "{} cannot be built for {platform} yet (they boot linux/amd64 and linux/arm64 machines only); tar, oci, squashfs, erofs, sbom, provenance and packages can",
        refused.join(", ")
    );
    Err(match &spec.platform {
        Some(p) => p.at.error(msg),
        None => Error::Usage(format!("--platform {platform}: {msg}")),
    })
}

/// The bootloaders of `[output.iso]` and `[output.disk]` must boot the box's architecture:
/// an arm64 box boots only with UEFI (no syslinux, no GRUB i386-pc), and a grub definition's
/// EFI platform directory must be the architecture's (`x86_64-efi`, `arm64-efi`).
fn check_bootloaders_fit(spec: &BoxSpec, platform: &source::Platform) -> Result<()> {
    let Some(arch) = crate::kernelfmt::Arch::from_oci(&platform.arch) else { return Ok(()) };
    let from = match &spec.platform {
        Some(_) => "the box's `platform`",
        None if platform.arch == "amd64" => "the default platform",
        None => "--platform",
    };
    let tables = [("[output.iso]", &spec.bootloaders, &spec.iso_at), ("[output.disk]", &spec.disk_bootloaders, &spec.disk_at)];
    for (table, defs, at) in tables {
        let at = at.clone().unwrap_or_else(|| spec::Location { file: spec.path.clone(), line: 1, column: 1 });
        for d in defs.iter() {
            if arch == crate::kernelfmt::Arch::Arm64 && !d.kind.is_uefi() {
                return Err(at.error(format!(
                    "{table} bootloader {} ({}, from {}) boots BIOS PCs, but the box builds for {platform} ({from}): arm64 machines boot with UEFI only, so use a grub bootloader with an arm64-efi `platform` (Debian's grub-efi-arm64-bin) or systemd-boot's aa64 loader",
                    d.name,
                    d.kind.name(),
                    d.file.display()
                )));
            }
            if d.kind != spec::BootloaderKind::Grub {
                continue;
            }
            let dir = d.files["platform"].trim_end_matches('/');
            let target = dir.rsplit('/').next().unwrap_or_default();
            if target != arch.grub_efi() {
                let loc = d.platform_at.clone().unwrap_or_else(|| at.clone());
                return Err(loc.error(format!(
                    "`platform` is a {target} directory, but {table} boots {} machines (the box builds for {platform}, {from}): it needs a {} one",
                    arch.uname(),
                    arch.grub_efi()
                )));
            }
        }
    }
    Ok(())
}

/// `--offline`: every registry image the box needs (layers, pallets, kernel, bootloaders)
/// must be in the store; name all that are not, with where each is written, not just the
/// first. Local sources (`oci:`, archives, `dir:`) are read where they are.
fn check_offline(spec: &BoxSpec, lock: Option<&LockFile>, lock_path: &std::path::Path, store: &Store, sopts: &SourceOptions) -> Result<()> {
    let mut missing = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let refs = spec.image_refs();
    for (image, at) in &refs {
        if !matches!(image.kind, RefKind::Registry { .. }) || !seen.insert(image.text.clone()) {
            continue;
        }
        let r = spec::pin(image, at, lock, lock_path)?;
        if let Err(e) = source::resolve(store, &r, sopts) {
            missing.push(format!("{at}: {e}"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::other(format!(
        "--offline: {} of the box's {} registry image(s) are not in the store {}:\n{}\n(where there is network, `stagebox pull {}` fills a store; carry it here and use it with --cache or $STAGEBOX_CACHE)",
        missing.len(),
        seen.len(),
        store.root().display(),
        missing.join("\n"),
        spec.path.display()
    )))
}

/// A full disk, a quota or a file size limit.
fn is_out_of_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(e.kind(), K::StorageFull | K::FileTooLarge | K::QuotaExceeded)
}

/// `build --locked`, before anything is pulled: every image reference needs a lock entry, and
/// a reference pinned in the box file must not disagree with its entry (checked in full by
/// [`check_resolved`] once resolved, since an index digest pins a manifest digest).
fn check_complete(spec: &BoxSpec, lock_path: &std::path::Path) -> Result<LockFile> {
    let lock = LockFile::load(lock_path)?.ok_or_else(|| {
        Error::Usage(format!("--locked: {} does not exist; run `stagebox lock {}`", lock_path.display(), spec.path.display()))
    })?;
    for (r, at) in spec.image_refs() {
        if matches!(r.kind, RefKind::Dir { .. }) {
            continue;
        }
        if lock.get(&r.text).is_none() {
            return Err(at.error(format!(
                "--locked: {} has no entry for {:?} (the lock file is incomplete); run `stagebox lock`",
                lock_path.display(),
                r.text
            )));
        }
    }
    Ok(lock)
}

/// `build --locked`, after resolving: each image's pin must be what the lock says.
fn check_resolved(spec: &BoxSpec, lock: &LockFile, lock_path: &std::path::Path, images: &[ResolvedImage]) -> Result<()> {
    let refs = spec.image_refs();
    for img in images {
        let Some(want) = lock.get(&img.reference.text) else { continue };
        if want == img.pin || Some(&want) == img.reference.digest.as_ref() {
            continue;
        }
        let msg = format!(
            "--locked: {} is stale: it pins {:?} to {want}, but the reference resolves to {}; run `stagebox lock`",
            lock_path.display(),
            img.reference.text,
            img.pin
        );
        return Err(match refs.iter().find(|(r, _)| r.text == img.reference.text) {
            Some((_, at)) => at.error(msg),
            None => Error::Usage(msg),
        });
    }
    Ok(())
}

