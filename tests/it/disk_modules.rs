//! `[kernel] load_modules` on a disk: Debian's cloud kernel has virtio-pci, virtio-blk and
//! squashfs as modules, so a disk attached with `-drive if=virtio` boots only if they are
//! loaded before the root is mounted. The kernel image is made from the Debian package like
//! StageX's (bzImage, config, `usr/lib/modules/RELEASE/` without `modules.dep`, squashfs as
//! `.ko.xz`); busybox-static's package is the busybox image. stagebox makes the early initrd
//! (busybox, the modules, `modules.dep`, an `/init` that modprobes them and switches to
//! `root=PARTUUID=`); OVMF boots the disk and the root's `/sbin/init` prints the marker and
//! `lsmod`. Independent readers: `cpio` lists the initrd taken off the ESP with `mtype`.

use crate::common;

use common::fixture::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MARKER: &str = "modules-root-says: 42";

struct Fixture {
    kernel: String,
    /// The same kernel image with one module's vermagic changed.
    wrong: String,
    /// The same kernel image with a `modules.dep` of its own.
    listed: String,
    busybox: String,
    sdboot: String,
    /// grub-pc-bin's i386-pc directory as an image.
    grub_pc: String,
    cache: PathBuf,
    release: String,
    /// The kernel package, unpacked.
    kdeb: PathBuf,
}

/// The files of the kernel package the fixture keeps (paths under the release directory).
fn kept(rel: &str) -> bool {
    ["kernel/drivers/virtio/", "kernel/drivers/block/virtio_blk.ko", "kernel/fs/squashfs/", "kernel/lib/", "kernel/crypto/", "kernel/arch/x86/crypto/", "kernel/fs/erofs/"]
        .iter()
        .any(|k| rel.starts_with(k))
        || rel == "modules.order"
}

fn kernel_layer(kdeb: &Path, patch: Option<(&str, &str)>, modules_dep: Option<&str>) -> (Vec<u8>, String) {
    let mods = kdeb.join("lib/modules");
    let release = std::fs::read_dir(&mods).unwrap().next().unwrap().unwrap().file_name().to_string_lossy().into_owned();
    let boot = kdeb.join("boot");
    let pick = |prefix: &str| -> Vec<u8> {
        let p = std::fs::read_dir(&boot).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix)).unwrap();
        read(&p)
    };
    let mut entries = vec![Entry::file("bzImage", pick("vmlinuz-")), Entry::file("linux.config", pick("config-"))];
    let root = mods.join(&release);
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for p in files {
        let rel = p.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        if !kept(&rel) {
            continue;
        }
        let mut bytes = read(&p);
        if let Some((module, to)) = patch {
            if rel.ends_with(&format!("/{module}.ko")) {
                let from = format!("vermagic={release}");
                let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("vermagic in the module");
                bytes[at..at + from.len()].copy_from_slice(format!("vermagic={to}").as_bytes());
            }
        }
        let (rel, bytes) = if rel.ends_with("/squashfs.ko") { (format!("{rel}.xz"), xz(&bytes)) } else { (rel, bytes) };
        entries.push(Entry::file(&format!("usr/lib/modules/{release}/{rel}"), bytes));
    }
    if let Some(dep) = modules_dep {
        entries.push(Entry::file(&format!("usr/lib/modules/{release}/modules.dep"), dep));
    }
    (layer(&entries), release)
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let d = tempdir();
    let p = d.path().join("m");
    write(&p, bytes);
    run(Command::new("xz").arg("-k").arg("--check=crc32").arg(&p));
    read(&d.path().join("m.xz"))
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["umoci", "cpio", "xz", "mtype", "qemu-system-x86_64", "dpkg-deb"]);
        let dir = fixture_dir("disk-modules");
        let kdeb = dir.join("kdeb");
        run(Command::new("dpkg-deb").arg("-x").arg(cloud_kernel_deb()).arg(&kdeb));
        let (l, release) = kernel_layer(&kdeb, None, None);
        let kernel = oci_image(&dir.join("kernel"), "k", &[("kernel".into(), l)]);
        let wrong_release = release.replacen("-cloud", "-clown", 1);
        let (l, _) = kernel_layer(&kdeb, Some(("virtio_blk", &wrong_release)), None);
        let wrong = oci_image(&dir.join("wrong"), "w", &[("kernel".into(), l)]);
        // An image with a modules.dep that says squashfs needs crc7 (its .modinfo does not).
        let (l, _) = kernel_layer(&kdeb, None, Some("kernel/fs/squashfs/squashfs.ko.xz: kernel/lib/crc7.ko\nkernel/lib/crc7.ko:\n"));
        Fixture {
            kernel,
            wrong,
            listed: oci_image(&dir.join("listed"), "l", &[("kernel".into(), l)]),
            busybox: oci_image(&dir.join("busybox"), "b", &[("busybox".into(), deb_layer("busybox-static"))]),
            sdboot: oci_image(&dir.join("sdboot"), "s", &[("systemd-boot-efi".into(), deb_layer("systemd-boot-efi"))]),
            grub_pc: oci_image(&dir.join("grub-pc"), "g", &[("grub-pc-bin".into(), deb_layer("grub-pc-bin"))]),
            cache: dir.join("cache"),
            release,
            kdeb,
        }
    })
}

