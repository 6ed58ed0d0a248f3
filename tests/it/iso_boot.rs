//! Bootable hybrid ISOs (`[output.iso]` with `bootloader`): Debian's cloud kernel, a busybox
//! `/init` printing a marker, Debian's isolinux/syslinux-common (BIOS), grub-efi-amd64-bin
//! (UEFI, GRUB core image assembled by stagebox) and systemd-boot-efi (the alternative UEFI
//! loader) packages made into OCI images at test time. The syslinux + GRUB file boots four
//! ways in QEMU (SeaBIOS and OVMF, as a CD and as a raw disk), holds kernel and initramfs once
//! (size bound with a 50 MB initramfs), and independent tools (xorriso, fdisk, sgdisk,
//! fsck.vfat, mtools, isoinfo, bsdtar) read its El Torito catalog, partition tables, ESP and
//! files. The syslinux + systemd-boot file boots from OVMF as a CD.

use crate::common;

use common::boot::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Fixture {
    dir: PathBuf,
    images: BootImages,
    /// syslinux (BIOS) + GRUB (UEFI).
    iso: PathBuf,
    /// syslinux (BIOS) + systemd-boot (UEFI).
    sdboot_iso: PathBuf,
    cache: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["qemu-system-x86_64", "umoci", "dpkg-deb"]);
        let dir = fixture_dir("iso_boot");
        let images = boot_images(&dir);
        let cache = dir.join("cache");
        let d = dir.join("hybrid");
        let box_file = iso_box(&d, "hybrid", &images, &syslinux_and_grub(&images));
        let built = build(&box_file, &d.join("out"), &cache);
        let iso = d.join("out/hybrid.iso");
        assert!(built.iter().any(|b| b.path == iso), "{built:?}");
        let d = dir.join("sdboot");
        let box_file = iso_box(&d, "sdboot", &images, &both_bootloaders(&images));
        build(&box_file, &d.join("out"), &cache);
        let sdboot_iso = d.join("out/sdboot.iso");
        Fixture { dir, images, iso, sdboot_iso, cache }
    })
}

/// `stagebox run ISO --expect MARKER [extra]` on the syslinux + GRUB ISO: must succeed.
fn boot(extra: &[&str]) {
    boot_file(&fixture().iso, extra)
}

fn boot_file(iso: &Path, extra: &[&str]) {
    let mut cmd = stagebox(["run".as_ref(), iso.as_os_str()]);
    cmd.args(["--expect", MARKER, "--timeout", "150"]).args(extra);
    let t = std::time::Instant::now();
    let o = run(&mut cmd);
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("booted {} {extra:?} in {:.1}s", iso.display(), t.elapsed().as_secs_f64());
    assert!(console.contains(MARKER), "{console}");
}

#[test]
fn seabios_boots_the_iso_as_a_cd() {
    boot(&[]);
}

#[test]
fn seabios_boots_the_iso_as_a_disk() {
    boot(&["--disk"]);
}

#[test]
fn ovmf_boots_the_iso_as_a_cd() {
    boot(&["--uefi"]);
}

#[test]
fn ovmf_boots_the_iso_as_a_disk() {
    boot(&["--uefi", "--disk"]);
}

#[test]
fn ovmf_boots_the_systemd_boot_iso_as_a_cd() {
    boot_file(&fixture().sdboot_iso, &["--uefi"]);
}

