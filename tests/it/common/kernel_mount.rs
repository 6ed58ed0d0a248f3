//! The Linux kernel as a reader of our file-system images: Debian's cloud kernel boots in
//! QEMU with an initramfs of busybox-static plus the kernel's own virtio and file-system
//! modules (from the same package), attaches the image as a virtio disk (`snapshot=on`),
//! mounts it read-only and runs a few shell commands whose output the test reads from the
//! serial console.

use super::*;

/// Virtio block modules, in dependency order (from each module's `depends=`).
const VIRTIO: [&str; 6] = [
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
];

/// Debian's cloud kernel and an initramfs of busybox-static, the given modules (paths under
/// the kernel's `kernel/` dir, without `.ko`, in load order) and an `/init` that mounts
/// /proc and /dev, loads them, runs `script` (busybox sh) and powers off. Returns the
/// kernel and the initramfs (uncompressed newc), made under `scratch`.
pub fn kernel_and_initrd(scratch: &Path, modules: &[&str], script: &str) -> (PathBuf, PathBuf) {
    kernel_and_initrd_from(&cloud_kernel_deb(), scratch, modules, script)
}

/// [`kernel_and_initrd`] with the kernel package `deb` (modules `.ko` or `.ko.xz`).
pub fn kernel_and_initrd_from(deb: &Path, scratch: &Path, modules: &[&str], script: &str) -> (PathBuf, PathBuf) {
    require_tools(&["dpkg-deb", "cpio", "xz"]);
    let kdir = scratch.join("kernel-deb");
    let _ = std::fs::remove_dir_all(&kdir);
    std::fs::create_dir_all(&kdir).unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&kdir));
    let kmods = std::fs::read_dir(kdir.join("lib/modules")).unwrap().next().unwrap().unwrap().path().join("kernel");
    let kernel = std::fs::read_dir(kdir.join("boot"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-"))
        .expect("a vmlinuz in the kernel package");

    let rd = scratch.join("initrd");
    let _ = std::fs::remove_dir_all(&rd);
    write(&rd.join("bin/busybox"), busybox());
    let mut init = String::from(
        "#!/bin/busybox sh\nexport PATH=/bin\n/bin/busybox --install -s /bin\nmkdir -p /proc /dev /mnt\nmount -t proc proc /proc\nmount -t devtmpfs dev /dev\n",
    );
    for m in modules {
        let name = m.rsplit('/').next().unwrap();
        let ko = kmods.join(format!("{m}.ko"));
        if ko.is_file() {
            std::fs::copy(&ko, rd.join(format!("{name}.ko"))).unwrap_or_else(|e| panic!("{m}.ko: {e}"));
        } else {
            let o = run(Command::new("xz").arg("-dc").arg(kmods.join(format!("{m}.ko.xz"))));
            write(&rd.join(format!("{name}.ko")), o.stdout);
        }
        init.push_str(&format!("insmod /{name}.ko\n"));
    }
    init.push_str(&format!("{script}\npoweroff -f\n"));
    write(&rd.join("init"), init);
    use std::os::unix::fs::PermissionsExt;
    for p in ["init", "bin/busybox"] {
        std::fs::set_permissions(rd.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let initrd = scratch.join("initrd.cpio");
    run(Command::new("sh").arg("-c").arg(format!("cd '{}' && find . | cpio -o -H newc --quiet > '{}'", rd.display(), initrd.display())));
    (kernel, initrd)
}

/// Boot, load `fs_modules` (after the virtio block modules), `mount -t FSTYPE -o ro /dev/vda
/// /mnt`, run `script`, power off; returns the console. `scratch` is a directory of the
/// caller's.
pub fn mount_and_run(scratch: &Path, image: &Path, fstype: &str, fs_modules: &[&str], script: &str) -> String {
    mount_and_run_from(&cloud_kernel_deb(), &VIRTIO, &[], scratch, image, fstype, fs_modules, script)
}

/// [`mount_and_run`] with the kernel package `deb`, whose virtio block modules (those not
/// built in) are `virtio`, and more QEMU arguments `qemu`. `no_timer_check`: on a loaded
/// host the emulated timer can look broken to the kernel, which then panics at boot.
#[allow(clippy::too_many_arguments)]
pub fn mount_and_run_from(deb: &Path, virtio: &[&str], qemu: &[&str], scratch: &Path, image: &Path, fstype: &str, fs_modules: &[&str], script: &str) -> String {
    require_tool("qemu-system-x86_64");
    let modules: Vec<&str> = virtio.iter().chain(fs_modules).copied().collect();
    let (kernel, initrd) = kernel_and_initrd_from(deb, scratch, &modules, &format!("sleep 1\nmount -t {fstype} -o ro /dev/vda /mnt || echo MOUNT-FAILED\n{script}"));
    let o = output(
        Command::new("timeout")
            .args(["120", "qemu-system-x86_64", "-nographic", "-no-reboot", "-m", "512"])
            .args(qemu)
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet no_timer_check", "-drive"])
            .arg(format!("file={},if=virtio,format=raw,snapshot=on", image.display())),
    );
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!console.contains("MOUNT-FAILED"), "the kernel could not mount {}:\n{console}", image.display());
    console
}