/// A disk box whose root runs `/sbin/init` (marker, lsmod, power off), with `load_modules`.
fn modules_box(name: &str, kernel: &str, load: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let f = fixture();
    modules_box_with(name, kernel, load, extra, &format!("{{ definition = \"kernels/systemd-boot-debian.toml\", image = \"{}\" }}", f.sdboot))
}

/// [`modules_box`] with `bootloader = BOOTLOADER` (the definitions of kernels/ are there).
fn modules_box_with(name: &str, kernel: &str, load: &str, extra: &str, bootloader: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempdir();
    let root = d.path().join("rootfs");
    write(&root.join("usr/bin/busybox"), busybox());
    write(&root.join("etc/marker"), "modules-root-says");
    for dir in ["proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let init = "#!/usr/bin/busybox sh\nb=/usr/bin/busybox\necho \"$($b cat /etc/marker): $((6 * 7))\"\necho lsmod:\n$b lsmod\n$b poweroff -f\n";
    write(&root.join("sbin/init"), init);
    make_executable(&root, &["sbin/init", "usr/bin/busybox"]);
    copy_definitions(d.path(), &["systemd-boot-debian", "grub-debian", "grub-pc-debian", "syslinux-debian"]);
    let p = d.path().join(format!("{name}.toml"));
    write(
        &p,
        format!(
            "name = \"{name}\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"{kernel}\"\ncmdline = \"console=ttyS0 panic=-1\"\nload_modules = {load}\n[output.disk]\nbootloader = {bootloader}\n{extra}"
        ),
    );
    (d, p)
}

/// SeaBIOS (QEMU's default firmware) boots `img` attached with `-drive if=virtio`.
fn seabios_virtio_boot(img: &Path) -> String {
    let o = output(
        Command::new("timeout")
            .args(["240", "qemu-system-x86_64", "-nographic", "-no-reboot", "-m", "512", "-drive"])
            .arg(format!("file={},if=virtio,format=raw,snapshot=on", img.display())),
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ovmf_virtio_boot(img: &Path, scratch: &Path) -> String {
    let (code, v) = common::ovmf_with_vars(scratch);
    let o = output(
        Command::new("timeout")
            .args(["240", "qemu-system-x86_64", "-nographic", "-no-reboot", "-m", "512", "-drive"])
            .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=1,file={}", v.display()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw,snapshot=on", img.display())),
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The bytes of the ESP file `name` of the disk `img` (partition 1 at 1 MiB).
fn esp_file(img: &Path, name: &str, scratch: &Path) -> Vec<u8> {
    let to = scratch.join("esp-file");
    let o = run(Command::new("mtype").arg("-i").arg(format!("{}@@1M", img.display())).arg(format!("::{name}")));
    write(&to, &o.stdout);
    o.stdout
}

#[test]
fn ovmf_boots_a_virtio_disk_whose_modules_stagebox_loads() {
    let f = fixture();
    let (d, bx) = modules_box("mods", &f.kernel, "[\"virtio_pci\", \"virtio-blk\", \"squashfs\"]", &format!("busybox = \"{}\"\n", f.busybox));
    let out = d.path().join("out");
    build(&bx, &out, &f.cache);
    let img = out.join("mods.img");

    // The initrd on the ESP, read by cpio: busybox, /init, the modules with their
    // dependencies (uncompressed), modules.dep.
    let initrd = esp_file(&img, "/stagebox/initrd", d.path());
    let listing = d.path().join("initrd.cpio");
    write(&listing, &initrd);
    let o = run(Command::new("sh").arg("-c").arg(format!("cpio -it --quiet < '{}'", listing.display())));
    let names = String::from_utf8_lossy(&o.stdout).into_owned();
    let base = format!("lib/modules/{}", f.release);
    for p in ["init", "bin/busybox", "kernel/fs/squashfs/squashfs.ko", "kernel/drivers/block/virtio_blk.ko", "kernel/drivers/virtio/virtio_ring.ko", "modules.dep"] {
        let p = if p.starts_with("kernel/") || p == "modules.dep" { format!("{base}/{p}") } else { p.to_string() };
        assert!(names.lines().any(|l| l == p), "{p} missing from the initrd:\n{names}");
    }
    assert!(!names.contains(".ko.xz"), "{names}");
    let x = d.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("sh").arg("-c").arg(format!("cd '{}' && cpio -id --quiet < '{}'", x.display(), listing.display())));
    let dep = std::fs::read_to_string(x.join(&base).join("modules.dep")).unwrap();
    assert!(dep.lines().any(|l| l.starts_with("kernel/drivers/block/virtio_blk.ko: ") && l.contains("kernel/drivers/virtio/virtio_ring.ko")), "{dep}");
    // The module as the package ships it (squashfs was .ko.xz in the image).
    let kdeb = f.kdeb.join(&base);
    assert_eq!(read(&x.join(&base).join("kernel/fs/squashfs/squashfs.ko")), read(&kdeb.join("kernel/fs/squashfs/squashfs.ko")));

    let console = ovmf_virtio_boot(&img, d.path());
    assert!(console.contains(MARKER), "the virtio disk did not boot to its root:\n{console}");
    let lsmod = console.split("lsmod:").nth(1).unwrap_or_default();
    for m in ["virtio_blk", "squashfs", "virtio_pci"] {
        assert!(lsmod.lines().any(|l| l.starts_with(m)), "{m} not loaded:\n{console}");
    }

    // Same bytes from a second build.
    let again = d.path().join("again");
    run(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), again.as_os_str(), "--cache".as_ref(), d.path().join("c2").as_os_str(), "-q".as_ref()]));
    assert_eq!(sha256_file(&img), sha256_file(&again.join("mods.img")), "the disk differs between two builds");
}

