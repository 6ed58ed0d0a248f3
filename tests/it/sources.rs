//! Image sources: every way in gives the same rootfs. `oci:` layouts made by umoci, by skopeo
//! (zstd) and by hand (uncompressed, gzip, zstd, mixed, Docker media types, nested indexes),
//! and `docker-archive:` files made by skopeo all build the same tar; indexes pick
//! linux/amd64; `lock` pins tags; `inspect` reports images and tarballs; and the content
//! store is an OCI layout that skopeo and umoci read.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Fixture {
    dir: PathBuf,
    /// The layers, uncompressed, bottom first.
    layers: Vec<(String, Vec<u8>)>,
    /// `umoci/`: the image built by umoci (gzip layers), tag `t`.
    umoci_digest: String,
    /// The tar built from `oci:umoci@<digest>`: what every other source must give.
    reference_tar: Vec<u8>,
    reference_sha: String,
    /// One store for all builds of this file (imports are content-addressed).
    cache: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["umoci", "skopeo", "gzip", "zstd", "tar", "dpkg-deb", "apt-get"]);
        let dir = fixture_dir("sources");
        let mut layers = vec![("core-filesystem".to_string(), core_filesystem_layer())];
        for p in ["dash", "hostname", "zlib1g"] {
            layers.push((p.to_string(), drop_dir_entries(&deb_layer(p), &["bin", "lib", "sbin"])));
        }
        layers.push(("edge-a".into(), edge_layer_a()));
        layers.push(("edge-b".into(), edge_layer_b()));
        let umoci_digest = umoci_image(&dir.join("umoci"), "t", &layers);
        let cache = dir.join("cache");
        let built = build_ref(&dir, "reference", &format!("oci:umoci@{umoci_digest}"), &cache);
        let reference_tar = read(&built.path);
        Fixture { dir, layers, umoci_digest, reference_tar, reference_sha: built.sha256, cache }
    })
}

/// Write `DIR/NAME.toml` with one image layer and a plain tar output.
fn box_file(dir: &Path, name: &str, image: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    write(&p, format!("name = \"{name}\"\n\n[[layer]]\nimage = \"{image}\"\n\n[output.tar]\n"));
    p
}

/// Build a one-image box and return its tar line.
fn build_ref(dir: &Path, name: &str, image: &str, cache: &Path) -> Built {
    let b = box_file(dir, name, image);
    let built = build(&b, &dir.join(format!("out-{name}")), cache);
    assert_eq!(built.len(), 1);
    built.into_iter().next().unwrap()
}

fn assert_same_as_reference(f: &Fixture, built: &Built, what: &str) {
    assert_eq!(built.sha256, f.reference_sha, "{what}: the tar differs from the one built from the umoci layout");
    assert!(read(&built.path) == f.reference_tar);
}

fn inputs(out_dir: &Path) -> Vec<(String, String)> {
    let m = read_json(&out_dir.join("manifest.json"));
    m["inputs"].as_array().unwrap().iter().map(|i| (i["ref"].as_str().unwrap().into(), i["digest"].as_str().unwrap().into())).collect()
}

