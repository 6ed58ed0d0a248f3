//! Memory bounds of the readers of untrusted input (docs/limits.md), end to end through the
//! `stagebox` binary: each test writes an input made to pass one documented cap, runs the
//! binary, and checks a clear error (exit 1, what was refused and where) and a peak resident
//! memory of the child below 200 MiB (from GNU time).

use crate::common;

use common::{gz_with_zeros, raw_tar_header, tar_padded, Comp, Layout};
use std::path::Path;
use std::process::Command;

/// The bound every reader keeps, whatever the input.
const MAX_RSS_KIB: i64 = 200 * 1024;

/// Run `stagebox args` in `scratch` ([`common::peak_rss`]): its exit code, stderr and peak
/// RSS in KiB.
fn measured(args: &[&std::ffi::OsStr], scratch: &Path) -> (i32, String, i64) {
    std::fs::create_dir_all(scratch.join("tmp")).unwrap();
    let mut cmd = common::stagebox(args);
    cmd.current_dir(scratch).env_remove("STAGEBOX_MAX_LAYER_BYTES").env("TMPDIR", scratch.join("tmp"));
    common::peak_rss(&cmd)
}

/// `stagebox build` of a box whose one layer is `image` (an `oci:` reference), into
/// `dir/out`; returns exit code, stderr and peak RSS.
fn build(dir: &Path, image: &str) -> (i32, String, i64) {
    let box_file = dir.join("box.toml");
    std::fs::write(&box_file, format!("name = \"demo\"\nversion = \"1.0\"\n\n[[layer]]\nimage = \"{image}\"\n\n[output.tar]\n")).unwrap();
    let (out, cache) = (dir.join("out"), dir.join("cache"));
    measured(&["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "--quiet".as_ref()], dir)
}

/// An OCI layout `dir/img` holding one image of `layer` (zstd); returns its pinned reference.
fn one_layer_image(dir: &Path, layer: &[u8]) -> String {
    let l = Layout::create(&dir.join("img"));
    let m = l.image(&[(layer, Comp::Zstd)], "amd64");
    l.set_index(&[(m.clone(), "latest")]);
    format!("oci:img@{}", common::digest_of(&m))
}

/// A refused build: exit 1, `want` in the message with the layer named, nothing written,
/// peak RSS under the bound.
fn assert_refused(dir: &Path, (code, stderr, rss): (i32, String, i64), want: &str) {
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(want), "expected {want:?} in:\n{stderr}");
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB (bound {MAX_RSS_KIB} KiB)\n{stderr}");
    let out = dir.join("out");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "output written");
    eprintln!("refused at {rss} KiB: {}", stderr.trim());
}

fn end_of_archive() -> Vec<u8> {
    vec![0u8; 1024]
}

#[test]
fn a_layer_of_more_entries_than_the_tree_holds_is_refused_in_bounded_memory() {
    // 520,000 empty files (the tree holds at most 500,000 paths, docs/limits.md): the
    // tree is full when the refusal comes, the worst this input can do.
    let dir = common::tempdir();
    let mut tar = Vec::with_capacity(521_000 * 512);
    for d in 0..520 {
        tar.extend(raw_tar_header(format!("d{d:03}/").as_bytes(), b'5', 0, &[]));
        for f in 0..999 {
            tar.extend(raw_tar_header(format!("d{d:03}/f{f:03}").as_bytes(), b'0', 0, &[]));
        }
    }
    tar.extend(end_of_archive());
    let image = one_layer_image(dir.path(), &tar);
    drop(tar);
    let r = build(dir.path(), &image);
    assert!(r.1.contains(&format!("layer {image} #1")), "{}", r.1);
    assert_refused(dir.path(), r, "the rootfs would hold more than 500000 paths");
}

