//! Reproducibility: the same box gives the same bytes whatever the host state (DESIGN §2).
//!
//! Two copies of one box (same box-relative references), built by the binary with different
//! umask, TZ, locale, HOME, working directory, cache, output directory and thread count, from
//! inputs written in a different order (the OCI layout's blobs copied in reverse, the `dir`
//! layer's files created in reverse order under another umask, at other times), must give
//! byte-identical outputs and manifest.json. A pinned digest catches any change to the tar
//! format itself.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The boxes of the fixture: name → output tables.
const BOXES: &[(&str, &str)] = &[
    ("plain", "[output.tar]\n\n[output.oci]\n"),
    ("gz", "[output.tar]\ncompression = \"gzip\"\n"),
    ("zst", "[output.tar]\ncompression = \"zstd\"\n"),
    // The dm-verity root hash and hash device (NAME.roothash, NAME.squashfs.verity) too.
    ("verity", "[output.squashfs]\nverity = true\n\n[output.provenance]\n"),
];

/// Files of the `dir` layer: (path, content, executable). Symlink and hardlink added apart.
const ROOTFS: &[(&str, &str, bool)] = &[
    ("etc/app.conf", "key = value\n", false),
    ("usr/bin/app", "#!/bin/sh\necho app\n", true),
    ("usr/share/app/a/b/c/deep.txt", "deep\n", false),
    ("usr/share/app/z-last", "z\n", false),
    ("usr/share/app/A-upper", "A\n", false),
    ("usr/share/app/0-digit", "0\n", false),
];

struct Fixture {
    a: PathBuf,
    b: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["umoci", "dpkg-deb", "apt-get", "sh", "cp"]);
        let dir = fixture_dir("reproducible");
        let a = dir.join("a");
        let b = dir.join("b");

        // Copy A: an umoci-built image and a dir layer written in order.
        let mut layers = vec![("core-filesystem".to_string(), core_filesystem_layer())];
        for p in ["dash", "busybox-static"] {
            layers.push((p.to_string(), drop_dir_entries(&deb_layer(p), &["bin"])));
        }
        layers.push(("edge-a".into(), edge_layer_a()));
        layers.push(("edge-b".into(), edge_layer_b()));
        let digest = umoci_image(&a.join("img"), "r", &layers);
        for (path, data, exec) in ROOTFS {
            let p = a.join("rootfs").join(path);
            write(&p, data);
            if *exec {
                run(Command::new("chmod").arg("0755").arg(&p));
            }
        }
        std::os::unix::fs::symlink("app", a.join("rootfs/usr/bin/app-link")).unwrap();
        std::fs::hard_link(a.join("rootfs/etc/app.conf"), a.join("rootfs/etc/app.conf.hardlink")).unwrap();
        for (name, outputs) in BOXES {
            write(
                &a.join(format!("{name}.toml")),
                format!(
                    "name = \"{name}\"\nversion = \"1.0\"\n\n[[layer]]\nimage = \"oci:img@{digest}\"\n\n[[layer]]\ndir = \"rootfs\"\n\n{outputs}"
                ),
            );
        }

        // Copy B: the same files, written in the opposite order, under umask 077.
        let mut script = String::from("set -e\numask 077\n");
        let sh_quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
        let mut blobs: Vec<PathBuf> =
            std::fs::read_dir(a.join("img/blobs/sha256")).unwrap().map(|e| e.unwrap().path()).collect();
        blobs.sort();
        blobs.reverse();
        script += &format!("mkdir -p {}\n", sh_quote(&b.join("img/blobs/sha256")));
        for blob in &blobs {
            script += &format!("cp {} {}\n", sh_quote(blob), sh_quote(&b.join("img/blobs/sha256").join(blob.file_name().unwrap())));
        }
        for f in ["index.json", "oci-layout"] {
            script += &format!("cp {} {}\n", sh_quote(&a.join("img").join(f)), sh_quote(&b.join("img").join(f)));
        }
        for (path, _, _) in ROOTFS.iter().rev() {
            let src = a.join("rootfs").join(path);
            let dst = b.join("rootfs").join(path);
            script += &format!("mkdir -p {}\ncp {} {}\n", sh_quote(dst.parent().unwrap()), sh_quote(&src), sh_quote(&dst));
        }
        script += &format!(
            "ln {} {}\nln -s app {}\n",
            sh_quote(&b.join("rootfs/etc/app.conf")),
            sh_quote(&b.join("rootfs/etc/app.conf.hardlink")),
            sh_quote(&b.join("rootfs/usr/bin/app-link"))
        );
        for (name, _) in BOXES {
            script += &format!("cp {} {}\n", sh_quote(&a.join(format!("{name}.toml"))), sh_quote(&b.join(format!("{name}.toml"))));
        }
        // A second later, so no mtime can coincide by luck.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        run(Command::new("sh").arg("-c").arg(&script));
        // The copies really differ on disk the way the test means them to.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&a.join("rootfs/etc/app.conf")), 0o644);
        assert_eq!(mode(&b.join("rootfs/etc/app.conf")), 0o600);
        assert_eq!(mode(&b.join("rootfs/usr/bin/app")), 0o700);
        assert_eq!(mode(&b.join("rootfs/usr")), 0o700);
        Fixture { a, b }
    })
}

