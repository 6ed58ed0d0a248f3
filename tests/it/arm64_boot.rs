//! arm64 boot chain (issue #17): one `platform = "linux/arm64"` box (Debian's arm64 cloud
//! kernel, an arm64 busybox rootfs whose `/init` prints `MARKER` with `uname -m`, GRUB
//! arm64-efi assembled by stagebox from Debian's grub-efi-arm64-bin) built once into an
//! initramfs, a UEFI-only ISO and a GPT disk, each booted with `stagebox run --expect MARKER`
//! under `qemu-system-aarch64 -M virt` (TCG): the initramfs with `-kernel`, the ISO from a CD
//! and as a disk, and the disk, under AAVMF. Independent readers: xorriso (El Torito platform
//! efi and `EFI/BOOT/BOOTAA64.EFI` in the ESP), sgdisk (the arm64 root partition type),
//! mtools and fsck.vfat on the ESP. `--check` rebuilds it under host variations. Refusals:
//! a BIOS bootloader on an arm64 box, an x86 kernel in an arm64 box.

use crate::common;

use common::arm64::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Discoverable Partitions Specification's "Linux root (arm64)" type.
const ROOT_ARM64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";

struct Fixture {
    images: Arm64Images,
    dir: PathBuf,
    box_file: PathBuf,
    out: PathBuf,
    cache: PathBuf,
}

const GRUB_DEF: &str = "name = \"grub-arm64\"\nkind = \"grub\"\nplatform = \"/usr/lib/grub/arm64-efi\"\n";

/// The box: `outputs` are the output tables (the bootloader definition is `grub-arm64.toml`
/// beside it, its image given here).
fn box_text(i: &Arm64Images, kernel: &str, outputs: &str) -> String {
    format!(
        "name = \"a64\"\nplatform = \"linux/arm64\"\n[[layer]]\nimage = \"{}\"\n[kernel]\nimage = \"{kernel}\"\npath = \"/Image\"\nconfig = \"/linux.config\"\ncmdline = \"console=ttyAMA0 panic=-1\"\n{outputs}",
        i.rootfs
    )
}

fn outputs(grub: &str) -> String {
    let b = format!("bootloader = {{ definition = \"grub-arm64.toml\", image = \"{grub}\" }}");
    format!("[output.initramfs]\ncompression = \"gzip\"\n[output.iso]\n{b}\n[output.disk]\n{b}\ninitrd = [\"marker.cpio\"]\n")
}

/// The disk's early initrd: the marker rootfs as a newc cpio (made with `cpio`), so the disk
/// boots to the same `/init` from its ESP.
fn marker_cpio(dir: &Path, scratch: &Path) -> PathBuf {
    let root = scratch.join("marker-root");
    write(&root.join("bin/busybox"), arm64_busybox(scratch));
    std::fs::set_permissions(root.join("bin/busybox"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    write(&root.join("init"), INIT);
    std::fs::set_permissions(root.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = dir.join("marker.cpio");
    let o = run(Command::new("sh").arg("-c").arg(format!("cd {} && printf 'bin\\nbin/busybox\\nbin/sh\\ninit\\n' | cpio -o -H newc --quiet > {}", root.display(), out.display())));
    assert!(o.status.success());
    out
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["qemu-system-aarch64", "xorriso", "sgdisk", "mdir", "fsck.vfat", "cpio"]);
        assert!(Path::new("/usr/share/AAVMF/AAVMF_CODE.fd").is_file(), "AAVMF missing: install Debian's qemu-efi-aarch64 (scripts/install-test-deps.sh)");
        let dir = fixture_dir("arm64_boot");
        let images = arm64_images(&dir);
        let b = dir.join("box");
        std::fs::create_dir_all(&b).unwrap();
        write(&b.join("grub-arm64.toml"), GRUB_DEF);
        marker_cpio(&b, &dir.join("scratch"));
        let box_file = b.join("a64.toml");
        write(&box_file, box_text(&images, &images.kernel, &outputs(&images.grub)));
        let (out, cache) = (dir.join("out"), dir.join("cache"));
        let t = std::time::Instant::now();
        build(&box_file, &out, &cache);
        eprintln!("built the arm64 box in {:.1}s", t.elapsed().as_secs_f64());
        Fixture { images, dir, box_file, out, cache }
    })
}

