//! Proof that builds reproduce and say what went in (issue 8): `build --check` on a box with
//! every format (tar, initramfs, OCI, EIF, SBOM, provenance), a `--check` that must fail,
//! `stagebox diff` per format on a deliberately changed input, the SPDX document validated
//! against the official SPDX 2.3 JSON schema (tests/data/spdx-schema-2.3.json, with Debian's
//! python3-jsonschema) and checked against the tar's own contents, and the in-toto statement's
//! bindings and canonical form.

use crate::common;

use common::prove::*;
use common::*;
use std::borrow::BorrowMut;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Fixture {
    dir: PathBuf,
    images: ProveImages,
    cache: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = fixture_dir("prove");
        let images = prove_images(&dir);
        Fixture { cache: dir.join("cache"), images, dir }
    })
}

/// The multi-format box, built once with `--check`: (box file, out dir, stderr).
fn checked() -> &'static (PathBuf, PathBuf, String) {
    static C: OnceLock<(PathBuf, PathBuf, String)> = OnceLock::new();
    C.get_or_init(|| {
        let f = fixture();
        let box_file = prove_box(&f.dir, &f.images, "multi", "key = value\n", &[("usr/share/doc/a.txt", "a\n")], ALL_OUTPUTS);
        let out = f.dir.join("multi-out");
        let o = run(stagebox(["build".as_ref(), box_file.as_os_str(), "--check".as_ref(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()])
            .borrow_mut());
        (box_file, out, String::from_utf8_lossy(&o.stderr).into_owned())
    })
}

/// The multi-format box with a changed input, built once: app.conf (and its hardlink)
/// changed, usr/share/doc/a.txt removed, usr/share/doc/b.txt added. Returns its out dir.
fn changed() -> &'static PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    C.get_or_init(|| {
        let f = fixture();
        let box_b = prove_box(&f.dir, &f.images, "multi-b", "key = other\n", &[("usr/share/doc/b.txt", "b\n")], ALL_OUTPUTS);
        let b_out = f.dir.join("multi-b-out");
        build(&box_b, &b_out, &f.cache);
        b_out
    })
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn check_reproduces_every_format_and_publishes_the_same_bytes_as_a_plain_build() {
    let (box_file, out, stderr) = checked();
    assert!(stderr.contains("checked: 9 output(s) and manifest.json identical byte for byte"), "{stderr}");
    assert!(stderr.contains("umask") && stderr.contains("TZ=") && stderr.contains("reverse order"), "{stderr}");
    assert_eq!(
        names(out),
        ["manifest.json", "multi.bzImage", "multi.cmdline", "multi.cpio.zst", "multi.eif", "multi.intoto.json", "multi.manifest.json", "multi.oci", "multi.pcrs", "multi.spdx.json", "multi.tar.gz"],
        "every output published, no temporary directory left"
    );
    // What --check published is what a plain build makes.
    let plain = fixture().dir.join("multi-plain");
    build(box_file, &plain, &fixture().cache);
    assert_eq!(hash_tree(out), hash_tree(&plain));
    let m = read_json(&out.join("manifest.json"));
    let formats: Vec<&str> = m["outputs"].as_array().unwrap().iter().map(|o| o["format"].as_str().unwrap()).collect();
    assert!(formats.contains(&"spdx") && formats.contains(&"in-toto"), "{formats:?}");
}

