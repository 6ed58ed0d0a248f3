//! `[output.squashfs]` read by independent implementations: squashfs-tools' `unsquashfs`
//! (listing, superblock, full extraction compared with GNU tar's extraction of the `.tar`
//! output of the same box: types, modes, owners, xattrs, link targets, contents, hardlink
//! groups, mtimes) for every compression, and the Linux kernel itself, which mounts the image
//! from a virtio disk in QEMU. Reproducible under the usual variations, with a pinned digest.

use crate::common;

use common::fixture::*;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn fixture() -> &'static ImageFixture {
    static F: OnceLock<ImageFixture> = OnceLock::new();
    F.get_or_init(|| pallet_fixture("squashfs", &["umoci", "unsquashfs", "tar"]))
}

fn fixture_box(name: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    image_box(&fixture().image, name, extra)
}

#[test]
fn unsquashfs_extracts_what_the_tar_holds_for_every_compression() {
    for c in ["gzip", "xz", "zstd"] {
        let (d, bx) = fixture_box("sq", &format!("[output.tar]\n[output.squashfs]\ncompression = \"{c}\"\n"));
        let out = d.path().join("out");
        build(&bx, &out, &fixture().cache);
        let img = out.join("sq.squashfs");
        assert_eq!(std::fs::metadata(&img).unwrap().len() % 4096, 0, "padded to 4 KiB");

        let o = run(Command::new("unsquashfs").arg("-s").arg(&img));
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains("SQUASHFS 4:0") && s.contains(&format!("Compression {c}")) && s.contains("Block size 131072"), "{s}");
        assert!(s.contains("Xattrs are compressed") || s.contains("Xattrs are stored"), "the fixture has xattrs: {s}");

        let a = d.path().join("from-tar");
        gnu_tar_extract(&out.join("sq.tar"), &a);
        let b = d.path().join("from-squashfs");
        let o = run(Command::new("unsquashfs").args(["-no-progress", "-d"]).arg(&b).arg(&img));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("rror"), "{}", String::from_utf8_lossy(&o.stderr));
        let (sa, sb) = (snapshot(&a), snapshot(&b));
        assert!(sa.len() > 100, "fixture too small: {}", sa.len());
        assert!(sa.values().any(|n| !n.xattrs.is_empty()), "the fixture has xattrs");
        assert_same_tree("tar", &sa, &format!("squashfs ({c})"), &sb);
        // mtimes: clamped to SOURCE_DATE_EPOCH (1) everywhere; GNU tar's own extraction
        // disturbs some directory times (opt/long), so compare files and links by name.
        let mb = mtimes(&b);
        assert!(mb.values().all(|&t| t == 0 || t == 1), "{c}: {mb:?}");
        for rel in ["opt/mtime-future", "opt/keep/a", "opt/big.bin", "opt/mtime-zero", "bin"] {
            assert_eq!(mtimes(&a)[rel], mb[rel], "{c}: mtime of {rel}");
        }
    }
}

#[test]
fn listing_shows_devices_links_and_owners() {
    let (d, bx) = fixture_box("ls", "[output.squashfs]\n");
    let out = d.path().join("out");
    build(&bx, &out, &fixture().cache);
    let o = run(Command::new("unsquashfs").args(["-lln", "-no-progress"]).arg(out.join("ls.squashfs")));
    let l = String::from_utf8_lossy(&o.stdout);
    let line = |suffix: &str| l.lines().find(|x| x.ends_with(suffix)).unwrap_or_else(|| panic!("no {suffix}:\n{l}")).to_string();
    assert!(line("squashfs-root/bin -> usr/bin").starts_with("lrwxrwxrwx 0/0"), "{l}");
    assert!(line("squashfs-root/home/user").starts_with("drwxr-x--- 1000/1000"), "{l}");
    assert!(l.lines().any(|x| x.starts_with('c') && x.contains("dev/")), "a character device: {l}");
    assert!(l.lines().any(|x| x.starts_with('b')), "a block device: {l}");
    assert!(l.lines().any(|x| x.starts_with('p')), "a fifo: {l}");
}