/// `stagebox run FILE --expect MARKER [extra]`, which must succeed and show the marker.
fn boot(file: &Path, extra: &[&str]) {
    let mut cmd = stagebox(["run".as_ref(), file.as_os_str()]);
    cmd.args(["--expect", MARKER, "--timeout", "240", "--memory", "512M"]).args(extra);
    let t = std::time::Instant::now();
    let o = run(&mut cmd);
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("booted {} {extra:?} in {:.1}s", file.display(), t.elapsed().as_secs_f64());
    assert!(console.contains(MARKER), "{console}");
    assert!(said.contains("qemu-system-aarch64") && said.contains("-M virt"), "{said}");
}

#[test]
fn initramfs_boots_with_qemu_kernel_on_virt() {
    let f = fixture();
    let m = read_json(&f.out.join("manifest.json"));
    let kernel = m["outputs"].as_array().unwrap().iter().find(|o| o["format"] == "kernel").unwrap().clone();
    assert_eq!((kernel["path"].as_str(), kernel["arch"].as_str()), (Some("a64.Image"), Some("arm64")), "{kernel}");
    boot(&f.out.join("a64.cpio.gz"), &[]);
}

#[test]
fn aavmf_boots_the_iso_from_a_cd() {
    boot(&fixture().out.join("a64.iso"), &[]);
}

#[test]
fn aavmf_boots_the_iso_as_a_disk() {
    boot(&fixture().out.join("a64.iso"), &["--disk"]);
}

#[test]
fn aavmf_boots_the_gpt_disk() {
    boot(&fixture().out.join("a64.img"), &[]);
}

#[test]
fn xorriso_sees_a_uefi_only_catalog_with_bootaa64() {
    let f = fixture();
    let iso = f.out.join("a64.iso");
    let o = run(Command::new("xorriso").args(["-indev"]).arg(&iso).args(["-report_el_torito", "plain"]));
    let report = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let entries: Vec<&str> = report.lines().filter(|l| l.starts_with("El Torito boot img :")).collect();
    assert_eq!(entries.len(), 1, "one boot entry, UEFI:\n{report}");
    assert!(entries[0].contains("UEFI") && !report.contains("BIOS"), "{report}");
    // The ESP image inside the ISO holds BOOTAA64.EFI (an arm64 PE) and no x64 loader.
    let esp = f.dir.join("efiboot.img");
    run(Command::new("xorriso").args(["-osirrox", "on", "-indev"]).arg(&iso).args(["-extract", "/isolinux/efiboot.img"]).arg(&esp));
    assert_esp_has_bootaa64(&esp, &f.dir.join("iso-esp"));
}

