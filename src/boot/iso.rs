//! A bootable `[output.iso]`: the box's kernel and initramfs, the bootloaders' files and
//! configs staged beside the tree, an ESP image for UEFI, the ISO 9660 image written by
//! `emit::iso`, then the hybrid MBR and GPT written into its system area and tail so the same
//! file boots from a CD and as a disk, on BIOS and UEFI.
//!
//! Layout inside the ISO (short 8.3 names, which isolinux reads without Rock Ridge):
//! `/isolinux/{vmlinuz, initrd.img}` once, read by isolinux and GRUB alike;
//! `/isolinux/{isolinux.bin, ldlinux.c32, isolinux.cfg}` for BIOS; for UEFI with GRUB,
//! `/isolinux/efiboot.img` (the ESP: only `EFI/BOOT/BOOTX64.EFI`, a GRUB core image whose
//! early config finds this volume by the marker file `/isolinux/id-HASH` and reads
//! `/isolinux/grub.cfg` from it, on a CD and on a whole USB disk alike); the boot catalog
//! `/isolinux/boot.cat`. The tree itself goes in as ISO 9660 files only with `files = true`.
//! systemd-boot reads only its ESP, so with it the ESP holds kernel and initramfs again
//! (docs/iso-boot.md gives the cost). An arm64 kernel's ISO is UEFI-only (the plan refuses
//! BIOS loaders for it): its ESP holds `EFI/BOOT/BOOTAA64.EFI` instead, and no TPM prediction
//! is made for it (docs/arm64.md).

use crate::boot::bootloader::Bootloader;
use crate::emit::{fat, gpt, iso};
use crate::error::{Error, IoContext, Result};
use crate::boot::kernel::Kernel;
use crate::boot::Job;
use crate::measure::{stage_file, InputRecord, OutputRecord};
use crate::spec::{self, BootloaderKind, BoxSpec, Compression, Location};
use sha2::{Digest as _, Sha256};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where the boot files go in the ISO.
pub const BOOT_DIR: &str = "/isolinux";
/// The title of the single boot entry when the box gives no `label`.
pub const DEFAULT_LABEL: &str = "stagebox";

/// What `[output.iso]` asks of the boot side, resolved.
pub struct IsoBoot<'a> {
    pub kernel: &'a Kernel,
    pub bootloaders: &'a [Bootloader],
    /// Boot-menu title.
    pub label: String,
    /// Put the boot menus on the first serial port too (isolinux's `SERIAL 0 115200`).
    pub serial: bool,
    /// The initramfs settings: the box's `[output.initramfs]`, else gzip.
    pub initramfs: spec::InitramfsOutput,
    /// Where `[output.iso]` stands (for errors).
    pub at: Location,
    /// Store the tree as ISO 9660 files too (`files = true`).
    pub files: bool,
}

/// The files staged for the ISO and what the MBR/GPT needs to know about them.
struct Staged {
    extra: Vec<iso::IsoFile>,
    boot: Vec<iso::BootEntry>,
    prepended: Vec<InputRecord>,
    /// The initramfs's digest, taken as it was written (systemd-boot's PCR 9 event).
    initrd: crate::digest::Digest,
    /// The EFI images UEFI firmware measures booting it (`measure::tpm`), in load order.
    uefi_images: Vec<(&'static str, Vec<u8>)>,
}

/// Refuse a kernel that cannot boot the way the box asks: UEFI needs an EFI stub (a PE
/// header, `MZ` … `PE\0\0`, and `CONFIG_EFI_STUB=y` when the image has a config), and the
/// initramfs compression must be one it unpacks.
pub fn check_kernel(kernel: &Kernel, boot: &IsoBoot) -> Result<()> {
    kernel.check_compression(boot.initramfs.compression, &boot.at)?;
    if kernel.spec.cmdline.chars().any(char::is_control) {
        return Err(boot.at.error("the kernel command line must be one line without control characters (it goes into the boot menus)"));
    }
    if let Some(b) = boot.bootloaders.iter().find(|b| b.kind().is_uefi()) {
        kernel.check_efi_stub(&boot.at, &format!("or drop the {} bootloader for a BIOS-only ISO", b.kind().name()))?;
    }
    Ok(())
}

/// A hash of everything the image is made from, for the MBR id, GUIDs and FAT volume id.
fn seed(spec: &BoxSpec, sde: u64, inputs: &[InputRecord], boot: &IsoBoot) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"stagebox-iso\0");
    h.update(spec.name.as_bytes());
    h.update(b"\0");
    h.update(sde.to_le_bytes());
    for i in inputs {
        h.update(i.reference.as_bytes());
        h.update(b"\0");
        h.update(i.digest.as_bytes());
        h.update(b"\0");
    }
    h.update(boot.kernel.spec.cmdline.as_bytes());
    h.update(b"\0");
    h.update(boot.label.as_bytes());
    h.update([boot.serial as u8]);
    h.finalize().into()
}

