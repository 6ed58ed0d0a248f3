//! The table of output kinds: for each format the box file can name, its file name, the
//! content mode the tree needs for it, and how it is emitted. Adding an output format is its
//! `emit/<format>` module, its `[output.*]` table in `spec`, and one arm here.

use super::plan::Plan;
use crate::boot::{self, bootloader::Bootloader, kernel::Kernel};
use crate::emit;
use crate::error::{IoContext, Result};
use crate::fsutil::AtomicDir;
use crate::measure::{finish_streamed, stage_file, streamed, InputRecord, OutputRecord};
use crate::spec::{self, BoxSpec, PackageSpec};
use crate::tree::{layer::ContentMode, Tree};
use std::io::BufWriter;
use std::path::Path;

/// One output the box asks for, with its settings.
pub enum Output<'a> {
    Tar(&'a spec::TarOutput),
    Oci(&'a spec::OciOutput),
    Initramfs(&'a spec::InitramfsOutput),
    Eif(&'a spec::EifOutput),
    Iso(&'a spec::IsoOutput),
    Squashfs(&'a spec::SquashfsOutput),
    Erofs(&'a spec::ErofsOutput),
    /// `[output.deb]`, `[output.rpm]`, `[output.arch]`, `[output.apk]`: each flattens its own
    /// layer subset, spilled (`build::package`), not the box's tree.
    Package(&'a PackageSpec),
    Disk(&'a spec::DiskOutput),
    /// Written by `measure::emit_attestations` once every other output exists.
    Sbom,
    /// Written by `measure::emit_attestations`; hashes outputs only.
    Provenance,
}

/// The outputs of `spec`, in the order they are written and listed in the manifest. The
/// pattern names every `[output.*]` table on purpose: a new one must be placed here.
pub fn of(spec: &BoxSpec) -> Vec<Output<'_>> {
    let spec::Outputs { tar, oci, initramfs, eif, squashfs, erofs, sbom, provenance, deb, rpm, arch, apk, iso, disk } = &spec.outputs;
    // The package tables arrive as `spec.packages`, in `PackageFormat::ALL` order.
    let _ = (deb, rpm, arch, apk);
    let mut v = Vec::new();
    v.extend(tar.as_ref().map(Output::Tar));
    v.extend(oci.as_ref().map(Output::Oci));
    v.extend(initramfs.as_ref().map(Output::Initramfs));
    v.extend(eif.as_ref().map(Output::Eif));
    v.extend(iso.as_ref().map(Output::Iso));
    v.extend(squashfs.as_ref().map(Output::Squashfs));
    v.extend(erofs.as_ref().map(Output::Erofs));
    v.extend(spec.packages.iter().map(Output::Package));
    v.extend(disk.as_ref().map(Output::Disk));
    v.extend(sbom.as_ref().map(|_| Output::Sbom));
    v.extend(provenance.as_ref().map(|_| Output::Provenance));
    v
}

/// What the outputs written so far add to the manifest.
#[derive(Default)]
pub struct Made {
    pub outputs: Vec<OutputRecord>,
    /// Inputs beyond the box's images (prepended archives, kernel, bootloaders).
    pub inputs: Vec<InputRecord>,
}

impl Output<'_> {
    /// The file (or directory) name of the output of box `name`, when it has one of its own.
    pub fn file_name(&self, name: &str) -> Option<String> {
        Some(match self {
            Output::Tar(t) => format!("{name}.tar{}", t.compression.suffix()),
            Output::Oci(_) => format!("{name}.oci"),
            Output::Initramfs(i) => format!("{name}.cpio{}", i.compression.suffix()),
            Output::Eif(_) => format!("{name}.eif"),
            Output::Iso(_) => format!("{name}.iso"),
            Output::Squashfs(_) => format!("{name}.squashfs"),
            Output::Erofs(_) => format!("{name}.erofs"),
            Output::Disk(_) => format!("{name}.img"),
            Output::Sbom => format!("{name}.spdx.json"),
            Output::Provenance => format!("{name}.intoto.json"),
            // Named by its own metadata (version, architecture): see `emit::pkg`.
            Output::Package(_) => return None,
        })
    }

    /// Where the tree must keep file contents for this output: every output that holds file
    /// contents reads them from the spill files, written once while the layers are
    /// decompressed. Reading the layers a second time instead (as the tar, initramfs and ISO
    /// writers once did) saves the spill but inflates every layer twice; measured on the
    /// 613 MiB benchmark image (docs/benchmarks.md, 2026-12-03), the spill builds the tar in
    /// 0.68 of the time, the zstd initramfs in 0.82 and the ISO in 0.71.
    pub fn content_mode(&self) -> ContentMode {
        match self {
            // Packages flatten their own layers; provenance only hashes outputs.
            Output::Package(_) | Output::Provenance => ContentMode::Index,
            Output::Tar(_)
            | Output::Oci(_)
            | Output::Initramfs(_)
            | Output::Iso(_)
            | Output::Eif(_)
            | Output::Squashfs(_)
            | Output::Erofs(_)
            | Output::Disk(_)
            | Output::Sbom => ContentMode::Spill,
        }
    }

    /// Write this output into `dir` (the build's staging directory).
    pub fn emit(&self, plan: &Plan, tree: &Tree, dir: &Path, made: &mut Made) -> Result<()> {
        let spec = &plan.spec;
        let sde = plan.sde;
        let name = self.file_name(&spec.name).unwrap_or_default();
        if !matches!(self, Output::Package(_) | Output::Sbom | Output::Provenance) {
            plan.progress.set_message(format!("write {name}"));
        }
        match self {
            Output::Tar(t) => made.outputs.push(stage_file(dir, "tar", name, |file, path| {
                let mut enc = emit::compress::Encoder::with_threads(t.compression, plan.threads, streamed(file, path)?).at(path)?;
                emit::tar::write(tree, sde, &mut enc).at(path)?;
                Ok(Some(finish_streamed(enc.finish().at(path)?, path)?))
            })?),
            Output::Oci(o) => {
                let ad = AtomicDir::create(&dir.join(&name))?;
                let tag = o.tag.clone().unwrap_or_else(|| spec.version.clone());
                let img = emit::oci::write(tree, sde, &tag, plan.top_config(), ad.path(), &format!("stagebox build {}", spec.name), (&plan.sopts.platform.os, &plan.sopts.platform.arch))?;
                ad.commit()?;
                made.outputs.push(OutputRecord { format: "oci".into(), path: name, sha256: img.manifest_digest.hex().to_string(), size: img.manifest_size, pcrs: None, ..Default::default() });
            }
            Output::Initramfs(o) => {
                let mut inputs = Vec::new();
                made.outputs.push(stage_file(dir, "initramfs", name, |file, path| {
                    let (d, size, i) = boot::initramfs::write(&plan.job(tree, dir), o, file, path)?;
                    inputs = i;
                    Ok(Some((d, size)))
                })?);
                made.inputs.extend(inputs);
                if let Some(k) = &plan.kernel {
                    made.outputs.extend(k.write(&spec.name, dir)?);
                    record_inputs(&mut made.inputs, [k.input_record()]);
                }
            }
            Output::Eif(e) => {
                let Some(k) = &plan.kernel else { return Ok(()) };
                let (recs, inputs) = boot::enclave::emit(&plan.job(tree, dir), e, k, plan.top_config(), &plan.sopts.platform.arch)?;
                made.outputs.extend(recs);
                record_inputs(&mut made.inputs, inputs.into_iter().chain([k.input_record()]));
            }
            Output::Iso(o) => match &plan.kernel {
                Some(k) if !plan.bootloaders.is_empty() => {
                    let vid = o.volume_id.clone().unwrap_or_else(|| spec.name.clone());
                    let boot = iso_boot(spec, k, &plan.bootloaders);
                    let (rec, inputs) = boot::iso::emit(&plan.job(tree, dir), &vid, &boot, &plan.image_inputs())?;
                    let tpm = rec.tpm_pcrs.clone();
                    made.outputs.push(rec);
                    if let Some(p) = tpm {
                        // `NAME.tpm-pcrs` is the disk's when the box has both.
                        let file = if spec.outputs.disk.is_some() { format!("{}.iso.tpm-pcrs", spec.name) } else { format!("{}.tpm-pcrs", spec.name) };
                        made.outputs.push(crate::measure::tpm::write_file(dir, &file, &p)?);
                    }
                    record_inputs(&mut made.inputs, inputs.into_iter().chain([k.input_record()]));
                }
                // Laid out, then filled; hashed by reading it back.
                _ => made.outputs.push(stage_file(dir, "iso", name, |file, _| {
                    let opts = emit::iso::IsoOptions { volume_id: o.volume_id.clone().unwrap_or_else(|| spec.name.clone()), sde, ..Default::default() };
                    emit::iso::write(tree, &opts, file)?;
                    Ok(None)
                })?),
            },
            // Hashed by reading it back (the superblock is written last).
            Output::Squashfs(o) => {
                let rec = stage_file(dir, "squashfs", name, |file, path| {
                    let mut w = BufWriter::with_capacity(1 << 20, file);
                    let opts = emit::squashfs::Options { compression: o.compression, sde, threads: plan.workers() };
                    emit::squashfs::write(tree, &opts, &mut w).at(path)?;
                    std::io::Write::flush(&mut w).at(path)?;
                    Ok(None)
                })?;
                with_verity(o.verity, rec, dir, &spec.name, made)?;
            }
            Output::Erofs(o) => {
                let rec = stage_file(dir, "erofs", name, |file, path| {
                    // Written front to back in one pass, so hashed as it is written.
                    let mut w = streamed(file, path)?;
                    let opts = emit::erofs::Options { sde, label: o.label.clone().unwrap_or_else(|| spec.name.clone()) };
                    let len = emit::erofs::write_compressed(tree, &opts, o.compression, plan.workers(), &mut w).at(path)?;
                    let (d, size) = finish_streamed(w, path)?;
                    if size != len {
                        return Err(crate::Error::other(format!("{}: the EROFS writer wrote {size} bytes of a {len}-byte image", path.display())));
                    }
                    Ok(Some((d, size)))
                })?;
                with_verity(o.verity, rec, dir, &spec.name, made)?;
            }
            Output::Package(p) => made.outputs.push(super::package::emit(plan, p, dir)?),
            Output::Disk(o) => {
                let Some(k) = &plan.kernel else { return Ok(()) };
                let (rec, inputs) = boot::disk::emit(&plan.job(tree, dir), o, k, &plan.disk_bootloaders)?;
                let (roothash, tpm) = (rec.roothash.clone(), rec.tpm_pcrs.clone());
                let img = dir.join(&rec.path);
                made.outputs.push(rec);
                if let Some(r) = roothash {
                    made.outputs.push(boot::verity::roothash_file(dir, &spec.name, &r)?);
                }
                if let Some(p) = tpm {
                    made.outputs.push(crate::measure::tpm::write_file(dir, &format!("{}.tpm-pcrs", spec.name), &p)?);
                }
                if o.qcow2 {
                    made.outputs.push(stage_file(dir, "qcow2", format!("{}.qcow2", spec.name), |file, path| {
                        let raw = std::fs::File::open(&img).at(&img)?;
                        let len = raw.metadata().at(&img)?.len();
                        emit::qcow2::write(&raw, len, o.qcow2_compression, file).at(path)?;
                        Ok(None)
                    })?);
                }
                record_inputs(&mut made.inputs, inputs.into_iter().chain([k.input_record()]));
                if let Some((image, _)) = &plan.busybox {
                    made.inputs.push(InputRecord { reference: image.reference.text.clone(), digest: image.pin.to_string() });
                }
            }
            Output::Sbom | Output::Provenance => {}
        }
        Ok(())
    }
}

/// Record `rec`, and with `verity` its hash device and root hash beside it (`boot::verity`).
fn with_verity(verity: bool, mut rec: OutputRecord, dir: &Path, box_name: &str, made: &mut Made) -> Result<()> {
    let extra = if verity { boot::verity::beside(dir, box_name, &mut rec)? } else { Vec::new() };
    made.outputs.push(rec);
    made.outputs.extend(extra);
    Ok(())
}

/// What a bootable `[output.iso]` boots with (see `boot::iso`).
pub fn iso_boot<'a>(spec: &BoxSpec, k: &'a Kernel, b: &'a [Bootloader]) -> boot::iso::IsoBoot<'a> {
    let o = spec.outputs.iso.as_ref();
    boot::iso::IsoBoot {
        kernel: k,
        bootloaders: b,
        label: o.and_then(|o| o.label.clone()).unwrap_or_else(|| boot::iso::DEFAULT_LABEL.to_string()),
        serial: o.is_some_and(|o| o.serial),
        initramfs: boot::iso::initramfs_settings(spec),
        at: spec.iso_at.clone().unwrap_or_else(|| k.spec.at.clone()),
        files: o.is_some_and(|o| o.tree_files()),
    }
}

/// Add what an output was made from to the manifest's inputs, each record once: a box with
/// several bootable outputs (initramfs, EIF, ISO, disk) has one kernel and may share its
/// bootloaders, and the manifest lists each input once, where it first appears.
fn record_inputs(inputs: &mut Vec<InputRecord>, new: impl IntoIterator<Item = InputRecord>) {
    for r in new {
        if !inputs.contains(&r) {
            inputs.push(r);
        }
    }
}