#[test]
fn refusals_name_the_module() {
    let f = fixture();
    let bb = format!("busybox = \"{}\"\n", f.busybox);
    let fails = |bx: &Path| -> String {
        let out = bx.parent().unwrap().join("out");
        let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(!out.join(format!("{}.img", bx.file_stem().unwrap().to_string_lossy())).exists(), "an output was written: {err}");
        err
    };
    // A module the kernel image does not have.
    let (_d, bx) = modules_box("missing", &f.kernel, "[\"squashfs\", \"no_such_driver\"]", &bb);
    let err = fails(&bx);
    assert!(err.contains("missing.toml:") && err.contains("\"no_such_driver\" is not in kernel image"), "{err}");
    // A module built for another kernel (needed by virtio_blk's user: named through a dependency walk).
    let (_d, bx) = modules_box("vermagic", &f.wrong, "[\"virtio_blk\"]", &bb);
    let err = fails(&bx);
    assert!(err.contains("module \"virtio_blk\"") && err.contains("-clown") && err.contains(&format!("but the kernel is \"{}\"", f.release)), "{err}");
    // No busybox to run the early initrd.
    let (_d, bx) = modules_box("nobusybox", &f.kernel, "[\"squashfs\"]", "");
    let err = fails(&bx);
    assert!(err.contains("nobusybox.toml:") && err.contains("busybox"), "{err}");
    // A busybox image without busybox.
    let (_d, bx) = modules_box("notbusybox", &f.kernel, "[\"squashfs\"]", &format!("busybox = \"{}\"\n", f.sdboot));
    let err = fails(&bx);
    assert!(err.contains("has no /bin/busybox"), "{err}");
    // A BIOS loader whose image lacks the i386-pc files: the file and image are named.
    let bl = format!(
        "[{{ definition = \"kernels/systemd-boot-debian.toml\", image = \"{0}\" }}, {{ definition = \"kernels/grub-pc-debian.toml\", image = \"{0}\" }}]",
        f.sdboot
    );
    let (_d, bx) = modules_box_with("nopc", &f.kernel, "[\"squashfs\"]", &bb, &bl);
    let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("/usr/lib/grub/i386-pc/kernel.img") && err.contains("grub-pc-debian.toml"), "{err}");
    assert!(!bx.parent().unwrap().join("out/nopc.img").exists());
    // syslinux is no disk loader, and a BIOS loader alone boots no UEFI.
    let bl = format!(
        "[{{ definition = \"kernels/grub-pc-debian.toml\", image = \"{}\" }}, {{ definition = \"kernels/syslinux-debian.toml\", image = \"{}\" }}]",
        f.grub_pc, f.sdboot
    );
    let (_d, bx) = modules_box_with("pconly", &f.kernel, "[\"squashfs\"]", &bb, &bl);
    let err = fails(&bx);
    assert!(err.contains("pconly.toml:") && err.contains("i386-pc"), "{err}");
    // "all" is the only word load_modules takes.
    let (_d, bx) = modules_box("word", &f.kernel, "\"some\"", &bb);
    let err = fails(&bx);
    assert!(err.contains("word.toml:") && err.contains("\"all\""), "{err}");
}

