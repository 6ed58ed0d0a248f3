//! A `platform = "linux/arm64"` box, outside QEMU: every image resolved for linux/arm64 (the
//! arm64 manifest picked from a multi-platform index; an index without arm64 refused, nothing
//! written), and every output saying arm64 in its own format's words, each read back by an
//! independent tool: the tar's busybox is an AArch64 ELF (bsdtar + the ELF header), the EIF's
//! header carries AWS's aarch64 flag and its PCRs recompute (Python's hashlib over the
//! header's own section table), `dpkg-deb --info` says `Architecture: arm64`, `rpm -qp`
//! says aarch64, the Arch and Alpine `.PKGINFO` say `arch = aarch64`, and skopeo reads the OCI
//! output as linux/arm64 (variant v8). The kernel comes from a definition with per-platform
//! pins. The box builds reproducibly under `--check`. The QEMU boots are tests/it/arm64_boot.rs's.
//!
//! Fixtures: tests/it/common/arm64.rs (Debian's arm64 packages as linux/arm64 OCI images).

use crate::common;

use common::arm64::{arm64_images, Arm64Images};
use common::eif_reader::py_read;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// nitro-cli's aarch64 command line (`blobs/aarch64/cmdline`), stagebox's default for arm64.
const AARCH64_CMDLINE: &str = "reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on root=/dev/ram0";

/// ELF `e_machine` of AArch64 and x86-64.
const EM_AARCH64: u16 = 183;
const EM_X86_64: u16 = 62;

struct Fixture {
    dir: PathBuf,
    images: Arm64Images,
    cache: PathBuf,
    /// The arm64 kernel file (Debian's `vmlinuz-*-arm64`, an uncompressed Image).
    image_bytes: Vec<u8>,
    /// The one box with every output, built once: its box file and out directory.
    box_file: PathBuf,
    out: PathBuf,
    built: Vec<Built>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["dpkg-deb", "python3", "bsdtar", "rpm", "skopeo"]);
        let dir = fixture_dir("arm64pkg");
        let images = arm64_images(&dir);
        let boot = dir.join("scratch/kernel-arm64/boot");
        let vmlinuz = std::fs::read_dir(&boot).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-")).unwrap();
        let image_bytes = read(&vmlinuz);
        let cache = dir.join("cache");
        // The kernel definition pins one image per platform; the amd64 one is never resolved
        // by an arm64 build.
        write(
            &dir.join("box/kernels/debian-cloud.toml"),
            format!(
                "name = \"debian-cloud\"\nconfig = \"/linux.config\"\n\n[platforms.\"linux/amd64\"]\nimage = \"stagex/user-linux-nitro@sha256:bafdb789183bf75f2c6eed5bbf08d1469ca17b19e7c1fedf8047cb1da4b90d38\"\n\n[platforms.\"linux/arm64\"]\nimage = \"{}\"\npath = \"/Image\"\n",
                images.kernel
            ),
        );
        let box_file = dir.join("box/edge.toml");
        write(
            &box_file,
            format!(
                "name = \"edge\"\nversion = \"1.0\"\nplatform = \"linux/arm64\"\n\n[[layer]]\nimage = \"{}\"\n\n[kernel]\ndefinition = \"kernels/debian-cloud.toml\"\n\n[output.tar]\n[output.oci]\n[output.eif]\nkernel_checks = \"warn\"\n\n[output.deb]\nlayers = [0]\npaths = [\"/init\"]\nmaintainer = \"Edge <edge@example.org>\"\n\n[output.rpm]\nlayers = [0]\npaths = [\"/init\"]\nlicense = \"MIT\"\n\n[output.arch]\nlayers = [0]\npaths = [\"/init\"]\n\n[output.apk]\nlayers = [0]\npaths = [\"/init\"]\n",
                images.multi
            ),
        );
        let out = dir.join("box/out");
        let built = build(&box_file, &out, &cache);
        Fixture { dir, images, cache, image_bytes, box_file, out, built }
    })
}

/// The one output of the built box whose file name ends with `suffix`.
fn out_file(suffix: &str) -> PathBuf {
    let f = fixture();
    let found: Vec<&Built> = f.built.iter().filter(|b| b.path.to_string_lossy().ends_with(suffix)).collect();
    assert_eq!(found.len(), 1, "outputs ending {suffix}: {:?}", f.built);
    found[0].path.clone()
}

