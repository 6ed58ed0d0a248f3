//! Oracle tests: stagebox's outputs hold exactly the rootfs that independent tools make of
//! the same image. The reference is `umoci unpack --rootless` (DESIGN §3); our tarballs are
//! unpacked by GNU tar and listed by GNU tar and bsdtar; our OCI output is read by skopeo and
//! unpacked by umoci.
//!
//! The fixture image is assembled by umoci from a core-filesystem layer, real Debian packages
//! (one layer each) and two layers of edge cases (see `common::pallet_layers`).

use crate::common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Fixture {
    dir: PathBuf,
    layout: PathBuf,
    /// Outputs of the pallet box by tar compression: "none" (plus the OCI output), "gzip", "zstd".
    outs: BTreeMap<&'static str, PathBuf>,
    /// Output of the box whose package layers keep their `bin/` directory entries.
    debian_out: PathBuf,
}

/// 2022-04-15: newer than some files of the Debian packages, older than others.
const SDE_MID: i64 = 1_650_000_000;

const TOOLS: &[&str] = &["umoci", "skopeo", "tar", "bsdtar", "gzip", "zstd", "dpkg-deb", "apt-get"];

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(TOOLS);
        assert!(
            is_root(),
            "the oracle tests unpack device nodes and numeric owners with GNU tar and need root (CI runs as root)"
        );
        let dir = fixture_dir("oracle");
        let layout = dir.join("img");
        let pallet = umoci_image(&layout, "pallet", &pallet_layers());
        // The same packages with their own `bin/`, `lib/`... directory entries: each replaces
        // the core layer's symlink, as in Docker, containerd and umoci.
        let mut debian = vec![("core-filesystem".to_string(), core_filesystem_layer())];
        for p in ["base-files", "dash", "zlib1g"] {
            debian.push((p.to_string(), deb_layer(p)));
        }
        let debian = umoci_image(&layout, "debian", &debian);

        let cache = dir.join("cache");
        let mut outs = BTreeMap::new();
        for comp in ["none", "gzip", "zstd"] {
            let oci = if comp == "none" { "\n[output.oci]\ntag = \"oracle\"\n" } else { "" };
            let b = dir.join(format!("pallet-{comp}.toml"));
            write(
                &b,
                format!(
                    "name = \"pallet\"\nversion = \"1\"\n\n[[layer]]\nimage = \"oci:img@{pallet}\"\n\n[output.tar]\ncompression = \"{comp}\"\n{oci}"
                ),
            );
            let out = dir.join(format!("out-{comp}"));
            let built = build(&b, &out, &cache);
            assert_eq!(built.len(), if comp == "none" { 2 } else { 1 }, "{built:?}");
            outs.insert(comp, out);
        }
        // A SOURCE_DATE_EPOCH inside the range of the packages' mtimes: some kept, some clamped.
        let b = dir.join("pallet-sde.toml");
        write(&b, format!("name = \"pallet\"\nsource_date_epoch = {SDE_MID}\n\n[[layer]]\nimage = \"oci:img@{pallet}\"\n\n[output.tar]\n"));
        build(&b, &dir.join("out-sde"), &cache);
        outs.insert("sde", dir.join("out-sde"));
        let b = dir.join("debian.toml");
        write(&b, format!("name = \"debian\"\n\n[[layer]]\nimage = \"oci:img:debian@{debian}\"\n\n[output.tar]\n"));
        let debian_out = dir.join("out-debian");
        build(&b, &debian_out, &cache);
        Fixture { dir, layout, outs, debian_out }
    })
}

/// `umoci unpack --rootless` of `image` into a new bundle; returns the rootfs and the device
/// nodes umoci reports it replaced by empty files (`path -> (major, minor)`).
fn umoci_unpack(image: &str, bundle: &Path) -> (PathBuf, BTreeMap<String, (u32, u32)>) {
    let o = run(Command::new("umoci").args(["unpack", "--rootless", "--image", image]).arg(bundle));
    // umoci logs `rootless{dev/null} creating empty file in place of device 1:3`.
    let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    let mut devices = BTreeMap::new();
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once("rootless{") {
            let (path, rest) = rest.split_once('}').unwrap();
            let (a, b) = rest.rsplit_once(' ').unwrap().1.split_once(':').unwrap();
            devices.insert(path.trim_start_matches('/').to_string(), (a.parse().unwrap(), b.parse().unwrap()));
        }
    }
    (bundle.join("rootfs"), devices)
}

