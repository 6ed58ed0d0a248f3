//! Real boots: Debian's cloud kernel (from `apt-get download`, turned into an OCI image with
//! `/bzImage` and `/linux.config` like StageX's kernel images) and a busybox-static rootfs
//! with an `/init` script that prints a marker, built by `stagebox build` into an initramfs
//! and booted with `stagebox run --expect`, for every compression the kernel unpacks, with
//! BIOS and with UEFI. No KVM is needed: QEMU's TCG boots this in a few seconds.

use crate::common;

use common::fixture::*;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What `/init` prints, computed by the shell so the marker text itself appears nowhere in
/// the archive or on the kernel command line.
const MARKER: &str = "stagebox-boot: 42 ok";
const INIT: &str = "#!/bin/sh\n/bin/busybox mkdir -p /proc\n/bin/busybox mount -t proc proc /proc\necho \"cmdline: $(/bin/busybox cat /proc/cmdline)\"\necho \"stagebox-boot: $((6 * 7)) ok\"\n/bin/busybox poweroff -f\n";

/// The kernel image (`/bzImage` and `/linux.config`, as StageX's user-linux-* images).
fn fixture() -> &'static ImageFixture {
    static F: OnceLock<ImageFixture> = OnceLock::new();
    F.get_or_init(|| kernel_fixture("boot", &["qemu-system-x86_64", "umoci", "dpkg-deb"]))
}

/// Build a box of busybox + `/init` with the Debian kernel; returns the initramfs path.
fn build_box(name: &str, compression: &str) -> PathBuf {
    let f = fixture();
    let d = f.dir.join(name);
    let rootfs = d.join("rootfs");
    write(&rootfs.join("bin/busybox"), busybox());
    write(&rootfs.join("init"), INIT);
    make_executable(&rootfs, &["bin/busybox", "init"]);
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::create_dir_all(rootfs.join("proc")).unwrap();
    let box_file = d.join(format!("{name}.toml"));
    write(&box_file, format!(
        "name = \"{name}\"\n[[layer]]\ndir = \"rootfs\"\n\n[kernel]\nimage = \"{}\"\ncmdline = \"console=ttyS0 panic=-1\"\n\n[output.initramfs]\ncompression = \"{compression}\"\n",
        f.image
    ));
    let built = build(&box_file, &d.join("out"), &f.cache);
    let ext = match compression {
        "none" => "",
        "gzip" => ".gz",
        "zstd" => ".zst",
        "xz" => ".xz",
        c => panic!("{c}"),
    };
    let initrd = d.join("out").join(format!("{name}.cpio{ext}"));
    assert!(built.iter().any(|b| b.path == initrd), "{built:?}");
    initrd
}

/// `stagebox run INITRD --expect MARKER --timeout 120 [extra]`: must succeed; returns the console.
fn boot(initrd: &Path, extra: &[&str]) -> String {
    let mut cmd = stagebox(["run".as_ref(), initrd.as_os_str()]);
    cmd.args(["--expect", MARKER, "--timeout", "120"]).args(extra);
    let t = std::time::Instant::now();
    let o = run(&mut cmd);
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("booted {} {extra:?} in {:.1}s", initrd.display(), t.elapsed().as_secs_f64());
    assert!(console.contains(MARKER), "{console}");
    assert!(!console.contains("Initramfs unpacking failed"), "the kernel could not unpack it:\n{console}");
    if !extra.contains(&"quiet") {
        assert!(console.contains("Run /init as init process"), "{console}");
    }
    console
}

#[test]
fn boots_uncompressed() {
    boot(&build_box("none", "none"), &[]);
}

#[test]
fn boots_gzip() {
    let console = boot(&build_box("gzip", "gzip"), &[]);
    // The command line came from the box (via NAME.cmdline beside the initramfs).
    assert!(console.contains("cmdline: console=ttyS0 panic=-1"), "{console}");
}

#[test]
fn boots_zstd() {
    boot(&build_box("zstd", "zstd"), &[]);
}

#[test]
fn boots_xz() {
    boot(&build_box("xz", "xz"), &[]);
}

#[test]
fn boots_with_uefi_and_extra_cmdline() {
    let console = boot(&build_box("uefi", "gzip"), &["--uefi", "--append", "quiet"]);
    assert!(console.contains("cmdline: console=ttyS0 panic=-1 quiet"), "{console}");
}

#[test]
fn expect_times_out_with_the_console_tail() {
    let initrd = build_box("timeout", "gzip");
    let mut cmd = stagebox(["run".as_ref(), initrd.as_os_str()]);
    // An init that sleeps instead of printing the marker (arguments after `--` go to init):
    // the guest runs on, so the timeout fires however fast this machine boots the kernel. (A
    // kernel panic would end the run at once, naming the panic instead.)
    cmd.args(["--append", "rdinit=/bin/busybox -- sleep 600", "--expect", "a marker nobody prints", "--timeout", "5"]);
    let t = std::time::Instant::now();
    let o = output(&mut cmd);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(t.elapsed().as_secs() < 20, "QEMU was not stopped at the timeout");
    assert!(err.contains("timed out after 5s") && err.contains("console tail"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("[ ") && l.contains("] ")), "the tail shows the kernel's console messages:\n{err}");
}

#[test]
fn run_without_a_kernel_says_what_is_missing() {
    let d = tempdir();
    write(&d.path().join("x.cpio"), b"");
    let mut cmd = stagebox(["run".as_ref(), d.path().join("x.cpio").as_os_str()]);
    let o = output(&mut cmd);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no kernel") && err.contains("--kernel"), "{err}");
}
