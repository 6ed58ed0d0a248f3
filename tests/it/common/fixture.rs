//! The fixture set-up the test files share: one image (the standard pallet image, or Debian's
//! cloud kernel) with a store beside it, the kernel and EFI bootloader images a disk box
//! needs, and the small steps of writing a box directory (executables, kernel definitions).
//!
//! Each test file keeps its own `fn fixture()` behind a `OnceLock` and asks for these by
//! name; the directories, tags and layers are the ones each file used to write out itself, so
//! the images (and every digest pinned from them) are byte-identical.

use super::*;

/// `oci:LAYOUT@sha256:…` of the image `layout:tag` that [`umoci_image`] adds.
pub fn oci_image(layout: &Path, tag: &str, layers: &[(String, Vec<u8>)]) -> String {
    let digest = umoci_image(layout, tag, layers);
    format!("oci:{}@{digest}", layout.display())
}

/// One image and a store, in the fixture directory of a test binary.
pub struct ImageFixture {
    /// `oci:DIR@sha256:…` of the image.
    pub image: String,
    /// The store (`--cache`) every build of the binary shares.
    pub cache: PathBuf,
    /// The fixture directory, for scratch space.
    pub dir: PathBuf,
}

/// The standard fixture image ([`pallet_image`]) in `fixture_dir(name)`, after checking that
/// `tools` are installed.
pub fn pallet_fixture(name: &str, tools: &[&str]) -> ImageFixture {
    require_tools(tools);
    let (image, dir) = pallet_image(name);
    ImageFixture { image, cache: dir.join("cache"), dir }
}

/// Debian's cloud kernel as an image like StageX's kernels (`/bzImage`, `/linux.config`):
/// layout `dir/kernel`, tag `debian-cloud`, the package unpacked under `dir/deb`.
pub fn cloud_kernel_image(dir: &Path) -> String {
    oci_image(&dir.join("kernel"), "debian-cloud", &[("kernel".into(), cloud_kernel_layer(&dir.join("deb")))])
}

/// [`cloud_kernel_image`] in `fixture_dir(name)`, after checking that `tools` are installed.
pub fn kernel_fixture(name: &str, tools: &[&str]) -> ImageFixture {
    require_tools(tools);
    let dir = fixture_dir(name);
    ImageFixture { image: cloud_kernel_image(&dir), cache: dir.join("cache"), dir }
}

/// The images a UEFI disk box boots from, each `oci:DIR@sha256:…` in its own layout.
pub struct DiskImages {
    /// Debian's cloud kernel (`/bzImage`, `/linux.config`).
    pub kernel: String,
    /// `systemd-boot-efi`.
    pub sdboot: String,
    /// `grub-efi-amd64-bin`.
    pub grub: String,
    /// The store every build of the binary shares.
    pub cache: PathBuf,
    /// The fixture directory, for scratch space.
    pub dir: PathBuf,
}

/// [`DiskImages`] and the early initrd the disk boxes carry (the cloud kernel's `modules`,
/// busybox and an `/init` running `script`: `kernel_mount::kernel_and_initrd`, under `early`);
/// the images' fields read through it (`f.kernel`, `f.cache`, ...).
pub struct DiskFixture {
    pub images: DiskImages,
    pub early: PathBuf,
}

impl std::ops::Deref for DiskFixture {
    type Target = DiskImages;
    fn deref(&self) -> &DiskImages {
        &self.images
    }
}

/// [`disk_images`] plus the early initrd of [`DiskFixture`].
pub fn disk_fixture(name: &str, tools: &[&str], modules: &[&str], script: &str) -> DiskFixture {
    let images = disk_images(name, tools);
    let (_, early) = kernel_mount::kernel_and_initrd(&images.dir.join("early"), modules, script);
    DiskFixture { images, early }
}

/// [`DiskImages`] in `fixture_dir(name)` (layouts `kernel`, `sdboot`, `grub`; the kernel
/// package unpacked under `kdeb`), after checking that `tools` are installed.
pub fn disk_images(name: &str, tools: &[&str]) -> DiskImages {
    require_tools(tools);
    let dir = fixture_dir(name);
    DiskImages {
        kernel: oci_image(&dir.join("kernel"), "k", &[("kernel".into(), cloud_kernel_layer(&dir.join("kdeb")))]),
        sdboot: oci_image(&dir.join("sdboot"), "s", &[("systemd-boot-efi".into(), deb_layer("systemd-boot-efi"))]),
        grub: oci_image(&dir.join("grub"), "g", &[("grub-efi-amd64-bin".into(), deb_layer("grub-efi-amd64-bin"))]),
        cache: dir.join("cache"),
        dir,
    }
}

/// Make `root/P` executable (mode 0755) for each `P` of `paths`.
pub fn make_executable(root: &Path, paths: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    for p in paths {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Copy this repository's `kernels/DEF.toml` to `dir/kernels/DEF.toml` for each `DEF` of
/// `defs`, so a box in `dir` names it `kernels/DEF.toml`.
pub fn copy_definitions(dir: &Path, defs: &[&str]) {
    std::fs::create_dir_all(dir.join("kernels")).unwrap();
    for def in defs {
        std::fs::copy(manifest_dir().join(format!("kernels/{def}.toml")), dir.join(format!("kernels/{def}.toml"))).unwrap();
    }
}
