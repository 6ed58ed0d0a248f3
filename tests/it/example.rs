//! The README's offline example (scripts/example.sh): `examples/hello/base.toml` makes an OCI
//! image from repository files, and `examples/hello/box.toml` pins it by manifest digest. The
//! second build succeeding proves the pinned digest still matches what the first one makes.
//!
//! The example is copied to a temp dir first (so `out/` beside the box files is a fresh one and
//! the work tree is left alone); the box files keep their relative references.

use crate::common;

use common::*;
use std::process::Command;

#[test]
fn offline_example_builds_and_its_pinned_digest_matches() {
    require_tools(&["cp", "bsdtar", "umoci"]);
    let w = tempdir();
    let hello = w.path().join("hello");
    run(Command::new("cp").arg("-a").arg(manifest_dir().join("examples/hello")).arg(&hello));
    let _ = std::fs::remove_dir_all(hello.join("out"));
    let cache = w.path().join("cache");

    // Step 1: the base image, into the default out/ beside base.toml.
    let o = run(stagebox(["build".as_ref(), hello.join("base.toml").as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()])
        .current_dir(w.path()));
    let base = parse_build_stdout(&o.stdout);
    assert_eq!(base.len(), 1, "{base:?}");
    assert_eq!(base[0].path, hello.join("out/base.oci"));

    // box.toml pins exactly the manifest digest step 1 printed.
    let box_text = String::from_utf8(read(&hello.join("box.toml"))).unwrap();
    let pinned = box_text
        .split("oci:out/base.oci@sha256:")
        .nth(1)
        .expect("box.toml pins oci:out/base.oci@sha256:…")
        .chars()
        .take(64)
        .collect::<String>();
    assert_eq!(
        base[0].sha256, pinned,
        "examples/hello/base.toml no longer builds the image examples/hello/box.toml pins: \
         if the change is intentional, update the digest in box.toml"
    );
    assert_eq!(oci_tag_digest(&hello.join("out/base.oci"), "1.0"), format!("sha256:{pinned}"));

    // Step 2: the box on top of it.
    let o = run(stagebox(["build".as_ref(), hello.join("box.toml").as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()])
        .current_dir(w.path()));
    let built = parse_build_stdout(&o.stdout);
    let names: Vec<String> = built.iter().map(|b| b.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["hello.tar.zst", "hello.oci"]);
    // Two boxes share out/: each has its own manifest, and no single manifest.json names one.
    let manifest = read_json(&hello.join("out/hello.manifest.json"));
    assert_eq!(read_json(&hello.join("out/base.manifest.json"))["box"], "base");
    assert!(!hello.join("out/manifest.json").exists());
    assert_eq!(manifest["box"], "hello");
    assert_eq!(manifest["inputs"][0]["ref"].as_str().unwrap(), format!("oci:out/base.oci@sha256:{pinned}"));
    assert_eq!(manifest["inputs"][0]["digest"].as_str().unwrap(), format!("sha256:{pinned}"));
    assert_eq!(manifest["inputs"][1]["ref"], "dir:app-rootfs");
    assert_eq!(sha256_file(&built[0].path), built[0].sha256);

    // The tarball holds both layers: the base's files and the app.
    let list = run(Command::new("bsdtar").arg("-tvf").arg(&built[0].path));
    assert!(list.stderr.is_empty(), "{}", String::from_utf8_lossy(&list.stderr));
    let list = String::from_utf8(list.stdout).unwrap();
    for want in ["etc/passwd", "etc/os-release", "usr/bin/hello", "bin -> usr/bin"] {
        assert!(list.contains(want), "hello.tar.zst lacks {want}:\n{list}");
    }
    // The OCI output unpacks, with the app executable.
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:0.1.0", hello.join("out/hello.oci").display()))
        .arg(w.path().join("bundle")));
    let app = w.path().join("bundle/rootfs/usr/bin/hello");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&app).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(read(&app), read(&manifest_dir().join("examples/hello/app-rootfs/usr/bin/hello")));
}