/// The ESP's (offset, length) in bytes, from our GPT as sgdisk reads it.
fn esp_extent(iso: &Path) -> (u64, u64) {
    let o = run(Command::new("sgdisk").arg("-i").arg("1").arg(iso));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let num = |key: &str| -> u64 {
        let l = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in:\n{text}"));
        l[key.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(text.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "partition 1 is not an ESP:\n{text}");
    let (first, last) = (num("First sector:"), num("Last sector:"));
    (first * 512, (last - first + 1) * 512)
}

#[test]
fn independent_tools_read_the_boot_records_tables_and_files() {
    require_tools(&["xorriso", "fdisk", "sgdisk", "fsck.vfat", "mdir", "mcopy", "isoinfo", "bsdtar"]);
    let f = fixture();
    let o = run(Command::new("xorriso").arg("-indev").arg(&f.iso).args(["-report_el_torito", "plain", "-report_system_area", "plain"]));
    let x = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(x.contains("El Torito boot img :   1  BIOS  y   none"), "{x}");
    assert!(x.contains("El Torito boot img :   2  UEFI  y   none"), "{x}");
    assert!(x.contains("El Torito img path :   1  /isolinux/isolinux.bin"), "{x}");
    assert!(x.contains("El Torito img path :   2  /isolinux/efiboot.img"), "{x}");
    assert!(x.contains("MBR partition      :   2   0x80  0xef"), "{x}");
    assert!(x.contains("GPT partition path :   1  /isolinux/efiboot.img"), "{x}");
    let o = run(Command::new("sgdisk").arg("-v").arg(&f.iso));
    let v = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(v.contains("No problems found"), "{v}");

    // The ESP holds the GRUB core image and nothing else.
    let (off, len) = esp_extent(&f.iso);
    let esp = f.dir.join("grub-esp.img");
    cut(&f.iso, off, len, &esp);
    run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    let o = run(Command::new("mdir").args(["-/", "-b", "-i"]).arg(&esp).arg("::"));
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    let files: Vec<&str> = listing.lines().filter(|l| !l.ends_with('/')).collect();
    assert_eq!(files.len(), 1, "the ESP holds more than the loader:\n{listing}");
    assert!(files[0].eq_ignore_ascii_case("::/EFI/BOOT/BOOTX64.EFI"), "{listing}");
    let efi = run(Command::new("mcopy").arg("-i").arg(&esp).args(["::/EFI/BOOT/BOOTX64.EFI", "-"])).stdout;
    assert_eq!(&efi[..2], b"MZ", "BOOTX64.EFI is not a PE image");
    assert!(efi.len() < 1 << 20, "a GRUB core image of {} bytes", efi.len());

    // The ISO 9660 tree: the boot files once, no tree files (`files` is off by default).
    let rr = common::iso::isoinfo_listing(&f.iso, "-R");
    let names: Vec<&String> = rr.keys().collect();
    for p in ["isolinux/isolinux.bin", "isolinux/ldlinux.c32", "isolinux/isolinux.cfg", "isolinux/grub.cfg", "isolinux/vmlinuz", "isolinux/initrd.img", "isolinux/efiboot.img"] {
        assert!(rr.contains_key(p), "{p} missing: {names:?}");
    }
    let markers: Vec<&&String> = names.iter().filter(|n| n.starts_with("isolinux/id-")).collect();
    assert_eq!(markers.len(), 1, "{names:?}");
    assert!(!rr.contains_key("init") && !rr.contains_key("bin/busybox"), "tree files in a bootable ISO without `files = true`: {names:?}");
    let x = f.dir.join("grub-x");
    let _ = std::fs::remove_dir_all(&x);
    common::iso::bsdtar_extract(&f.iso, &x);
    let cfg = std::fs::read_to_string(x.join("isolinux/grub.cfg")).unwrap();
    assert!(cfg.contains("linux /isolinux/vmlinuz 'console=ttyS0' 'panic=-1'") && cfg.contains("initrd /isolinux/initrd.img"), "{cfg}");
    assert!(cfg.contains("serial --unit=0") && cfg.contains("menuentry 'stagebox'"), "{cfg}");
    // The core image's early config searches for this ISO's marker.
    let marker = format!("/{}", markers[0]);
    assert!(efi.windows(marker.len()).any(|w| w == marker.as_bytes()), "{marker} not in the early config");
    // Each byte once: vmlinuz and initrd.img are not in the ESP, and isolinux reads the same files.
    let iso_cfg = std::fs::read_to_string(x.join("isolinux/isolinux.cfg")).unwrap();
    assert!(iso_cfg.contains("KERNEL /isolinux/vmlinuz") && iso_cfg.contains("INITRD /isolinux/initrd.img"), "{iso_cfg}");
}

#[test]
fn independent_tools_read_the_systemd_boot_iso() {
    require_tools(&["xorriso", "fdisk", "sgdisk", "fsck.vfat", "mdir", "mcopy"]);
    let f = fixture();
    let o = run(Command::new("xorriso").arg("-indev").arg(&f.sdboot_iso).args(["-report_el_torito", "plain", "-report_system_area", "plain"]));
    let x = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(x.contains("El Torito boot img :   1  BIOS  y   none"), "{x}");
    assert!(x.contains("El Torito boot img :   2  UEFI  y   none"), "{x}");
    assert!(x.contains("El Torito img path :   1  /isolinux/isolinux.bin"), "{x}");
    assert!(x.contains("El Torito img path :   2  /isolinux/efiboot.img"), "{x}");
    assert!(x.contains("boot-info-table"), "{x}");
    assert!(x.contains("MBR partition      :   2   0x80  0xef"), "{x}");
    assert!(x.contains("GPT partition path :   1  /isolinux/efiboot.img"), "{x}");

    let o = run(Command::new("sgdisk").arg("-v").arg(&f.sdboot_iso));
    let v = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(v.contains("No problems found"), "{v}");
    let o = run(Command::new("sgdisk").arg("-p").arg(&f.sdboot_iso));
    let p = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(p.contains("EF00") && p.contains("EFI System"), "{p}");
    let o = run(Command::new("fdisk").arg("-l").arg(&f.sdboot_iso));
    let l = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(l.contains("EFI System"), "{l}");

    let (off, len) = esp_extent(&f.sdboot_iso);
    let esp = f.dir.join("sdboot-esp.img");
    cut(&f.sdboot_iso, off, len, &esp);
    run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    let o = run(Command::new("mdir").args(["-/", "-b", "-i"]).arg(&esp).arg("::"));
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    for p in ["::/EFI/BOOT/BOOTX64.EFI", "::/loader/loader.conf", "::/loader/entries/stagebox.conf", "::/vmlinuz", "::/initrd.img"] {
        assert!(listing.lines().any(|l| l.eq_ignore_ascii_case(p)), "{p} missing from the ESP:\n{listing}");
    }
    let o = run(Command::new("mcopy").arg("-i").arg(&esp).args(["::/EFI/BOOT/BOOTX64.EFI", "-"]));
    assert_eq!(sha256_hex(&o.stdout), sha256_file(Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")));
    let o = run(Command::new("mcopy").arg("-i").arg(&esp).args(["::/loader/entries/stagebox.conf", "-"]));
    let entry = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(entry.contains("options console=ttyS0 panic=-1"), "{entry}");

    // inspect shows both partition tables.
    let o = run(&mut stagebox(["inspect".as_ref(), f.sdboot_iso.as_os_str()]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("header CRC ok, array CRC ok") && text.contains("(EFI System)"), "{text}");
    assert!(text.contains("isohybrid boot file at sector"), "{text}");
}

#[test]
fn iso_is_reproducible_under_host_variations() {
    let f = fixture();
    let d = f.dir.join("again");
    let box_file = iso_box(&d, "hybrid", &f.images, &syslinux_and_grub(&f.images));
    let out = d.join("out");
    // Built by `sh -c 'umask 077; exec stagebox ...'` with other TZ, locale, cwd and threads.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 077; exec \"$@\"", "sh"]).arg(stagebox_bin());
    cmd.args(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str()]);
    cmd.args(["--threads", "5", "-q"]);
    cmd.env("TZ", "Asia/Kathmandu").env("LANG", "de_DE.UTF-8").env("LC_ALL", "tr_TR.UTF-8").current_dir(&d);
    run(&mut cmd);
    let again = out.join("hybrid.iso");
    assert_eq!(sha256_file(&again), sha256_file(&f.iso), "the ISO differs when built again with other TZ, locale, umask, cwd, threads");
}

#[test]
fn refuses_a_kernel_without_an_efi_stub_for_uefi() {
    let f = fixture();
    let d = f.dir.join("nostub");
    let layout = d.join("img");
    let digest = umoci_image(&layout, "k", &[("k".into(), layer(&[Entry::file("bzImage", vec![0xeb; 4096])]))]);
    let images = BootImages {
        kernel: format!("oci:{}@{digest}", layout.display()),
        syslinux: f.images.syslinux.clone(),
        systemd_boot: f.images.systemd_boot.clone(),
        grub: f.images.grub.clone(),
    };
    let box_file = iso_box(&d, "nostub", &images, &syslinux_and_grub(&images));
    let o = output(&mut stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), d.join("out").as_os_str(), "--cache".as_ref(), f.cache.as_os_str()]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("has no EFI stub") && err.contains("nostub.toml:"), "{err}");
    assert!(!d.join("out/nostub.iso").exists());
}

/// The ESP writer's bytes for a fixed input: update if intentional.
#[test]
fn esp_digest_is_pinned() {
    use stagebox::emit::fat;
    let d = tempdir();
    let mut files = std::collections::BTreeMap::new();
    files.insert("EFI/BOOT/BOOTX64.EFI".to_string(), fat::EspSource::Bytes(b"MZ not really a loader".to_vec()));
    files.insert("loader/loader.conf".to_string(), fat::EspSource::Bytes(b"timeout 0\n".to_vec()));
    files.insert("vmlinuz".to_string(), fat::EspSource::Bytes(vec![0x5a; 70_000]));
    let p = d.path().join("esp.img");
    fat::write(&fat::Esp { files, sde: 1_700_000_000, volume_id: 0x0102_0304 }, &p).unwrap();
    let o = run(Command::new("fsck.vfat").arg("-n").arg(&p));
    assert!(o.status.success());
    assert_eq!(sha256_file(&p), "6f31fad590af9feb8522e8f75a846fc1dfcf13e9c2a5d5dca115da9a838ebcf2", "ESP bytes changed: update the pin if intentional");
}

/// `stagebox build` of `text` (a box file in a fresh dir with the marker rootfs): must fail
/// with exit code 2; returns stderr.
fn box_error(text: &str) -> String {
    let d = tempdir();
    marker_rootfs(d.path());
    let f = d.path().join("bad.toml");
    write(&f, text);
    let o = output(&mut stagebox(["build".as_ref(), f.as_os_str(), "--offline".as_ref(), "--cache".as_ref(), fixture().cache.as_os_str()]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    err
}

#[test]
fn bootable_iso_box_errors_name_the_place() {
    let k = "[kernel]\nimage = \"stagex/user-linux-airgap@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n";
    let sys = definition("syslinux");
    let e = box_error(&format!("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n[output.iso]\nbootloader = \"{sys}\"\n"));
    assert!(e.contains("bad.toml:4:") && e.contains("needs a [kernel]"), "{e}");
    let e = box_error(&format!("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n{k}[output.iso]\nserial = true\n"));
    assert!(e.contains("bad.toml:6:") && e.contains("need `bootloader`"), "{e}");
    let e = box_error(&format!("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n{k}[output.iso]\nbootloader = [\"{sys}\", \"{sys}\"]\n"));
    assert!(e.contains("two syslinux bootloaders"), "{e}");
    let e = box_error(&format!("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n{k}[output.iso]\nbootloader = \"kernels/nope.toml\"\n"));
    assert!(e.contains("bad.toml:6:") && e.contains("\"kernels/nope.toml\" not found"), "{e}");
    let e = box_error(&format!("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n{k}[output.iso]\nbootloader = \"{}\"\n", definition("systemd-boot-debian")));
    assert!(e.contains("names no `image`"), "{e}");
    // (StageX's syslinux definition is pinned to a release: tests/it/shipped.rs checks it.)
    let e = box_error(&format!("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n{k}[output.iso]\nbootloader = \"{sys}\"\nlabel = \"a\\nb\"\n"));
    assert!(e.contains("label must be"), "{e}");
    let e = box_error("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n[output.iso]\nfiles = false\n");
    assert!(e.contains("bad.toml:4:") && e.contains("`files = false` without `bootloader`"), "{e}");
}

/// A BIOS-only ISO (syslinux alone): isohybrid's classic MBR (one active 0x17 partition over
/// the image), no GPT, no ESP; SeaBIOS boots it as a raw disk.
#[test]
fn bios_only_iso_boots_as_a_disk_without_a_gpt() {
    let f = fixture();
    let d = f.dir.join("bios");
    let keys = format!("bootloader = {{ definition = \"{}\", image = \"{}\" }}\nlabel = \"BIOS only\"", definition("syslinux-debian"), f.images.syslinux);
    let box_file = iso_box(&d, "bios", &f.images, &keys);
    build(&box_file, &d.join("out"), &f.cache);
    let iso = d.join("out/bios.iso");
    let o = run(&mut stagebox(["inspect".as_ref(), iso.as_os_str()]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("partition 1: type 0x17 active start 0") && text.contains("GPT: none"), "{text}");
    let mut cmd = stagebox(["run".as_ref(), iso.as_os_str()]);
    cmd.args(["--disk", "--expect", MARKER, "--timeout", "150"]);
    let console = String::from_utf8_lossy(&run(&mut cmd).stdout).into_owned();
    assert!(console.contains(MARKER), "{console}");
}

/// Bootloader images are pinned like kernels: an unpinned one is refused until
/// `stagebox lock` writes it into BOX.lock, then the build uses the locked digest.
#[test]
fn bootloader_images_are_pinned_by_the_lock_file() {
    let f = fixture();
    let d = f.dir.join("lock");
    let tagged = |pinned: &str, tag: &str| format!("{}:{tag}", pinned.split('@').next().unwrap());
    let keys = format!(
        "bootloader = [{{ definition = \"{}\", image = \"{}\" }}, {{ definition = \"{}\", image = \"{}\" }}]",
        definition("syslinux-debian"),
        tagged(&f.images.syslinux, "syslinux"),
        definition("systemd-boot-debian"),
        tagged(&f.images.systemd_boot, "systemd-boot")
    );
    let box_file = iso_box(&d, "lock", &f.images, &keys);
    let args = |cmd: &str| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![cmd.into(), box_file.clone().into()];
        if cmd == "build" {
            v.extend(["--out".into(), d.join("out").into()]);
        }
        v.extend(["--cache".into(), f.cache.clone().into()]);
        v
    };
    let o = output(&mut stagebox(args("build")));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is not pinned") && err.contains(":syslinux"), "{err}");
    run(&mut stagebox(args("lock")));
    let lock = String::from_utf8_lossy(&read(&d.join("lock.lock"))).into_owned();
    for (tag, pinned) in [("syslinux", &f.images.syslinux), ("systemd-boot", &f.images.systemd_boot)] {
        let digest = pinned.split('@').nth(1).unwrap();
        assert!(lock.contains(&tagged(pinned, tag)) && lock.contains(digest), "{tag} not locked:\n{lock}");
    }
    run(&mut stagebox(args("build")));
    let m = read_json(&d.join("out/manifest.json"));
    let inputs = m["inputs"].to_string();
    for pinned in [&f.images.syslinux, &f.images.systemd_boot] {
        assert!(inputs.contains(pinned.split('@').nth(1).unwrap()), "{inputs}");
    }
    assert!(d.join("out/lock.iso").is_file());
}

/// A box of the marker rootfs plus `extra` layers, syslinux + GRUB (with `grub` as GRUB's
/// image) and `[output.iso]` keys `keys`, in `d`.
fn grub_box(d: &Path, name: &str, grub: &str, keys: &str, extra: &str) -> PathBuf {
    let f = fixture();
    let images = BootImages { grub: grub.to_string(), ..f.images.clone() };
    let b = iso_box(d, name, &images, &format!("{}\n{keys}", syslinux_and_grub(&images)));
    let text = std::fs::read_to_string(&b).unwrap().replacen("\n\n[kernel]", &format!("\n{extra}\n[kernel]"), 1);
    write(&b, text);
    b
}

/// The size bound of a RAM-booting ISO: at most kernel + initramfs + loader files + 2 MiB,
/// with an incompressible initramfs of over 50 MB (so the tree stored twice would show).
#[test]
fn bootable_iso_holds_each_byte_once() {
    require_tools(&["isoinfo"]);
    let f = fixture();
    let d = f.dir.join("size");
    let _ = std::fs::remove_dir_all(&d);
    let mut random = vec![0u8; 52 << 20];
    std::fs::File::open("/dev/urandom").and_then(|mut u| std::io::Read::read_exact(&mut u, &mut random)).unwrap();
    write(&d.join("big/data/random.bin"), &random);
    drop(random);
    let b = grub_box(&d, "size", &f.images.grub, "", "[[layer]]\ndir = \"big\"\n[output.initramfs]\ncompression = \"none\"\n");
    build(&b, &d.join("out"), &f.cache);
    let iso = d.join("out/size.iso");
    let cpio = std::fs::metadata(d.join("out/size.cpio")).unwrap().len();
    let rr = common::iso::isoinfo_listing(&iso, "-R");
    let files: u64 = rr.values().filter(|e| e.kind == '-').map(|e| e.size).sum();
    assert!(cpio >= 50 << 20, "initramfs of {cpio} bytes");
    assert_eq!(rr["isolinux/initrd.img"].size, cpio, "the ISO's initramfs is not the box's [output.initramfs]");
    assert!(!rr.keys().any(|k| k.starts_with("data/")), "the tree is stored as files too");
    let size = std::fs::metadata(&iso).unwrap().len();
    // Every file in the ISO: kernel, initramfs, isolinux.bin, ldlinux.c32, the ESP (GRUB),
    // configs, marker.
    assert!(size <= files + (2 << 20), "ISO of {size} bytes for {files} bytes of files (kernel + initramfs + loaders): over 2 MiB of overhead");
    assert!(size >= cpio, "{size}");
}

/// A systemd-boot ISO predicts PCR 9 from the initramfs's digest: the build streams it, never
/// holding the initramfs in memory (peak RSS below the size of a 96 MiB incompressible one; it
/// was over it when the prediction read the whole file).
#[test]
fn systemd_boot_pcr_prediction_streams_the_initramfs() {
    let f = fixture();
    let d = f.dir.join("sdboot-big");
    let _ = std::fs::remove_dir_all(&d);
    let size = 96usize << 20;
    let mut random = vec![0u8; size];
    std::fs::File::open("/dev/urandom").and_then(|mut u| std::io::Read::read_exact(&mut u, &mut random)).unwrap();
    write(&d.join("big/data/random.bin"), &random);
    drop(random);
    let b = iso_box(&d, "big", &f.images, &both_bootloaders(&f.images));
    let extra = "[[layer]]\ndir = \"big\"\n[output.initramfs]\ncompression = \"none\"\n";
    let text = std::fs::read_to_string(&b).unwrap().replacen("\n\n[kernel]", &format!("\n{extra}\n[kernel]"), 1);
    write(&b, text);
    let cmd = stagebox(["build".as_ref(), b.as_os_str(), "--out".as_ref(), d.join("out").as_os_str(), "--cache".as_ref(), f.cache.as_os_str()]);
    let (code, stderr, kib) = common::peak_rss(&cmd);
    assert_eq!(code, 0, "{stderr}");
    let cpio = std::fs::metadata(d.join("out/big.cpio")).unwrap().len();
    assert!(cpio >= size as u64, "initramfs of {cpio} bytes");
    let pcrs = std::fs::read_to_string(d.join("out/big.tpm-pcrs")).unwrap();
    assert!(pcrs.contains(" PCR9"), "{pcrs}");
    eprintln!("peak RSS {kib} KiB for a {cpio}-byte initramfs");
    assert!(kib * 1024 < size as i64, "peak RSS {kib} KiB for a {cpio}-byte initramfs: it was read into memory");
}

/// `files = true`: the tree as ISO 9660 files beside the boot files.
#[test]
fn files_true_adds_the_tree_as_iso_files() {
    require_tools(&["isoinfo"]);
    let f = fixture();
    let d = f.dir.join("files");
    let b = grub_box(&d, "files", &f.images.grub, "files = true", "");
    build(&b, &d.join("out"), &f.cache);
    let rr = common::iso::isoinfo_listing(&d.join("out/files.iso"), "-R");
    assert!(rr.contains_key("init") && rr.contains_key("bin/busybox") && rr.contains_key("isolinux/grub.cfg"), "{:?}", rr.keys().collect::<Vec<_>>());
}

/// A GRUB layer without a module the image needs (`iso9660`): the build fails naming the
/// module, the directory, the image and the definition, and writes no ISO.
#[test]
fn a_grub_layer_missing_a_module_is_named_and_nothing_written() {
    let f = fixture();
    let d = f.dir.join("nomod");
    let _ = std::fs::remove_dir_all(&d);
    let layer = filter_entries(&deb_layer("grub-efi-amd64-bin"), |p, _| p != "usr/lib/grub/x86_64-efi/iso9660.mod");
    let digest = umoci_image(&d.join("img"), "g", &[("g".into(), layer)]);
    let b = grub_box(&d, "nomod", &format!("oci:{}@{digest}", d.join("img").display()), "", "");
    let o = output(&mut stagebox(["build".as_ref(), b.as_os_str(), "--out".as_ref(), d.join("out").as_os_str(), "--cache".as_ref(), f.cache.as_os_str()]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("iso9660.mod") && err.contains("/usr/lib/grub/x86_64-efi") && err.contains("grub-debian.toml"), "{err}");
    assert!(!d.join("out/nomod.iso").exists());
    let left: Vec<_> = std::fs::read_dir(d.join("out")).map(|r| r.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains("iso")), "left behind: {left:?}");
}

/// A grub definition of another architecture: a box error naming the definition's key.
#[test]
fn a_grub_definition_of_the_wrong_architecture_is_refused() {
    let d = tempdir();
    let def = d.path().join("arm.toml");
    write(&def, "kind = \"grub\"\nplatform = \"/usr/lib/grub/arm64-efi\"\n");
    let k = "[kernel]\nimage = \"stagex/user-linux-airgap@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n";
    let e = box_error(&format!(
        "name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n{k}[output.iso]\nbootloader = {{ definition = \"{}\", image = \"stagex/user-grub@sha256:0000000000000000000000000000000000000000000000000000000000000000\" }}\n",
        def.display()
    ));
    assert!(e.contains("arm.toml:2:") && e.contains("x86_64-efi"), "{e}");
}
