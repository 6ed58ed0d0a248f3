//! `[output.disk]`: a GPT disk image that OVMF boots through systemd-boot (or a GRUB core
//! image stagebox assembles from Debian's grub-efi-amd64-bin) into the box's kernel, whose early initramfs mounts the root partition. Debian's cloud kernel (EFI stub;
//! NVMe built in, squashfs and erofs as modules), Debian's systemd-boot-efi package and
//! busybox-static are made into images at test time. Independent readers: `sgdisk -v`/`-i`,
//! `fdisk -l`, `fsck.vfat -n` and `mdir` on the ESP, `unsquashfs`/`fsck.erofs` on the root
//! partition (compared with the `.tar` output); the disk built twice is identical.

use crate::common;

use common::fixture::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MARKER: &str = "disk-root-says: 42";

fn fixture() -> &'static DiskFixture {
    static F: OnceLock<DiskFixture> = OnceLock::new();
    F.get_or_init(|| {
        // The early initramfs: the file-system modules, then mount the root partition (NVMe
        // is built into this kernel) and show what is there.
        let script = "sleep 2\necho \"cmdline: $(cat /proc/cmdline)\"\nfs=squashfs; grep -q rootfstype=erofs /proc/cmdline && fs=erofs\nmount -t $fs -o ro /dev/nvme0n1p2 /mnt || echo MOUNT-FAILED\necho \"$(cat /mnt/etc/marker): $(($(cat /mnt/etc/n) * 6))\"";
        let tools = ["umoci", "sgdisk", "fdisk", "fsck.vfat", "mdir", "unsquashfs", "fsck.erofs", "qemu-system-x86_64"];
        disk_fixture("disk", &tools, &["fs/squashfs/squashfs", "lib/libcrc32c", "fs/erofs/erofs"], script)
    })
}

/// A disk box of busybox + a marker in a fresh directory, with `extra` in `[output.disk]`.
fn disk_box(name: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    disk_box_with(name, extra, "systemd-boot-debian", &fixture().sdboot)
}

/// [`disk_box`] with the bootloader definition `kernels/DEF.toml` and its image.
fn disk_box_with(name: &str, extra: &str, def: &str, image: &str) -> (tempfile::TempDir, PathBuf) {
    let f = fixture();
    let d = tempdir();
    let root = d.path().join("rootfs");
    write(&root.join("usr/bin/busybox"), busybox());
    write(&root.join("etc/marker"), "disk-root-says");
    write(&root.join("etc/n"), "7");
    std::os::unix::fs::symlink("busybox", root.join("usr/bin/sh")).unwrap();
    copy_definitions(d.path(), &[def]);
    std::fs::copy(&f.early, d.path().join("early.cpio")).unwrap();
    let p = d.path().join(format!("{name}.toml"));
    write(
        &p,
        format!(
            "name = \"{name}\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"{}\"\ncmdline = \"console=ttyS0 panic=-1\"\n[output.tar]\n[output.disk]\nbootloader = {{ definition = \"kernels/{def}.toml\", image = \"{image}\" }}\ninitrd = [\"early.cpio\"]\n{extra}",
            f.kernel
        ),
    );
    (d, p)
}

/// `sgdisk -i N IMG`: the partition's unique GUID (upper case, as sgdisk prints it).
fn partition_guid(img: &Path, n: u32) -> String {
    let o = run(Command::new("sgdisk").arg("-i").arg(n.to_string()).arg(img));
    let s = String::from_utf8_lossy(&o.stdout);
    s.lines().find_map(|l| l.strip_prefix("Partition unique GUID: ")).unwrap_or_else(|| panic!("{s}")).trim().to_string()
}

/// The bytes of partition `n` (from `sgdisk -i`), written to `to`.
fn cut_partition(img: &Path, n: u32, to: &Path) {
    let o = run(Command::new("sgdisk").arg("-i").arg(n.to_string()).arg(img));
    let s = String::from_utf8_lossy(&o.stdout);
    let sector = |k: &str| -> u64 { s.lines().find_map(|l| l.strip_prefix(k)).unwrap().split_whitespace().next().unwrap().parse().unwrap() };
    let (first, last) = (sector("First sector: "), sector("Last sector: "));
    let bytes = read(img);
    write(to, &bytes[(first * 512) as usize..((last + 1) * 512) as usize]);
}

/// QEMU's name for the image's format: qcow2 by its extension, else raw.
fn disk_format(img: &Path) -> &'static str {
    if img.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

