//! Fixtures for the arm64 tests: Debian's arm64 packages (`apt-get download PKG:arm64`, after
//! `dpkg --add-architecture arm64`) made into OCI images whose configs and index entries say
//! linux/arm64, a busybox rootfs whose `/init` prints a marker with `uname -m`, and a
//! multi-platform index holding an amd64 and an arm64 manifest of the same rootfs.

use super::*;

/// What the arm64 `/init` prints on a good boot, computed by the shell so the text appears
/// nowhere in the image: `uname -m` must say aarch64.
pub const MARKER: &str = "stagebox-arm64: 42 aarch64";
pub const INIT: &str = "#!/bin/sh\n/bin/busybox mkdir -p /proc /sys\n/bin/busybox mount -t proc proc /proc\necho \"stagebox-arm64: $((6 * 7)) $(/bin/busybox uname -m)\"\n/bin/busybox poweroff -f\n";

/// `dpkg-deb --fsys-tarfile` of the arm64 build of `pkg`.
pub fn arm64_deb_layer(pkg: &str) -> Vec<u8> {
    require_tool("dpkg-deb");
    run(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb(&format!("{pkg}:arm64")))).stdout
}

/// The arm64 `/bin/busybox` of Debian's `busybox-static:arm64`.
pub fn arm64_busybox(scratch: &Path) -> Vec<u8> {
    let d = scratch.join("busybox-arm64");
    run(Command::new("dpkg-deb").arg("-x").arg(deb("busybox-static:arm64")).arg(&d));
    read(&d.join("bin/busybox"))
}

/// A layer holding Debian's arm64 cloud kernel as StageX's kernel images hold theirs: the
/// kernel file at `/Image` (Debian's `vmlinuz-*-arm64`) and `/linux.config`.
pub fn arm64_kernel_layer(scratch: &Path) -> Vec<u8> {
    let d = scratch.join("kernel-arm64");
    run(Command::new("dpkg-deb").arg("-x").arg(cloud_kernel_deb_for("arm64")).arg(&d));
    let boot = d.join("boot");
    let pick = |prefix: &str| -> Vec<u8> {
        let p = std::fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* in the arm64 kernel package"));
        read(&p)
    };
    layer(&[Entry::file("Image", pick("vmlinuz-")), Entry::file("linux.config", pick("config-"))])
}

/// A rootfs layer: `busybox` (for the architecture it was built for) at `/bin/busybox`,
/// `/bin/sh` linking to it, the marker-printing `/init`, and `/proc`.
pub fn marker_layer(busybox: Vec<u8>) -> Vec<u8> {
    layer(&[
        Entry::dir("bin"),
        Entry::file("bin/busybox", busybox).mode(0o755),
        Entry::symlink("bin/sh", "busybox"),
        Entry::file("init", INIT).mode(0o755),
        Entry::dir("proc"),
        Entry::dir("sys"),
    ])
}

/// Pinned references (`oci:DIR@sha256:…`) of the arm64 fixture images.
#[derive(Clone)]
pub struct Arm64Images {
    /// The layout directory all of them are in.
    pub layout: PathBuf,
    /// linux/arm64: `/Image` + `/linux.config` (Debian's arm64 cloud kernel).
    pub kernel: String,
    /// linux/arm64: Debian's `grub-efi-arm64-bin` (`/usr/lib/grub/arm64-efi`).
    pub grub: String,
    /// linux/arm64: the marker rootfs with arm64 busybox.
    pub rootfs: String,
    /// An index of two manifests of the marker rootfs, linux/amd64 (x86_64 busybox) and
    /// linux/arm64, as a multi-platform release is published.
    pub multi: String,
    /// An index holding only the linux/amd64 manifest.
    pub amd64_only: String,
}

/// Build the arm64 images under `dir/images` (a hand-written layout: umoci writes amd64
/// configs only).
pub fn arm64_images(dir: &Path) -> Arm64Images {
    require_tools(&["dpkg-deb", "apt-get"]);
    let scratch = dir.join("scratch");
    // dpkg-deb -x creates the last directory only.
    std::fs::create_dir_all(&scratch).unwrap();
    let l = Layout::create(&dir.join("images"));
    let kernel = l.image(&[(&arm64_kernel_layer(&scratch), Comp::Gzip)], "arm64");
    let grub = l.image(&[(&arm64_deb_layer("grub-efi-arm64-bin"), Comp::Gzip)], "arm64");
    let rootfs = l.image(&[(&marker_layer(arm64_busybox(&scratch)), Comp::Gzip)], "arm64");
    let rootfs_amd64 = l.image(&[(&marker_layer(busybox()), Comp::Gzip)], "amd64");
    let multi = l.index_blob(&[rootfs_amd64.clone(), rootfs.clone()]);
    let amd64_only = l.index_blob(&[rootfs_amd64]);
    l.set_index(&[(kernel.clone(), "kernel"), (grub.clone(), "grub"), (rootfs.clone(), "rootfs"), (multi.clone(), "multi"), (amd64_only.clone(), "amd64-only")]);
    let r = |d: &Desc| format!("oci:{}@{}", l.dir.display(), digest_of(d));
    Arm64Images { layout: l.dir.clone(), kernel: r(&kernel), grub: r(&grub), rootfs: r(&rootfs), multi: r(&multi), amd64_only: r(&amd64_only) }
}