#[test]
fn check_fails_naming_output_offset_and_entry_and_publishes_nothing() {
    let f = fixture();
    let box_file = prove_box(&f.dir, &f.images, "perturbed", "key = value\n", &[], "[output.tar]\n\n[output.initramfs]\n");
    let out = f.dir.join("perturbed-out");
    let o = output(
        stagebox(["build".as_ref(), box_file.as_os_str(), "--check".as_ref(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()])
            .env("STAGEBOX_TEST_PERTURB", "etc/app.conf"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not reproducible: perturbed.tar differs at byte offset"), "{err}");
    assert!(err.contains("first differing entry: changed etc/app.conf"), "{err}");
    assert!(err.contains("content:") && err.contains("size: 12 -> 13"), "{err}");
    // Nothing published; both builds kept for `stagebox diff`.
    assert!(!out.join("perturbed.tar").exists() && !out.join("manifest.json").exists());
    let kept = out.join(names(&out).into_iter().find(|n| n.starts_with(".stagebox-check-")).expect("kept builds"));
    let d = output(stagebox(["diff".as_ref(), kept.join("a/perturbed.cpio").as_os_str(), kept.join("b/perturbed.cpio").as_os_str()]).borrow_mut());
    let text = String::from_utf8_lossy(&d.stdout);
    assert_eq!(d.status.code(), Some(1));
    // app.conf and app.conf.link are one hardlinked file: the entry that carries the bytes changes.
    assert!(text.contains("changed etc/app.conf") && text.contains(": content:") && text.contains("size: 12 -> 13"), "{text}");
}

/// `stagebox diff --json A B`: (exit code, changes).
fn diff_json(a: &Path, b: &Path) -> (i32, Vec<serde_json::Value>) {
    let o = output(stagebox(["diff".as_ref(), "--json".as_ref(), a.as_os_str(), b.as_os_str()]).borrow_mut());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap(), v["changes"].as_array().unwrap().clone())
}

/// A change of `item` (or, for `etc/app.conf`, of its hardlink `etc/app.conf.link`, whichever
/// entry carries the bytes in that format).
fn has(changes: &[serde_json::Value], item: &str, change: &str, field: Option<&str>) -> bool {
    changes.iter().any(|c| {
        (c["item"] == item || c["item"] == format!("{item}.link")) && c["change"] == change && field.is_none_or(|f| c["fields"].as_array().is_some_and(|fs| fs.iter().any(|x| x["field"] == f)))
    })
}

#[test]
fn diff_names_the_changed_entries_of_every_format() {
    let (_, a_out, _) = checked();
    let b_out = changed();
    let pairs = [("multi.tar.gz", "multi-b.tar.gz"), ("multi.cpio.zst", "multi-b.cpio.zst"), ("multi.oci", "multi-b.oci"), ("multi.eif", "multi-b.eif")];
    let (_, tar) = diff_json(&a_out.join(pairs[0].0), &b_out.join(pairs[0].1));
    assert!(has(&tar, "etc/app.conf", "changed", Some("content")), "{tar:?}");
    assert!(has(&tar, "usr/share/doc/a.txt", "removed", None) && has(&tar, "usr/share/doc/b.txt", "added", None), "{tar:?}");
    assert!(!tar.iter().any(|c| c["item"] == "init"), "unchanged entries are not reported: {tar:?}");
    let (code, cpio) = diff_json(&a_out.join(pairs[1].0), &b_out.join(pairs[1].1));
    assert_eq!(code, 1);
    assert!(has(&cpio, "etc/app.conf", "changed", Some("content")) && has(&cpio, "usr/share/doc/b.txt", "added", None), "{cpio:?}");
    let (_, oci) = diff_json(&a_out.join(pairs[2].0), &b_out.join(pairs[2].1));
    assert!(has(&oci, "layer 0: etc/app.conf", "changed", Some("content")), "{oci:?}");
    assert!(has(&oci, "config", "changed", None), "the diff_id changes: {oci:?}");
    let (_, eif) = diff_json(&a_out.join(pairs[3].0), &b_out.join(pairs[3].1));
    assert!(has(&eif, "PCR0", "changed", None) && has(&eif, "PCR2", "changed", None) || has(&eif, "PCR1", "changed", None), "{eif:?}");
    assert!(eif.iter().any(|c| c["item"].as_str().unwrap().contains("(ramdisk): etc/app.conf")), "{eif:?}");
    assert!(has(&eif, "section 2 (metadata)", "changed", Some("/ImageName")), "{eif:?}");
    // Identical outputs: exit 0, no changes. Different formats: a usage error.
    let (code, none) = diff_json(&a_out.join("multi.tar.gz"), &a_out.join("multi.tar.gz"));
    assert_eq!((code, none.len()), (0, 0));
    let o = output(stagebox(["diff".as_ref(), a_out.join("multi.tar.gz").as_os_str(), a_out.join("multi.eif").as_os_str()]).borrow_mut());
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn spdx_validates_against_the_schema_and_lists_every_file_with_its_tar_digest() {
    require_tool("python3");
    let (_, out, _) = checked();
    let spdx = out.join("multi.spdx.json");
    let schema = manifest_dir().join("tests/data/spdx-schema-2.3.json");
    let py = "import json,sys,jsonschema\nd=json.load(open(sys.argv[1]));s=json.load(open(sys.argv[2]))\njsonschema.Draft7Validator.check_schema(s)\nerrs=sorted(jsonschema.Draft7Validator(s).iter_errors(d),key=str)\nprint('\\n'.join(str(e.message) for e in errs)); sys.exit(1 if errs else 0)";
    let o = output(std::process::Command::new("python3").arg("-c").arg(py).arg(&spdx).arg(&schema));
    assert!(
        o.status.success(),
        "SPDX schema validation failed (needs python3-jsonschema: {INSTALL_HINT}):\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The validator is not a rubber stamp: a document without `spdxVersion` fails it.
    let mut broken = read_json(&spdx);
    broken.as_object_mut().unwrap().remove("spdxVersion");
    let bad = out.parent().unwrap().join("broken.spdx.json");
    write(&bad, serde_json::to_vec(&broken).unwrap());
    assert!(!output(std::process::Command::new("python3").arg("-c").arg(py).arg(&bad).arg(&schema)).status.success());

    let doc = read_json(&spdx);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:01Z", "created = SOURCE_DATE_EPOCH");
    // Every regular file of the tar output, with the sha256 of its bytes there.
    let tar_bytes = read(&out.join("multi.tar.gz"));
    let mut dec = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&tar_bytes[..]), &mut dec).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(&dec[..]);
    let mut by_path = std::collections::BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = format!("./{}", String::from_utf8_lossy(&e.path_bytes()).trim_end_matches('/'));
        match e.header().entry_type() {
            tar::EntryType::Regular => {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                by_path.insert(p.clone(), sha256_hex(&v));
                expected.insert(p, sha256_hex(&v));
            }
            tar::EntryType::Link => {
                let t = format!("./{}", String::from_utf8_lossy(&e.link_name_bytes().unwrap()));
                expected.insert(p, by_path[&t].clone());
            }
            _ => {}
        }
    }
    let got: std::collections::BTreeMap<String, String> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let sha = f["checksums"].as_array().unwrap().iter().find(|c| c["algorithm"] == "SHA256").unwrap()["checksumValue"].as_str().unwrap();
            (f["fileName"].as_str().unwrap().to_string(), sha.to_string())
        })
        .collect();
    assert!(expected.len() >= 6, "{expected:?}");
    assert_eq!(got, expected);
    // Inputs: the base image by manifest digest with its layer, the kernel; relationships.
    let m = read_json(&out.join("manifest.json"));
    let packages = doc["packages"].as_array().unwrap();
    for i in m["inputs"].as_array().unwrap() {
        assert!(packages.iter().any(|p| p["name"] == i["ref"] && p["versionInfo"] == i["digest"]), "input {i} missing");
    }
    assert!(packages.iter().any(|p| p["SPDXID"] == "SPDXRef-Input-0-Layer-0" && p["checksums"][0]["checksumValue"].as_str().unwrap().len() == 64));
    let rels = doc["relationships"].as_array().unwrap();
    let count = |t: &str| rels.iter().filter(|r| r["relationshipType"] == t).count();
    assert_eq!(count("DESCRIBES"), 1);
    assert_eq!(count("CONTAINS"), expected.len() + 2, "files + one layer per dir/base image");
    assert_eq!(count("GENERATED_FROM"), m["inputs"].as_array().unwrap().len());
    assert!(doc["documentNamespace"].as_str().unwrap().starts_with("https://spdx.org/spdxdocs/stagebox-multi-1.0-"));
}