/// umoci's tree with the owners it recorded: in rootless mode it cannot chown, and keeps
/// each non-root owner in a `user.rootlesscontainers` xattr instead.
fn umoci_view(rootfs: &Path) -> BTreeMap<String, Node> {
    let mut t = snapshot(rootfs);
    for n in t.values_mut() {
        if let Some(v) = n.xattrs.remove("user.rootlesscontainers") {
            // u32::MAX is the protocol's "no change": the owner on disk (root, as we run).
            let (uid, gid) = decode_rootlesscontainers(&v);
            if uid != u32::MAX {
                n.uid = uid;
            }
            if gid != u32::MAX {
                n.gid = gid;
            }
        }
    }
    t
}

/// Our tree as umoci --rootless would show it, plus the device nodes taken out of it.
/// umoci without privileges cannot mknod, so it writes an empty regular file (same mode and
/// owner) in place of each character or block device; the device numbers are compared
/// separately, against what umoci logs.
fn ours_as_rootless(ours: &BTreeMap<String, Node>) -> (BTreeMap<String, Node>, BTreeMap<String, (u32, u32)>) {
    let mut t = ours.clone();
    let mut devices = BTreeMap::new();
    for (p, n) in t.iter_mut() {
        if let NodeKind::Char(a, b) | NodeKind::Block(a, b) = n.kind {
            devices.insert(p.clone(), (a, b));
            n.kind = NodeKind::File { size: 0, sha256: sha256_hex(b"") };
        }
    }
    (t, devices)
}

fn compare_with_umoci(tar_file: &Path, image: &str, work: &Path) -> BTreeMap<String, Node> {
    let ours_dir = work.join("ours");
    gnu_tar_extract(tar_file, &ours_dir);
    let ours = snapshot(&ours_dir);
    let (rootfs, umoci_devices) = umoci_unpack(image, &work.join("bundle"));
    let theirs = umoci_view(&rootfs);
    let (ours_rootless, our_devices) = ours_as_rootless(&ours);
    assert_same_tree("stagebox tar (GNU tar -x)", &ours_rootless, "umoci unpack --rootless", &theirs);
    assert_eq!(our_devices, umoci_devices, "device nodes: ours vs what umoci reports replacing");
    ours
}

