//! `[output.initramfs]` and `[kernel]` without booting: the cpio read back by GNU cpio and
//! bsdtar, its content against the tar output of the same box, every compression against the
//! real decompressors, reproducibility across host settings and thread counts, pinned digests
//! of a tiny fixture, prepended early archives, and the kernel checks (compression the
//! kernel unpacks, init present and executable, pinning). Boots are in tests/it/boot.rs.

use crate::common;

use common::fixture::*;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The standard fixture image (core-filesystem, Debian packages, edge-case layers) in an OCI
/// layout, shared by the tests of this binary.
fn fixture() -> &'static ImageFixture {
    static F: OnceLock<ImageFixture> = OnceLock::new();
    F.get_or_init(|| pallet_fixture("initramfs", &["umoci", "cpio", "bsdtar", "tar", "gzip", "zstd", "xz"]))
}

/// A box file of the fixture image with the given extra TOML, in a fresh directory.
fn fixture_box(name: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    image_box(&fixture().image, name, extra)
}

fn build_ok(box_file: &Path, out: &Path, cache: &Path) -> Vec<Built> {
    build(box_file, out, cache)
}

/// `stagebox build` that must fail with `code`; returns its stderr.
fn build_err(box_file: &Path, cache: &Path, code: i32) -> String {
    let out = box_file.parent().unwrap().join("out");
    let mut cmd = stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()]);
    let o = output(&mut cmd);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "expected exit {code}; stderr:\n{err}");
    err
}

