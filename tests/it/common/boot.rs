//! Fixtures for the bootable ISO tests (`tests/it/iso_boot.rs`): the Debian cloud kernel, the
//! syslinux, GRUB (`grub-efi-amd64-bin`) and systemd-boot packages as OCI images, a busybox rootfs whose `/init` prints a
//! marker, and box files that put them together with the definitions in `kernels/`.

use super::*;

/// What `/init` prints, computed by the shell so the text itself appears nowhere in the image.
pub const MARKER: &str = "stagebox-iso: 42 ok";
pub const INIT: &str = "#!/bin/sh\n/bin/busybox mkdir -p /proc\n/bin/busybox mount -t proc proc /proc\necho \"stagebox-iso: $((6 * 7)) ok\"\n/bin/busybox poweroff -f\n";

/// Pinned references (`oci:DIR@sha256:…`) of the images a bootable box needs.
#[derive(Clone)]
pub struct BootImages {
    pub kernel: String,
    pub syslinux: String,
    pub systemd_boot: String,
    pub grub: String,
}

/// Build the three images under `dir` (kernel: `/bzImage` + `/linux.config` like StageX's
/// kernels; syslinux: Debian's `isolinux` + `syslinux-common`; systemd-boot:
/// `systemd-boot-efi`).
pub fn boot_images(dir: &Path) -> BootImages {
    require_tools(&["umoci", "dpkg-deb"]);
    let klayer = cloud_kernel_layer(&dir.join("deb"));
    let layout = dir.join("images");
    let k = umoci_image(&layout, "kernel", &[("kernel".into(), klayer)]);
    let s = umoci_image(&layout, "syslinux", &[("isolinux".into(), deb_layer("isolinux")), ("syslinux-common".into(), deb_layer("syslinux-common"))]);
    let e = umoci_image(&layout, "systemd-boot", &[("systemd-boot-efi".into(), deb_layer("systemd-boot-efi"))]);
    let g = umoci_image(&layout, "grub", &[("grub-efi-amd64-bin".into(), deb_layer("grub-efi-amd64-bin"))]);
    let r = |d: &str| format!("oci:{}@{d}", layout.display());
    BootImages { kernel: r(&k), syslinux: r(&s), systemd_boot: r(&e), grub: r(&g) }
}

/// A busybox rootfs with the marker-printing `/init` under `dir/rootfs`.
pub fn marker_rootfs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let rootfs = dir.join("rootfs");
    write(&rootfs.join("bin/busybox"), busybox());
    write(&rootfs.join("init"), INIT);
    for p in ["bin/busybox", "init"] {
        std::fs::set_permissions(rootfs.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _ = std::fs::remove_file(rootfs.join("bin/sh"));
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::create_dir_all(rootfs.join("proc")).unwrap();
}

/// The definition file `kernels/NAME.toml` of this repository.
pub fn definition(name: &str) -> String {
    manifest_dir().join("kernels").join(format!("{name}.toml")).display().to_string()
}

/// A box file `dir/NAME.toml`: the marker rootfs, the kernel, and `[output.iso]` with
/// `iso_keys` (e.g. the `bootloader` list from [`both_bootloaders`]).
pub fn iso_box(dir: &Path, name: &str, img: &BootImages, iso_keys: &str) -> PathBuf {
    marker_rootfs(dir);
    let f = dir.join(format!("{name}.toml"));
    write(
        &f,
        format!(
            "name = \"{name}\"\nsource_date_epoch = 1700000000\n[[layer]]\ndir = \"rootfs\"\n\n[kernel]\nimage = \"{}\"\ncmdline = \"console=ttyS0 panic=-1\"\n\n[output.iso]\n{iso_keys}\n",
            img.kernel
        ),
    );
    f
}

/// `bootloader = [...]`: Debian's syslinux for BIOS and systemd-boot for UEFI.
pub fn both_bootloaders(img: &BootImages) -> String {
    format!(
        "bootloader = [\n  {{ definition = \"{}\", image = \"{}\" }},\n  {{ definition = \"{}\", image = \"{}\" }},\n]\nserial = true",
        definition("syslinux-debian"),
        img.syslinux,
        definition("systemd-boot-debian"),
        img.systemd_boot
    )
}

/// `bootloader = [...]`: Debian's syslinux for BIOS and GRUB (`grub-efi-amd64-bin`, through
/// `kernels/grub-debian.toml`) for UEFI: the layout of StageX's pins in `boxes/airgap.toml`.
pub fn syslinux_and_grub(img: &BootImages) -> String {
    format!(
        "bootloader = [\n  {{ definition = \"{}\", image = \"{}\" }},\n  {{ definition = \"{}\", image = \"{}\" }},\n]\nserial = true",
        definition("syslinux-debian"),
        img.syslinux,
        definition("grub-debian"),
        img.grub
    )
}

/// Cut bytes `[offset, offset + len)` of `file` into `dst`.
pub fn cut(file: &Path, offset: u64, len: u64, dst: &Path) {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v).unwrap();
    write(dst, v);
}
