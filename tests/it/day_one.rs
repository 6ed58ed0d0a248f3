//! Day one as a new user (issue 24): each test is a command line a new user types, and asserts
//! what that user needs to read — the `file:line:column` of the mistake, what is allowed or
//! offered instead, and the exit code the README promises.

use crate::common;
use crate::registry_support;

use common::*;
use std::path::{Path, PathBuf};

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What a command did: exit code, stdout, stderr (never a panic).
struct Ran {
    code: i32,
    #[allow(dead_code)]
    stdout: String,
    stderr: String,
}

/// `stagebox ARGS…` run in `dir` with the store under `dir/cache`.
fn sb(dir: &Path, args: &[&str]) -> Ran {
    let mut c = stagebox(args);
    c.current_dir(dir).env("STAGEBOX_CACHE", dir.join("cache"));
    let o = output(&mut c);
    let r = Ran {
        code: o.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

/// A scratch directory with `rootfs/hello` and the given files.
fn scratch(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let t = tempdir();
    let d = t.path().to_path_buf();
    write(&d.join("rootfs/hello"), "hi\n");
    for (rel, text) in files {
        write(&d.join(rel), text);
    }
    (t, d)
}

/// The 1-based `line:column` of the first `needle` in `text`.
fn line_col(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in {text}"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("{line}:{col}")
}

/// `stagebox build box.toml` must fail with exit 2, `box.toml:LINE:COL:` at `needle`, and the
/// message parts in `says`; nothing is written.
fn build_refused_at(box_text: &str, needle: &str, says: &[&str]) {
    let syslinux = "kind = \"syslinux\"\nisolinux = \"/a\"\nisohdpfx = \"/b\"\nldlinux = \"/c\"\n";
    let grub = "kind = \"grub\"\nplatform = \"/usr/lib/grub/x86_64-efi\"\n";
    let (_t, d) = scratch(&[("box.toml", box_text), ("sl.toml", syslinux), ("grub.toml", grub)]);
    let r = sb(&d, &["build", "box.toml", "--offline"]);
    assert_eq!(r.code, 2, "{box_text}\n{}", r.stderr);
    let at = format!("stagebox: error: box.toml:{}: ", line_col(box_text, needle));
    assert!(r.stderr.starts_with(&at), "expected {at:?} for\n{box_text}\ngot: {}", r.stderr);
    for s in says {
        assert!(r.stderr.contains(s), "expected {s:?} in {}", r.stderr);
    }
    assert!(!r.stderr.contains("untagged"), "{}", r.stderr);
    assert!(!d.join("out").exists(), "a box-file error wrote outputs");
}

// ---------------------------------------------------------------------------------------------
// 1. Bootloader tables refuse unknown keys, with file:line:column and the allowed keys
// ---------------------------------------------------------------------------------------------

fn kernel_box(rest: &str) -> String {
    format!("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"oci:k@{D}\"\n{rest}")
}

#[test]
fn iso_bootloader_entry_with_an_unknown_key_is_refused() {
    let b = kernel_box(&format!("[output.iso]\nbootloader = [{{ definition = \"sl.toml\", image = \"oci:x@{D}\", label = \"X\" }}]\n"));
    build_refused_at(&b, "label", &["unknown field `label`", "expected `definition` or `image`"]);
}

#[test]
fn iso_bootloader_single_table_with_an_unknown_key_is_refused() {
    let b = kernel_box(&format!("[output.iso]\nbootloader = {{ definition = \"sl.toml\", image = \"oci:x@{D}\", label = \"X\" }}\n"));
    build_refused_at(&b, "label", &["unknown field `label`", "expected `definition` or `image`"]);
}

#[test]
fn disk_bootloader_typo_names_the_key_and_what_is_allowed() {
    let b = kernel_box(&format!("[output.disk]\nbootloader = {{ defintion = \"grub.toml\", image = \"oci:x@{D}\" }}\n"));
    build_refused_at(&b, "defintion", &["unknown field `defintion`", "expected `definition` or `image`"]);
}

#[test]
fn disk_bootloader_as_a_sub_table_refuses_an_unknown_key() {
    let b = kernel_box(&format!("[output.disk.bootloader]\ndefinition = \"grub.toml\"\nimage = \"oci:x@{D}\"\nlable = \"X\"\n"));
    build_refused_at(&b, "lable", &["unknown field `lable`", "expected `definition` or `image`"]);
}

#[test]
fn bootloader_of_the_wrong_type_says_what_it_takes() {
    let b = kernel_box("[output.disk]\nbootloader = 3\n");
    build_refused_at(&b, "3\n", &["invalid type: integer `3`", "a bootloader definition path", "or a list of them"]);
    let b = kernel_box("[output.iso]\nbootloader = [\"sl.toml\", 3]\n");
    build_refused_at(&b, "3]", &["invalid type: integer `3`", "a bootloader definition path"]);
}

#[test]
fn bootloader_table_without_definition_says_so() {
    let b = kernel_box(&format!("[output.iso]\nbootloader = [{{ image = \"oci:x@{D}\" }}]\n"));
    build_refused_at(&b, "{", &["missing field `definition`"]);
}

#[test]
fn every_box_table_refuses_an_unknown_key() {
    // Every table a box file has (a typo never silently drops a setting); tests/it/schema.rs
    // checks the full key lists of each.
    let tables = [
        "",
        "[kernel]\nimage = \"oci:k@D\"\n",
        "[policy]\n",
        "[policy.images.\"stagex/x\"]\n",
        "[policy.outputs]\n",
        "[output]\n",
        "[output.tar]\n",
        "[output.oci]\n",
        "[output.initramfs]\n",
        "[output.eif]\n",
        "[output.squashfs]\n",
        "[output.erofs]\n",
        "[output.sbom]\n",
        "[output.provenance]\n",
        "[output.deb]\n",
        "[output.rpm]\n",
        "[output.arch]\n",
        "[output.apk]\n",
        "[output.iso]\n",
        "[output.disk]\n",
        "[output.iso.bootloader]\ndefinition = \"sl.toml\"\n",
    ];
    for t in tables {
        let b = format!("name = \"n\"\n[[layer]]\ndir = \"rootfs\"\n{}colour = 1\n", t.replace("@D", &format!("@{D}")));
        build_refused_at(&b, "colour", &["unknown field `colour`"]);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A wrong pin names the box file's line, the digest, and what the source offers
// ---------------------------------------------------------------------------------------------

/// A layout `img/` with an index tagged `multi` (linux/amd64 + linux/arm64) and a single
/// linux/amd64 image tagged `small`. Returns (index, amd64, arm64, small, small's config).
struct Multi {
    index: String,
    amd64: String,
    arm64: String,
    small: String,
    small_config: String,
}

fn multi_layout(dir: &Path) -> Multi {
    let l = Layout::create(&dir.join("img"));
    let marker = |arch: &str| layer(&[Entry::dir("etc"), Entry::file("etc/arch", arch)]);
    let (ma, mb) = (marker("amd64\n"), marker("arm64\n"));
    let amd64 = l.image(&[(&ma, Comp::None)], "amd64");
    let arm64 = l.image(&[(&mb, Comp::None)], "arm64");
    let small = l.image(&[(&ma, Comp::None), (&mb, Comp::None)], "amd64");
    let idx = l.index_blob(&[amd64.clone(), arm64.clone()]);
    l.set_index(&[(idx.clone(), "multi"), (small.clone(), "small")]);
    let m = read_json(&dir.join("img/blobs/sha256").join(&digest_of(&small)[7..]));
    Multi {
        index: digest_of(&idx),
        amd64: digest_of(&amd64),
        arm64: digest_of(&arm64),
        small: digest_of(&small),
        small_config: m["config"]["digest"].as_str().unwrap().to_string(),
    }
}

/// One hex digit changed.
fn off_by_one(d: &str) -> String {
    let last = d.chars().last().unwrap();
    format!("{}{}", &d[..d.len() - 1], if last == '0' { '1' } else { '0' })
}

/// `stagebox build box.toml` of a box with one `image` layer; exit code and stderr.
fn build_image_box(dir: &Path, image: &str) -> (Ran, String) {
    let text = format!("name = \"demo\"\n[[layer]]\nimage = \"{image}\"\n[output.tar]\n");
    write(&dir.join("box.toml"), &text);
    (sb(dir, &["build", "box.toml", "--quiet"]), text)
}

#[test]
fn a_digest_one_hex_digit_off_names_the_line_and_lists_what_the_layout_offers() {
    let t = tempdir();
    let m = multi_layout(t.path());
    let wrong = off_by_one(&m.small);
    let (r, text) = build_image_box(t.path(), &format!("oci:img@{wrong}"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    let at = format!("stagebox: error: box.toml:{}: ", line_col(&text, "\"oci:img"));
    assert!(r.stderr.starts_with(&at), "expected {at:?}: {}", r.stderr);
    assert!(r.stderr.contains(&format!("the pinned digest {wrong} is not in the layout")), "{}", r.stderr);
    // Every manifest and index, with its platform and tag.
    for line in [
        format!("{} index (tag \"multi\")", m.index),
        format!("{} manifest linux/amd64", m.amd64),
        format!("{} manifest linux/arm64", m.arm64),
        format!("{} manifest linux/amd64 (tag \"small\")", m.small),
    ] {
        assert!(r.stderr.contains(&line), "expected {line:?} in {}", r.stderr);
    }
    assert!(!r.stderr.contains("No such file"), "{}", r.stderr);
    assert!(!t.path().join("out").exists());
}

#[test]
fn pinning_the_image_config_says_which_manifest_to_pin() {
    let t = tempdir();
    let m = multi_layout(t.path());
    let (r, text) = build_image_box(t.path(), &format!("oci:img@{}", m.small_config));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with(&format!("stagebox: error: box.toml:{}: ", line_col(&text, "\"oci:img"))), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{} is the image config, not a manifest or index; pin the manifest {}", m.small_config, m.small)),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("mediaType"), "{}", r.stderr);
}

#[test]
fn a_digest_without_its_algorithm_says_how_to_write_it() {
    let t = tempdir();
    let m = multi_layout(t.path());
    let hex = &m.small[7..];
    let (r, text) = build_image_box(t.path(), &format!("oci:img@{hex}"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with(&format!("stagebox: error: box.toml:{}: ", line_col(&text, "\"oci:img"))), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("a digest is written with its algorithm: oci:img@sha256:{hex}")), "{}", r.stderr);
    assert!(!r.stderr.contains("not pinned"), "{}", r.stderr);
}

#[test]
fn a_wrong_image_id_in_a_docker_archive_lists_the_ids_it_holds() {
    let t = tempdir();
    let m = multi_layout(t.path());
    require_tool("skopeo");
    run(std::process::Command::new("skopeo")
        .current_dir(t.path())
        .args(["copy", "--quiet", "oci:img:small", "docker-archive:img.tar:stagex/demo:1"]));
    let (r, text) = build_image_box(t.path(), &format!("docker-archive:img.tar@{}", off_by_one(&m.small_config)));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with(&format!("stagebox: error: box.toml:{}: ", line_col(&text, "\"docker-archive"))), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{} (docker.io/stagex/demo:1)", m.small_config)), "lists the image ID and its tags: {}", r.stderr);
}

#[test]
fn a_wrong_registry_pin_names_the_line_and_the_digest() {
    let t = tempdir();
    let m = multi_layout(t.path());
    let reg = registry_support::Registry::start();
    reg.push(&t.path().join("img"), "small", "stagex/core-small", &["--preserve-digests"]);
    let wrong = off_by_one(&m.small);
    let (r, text) = build_image_box(t.path(), &format!("{}/stagex/core-small@{wrong}", reg.host()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with(&format!("stagebox: error: box.toml:{}: ", line_col(&text, "\"127."))), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("has no manifest or index {wrong}: check the pinned digest")), "{}", r.stderr);
    assert!(r.stderr.contains("the repository has the tags small"), "lists what the repository offers: {}", r.stderr);
    // A tag it does not have.
    let (r, _) = build_image_box(t.path(), &format!("{}/stagex/core-small:smal", reg.host()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    write(&t.path().join("box.toml"), format!("name = \"demo\"\n[[layer]]\nimage = \"{}/stagex/core-small:smal\"\n[output.tar]\n", reg.host()));
    let r = sb(t.path(), &["lock", "box.toml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with("stagebox: error: box.toml:3:9: ") && r.stderr.contains("has no tag \"smal\""), "{}", r.stderr);
    assert!(r.stderr.contains("the repository has the tags small"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// 11. Closed pipes, exit codes, --json with one key style
// ---------------------------------------------------------------------------------------------

/// A box of one dir layer with a tar and an OCI output, built; returns (dir, out).
fn built_box() -> (tempfile::TempDir, PathBuf) {
    let (t, d) = scratch(&[("box.toml", "name = \"demo\"\nversion = \"1.0\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n[output.oci]\n")]);
    for i in 0..300 {
        write(&d.join(format!("rootfs/many/file-{i:04}")), format!("{i}\n"));
    }
    let r = sb(&d, &["build", "box.toml", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (t, d)
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // `stagebox inspect out/demo.tar | head`: the reader is gone before stagebox writes.
    let (_t, d) = built_box();
    let mut c = stagebox(["inspect", "out/demo.tar"]);
    c.current_dir(&d).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "nothing to say on a closed pipe: {err}");
    // And through a real `head`.
    let o = output(std::process::Command::new("bash").current_dir(&d).arg("-c").arg(format!(
        "set -o pipefail; {} inspect out/demo.tar | head -n 1",
        stagebox_bin().display()
    )));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
}

#[test]
fn a_missing_box_file_is_a_usage_error() {
    let (_t, d) = scratch(&[]);
    for cmd in ["build", "lock"] {
        let r = sb(&d, &[cmd, "nofile.toml"]);
        assert_eq!(r.code, 2, "{cmd}: {}", r.stderr);
        assert!(r.stderr.contains("nofile.toml: No such file or directory"), "{cmd}: {}", r.stderr);
    }
    let r = sb(&d, &["build"]);
    assert_eq!(r.code, 2, "no box file at all: {}", r.stderr);
}

/// Every object key in `v` is snake_case, except inside documents of other formats that are
/// shown verbatim (`config`: an OCI image config; `describe_eif`: nitro-cli's view) and maps
/// whose keys are data (`pcrs`: register names, `annotations`).
fn assert_snake_case_keys(what: &str, v: &serde_json::Value, path: &str) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                assert!(ok, "{what}: key {path}/{k} is not snake_case");
                if !["config", "describe_eif", "pcrs", "annotations"].contains(&k.as_str()) {
                    assert_snake_case_keys(what, x, &format!("{path}/{k}"));
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| assert_snake_case_keys(what, x, path)),
        _ => {}
    }
}

fn json_of(r: &Ran, what: &str) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}\n{}", r.stdout, r.stderr))
}

#[test]
fn build_and_lock_print_json_with_the_same_key_style_as_every_command() {
    let (_t, d) = built_box();
    let r = sb(&d, &["build", "box.toml", "--quiet", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json_of(&r, "build --json");
    assert_eq!(j["box"], "demo");
    let out_dir = PathBuf::from(j["out_dir"].as_str().unwrap());
    let outputs = j["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2);
    let tar = outputs.iter().find(|o| o["format"] == "tar").unwrap();
    assert_eq!(tar["sha256"].as_str().unwrap(), sha256_file(&d.join(&out_dir).join(tar["path"].as_str().unwrap())));
    assert_eq!(j, read_json(&d.join("out/manifest.json")).as_object().map(|m| {
        let mut m = m.clone();
        m.insert("out_dir".into(), j["out_dir"].clone());
        serde_json::Value::Object(m)
    }).unwrap(), "build --json is manifest.json plus out_dir");

    // lock --json: an unpinned tag of the OCI layout just built.
    let oci = outputs.iter().find(|o| o["format"] == "oci").unwrap();
    write(&d.join("img.toml"), "name = \"img\"\n[[layer]]\nimage = \"oci:out/demo.oci:1.0\"\n[output.tar]\n");
    let r = sb(&d, &["lock", "img.toml", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lock = json_of(&r, "lock --json");
    assert_eq!(lock["images"][0]["ref"], "oci:out/demo.oci:1.0");
    assert_eq!(lock["images"][0]["digest"].as_str().unwrap(), format!("sha256:{}", oci["sha256"].as_str().unwrap()));
    assert_eq!(lock["lock_file"], "img.lock");
    let r = sb(&d, &["lock", "img.toml", "--check", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let check = json_of(&r, "lock --check --json");
    assert_eq!(check["images"][0]["status"], "current", "{check}");

    // One key style across every command's JSON.
    let inspect_tar = json_of(&sb(&d, &["inspect", "out/demo.tar", "--json"]), "inspect tar");
    let inspect_oci = json_of(&sb(&d, &["inspect", "oci:out/demo.oci:1.0", "--json"]), "inspect oci");
    let diff = sb(&d, &["diff", "out/demo.tar", "out/demo.tar", "--json"]);
    let diff = json_of(&diff, "diff");
    for (what, v) in [("build", &j), ("lock", &lock), ("lock --check", &check), ("inspect tar", &inspect_tar), ("inspect oci", &inspect_oci), ("diff", &diff)] {
        assert_snake_case_keys(what, v, "");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A local path is never a registry request
// ---------------------------------------------------------------------------------------------

#[test]
fn a_mistyped_file_name_says_no_such_file_and_sends_no_request() {
    let (_t, d) = built_box();
    let r = sb(&d, &["inspect", "out/x.cpi.gz"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no such file or directory") && r.stderr.contains("out/x.cpi.gz"), "{}", r.stderr);
    assert!(!r.stderr.contains("GET ") && !r.stderr.contains("docker.io"), "no registry was asked: {}", r.stderr);

    // Even with a registry host in front, a name that ends like a file is a path: the
    // server sees no request.
    let server = registry_support::Server::start(|_, _, c| registry_support::respond(c, "404 Not Found", &[], b""));
    for target in [format!("127.0.0.1:{}/out/x.cpi.gz", server.port), "./demo".into(), "out/Demo".into()] {
        let r = sb(&d, &["inspect", &target]);
        assert_eq!(r.code, 2, "{target}: {}", r.stderr);
        assert!(r.stderr.contains("no such file or directory"), "{target}: {}", r.stderr);
    }
    assert!(server.seen().is_empty(), "a local path reached a registry: {:?}", server.seen().len());

    // An existing file named as an image in a box: say which prefix to give it.
    write(&d.join("img.toml"), "name = \"img\"\n[[layer]]\nimage = \"out/demo.tar\"\n[output.tar]\n");
    let r = sb(&d, &["build", "img.toml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with("stagebox: error: img.toml:3:9: \"out/demo.tar\" is a local path"), "{}", r.stderr);
    assert!(r.stderr.contains("oci-archive:out/demo.tar or docker-archive:out/demo.tar"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// 8. Every image is checked against the box's platform
// ---------------------------------------------------------------------------------------------

/// [`multi_layout`] plus `arm`: an arm64-only image (a manifest, no index).
fn layout_with_arm_only(dir: &Path) -> (Multi, String) {
    let m = multi_layout(dir);
    let l = Layout { dir: dir.join("img") };
    let arm = l.image(&[(&layer(&[Entry::dir("etc"), Entry::file("etc/arch", "arm64\n"), Entry::file("bzImage", "not a kernel")]), Comp::None)], "arm64");
    let mut index = read_json(&dir.join("img/index.json"));
    let mut arm_entry = arm.clone();
    arm_entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "arm"});
    index["manifests"].as_array_mut().unwrap().push(arm_entry);
    write(&dir.join("img/index.json"), serde_json::to_vec(&index).unwrap());
    (m, digest_of(&arm))
}

#[test]
fn an_arm64_layer_in_an_amd64_box_is_refused_naming_the_image() {
    let t = tempdir();
    let (_, arm) = layout_with_arm_only(t.path());
    let (r, text) = build_image_box(t.path(), &format!("oci:img@{arm}"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with(&format!("stagebox: error: box.toml:{}: ", line_col(&text, "\"oci:img"))), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("layer 1, oci:img@{arm}: its image config is for linux/arm64, but the box builds for linux/amd64")),
        "{}",
        r.stderr
    );
    assert!(!t.path().join("out").exists());
}

#[test]
fn an_arm64_kernel_image_in_an_amd64_box_is_refused_naming_the_kernel() {
    let t = tempdir();
    let (_, arm) = layout_with_arm_only(t.path());
    write(&t.path().join("rootfs/init"), "#!/bin/sh\n");
    let text = format!("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"oci:img@{arm}\"\npath = \"/bzImage\"\n[output.initramfs]\n");
    write(&t.path().join("box.toml"), &text);
    let r = sb(t.path(), &["build", "box.toml", "--quiet"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("kernel, oci:img@{arm}: its image config is for linux/arm64, but the box builds for linux/amd64")), "{}", r.stderr);
    assert!(r.stderr.starts_with(&format!("stagebox: error: box.toml:{}: ", line_col(&text, "\"oci:img"))), "{}", r.stderr);
}

#[test]
fn a_box_platform_picks_that_manifest_and_an_index_without_it_lists_what_it_has() {
    let t = tempdir();
    let m = multi_layout(t.path());
    let text = format!("name = \"demo\"\nplatform = \"linux/arm64\"\n[[layer]]\nimage = \"oci:img@{}\"\n[output.tar]\n", m.index);
    write(&t.path().join("box.toml"), &text);
    let r = sb(t.path(), &["build", "box.toml", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let o = run(std::process::Command::new("tar").arg("-xOf").arg(t.path().join("out/demo.tar")).arg("etc/arch"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "arm64\n", "the arm64 manifest of the index was used");
    // --platform overrides the box for one build.
    let r = sb(t.path(), &["build", "box.toml", "--quiet", "--platform", "linux/amd64", "--out", "out-amd64"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let o = run(std::process::Command::new("tar").arg("-xOf").arg(t.path().join("out-amd64/demo.tar")).arg("etc/arch"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "amd64\n");

    write(&t.path().join("box.toml"), text.replace("linux/arm64", "linux/s390x"));
    let r = sb(t.path(), &["build", "box.toml", "--quiet"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with(&format!("stagebox: error: box.toml:{}: ", line_col(&text, "\"oci:img"))), "{}", r.stderr);
    assert!(r.stderr.contains("the index has no manifest for linux/s390x"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("linux/amd64 ({})", m.amd64)) && r.stderr.contains(&format!("linux/arm64 ({})", m.arm64)), "{}", r.stderr);

    // A bad platform value, and outputs that cannot be built for a platform (an EIF is
    // x86_64 or aarch64 only; the OCI output says any platform, tests/it/arm64.rs).
    write(&t.path().join("box.toml"), text.replace("linux/arm64", "arm64"));
    let r = sb(t.path(), &["build", "box.toml", "--quiet"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("box.toml:2:12: platform \"arm64\" must be OS/ARCH"), "{}", r.stderr);
    let eif = format!("[output.tar]\n[output.eif]\n[kernel]\nimage = \"oci:img@{}\"\n", m.index);
    write(&t.path().join("box.toml"), text.replace("linux/arm64", "linux/riscv64").replace("[output.tar]\n", &eif));
    let r = sb(t.path(), &["build", "box.toml", "--quiet"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("box.toml:2:12: [output.eif] cannot be built for linux/riscv64 yet"), "{}", r.stderr);
}

#[test]
fn lock_refuses_to_pin_an_arm64_only_image_for_an_amd64_box() {
    let t = tempdir();
    layout_with_arm_only(t.path());
    let text = "name = \"demo\"\n[[layer]]\nimage = \"oci:img:arm\"\n[output.tar]\n";
    write(&t.path().join("box.toml"), text);
    let r = sb(t.path(), &["lock", "box.toml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with("stagebox: error: box.toml:3:9: oci:img:arm: its image config is for linux/arm64"), "{}", r.stderr);
    assert!(r.stderr.contains("not pinned"), "{}", r.stderr);
    assert!(!t.path().join("box.lock").exists(), "nothing was pinned");
    // For an arm64 box it pins.
    write(&t.path().join("box.toml"), text.replace("[[layer]]", "platform = \"linux/arm64\"\n[[layer]]"));
    let r = sb(t.path(), &["lock", "box.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// 10. Offline and air gap: every missing image listed, `pull`, `verify` of a local copy, and
//     the docs' walk-through run end to end
// ---------------------------------------------------------------------------------------------

#[test]
fn build_offline_lists_every_missing_image_with_its_line() {
    // Registry images pinned by digest, an empty store, and no registry at all: nothing is
    // contacted, and all three are named.
    let (_t, d) = scratch(&[]);
    let (a, b, k) = (off_by_one(D), D.to_string(), format!("{}0", &D[..D.len() - 1]));
    let text = format!(
        "name = \"demo\"\n[[layer]]\nimage = \"127.0.0.1:9/stagex/core-a@{a}\"\n[[layer]]\nimage = \"127.0.0.1:9/stagex/core-b@{b}\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"127.0.0.1:9/stagex/user-linux@{k}\"\npath = \"/bzImage\"\n[output.initramfs]\n"
    );
    write(&d.join("box.toml"), &text);
    let r = sb(&d, &["build", "box.toml", "--offline", "--quiet"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--offline: 3 of the box's 3 registry image(s) are not in the store"), "{}", r.stderr);
    for (needle, digest) in [("\"127.0.0.1:9/stagex/core-a", &a), ("\"127.0.0.1:9/stagex/core-b", &b), ("\"127.0.0.1:9/stagex/user-linux", &k)] {
        let line = format!("box.toml:{}: ", line_col(&text, needle));
        assert!(r.stderr.contains(&line) && r.stderr.contains(&format!("manifest {digest}")), "expected {line} and {digest} in {}", r.stderr);
    }
    assert!(r.stderr.contains("stagebox pull"), "says how to fill the store: {}", r.stderr);
}

/// A throwaway signing key: (GNUPGHOME, fingerprint); its public key exported to `keyring`.
fn throwaway_key(dir: &Path, keyring: &Path) -> (PathBuf, String) {
    require_tools(&["gpg", "skopeo"]);
    let home = dir.join("g");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let mut c = std::process::Command::new("gpg");
        c.env("GNUPGHOME", &home).args(["--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]).args(args);
        run(&mut c)
    };
    gpg(&["--quick-gen-key", "signer <signer@stagebox.test>", "ed25519", "sign", "never"]);
    write(keyring, gpg(&["--armor", "--export", "signer@stagebox.test"]).stdout);
    let o = gpg(&["--with-colons", "--list-keys", "signer@stagebox.test"]);
    let fpr = String::from_utf8(o.stdout).unwrap().lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_string();
    (home, fpr)
}

/// `skopeo standalone-sign` the manifest blob `digest` of layout `img` as `identity`, into the
/// lookaside `sigs/REPO@sha256=HEX/signature-1`.
fn sign(d: &Path, home: &Path, fpr: &str, digest: &str, identity: &str) {
    let repo = identity.rsplit_once(':').map_or(identity, |(n, _)| n);
    let out = d.join(format!("sigs/{repo}@sha256={}/signature-1", &digest[7..]));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    run(std::process::Command::new("skopeo")
        .env("GNUPGHOME", home)
        .args(["standalone-sign", "--output"])
        .arg(&out)
        .arg(d.join("img/blobs/sha256").join(&digest[7..]))
        .args([identity, fpr]));
}

/// The ```sh block of `doc` that starts with `# MARKER` (the walk-through as the docs show it).
fn doc_block(doc: &str, marker: &str) -> String {
    let text = std::fs::read_to_string(manifest_dir().join(doc)).unwrap();
    let start = format!("```sh\n# {marker}\n");
    let i = text.find(&start).unwrap_or_else(|| panic!("{doc} has no block starting with `# {marker}`"));
    let body = &text[i + 6..];
    body[..body.find("```").unwrap()].to_string()
}

fn run_block(dir: &Path, block: &str, env: &[(&str, String)]) -> std::process::Output {
    let bin_dir = stagebox_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = std::process::Command::new("bash");
    c.args(["-euo", "pipefail", "-c", block]).current_dir(dir).env("PATH", path).env("STAGEBOX_CACHE", dir.join("default-cache")).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = output(&mut c);
    assert!(o.status.success(), "this block failed:\n{block}\nstdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn airgap_walk_through_in_the_docs_runs_offline_end_to_end() {
    let t = tempdir();
    let d = t.path();
    let m = multi_layout(d);
    let reg = registry_support::Registry::start();
    reg.push(&d.join("img"), "small", "stagex/core-demo", &["--preserve-digests"]);
    reg.push(&d.join("img"), "multi", "stagex/core-multi", &["--all", "--preserve-digests"]);
    let (home, fpr) = throwaway_key(d, &d.join("keyring.asc"));
    sign(d, &home, &fpr, &m.small, "stagex/core-demo:small");
    sign(d, &home, &fpr, &m.amd64, "stagex/core-multi:multi");
    let host = reg.host();
    write(
        &d.join("box.toml"),
        format!(
            "name = \"demo\"\n[[layer]]\nimage = \"{host}/stagex/core-demo:small\"\n[[layer]]\nimage = \"{host}/stagex/core-multi:multi\"\n[output.tar]\n[policy]\nkeyring = \"keyring.asc\"\nsignatures = \"sigs\"\nquorum = 1\n"
        ),
    );

    // Connected: lock, pull, pack.
    let o = run_block(d, &doc_block("docs/registries.md", "airgap: connected"), &[("REGISTRY", host.clone())]);
    let pulled = String::from_utf8_lossy(&o.stdout);
    assert!(pulled.contains(&format!("{}  {host}/stagex/core-demo:small", m.small)), "pull names each image and its pin: {pulled}");
    assert!(pulled.contains(&format!("{}  {host}/stagex/core-multi:multi", m.amd64)), "the linux/amd64 manifest of the index: {pulled}");

    // The registry is gone: everything after this is offline.
    reg.stop();
    drop(reg);
    let image = format!("{host}/stagex/core-demo@{}", m.small);
    run_block(d, &doc_block("docs/registries.md", "airgap: offline"), &[("IMAGE", image)]);
    let tar = d.join("airgapped/out/demo.tar");
    let o = run(std::process::Command::new("tar").arg("-xOf").arg(&tar).arg("etc/arch"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "amd64\n", "built from the carried store");

    // A local copy of the image verifies too, under the repository its signatures name.
    let r = sb(d, &["verify", &format!("oci:img@{}", m.small), "--keyring", "keyring.asc", "--signatures", "sigs", "--quorum", "1"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("stagex/core-demo"), "{}", r.stdout);
    let r = sb(d, &["verify", "oci:img:small", "--keyring", "keyring.asc", "--signatures", "sigs", "--quorum", "1", "--repository", "stagex/core-multi"]);
    assert_ne!(r.code, 0, "signatures of another repository do not count: {}", r.stdout);
}

#[test]
fn pull_refs_fills_the_store_for_an_offline_build() {
    let t = tempdir();
    let d = t.path();
    let m = multi_layout(d);
    let reg = registry_support::Registry::start();
    reg.push(&d.join("img"), "small", "stagex/core-demo", &["--preserve-digests"]);
    let image = format!("{}/stagex/core-demo@{}", reg.host(), m.small);
    let r = sb(d, &["pull", &image, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = json_of(&r, "pull --json");
    assert_eq!(j["images"][0]["digest"], m.small.as_str());
    assert_eq!(j["images"][0]["platform"], "linux/amd64");
    assert_snake_case_keys("pull", &j, "");
    reg.stop();
    let (r, _) = build_image_box_with(d, &image, &["--offline"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = sb(d, &["pull", &image, "--offline"]);
    assert_eq!(r.code, 2, "pull --offline makes no sense: {}", r.stderr);
}

fn build_image_box_with(dir: &Path, image: &str, extra: &[&str]) -> (Ran, String) {
    let text = format!("name = \"demo\"\n[[layer]]\nimage = \"{image}\"\n[output.tar]\n");
    write(&dir.join("box.toml"), &text);
    let mut args = vec!["build", "box.toml", "--quiet"];
    args.extend(extra);
    (sb(dir, &args), text)
}