/// GNU cpio's stderr with its "N blocks" summary removed.
fn cpio_warnings(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !(l.ends_with(" blocks") || l.ends_with(" block")) || l.contains(':'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn cpio_lists_cleanly_and_extracts_to_what_the_tar_holds() {
    let (d, box_file) = fixture_box("both", "[output.tar]\n[output.initramfs]\n");
    let out = d.path().join("out");
    let built = build_ok(&box_file, &out, &fixture().cache);
    assert_eq!(built.len(), 2, "{built:?}");
    let cpio = out.join("both.cpio");
    let tarf = out.join("both.tar");

    // GNU cpio and bsdtar list it with exit 0 and no warnings.
    let o = run(Command::new("cpio").args(["-itv", "-F"]).arg(&cpio));
    assert_eq!(cpio_warnings(&o.stderr), "", "cpio -itv warned");
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(listing.lines().next().unwrap().ends_with(" ."), "first entry is the root '.':\n{listing}");
    let o = run(Command::new("bsdtar").arg("-tvf").arg(&cpio));
    assert!(o.stderr.is_empty(), "bsdtar -tvf warned:\n{}", String::from_utf8_lossy(&o.stderr));

    // Both extracted with GNU tools: same paths, types, modes, owners, link targets,
    // contents and hardlink groups. newc has no room for xattrs: those are compared apart.
    let a = d.path().join("from-tar");
    gnu_tar_extract(&tarf, &a);
    let b = d.path().join("from-cpio");
    std::fs::create_dir_all(&b).unwrap();
    let o = run(Command::new("cpio").args(["-i", "-d", "-m", "--no-absolute-filenames", "-F"]).arg(&cpio).current_dir(&b));
    assert_eq!(cpio_warnings(&o.stderr), "", "cpio -i warned");
    let mut sa = snapshot(&a);
    let mut sb = snapshot(&b);
    let with_xattrs: Vec<String> = sa.iter().filter(|(_, n)| !n.xattrs.is_empty()).map(|(p, _)| p.clone()).collect();
    assert!(with_xattrs.iter().any(|p| p == "opt/xattr"), "the fixture has xattrs in the tar: {with_xattrs:?}");
    for n in sa.values_mut().chain(sb.values_mut()) {
        n.xattrs.clear();
    }
    assert!(sa.len() > 100, "fixture too small: {}", sa.len());
    assert_same_tree("tar", &sa, "cpio", &sb);

    // mtimes: clamped to SOURCE_DATE_EPOCH (1 by default) in both.
    for rel in ["opt/mtime-future", "opt/keep/a", "opt/big.bin"] {
        let ma = std::fs::symlink_metadata(a.join(rel)).unwrap().mtime();
        let mb = std::fs::symlink_metadata(b.join(rel)).unwrap().mtime();
        assert_eq!((ma, mb), (1, 1), "{rel}");
    }
    assert_eq!(std::fs::symlink_metadata(b.join("opt/mtime-zero")).unwrap().mtime(), 0);
}

#[test]
fn hardlink_groups_carry_data_once_on_the_last_path() {
    let (d, box_file) = fixture_box("links", "[output.initramfs]\n");
    let out = d.path().join("out");
    build_ok(&box_file, &out, &fixture().cache);
    let bytes = read(&out.join("links.cpio"));
    let (entries, end) = stagebox::emit::cpio::format::parse(&bytes).expect("parses");
    assert_eq!(end, bytes.len(), "nothing after the trailer");
    assert_eq!(bytes.len() % 4, 0);
    let names: Vec<&[u8]> = entries.iter().map(|e| e.name).collect();
    let mut sorted = names[1..].to_vec();
    sorted.sort();
    assert_eq!(names[0], b".");
    assert_eq!(names[1..], sorted[..], "bytewise order");
    // opt/hl/orig (replaced in layer B) and opt/hl/same-layer + opt/hl/cross-layer (version 1).
    let get = |n: &str| entries.iter().find(|e| e.name == n.as_bytes()).unwrap_or_else(|| panic!("{n} missing"));
    let (same, cross) = (get("opt/hl/same-layer"), get("opt/hl/cross-layer"));
    assert_eq!(same.header.ino, cross.header.ino);
    assert_eq!((same.header.nlink, cross.header.nlink), (2, 2));
    assert_eq!((cross.data, same.data), (&b""[..], &b"version 1\n"[..]), "data on the last path only");
    assert_ne!(get("opt/hl/orig").header.ino, same.header.ino);
    assert_eq!(get("opt/hl/orig").data, b"version 2\n");
    // Inode numbers are unique per inode and count from 1 in walk order.
    let mut seen = std::collections::BTreeMap::new();
    for e in &entries {
        seen.entry(e.header.ino).or_insert(e.name);
    }
    assert_eq!(*seen.keys().next().unwrap(), 1);
    assert_eq!(seen.len(), *seen.keys().last().unwrap() as usize, "inode numbers are dense");
    // Device nodes and the directory link count.
    let null = get("dev/null");
    assert_eq!((null.header.mode & 0o170000, null.header.rdevmajor, null.header.rdevminor), (0o020000, 1, 3));
    let loop0 = get("dev/loop0");
    assert_eq!((loop0.header.mode & 0o170000, loop0.header.rdevmajor), (0o060000, 7));
    let subdirs = entries.iter().filter(|e| e.header.mode & 0o170000 == 0o040000 && !e.name.contains(&b'/') && e.name != b".").count();
    assert_eq!(entries[0].header.nlink as usize, 2 + subdirs);
}

#[test]
fn every_compression_is_read_by_the_real_tools() {
    let f = fixture();
    let mut plain = None;
    for (c, tool, ext) in [("none", "", ""), ("gzip", "gzip", ".gz"), ("zstd", "zstd", ".zst"), ("xz", "xz", ".xz")] {
        let (d, box_file) = fixture_box("c", &format!("[output.initramfs]\ncompression = \"{c}\"\n"));
        let out = d.path().join("out");
        build_ok(&box_file, &out, &f.cache);
        let file = out.join(format!("c.cpio{ext}"));
        let m = read_json(&out.join("manifest.json"));
        assert_eq!(m["outputs"][0]["format"], "initramfs");
        assert_eq!(m["outputs"][0]["path"], format!("c.cpio{ext}"));
        assert_eq!(m["outputs"][0]["sha256"], sha256_file(&file));
        let data = if tool.is_empty() {
            read(&file)
        } else {
            run(Command::new(tool).arg("-t").arg(&file));
            run(Command::new(tool).arg("-dc").arg(&file)).stdout
        };
        if tool == "xz" {
            // The kernel's XZ decoder needs a CRC32 (or no) check.
            let l = String::from_utf8_lossy(&run(Command::new("xz").args(["--robot", "--list", "-vv"]).arg(&file)).stdout).into_owned();
            let checks: Vec<&str> = l.lines().filter(|x| x.starts_with("block")).map(|x| x.split('\t').nth(9).unwrap_or("")).collect();
            assert!(!checks.is_empty() && checks.iter().all(|c| *c == "CRC32"), "xz checks: {checks:?}\n{l}");
        }
        match &plain {
            None => plain = Some(data),
            Some(p) => assert!(p == &data, "{c}: decompresses to other bytes than the uncompressed cpio"),
        }
    }
}

/// Run `stagebox build` under a given umask, TZ, locale, working directory and thread count.
#[allow(clippy::too_many_arguments)] // each is one varied piece of host state, named at the call
fn build_with_env(box_file: &Path, out: &Path, cache: &Path, umask: &str, tz: &str, lang: &str, cwd: &Path, threads: &str) -> String {
    let bin = stagebox_bin();
    let script = format!(
        "umask {umask} && exec \"$0\" build \"$1\" --out \"$2\" --cache \"$3\" --threads {threads} -q",
    );
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(&bin)
        .arg(box_file)
        .arg(out)
        .arg(cache)
        .current_dir(cwd)
        .env("TZ", tz)
        .env("LANG", lang)
        .env("LC_ALL", lang)
        .env_remove("SOURCE_DATE_EPOCH"));
    let lines = parse_build_stdout(&o.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].sha256, sha256_file(&lines[0].path));
    lines[0].sha256.clone()
}