fn isolinux_cfg(boot: &IsoBoot) -> String {
    let mut s = String::new();
    if boot.serial {
        s.push_str("SERIAL 0 115200\n");
    }
    s.push_str(&format!(
        "DEFAULT stagebox\nPROMPT 0\nTIMEOUT 0\nLABEL stagebox\n  MENU LABEL {}\n  KERNEL {BOOT_DIR}/vmlinuz\n  INITRD {BOOT_DIR}/initrd.img\n  APPEND {}\n",
        boot.label, boot.kernel.spec.cmdline
    ));
    s
}

/// Stage kernel, initramfs, bootloader files, configs and the ESP in `dir`.
fn stage(job: &Job, boot: &IsoBoot, seed: &[u8; 32], dir: &Path) -> Result<Staged> {
    let sde = job.sde;
    let kernel_path = dir.join("vmlinuz");
    {
        let mut f = std::fs::File::create(&kernel_path).at(&kernel_path)?;
        let k = boot.kernel;
        let mut buf = vec![0u8; 1 << 20];
        crate::fsutil::copy_exact(&mut k.tree.open(&k.kernel), &mut f, k.kernel.len, &mut buf).at(&kernel_path)?;
    }
    let initrd_path = dir.join("initrd.img");
    let (initrd, _, prepended) = {
        let f = std::fs::File::create(&initrd_path).at(&initrd_path)?;
        crate::boot::initramfs::write(&Job { threads: job.workers, ..*job }, &boot.initramfs, &f, &initrd_path)?
    };
    // The removable-media loader of the kernel's architecture (BOOTX64.EFI, BOOTAA64.EFI).
    let loader = boot.kernel.arch.efi_boot_file();
    let file = |name: &str, src: PathBuf, mode: u32| iso::IsoFile { path: format!("{BOOT_DIR}/{name}"), source: src, mode };
    let mut extra = Vec::new();
    let mut entries = Vec::new();
    let mut uefi_images = Vec::new();
    // Kernel and initramfs as ISO 9660 files, once, for every loader that reads the ISO.
    if boot.bootloaders.iter().any(|b| matches!(b.kind(), BootloaderKind::Syslinux | BootloaderKind::Grub)) {
        extra.push(file("vmlinuz", kernel_path.clone(), 0o644));
        extra.push(file("initrd.img", initrd_path.clone(), 0o644));
    }
    for b in boot.bootloaders {
        match b.kind() {
            BootloaderKind::Syslinux => {
                for (role, name) in [("isolinux", "isolinux.bin"), ("ldlinux", "ldlinux.c32")] {
                    let p = dir.join(name);
                    std::fs::write(&p, b.read(role)?).at(&p)?;
                    extra.push(file(name, p, 0o644));
                }
                let p = dir.join("isolinux.cfg");
                std::fs::write(&p, isolinux_cfg(boot)).at(&p)?;
                extra.push(file("isolinux.cfg", p, 0o644));
                entries.push(iso::BootEntry::Bios { path: format!("{BOOT_DIR}/isolinux.bin") });
            }
            BootloaderKind::SystemdBoot => {
                let efi = b.read("efi")?;
                boot.kernel.check_loader_arch(&efi, &format!("bootloader {} ({} in {})", b.def.name, b.def.files["efi"], b.image.reference.text), &boot.at)?;
                // systemd-boot starts the kernel with LoadImage: the firmware measures both.
                uefi_images.push((loader, efi.clone()));
                uefi_images.push(("vmlinuz", std::fs::read(&kernel_path).at(&kernel_path)?));
                let mut files = crate::boot::bootloader::systemd_boot_files(loader, efi, &boot.label, "vmlinuz", Some("initrd.img"), &boot.kernel.spec.cmdline);
                files.insert("vmlinuz".to_string(), fat::EspSource::File(kernel_path.clone()));
                files.insert("initrd.img".to_string(), fat::EspSource::File(initrd_path.clone()));
                let p = dir.join("efiboot.img");
                fat::write(&fat::Esp { files, sde, volume_id: fat::volume_id(seed) }, &p)?;
                extra.push(file("efiboot.img", p, 0o644));
                entries.push(iso::BootEntry::Efi { path: format!("{BOOT_DIR}/efiboot.img") });
            }
            BootloaderKind::GrubPc => return Err(crate::Error::other("GRUB i386-pc boots disk images; an ISO boots BIOS with syslinux")),
            BootloaderKind::Grub => {
                // The marker is named after the hash of everything the image is made from, so
                // GRUB finds this volume, not another stick with the same label.
                let marker = format!("id-{}", hex::encode(&seed[..8]));
                let p = dir.join(&marker);
                std::fs::write(&p, format!("{}\n", hex::encode(seed))).at(&p)?;
                extra.push(file(&marker, p, 0o644));
                let cfg = crate::boot::bootloader::grub_cfg(&boot.label, &format!("{BOOT_DIR}/vmlinuz"), Some(&format!("{BOOT_DIR}/initrd.img")), &boot.kernel.spec.cmdline, boot.serial);
                let p = dir.join("grub.cfg");
                std::fs::write(&p, cfg).at(&p)?;
                extra.push(file("grub.cfg", p, 0o644));
                let early = format!("search --no-floppy --file --set=root {BOOT_DIR}/{marker}\nset prefix=($root){BOOT_DIR}\n");
                let efi = b.grub_image(Some(&early), BOOT_DIR)?;
                uefi_images.push((loader, efi.clone()));
                let files = std::collections::BTreeMap::from([(loader.to_string(), fat::EspSource::Bytes(efi))]);
                let p = dir.join("efiboot.img");
                fat::write(&fat::Esp { files, sde, volume_id: fat::volume_id(seed) }, &p)?;
                extra.push(file("efiboot.img", p, 0o644));
                entries.push(iso::BootEntry::Efi { path: format!("{BOOT_DIR}/efiboot.img") });
            }
        }
    }
    // BIOS first: the default entry of the catalog is the BIOS one, as in every hybrid ISO.
    entries.sort_by_key(|e| matches!(e, iso::BootEntry::Efi { .. }));
    extra.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Staged { extra, boot: entries, prepended, initrd, uefi_images })
}