#[test]
fn deep_directories_are_refused_at_the_name_budget_in_bounded_memory() {
    // Paths of 2,000 levels (4,000 bytes, the most a path may have): each makes 2,000
    // parents whose keys add up to 4 MB, so 16 of them pass the 48 MiB name budget.
    let dir = common::tempdir();
    let mut tar = Vec::new();
    for i in 0..40 {
        let mut p = format!("t{i:02}");
        while p.len() + 2 < 4000 {
            p += "/x";
        }
        // a PAX path record: longer than a ustar header holds
        let rec = format!("path={p}\n");
        let mut len = rec.len() + 1;
        while len != rec.len() + len.to_string().len() + 1 {
            len = rec.len() + len.to_string().len() + 1;
        }
        let body = format!("{len} {rec}");
        tar.extend(raw_tar_header(b"PaxHeader", b'x', body.len() as u64, &[]));
        tar.extend(tar_padded(body.as_bytes()));
        tar.extend(raw_tar_header(b"f", b'0', 0, &[]));
    }
    tar.extend(end_of_archive());
    let image = one_layer_image(dir.path(), &tar);
    assert_refused(dir.path(), build(dir.path(), &image), "would take more than 50331648 bytes");
}


#[test]
fn a_huge_pax_record_is_refused_in_bounded_memory() {
    // a PAX header claiming 1 GiB of records (they are read into memory; capped at 16 MiB)
    let dir = common::tempdir();
    const HUGE: u64 = 1 << 30;
    let tail = [raw_tar_header(b"x", b'0', 0, &[]), end_of_archive()].concat();
    let (blob, diff_id) = gz_with_zeros(&raw_tar_header(b"PaxHeaders/x", b'x', HUGE, &[]), 300 << 20, &tail);
    let l = Layout::create(&dir.path().join("img"));
    let layer = l.blob(Comp::Gzip.media_type(), &blob);
    let cfg = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]}});
    let cfg = l.blob("application/vnd.oci.image.config.v1+json", &serde_json::to_vec(&cfg).unwrap());
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": [layer]});
    let m = l.blob("application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&m).unwrap());
    l.set_index(&[(m.clone(), "latest")]);
    let image = format!("oci:img@{}", common::digest_of(&m));
    assert_refused(dir.path(), build(dir.path(), &image), "possible archive bomb");
}

fn symlink(name: &str, target: &[u8]) -> Vec<u8> {
    if target.len() <= 100 {
        return raw_tar_header(name.as_bytes(), b'2', 0, &[(157, target)]);
    }
    let rec = [b"linkpath=".as_slice(), target, b"\n"].concat();
    let mut len = rec.len() + 1;
    while len != rec.len() + len.to_string().len() + 1 {
        len = rec.len() + len.to_string().len() + 1;
    }
    let body = [format!("{len} ").as_bytes(), &rec].concat();
    [raw_tar_header(b"PaxHeader", b'x', body.len() as u64, &[]), tar_padded(&body), raw_tar_header(name.as_bytes(), b'2', 0, &[])].concat()
}

#[test]
fn a_long_symlink_chain_is_refused_in_bounded_memory() {
    // s0 -> s1 -> ... -> s59 -> d, then an entry below s0: more than 40 hops
    let dir = common::tempdir();
    let mut tar = raw_tar_header(b"d/", b'5', 0, &[]);
    for i in 0..60 {
        let target = if i == 59 { "d".to_string() } else { format!("s{}", i + 1) };
        tar.extend(symlink(&format!("s{i}"), target.as_bytes()));
    }
    tar.extend(raw_tar_header(b"s0/f", b'0', 0, &[]));
    tar.extend(end_of_archive());
    let image = one_layer_image(dir.path(), &tar);
    assert_refused(dir.path(), build(dir.path(), &image), "too many levels of symlinks");
}

#[test]
fn long_symlink_targets_are_refused_in_bounded_memory() {
    // one target longer than symlink(2) allows, then many of the longest allowed (4 KiB
    // each: 16,000 of them pass the 48 MiB name budget)
    let dir = common::tempdir();
    let tar = [symlink("l", &vec![b'a'; 5000]), end_of_archive()].concat();
    let image = one_layer_image(dir.path(), &tar);
    assert_refused(dir.path(), build(dir.path(), &image), "symlink target longer than 4096 bytes");

    let dir = common::tempdir();
    let mut tar = Vec::new();
    for i in 0..16_000 {
        tar.extend(symlink(&format!("l{i:05}"), &vec![b'a'; 4000]));
    }
    tar.extend(end_of_archive());
    let image = one_layer_image(dir.path(), &tar);
    assert_refused(dir.path(), build(dir.path(), &image), "would take more than 50331648 bytes");
}