#[test]
fn tar_matches_umoci_unpack() {
    let f = fixture();
    let work = tempdir();
    let tar = f.outs["none"].join("pallet.tar");
    let image = format!("{}:pallet", f.layout.display());
    let ours = compare_with_umoci(&tar, &image, work.path());

    // The comparison is only as good as the fixture: check it exercised what it should.
    let kind = |p: &str| ours.get(p).unwrap_or_else(|| panic!("{p} missing from our tree")).kind.clone();
    let file = |p: &str| match kind(p) {
        NodeKind::File { sha256, .. } => sha256,
        k => panic!("{p} is {k:?}, not a file"),
    };
    // Package files under /bin landed in usr/bin through the core layer's symlink.
    assert_eq!(kind("bin"), NodeKind::Symlink("usr/bin".into()));
    assert!(matches!(kind("usr/bin/dash"), NodeKind::File { .. }));
    assert_eq!(kind("usr/bin/sh"), NodeKind::Symlink("dash".into()));
    assert!(matches!(kind("usr/bin/busybox"), NodeKind::File { .. }));
    assert!(matches!(kind("usr/lib/x86_64-linux-gnu/libz.so.1.2.13"), NodeKind::File { .. }));
    assert!(matches!(kind("usr/sbin/via-sbin"), NodeKind::File { .. }));
    assert!(matches!(kind("opt/keep/through-link"), NodeKind::File { .. }));
    // base-files replaced the core layer's os-release with its symlink.
    assert_eq!(kind("etc/os-release"), NodeKind::Symlink("../usr/lib/os-release".into()));
    // Whiteouts and the opaque directory.
    for gone in ["opt/gone", "opt/gonedir", "opt/gonedir/x", "opt/opaque/old1", "opt/opaque/sub"] {
        assert!(!ours.contains_key(gone), "{gone} should be deleted");
    }
    assert!(ours.contains_key("opt/opaque/new"));
    assert!(!ours.keys().any(|p| p.contains(".wh.")), "a whiteout file leaked into the output");
    // A hardlink to a lower-layer file keeps the old content when its target is replaced.
    assert_eq!(file("opt/hl/orig"), sha256_hex(b"version 2\n"));
    assert_eq!(file("opt/hl/cross-layer"), sha256_hex(b"version 1\n"));
    assert_eq!(ours["opt/hl/cross-layer"].link_group.as_deref(), Some("opt/hl/cross-layer"));
    assert_eq!(ours["opt/hl/same-layer"].link_group.as_deref(), Some("opt/hl/cross-layer"));
    assert_eq!(ours["opt/hl/orig"].link_group, None);
    // Resolved through `bin -> usr/bin`.
    assert!(!ours.contains_key("usr/bin/hostname"), "bin/.wh.hostname deletes usr/bin/hostname");
    assert_eq!(ours["usr/bin/dash"].link_group.as_deref(), Some("opt/hl/dash-via-symlink"));
    // ('-' sorts before '/', so the short name leads the group.)
    assert_eq!(ours[&long_path(300, "file-beyond-255-bytes")].link_group.as_deref(), Some("opt/long-hardlink"));
    // Types replaced across layers.
    assert_eq!(kind("opt/f2d"), NodeKind::Dir);
    assert!(matches!(kind("opt/d2f"), NodeKind::File { .. }));
    assert!(!ours.contains_key("opt/d2f/child"));
    assert_eq!(kind("opt/d2l"), NodeKind::Symlink("keep".into()));
    assert!(!ours.keys().any(|p| p.starts_with("opt/d2l/")));
    assert_eq!(file("opt/readd"), sha256_hex(b"upper version\n"));
    // Modes, owners, xattrs, devices, long names.
    assert_eq!(ours["usr/bin/suid"].mode, 0o4755);
    assert_eq!(ours["opt/sgid-dir"].mode, 0o2775);
    assert_eq!(ours["opt/sticky"].mode, 0o1777);
    assert_eq!(ours["opt/keep"].mode, 0o711);
    assert_eq!((ours["opt/owned"].uid, ours["opt/owned"].gid), (1000, 1001));
    assert_eq!((ours["opt/big-ids"].uid, ours["opt/big-ids"].gid), (3_000_000, 3_000_001));
    assert_eq!(ours["opt/xattr"].xattrs.get("user.foo").map(Vec::as_slice), Some(&b"bar"[..]));
    assert_eq!(kind("dev/null"), NodeKind::Char(1, 3));
    assert_eq!(kind("dev/loop0"), NodeKind::Block(7, 0));
    assert_eq!(kind("opt/fifo"), NodeKind::Fifo);
    assert!(ours.keys().any(|p| p.len() > 255));
}

#[test]
fn package_directory_entries_replace_symlinks_like_umoci() {
    let f = fixture();
    let work = tempdir();
    let image = format!("{}:debian", f.layout.display());
    let ours = compare_with_umoci(&f.debian_out.join("debian.tar"), &image, work.path());
    // dash's `./bin/` directory entry replaced the core layer's `bin -> usr/bin`.
    assert_eq!(ours["bin"].kind, NodeKind::Dir);
    assert!(matches!(ours["bin/dash"].kind, NodeKind::File { .. }));
    assert_eq!(ours["lib"].kind, NodeKind::Dir);
    assert_eq!(ours["sbin"].kind, NodeKind::Dir, "base-files ships ./sbin/");
}

