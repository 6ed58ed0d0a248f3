//! `[output.erofs]` read by independent implementations: erofs-utils' `fsck.erofs` (checks
//! every inode and extracts; compared with GNU tar's extraction of the `.tar` output of the
//! same box), `dump.erofs` (superblock, one inode's xattrs and link count), and the Linux
//! kernel mounting the image from a virtio disk in QEMU. Reproducible, with a pinned digest.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

struct Fixture {
    image: String,
    cache: PathBuf,
    dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["umoci", "fsck.erofs", "dump.erofs", "tar"]);
        let (image, dir) = pallet_image("erofs");
        Fixture { image, cache: dir.join("cache"), dir }
    })
}

fn fixture_box(name: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    image_box(&fixture().image, name, extra)
}

#[test]
fn fsck_erofs_accepts_and_extracts_what_the_tar_holds() {
    let (d, bx) = fixture_box("ro", "[output.tar]\n[output.erofs]\n");
    let out = d.path().join("out");
    build(&bx, &out, &fixture().cache);
    let img = out.join("ro.erofs");
    assert_eq!(std::fs::metadata(&img).unwrap().len() % 4096, 0);
    let o = run(Command::new("fsck.erofs").arg(&img));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let a = d.path().join("from-tar");
    gnu_tar_extract(&out.join("ro.tar"), &a);
    let b = d.path().join("from-erofs");
    run(Command::new("fsck.erofs").arg(format!("--extract={}", b.display())).arg("--preserve").arg(&img));
    let (mut sa, mut sb) = (snapshot(&a), snapshot(&b));
    assert!(sa.len() > 100, "fixture too small: {}", sa.len());
    let linked: Vec<String> = sa.iter().filter(|(_, n)| n.link_group.is_some()).map(|(p, _)| p.clone()).collect();
    assert!(!linked.is_empty(), "the fixture has hardlinks");
    // erofs-utils 1.5 extracts neither xattrs nor hardlinks (each path gets its own copy),
    // and its --preserve chowns after chmod, which clears setuid/setgid: those are checked
    // below with dump.erofs and by the kernel.
    for n in sa.values_mut().chain(sb.values_mut()) {
        n.xattrs.clear();
        n.link_group = None;
        n.mode &= 0o1777;
    }
    assert_same_tree("tar", &sa, "erofs", &sb);
    let mb = mtimes(&b);
    for rel in ["opt/mtime-future", "opt/keep/a", "opt/big.bin", "opt/mtime-zero"] {
        assert_eq!(mtimes(&a)[rel], mb[rel], "mtime of {rel}");
    }

    // dump.erofs: the superblock, and an inode with xattrs and a hardlinked one.
    let o = run(Command::new("dump.erofs").arg("-s").arg(&img));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("Filesystem magic number:                      0xE0F5E1E2"), "{s}");
    let o = run(Command::new("dump.erofs").arg("--path=/opt/xattr").arg(&img));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("Xattr size: ") && !s.contains("Xattr size: 0"), "{s}");
    for p in &linked {
        let o = run(Command::new("dump.erofs").arg(format!("--path=/{p}")).arg(&img));
        let s = String::from_utf8_lossy(&o.stdout);
        let n = linked.iter().filter(|q| sa_groups(&a, q) == sa_groups(&a, p)).count();
        assert!(s.contains(&format!("Links: {n} ")), "{p} is one of {n} links: {s}");
    }
}

/// The inode number of `rel` under `root` (paths with the same one are hardlinks).
fn sa_groups(root: &std::path::Path, rel: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(root.join(rel)).unwrap().ino()
}

#[test]
fn same_bytes_under_host_variations_and_pinned_for_a_tiny_tree() {
    let (d, bx) = fixture_box("rep", "[output.erofs]\n");
    let a = d.path().join("a");
    run(stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), a.as_os_str(), "--cache".as_ref(), fixture().cache.as_os_str(), "-q".as_ref()])
        .env("TZ", "UTC"));
    let b = d.path().join("b");
    let mut c = stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), b.as_os_str(), "--cache".as_ref(), d.path().join("cache2").as_os_str(), "-q".as_ref(), "--threads".as_ref(), "3".as_ref()]);
    run(c.env("TZ", "Asia/Kolkata").env("LANG", "fr_FR.UTF-8").current_dir(d.path()));
    assert_eq!(sha256_file(&a.join("rep.erofs")), sha256_file(&b.join("rep.erofs")));

    let t = tempdir();
    let root = t.path().join("rootfs");
    write(&root.join("etc/hostname"), "stagebox\n");
    write(&root.join("usr/bin/tool"), "#!/bin/sh\necho hi\n");
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let tiny = t.path().join("tiny.toml");
    write(&tiny, "name = \"tiny\"\n[[layer]]\ndir = \"rootfs\"\n[output.erofs]\n");
    build(&tiny, &t.path().join("out"), &t.path().join("cache"));
    assert_eq!(sha256_file(&t.path().join("out/tiny.erofs")), "2d519a49125858103a4802dabcab31b2e6c1e0482fa49f8d36c7c0558973d715", "tiny.erofs changed: update the pin only if the format change is intended");
}

#[test]
fn the_linux_kernel_mounts_it() {
    let f = fixture();
    let (d, bx) = fixture_box("root", "[[layer]]\ndir = \"extra\"\n[output.erofs]\n");
    write(&d.path().join("extra/marker"), "erofs-root-says: 42\n");
    std::fs::hard_link(d.path().join("extra/marker"), d.path().join("extra/marker-link")).unwrap();
    // A directory bigger than a block, and a file with a tail, to leave the inline path.
    for k in 0..300 {
        write(&d.path().join(format!("extra/many/entry-with-a-longish-name-{k:04}")), format!("{k}\n"));
    }
    write(&d.path().join("extra/tail.bin"), vec![7u8; 4096 * 3 + 3000]);
    build(&bx, &d.path().join("out"), &f.cache);
    let console = kernel_mount::mount_and_run(
        &f.dir.join("kernel"),
        &d.path().join("out/root.erofs"),
        "erofs",
        &["lib/libcrc32c", "fs/erofs/erofs"],
        "cat /mnt/marker\necho \"modes: $(stat -c %a /mnt/usr/bin/suid /mnt/usr/bin/sgid /mnt/tmp | tr '\\n' ' ')\"\necho \"links: $(stat -c %h /mnt/marker-link) many: $(ls /mnt/many | wc -l) last: $(cat /mnt/many/entry-with-a-longish-name-0299) tail: $(stat -c %s /mnt/tail.bin) $(md5sum < /mnt/tail.bin)\"\nls -l /mnt/dev",
    );
    assert!(console.contains("erofs-root-says: 42"), "the kernel did not read the image:\n{console}");
    let md5 = {
        let o = run(Command::new("sh").arg("-c").arg(format!("md5sum < '{}'", d.path().join("extra/tail.bin").display())));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert!(console.contains(&format!("links: 2 many: 300 last: 299 tail: 15288 {md5}")), "{console}");
    assert!(console.contains("modes: 4755 2711 1777 "), "{console}");
    assert!(!console.contains("erofs: (device vda)"), "the kernel complained:\n{console}");
}