/// `load_modules = "all"` with a box's own initrd: every module of the image goes in as one
/// more archive after it, with a `modules.dep` covering them all.
#[test]
fn all_modules_follow_the_box_initrd() {
    let f = fixture();
    let (d, bx) = modules_box("all", &f.kernel, "\"all\"", "initrd = [\"early.cpio\"]\n");
    let early = d.path().join("early");
    write(&early.join("hello"), "hi");
    run(Command::new("sh").arg("-c").arg(format!("cd '{}' && echo hello | cpio -o -H newc --quiet > ../early.cpio", early.display())));
    let out = d.path().join("out");
    build(&bx, &out, &f.cache);
    let initrd = esp_file(&out.join("all.img"), "/stagebox/initrd", d.path());
    let p = d.path().join("initrd");
    write(&p, &initrd);
    let x = d.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    // cpio reads one archive; the kernel reads them all: skip the box's (its exact size, padded).
    let first = std::fs::metadata(d.path().join("early.cpio")).unwrap().len().next_multiple_of(4) as usize;
    write(&d.path().join("second"), &initrd[first..]);
    run(Command::new("sh").arg("-c").arg(format!("cd '{}' && cpio -id --quiet < ../second", x.display())));
    let base = x.join(format!("lib/modules/{}", f.release));
    let dep = std::fs::read_to_string(base.join("modules.dep")).unwrap();
    let kdeb = f.kdeb.join(format!("lib/modules/{}", f.release));
    let n = std::fs::read_to_string(kdeb.join("modules.order")).unwrap().lines().filter(|l| kept(l)).count();
    assert_eq!(dep.lines().count(), n, "{dep}");
    assert!(base.join("kernel/fs/erofs/erofs.ko").is_file());
}