#[test]
fn provenance_binds_outputs_inputs_and_box_file_in_canonical_json() {
    let (box_file, out, _) = checked();
    let bytes = read(&out.join("multi.intoto.json"));
    let st: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    let m = read_json(&out.join("manifest.json"));
    let subjects: Vec<(String, String)> =
        st["subject"].as_array().unwrap().iter().map(|s| (s["name"].as_str().unwrap().into(), s["digest"]["sha256"].as_str().unwrap().into())).collect();
    let outputs: Vec<(String, String)> = m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["format"] != "in-toto")
        .map(|o| (o["path"].as_str().unwrap().into(), o["sha256"].as_str().unwrap().into()))
        .collect();
    assert_eq!(subjects, outputs);
    for (name, sha) in &subjects {
        if !name.ends_with(".oci") {
            assert_eq!(&sha256_file(&out.join(name)), sha, "{name}");
        }
    }
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert!(deps.iter().any(|d| d["uri"] == "file:multi.toml" && d["digest"]["sha256"] == sha256_file(box_file)), "{deps:?}");
    for i in m["inputs"].as_array().unwrap() {
        let hex = i["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(deps.iter().any(|d| d["uri"] == i["ref"] && d["digest"]["sha256"] == hex), "{i}");
    }
    // Canonical: Python's sorted, whitespace-free dump gives the same bytes.
    let o = run(std::process::Command::new("python3")
        .arg("-c")
        .arg("import json,sys;sys.stdout.write(json.dumps(json.load(open(sys.argv[1])),sort_keys=True,separators=(',',':'),ensure_ascii=False))")
        .arg(out.join("multi.intoto.json")));
    assert_eq!(o.stdout, bytes);
}