#[test]
fn same_bytes_whatever_the_host_settings_and_threads() {
    let f = fixture();
    for c in ["zstd", "gzip", "xz"] {
        let (d, box_file) = fixture_box("r", &format!("[output.initramfs]\ncompression = \"{c}\"\n"));
        let cwd2 = d.path().join("elsewhere");
        std::fs::create_dir_all(&cwd2).unwrap();
        let a = build_with_env(&box_file, &d.path().join("out-a"), &f.cache, "022", "UTC", "C", d.path(), "1");
        let b = build_with_env(&box_file, &d.path().join("out-b"), &d.path().join("other-cache"), "077", "Asia/Kolkata", "de_DE.UTF-8", &cwd2, "4");
        let c2 = build_with_env(&box_file, &d.path().join("out-c"), &f.cache, "002", "America/St_Johns", "C.UTF-8", d.path(), "2");
        assert_eq!(a, b, "{c}: umask/TZ/locale/cwd/threads changed the output");
        assert_eq!(a, c2, "{c}: 1 vs 2 threads changed the output");
    }
}

/// A tiny fixture for pinned digests: every entry type, a hardlink pair, special modes,
/// owners, an mtime beyond SOURCE_DATE_EPOCH. Written by hand, so nothing outside this file
/// changes it.
fn tiny_layer() -> Vec<u8> {
    layer(&[
        Entry::dir("bin"),
        Entry::file("bin/busybox", "#!/bin/busybox\necho not really busybox\n").mode(0o755),
        Entry::symlink("bin/sh", "busybox"),
        Entry::hardlink("bin/ash", "bin/busybox"),
        Entry::dir("dev"),
        Entry::char_dev("dev/console", 5, 1).mode(0o600),
        Entry::block_dev("dev/sda", 8, 0),
        Entry::fifo("dev/initctl").mode(0o600),
        Entry::dir("etc"),
        Entry::file("etc/hostname", "tiny\n").mtime(4_000_000_000),
        Entry::file("etc/shadow", "root:*:1::::::\n").mode(0o640).owner(0, 42),
        Entry::dir("home"),
        Entry::dir("home/user").mode(0o700).owner(1000, 1000),
        Entry::file("init", "#!/bin/sh\nexec /bin/sh\n").mode(0o755),
        Entry::dir("tmp").mode(0o1777),
        Entry::file("usr-bin-su", "setuid\n").mode(0o4755),
    ])
}