/// `tar -tvf` and `bsdtar -tvf` read the archive with no warning and list `members` entries.
fn assert_lists_cleanly(file: &Path, members: usize) {
    for tool in ["tar", "bsdtar"] {
        let o = run(Command::new(tool).arg("-tvf").arg(file));
        assert!(
            o.stderr.is_empty(),
            "`{tool} -tvf {}` warned:\n{}",
            file.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let lines = String::from_utf8_lossy(&o.stdout).lines().count();
        assert_eq!(lines, members, "`{tool} -tvf {}` listed {lines} entries", file.display());
    }
}

#[test]
fn tarballs_list_without_warnings_and_decompress_to_the_same_tar() {
    let f = fixture();
    let plain = f.outs["none"].join("pallet.tar");
    let bytes = read(&plain);
    let members = tar_members(&bytes).len();
    assert_lists_cleanly(&plain, members);
    for (comp, ext, tool) in [("gzip", "gz", "gzip"), ("zstd", "zst", "zstd")] {
        let file = f.outs[comp].join(format!("pallet.tar.{ext}"));
        assert_lists_cleanly(&file, members);
        let d = run(Command::new(tool).arg("-dc").arg(&file)).stdout;
        assert!(d == bytes, "`{tool} -dc {}` is not the uncompressed pallet.tar", file.display());
        // GNU tar extracts it too, to the same tree.
        let work = tempdir();
        gnu_tar_extract(&file, &work.path().join("x"));
    }
    assert_lists_cleanly(&f.debian_out.join("debian.tar"), tar_members(&read(&f.debian_out.join("debian.tar"))).len());
}

#[test]
fn tar_is_normalized() {
    let f = fixture();
    let m = tar_members(&read(&f.outs["none"].join("pallet.tar")));
    let sde = 1; // the box sets none; SOURCE_DATE_EPOCH is unset; the default is 1
    let mut seen = BTreeSet::new();
    let mut prev: Option<String> = None;
    for e in &m {
        let p = e.path.trim_end_matches('/').to_string();
        assert!(!p.is_empty() && p != "." && !p.starts_with('/') && !p.starts_with("./"), "bad member name {:?}", e.path);
        assert!(e.mtime <= sde, "{} has mtime {} > SOURCE_DATE_EPOCH", e.path, e.mtime);
        if let Some(pr) = &prev {
            assert!(pr.as_bytes() < p.as_bytes(), "{pr:?} then {p:?}: not in bytewise order");
        }
        if let Some((parent, _)) = p.rsplit_once('/') {
            assert!(seen.contains(parent), "{p} comes before its parent");
        }
        assert!(!p.rsplit('/').next().unwrap().starts_with(".wh."), "whiteout {p} in the output");
        seen.insert(p.clone());
        prev = Some(p);
    }
    let get = |p: &str| m.iter().find(|e| e.path.trim_end_matches('/') == p).unwrap_or_else(|| panic!("no {p}"));
    // mtimes below SOURCE_DATE_EPOCH are kept, later ones clamped.
    assert_eq!(get("opt/mtime-zero").mtime, 0);
    assert_eq!(get("opt/mtime-future").mtime, sde);
    // ids beyond ustar's 7 octal digits go in PAX records; xattrs as SCHILY.xattr.
    assert_eq!(get("opt/big-ids").pax.get("uid").map(Vec::as_slice), Some(&b"3000000"[..]));
    assert_eq!(get("opt/xattr").pax.get("SCHILY.xattr.user.foo").map(Vec::as_slice), Some(&b"bar"[..]));
    // The layer's empty `SCHILY.xattr.user.empty=` record deletes the key (POSIX pax, and
    // what umoci does), so no empty xattr is written back.
    assert_eq!(get("opt/xattr").pax.keys().filter(|k| k.starts_with("SCHILY.xattr.")).count(), 1);
    // Hardlinks: data once, on the first path in order; the others are links to it.
    let cross = get("opt/hl/cross-layer");
    assert_eq!(cross.kind, tar::EntryType::Regular);
    let same = get("opt/hl/same-layer");
    assert_eq!((same.kind, same.link.as_deref()), (tar::EntryType::Link, Some("opt/hl/cross-layer")));
    // No user or group names from the host.
    let raw = read(&f.outs["none"].join("pallet.tar"));
    let mut ar = tar::Archive::new(raw.as_slice());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().username_bytes().unwrap_or_default(), b"");
        assert_eq!(e.header().groupname_bytes().unwrap_or_default(), b"");
    }
}

