//! `[output.disk]`: a raw GPT disk image that UEFI firmware boots: an EFI system partition
//! (FAT, `emit::fat`) with the UEFI loader as `EFI/BOOT/BOOTX64.EFI` (`BOOTAA64.EFI` for an
//! arm64 kernel, whose root partition gets the arm64 root type) (systemd-boot with its
//! loader entry, or a GRUB core image with prefix `/EFI/BOOT` and `EFI/BOOT/grub.cfg` beside
//! it: GRUB reads its config from the partition it was loaded from), the box's kernel and
//! an optional early initramfs; and a read-only root partition holding the
//! tree as SquashFS or EROFS, which the command line names by PARTUUID. The early initramfs
//! is the box's `initrd` files, then the modules of `[kernel] load_modules`, or the early
//! initrd `boot::modules` makes; with a GRUB i386-pc loader beside the UEFI one, `boot::bios`
//! adds the BIOS boot partition and MBR boot code.
//!
//! Layout, all derived from the inputs: 512-byte sectors; protective MBR; primary GPT at
//! LBA 1-33; the ESP at 1 MiB; the root partition at the next MiB boundary; the backup GPT in
//! the last 33 sectors, the image ending 1 MiB after the root (or at `size`). The disk and
//! partition GUIDs and the MBR id are hashes of the root image's and the ESP's bytes, so
//! the same inputs give the same GUIDs and a changed byte gives new ones.

use crate::boot::bootloader::Bootloader;
use crate::emit::{fat, gpt};
use crate::error::{Error, IoContext, Result};
use crate::boot::kernel::Kernel;
use crate::boot::Job;
use crate::measure::{stage_file, InputRecord, OutputRecord};
use crate::spec::{BootloaderKind, DiskOutput, DiskRoot};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

/// A `Write + Seek` view of `file` shifted by `base` bytes: an emitter writing "at 0" writes
/// at `base` (the start of a partition).
struct Shifted<'f> {
    file: &'f std::fs::File,
    base: u64,
    pos: u64,
}

impl Write for Shifted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all_at(buf, self.base + self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Shifted<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(|| std::io::Error::other("seek before the partition"))?,
            SeekFrom::End(_) => return Err(std::io::Error::other("seek from the end of a partition")),
        };
        Ok(self.pos)
    }
}

