//! `stagebox build`: box file → pinned inputs → flattened tree → every output it names,
//! written atomically, plus `manifest.json` with the sha256 of each.

pub mod package;

use crate::digest::HashWriter;
use crate::emit;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{AtomicDir, AtomicFile, PreallocFile};
use crate::measure::{BuildManifest, InputRecord, OutputRecord};
use crate::progress::Progress;
use crate::reference::{ImageRef, RefKind};
use crate::source::{self, localdir, LayerBlob, Platform, ResolvedImage, SourceOptions, Store};
use crate::spec::{self, BoxSpec, LayerSpec, Location, LockFile};
use crate::tree::{self, layer::ContentMode, layer::Limits, Tree};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Settings from the command line.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub out: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub platform: Option<Platform>,
    /// Worker threads for reading layers; 0 = one per core. Never changes the output.
    pub threads: usize,
    pub quiet: bool,
    /// Use the content store only (no registry access).
    pub offline: bool,
    /// Refuse a missing, incomplete or stale BOX.lock (exit 2).
    pub locked: bool,
    /// The second build of `--check` (see `crate::check`): read the n-th `dir` layer from
    /// `DIR/n`.
    pub check_variant: Option<PathBuf>,
}

#[derive(Debug)]
pub struct BuildResult {
    pub out_dir: PathBuf,
    pub manifest: BuildManifest,
}

/// SOURCE_DATE_EPOCH: the box file's, else the environment's, else 1 (what StageX uses).
pub fn source_date_epoch(spec: &BoxSpec) -> Result<u64> {
    if let Some(v) = spec.source_date_epoch {
        return Ok(v);
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<u64>()
            .map_err(|_| Error::Usage(format!("SOURCE_DATE_EPOCH={v:?} is not a non-negative integer"))),
        _ => Ok(1),
    }
}

/// Every image reference of the box, in layer order, with where it was written.
pub fn image_refs(spec: &BoxSpec) -> Vec<(ImageRef, Location)> {
    let mut v = Vec::new();
    for l in &spec.layers {
        match l {
            LayerSpec::Image { image, at } => v.push((image.clone(), at.clone())),
            LayerSpec::Pallet { pallet, .. } => v.extend(pallet.images.iter().cloned()),
            LayerSpec::Dir { .. } => {}
        }
    }
    if let Some(k) = &spec.kernel {
        v.push((k.def.image.clone(), k.def.image_at.clone()));
    }
    v.extend(spec.bootloaders.iter().map(|b| (b.image.clone(), b.image_at.clone())));
    v.extend(spec.disk_bootloaders.iter().map(|b| (b.image.clone(), b.image_at.clone())));
    v
}

/// Apply the lock file to an unpinned reference, or refuse it with its location.
pub(crate) fn pin(r: &ImageRef, at: &Location, lock: Option<&LockFile>, lock_path: &Path) -> Result<ImageRef> {
    if r.is_pinned() {
        return Ok(r.clone());
    }
    match lock.and_then(|l| l.get(&r.text)) {
        Some(d) => Ok(r.with_digest(d)),
        None => Err(at.error(format!(
            "image {:?} is not pinned: add @sha256:<digest>, or run `stagebox lock` to pin it in {}",
            r.text,
            lock_path.display()
        ))),
    }
}

/// Resolve every layer of the box into the store, in order.
pub fn resolve_inputs(spec: &BoxSpec, store: &Store, sopts: &SourceOptions, progress: &Progress) -> Result<Vec<ResolvedImage>> {
    let lock_path = spec::lock_path(&spec.path);
    let lock = LockFile::load(&lock_path)?;
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
                let r = pin(image, at, lock.as_ref(), &lock_path)?;
                progress.set_message(format!("import {}", r.text));
                out.push(source::resolve(store, &r, sopts)?);
            }
            LayerSpec::Pallet { pallet, .. } => {
                for (image, at) in &pallet.images {
                    let r = pin(image, at, lock.as_ref(), &lock_path)?;
                    progress.set_message(format!("import {}", r.text));
                    out.push(source::resolve(store, &r, sopts)?);
                }
            }
        }
    }
    Ok(out)
}

/// A full disk, a quota or a file size limit.
fn is_out_of_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(e.kind(), K::StorageFull | K::FileTooLarge | K::QuotaExceeded)
}