/// One way to run the binary.
struct Host<'a> {
    umask: &'a str,
    tz: &'a str,
    lang: &'a str,
    lc_all: &'a str,
    threads: &'a str,
}

/// Build `dir/NAME.toml` under `host`, with a cwd, cache, HOME and out dir of its own.
fn build_as(dir: &Path, name: &str, host: &Host, sde_env: Option<&str>, work: &Path) -> (Vec<Built>, PathBuf) {
    let out = work.join("out");
    let cache = work.join("cache");
    let home = work.join("home");
    let cwd = work.join("cwd");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {}; exec \"$@\"", host.umask))
        .arg("sh")
        .arg(stagebox_bin())
        .arg("build")
        .arg(dir.join(format!("{name}.toml")))
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(&cache)
        .args(["--threads", host.threads, "-q"])
        .current_dir(&cwd)
        .env("TZ", host.tz)
        .env("LANG", host.lang)
        .env("LC_ALL", host.lc_all)
        .env("HOME", &home)
        .env_remove("STAGEBOX_CACHE");
    match sde_env {
        Some(v) => c.env("SOURCE_DATE_EPOCH", v),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    let o = run(&mut c);
    (parse_build_stdout(&o.stdout), out)
}

const HOST_A: Host = Host { umask: "022", tz: "UTC", lang: "C", lc_all: "C", threads: "1" };
const HOST_B: Host = Host { umask: "077", tz: "Asia/Kathmandu", lang: "de_DE.UTF-8", lc_all: "tr_TR.UTF-8", threads: "5" };