/// `mdir`/`mcopy` see `EFI/BOOT/BOOTAA64.EFI` (PE machine 0xaa64) in the FAT image `esp`,
/// and `fsck.vfat -n` finds it clean.
fn assert_esp_has_bootaa64(esp: &Path, scratch: &Path) {
    let o = run(Command::new("mdir").arg("-i").arg(esp).arg("-b").arg("::/EFI/BOOT"));
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(list.contains("BOOTAA64.EFI") && !list.contains("BOOTX64"), "{list}");
    std::fs::create_dir_all(scratch).unwrap();
    let efi = scratch.join("BOOTAA64.EFI");
    run(Command::new("mcopy").arg("-i").arg(esp).arg("::/EFI/BOOT/BOOTAA64.EFI").arg(&efi));
    let b = read(&efi);
    let pe = u32::from_le_bytes(b[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!((&b[..2], &b[pe..pe + 4], u16::from_le_bytes([b[pe + 4], b[pe + 5]])), (&b"MZ"[..], &b"PE\0\0"[..], 0xaa64));
    run(Command::new("fsck.vfat").arg("-n").arg(esp));
}

#[test]
fn sgdisk_reads_the_arm64_root_type_and_the_esp() {
    let f = fixture();
    let img = f.out.join("a64.img");
    run(Command::new("sgdisk").arg("-v").arg(&img));
    let o = run(Command::new("sgdisk").args(["-i", "2"]).arg(&img));
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(s.contains(&format!("Partition GUID code: {ROOT_ARM64}")), "{s}");
    let o = run(Command::new("sgdisk").args(["-i", "1"]).arg(&img));
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    let sector = |k: &str| -> usize { s.lines().find_map(|l| l.strip_prefix(k)).unwrap().split_whitespace().next().unwrap().parse().unwrap() };
    let bytes = read(&img);
    let esp = f.dir.join("disk-esp.img");
    write(&esp, &bytes[sector("First sector: ") * 512..(sector("Last sector: ") + 1) * 512]);
    assert_esp_has_bootaa64(&esp, &f.dir.join("disk-esp"));
    // No TPM prediction for arm64 (docs/arm64.md).
    assert!(!f.out.join("a64.tpm-pcrs").exists());
}

#[test]
fn the_arm64_box_is_reproducible() {
    let f = fixture();
    let out = f.dir.join("check");
    let o = output(&mut stagebox(["build".as_ref(), f.box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref(), "--check".as_ref()]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A build that must fail; its stderr. Nothing is written to its output directory.
fn refused(name: &str, text: &str) -> String {
    let f = fixture();
    let d = f.dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    write(&d.join("grub-arm64.toml"), GRUB_DEF);
    write(&d.join("marker.cpio"), read(&f.dir.join("box/marker.cpio")));
    std::fs::copy(manifest_dir().join("kernels/syslinux-debian.toml"), d.join("syslinux-debian.toml")).unwrap();
    let bx = d.join(format!("{name}.toml"));
    write(&bx, text);
    let out = d.join("out");
    let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    assert!(!o.status.success(), "{name} built");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "{name} wrote outputs");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_bios_bootloader_on_an_arm64_box_is_refused_at_its_table() {
    let f = fixture();
    let i = &f.images;
    let text = box_text(i, &i.kernel, &format!("[output.iso]\nbootloader = {{ definition = \"syslinux-debian.toml\", image = \"{}\" }}\n", i.grub));
    let e = refused("bios", &text);
    let line = text.lines().position(|l| l == "[output.iso]").unwrap() + 1;
    assert!(e.contains(&format!("bios.toml:{line}:")) && e.contains("syslinux") && e.contains("UEFI only"), "{e}");
    // An x86_64-efi GRUB directory is refused at the definition's `platform`.
    let text = box_text(i, &i.kernel, &format!("[output.iso]\nbootloader = {{ definition = \"g.toml\", image = \"{}\" }}\n", i.grub));
    let d = f.dir.join("x64grub");
    write(&d.join("g.toml"), "kind = \"grub\"\nplatform = \"/usr/lib/grub/x86_64-efi\"\n");
    let e = refused("x64grub", &text);
    assert!(e.contains("g.toml:2:") && e.contains("arm64-efi"), "{e}");
}

#[test]
fn an_x86_kernel_in_an_arm64_box_is_refused_naming_it() {
    let f = fixture();
    let d = f.dir.join("x86k");
    // A bzImage in an image whose config says linux/arm64: the kernel file's own form is
    // what is wrong.
    let l = Layout::create(&d.join("kimg"));
    let k = l.image(&[(&cloud_kernel_layer(&d.join("kdeb")), Comp::Gzip)], "arm64");
    l.set_index(&[(k.clone(), "k")]);
    let kernel = format!("oci:{}@{}", l.dir.display(), digest_of(&k));
    let text = box_text(&f.images, &kernel, "[output.initramfs]\n").replace("path = \"/Image\"", "path = \"/bzImage\"");
    let e = refused("x86k", &text);
    assert!(e.contains(&kernel) && e.contains("/bzImage") && e.contains("an x86 bzImage (for x86_64)") && e.contains("linux/arm64"), "{e}");
}