/// Every layer of `images`, bottom first, with its blob in the store: the list
/// [`flatten`] reads, whose positions are the trees' content `spill` indexes.
pub fn layer_list(store: &Store, images: &[ResolvedImage]) -> Vec<(PathBuf, LayerBlob)> {
    images.iter().flat_map(|i| i.layers.iter().map(|l| (store.blob_path(&l.digest), l.clone()))).collect()
}

/// Flatten resolved images, bottom first.
pub fn flatten(store: &Store, images: &[ResolvedImage], sde: u64, threads: usize, mode: ContentMode, progress: &Progress) -> Result<Tree> {
    let layers: Vec<(PathBuf, LayerBlob)> =
        images.iter().flat_map(|i| i.layers.iter().map(|l| (store.blob_path(&l.digest), l.clone()))).collect();
    tree::flatten(&layers, sde as i64, limits(), worker_threads(threads), mode, progress).map_err(|e| evict_changed(store, &layers, e))
}

/// After a failed flatten: drop every layer blob whose bytes no longer match its name. The
/// store hardlinks layout blobs, so a layout file rewritten in place changes the store's
/// copy too; evicting it keeps the store honest and lets the next build import it again.
fn evict_changed(store: &Store, layers: &[(PathBuf, LayerBlob)], e: Error) -> Error {
    let evicted: Vec<&str> = layers.iter().filter(|(_, l)| store.evict_if_changed(&l.digest)).map(|(_, l)| l.digest.short()).collect();
    if evicted.is_empty() {
        return e;
    }
    Error::other(format!(
        "{e}\n  (the store's copy of {} no longer matched its digest, most likely because the source file was changed in place after an import; removed it from the store)",
        evicted.join(", ")
    ))
}

/// The default limits; `STAGEBOX_MAX_LAYER_BYTES` (undocumented, for tests) replaces the
/// decompression-bomb limit so a test can trip it without inflating 64 GiB.
fn limits() -> Limits {
    let mut l = Limits::default();
    if let Some(v) = std::env::var("STAGEBOX_MAX_LAYER_BYTES").ok().and_then(|v| v.trim().parse().ok()) {
        l.max_layer_bytes = v;
    }
    l
}

fn worker_threads(threads: usize) -> usize {
    if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads }
}

/// Where the flattened tree keeps file contents for this box's outputs. Only emitters that
/// lay out their output before writing it (today: uncompressed tar) can take contents
/// straight from the layer streams; any streaming emitter needs them spilled.
/// The pattern names every output on purpose: a new output type must be classified here.
pub fn content_mode(outputs: &spec::Outputs) -> ContentMode {
    let spec::Outputs { tar, oci, initramfs, eif, squashfs, erofs, sbom, provenance, deb, rpm, arch, apk, iso, disk } = outputs;
    // provenance only hashes outputs; the SBOM hashes every file from the spill files.
    // Packages flatten their own layer subset, spilled (crate::package): not this tree.
    let _ = (provenance, deb, rpm, arch, apk);
    let placed_tar = tar.as_ref().is_none_or(|t| t.compression == spec::Compression::None);
    // initramfs reads file contents straight from the layer streams in archive order
    // (emit::cpio::contents). eif streams its ramdisks (cpio) from spilled contents.
    // iso lays out its extents first and fills contents at their offsets (emit::iso).
    let _ = (initramfs, iso);
    // squashfs compresses each file's blocks as it reads them from the spill; erofs reads
    // each file's inline tail while writing inodes, then its blocks; a disk holds one of them.
    if placed_tar && oci.is_none() && eif.is_none() && squashfs.is_none() && erofs.is_none() && sbom.is_none() && disk.is_none() {
        ContentMode::Index
    } else {
        ContentMode::Spill
    }
}