#[test]
fn docker_archive_from_skopeo_builds_the_same_tar() {
    let f = fixture();
    let archive = f.dir.join("docker.tar");
    if !archive.exists() {
        run(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci:{}:t", f.dir.join("umoci").display()))
            .arg(format!("docker-archive:{}:stagebox/test:1", archive.display())));
    }
    // The pin of a docker-archive is the image ID: the sha256 of its config member.
    let m: serde_json::Value = serde_json::from_slice(&run(Command::new("tar").arg("-xOf").arg(&archive).arg("manifest.json")).stdout).unwrap();
    let config_name = m[0]["Config"].as_str().unwrap();
    let config = run(Command::new("tar").arg("-xOf").arg(&archive).arg(config_name)).stdout;
    let id = format!("sha256:{}", sha256_hex(&config));
    let built = build_ref(&f.dir, "docker", &format!("docker-archive:docker.tar@{id}"), &f.cache);
    assert_same_as_reference(f, &built, "docker-archive");
    assert_eq!(inputs(&f.dir.join("out-docker")), vec![(format!("docker-archive:docker.tar@{id}"), id.clone())]);

    // Pinned to another ID, it is refused.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let b = box_file(&f.dir, "docker-wrong", &format!("docker-archive:docker.tar@{wrong}"));
    let o = output(&mut stagebox(["build".as_ref(), b.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    assert_eq!(o.status.code(), Some(2), "a wrong pin is a box-file error: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&wrong), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn every_layer_compression_builds_the_same_tar() {
    let f = fixture();
    let dir = f.dir.join("compressions");
    std::fs::create_dir_all(&dir).unwrap();
    let layout = Layout::create(&dir.join("img"));
    let tars: Vec<&[u8]> = f.layers.iter().map(|(_, t)| t.as_slice()).collect();
    let with = |c: &dyn Fn(usize) -> Comp| tars.iter().enumerate().map(|(i, t)| (*t, c(i))).collect::<Vec<_>>();
    let none = layout.image(&with(&|_| Comp::None), "amd64");
    let gzip = layout.image(&with(&|_| Comp::Gzip), "amd64");
    let zstd = layout.image(&with(&|_| Comp::Zstd), "amd64");
    let mixed = layout.image(&with(&|i| [Comp::Zstd, Comp::None, Comp::Gzip][i % 3]), "amd64");
    // Docker's manifest and layer media types, gzip layers.
    let docker = layout.image_with(
        &with(&|_| Comp::Gzip),
        "amd64",
        "application/vnd.docker.distribution.manifest.v2+json",
        Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
    );
    layout.set_index(&[(none.clone(), "none"), (gzip.clone(), "gzip"), (zstd.clone(), "zstd"), (mixed.clone(), "mixed"), (docker.clone(), "docker")]);
    for (name, d) in [("none", &none), ("gzip", &gzip), ("zstd", &zstd), ("mixed", &mixed), ("docker", &docker)] {
        let built = build_ref(&dir, name, &format!("oci:img@{}", digest_of(d)), &f.cache);
        assert_same_as_reference(f, &built, &format!("{name} layers"));
    }

    // zstd layers written by skopeo (an independent encoder, with the OCI zstd media type).
    let zst = dir.join("skopeo-zstd");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-compress-format", "zstd"])
        .arg(format!("oci:{}:t", f.dir.join("umoci").display()))
        .arg(format!("oci:{}:z", zst.display())));
    let digest = oci_tag_digest(&zst, "z");
    let manifest = read_json(&zst.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap()));
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    }
    let built = build_ref(&dir, "skopeo-zstd", &format!("oci:skopeo-zstd:z@{digest}"), &f.cache);
    assert_same_as_reference(f, &built, "skopeo zstd layers");
}

/// A layout whose `multi` tag is an index (linux/arm64 first, then linux/amd64), and whose
/// `deep` tag is an index holding that index. Returns (layout dir, index digest, amd64
/// manifest digest, arm64 manifest digest).
fn multi_platform(f: &Fixture) -> (PathBuf, String, String, String) {
    let dir = f.dir.join("multi");
    let layout = Layout::create(&dir.join("img"));
    let core = core_filesystem_layer();
    let marker = |arch: &str| layer(&[Entry::dir("etc"), Entry::file("etc/arch", arch)]);
    let (ma, mb) = (marker("amd64\n"), marker("arm64\n"));
    let amd64 = layout.image(&[(&core, Comp::Gzip), (&ma, Comp::None)], "amd64");
    let arm64 = layout.image(&[(&core, Comp::Gzip), (&mb, Comp::None)], "arm64");
    let idx = layout.index_blob(&[arm64.clone(), amd64.clone()]);
    let deep = layout.index_blob(std::slice::from_ref(&idx));
    layout.set_index(&[(idx.clone(), "multi"), (deep, "deep")]);
    (dir, digest_of(&idx), digest_of(&amd64), digest_of(&arm64))
}

fn arch_of(tar_path: &Path) -> String {
    let m = tar_members(&read(tar_path));
    assert!(m.iter().any(|e| e.path == "bin"), "not the fixture image");
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == b"etc/arch" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            return s.trim().to_string();
        }
    }
    panic!("no etc/arch in {}", tar_path.display());
}