/// Build `NAME.img`. Returns its record and the inputs it adds (the bootloader's image and
/// the initrd files).
pub fn emit(job: &Job, o: &DiskOutput, kernel: &Kernel, bootloaders: &[Bootloader]) -> Result<(OutputRecord, Vec<InputRecord>)> {
    let Job { tree, spec, out, sde, workers: threads, .. } = *job;
    let at = spec.disk_at.clone().expect("a disk output has a location");
    let name = format!("{}.img", spec.name);
    let path = out.join(&name);
    let boot = bootloaders.iter().find(|b| b.kind().is_uefi()).ok_or_else(|| at.error("no UEFI bootloader (grub or systemd-boot)"))?;
    let mut inputs = vec![boot.input_record()];
    // A BIOS loader beside the UEFI one (`boot::bios`).
    let bios = bootloaders.iter().find(|b| b.kind() == BootloaderKind::GrubPc);
    inputs.extend(bios.map(|b| b.input_record()));

    let mut kbytes = Vec::with_capacity(kernel.kernel.len as usize);
    kernel.tree.open(&kernel.kernel).read_to_end(&mut kbytes).at(&path)?;
    let mut initrd = Vec::new();
    for p in &o.initrd {
        let file = spec.dir.join(p);
        let bytes = std::fs::read(&file).map_err(|e| at.error(format!("initrd {p:?}: {e}")))?;
        inputs.push(InputRecord { reference: format!("file:{p}"), digest: crate::digest::Digest::of_bytes(&bytes).to_string() });
        initrd.extend(bytes);
        initrd.resize(initrd.len().next_multiple_of(4), 0);
    }
    // `[kernel] load_modules`: the early initrd stagebox makes when the box names none, else
    // the modules as one more archive after the box's (see `boot::modules`).
    if let Some(m) = job.modules {
        initrd.extend(match (o.initrd.is_empty(), job.busybox) {
            (true, Some(b)) => m.early_initrd(b, sde),
            _ => m.archive(sde),
        });
    }

    // Laid out and patched in place; hashed by reading it back.
    let mut made = None;
    let mut rec = stage_file(out, "disk", name, |file, path| {
        let file = file.try_clone().at(path)?;

        // The root partition's file system, written in place after the ESP's reserved space.
        // The ESP's size depends on the command line's length only through its PARTUUID text,
        // which has a fixed length, so it is laid out first with a placeholder GUID.
        let fstype = match o.root {
            DiskRoot::Squashfs => "squashfs",
            DiskRoot::Erofs => "erofs",
        };
        // `root`: the root arguments (`root=PARTUUID=... rootfstype=... ro`, or with verity
        // `boot::verity::cmdline`'s); `pad`: spaces to add at the end, so that a verity command line
        // has the length of its placeholder (its numbers are only known once the root is written).
        let cmdline = |root: &str, pad: usize| format!("{:pad$}", format!("{root} {}", kernel.spec.cmdline).trim(), pad = pad);
        let grub = boot.kind() == BootloaderKind::Grub;
        // The removable-media loader of the kernel's architecture (BOOTX64.EFI, BOOTAA64.EFI).
        let loader = kernel.arch.efi_boot_file();
        let efi = if grub { boot.grub_image(None, "/EFI/BOOT")? } else { boot.read("efi")? };
        if !grub {
            kernel.check_loader_arch(&efi, &format!("bootloader {} ({} in {})", boot.def.name, boot.def.files["efi"], boot.image.reference.text), &at)?;
        }
        let esp_files = |root: &str, pad: usize| -> BTreeMap<String, fat::EspSource> {
            let title = format!("{} {}", spec.name, spec.version);
            let initrd_at = (!initrd.is_empty()).then_some("stagebox/initrd");
            let mut f = if grub {
                let cfg = crate::boot::bootloader::grub_cfg(&title, "/stagebox/linux", initrd_at.map(|_| "/stagebox/initrd"), &cmdline(root, pad), false);
                BTreeMap::from([
                    (loader.to_string(), fat::EspSource::Bytes(efi.clone())),
                    ("EFI/BOOT/grub.cfg".to_string(), fat::EspSource::Bytes(cfg.into_bytes())),
                ])
            } else {
                let mut f = crate::boot::bootloader::systemd_boot_files(loader, efi.clone(), &title, "stagebox/linux", initrd_at, &cmdline(root, pad));
                if bios.is_some() {
                    let cfg = crate::boot::bootloader::grub_cfg(&title, "/stagebox/linux", initrd_at.map(|_| "/stagebox/initrd"), &cmdline(root, pad), false);
                    f.insert("EFI/BOOT/grub.cfg".to_string(), fat::EspSource::Bytes(cfg.into_bytes()));
                }
                f
            };
            if !initrd.is_empty() {
                f.insert("stagebox/initrd".into(), fat::EspSource::Bytes(initrd.clone()));
            }
            f.insert("stagebox/linux".into(), fat::EspSource::Bytes(kbytes.clone()));
            f
        };

        // Lay out the ESP with a placeholder PARTUUID to learn its size.
        let scratch = tempfile::Builder::new().prefix(".stagebox-esp-").tempdir_in(out).at(out)?;
        let esp_path = scratch.path().join("esp.img");
        let placeholder = "00000000-0000-0000-0000-000000000000";
        let root_args = |partuuid: &str| format!("root=PARTUUID={partuuid} rootfstype={fstype} ro");
        let placeholder_args = if o.verity { super::verity::placeholder_cmdline(fstype) } else { root_args(placeholder) };
        let placeholder_len = cmdline(&placeholder_args, 0).len();
        let esp_len = fat::write(&fat::Esp { files: esp_files(&placeholder_args, 0), sde, volume_id: 0 }, &esp_path)?;
        let esp_first = MIB / SECTOR;
        let esp_sectors = esp_len.next_multiple_of(MIB) / SECTOR;
        let root_first = esp_first + esp_sectors;

        let mut w = Shifted { file: &file, base: root_first * SECTOR, pos: 0 };
        let root_len = match o.root {
            DiskRoot::Squashfs => {
                let opts = crate::emit::squashfs::Options { compression: o.compression, sde, threads };
                crate::emit::squashfs::write(tree, &opts, &mut w).at(path)?
            }
            DiskRoot::Erofs => crate::emit::erofs::write(tree, &crate::emit::erofs::Options { sde, label: spec.name.clone() }, &mut w).at(path)?,
        };
        let root_sectors = root_len.next_multiple_of(MIB) / SECTOR;
        // With verity, the hash tree of the whole root partition (zeros after the file system)
        // in its own partition at the next MiB.
        let hash_first = root_first + root_sectors;
        let verity = if o.verity {
            let mut fs = file.try_clone().at(path)?;
            fs.seek(SeekFrom::Start(root_first * SECTOR)).at(path)?;
            let part_len = root_sectors * SECTOR;
            let digest = {
                let mut h = Sha256::new();
                std::io::copy(&mut (&mut fs).take(root_len).chain(std::io::repeat(0).take(part_len - root_len)), &mut h).at(path)?;
                h.finalize()
            };
            fs.seek(SeekFrom::Start(root_first * SECTOR)).at(path)?;
            let (salt, uuid) = crate::emit::verity::derive_salt_uuid(&digest);
            let data = fs.take(root_len).chain(std::io::repeat(0).take(part_len - root_len));
            let mut w = std::io::BufWriter::new(Shifted { file: &file, base: hash_first * SECTOR, pos: 0 });
            let v = crate::emit::verity::write(data, part_len, salt, uuid, &mut w).at(path)?;
            w.flush().at(path)?;
            Some(v)
        } else {
            None
        };
        let hash_sectors = verity.as_ref().map_or(0, |v| v.hash_len.next_multiple_of(MIB) / SECTOR);
        let minimal = (hash_first + hash_sectors) * SECTOR + MIB;
        let size = match o.size {
            Some(s) if s < minimal => return Err(at.error(format!("size = {s} is too small: the partitions need {minimal} bytes"))),
            Some(s) => s.next_multiple_of(SECTOR),
            None => minimal,
        };

        // GUIDs from the root file system's bytes (which carry the whole tree) and the boot files.
        let mut seed = Sha256::new();
        let mut buf = vec![0u8; MIB as usize];
        let mut left = root_len;
        let mut at_off = root_first * SECTOR;
        while left > 0 {
            let n = left.min(MIB) as usize;
            file.read_exact_at(&mut buf[..n], at_off).at(path)?;
            seed.update(&buf[..n]);
            left -= n as u64;
            at_off += n as u64;
        }
        seed.update(std::fs::read(&esp_path).at(&esp_path)?);
        let seed = seed.finalize();
        let (root_guid, hash_guid) = match &verity {
            Some(v) => super::verity::partition_uuids(v),
            None => (gpt::Guid::derive(&seed, "root"), gpt::Guid::derive(&seed, "verity")),
        };
        let partuuid = root_guid.to_string().to_lowercase();
        let args = match &verity {
            Some(v) => super::verity::cmdline(v, &partuuid, &hash_guid.to_string().to_lowercase(), fstype),
            None => root_args(&partuuid),
        };

        // The real ESP: same files, the real command line (padded to the same length, so the
        // same layout).
        let esp_len2 = fat::write(&fat::Esp { files: esp_files(&args, placeholder_len), sde, volume_id: fat::volume_id(&seed.into()) }, &esp_path)?;
        if esp_len2 != esp_len {
            return Err(Error::other(format!("{}: the ESP changed size between layout and write ({esp_len} / {esp_len2})", path.display())));
        }
        let esp = std::fs::read(&esp_path).at(&esp_path)?;
        file.write_all_at(&esp, esp_first * SECTOR).at(path)?;
        file.set_len(size).at(path)?;

        let sectors = size / SECTOR;
        let dps = super::verity::dps_types(kernel.arch);
        let mut table = gpt::Gpt {
            disk_guid: gpt::Guid::derive(&seed, "disk"),
            sectors,
            partitions: vec![
                gpt::Partition {
                    type_guid: gpt::ESP_TYPE,
                    guid: gpt::Guid::derive(&seed, "esp"),
                    first: esp_first,
                    last: esp_first + esp_sectors - 1,
                    attributes: 0,
                    name: "ESP".into(),
                },
                gpt::Partition {
                    // "Linux root (x86-64)" or "(arm64)" of the Discoverable Partitions Specification.
                    type_guid: dps.1,
                    guid: root_guid,
                    first: root_first,
                    last: root_first + root_sectors - 1,
                    // Read-only (bit 60), as the file system is.
                    attributes: 1 << 60,
                    name: "root".into(),
                },
            ],
        };
        if verity.is_some() {
            table.partitions.push(gpt::Partition {
                type_guid: dps.2,
                guid: hash_guid,
                first: hash_first,
                last: hash_first + hash_sectors - 1,
                attributes: 1 << 60,
                name: "root-verity".into(),
            });
        }
        let protective = gpt::MbrEntry { active: false, kind: 0xee, first: 1, sectors: u32::try_from(sectors - 1).unwrap_or(u32::MAX) };
        let mut mbr = gpt::mbr(&[], None, gpt::disk_id(&seed), &[protective])?;
        if let Some(b) = bios {
            let (part, m) = crate::boot::bios::write(b, &file, path, &seed, &mbr)?;
            table.partitions.push(part);
            mbr = m;
        }
        table.write(&file, path)?;
        file.write_all_at(&mbr, 0).at(path)?;
        drop(scratch);

        // What OVMF measures booting it: the loader, and the kernel when systemd-boot loads it.
        let mut images: Vec<(&str, &[u8])> = vec![(loader, &efi)];
        if !grub {
            images.push(("stagebox/linux", &kbytes));
        }
        let tpm = crate::measure::tpm::predict_uefi(&images).map_err(|e| at.error(e))?;
        let tpm = if grub {
            tpm.untouched(&[8, 9])
        } else {
            let initrd_at = (!initrd.is_empty()).then_some("stagebox/initrd");
            tpm.systemd_boot(initrd_at, &cmdline(&args, 0), (!initrd.is_empty()).then(|| Sha256::digest(&initrd).into()))
        };
        // EDK2's OVMF sequence: not predicted for arm64 (AAVMF), where it is unchecked (docs/arm64.md).
        let tpm_pcrs = (kernel.arch == crate::kernelfmt::Arch::Amd64).then(|| tpm.to_map());
        made = Some((tpm_pcrs, verity.map(|v| v.root_hex())));
        Ok(None)
    })?;
    (rec.tpm_pcrs, rec.roothash) = made.expect("written");
    rec.arch = kernel.manifest_arch();
    Ok((rec, inputs))
}