/// Write `NAME.tar[.gz|.zst]` atomically; returns its record.
fn emit_tar(tree: &Tree, spec: &BoxSpec, out: &Path, sde: u64, c: spec::Compression, threads: usize) -> Result<OutputRecord> {
    let name = format!("{}.tar{}", spec.name, c.suffix());
    let path = out.join(&name);
    let mut af = AtomicFile::create(&path)?;
    if c == spec::Compression::None {
        // Laid out, then filled from the layers (no spill); hashed by reading it back.
        let f = af.file().try_clone().at(&path)?;
        crate::fsutil::reserve(&f, 0, tree.content_bytes() + tree.len() as u64 * 1024);
        emit::tar::write_placed(tree, sde, &f, worker_threads(threads)).map_err(|e| Error::other(format!("{}: {e}", path.display())))?;
        let (d, size) = crate::digest::Digest::of_file(&path.with_file_name(af.temp_name()))?;
        af.commit()?;
        return Ok(OutputRecord { format: "tar".into(), path: name, sha256: d.hex().to_string(), size, pcrs: None });
    }
    let mut file = PreallocFile::new(af.file().try_clone().at(&path)?);
    if c == spec::Compression::None {
        file.reserve(tree.content_bytes() + tree.len() as u64 * 1024);
    }
    let hw = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut enc = emit::compress::Encoder::with_threads(c, threads, hw).at(&path)?;
    emit::tar::write(tree, sde, &mut enc).at(&path)?;
    let hw = enc.finish().at(&path)?;
    let (d, size, bw) = hw.finish_with_inner();
    bw.into_inner().map_err(|e| crate::Error::io(&path, e.into_error()))?.finish().at(&path)?;
    af.commit()?;
    Ok(OutputRecord { format: "tar".into(), path: name, sha256: d.hex().to_string(), size, pcrs: None })
}

/// Write `NAME.iso` atomically (laid out, then filled from the layers); returns its record.
fn emit_iso(tree: &Tree, spec: &BoxSpec, out: &Path, sde: u64, o: &spec::IsoOutput, threads: usize) -> Result<OutputRecord> {
    let name = format!("{}.iso", spec.name);
    let path = out.join(&name);
    let mut af = AtomicFile::create(&path)?;
    let f = af.file().try_clone().at(&path)?;
    let opts = emit::iso::IsoOptions { volume_id: o.volume_id.clone().unwrap_or_else(|| spec.name.clone()), sde, ..Default::default() };
    emit::iso::write(tree, &opts, &f, worker_threads(threads))?;
    let (d, size) = crate::digest::Digest::of_file(&path.with_file_name(af.temp_name()))?;
    af.commit()?;
    Ok(OutputRecord { format: "iso".into(), path: name, sha256: d.hex().to_string(), size, pcrs: None })
}

fn emit_oci(tree: &Tree, spec: &BoxSpec, out: &Path, sde: u64, o: &spec::OciOutput, base: Option<&serde_json::Value>) -> Result<OutputRecord> {
    let name = format!("{}.oci", spec.name);
    let path = out.join(&name);
    let ad = AtomicDir::create(&path)?;
    let tag = o.tag.clone().unwrap_or_else(|| spec.version.clone());
    let img = emit::oci::write(tree, sde, &tag, base, ad.path(), &format!("stagebox build {}", spec.name))?;
    ad.commit()?;
    Ok(OutputRecord { format: "oci".into(), path: name, sha256: img.manifest_digest.hex().to_string(), size: img.manifest_size, pcrs: None })
}

/// Write `NAME.squashfs` atomically; hashed by reading it back (the superblock is written last).
fn emit_squashfs(tree: &Tree, spec: &BoxSpec, out: &Path, sde: u64, o: &spec::SquashfsOutput, threads: usize) -> Result<OutputRecord> {
    let name = format!("{}.squashfs", spec.name);
    let path = out.join(&name);
    let mut af = AtomicFile::create(&path)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, af.file());
        let opts = emit::squashfs::Options { compression: o.compression, sde, threads: worker_threads(threads) };
        emit::squashfs::write(tree, &opts, &mut w).at(&path)?;
        std::io::Write::flush(&mut w).at(&path)?;
    }
    let (d, size) = crate::digest::Digest::of_file(&path.with_file_name(af.temp_name()))?;
    af.commit()?;
    Ok(OutputRecord { format: "squashfs".into(), path: name, sha256: d.hex().to_string(), size, pcrs: None })
}

/// Write `NAME.erofs` atomically; hashed by reading it back.
fn emit_erofs(tree: &Tree, spec: &BoxSpec, out: &Path, sde: u64, o: &spec::ErofsOutput) -> Result<OutputRecord> {
    let name = format!("{}.erofs", spec.name);
    let path = out.join(&name);
    let mut af = AtomicFile::create(&path)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, af.file());
        let opts = emit::erofs::Options { sde, label: o.label.clone().unwrap_or_else(|| spec.name.clone()) };
        emit::erofs::write(tree, &opts, &mut w).at(&path)?;
        std::io::Write::flush(&mut w).at(&path)?;
    }
    let (d, size) = crate::digest::Digest::of_file(&path.with_file_name(af.temp_name()))?;
    af.commit()?;
    Ok(OutputRecord { format: "erofs".into(), path: name, sha256: d.hex().to_string(), size, pcrs: None })
}