/// Write the MBR (isohybrid's when syslinux is there) and, with an ESP, the GPT into `f`.
fn write_tables(f: &std::fs::File, path: &Path, layout: &iso::IsoLayout, boot: &IsoBoot, seed: &[u8; 32]) -> Result<()> {
    let sectors = layout.size / gpt::SECTOR;
    let to32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let syslinux = boot.bootloaders.iter().find(|b| b.kind() == BootloaderKind::Syslinux);
    let (code, boot_lba) = match syslinux {
        Some(b) => {
            let code = b.read("isohdpfx")?;
            if code.len() < gpt::MBR_CODE {
                return Err(Error::other(format!("{} in {} is {} bytes, not an isohybrid MBR (at least 432)", b.def.files["isohdpfx"], b.image.reference.text, code.len())));
            }
            let (block, _) = layout.files[&format!("{BOOT_DIR}/isolinux.bin")];
            (code, Some(to32(block * 4)))
        }
        None => (Vec::new(), None),
    };
    let esp = layout.files.get(&format!("{BOOT_DIR}/efiboot.img")).copied();
    let entries = match esp {
        Some((block, len)) => {
            let first = block * 4;
            let n = len.div_ceil(gpt::SECTOR);
            let g = gpt::Gpt {
                disk_guid: gpt::Guid::derive(seed, "disk"),
                sectors,
                partitions: vec![gpt::Partition {
                    type_guid: gpt::ESP_TYPE,
                    guid: gpt::Guid::derive(seed, "esp"),
                    first,
                    last: first + n - 1,
                    attributes: 0,
                    name: "EFI System".into(),
                }],
            };
            g.write(f, path)?;
            vec![
                gpt::MbrEntry { active: false, kind: 0xee, first: 1, sectors: to32(first - 1) },
                gpt::MbrEntry { active: true, kind: 0xef, first: to32(first), sectors: to32(n) },
            ]
        }
        // isohybrid's default without UEFI: one active partition over the whole image.
        None => vec![gpt::MbrEntry { active: true, kind: 0x17, first: 0, sectors: to32(sectors) }],
    };
    let m = gpt::mbr(&code, boot_lba, gpt::disk_id(seed), &entries)?;
    f.write_all_at(&m, 0).at(path)?;
    Ok(())
}