fn check_box(name: &str) {
    let f = fixture();
    let (wa, wb) = (tempdir(), tempdir());
    let (la, out_a) = build_as(&f.a, name, &HOST_A, None, wa.path());
    let (lb, out_b) = build_as(&f.b, name, &HOST_B, None, wb.path());
    let (ha, hb) = (hash_tree(&out_a), hash_tree(&out_b));
    assert!(ha.contains_key("manifest.json"), "{ha:?}");
    assert!(ha.len() >= 2, "no outputs: {ha:?}");
    assert_eq!(ha, hb, "box {name}: outputs differ between the two hosts");
    // Output files are 0644 and output directories 0755 whatever the umask (077 for B).
    let (ma, mb) = (mode_tree(&out_a), mode_tree(&out_b));
    assert_eq!(ma, mb, "box {name}: output permissions depend on the umask");
    for (p, m) in &ma {
        let want = if out_a.join(p).is_dir() { 0o755 } else { 0o644 };
        assert_eq!(*m, want, "box {name}: {p} has mode {m:o}");
    }
    let shas = |l: &[Built]| l.iter().map(|b| b.sha256.clone()).collect::<Vec<_>>();
    assert_eq!(shas(&la), shas(&lb));
    // manifest.json names the inputs as written in the box file, with their pins.
    let m = read_json(&out_a.join("manifest.json"));
    let inputs = m["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2);
    assert!(inputs[0]["ref"].as_str().unwrap().starts_with("oci:img@sha256:"), "{m}");
    assert_eq!(inputs[1]["ref"], "dir:rootfs");
    // Every listed output is there with the sha256 and size recorded.
    for o in m["outputs"].as_array().unwrap() {
        let p = out_a.join(o["path"].as_str().unwrap());
        if o["format"] == "oci" {
            let d = o["sha256"].as_str().unwrap();
            assert_eq!(sha256_file(&p.join("blobs/sha256").join(d)), d);
        } else {
            assert_eq!(sha256_file(&p), o["sha256"].as_str().unwrap());
            assert_eq!(std::fs::metadata(&p).unwrap().len(), o["size"].as_u64().unwrap());
        }
    }
}

#[test]
fn plain_tar_and_oci_are_reproducible_across_hosts() {
    check_box("plain");
}

#[test]
fn gzip_tar_is_reproducible_across_hosts() {
    check_box("gz");
}

#[test]
fn zstd_tar_is_reproducible_across_hosts() {
    check_box("zst");
}

/// The dm-verity hash device and root hash of a squashfs with `verity = true`.
#[test]
fn verity_root_hash_is_reproducible_across_hosts() {
    check_box("verity");
}

#[test]
fn source_date_epoch_is_the_only_time_that_counts() {
    // Shows the comparison above can fail: a different SOURCE_DATE_EPOCH gives other bytes;
    // the default (unset) is 1, the same as SOURCE_DATE_EPOCH=1.
    let f = fixture();
    let (w1, w2, w3) = (tempdir(), tempdir(), tempdir());
    let (unset, _) = build_as(&f.a, "plain", &HOST_A, None, w1.path());
    let (one, _) = build_as(&f.a, "plain", &HOST_B, Some("1"), w2.path());
    let (later, _) = build_as(&f.a, "plain", &HOST_A, Some("1700000000"), w3.path());
    assert_eq!(unset[0].sha256, one[0].sha256);
    assert_ne!(unset[0].sha256, later[0].sha256, "SOURCE_DATE_EPOCH did not change the tar");
    let m = tar_members(&read(&w3.path().join("out/plain.tar")));
    let e = m.iter().find(|e| e.path == "opt/mtime-future").unwrap();
    assert_eq!(e.mtime, 1_700_000_000);
    let e = m.iter().find(|e| e.path == "usr/bin/app").unwrap();
    assert_eq!((e.mtime, e.mode, e.uid, e.gid), (1_700_000_000, 0o755, 0, 0), "dir layer files get SDE, 0:0, git modes");
}

#[test]
fn rebuilding_into_the_same_out_dir_gives_the_same_bytes() {
    let f = fixture();
    let w = tempdir();
    let (first, out) = build_as(&f.a, "plain", &HOST_A, None, w.path());
    let before = hash_tree(&out);
    let (second, _) = build_as(&f.a, "plain", &HOST_B, None, w.path());
    assert_eq!(first, second);
    assert_eq!(before, hash_tree(&out));
}

/// The tar format itself, pinned: a tiny hand-made image through the whole pipeline.
#[test]
fn tar_digest_is_pinned() {
    let w = tempdir();
    let dir = w.path();
    let layout = Layout::create(&dir.join("img"));
    let l1 = layer(&[
        Entry::dir("etc"),
        Entry::file("etc/hosts", "127.0.0.1 localhost\n").mtime(5),
        Entry::file("etc/shadow", "root:*:1::::::\n").mode(0o640).owner(0, 42),
        Entry::symlink("bin", "usr/bin"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/tool", "#!/bin/sh\n").mode(0o4755).mtime(2_000_000_000),
        Entry::hardlink("usr/bin/tool-link", "usr/bin/tool"),
        Entry::fifo("run-fifo"),
        Entry::char_dev("dev/console", 5, 1).mode(0o600),
        Entry::file("data/xattr", "x\n").xattr("user.k", b"v"),
        Entry::file(&long_path(200, "long"), "long\n"),
        Entry::file("data/big-ids", "").owner(5_000_000, 7),
        Entry::file("data/gone", "gone\n"),
    ]);
    let l2 = layer(&[Entry::whiteout("data/gone"), Entry::file("bin/through", "via the symlink\n")]);
    let img = layout.image(&[(&l1, Comp::None), (&l2, Comp::None)], "amd64");
    layout.set_index(&[(img.clone(), "pin")]);
    write(
        &dir.join("pin.toml"),
        format!("name = \"pin\"\nsource_date_epoch = 1000000000\n\n[[layer]]\nimage = \"oci:img@{}\"\n\n[output.tar]\n", digest_of(&img)),
    );
    let built = build(&dir.join("pin.toml"), &dir.join("out"), &dir.join("cache"));
    const PINNED: &str = "4cdb60645a6bb3c2dbaf629ca8ea36c2d4b70f636f664ddb4c40f1c97eaa78b1";
    assert_eq!(
        built[0].sha256, PINNED,
        "the tar output of a fixed tree changed: every user's pinned digest would change. \
         If the change to the tar format is intentional, update PINNED (and say so in the changelog)"
    );
}