/// Write `NAME.cpio[.gz|.zst|.xz]` atomically: the prepended archives as they are (each
/// padded to 4 bytes), then the tree as one compressed newc archive. Returns its record and
/// the prepended files as inputs.
fn emit_initramfs(
    tree: &Tree,
    spec: &BoxSpec,
    out: &Path,
    sde: u64,
    o: &spec::InitramfsOutput,
    threads: usize,
    layers: &[(PathBuf, LayerBlob)],
) -> Result<(OutputRecord, Vec<InputRecord>)> {
    let name = format!("{}.cpio{}", spec.name, o.compression.suffix());
    let path = out.join(&name);
    let mut af = AtomicFile::create(&path)?;
    let (d, size, inputs) = write_initramfs(tree, spec, sde, o, threads, layers, af.file(), &path)?;
    af.commit()?;
    Ok((OutputRecord { format: "initramfs".into(), path: name, sha256: d.hex().to_string(), size, pcrs: None }, inputs))
}

/// The initramfs of [`emit_initramfs`] written into `file` (named `path` in errors): also
/// what an ISO or disk output boots. Returns its digest, size and the prepended files.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_initramfs(
    tree: &Tree,
    spec: &BoxSpec,
    sde: u64,
    o: &spec::InitramfsOutput,
    threads: usize,
    layers: &[(PathBuf, LayerBlob)],
    file: &std::fs::File,
    path: &Path,
) -> Result<(crate::digest::Digest, u64, Vec<InputRecord>)> {
    let path = path.to_path_buf();
    let mut inputs = Vec::new();
    let (d, size) = {
        let mut hw = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
        for p in &o.prepend {
            let file = spec.dir.join(p);
            let at = spec.initramfs_at.clone().expect("initramfs output has a location");
            let mut head = [0u8; 6];
            let mut f = std::fs::File::open(&file).map_err(|e| at.error(format!("prepend {p:?}: {e}")))?;
            use std::io::{Read, Seek};
            let n = f.read(&mut head).at(&file)?;
            if n < 6 || (&head != emit::cpio::format::MAGIC && &head != emit::cpio::format::MAGIC_CRC) {
                return Err(at.error(format!(
                    "prepend {p:?} is not an uncompressed newc cpio archive (the kernel's early loaders, e.g. for CPU microcode, read only those)"
                )));
            }
            f.rewind().at(&file)?;
            let mut hr = crate::digest::HashReader::new(f);
            emit::cpio::write_prepend(&mut hr, &mut hw).at(&path)?;
            let (digest, _, _) = hr.drain_and_finish().at(&file)?;
            inputs.push(InputRecord { reference: format!("file:{p}"), digest: digest.to_string() });
        }
        let mut enc = emit::compress::Encoder::with_threads(o.compression, threads, hw).at(&path)?;
        emit::cpio::write_with(tree, sde, layers, &mut enc).at(&path)?;
        let hw = enc.finish().at(&path)?;
        let (d, size, mut bw) = hw.finish_with_inner();
        std::io::Write::flush(&mut bw).at(&path)?;
        (d, size)
    };
    Ok((d, size, inputs))
}

/// What a bootable `[output.iso]` boots with (see `isoboot`).
fn iso_boot<'a>(spec: &BoxSpec, k: &'a crate::boot::kernel::Kernel, b: &'a [crate::boot::bootloader::Bootloader]) -> crate::boot::iso::IsoBoot<'a> {
    let o = spec.outputs.iso.as_ref();
    crate::boot::iso::IsoBoot {
        kernel: k,
        bootloaders: b,
        label: o.and_then(|o| o.label.clone()).unwrap_or_else(|| crate::boot::iso::DEFAULT_LABEL.to_string()),
        serial: o.is_some_and(|o| o.serial),
        initramfs: crate::boot::iso::initramfs_settings(spec),
        at: spec.iso_at.clone().unwrap_or_else(|| k.spec.at.clone()),
    }
}