#[test]
fn nested_index_picks_linux_amd64_by_tag_and_by_digest() {
    let f = fixture();
    let (dir, idx, amd64, arm64) = multi_platform(f);
    // Pinned to the index: the amd64 manifest is picked; the manifest records the index pin.
    let b = build_ref(&dir, "by-index", &format!("oci:img@{idx}"), &f.cache);
    assert_eq!(arch_of(&b.path), "amd64");
    assert_eq!(inputs(&dir.join("out-by-index")), vec![(format!("oci:img@{idx}"), amd64.clone())], "the input records the platform manifest");
    // Two levels of nesting.
    let b = build_ref(&dir, "by-deep-tag", &format!("oci:img:deep@{idx}"), &f.cache);
    assert_eq!(arch_of(&b.path), "amd64");
    // Pinned to a platform manifest directly: that one, and it must be for the build's
    // platform (an arm64 image in an amd64 build is refused, naming it; issue 24).
    let bx = box_file(&dir, "by-arm64", &format!("oci:img@{arm64}"));
    let o = output(stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), dir.join("out-by-arm64").as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]).borrow_mut());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("its image config is for linux/arm64, but the box builds for linux/amd64"), "{err}");
    let out = dir.join("out-by-arm64");
    run(stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "--platform".as_ref(), "linux/arm64".as_ref(), "-q".as_ref()]).borrow_mut());
    assert_eq!(arch_of(&out.join("by-arm64.tar")), "arm64");
    let b = build_ref(&dir, "by-amd64", &format!("oci:img@{amd64}"), &f.cache);
    assert_eq!(arch_of(&b.path), "amd64");
    // --platform picks the other one from the index.
    let bx = box_file(&dir, "arm", &format!("oci:img@{idx}"));
    let out = dir.join("out-arm");
    run(stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "--platform".as_ref(), "linux/arm64".as_ref(), "-q".as_ref()]).borrow_mut());
    assert_eq!(arch_of(&out.join("arm.tar")), "arm64");

    // By tag: `lock` pins the tag to the linux/amd64 *manifest* digest (not the index).
    for tag in ["multi", "deep"] {
        let bx = box_file(&dir, &format!("tag-{tag}"), &format!("oci:img:{tag}"));
        run(stagebox(["lock".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str()]).borrow_mut());
        let lock: toml::Value = toml::from_str(&String::from_utf8(read(&bx.with_extension("lock"))).unwrap()).unwrap();
        assert_eq!(lock["image"][0]["digest"].as_str(), Some(amd64.as_str()), "{lock}");
        let built = build(&bx, &dir.join(format!("out-tag-{tag}")), &f.cache);
        assert_eq!(arch_of(&built[0].path), "amd64");
    }
}

use std::borrow::BorrowMut;

/// `file:line:column` of the first `"` after `key =` in `text`.
fn value_location(file: &Path, text: &str, key: &str) -> String {
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with(key) {
            let col = line.find('"').unwrap() + 1;
            return format!("{}:{}:{}", file.display(), i + 1, col);
        }
    }
    panic!("no {key} in {text}");
}