/// `bootloader = [systemd-boot, grub i386-pc]`: one disk that SeaBIOS boots (GRUB's boot.img
/// in the MBR, its core image in a BIOS boot partition, `EFI/BOOT/grub.cfg` on the ESP) and
/// OVMF boots (systemd-boot), both to the root's `/sbin/init`; sgdisk and fdisk read it.
#[test]
fn seabios_and_ovmf_boot_the_same_disk() {
    let f = fixture();
    let bl = format!(
        "[{{ definition = \"kernels/systemd-boot-debian.toml\", image = \"{}\" }}, {{ definition = \"kernels/grub-pc-debian.toml\", image = \"{}\" }}]",
        f.sdboot, f.grub_pc
    );
    let (d, bx) = modules_box_with("bios", &f.kernel, "[\"virtio_pci\", \"virtio_blk\", \"squashfs\"]", &format!("busybox = \"{}\"\n", f.busybox), &bl);
    let out = d.path().join("out");
    build(&bx, &out, &f.cache);
    let img = out.join("bios.img");
    let o = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(String::from_utf8_lossy(&o.stdout).contains("No problems found"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = run(Command::new("fdisk").arg("-l").arg(&img));
    let l = String::from_utf8_lossy(&o.stdout);
    assert!(l.contains("Disklabel type: gpt") && l.contains("BIOS boot") && l.contains("EFI System") && l.contains("Linux root (x86-64)"), "{l}");
    let cfg = String::from_utf8(esp_file(&img, "/EFI/BOOT/grub.cfg", d.path())).unwrap();
    assert!(cfg.contains("linux /stagebox/linux") && cfg.contains("initrd /stagebox/initrd"), "{cfg}");

    let console = seabios_virtio_boot(&img);
    assert!(console.contains(MARKER), "SeaBIOS did not boot the disk to its root:\n{console}");
    assert!(console.split("lsmod:").nth(1).unwrap_or_default().lines().any(|l| l.starts_with("virtio_blk")), "{console}");
    let console = ovmf_virtio_boot(&img, d.path());
    assert!(console.contains(MARKER), "OVMF did not boot the disk to its root:\n{console}");
}

/// The core image's payload (kernel.img laid out, modules, prefix) is what Debian's
/// grub-mkimage -O i386-pc embeds for the same modules and prefix (compared uncompressed:
/// the LZMA encoders differ), and the decompressor and diskboot.img around it are GRUB's
/// with only the sizes and the blocklist's start sector set.
#[test]
fn grub_pc_core_payload_is_what_grub_mkimage_embeds() {
    require_tools(&["grub-mkimage", "xz", "dpkg-deb"]);
    let d = tempdir();
    run(Command::new("dpkg-deb").arg("-x").arg(deb("grub-pc-bin")).arg(d.path()));
    let dir = d.path().join("usr/lib/grub/i386-pc");
    let wanted: Vec<String> = stagebox::boot::bootloader::GRUB_MODULES.iter().chain(&["biosdisk"]).map(|m| m.to_string()).collect();
    let prefix = "(,gpt1)/EFI/BOOT";
    let theirs = d.path().join("core.img");
    run(Command::new("grub-mkimage").args(["-O", "i386-pc", "-d"]).arg(&dir).args(["-p", prefix, "-o"]).arg(&theirs).args(&wanted));
    let theirs = read(&theirs);

    let moddep = std::fs::read_to_string(dir.join("moddep.lst")).unwrap();
    let mut modules = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if let Some(n) = p.file_name().unwrap().to_str().unwrap().strip_suffix(".mod") {
            modules.insert(n.to_string(), read(&p));
        }
    }
    let (kernel_img, dec, diskboot) = (read(&dir.join("kernel.img")), read(&dir.join("lzma_decompress.img")), read(&dir.join("diskboot.img")));
    let input = stagebox::emit::grub::pc::PcInput {
        dir: "i386-pc",
        kernel_img: &kernel_img,
        lzma_decompress: &dec,
        diskboot: &diskboot,
        modules: &modules,
        moddep: &moddep,
        wanted: &wanted,
        config: None,
        prefix,
    };
    let ours = stagebox::emit::grub::pc::core_image(&input, 34).unwrap();
    let payload = stagebox::emit::grub::pc::payload(&input).unwrap();

    // grub-mkimage's payload, decompressed by xz (raw LZMA1 with GRUB's parameters; GRUB
    // writes no end marker, so xz ends with an error after the data).
    let u32at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let (csize, usize_) = (u32at(&theirs, 512 + 8), u32at(&theirs, 512 + 12));
    assert_eq!(usize_, payload.len(), "uncompressed sizes differ");
    let packed = d.path().join("theirs.lzma");
    write(&packed, &theirs[512 + dec.len()..512 + dec.len() + csize]);
    let o = output(Command::new("xz").args(["-dc", "--format=raw", "--lzma1=lc=3,lp=0,pb=2,dict=64KiB"]).arg(&packed));
    assert!(o.stdout.len() >= payload.len(), "xz could not decompress grub-mkimage's core: {}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout[..payload.len()] == payload[..], "the core payload differs from grub-mkimage's");
    // Ours decompresses to the same payload too.
    let ocsize = u32at(&ours, 512 + 8);
    write(&packed, &ours[512 + dec.len()..512 + dec.len() + ocsize]);
    let o = output(Command::new("xz").args(["-dc", "--format=raw", "--lzma1=lc=3,lp=0,pb=2,dict=64KiB"]).arg(&packed));
    assert!(o.stdout.len() >= payload.len() && o.stdout[..payload.len()] == payload[..], "our core does not decompress to its payload: {}", String::from_utf8_lossy(&o.stderr));
    // Decompressor: GRUB's bytes but for the two size fields.
    let mut a = ours[512..512 + dec.len()].to_vec();
    let mut b = theirs[512..512 + dec.len()].to_vec();
    a[8..12].fill(0);
    b[8..12].fill(0);
    assert_eq!(a, b);
    // diskboot.img: the blocklist names sector 35 and the sectors after diskboot.img.
    assert_eq!(ours[..500], theirs[..500]);
    assert_eq!(u64::from_le_bytes(ours[500..508].try_into().unwrap()), 35);
    assert_eq!(u16::from_le_bytes([ours[508], ours[509]]) as usize, (ours.len() - 512) / 512);
}

/// `[output.initramfs]` with `load_modules`: the modules (dependencies from the image's own
/// `modules.dep`, which here adds crc7 to squashfs) as a second archive after the tree's,
/// which cpio reads.
#[test]
fn initramfs_carries_the_modules_after_the_tree() {
    let f = fixture();
    let d = tempdir();
    write(&d.path().join("rootfs/init"), busybox());
    let p = d.path().join("ird.toml");
    write(&p, format!("name = \"ird\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"{}\"\nload_modules = [\"squashfs\"]\n[output.initramfs]\n", f.listed));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path().join("rootfs/init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = d.path().join("out");
    build(&p, &out, &f.cache);
    let bytes = read(&out.join("ird.cpio"));
    // The tree's archive ends with its trailer (110-byte header + "TRAILER!!!\0", padded).
    let trailer = format!("070701{}00000001{}0000000B00000000TRAILER!!!", "0".repeat(32), "0".repeat(48));
    let t = bytes.windows(trailer.len()).position(|w| w == trailer.as_bytes()).expect("a trailer") + 124;
    let second = d.path().join("second.cpio");
    write(&second, &bytes[t..]);
    let x = d.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("sh").arg("-c").arg(format!("cd '{}' && cpio -id --quiet < '{}'", x.display(), second.display())));
    let base = x.join(format!("lib/modules/{}", f.release));
    let dep = std::fs::read_to_string(base.join("modules.dep")).unwrap();
    assert_eq!(dep, "kernel/lib/crc7.ko:\nkernel/fs/squashfs/squashfs.ko: kernel/lib/crc7.ko\n");
    assert_eq!(read(&base.join("kernel/lib/crc7.ko")), read(&f.kdeb.join(format!("lib/modules/{}/kernel/lib/crc7.ko", f.release))));
}

/// `modules_into = ["root"]`: the modules (and modules.dep) land in the box's tree, here
/// through its `lib -> usr/lib` symlink, which stays a symlink; GNU tar lists the `.tar`.
#[test]
fn modules_into_root_puts_them_in_the_tree() {
    let f = fixture();
    let d = tempdir();
    write(&d.path().join("rootfs/usr/lib/os-release"), "ID=test\n");
    std::os::unix::fs::symlink("usr/lib", d.path().join("rootfs/lib")).unwrap();
    let p = d.path().join("rt.toml");
    write(&p, format!("name = \"rt\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"{}\"\nload_modules = [\"virtio_blk\"]\nmodules_into = [\"root\"]\n[output.tar]\n", f.kernel));
    let out = d.path().join("out");
    build(&p, &out, &f.cache);
    let o = run(Command::new("tar").arg("-tvf").arg(out.join("rt.tar")));
    let list = String::from_utf8_lossy(&o.stdout);
    let base = format!("usr/lib/modules/{}", f.release);
    for m in ["kernel/drivers/block/virtio_blk.ko", "kernel/drivers/virtio/virtio_ring.ko", "modules.dep"] {
        assert!(list.lines().any(|l| l.ends_with(&format!("{base}/{m}"))), "{m} missing:\n{list}");
    }
    assert!(list.lines().any(|l| l.starts_with('l') && l.contains(" lib -> usr/lib")), "{list}");
    // Anything else is refused, naming the key.
    write(&p, format!("name = \"rt\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"{}\"\nload_modules = [\"virtio_blk\"]\nmodules_into = [\"disk\"]\n[output.tar]\n", f.kernel));
    let o = output(&mut stagebox(["build".as_ref(), p.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rt.toml:") && err.contains("\"disk\""), "{err}");
}