/// Build every output of the box at `box_path`.
pub fn build(box_path: &Path, opts: &BuildOptions) -> Result<BuildResult> {
    let mut spec = spec::load_box(box_path)?;
    if let Some(dirs) = &opts.check_variant {
        crate::cmd::check::use_dir_copies(&mut spec, dirs);
    }
    let sde = source_date_epoch(&spec)?;
    let store = Store::open(&source::store::default_root(opts.cache.as_deref())?)?;
    let progress = Progress::new(opts.quiet);
    let sopts = SourceOptions { platform: opts.platform.clone().unwrap_or_default(), source_date_epoch: sde, offline: opts.offline };

    let locked = if opts.locked { Some(crate::cmd::lock::check_complete(&spec)?) } else { None };
    let t0 = std::time::Instant::now();
    let images = resolve_inputs(&spec, &store, &sopts, &progress)?;
    if let Some(l) = &locked {
        crate::cmd::lock::check_resolved(&spec, l, &images)?;
    }
    // The signature quorum of [policy], before any layer is read or output written.
    let signatures = crate::source::signature::enforce(&spec, &images)?;
    // The kernel of an initramfs box, checked against the initramfs before anything is built.
    let kernel = match &spec.kernel {
        // An EIF without an initramfs output still needs the kernel (its ramdisks are
        // uncompressed, so there is no compression to check).
        Some(k) if spec.outputs.initramfs.is_some() || spec.outputs.eif.is_some() || !spec.bootloaders.is_empty() || spec.outputs.disk.is_some() => {
            let lock_path = spec::lock_path(&spec.path);
            let lock = LockFile::load(&lock_path)?;
            let kernel = crate::boot::kernel::resolve(k, &store, &sopts, lock.as_ref(), &lock_path, opts.threads, &progress)?;
            if let Some(i) = &spec.outputs.initramfs {
                kernel.check_compression(i.compression, spec.initramfs_at.as_ref().unwrap_or(&k.at))?;
            }
            Some(kernel)
        }
        _ => None,
    };
    // The bootloaders of a bootable ISO, and the kernel checked against what they need.
    let bootloaders = match (&kernel, spec.bootloaders.is_empty()) {
        (Some(k), false) => {
            let lock_path = spec::lock_path(&spec.path);
            let lock = LockFile::load(&lock_path)?;
            let b = crate::boot::bootloader::resolve(&spec.bootloaders, &store, &sopts, lock.as_ref(), &lock_path, opts.threads, &progress)?;
            crate::boot::iso::check_kernel(k, &iso_boot(&spec, k, &b))?;
            b
        }
        _ => Vec::new(),
    };
    // The disk's boot loader, resolved (and checked) before anything is written.
    let disk_bootloaders = if spec.outputs.disk.is_some() {
        let lock_path = spec::lock_path(&spec.path);
        let lock = LockFile::load(&lock_path)?;
        let b = crate::boot::bootloader::resolve(&spec.disk_bootloaders, &store, &sopts, lock.as_ref(), &lock_path, opts.threads, &progress)?;
        if let (Some(k), Some(at)) = (&kernel, &spec.disk_at) {
            k.check_efi_stub(at, "or boot the tree from an [output.iso] or [output.initramfs] instead")?;
        }
        b
    } else {
        Vec::new()
    };
    progress.timing("resolve and import", t0);
    let t0 = std::time::Instant::now();
    let tree = flatten(&store, &images, sde, opts.threads, content_mode(&spec.outputs), &progress)?;
    progress.timing(&format!("flatten ({} entries, {} bytes)", tree.len(), tree.content_bytes()), t0);
    // The tree's init runs from an initramfs output or an initramfs-layout EIF (a nitro-cli
    // EIF runs its bootstrap init instead).
    let tree_init = spec.outputs.initramfs.is_some()
        || !bootloaders.is_empty()
        || spec.outputs.eif.as_ref().is_some_and(|e| e.layout == spec::EifLayout::Initramfs);
    if let (Some(k), true) = (&kernel, tree_init) {
        crate::boot::kernel::check_init(&tree, &layer_list(&store, &images), &k.spec.cmdline, &k.spec.at)?;
    }
    let t0 = std::time::Instant::now();

    let out = opts.out.clone().unwrap_or_else(|| spec.dir.join("out"));
    std::fs::create_dir_all(&out).at(&out)?;
    // Every output is written into a staging directory in `out` and moved into place only
    // once all of them are complete: a build failing halfway (a bad prepend file, a full
    // disk) leaves the previous outputs and their manifest.json as they were.
    let staging = tempfile::Builder::new().prefix(".stagebox-tmp-").tempdir_in(&out).at(&out)?;
    let final_out = out;
    let out = staging.path().to_path_buf();
    // The runtime config (Env, Cmd, ...) of the topmost image layer, for OCI and EIF outputs.
    let top_config = images.iter().rev().find(|i| !matches!(i.reference.kind, RefKind::Dir { .. })).map(|i| &i.config);
    let mut outputs = Vec::new();
    if let Some(t) = &spec.outputs.tar {
        progress.set_message(format!("write {}.tar{}", spec.name, t.compression.suffix()));
        outputs.push(emit_tar(&tree, &spec, &out, sde, t.compression, opts.threads)?);
    }
    if let Some(o) = &spec.outputs.oci {
        progress.set_message(format!("write {}.oci", spec.name));
        outputs.push(emit_oci(&tree, &spec, &out, sde, o, top_config)?);
    }
    let mut extra_inputs = Vec::new();
    if let Some(i) = &spec.outputs.initramfs {
        progress.set_message(format!("write {}.cpio{}", spec.name, i.compression.suffix()));
        let (rec, inputs) = emit_initramfs(&tree, &spec, &out, sde, i, opts.threads, &layer_list(&store, &images))?;
        outputs.push(rec);
        extra_inputs.extend(inputs);
        if let Some(k) = &kernel {
            outputs.extend(k.write(&spec.name, &out)?);
            extra_inputs.push(k.input_record());
        }
    }
    if let (Some(e), Some(k)) = (&spec.outputs.eif, &kernel) {
        progress.set_message(format!("write {}.eif", spec.name));
        let (recs, inputs) = crate::boot::enclave::emit(&tree, &spec, &out, sde, e, k, top_config, opts.quiet)?;
        outputs.extend(recs);
        extra_inputs.extend(inputs);
        if spec.outputs.initramfs.is_none() {
            extra_inputs.push(k.input_record());
        }
    }
    if let Some(o) = &spec.outputs.iso {
        progress.set_message(format!("write {}.iso", spec.name));
        match &kernel {
            Some(k) if !bootloaders.is_empty() => {
                let base: Vec<InputRecord> =
                    images.iter().map(|i| InputRecord { reference: i.reference.text.clone(), digest: i.pin.to_string() }).collect();
                let vid = o.volume_id.clone().unwrap_or_else(|| spec.name.clone());
                let layers = layer_list(&store, &images);
                let (rec, inputs) =
                    crate::boot::iso::emit(&tree, &spec, &out, sde, &vid, &iso_boot(&spec, k, &bootloaders), &base, &layers, worker_threads(opts.threads))?;
                outputs.push(rec);
                extra_inputs.extend(inputs);
                if spec.outputs.initramfs.is_none() && spec.outputs.eif.is_none() {
                    extra_inputs.push(k.input_record());
                }
            }
            _ => outputs.push(emit_iso(&tree, &spec, &out, sde, o, opts.threads)?),
        }
    }
    if let Some(o) = &spec.outputs.squashfs {
        progress.set_message(format!("write {}.squashfs", spec.name));
        outputs.push(emit_squashfs(&tree, &spec, &out, sde, o, opts.threads)?);
    }
    if let Some(o) = &spec.outputs.erofs {
        progress.set_message(format!("write {}.erofs", spec.name));
        outputs.push(emit_erofs(&tree, &spec, &out, sde, o)?);
    }
    for p in &spec.packages {
        outputs.push(crate::build::package::emit(&spec, p, &store, &images, &sopts.platform.arch, sde, opts.threads, &out, &progress)?);
    }
    if let (Some(o), Some(k)) = (&spec.outputs.disk, &kernel) {
        progress.set_message(format!("write {}.img", spec.name));
        let (rec, inputs) = crate::boot::disk::emit(&tree, &spec, &out, sde, o, k, &disk_bootloaders, worker_threads(opts.threads))?;
        outputs.push(rec);
        extra_inputs.extend(inputs);
        if spec.outputs.initramfs.is_none() && spec.outputs.eif.is_none() {
            extra_inputs.push(k.input_record());
        }
    }
    progress.timing("emit", t0);
    let inputs: Vec<InputRecord> =
        images.iter().map(|i| InputRecord { reference: i.reference.text.clone(), digest: i.pin.to_string() }).chain(extra_inputs).collect();
    crate::measure::emit_attestations(&spec, sde, &inputs, &images, &signatures, &tree, &out, &mut outputs, &progress)?;
    progress.finish();

    let manifest = BuildManifest { name: spec.name.clone(), version: spec.version.clone(), source_date_epoch: sde, inputs, outputs };
    for o in &manifest.outputs {
        crate::fsutil::replace(&out.join(&o.path), &final_out.join(&o.path))?;
    }
    drop(staging);
    manifest.write(&final_out)?;
    Ok(BuildResult { out_dir: final_out, manifest })
}