#[test]
fn lock_pins_an_unpinned_tag_and_build_refuses_without_it() {
    let f = fixture();
    let dir = f.dir.join("lock");
    std::fs::create_dir_all(&dir).unwrap();
    let bx = dir.join("box.toml");
    let text = format!("# a comment line\nname = \"locked\"\n\n[[layer]]\nimage = \"oci:{}:t\"\n\n[output.tar]\n", f.dir.join("umoci").display());
    write(&bx, &text);

    // Without a lock: exit 2, naming file:line:column of the reference.
    let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let at = value_location(&bx, &text, "image");
    assert!(stderr.contains(&at), "expected {at} in: {stderr}");
    assert!(stderr.contains("stagebox lock"), "the error says how to fix it: {stderr}");
    assert!(!dir.join("out").exists(), "a failed build left outputs");

    // lock writes box.lock with the manifest digest of the tag…
    let o = run(stagebox(["lock".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str()]).borrow_mut());
    assert!(String::from_utf8_lossy(&o.stdout).contains(&f.umoci_digest));
    let lock: toml::Value = toml::from_str(&String::from_utf8(read(&dir.join("box.lock"))).unwrap()).unwrap();
    assert_eq!(lock["version"].as_integer(), Some(1));
    let images = lock["image"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["ref"].as_str().unwrap(), format!("oci:{}:t", f.dir.join("umoci").display()));
    assert_eq!(images[0]["digest"].as_str().unwrap(), f.umoci_digest);

    // …and build then succeeds with the same tar, recording the pin.
    let built = build(&bx, &dir.join("out"), &f.cache);
    assert_same_as_reference(f, &built[0], "locked tag");
    assert_eq!(inputs(&dir.join("out"))[0].1, f.umoci_digest);

    // A lock pinning a digest the layout does not hold fails the build (exit 2, a wrong pin).
    let bad = String::from_utf8(read(&dir.join("box.lock"))).unwrap().replace(&f.umoci_digest, &format!("sha256:{}", "1".repeat(64)));
    write(&dir.join("box.lock"), bad);
    let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("box.lock; `stagebox lock` renews it"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn inspect_reports_image_layers_and_tar_entries() {
    let f = fixture();
    let layout = f.dir.join("umoci");
    let image = format!("oci:{}@{}", layout.display(), f.umoci_digest);
    let o = run(stagebox(["inspect".as_ref(), image.as_ref(), "--json".as_ref(), "--cache".as_ref(), f.cache.as_os_str()]).borrow_mut());
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["pin"].as_str(), Some(f.umoci_digest.as_str()));
    assert_eq!(info["manifest_digest"].as_str(), Some(f.umoci_digest.as_str()));
    let manifest = read_json(&layout.join("blobs/sha256").join(f.umoci_digest.strip_prefix("sha256:").unwrap()));
    let want_layers = manifest["layers"].as_array().unwrap();
    let got = info["layers"].as_array().unwrap();
    assert_eq!(got.len(), f.layers.len());
    assert_eq!(got.len(), want_layers.len());
    for ((g, w), (name, tar)) in got.iter().zip(want_layers).zip(&f.layers) {
        assert_eq!(g["digest"], w["digest"], "layer {name}");
        assert_eq!(g["size"], w["size"], "layer {name}");
        assert_eq!(g["media_type"], w["mediaType"], "layer {name}");
        assert_eq!(g["diff_id"].as_str().unwrap(), format!("sha256:{}", sha256_hex(tar)), "layer {name}");
    }
    // The text form names the same digests.
    let o = run(stagebox(["inspect".as_ref(), image.as_ref(), "--cache".as_ref(), f.cache.as_os_str()]).borrow_mut());
    let text = String::from_utf8(o.stdout).unwrap();
    for w in want_layers {
        assert!(text.contains(w["digest"].as_str().unwrap()), "{text}");
    }

    // A tarball: every member, with types, modes and link targets.
    let dir = f.dir.join("inspect");
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("ref.tar");
    write(&plain, &f.reference_tar);
    let zst = dir.join("ref.tar.zst");
    write(&zst, Comp::Zstd.compress(&f.reference_tar));
    let members = tar_members(&f.reference_tar);
    for (file, comp) in [(&plain, "none"), (&zst, "zstd")] {
        let o = run(stagebox(["inspect".as_ref(), file.as_os_str(), "--json".as_ref()]).borrow_mut());
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(info["compression"], comp);
        assert_eq!(info["sha256"].as_str().unwrap(), sha256_file(file));
        let entries = info["entries"].as_array().unwrap();
        assert_eq!(entries.len(), members.len());
        for (e, m) in entries.iter().zip(&members) {
            assert_eq!(e["path"].as_str().unwrap(), m.path);
            assert_eq!(e["uid"].as_u64().unwrap(), m.uid);
            assert_eq!(e["mtime"].as_u64().unwrap(), m.mtime);
        }
        let get = |p: &str| entries.iter().find(|e| e["path"].as_str().unwrap().trim_end_matches('/') == p).unwrap_or_else(|| panic!("no {p}"));
        assert_eq!((get("opt/hl/dash-via-symlink")["type"].as_str(), get("opt/hl/dash-via-symlink")["mode"].as_str()), (Some("file"), Some("0755")));
        assert_eq!((get("usr/bin/dash")["type"].as_str(), get("usr/bin/dash")["link"].as_str()), (Some("hardlink"), Some("opt/hl/dash-via-symlink")));
        let libz = get("usr/lib/x86_64-linux-gnu/libz.so.1.2.13");
        assert_eq!((libz["type"].as_str(), libz["mode"].as_str()), (Some("file"), Some("0644")));
        assert_eq!((get("bin")["type"].as_str(), get("bin")["link"].as_str()), (Some("symlink"), Some("usr/bin")));
        assert_eq!(get("opt/hl/same-layer")["type"], "hardlink");
        assert_eq!(get("opt/hl/same-layer")["link"], "opt/hl/cross-layer");
        assert_eq!(get("usr/bin/suid")["mode"], "4755");
        assert_eq!(get("dev/null")["type"], "char");
        assert_eq!(get("opt/fifo")["type"], "fifo");
        assert_eq!(get("opt/big.bin")["size"].as_u64(), Some(2 << 20));
    }
}

#[test]
fn the_store_is_an_oci_layout_skopeo_and_umoci_read() {
    let f = fixture();
    // A store of its own, filled by one oci: and one docker-archive: import.
    let store = f.dir.join("store");
    let dir = f.dir.join("store-boxes");
    std::fs::create_dir_all(&dir).unwrap();
    build_ref(&dir, "s1", &format!("oci:../umoci@{}", f.umoci_digest), &store);
    let listed = String::from_utf8(run(Command::new("umoci").args(["ls", "--layout"]).arg(&store)).stdout).unwrap();
    let name = format!("sha256-{}", f.umoci_digest.strip_prefix("sha256:").unwrap());
    assert!(listed.lines().any(|l| l.trim() == name), "umoci ls: {listed}");
    let o = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:{name}", store.display())));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["Digest"].as_str(), Some(f.umoci_digest.as_str()));
    assert_eq!(info["Layers"].as_array().unwrap().len(), f.layers.len());
    // umoci unpacks the stored image like the original.
    let work = tempdir();
    run(Command::new("umoci").args(["unpack", "--rootless", "--image"]).arg(format!("{}:{name}", store.display())).arg(work.path().join("a")));
    run(Command::new("umoci").args(["unpack", "--rootless", "--image"]).arg(format!("{}:t", f.dir.join("umoci").display())).arg(work.path().join("b")));
    assert_same_tree("umoci unpack of the store", &snapshot(&work.path().join("a/rootfs")), "of the layout", &snapshot(&work.path().join("b/rootfs")));
    // Every blob is named by its sha256; no temp files are left.
    for e in std::fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256_file(&p), n, "store blob {} holds other content", p.display());
    }
}