#[test]
fn same_bytes_under_host_variations_and_pinned_for_a_tiny_tree() {
    let (d, bx) = fixture_box("rep", "[output.squashfs]\ncompression = \"zstd\"\n");
    let a = d.path().join("a");
    let mut c1 = stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), a.as_os_str(), "--cache".as_ref(), fixture().cache.as_os_str(), "-q".as_ref(), "--threads".as_ref(), "1".as_ref()]);
    run(c1.env("TZ", "UTC").env("LANG", "C"));
    let b = d.path().join("b");
    let mut c2 = stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), b.as_os_str(), "--cache".as_ref(), d.path().join("cache2").as_os_str(), "-q".as_ref(), "--threads".as_ref(), "4".as_ref()]);
    let o = run(c2.env("TZ", "Pacific/Chatham").env("LANG", "de_DE.UTF-8").current_dir(d.path()));
    assert!(o.status.success());
    assert_eq!(sha256_file(&a.join("rep.squashfs")), sha256_file(&b.join("rep.squashfs")));

    // A tiny tree, pinned: update on purpose only (a format or compression change).
    let t = tempdir();
    let root = t.path().join("rootfs");
    write(&root.join("etc/hostname"), "stagebox\n");
    write(&root.join("usr/bin/tool"), "#!/bin/sh\necho hi\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let tiny = t.path().join("tiny.toml");
    write(&tiny, "name = \"tiny\"\n[[layer]]\ndir = \"rootfs\"\n[output.squashfs]\n");
    build(&tiny, &t.path().join("out"), &t.path().join("cache"));
    assert_eq!(
        sha256_file(&t.path().join("out/tiny.squashfs")),
        "f3baba0b9573cac3ebf1e363e30b6258b66a41c306bf33b2171824bcaaa8783c",
        "tiny.squashfs changed: update the pin only if the format change is intended"
    );
}

#[test]
fn an_xattr_squashfs_cannot_hold_is_refused_with_its_path() {
    let d = tempdir();
    let layout = d.path().join("layout");
    let l = layer(&[Entry::dir("opt"), Entry::file("opt/acl", "x").xattr("system.posix_acl_access", b"\x02\0\0\0")]);
    let digest = umoci_image(&layout, "x", &[("core-filesystem".into(), core_filesystem_layer()), ("acl".into(), l)]);
    let bx = d.path().join("x.toml");
    write(&bx, format!("name = \"x\"\n[[layer]]\nimage = \"oci:{}@{digest}\"\n[output.squashfs]\n", layout.display()));
    let out = d.path().join("out");
    let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), d.path().join("c").as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("opt/acl") && err.contains("system.posix_acl_access"), "{err}");
    assert!(!out.join("x.squashfs").exists());
}

/// Debian's cloud kernel mounts the image from a virtio disk and reads it.
#[test]
fn the_linux_kernel_mounts_it() {
    let f = fixture();
    // The image under test: the fixture plus a marker and a hardlink, zstd-compressed.
    let (d, bx) = fixture_box("root", "[[layer]]\ndir = \"extra\"\n[output.squashfs]\ncompression = \"zstd\"\n");
    write(&d.path().join("extra/marker"), "squashfs-root-says: 42\n");
    std::fs::hard_link(d.path().join("extra/marker"), d.path().join("extra/marker-link")).unwrap();
    build(&bx, &d.path().join("out"), &f.cache);
    let console = kernel_mount::mount_and_run(
        &f.dir.join("kernel"),
        &d.path().join("out/root.squashfs"),
        "squashfs",
        &["fs/squashfs/squashfs"],
        "cat /mnt/marker\necho \"links: $(stat -c %h /mnt/marker-link) xattr-dir: $(ls -d /mnt/opt/xattr-dir)\"",
    );
    assert!(console.contains("squashfs-root-says: 42"), "the kernel did not read the image:\n{console}");
    assert!(console.contains("links: 2 xattr-dir: /mnt/opt/xattr-dir"), "{console}");
    assert!(!console.contains("SQUASHFS error"), "{console}");
}