fn ovmf_boot(img: &Path, scratch: &Path) -> String {
    let (code, v) = common::ovmf_with_vars(scratch);
    let t = std::time::Instant::now();
    let o = output(
        Command::new("timeout")
            .args(["240", "qemu-system-x86_64", "-nographic", "-no-reboot", "-m", "512", "-drive"])
            .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=1,file={}", v.display()))
            .arg("-drive")
            .arg(format!("file={},if=none,id=d0,format={},snapshot=on", img.display(), disk_format(img)))
            .args(["-device", "nvme,drive=d0,serial=stagebox"]),
    );
    eprintln!("booted {} in {:.1}s", img.display(), t.elapsed().as_secs_f64());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn ovmf_boots_it_and_the_kernel_mounts_the_root_partition_by_partuuid() {
    let (d, bx) = disk_box("boot", "");
    let out = d.path().join("out");
    build(&bx, &out, &fixture().cache);
    let img = out.join("boot.img");
    let console = ovmf_boot(&img, d.path());
    assert!(console.contains(MARKER), "the disk did not boot to the root partition:\n{console}");
    let root = partition_guid(&img, 2).to_lowercase();
    assert!(console.contains(&format!("root=PARTUUID={root} rootfstype=squashfs ro console=ttyS0 panic=-1")), "{console}");
}

/// GRUB as the disk's UEFI loader: the ESP holds the core image, `EFI/BOOT/grub.cfg`, kernel
/// and initrd; sgdisk and fsck.vfat accept it; OVMF boots it to the root partition.
#[test]
fn ovmf_boots_a_grub_disk() {
    let f = fixture();
    let (d, bx) = disk_box_with("grub", "", "grub-debian", &f.grub);
    let out = d.path().join("out");
    build(&bx, &out, &f.cache);
    let img = out.join("grub.img");
    let o = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(String::from_utf8_lossy(&o.stdout).contains("No problems found"), "{}", String::from_utf8_lossy(&o.stdout));
    let esp = d.path().join("esp.img");
    cut_partition(&img, 1, &esp);
    run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    let o = run(Command::new("mdir").args(["-/", "-b", "-i"]).arg(&esp).arg("::"));
    let listing = String::from_utf8_lossy(&o.stdout).to_lowercase();
    for p in ["::/efi/boot/bootx64.efi", "::/efi/boot/grub.cfg", "::/stagebox/linux", "::/stagebox/initrd"] {
        assert!(listing.lines().any(|l| l == p), "{p} missing from the ESP:\n{listing}");
    }
    let console = ovmf_boot(&img, d.path());
    assert!(console.contains(MARKER), "the GRUB disk did not boot to the root partition:\n{console}");
    let root = partition_guid(&img, 2).to_lowercase();
    assert!(console.contains(&format!("root=PARTUUID={root} rootfstype=squashfs ro console=ttyS0 panic=-1")), "{console}");
}

/// `qcow2 = true`: `NAME.qcow2` beside `NAME.img`, plain and zlib-compressed. qemu-img
/// checks it, reads it as qcow2 v3 and finds the same disk as the raw image; a second build
/// (other cache, threads, time zone) writes the same bytes; OVMF boots it like the raw image.
#[test]
fn qcow2_is_the_same_disk_and_boots() {
    require_tools(&["qemu-img"]);
    let f = fixture();
    for (name, extra) in [("q", "qcow2 = true\n"), ("qz", "qcow2 = true\nqcow2_compression = \"zlib\"\n")] {
        let (d, bx) = disk_box(name, extra);
        let out = d.path().join("out");
        build(&bx, &out, &f.cache);
        let (img, q) = (out.join(format!("{name}.img")), out.join(format!("{name}.qcow2")));
        let o = run(Command::new("qemu-img").args(["check", "--output=json"]).arg(&q));
        let check: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for k in ["check-errors", "corruptions", "leaks"] {
            assert_eq!(check[k].as_u64().unwrap_or(0), 0, "{name}: {k}: {check}");
        }
        assert!(check["allocated-clusters"].as_u64().unwrap() > 0, "{check}");
        let o = run(Command::new("qemu-img").args(["info", "--output=json"]).arg(&q));
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(info["format"], "qcow2", "{info}");
        assert_eq!(info["format-specific"]["data"]["compat"], "1.1", "{info}");
        assert_eq!(info["virtual-size"].as_u64(), Some(std::fs::metadata(&img).unwrap().len()), "{info}");
        // Sparse: zero clusters are not stored (the raw disk has at least 1 MiB of zeros).
        assert!(info["actual-size"].as_u64().unwrap() < std::fs::metadata(&img).unwrap().len(), "{info}");
        let o = run(Command::new("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(&q).arg(&img));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Images are identical"), "{name}: {}", String::from_utf8_lossy(&o.stdout));
        let again = d.path().join("again");
        let mut c = stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), again.as_os_str(), "--cache".as_ref(), d.path().join("c2").as_os_str(), "-q".as_ref(), "--threads".as_ref(), "3".as_ref()]);
        run(c.env("TZ", "America/St_Johns"));
        assert_eq!(sha256_file(&q), sha256_file(&again.join(format!("{name}.qcow2"))), "{name}.qcow2 differs between two builds");
        if name == "qz" {
            let plain = out.join("plain.qcow2");
            run(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&q).arg(&plain));
            assert!(std::fs::metadata(&q).unwrap().len() < std::fs::metadata(&plain).unwrap().len(), "zlib did not shrink the qcow2");
            let console = ovmf_boot(&q, d.path());
            assert!(console.contains(MARKER), "the zlib qcow2 did not boot to the root partition:\n{console}");
        }
    }
    // Compression without the image it applies to.
    let (_d, bx) = disk_box("qbad", "qcow2_compression = \"zlib\"\n");
    let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("qbad.toml:") && err.contains("qcow2 = true"), "{err}");
}