#[test]
fn oci_output_reads_back_with_skopeo_and_umoci() {
    let f = fixture();
    let out = &f.outs["none"];
    let oci = out.join("pallet.oci");
    let manifest = read_json(&out.join("manifest.json"));
    let rec = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["format"] == "oci")
        .expect("manifest.json lists the oci output")
        .clone();
    assert_eq!(rec["path"], "pallet.oci");

    let o = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:oracle", oci.display())));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["Digest"].as_str().unwrap(), format!("sha256:{}", rec["sha256"].as_str().unwrap()));
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Architecture"], "amd64");
    // skopeo also reads the raw manifest and the config.
    run(Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci:{}:oracle", oci.display())));
    run(Command::new("skopeo").args(["inspect", "--config"]).arg(format!("oci:{}:oracle", oci.display())));

    // umoci unpacks our image to the same tree as the input image.
    let work = tempdir();
    let (ours, our_devs) = umoci_unpack(&format!("{}:oracle", oci.display()), &work.path().join("ours"));
    let (input, input_devs) = umoci_unpack(&format!("{}:pallet", f.layout.display()), &work.path().join("input"));
    assert_same_tree("umoci unpack of our OCI output", &umoci_view(&ours), "umoci unpack of the input", &umoci_view(&input));
    assert_eq!(our_devs, input_devs);

    // The OCI layer is the tar output, gzip-compressed.
    let m: serde_json::Value = serde_json::from_slice(&read(&oci.join("blobs/sha256").join(rec["sha256"].as_str().unwrap()))).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let d = run(Command::new("gzip").arg("-dc").arg(oci.join("blobs/sha256").join(layer))).stdout;
    assert!(d == read(&out.join("pallet.tar")), "the OCI layer does not decompress to pallet.tar");
    let _ = &f.dir;
}

#[test]
fn mtimes_are_the_layers_clamped_to_source_date_epoch() {
    let f = fixture();
    let work = tempdir();
    let ours_dir = work.path().join("ours");
    gnu_tar_extract(&f.outs["sde"].join("pallet.tar"), &ours_dir);
    let (rootfs, _) = umoci_unpack(&format!("{}:pallet", f.layout.display()), &work.path().join("bundle"));
    let (ours, theirs) = (mtimes(&ours_dir), mtimes(&rootfs));
    let tree = snapshot(&ours_dir);
    let (mut kept, mut clamped) = (0, 0);
    for (p, n) in &tree {
        // Directories: their mtimes change as children are unpacked, in both tools. Hardlinked
        // files share one inode, whose mtime is the last header applied.
        if n.kind == NodeKind::Dir || n.link_group.is_some() {
            continue;
        }
        let want = theirs[p].min(SDE_MID);
        assert_eq!(ours[p], want, "{p}: mtime {} in our tar, {} in the layers", ours[p], theirs[p]);
        if theirs[p] < SDE_MID { kept += 1 } else { clamped += 1 }
    }
    assert!(kept > 10 && clamped > 10, "the fixture should exercise both: {kept} kept, {clamped} clamped");
}

/// A layer is applied in archive order, whiteouts included (they only hide lower-layer
/// paths): a hardlink made before a whiteout of its target keeps the content, and a
/// whiteout under a symlink the same layer re-pointed follows the new target. Both as umoci.
#[test]
fn same_layer_order_of_whiteouts_matches_umoci() {
    require_tools(TOOLS);
    let dir = fixture_dir("oracle-order");
    let layout = dir.join("img");
    let base = layer(&[
        Entry::dir("opt"),
        Entry::file("opt/y", b"lower y"),
        Entry::file("opt/other/x", b"other x"),
        Entry::file("opt/real/x", b"real x"),
        Entry::symlink("opt/link", "other"),
    ]);
    let top = layer(&[
        Entry::hardlink("opt/hl", "opt/y"),
        Entry::whiteout("opt/y"),
        Entry::symlink("opt/link", "real"),
        Entry::whiteout("opt/link/x"),
    ]);
    let digest = umoci_image(&layout, "order", &[("base".into(), base), ("top".into(), top)]);
    let b = dir.join("order.toml");
    write(&b, format!("name = \"order\"\n\n[[layer]]\nimage = \"oci:img@{digest}\"\n\n[output.tar]\n"));
    let out = dir.join("out");
    build(&b, &out, &dir.join("cache"));
    let work = tempdir();
    let ours = compare_with_umoci(&out.join("order.tar"), &format!("{}:order", layout.display()), work.path());
    assert!(matches!(ours["opt/hl"].kind, NodeKind::File { .. }));
    assert!(!ours.contains_key("opt/y"));
    assert!(ours.contains_key("opt/other/x"), "the whiteout followed the old symlink target");
    assert!(!ours.contains_key("opt/real/x"));
}
