//! Fixtures for tests/it/prove.rs (`build --check`, `diff`, SBOM and provenance): a box of an
//! umoci-built base image, a `dir` rootfs with busybox and an `/init`, and Debian's cloud
//! kernel, building tar, initramfs, OCI and EIF outputs.

use super::*;
use std::path::{Path, PathBuf};

pub const INIT: &str = "#!/bin/sh\necho stagebox-prove\n/bin/busybox poweroff -f\n";

/// Every output table of the multi-format box (`kernel_checks = "warn"`: Debian's kernel, a
/// test kernel, lacks what a Nitro enclave needs).
pub const ALL_OUTPUTS: &str = "[output.tar]\ncompression = \"gzip\"\n\n[output.initramfs]\ncompression = \"zstd\"\n\n[output.oci]\n\n[output.eif]\nkernel_checks = \"warn\"\n\n[output.sbom]\n\n[output.provenance]\n";

/// The images a box of the fixture refers to.
pub struct ProveImages {
    pub base: String,
    pub kernel: String,
}

/// Build the base image (core-filesystem) and the kernel image under `dir` (once per test
/// binary).
pub fn prove_images(dir: &Path) -> ProveImages {
    require_tools(&["umoci", "dpkg-deb"]);
    let base = umoci_image(&dir.join("base"), "base", &[("core-filesystem".into(), core_filesystem_layer())]);
    let klayer = cloud_kernel_layer(&dir.join("deb"));
    let kernel = umoci_image(&dir.join("kernel"), "kernel", &[("kernel".into(), klayer)]);
    ProveImages { base: format!("oci:{}@{base}", dir.join("base").display()), kernel: format!("oci:{}@{kernel}", dir.join("kernel").display()) }
}

/// A box dir `dir/name/` with a busybox rootfs (`/init`, `etc/app.conf` = `conf`, and
/// `extra` files), and the given output tables; returns the box file.
pub fn prove_box(dir: &Path, images: &ProveImages, name: &str, conf: &str, extra: &[(&str, &str)], outputs: &str) -> PathBuf {
    let d = dir.join(name);
    let rootfs = d.join("rootfs");
    write(&rootfs.join("bin/busybox"), busybox());
    write(&rootfs.join("init"), INIT);
    write(&rootfs.join("etc/app.conf"), conf);
    for (p, c) in extra {
        write(&rootfs.join(p), c);
    }
    use std::os::unix::fs::PermissionsExt;
    for p in ["bin/busybox", "init"] {
        std::fs::set_permissions(rootfs.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    if !rootfs.join("bin/sh").exists() {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        std::fs::hard_link(rootfs.join("etc/app.conf"), rootfs.join("etc/app.conf.link")).unwrap();
    }
    let box_file = d.join(format!("{name}.toml"));
    write(
        &box_file,
        format!(
            "name = \"{name}\"\nversion = \"1.0\"\n\n[[layer]]\nimage = \"{}\"\n\n[[layer]]\ndir = \"rootfs\"\n\n[kernel]\nimage = \"{}\"\ncmdline = \"console=ttyS0\"\n\n{outputs}",
            images.base, images.kernel
        ),
    );
    box_file
}