#[test]
fn independent_tools_read_the_partitions() {
    let (d, bx) = disk_box("parts", "compression = \"xz\"\n");
    let out = d.path().join("out");
    build(&bx, &out, &fixture().cache);
    let img = out.join("parts.img");
    assert_eq!(std::fs::metadata(&img).unwrap().len() % (1 << 20), 0);

    let o = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(String::from_utf8_lossy(&o.stdout).contains("No problems found"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = run(Command::new("fdisk").arg("-l").arg(&img));
    let l = String::from_utf8_lossy(&o.stdout);
    assert!(l.contains("Disklabel type: gpt") && l.contains("EFI System") && l.contains("Linux root (x86-64)"), "{l}");

    let esp = d.path().join("esp.img");
    cut_partition(&img, 1, &esp);
    run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    let o = run(Command::new("mdir").args(["-b", "-s", "-i"]).arg(&esp).arg("::/"));
    let listing = String::from_utf8_lossy(&o.stdout);
    for f in ["EFI/BOOT/BOOTX64.EFI", "loader/loader.conf", "loader/entries/stagebox.conf", "stagebox/linux", "stagebox/initrd"] {
        assert!(listing.to_lowercase().contains(&format!("::/{}", f.to_lowercase())), "{f} missing from the ESP:\n{listing}");
    }
    let entry = run(Command::new("mtype").arg("-i").arg(&esp).arg("::/loader/entries/stagebox.conf"));
    let entry = String::from_utf8_lossy(&entry.stdout);
    let root = partition_guid(&img, 2).to_lowercase();
    assert!(entry.contains(&format!("options root=PARTUUID={root} rootfstype=squashfs ro")), "{entry}");

    // inspect: the tables and a summary of each partition's file system.
    let o = run(&mut stagebox(["inspect".as_ref(), img.as_os_str()]));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("GPT: disk GUID") && t.contains("header CRC ok, array CRC ok") && t.contains("backup header at sector"), "{t}");
    assert!(t.contains("partition 1: FAT file system") && t.contains("partition 2: squashfs 4.0: xz compression"), "{t}");
    // inspect --files: the ESP's files (the same names mdir lists, with mtools' sizes) and the
    // root partition's tree.
    let o = run(&mut stagebox(["inspect".as_ref(), "--files".as_ref(), "--json".as_ref(), img.as_os_str()]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    let esp_files: Vec<String> = files.iter().filter(|e| e["type"] == "file").filter_map(|e| e["path"].as_str()?.strip_prefix("[partition 1] ").map(String::from)).collect();
    let mdir: Vec<String> = listing.lines().filter(|l| !l.trim_end().ends_with('/')).map(|l| l.trim().trim_start_matches("::").to_string()).collect();
    for f in &mdir {
        assert!(esp_files.iter().any(|p| p.eq_ignore_ascii_case(f)), "{f} (mdir) missing from inspect --files: {esp_files:?}");
    }
    let linux = files.iter().find(|e| e["path"].as_str().is_some_and(|p| p.eq_ignore_ascii_case("[partition 1] /stagebox/linux"))).expect("the kernel on the ESP");
    let mtype = run(Command::new("mtype").arg("-i").arg(&esp).arg("::/stagebox/linux")).stdout.len() as u64;
    assert_eq!(linux["size"].as_u64(), Some(mtype));
    assert!(files.iter().any(|e| e["path"] == "[partition 2] /etc/marker"), "the root partition's tree: {v}");

    // The root partition holds the tree the .tar output holds.
    let part = d.path().join("root.img");
    cut_partition(&img, 2, &part);
    let a = d.path().join("from-tar");
    gnu_tar_extract(&out.join("parts.tar"), &a);
    let b = d.path().join("from-root");
    run(Command::new("unsquashfs").args(["-no-progress", "-d"]).arg(&b).arg(&part));
    assert_same_tree("tar", &snapshot(&a), "root partition", &snapshot(&b));
}

#[test]
fn erofs_root_and_same_bytes_twice() {
    let (d, bx) = disk_box("ro", "root = \"erofs\"\n");
    let a = d.path().join("a");
    run(stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), a.as_os_str(), "--cache".as_ref(), fixture().cache.as_os_str(), "-q".as_ref()]).env("TZ", "UTC"));
    let b = d.path().join("b");
    let mut c = stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), b.as_os_str(), "--cache".as_ref(), d.path().join("c2").as_os_str(), "-q".as_ref(), "--threads".as_ref(), "3".as_ref()]);
    run(c.env("TZ", "America/St_Johns").env("LANG", "ja_JP.UTF-8").current_dir(d.path()));
    assert_eq!(sha256_file(&a.join("ro.img")), sha256_file(&b.join("ro.img")), "the disk differs between two builds");
    let part = d.path().join("root.erofs");
    cut_partition(&a.join("ro.img"), 2, &part);
    let o = run(Command::new("fsck.erofs").arg(&part));
    assert!(o.status.success());
}