// ---------------------------------------------------------------------------------------
// JSON of an image: index, manifest, config

/// A layout `dir/img` with one empty-layer image whose config is `config`, and an index
/// padded with an annotation of `index_pad` bytes.
fn json_image(dir: &Path, config: &[u8], manifest_pad: usize, index_pad: usize) -> String {
    let l = Layout::create(&dir.join("img"));
    let layer = end_of_archive();
    let ld = l.blob(Comp::None.media_type(), &layer);
    let cfg = l.blob("application/vnd.oci.image.config.v1+json", config);
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": [ld],
        "annotations": {"pad": "p".repeat(manifest_pad)},
    });
    let m = l.blob("application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&m).unwrap());
    let mut entry = m.clone();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest", "pad": "p".repeat(index_pad)});
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    common::write(&dir.join("img/index.json"), serde_json::to_vec(&idx).unwrap());
    format!("oci:img@{}", common::digest_of(&m))
}

/// A config whose JSON value tree is as large as 4 MiB of text can make: ~1.4 M empty
/// arrays (32 bytes each once parsed, against 3 bytes of text).
fn worst_config(len: usize) -> Vec<u8> {
    let ids = format!("\"sha256:{}\"", common::sha256_hex(&end_of_archive()));
    let head = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{ids}]}},\"x\":[");
    let mut v = head.into_bytes();
    while v.len() + 5 < len {
        v.extend_from_slice(b"[],");
    }
    v.extend_from_slice(b"[]]}");
    v
}

#[test]
fn an_index_json_over_the_json_cap_is_refused() {
    let dir = common::tempdir();
    let image = json_image(dir.path(), &worst_config(1000), 0, 5 << 20);
    assert_refused(dir.path(), build(dir.path(), &image), "refusing JSON over 4194304");
}

#[test]
fn a_manifest_over_the_json_cap_is_refused() {
    let dir = common::tempdir();
    let image = json_image(dir.path(), &worst_config(1000), 5 << 20, 0);
    assert_refused(dir.path(), build(dir.path(), &image), "refusing JSON blobs over 4194304");
}

#[test]
fn configs_at_and_over_the_json_cap_stay_in_bounded_memory() {
    // just under the cap: read, parsed (the worst value tree 4 MiB can make), built
    let dir = common::tempdir();
    let image = json_image(dir.path(), &worst_config((4 << 20) - 100), 0, 0);
    let (code, stderr, rss) = build(dir.path(), &image);
    assert_eq!(code, 0, "{stderr}");
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    eprintln!("4 MiB config built at {rss} KiB");
    // over it: refused before it is read
    let dir = common::tempdir();
    let image = json_image(dir.path(), &worst_config(5 << 20), 0, 0);
    assert_refused(dir.path(), build(dir.path(), &image), "refusing JSON blobs over 4194304");
}

// ---------------------------------------------------------------------------------------
// ISO 9660 (the reader of `inspect` and `diff`)

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

/// The directory records of the directory at `lba` (one block): (offset in the image, id,
/// extent).
fn records(iso: &[u8], lba: u32) -> Vec<(usize, Vec<u8>, u32)> {
    let start = lba as usize * 2048;
    let mut v = Vec::new();
    let mut p = start;
    while p < start + 2048 && iso[p] != 0 {
        let len = iso[p] as usize;
        let id_len = iso[p + 32] as usize;
        v.push((p, iso[p + 33..p + 33 + id_len].to_vec(), le32(&iso[p + 2..])));
        p += len;
    }
    v
}