/// Write `NAME.iso` with boot support into `out`; returns its record and the inputs it adds
/// (the bootloader images and prepended archives).
pub fn emit(job: &Job, volume_id: &str, boot: &IsoBoot, inputs: &[InputRecord]) -> Result<(OutputRecord, Vec<InputRecord>)> {
    let Job { tree, spec, out, sde, .. } = *job;
    check_kernel(boot.kernel, boot)?;
    let mut all_inputs: Vec<InputRecord> = inputs.to_vec();
    all_inputs.push(boot.kernel.input_record());
    all_inputs.extend(boot.bootloaders.iter().map(|b| b.input_record()));
    let seed = seed(spec, sde, &all_inputs, boot);
    let scratch = tempfile::Builder::new().prefix(".stagebox-iso-").tempdir_in(out).at(out)?;
    let staged = stage(job, boot, &seed, scratch.path())?;
    // The TPM prediction is EDK2's OVMF's event sequence; it is not made for arm64 (AAVMF),
    // where it has not been checked against a real event log (docs/arm64.md).
    let tpm_pcrs = if staged.uefi_images.is_empty() || boot.kernel.arch != crate::kernelfmt::Arch::Amd64 {
        None
    } else {
        let images: Vec<(&str, &[u8])> = staged.uefi_images.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let p = crate::measure::tpm::predict_uefi(&images).map_err(|e| boot.at.error(e))?;
        let p = if staged.uefi_images.len() == 1 {
            p.untouched(&[8, 9])
        } else {
            p.systemd_boot(Some("initrd.img"), &boot.kernel.spec.cmdline, Some(staged.initrd.sha256()))
        };
        Some(p.to_map())
    };
    let name = format!("{}.iso", spec.name);
    let opts = iso::IsoOptions {
        volume_id: volume_id.to_string(),
        sde,
        extra: staged.extra,
        boot: staged.boot,
        catalog: Some(format!("{BOOT_DIR}/boot.cat")),
        tail_reserve: if boot.bootloaders.iter().any(|b| b.kind().is_uefi()) { gpt::BACKUP_SECTORS * gpt::SECTOR } else { 0 },
    };
    // Without `files`, only the boot files: kernel and initramfs already carry the tree.
    let empty;
    let tree = if boot.files {
        tree
    } else {
        empty = crate::tree::Tree::new(sde as i64);
        &empty
    };
    // Laid out, then its tables patched in place; hashed by reading it back.
    let mut rec = stage_file(out, "iso", name, |file, path| {
        let layout = iso::write(tree, &opts, &*file)?;
        write_tables(file, path, &layout, boot, &seed)?;
        file.sync_data().at(path)?;
        Ok(None)
    })?;
    (rec.tpm_pcrs, rec.arch) = (tpm_pcrs, boot.kernel.manifest_arch());
    // The kernel's record is added by the build (once, whichever outputs use it).
    let mut added: Vec<InputRecord> = boot.bootloaders.iter().map(|b| b.input_record()).collect();
    added.extend(staged.prepended);
    Ok((rec, added))
}

/// The initramfs settings an ISO uses: the box's `[output.initramfs]` when it has one (same
/// bytes as `NAME.cpio*`), else gzip, which every kernel with initramfs support unpacks
/// (StageX's airgap kernel unpacks nothing else).
pub fn initramfs_settings(spec: &BoxSpec) -> spec::InitramfsOutput {
    spec.outputs.initramfs.clone().unwrap_or(spec::InitramfsOutput { compression: Compression::Gzip, prepend: Vec::new() })
}