/// diffoscope's members that differ, below the decompressed archive (`file list` stands for
/// entries added or removed).
fn diffoscope_members(a: &Path, b: &Path) -> std::collections::BTreeSet<String> {
    let o = output(std::process::Command::new(require_tool("diffoscope")).arg("--json").arg("-").arg(a).arg(b));
    assert_eq!(o.status.code(), Some(1), "diffoscope finds differences: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut node = &v;
    // Through the compression layer (one detail naming the decompressed file) to the archive.
    while node["details"].as_array().is_some_and(|d| d.len() == 1 && d[0]["details"].is_array() && d[0]["source1"] != "file list") {
        node = &node["details"][0];
    }
    node["details"].as_array().unwrap().iter().map(|d| d["source1"].as_str().unwrap().to_string()).collect()
}

#[test]
fn diffoscope_agrees_on_which_members_differ() {
    let (_, a_out, _) = checked();
    let b_out = changed();
    for (a, b) in [("multi.tar.gz", "multi-b.tar.gz"), ("multi.cpio.zst", "multi-b.cpio.zst")] {
        let theirs = diffoscope_members(&a_out.join(a), &b_out.join(b));
        let (_, ours) = diff_json(&a_out.join(a), &b_out.join(b));
        let mut mine: std::collections::BTreeSet<String> =
            ours.iter().filter(|c| c["change"] == "changed").map(|c| c["item"].as_str().unwrap().to_string()).collect();
        if ours.iter().any(|c| c["change"] == "added" || c["change"] == "removed") {
            mine.insert("file list".into());
        }
        assert_eq!(mine, theirs, "{a}: stagebox diff vs diffoscope");
    }
}

/// Files directly in `out` that are not staging leftovers (`.stagebox-*`).
fn published(out: &Path) -> Vec<String> {
    if !out.exists() {
        return Vec::new();
    }
    names(out).into_iter().filter(|n| !n.starts_with(".stagebox-")).collect()
}

#[test]
fn sigkill_at_any_point_leaves_no_output_and_the_next_build_is_sound() {
    let f = fixture();
    let box_file = prove_box(&f.dir, &f.images, "killed", "key = value\n", &[], "[output.tar]\ncompression = \"zstd\"\n\n[output.initramfs]\ncompression = \"xz\"\n\n[output.oci]\n");
    let reference = f.dir.join("killed-ref");
    build(&box_file, &reference, &f.dir.join("killed-cache-ref"));
    let cache = f.dir.join("killed-cache");
    let out = f.dir.join("killed-out");
    let mut killed_mid_build = 0;
    for ms in [5u64, 30, 80, 150, 300, 600] {
        let mut child = stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed_mid_build += 1;
        }
        let status = child.wait().unwrap();
        if status.success() {
            // It finished first: a complete build; start over for the next delay.
            assert_eq!(hash_tree(&out).into_iter().filter(|(k, _)| !k.starts_with(".stagebox-")).collect::<std::collections::BTreeMap<_, _>>(), hash_tree(&reference));
            std::fs::remove_dir_all(&out).unwrap();
        } else {
            assert_eq!(published(&out), Vec::<String>::new(), "killed after {ms} ms: nothing at an output path");
        }
    }
    assert!(killed_mid_build >= 2, "the delays must catch the build while it runs");
    // The store the killed builds left is trusted only as far as it verifies: the next build
    // (same store) gives the reference bytes.
    build(&box_file, &out, &cache);
    let got: std::collections::BTreeMap<_, _> = hash_tree(&out).into_iter().filter(|(k, _)| !k.starts_with(".stagebox-")).collect();
    assert_eq!(got, hash_tree(&reference));
}