#[test]
fn oci_output_keeps_the_runtime_config_of_the_top_image() {
    let f = fixture();
    let dir = f.dir.join("config");
    let layout = Layout::create(&dir.join("img"));
    let core = core_filesystem_layer();
    let img = layout.image(&[(&core, Comp::None)], "amd64");
    layout.set_index(&[(img.clone(), "c")]);
    let bx = dir.join("cfg.toml");
    write(
        &bx,
        format!("name = \"cfg\"\nversion = \"2.5\"\nsource_date_epoch = 86400\n\n[[layer]]\nimage = \"oci:img@{}\"\n\n[[layer]]\ndir = \"extra\"\n\n[output.oci]\n", digest_of(&img)),
    );
    write(&dir.join("extra/etc/motd"), "hi\n");
    build(&bx, &dir.join("out"), &f.cache);
    // The tag defaults to the box version.
    let o = run(Command::new("skopeo").args(["inspect", "--config"]).arg(format!("oci:{}:2.5", dir.join("out/cfg.oci").display())));
    let cfg: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(cfg["config"]["Env"], serde_json::json!(["PATH=/usr/bin"]), "{cfg}");
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/sh"]), "{cfg}");
    assert_eq!(cfg["created"], "1970-01-02T00:00:00Z");
    assert_eq!((cfg["os"].as_str(), cfg["architecture"].as_str()), (Some("linux"), Some("amd64")));
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
}