/// `inspect NAME.img`: the partition tables (`emit::gpt::dump`), then what each GPT
/// partition holds (SquashFS: its summary; EROFS and FAT: their names). `None` when the file
/// has no GPT.
pub fn describe(path: &Path) -> Result<Option<String>> {
    let file = std::fs::File::open(path).at(path)?;
    let Some(mut s) = gpt::dump(&file, path)? else { return Ok(None) };
    let Some(table) = gpt::read(&file, path)? else { return Ok(None) };
    let le = |b: &[u8], n: usize| b[..n].iter().rev().fold(0u64, |a, x| (a << 8) | *x as u64);
    for (i, p) in &table.partitions {
        let Some(first) = p.first.checked_mul(SECTOR) else { continue };
        let mut head = [0u8; 1100];
        let what = if file.read_exact_at(&mut head, first).is_err() {
            "unreadable".to_string()
        } else if &head[..4] == b"hsqs" {
            match crate::emit::squashfs::debug::describe_file_at(&file, first) {
                Ok(d) => crate::emit::squashfs::debug::dump(&d).lines().next().unwrap_or_default().to_string(),
                Err(e) => format!("squashfs, unreadable: {e}"),
            }
        } else if &head[..8] == crate::emit::verity::format::MAGIC {
            super::verity::describe_superblock(&head)
        } else if head[1024..1028] == 0xE0F5_E1E2u32.to_le_bytes() {
            "EROFS".to_string()
        } else if head[510..512] == [0x55, 0xaa] && (&head[54..57] == b"FAT" || &head[82..85] == b"FAT") {
            format!("FAT file system, volume id 0x{:08x}", le(&head[if &head[82..85] == b"FAT" { 67 } else { 39 }..], 4))
        } else {
            "unknown contents".to_string()
        };
        s += &format!("  partition {i}: {what}\n");
    }
    Ok(Some(s))
}