#[test]
fn refusals_name_the_problem() {
    let f = fixture();
    // No bootloader of the UEFI kind.
    let (d, bx) = disk_box("nob", "");
    let text = std::fs::read_to_string(&bx).unwrap().replace("kernels/systemd-boot-debian.toml", "kernels/syslinux-debian.toml");
    std::fs::copy(manifest_dir().join("kernels/syslinux-debian.toml"), d.path().join("kernels/syslinux-debian.toml")).unwrap();
    write(&bx, text);
    let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("nob.toml:") && err.contains("systemd-boot"), "{err}");
    // A size smaller than the partitions.
    let (_d, bx) = disk_box("small", "size = 1048576\n");
    let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("too small"), "{err}");
    assert!(!bx.parent().unwrap().join("out/small.img").exists());
}

#[test]
fn diff_names_what_changed_in_disk_iso_and_squashfs_outputs() {
    let mut outs = Vec::new();
    for (k, marker) in [("a", "disk-root-says"), ("b", "disk-root-said!")] {
        let (d, bx) = disk_box("dif", "[output.iso]\n[output.squashfs]\n");
        write(&d.path().join("rootfs/etc/marker"), marker);
        let out = d.path().join(k);
        build(&bx, &out, &fixture().cache);
        outs.push((d, out));
    }
    let (a, b) = (&outs[0].1, &outs[1].1);
    let diff = |name: &str| {
        let o = output(&mut stagebox(["diff".as_ref(), a.join(name).as_os_str(), b.join(name).as_os_str()]));
        assert_eq!(o.status.code(), Some(1), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let t = diff("dif.img");
    assert!(t.contains("changed partition 2 bytes: sha256:") && t.contains("changed partition 2: /etc/marker: size: 14 -> 15"), "{t}");
    let t = diff("dif.iso");
    assert!(t.contains("changed /etc/marker: sha256:") || t.contains("changed etc/marker: sha256:"), "{t}");
    let t = diff("dif.squashfs");
    assert!(t.contains("/etc/marker: size: 14 -> 15"), "{t}");
    // Identical outputs: exit 0.
    let o = output(&mut stagebox(["diff".as_ref(), a.join("dif.img").as_os_str(), a.join("dif.img").as_os_str()]));
    assert_eq!(o.status.code(), Some(0));
}