#[test]
fn an_iso_with_a_looping_directory_is_refused_by_inspect_and_diff() {
    let xorriso = common::require_tool("xorriso");
    let dir = common::tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    common::write(&src.join("a/b/c/f"), b"x");
    let good = dir.path().join("good.iso");
    common::run(Command::new(&xorriso).args(["-as", "mkisofs", "-R", "-quiet", "-o"]).arg(&good).arg(&src));
    let mut iso = std::fs::read(&good).unwrap();
    // root (from the primary volume descriptor) → A → B; B's record made to point at the root
    let root = le32(&iso[16 * 2048 + 156 + 2..]);
    let find = |iso: &[u8], lba: u32, id: &[u8]| records(iso, lba).into_iter().find(|r| r.1 == id).unwrap_or_else(|| panic!("no {id:?} in block {lba}"));
    let a = find(&iso, root, b"A").2;
    let (b_at, _, _) = find(&iso, a, b"B");
    iso[b_at + 2..b_at + 6].copy_from_slice(&root.to_le_bytes());
    iso[b_at + 6..b_at + 10].copy_from_slice(&root.to_be_bytes());
    let bad = dir.path().join("loop.iso");
    std::fs::write(&bad, &iso).unwrap();

    let (code, stderr, rss) = measured(&["inspect".as_ref(), bad.as_os_str()], dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("damaged ISO 9660 image: /a/b: directory at block") && stderr.contains("(a loop)"), "{stderr}");
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    let (code, stderr, rss) = measured(&["diff".as_ref(), good.as_os_str(), bad.as_os_str()], dir.path());
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("(a loop)"), "{stderr}");
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
}

/// Peak RSS of every output format at the path cap (499,503 paths with names of a
/// distribution rootfs's length, ~60 bytes; docs/limits.md): file contents never count (they
/// stream from the spill files), so the entry count is what can grow it. Every format stays
/// under the 200 MiB goal; measured 2026-12-03 (debug test, release stagebox): SquashFS 161,
/// EROFS 140 and the ISO 143 MiB, from 329, 331 and 739 before their writers kept a small
/// record per path and laid their tables out a directory at a time or in temp files.
#[test]
fn every_output_of_a_tree_at_the_path_cap_stays_in_bounded_memory() {
    let dir = common::tempdir();
    let mut tar = Vec::with_capacity(500_000 * 512);
    for d in 0..500 {
        let parent = format!("usr/share/a-package-directory-{d:03}/");
        tar.extend(raw_tar_header(parent.as_bytes(), b'5', 0, &[]));
        for f in 0..998 {
            let name = format!("{parent}some-file-name-{f:03}.data");
            let data = format!("{d} {f}\n");
            tar.extend(raw_tar_header(name.as_bytes(), b'0', data.len() as u64, &[]));
            tar.extend(tar_padded(data.as_bytes()));
        }
    }
    tar.extend(end_of_archive());
    let image = one_layer_image(dir.path(), &tar);
    drop(tar);
    // (name, output table, bound in MiB)
    let outputs = [
        ("tar", "[output.tar]", 200),
        ("cpio.zst", "[output.initramfs]\ncompression = \"zstd\"", 200),
        ("cpio.gz", "[output.initramfs]\ncompression = \"gzip\"", 200),
        ("oci", "[output.oci]", 200),
        ("squashfs", "[output.squashfs]", 200),
        ("erofs lz4", "[output.erofs]\ncompression = \"lz4\"", 200),
        ("iso", "[output.iso]", 200),
    ];
    let mut bad = Vec::new();
    for (name, output, bound) in outputs {
        let box_file = dir.path().join("box.toml");
        std::fs::write(&box_file, format!("name = \"demo\"\nversion = \"1.0\"\n\n[[layer]]\nimage = \"{image}\"\n\n{output}\n")).unwrap();
        let (out, cache) = (dir.path().join("out"), dir.path().join("cache"));
        let _ = std::fs::remove_dir_all(&out);
        let (code, stderr, rss) = measured(&["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "--quiet".as_ref()], dir.path());
        eprintln!("{name}: exit {code}, peak RSS {} MiB (bound {bound} MiB)", rss / 1024);
        if code != 0 || rss >= bound * 1024 {
            bad.push(format!("{name}: exit {code}, {} MiB (bound {bound} MiB)\n{stderr}", rss / 1024));
        }
    }
    assert!(bad.is_empty(), "over the bound or failed:\n{}", bad.join("\n"));
}
