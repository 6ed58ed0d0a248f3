//! Bootable hybrid ISOs (`[output.iso]` with `bootloader`): Debian's cloud kernel, a busybox
//! `/init` printing a marker, Debian's isolinux/syslinux-common (BIOS) and systemd-boot-efi
//! (UEFI) packages made into OCI images at test time. The same file boots four ways in QEMU
//! (SeaBIOS and OVMF, as a CD and as a raw disk), and independent tools (xorriso, fdisk,
//! sgdisk, fsck.vfat, mtools) read its El Torito catalog, partition tables and ESP.

mod common;

use common::boot::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Fixture {
    dir: PathBuf,
    images: BootImages,
    iso: PathBuf,
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
        let box_file = iso_box(&d, "hybrid", &images, &both_bootloaders(&images));
        let built = build(&box_file, &d.join("out"), &cache);
        let iso = d.join("out/hybrid.iso");
        assert!(built.iter().any(|b| b.path == iso), "{built:?}");
        Fixture { dir, images, iso, cache }
    })
}

/// `stagebox run ISO --expect MARKER [extra]`: must succeed.
fn boot(extra: &[&str]) {
    let f = fixture();
    let mut cmd = stagebox(["run".as_ref(), f.iso.as_os_str()]);
    cmd.args(["--expect", MARKER, "--timeout", "150"]).args(extra);
    let t = std::time::Instant::now();
    let o = run(&mut cmd);
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("booted {} {extra:?} in {:.1}s", f.iso.display(), t.elapsed().as_secs_f64());
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
fn independent_tools_read_the_boot_records_and_tables() {
    require_tools(&["xorriso", "fdisk", "sgdisk", "fsck.vfat", "mdir", "mcopy"]);
    let f = fixture();
    let o = run(Command::new("xorriso").arg("-indev").arg(&f.iso).args(["-report_el_torito", "plain", "-report_system_area", "plain"]));
    let x = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(x.contains("El Torito boot img :   1  BIOS  y   none"), "{x}");
    assert!(x.contains("El Torito boot img :   2  UEFI  y   none"), "{x}");
    assert!(x.contains("El Torito img path :   1  /isolinux/isolinux.bin"), "{x}");
    assert!(x.contains("El Torito img path :   2  /isolinux/efiboot.img"), "{x}");
    assert!(x.contains("boot-info-table"), "{x}");
    assert!(x.contains("MBR partition      :   2   0x80  0xef"), "{x}");
    assert!(x.contains("GPT partition path :   1  /isolinux/efiboot.img"), "{x}");

    let o = run(Command::new("sgdisk").arg("-v").arg(&f.iso));
    let v = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(v.contains("No problems found"), "{v}");
    let o = run(Command::new("sgdisk").arg("-p").arg(&f.iso));
    let p = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(p.contains("EF00") && p.contains("EFI System"), "{p}");
    let o = run(Command::new("fdisk").arg("-l").arg(&f.iso));
    let l = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(l.contains("EFI System"), "{l}");

    let (off, len) = esp_extent(&f.iso);
    let esp = f.dir.join("esp.img");
    cut(&f.iso, off, len, &esp);
    let o = run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
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
    let o = run(&mut stagebox(["inspect".as_ref(), f.iso.as_os_str()]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("header CRC ok, array CRC ok") && text.contains("(EFI System)"), "{text}");
    assert!(text.contains("isohybrid boot file at sector"), "{text}");
}

#[test]
fn iso_is_reproducible_under_host_variations() {
    let f = fixture();
    let d = f.dir.join("again");
    let box_file = iso_box(&d, "hybrid", &f.images, &both_bootloaders(&f.images));
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
    let images = BootImages { kernel: format!("oci:{}@{digest}", layout.display()), syslinux: f.images.syslinux.clone(), systemd_boot: f.images.systemd_boot.clone() };
    let box_file = iso_box(&d, "nostub", &images, &both_bootloaders(&images));
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
    // (StageX's syslinux definition is pinned to a release: tests/shipped.rs checks it.)
    let e = box_error(&format!("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n{k}[output.iso]\nbootloader = \"{sys}\"\nlabel = \"a\\nb\"\n"));
    assert!(e.contains("label must be"), "{e}");
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