#[test]
fn pinned_digests_of_a_tiny_fixture() {
    let d = tempdir();
    let layout = d.path().join("layout");
    let digest = umoci_image(&layout, "tiny", &[("tiny".into(), tiny_layer())]);
    let cache = d.path().join("cache");
    let want_dump = "\
1 040755 7 0:0 1700000000 0 0,0 .
2 040755 2 0:0 1600000000 0 0,0 bin
3 100755 2 0:0 1600000000 0 0,0 bin/ash
3 100755 2 0:0 1600000000 39 0,0 bin/busybox
4 120777 1 0:0 1600000000 7 0,0 bin/sh -> busybox
5 040755 2 0:0 1600000000 0 0,0 dev
6 020600 1 0:0 1600000000 0 5,1 dev/console
7 010600 1 0:0 1600000000 0 0,0 dev/initctl
8 060660 1 0:0 1600000000 0 8,0 dev/sda
9 040755 2 0:0 1600000000 0 0,0 etc
10 100644 1 0:0 1700000000 5 0,0 etc/hostname
11 100640 1 0:42 1600000000 15 0,0 etc/shadow
12 040755 3 0:0 1600000000 0 0,0 home
13 040700 2 1000:1000 1600000000 0 0,0 home/user
14 100755 1 0:0 1600000000 23 0,0 init
15 041777 2 0:0 1600000000 0 0,0 tmp
16 104755 1 0:0 1600000000 7 0,0 usr-bin-su
";
    // Update if intentional: a change of the cpio layout, a compression level, block size or
    // backend (zstd, liblzma) version changes these, and every user's pinned digests with them.
    let pinned = [
        ("none", "", "7f8659d1b1e9d704303b9d8d7293055eb5e44e1f381598dfa782a1bed4fa5187"),
        ("gzip", ".gz", "27f6cab9f878e40f7f94dbac81c6d35780a39bc0d8ad9bdf1d26473119d7284c"),
        ("zstd", ".zst", "9dbe93657265ec5e3b24453c80f713d2273c0f3ba4d4c259f6854c9b7603485f"),
        ("xz", ".xz", "10cbeec72f2e95c7e2122dac71b48115501e6322c65ebbaaa61c5ccb5e62ccf3"),
    ];
    let mut got = Vec::new();
    for (c, ext, _) in pinned {
        let box_file = d.path().join(format!("tiny-{c}.toml"));
        write(&box_file, format!(
            "name = \"tiny\"\nsource_date_epoch = 1700000000\n[[layer]]\nimage = \"oci:layout@{digest}\"\n[output.initramfs]\ncompression = \"{c}\"\n"
        ));
        let out = d.path().join(format!("out-{c}"));
        let b = build_ok(&box_file, &out, &cache);
        if c == "none" {
            let dump = stagebox::emit::cpio::debug::dump(&read(&out.join("tiny.cpio")));
            assert!(dump.starts_with(want_dump), "the archive's layout changed:\n{dump}");
        }
        assert_eq!(b[0].path.file_name().unwrap().to_string_lossy(), format!("tiny.cpio{ext}"));
        got.push((c, b[0].sha256.clone()));
    }
    let mismatches: Vec<String> = pinned
        .iter()
        .zip(&got)
        .filter(|((_, _, want), (_, g))| want != g)
        .map(|((c, _, want), (_, g))| format!("{c}: pinned {want}, built {g}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "initramfs digests of the tiny fixture changed (update the pins if this is intentional):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn prepended_early_cpio_comes_first_as_is() {
    let f = fixture();
    let d = tempdir();
    // An early microcode archive as distributions make it, with GNU cpio.
    let early_root = d.path().join("early");
    write(&early_root.join("kernel/x86/microcode/GenuineIntel.bin"), b"\x01\x02\x03 microcode");
    let o = run(Command::new("sh")
        .arg("-c")
        .arg("find kernel | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet")
        .current_dir(&early_root));
    let early = o.stdout;
    write(&d.path().join("fw/early.cpio"), &early);
    let box_file = d.path().join("pre.toml");
    write(&box_file, format!(
        "name = \"pre\"\n[[layer]]\nimage = \"{}\"\n[output.initramfs]\ncompression = \"gzip\"\nprepend = [\"fw/early.cpio\"]\n",
        f.image
    ));
    let out = d.path().join("out");
    build_ok(&box_file, &out, &f.cache);
    let all = read(&out.join("pre.cpio.gz"));
    let pad = (4 - early.len() % 4) % 4;
    assert_eq!(&all[..early.len()], &early[..], "early archive first, byte for byte");
    assert!(all[early.len()..early.len() + pad].iter().all(|b| *b == 0));
    let rest = &all[early.len() + pad..];
    assert_eq!(&rest[..2], b"\x1f\x8b", "then the gzip-compressed main archive");
    let main = {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(rest), &mut v).unwrap();
        v
    };
    let (entries, _) = stagebox::emit::cpio::format::parse(&main).unwrap();
    assert!(entries.iter().any(|e| e.name == b"etc/os-release"));
    // GNU cpio reads the first archive of the concatenation, as the microcode loader does.
    let o = run(Command::new("cpio").args(["-it", "-F"]).arg(out.join("pre.cpio.gz")));
    assert!(String::from_utf8_lossy(&o.stdout).contains("kernel/x86/microcode/GenuineIntel.bin"));
    let m = read_json(&out.join("manifest.json"));
    let input = m["inputs"].as_array().unwrap().iter().find(|i| i["ref"] == "file:fw/early.cpio").expect("prepend recorded as an input");
    assert_eq!(input["digest"], format!("sha256:{}", sha256_hex(&early)));

    // Anything but an uncompressed newc archive is refused, with the box file's location.
    write(&d.path().join("fw/early.cpio"), b"\x1f\x8b\x08 not a cpio");
    let err = build_err(&box_file, &f.cache, 2);
    assert!(err.contains("pre.toml:") && err.contains("not an uncompressed newc cpio"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// [kernel]
// ---------------------------------------------------------------------------------------------

/// An OCI layout holding a stand-in kernel (`/bzImage`) and `config` as `/linux.config`.
fn kernel_image(dir: &Path, config: &str) -> String {
    let layout = dir.join("kernel-layout");
    umoci_image(
        &layout,
        "k",
        &[("kernel".into(), layer(&[Entry::file("bzImage", "stand-in kernel bytes\n"), Entry::file("linux.config", config)]))],
    )
}

const GZIP_ONLY: &str = "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\n# CONFIG_RD_XZ is not set\n";

/// A box with a busybox-like rootfs `layer` and an inline kernel from `kernel_ref`.
fn kernel_box(dir: &Path, rootfs: &[Entry], kernel_ref: &str, cmdline: &str, compression: &str) -> PathBuf {
    let layout = dir.join("root-layout");
    let _ = std::fs::remove_dir_all(&layout);
    let digest = umoci_image(&layout, "r", &[("root".into(), layer(rootfs))]);
    let p = dir.join("k.toml");
    write(&p, format!(
        "name = \"k\"\n[[layer]]\nimage = \"oci:root-layout@{digest}\"\n\n[kernel]\nimage = \"{kernel_ref}\"\ncmdline = \"{cmdline}\"\n\n[output.initramfs]\ncompression = \"{compression}\"\n"
    ));
    p
}

fn rootfs_ok() -> Vec<Entry> {
    vec![
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/busybox", "\x7fELF stand-in").mode(0o755),
        Entry::symlink("bin", "usr/bin"),
        Entry::symlink("usr/bin/sh", "busybox"),
        Entry::file("init", "#!/bin/sh\necho hello\n").mode(0o755),
        Entry::dir("sbin"),
        Entry::symlink("sbin/init", "../bin/busybox"),
    ]
}

#[test]
fn kernel_is_written_beside_the_initramfs_and_checked() {
    let d = tempdir();
    let cache = d.path().join("cache");
    let kd = kernel_image(d.path(), GZIP_ONLY);
    let kref = format!("oci:kernel-layout@{kd}");

    // A box the kernel can boot: kernel and cmdline written and recorded.
    let b = kernel_box(d.path(), &rootfs_ok(), &kref, "console=ttyS0 quiet", "gzip");
    let out = d.path().join("out");
    let built = build_ok(&b, &out, &cache);
    let names: Vec<String> = built.iter().map(|x| x.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["k.cpio.gz", "k.bzImage", "k.cmdline"]);
    assert_eq!(read(&out.join("k.bzImage")), b"stand-in kernel bytes\n");
    assert_eq!(read(&out.join("k.cmdline")), b"console=ttyS0 quiet\n");
    let m = read_json(&out.join("manifest.json"));
    let formats: Vec<&str> = m["outputs"].as_array().unwrap().iter().map(|o| o["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["initramfs", "kernel", "cmdline"]);
    assert!(m["inputs"].as_array().unwrap().iter().any(|i| i["ref"] == kref.as_str() && i["digest"] == kd.as_str()), "{m}");

    // rdinit= through symlinks (sbin/init -> ../bin/busybox, bin -> usr/bin) is found.
    let b = kernel_box(d.path(), &rootfs_ok(), &kref, "console=ttyS0 rdinit=/sbin/init", "none");
    build_ok(&b, &d.path().join("out2"), &cache);

    // The kernel has no zstd decompressor: refused, naming the config option and the box line.
    let b = kernel_box(d.path(), &rootfs_ok(), &kref, "console=ttyS0", "zstd");
    let err = build_err(&b, &cache, 2);
    assert!(err.contains("k.toml:") && err.contains("cannot unpack a zstd initramfs") && err.contains("CONFIG_RD_ZSTD is not set"), "{err}");
    assert!(err.contains("it unpacks: none, gzip"), "{err}");

    // No /init.
    let mut no_init = rootfs_ok();
    no_init.retain(|e| e.path != "init");
    let b = kernel_box(d.path(), &no_init, &kref, "console=ttyS0", "gzip");
    let err = build_err(&b, &cache, 2);
    assert!(err.contains("/init does not exist"), "{err}");

    // /init not executable.
    let mut not_exec = rootfs_ok();
    not_exec.retain(|e| e.path != "init");
    not_exec.push(Entry::file("init", "#!/bin/sh\n").mode(0o644));
    let b = kernel_box(d.path(), &not_exec, &kref, "console=ttyS0", "gzip");
    let err = build_err(&b, &cache, 2);
    assert!(err.contains("/init is not executable"), "{err}");

    // The script's interpreter is missing.
    let mut no_interp = rootfs_ok();
    no_interp.retain(|e| e.path != "init");
    no_interp.push(Entry::file("init", "#!/bin/bash -e\n").mode(0o755));
    let b = kernel_box(d.path(), &no_interp, &kref, "console=ttyS0", "gzip");
    let err = build_err(&b, &cache, 2);
    assert!(err.contains("interpreter /bin/bash") && err.contains("does not exist"), "{err}");

    // rdinit= naming a dangling symlink.
    let b = kernel_box(d.path(), &rootfs_ok(), &kref, "rdinit=/bin/nothing", "gzip");
    let err = build_err(&b, &cache, 2);
    assert!(err.contains("/bin/nothing") && err.contains("does not exist"), "{err}");
}

#[test]
fn kernel_without_initrd_support_is_refused() {
    let d = tempdir();
    let kd = kernel_image(d.path(), "# CONFIG_BLK_DEV_INITRD is not set\nCONFIG_RD_GZIP=y\n");
    let b = kernel_box(d.path(), &rootfs_ok(), &format!("oci:kernel-layout@{kd}"), "console=ttyS0", "none");
    let err = build_err(&b, &d.path().join("cache"), 2);
    assert!(err.contains("CONFIG_BLK_DEV_INITRD is not set") && err.contains("boots no initramfs"), "{err}");
}

#[test]
fn unpinned_kernel_needs_the_lock_file() {
    let d = tempdir();
    let cache = d.path().join("cache");
    let kd = kernel_image(d.path(), GZIP_ONLY);
    // A definition in a parent directory, with an unpinned reference (a tag).
    let kernels = d.path().join("kernels");
    write(&kernels.join("test.toml"), "name = \"test\"\nimage = \"oci:kernel-layout:k\"\ncmdline = \"console=ttyS0 from-definition\"\n");
    // kernel-layout is relative to the definition file: put the layout beside it.
    std::fs::rename(d.path().join("kernel-layout"), kernels.join("kernel-layout")).unwrap();
    let boxes = d.path().join("boxes");
    std::fs::create_dir_all(&boxes).unwrap();
    let b = kernel_box(&boxes, &rootfs_ok(), "unused", "", "gzip");
    let text = std::fs::read_to_string(&b).unwrap();
    let text = text.replace("image = \"unused\"\ncmdline = \"\"", "definition = \"kernels/test.toml\"");
    write(&b, &text);

    let err = build_err(&b, &cache, 2);
    assert!(err.contains("test.toml:2:") && err.contains("is not pinned") && err.contains("stagebox lock"), "{err}");

    let o = run(&mut stagebox(["lock".as_ref(), b.as_os_str(), "--cache".as_ref(), cache.as_os_str()]));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("{kd}  oci:kernel-layout:k")), "{}", String::from_utf8_lossy(&o.stdout));
    let out = boxes.join("out");
    build_ok(&b, &out, &cache);
    assert_eq!(read(&out.join("k.cmdline")), b"console=ttyS0 from-definition\n");
}

#[test]
fn shipped_definitions_are_pinned_to_a_stagex_release() {
    let d = tempdir();
    // The repository's own kernels/, used from a box beside it: pinned, so an offline build
    // with an empty store names the exact manifest it would fetch.
    let kernels = d.path().join("kernels");
    std::fs::create_dir_all(&kernels).unwrap();
    for k in ["generic", "airgap", "nitro"] {
        std::fs::copy(manifest_dir().join(format!("kernels/{k}.toml")), kernels.join(format!("{k}.toml"))).unwrap();
    }
    let b = kernel_box(d.path(), &rootfs_ok(), "unused", "", "gzip");
    let text = std::fs::read_to_string(&b).unwrap().replace("image = \"unused\"\ncmdline = \"\"", "definition = \"kernels/airgap.toml\"");
    write(&b, &text);
    let cache = d.path().join("cache");
    let o = output(&mut stagebox(["build".as_ref(), b.as_os_str(), "--offline".as_ref(), "--cache".as_ref(), cache.as_os_str()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--offline") && err.contains("manifest sha256:e0cac44490d74881ee86c27309b802ade27d7686ab8a99ab13f48cb1c6533979"), "{err}");
}