/// `unsquashfs -lln` as (type char, mode, uid/gid, path) rows; paths from the image root.
fn unsquashfs_rows(img: &std::path::Path) -> Vec<String> {
    let o = run(Command::new("unsquashfs").args(["-lln", "-no-progress"]).arg(img));
    let mut rows: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = l.split_once("squashfs-root")?.1.split(" -> ").next()?.to_string();
            Some(format!("{} {}", &f[0][..1], if path.is_empty() { "/".into() } else { path }))
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn inspect_lists_what_unsquashfs_lists_for_ours_and_mksquashfs_images() {
    require_tool("mksquashfs");
    let (d, bx) = fixture_box("insp", "[output.squashfs]\n[output.tar]\n");
    let out = d.path().join("out");
    build(&bx, &out, &fixture().cache);
    // mksquashfs's own image of the same tree (with fragments), for a reader it did not write.
    let root = d.path().join("root");
    gnu_tar_extract(&out.join("insp.tar"), &root);
    let theirs = d.path().join("theirs.squashfs");
    run(Command::new("mksquashfs").arg(&root).arg(&theirs).args(["-no-progress", "-quiet"]));
    for img in [out.join("insp.squashfs"), theirs] {
        let o = run(&mut stagebox(["inspect".as_ref(), img.as_os_str(), "--json".as_ref()]));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let kind = |t: &str| match t {
            "dir" => "d",
            "file" => "-",
            "symlink" => "l",
            "char" => "c",
            "block" => "b",
            "fifo" => "p",
            _ => "s",
        };
        let mut ours: Vec<String> = j["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {}", kind(e["type"].as_str().unwrap()), e["path"].as_str().unwrap()))
            .collect();
        ours.sort();
        assert!(ours.len() > 100, "{}", ours.len());
        assert_eq!(ours, unsquashfs_rows(&img), "{}", img.display());
    }
}

/// Identical contents are stored once (hardlinks aside): a tree with the same incompressible
/// 1 MiB in three files (two of them hardlinked) and a same-length different file takes
/// about two copies, not four, and unsquashfs reads every copy back.
#[test]
fn identical_contents_are_stored_once() {
    let t = tempdir();
    let root = t.path().join("rootfs");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut other = noise.clone();
    other[12345] ^= 1;
    write(&root.join("a/one"), &noise);
    write(&root.join("b/two"), &noise);
    std::fs::hard_link(root.join("b/two"), root.join("b/two-link")).unwrap();
    write(&root.join("c/three"), &noise);
    write(&root.join("c/other"), &other);
    let bx = t.path().join("dup.toml");
    write(&bx, "name = \"dup\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n[output.squashfs]\n");
    let out = t.path().join("out");
    build(&bx, &out, &t.path().join("cache"));
    let img = out.join("dup.squashfs");
    let size = std::fs::metadata(&img).unwrap().len();
    assert!(size < (2 << 20) + (64 << 10), "{size} bytes: duplicates were stored again");
    assert!(size > 2 << 20, "{size} bytes: the different file was taken for a duplicate");

    let a = t.path().join("from-tar");
    gnu_tar_extract(&out.join("dup.tar"), &a);
    let b = t.path().join("from-squashfs");
    run(Command::new("unsquashfs").args(["-no-progress", "-d"]).arg(&b).arg(&img));
    assert_same_tree("tar", &snapshot(&a), "squashfs", &snapshot(&b));
    for p in ["a/one", "b/two", "b/two-link", "c/three"] {
        assert_eq!(std::fs::read(b.join(p)).unwrap(), noise, "{p}");
    }
    assert_eq!(std::fs::read(b.join("c/other")).unwrap(), other);
}