#[test]
fn two_builds_sharing_one_store_at_once_both_succeed() {
    let f = fixture();
    let cache = f.dir.join("shared-cache");
    let boxes: Vec<PathBuf> = ["shared-a", "shared-b"]
        .iter()
        .map(|n| prove_box(&f.dir, &f.images, n, "key = value\n", &[], "[output.tar]\n\n[output.oci]\n"))
        .collect();
    let children: Vec<_> = boxes
        .iter()
        .map(|b| {
            let out = b.parent().unwrap().join("out");
            stagebox(["build".as_ref(), b.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // Same inputs, same rootfs: the tars are identical (names differ only in the OCI tag).
    let tar = |n: &str| read(&f.dir.join(n).join("out").join(format!("{n}.tar")));
    assert_eq!(tar("shared-a"), tar("shared-b"));
}

/// `stagebox build BOX` with a 1 MiB file size limit (RLIMIT_FSIZE; `ulimit -f` counts
/// 512-byte blocks in sh) and SIGXFSZ ignored, so writes fail with EFBIG as on a full disk:
/// it must fail with exit 1. Returns its stderr.
fn build_past_the_size_limit(box_file: &Path, out: &Path, cache: &Path) -> String {
    let o = output(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 2048; exec \"$@\"")
            .arg("sh")
            .arg(stagebox_bin())
            .args(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()])
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("STAGEBOX_CACHE"),
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    err
}

#[test]
fn full_disk_is_a_clear_error_and_old_outputs_stay() {
    require_tool("sh");
    let f = fixture();
    let box_file = prove_box(&f.dir, &f.images, "full", "key = value\n", &[], "[output.tar]\n");
    let out = f.dir.join("full-out");
    let cache = f.dir.join("full-cache");
    build(&box_file, &out, &cache);
    let before = hash_tree(&out);
    // A bigger rootfs, built past the file size limit.
    write(&f.dir.join("full/rootfs/usr/share/big"), vec![0x5au8; 3 << 20]);
    let err = build_past_the_size_limit(&box_file, &out, &cache);
    assert!(err.contains("File too large") && err.contains("dir layer dir:rootfs"), "names what was written and the cause: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let after: std::collections::BTreeMap<_, _> = hash_tree(&out).into_iter().filter(|(k, _)| !k.starts_with(".stagebox-")).collect();
    assert_eq!(after, before, "the old outputs are intact");

    // Now the output itself: inputs already in the store (four image layers, no dir layer),
    // the tar output too big for the 1 MiB limit, each layer's spill file of 0.75 MiB not.
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let layers: Vec<(String, Vec<u8>)> = big.chunks(big.len() / 4).enumerate().map(|(i, c)| (format!("big{i}"), layer(&[Entry::file(&format!("big{i}"), c)]))).collect();
    let img = umoci_image(&f.dir.join("full/big"), "big", &layers);
    let box2 = f.dir.join("full/big.toml");
    write(&box2, format!("name = \"big\"\nversion = \"1\"\n[[layer]]\nimage = \"oci:big@{img}\"\n\n[output.tar]\n"));
    build(&box2, &out, &cache);
    let before = hash_tree(&out);
    write(&box2, format!("name = \"big\"\nversion = \"2\"\nsource_date_epoch = 7\n[[layer]]\nimage = \"oci:big@{img}\"\n\n[output.tar]\n"));
    let err = build_past_the_size_limit(&box2, &out, &cache);
    assert!(err.contains("File too large") && err.contains("big.tar"), "names the output and the cause: {err}");
    let after: std::collections::BTreeMap<_, _> = hash_tree(&out).into_iter().filter(|(k, _)| !k.starts_with(".stagebox-")).collect();
    assert_eq!(after, before, "the old big.tar and manifest.json are intact");
}