fn elf_machine(elf: &[u8]) -> u16 {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([elf[18], elf[19]])
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

#[test]
fn the_arm64_manifest_is_picked_from_a_multi_platform_index() {
    let tar = out_file("edge.tar");
    let ours = run(Command::new("bsdtar").arg("-xOf").arg(&tar).arg("bin/busybox")).stdout;
    assert_eq!(elf_machine(&ours), EM_AARCH64, "the tar's busybox is not the arm64 one");
    // The amd64 manifest of the same index holds the x86-64 busybox: the pick mattered.
    assert_eq!(elf_machine(&busybox()), EM_X86_64);
    // The manifest records the arm64 manifest's digest as the pin of the index reference.
    let m = read_json(&fixture().out.join("manifest.json"));
    let inputs = m["inputs"].as_array().unwrap();
    let layer = inputs.iter().find(|i| i["ref"] == fixture().images.multi.as_str()).unwrap_or_else(|| panic!("{m}"));
    let arm64_manifest = fixture().images.rootfs.rsplit('@').next().unwrap();
    assert_eq!(layer["digest"], arm64_manifest, "{m}");
}

#[test]
fn eif_carries_the_aarch64_flag_the_arm64_image_and_recomputed_pcrs() {
    let f = fixture();
    let eif = out_file("edge.eif");
    let py = py_read(&eif, &f.dir.join("sections"));
    assert_eq!((py["magic"].as_str(), py["version"].as_u64()), (Some(".eif"), Some(4)));
    assert_eq!((py["flags"].as_u64(), py["arch"].as_str()), (Some(1), Some("aarch64")), "{py}");
    assert_eq!(py["crc_ok"], true, "{py}");
    assert_eq!(py["types"], serde_json::json!(["kernel", "cmdline", "metadata", "ramdisk"]));
    assert_eq!(py["cmdline"], AARCH64_CMDLINE, "nitro-cli's aarch64 default, not the x86_64 one");
    // The kernel section is the uncompressed arm64 Image, byte for byte.
    let kernel = read(&f.dir.join("sections/section-0-kernel"));
    assert!(kernel == f.image_bytes, "the kernel section is not the image's /Image");
    assert_eq!(&kernel[0x38..0x3c], b"ARM\x64");
    // PCRs: the independent reader, manifest.json and NAME.pcrs agree.
    let m = read_json(&f.out.join("manifest.json"));
    let rec = m["outputs"].as_array().unwrap().iter().find(|r| r["format"] == "eif").unwrap().clone();
    for k in ["PCR0", "PCR1", "PCR2"] {
        assert_eq!(rec["pcrs"][k], py[k], "{k}");
    }
    let pcrs = String::from_utf8(read(&f.out.join("edge.pcrs"))).unwrap();
    assert!(pcrs.starts_with(&format!("{} PCR0\n", py["PCR0"].as_str().unwrap())), "{pcrs}");
    // inspect shows the architecture, in JSON and in text, and the Image's release.
    let j: serde_json::Value = serde_json::from_slice(&run(&mut stagebox(["inspect".as_ref(), eif.as_os_str(), "--json".as_ref()])).stdout).unwrap();
    assert_eq!((j["header"]["arch"].as_str(), j["header"]["flags"].as_u64()), (Some("aarch64"), Some(1)), "{j}");
    assert_eq!(j["describe_eif"]["Measurements"]["PCR0"], py["PCR0"]);
    let text = stdout_of(&mut stagebox(["inspect".as_ref(), eif.as_os_str()]));
    assert!(text.contains("flags 0x0001 (aarch64)"), "{text}");
    assert!(text.contains("cloud-arm64"), "the metadata names the Image's release:\n{text}");
}

#[test]
fn packages_name_the_architecture_as_each_format_does() {
    let deb = out_file("_arm64.deb");
    let info = stdout_of(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(info.lines().any(|l| l.trim() == "Architecture: arm64"), "{info}");
    let rpm = out_file(".aarch64.rpm");
    let arch = stdout_of(Command::new("rpm").args(["-qp", "--qf", "%{ARCH}"]).arg(&rpm));
    assert_eq!(arch, "aarch64");
    let pkg = out_file("-aarch64.pkg.tar.zst");
    let pkginfo = stdout_of(Command::new("bsdtar").arg("-xOf").arg(&pkg).arg(".PKGINFO"));
    assert!(pkginfo.lines().any(|l| l == "arch = aarch64"), "{pkginfo}");
    // An apk is concatenated gzip streams; bsdtar reads the control stream's .PKGINFO.
    let apk = out_file(".apk");
    let pkginfo = stdout_of(Command::new("bsdtar").arg("-xOf").arg(&apk).arg(".PKGINFO"));
    assert!(pkginfo.lines().any(|l| l == "arch = aarch64"), "{pkginfo}");
}

#[test]
fn oci_output_says_linux_arm64() {
    let oci = out_file("edge.oci");
    let info: serde_json::Value = serde_json::from_str(&stdout_of(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:1.0", oci.display())))).unwrap();
    assert_eq!((info["Os"].as_str(), info["Architecture"].as_str()), (Some("linux"), Some("arm64")), "{info}");
    let config: serde_json::Value = serde_json::from_str(&stdout_of(Command::new("skopeo").args(["inspect", "--config"]).arg(format!("oci:{}:1.0", oci.display())))).unwrap();
    assert_eq!((config["architecture"].as_str(), config["variant"].as_str()), (Some("arm64"), Some("v8")), "{config}");
    let index = read_json(&oci.join("index.json"));
    assert_eq!(index["manifests"][0]["platform"], serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"}));
    // And stagebox itself resolves it for linux/arm64 (and refuses it for the default amd64).
    let r = format!("oci:{}:1.0", oci.display());
    let cache = fixture().dir.join("cache-readback");
    run(&mut stagebox(["inspect".as_ref(), r.as_ref(), "--platform".as_ref(), "linux/arm64".as_ref(), "--cache".as_ref(), cache.as_os_str()]));
}

#[test]
fn arm64_box_is_reproducible_under_check() {
    let f = fixture();
    let out = f.dir.join("box/out-check");
    let o = run(&mut stagebox(["build".as_ref(), f.box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "--check".as_ref()]));
    // --check publishes the same bytes as the plain build.
    let (a, b) = (hash_tree(&f.out), hash_tree(&out));
    assert_eq!(a, b, "{}", String::from_utf8_lossy(&o.stderr));
}

/// `stagebox build` of `box_file` that must fail with exit `code` (2: the box file or a pin is
/// wrong, 1: an input is) and leave `out` empty; returns stderr.
fn build_refused(box_file: &Path, out: &Path, code: i32) -> String {
    let o = output(&mut stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), fixture().cache.as_os_str()]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{err}");
    let left: Vec<_> = std::fs::read_dir(out).map(|r| r.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "a refused build left {left:?}");
    err
}

#[test]
fn an_index_without_arm64_is_refused_naming_the_image_and_its_platforms() {
    let f = fixture();
    let d = f.dir.join("amd64-only");
    let box_file = d.join("a.toml");
    write(&box_file, format!("name = \"a\"\nversion = \"1\"\nplatform = \"linux/arm64\"\n\n[[layer]]\nimage = \"{}\"\n\n[output.tar]\n", f.images.amd64_only));
    let err = build_refused(&box_file, &d.join("out"), 2);
    let digest = f.images.amd64_only.rsplit('@').next().unwrap();
    assert!(err.contains(digest) && err.contains("the index has no manifest for linux/arm64; it has: linux/amd64"), "{err}");
    assert!(err.contains("a.toml:"), "the error points into the box file: {err}");
}

#[test]
fn compressed_and_x86_kernels_are_refused_for_an_arm64_eif() {
    let f = fixture();
    let layout = Layout::create(&f.dir.join("bad-kernels"));
    let gz = layout.image(&[(&layer(&[Entry::file("Image", vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4])]), Comp::Gzip)], "arm64");
    layout.set_index(&[(gz.clone(), "gz")]);
    let d = f.dir.join("image-gz");
    let box_file = d.join("g.toml");
    write(
        &box_file,
        format!(
            "name = \"g\"\nversion = \"1\"\nplatform = \"linux/arm64\"\n\n[[layer]]\nimage = \"{}\"\n\n[kernel]\nimage = \"oci:{}@{}\"\npath = \"/Image\"\n\n[output.eif]\nkernel_checks = \"warn\"\n",
            f.images.rootfs,
            layout.dir.display(),
            digest_of(&gz)
        ),
    );
    let err = build_refused(&box_file, &d.join("out"), 1);
    assert!(err.contains("Image.gz") && err.contains("uncompressed arm64 Image"), "{err}");
    // A kernel definition without a pin for linux/arm64: named, with the platforms it has.
    write(&d.join("kernels/x86.toml"), "name = \"x86\"\n[platforms.\"linux/amd64\"]\nimage = \"stagex/user-linux-nitro@sha256:bafdb789183bf75f2c6eed5bbf08d1469ca17b19e7c1fedf8047cb1da4b90d38\"\n");
    let box_file = d.join("h.toml");
    write(&box_file, format!("name = \"h\"\nversion = \"1\"\nplatform = \"linux/arm64\"\n\n[[layer]]\nimage = \"{}\"\n\n[kernel]\ndefinition = \"kernels/x86.toml\"\n\n[output.eif]\n", f.images.rootfs));
    let err = build_refused(&box_file, &d.join("out-h"), 2);
    assert!(err.contains("x86.toml") && err.contains("no image for linux/arm64") && err.contains("it pins linux/amd64"), "{err}");
}
