//! Hostile and broken inputs, end to end through the `stagebox` binary.
//!
//! Every image here is an OCI layout written by the test itself (blobs, manifest, config,
//! index.json), with layers as hand-made tar streams: the raw 512-byte headers are written
//! byte by byte, so entries the `tar` crate refuses to create (`..`, absolute paths, bare
//! whiteouts, odd type flags) can be tested. Each refused input must give exit code 1 (2 for
//! box-file errors), a message naming the layer and the path, no output and no
//! manifest.json in a fresh `--out`, and an earlier good build's outputs left byte for byte
//! as they were.

use crate::common;

use common::{fix_tar_checksum, gz_with_zeros, raw_tar_header, sha256_hex, stagebox, stagebox_bin, Layout};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------------------
// Raw tar streams

const BLOCK: usize = 512;

fn octal(field: &mut [u8], v: u64) {
    let n = field.len() - 1;
    let s = format!("{:0width$o}", v, width = n);
    assert!(s.len() == n, "{v} does not fit an octal field of {n} digits");
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

/// One ustar header, checksum included: [`raw_tar_header`] with `mode`, `link` and mtime 1.
/// `size` goes in the header as given (it may lie); one too big for 11 octal digits is
/// written in GNU base-256.
fn header(name: &[u8], typeflag: u8, mode: u32, size: u64, link: &[u8]) -> [u8; BLOCK] {
    assert!(name.len() <= 100 && link.len() <= 100);
    let big = size > 0o77777777777;
    let mode = format!("{mode:07o}\0");
    let mut h: [u8; BLOCK] = raw_tar_header(name, typeflag, if big { 0 } else { size }, &[(100, mode.as_bytes()), (136, b"00000000001\0"), (157, link)])
        .try_into()
        .unwrap();
    if big {
        // GNU base-256: high bit of the first byte set, big-endian value
        h[124..136].fill(0);
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
        fix_tar_checksum(&mut h);
    }
    h
}

/// A tar stream built entry by entry.
#[derive(Default, Clone)]
struct Tar(Vec<u8>);

impl Tar {
    fn new() -> Self {
        Tar(Vec::new())
    }
    fn entry(mut self, name: &str, typeflag: u8, mode: u32, data: &[u8], link: &str) -> Self {
        self.0.extend_from_slice(&header(name.as_bytes(), typeflag, mode, data.len() as u64, link.as_bytes()));
        self.0.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    fn file(self, name: &str, data: &str) -> Self {
        self.entry(name, b'0', 0o644, data.as_bytes(), "")
    }
    fn dir(self, name: &str) -> Self {
        self.entry(name, b'5', 0o755, b"", "")
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, b'2', 0o777, b"", target)
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, b'1', 0o644, b"", target)
    }
    /// The end-of-archive marker.
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 2 * BLOCK]);
        self.0
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------------------------------
// OCI layouts

const MT_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MT_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One layer as the manifest and config describe it, and what is actually on disk.
#[derive(Clone)]
struct Layer {
    /// The blob bytes the descriptor's digest is computed from.
    blob: Vec<u8>,
    media_type: &'static str,
    /// The config's diff_id for it (default: sha256 of the uncompressed tar).
    diff_id: String,
    /// Descriptor size (default: the blob's length).
    size: Option<u64>,
    /// Write the blob into the layout at all.
    present: bool,
    /// Bytes written to disk instead of `blob` (the descriptor still names `blob`).
    on_disk: Option<Vec<u8>>,
}

impl Layer {
    fn tar(tar: Vec<u8>) -> Self {
        Layer { diff_id: sha256_hex(&tar), blob: tar, media_type: MT_TAR, size: None, present: true, on_disk: None }
    }
    fn gz(tar: Vec<u8>) -> Self {
        Layer { diff_id: sha256_hex(&tar), blob: gzip(&tar), media_type: MT_TAR_GZIP, size: None, present: true, on_disk: None }
    }
    fn digest(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.blob))
    }
}

/// Write an OCI image layout with one manifest of `layers` at `dir`; `diff_ids` replaces
/// the config's list when given. Returns the manifest digest.
fn write_layout(dir: &Path, layers: &[Layer], diff_ids: Option<Vec<String>>) -> String {
    let layout = Layout::create(dir);
    let blobs = dir.join("blobs/sha256");
    for l in layers {
        if l.present {
            std::fs::write(blobs.join(sha256_hex(&l.blob)), l.on_disk.as_ref().unwrap_or(&l.blob)).unwrap();
        }
    }
    let diff_ids = diff_ids.unwrap_or_else(|| layers.iter().map(|l| format!("sha256:{}", l.diff_id)).collect());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = layout.blob("application/vnd.oci.image.config.v1+json", &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest(), "size": l.size.unwrap_or(l.blob.len() as u64),
        })).collect::<Vec<_>>(),
    });
    let manifest = layout.blob("application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&manifest).unwrap());
    layout.set_index(&[(manifest.clone(), "latest")]);
    common::digest_of(&manifest)
}

fn write_box(path: &Path, layout_dir: &str, manifest_digest: &str) {
    let text = format!(
        "name = \"demo\"\nversion = \"1.0\"\n\n[[layer]]\nimage = \"oci:{layout_dir}@{manifest_digest}\"\n\n[output.tar]\n\n[output.oci]\n"
    );
    std::fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------------------------------
// Running the binary

struct Run {
    code: i32,
    stderr: String,
}

fn build(dir: &Path, box_file: &Path, out: &Path, cache: &Path) -> Run {
    build_env(dir, box_file, out, cache, &[])
}

/// `stagebox build BOX --out OUT --cache CACHE --quiet` run in `dir` (not yet run).
fn build_command(dir: &Path, box_file: &Path, out: &Path, cache: &Path) -> Command {
    let mut cmd = stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "--quiet".as_ref()]);
    cmd.current_dir(dir).env_remove("STAGEBOX_MAX_LAYER_BYTES");
    // spill files and other temp files land inside the test's own directory
    cmd.env("TMPDIR", dir.join("tmp"));
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    cmd
}

fn build_env(dir: &Path, box_file: &Path, out: &Path, cache: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = build_command(dir, box_file, out, cache);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run stagebox");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "stagebox panicked:\n{stderr}");
    Run { code: out.status.code().expect("exit code, not a signal"), stderr }
}

/// Every file below `dir` (hidden ones too) with its bytes; directories as `None`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut m = BTreeMap::new();
    fn walk(base: &Path, d: &Path, m: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_path_buf();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                m.insert(rel, None);
                walk(base, &p, m);
            } else {
                m.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut m);
    }
    m
}

/// Paths in an output tar, without a trailing `/`, with each entry's type flag.
fn tar_listing(path: &Path) -> BTreeMap<String, (u8, Vec<u8>)> {
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut m = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let p = p.trim_end_matches('/').to_string();
        let t = e.header().entry_type().as_byte();
        let link = e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let v = if t == b'2' || t == b'1' { link } else { data };
        assert!(m.insert(p.clone(), (t, v)).is_none(), "{p} twice in the output");
    }
    m
}

/// A scratch directory holding a known-good image (`good/`) and its box (`good.toml`).
struct Scene {
    tmp: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::Builder::new().prefix("stagebox-hostile-").tempdir().unwrap();
        let good = Tar::new().dir("etc").file("etc/good", "from the good build\n").finish();
        let md = write_layout(&tmp.path().join("good"), &[Layer::gz(good)], None);
        write_box(&tmp.path().join("good.toml"), "good", &md);
        Scene { tmp }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Write `layers` as the layout `bad/` and a box `bad.toml` using it. Returns the
    /// label prefix every layer error of this image starts with (`oci:bad@sha256:… #`).
    fn bad(&self, layers: &[Layer], diff_ids: Option<Vec<String>>) -> String {
        let md = write_layout(&self.p("bad"), layers, diff_ids);
        write_box(&self.p("bad.toml"), "bad", &md);
        format!("oci:bad@{md}")
    }

    fn build(&self, box_name: &str, out: &str, cache: &str) -> Run {
        build(self.dir(), &self.p(box_name), &self.p(out), &self.p(cache))
    }

    /// The bad box must fail with `code` without writing anything into a fresh --out, and
    /// must leave the outputs of an earlier good build in the same --out untouched.
    /// Returns the first run's stderr.
    fn assert_rejected(&self, code: i32) -> String {
        let r = self.build("bad.toml", "out-fresh", "cache-fresh");
        assert_eq!(r.code, code, "exit code; stderr:\n{}", r.stderr);
        assert!(r.stderr.starts_with("stagebox: error: "), "{}", r.stderr);
        let fresh = snapshot(&self.p("out-fresh"));
        assert!(fresh.is_empty(), "a failed build wrote into a fresh --out: {:?}", fresh.keys().collect::<Vec<_>>());

        let good = self.build("good.toml", "out-kept", "cache-kept");
        assert_eq!(good.code, 0, "the good build failed:\n{}", good.stderr);
        let before = snapshot(&self.p("out-kept"));
        assert!(before.contains_key(Path::new("demo.tar")) && before.contains_key(Path::new("manifest.json")), "{before:?}");
        assert!(before.contains_key(Path::new("demo.oci/index.json")), "{:?}", before.keys());
        let again = self.build("bad.toml", "out-kept", "cache-kept");
        assert_eq!(again.code, code, "exit code with a warm store; stderr:\n{}", again.stderr);
        let after = snapshot(&self.p("out-kept"));
        assert!(before == after, "a failed build changed an earlier output: before {:?}, after {:?}", before.keys(), after.keys());
        assert_store_consistent(&self.p("cache-fresh"));
        assert_store_consistent(&self.p("cache-kept"));
        r.stderr
    }

    /// The bad box must build; returns the output tar's listing.
    fn assert_builds(&self) -> BTreeMap<String, (u8, Vec<u8>)> {
        let r = self.build("bad.toml", "out", "cache");
        assert_eq!(r.code, 0, "build failed:\n{}", r.stderr);
        tar_listing(&self.p("out/demo.tar"))
    }
}

/// Every blob in the store is named by the sha256 of its bytes.
fn assert_store_consistent(cache: &Path) {
    let blobs = cache.join("blobs/sha256");
    if !blobs.exists() {
        return;
    }
    for e in std::fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.starts_with('.') {
            continue; // a temp file (never a blob name)
        }
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(sha256_hex(&data), name, "store blob {} holds other content", e.path().display());
    }
}

/// The message of a layer error: `layer LABEL #N (sha256:…): PATH: MESSAGE`.
fn assert_layer_error(stderr: &str, label: &str, n: usize, path: &str, message: &str) {
    let want = format!("layer {label} #{n} (sha256:");
    assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    let want = format!("): {path}: ");
    assert!(stderr.contains(&want), "expected the path {want:?} in:\n{stderr}");
    assert!(stderr.contains(message), "expected {message:?} in:\n{stderr}");
}

fn one_layer(s: &Scene, tar: Tar) -> String {
    s.bad(&[Layer::gz(tar.finish())], None)
}

// ---------------------------------------------------------------------------------------
// Paths that try to leave the rootfs

#[test]
fn dotdot_escape_is_refused() {
    let s = Scene::new();
    let label = one_layer(&s, Tar::new().file("ok", "1").file("../etc/passwd", "root::0:0::/:/bin/sh\n"));
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/../etc/passwd", "climbs above the root");
    assert!(!s.p("etc").exists() && !s.dir().parent().unwrap().join("etc/passwd").exists());
}

#[test]
fn dotdot_escape_after_a_component_is_refused() {
    let s = Scene::new();
    let label = one_layer(&s, Tar::new().dir("a").file("a/../../x", "x"));
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/a/../../x", "climbs above the root");
    assert!(!s.dir().parent().unwrap().join("x").exists());
}

#[test]
fn absolute_path_lands_inside_the_rootfs() {
    let s = Scene::new();
    one_layer(&s, Tar::new().file("/etc/x", "abs").file("/./etc//y", "y"));
    let l = s.assert_builds();
    assert_eq!(l.keys().collect::<Vec<_>>(), ["etc", "etc/x", "etc/y"]);
    assert_eq!(l["etc/x"], (b'0', b"abs".to_vec()));
    assert_eq!(l["etc"].0, b'5');
}

#[test]
fn symlink_to_absolute_dir_is_followed_inside_the_rootfs() {
    let s = Scene::new();
    // a directory on the host the symlink names: it must stay empty
    let host = s.p("host-etc");
    std::fs::create_dir(&host).unwrap();
    let host_abs = host.canonicalize().unwrap().to_str().unwrap().to_string();
    let host_rel = host_abs.trim_start_matches('/');
    one_layer(
        &s,
        Tar::new()
            .dir("etc")
            .symlink("evil", "/etc")
            .file("evil/passwd", "inside\n")
            .symlink("hostlink", &host_abs)
            .file("hostlink/pwned", "inside too\n"),
    );
    let l = s.assert_builds();
    assert_eq!(l["evil"], (b'2', b"/etc".to_vec()));
    assert_eq!(l["etc/passwd"], (b'0', b"inside\n".to_vec()));
    assert_eq!(l[&format!("{host_rel}/pwned")], (b'0', b"inside too\n".to_vec()));
    assert!(!l.contains_key("evil/passwd") && !l.contains_key("hostlink/pwned"), "{:?}", l.keys());
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0, "the build wrote on the host");
    assert!(!s.p("etc").exists() && !s.p("evil").exists());
}

#[test]
fn symlink_climbing_with_dotdot_is_clamped_at_the_root() {
    let s = Scene::new();
    // the symlink in one layer, the entry through it in the next
    let md = s.bad(
        &[
            Layer::gz(Tar::new().dir("etc").dir("usr/lib").symlink("usr/lib/up", "../../../../..").finish()),
            Layer::tar(Tar::new().file("usr/lib/up/etc/passwd", "inside\n").symlink("up2", "../../..").file("up2/etc/group", "g\n").finish()),
        ],
        None,
    );
    let _ = md;
    let l = s.assert_builds();
    assert_eq!(l["etc/passwd"], (b'0', b"inside\n".to_vec()));
    assert_eq!(l["etc/group"], (b'0', b"g\n".to_vec()));
    assert_eq!(l["usr/lib/up"], (b'2', b"../../../../..".to_vec()));
    assert!(l.keys().all(|k| !k.contains("up/") && !k.contains("up2/")), "{:?}", l.keys());
    assert!(!s.dir().parent().unwrap().join("etc/group").exists());
}

#[test]
fn symlink_through_a_missing_dir_and_dotdot_is_still_resolved() {
    // `missing/../esc` must resolve `esc` again; before the fix the entry landed below the
    // symlink `esc` in the output, which a naive `tar x` writes to /etc on the host.
    let s = Scene::new();
    one_layer(&s, Tar::new().dir("etc").symlink("esc", "/etc").symlink("l", "missing/../esc").file("l/passwd", "p\n"));
    let l = s.assert_builds();
    assert_eq!(l["etc/passwd"], (b'0', b"p\n".to_vec()));
    assert!(!l.contains_key("esc/passwd"), "{:?}", l.keys());
}

#[test]
fn symlink_loop_as_parent_is_refused() {
    let s = Scene::new();
    let label = one_layer(&s, Tar::new().symlink("a", "b").symlink("b", "a").file("a/x", "x"));
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/a/x", "too many levels of symlinks");
}

// ---------------------------------------------------------------------------------------
// Entries that cannot stand in a rootfs

#[test]
fn hardlink_to_a_missing_path_is_refused() {
    let s = Scene::new();
    let label = s.bad(
        &[Layer::gz(Tar::new().file("real", "1").finish()), Layer::gz(Tar::new().hardlink("link", "usr/bin/nothere").finish())],
        None,
    );
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 2, "/link", "hardlink to /usr/bin/nothere, which does not exist in the rootfs");
}

#[test]
fn hardlink_to_a_directory_is_refused() {
    let s = Scene::new();
    let label = one_layer(&s, Tar::new().dir("d").hardlink("link", "d"));
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/link", "hardlink to directory /d");
}

#[test]
fn hardlink_escaping_with_dotdot_is_refused() {
    let s = Scene::new();
    let label = one_layer(&s, Tar::new().file("etc/passwd", "x").hardlink("link", "../../etc/passwd"));
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/link", "hardlink target ../../etc/passwd: path climbs above the root");
}

#[test]
fn file_below_a_regular_file_is_refused() {
    let s = Scene::new();
    let label = s.bad(&[Layer::gz(Tar::new().file("f", "1").finish()), Layer::gz(Tar::new().file("f/x", "x").finish())], None);
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 2, "/f/x", "parent /f is not a directory");
}

#[test]
fn bare_whiteout_is_refused() {
    let s = Scene::new();
    let label = one_layer(&s, Tar::new().dir("d").file("d/.wh.", ""));
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/d/.wh.", "invalid whiteout");
}

#[test]
fn unsupported_entry_type_is_refused() {
    let s = Scene::new();
    let label = one_layer(&s, Tar::new().file("ok", "1").entry("weird", b'Z', 0o644, b"", ""));
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/weird", "unsupported tar entry type 'Z'");
}

#[test]
fn garbage_layer_is_refused() {
    let s = Scene::new();
    let garbage = b"this is not a tar archive, just some text. ".repeat(40);
    let label = s.bad(&[Layer::tar(garbage)], None);
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/", "not a readable tar stream");
}

// ---------------------------------------------------------------------------------------
// Blobs that do not match their descriptions

#[test]
fn corrupted_layer_blob_is_refused_by_digest() {
    let s = Scene::new();
    let mut l = Layer::gz(Tar::new().file("a", "some content").finish());
    let mut bytes = l.blob.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    l.on_disk = Some(bytes.clone());
    let digest = l.digest();
    let label = s.bad(&[l], None);
    let err = s.assert_rejected(1);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&format!("expected {digest}")), "{err}");
    assert!(err.contains(&format!("found sha256:{}", sha256_hex(&bytes))), "{err}");
    assert!(err.contains(&format!("{label} #1")), "{err}");
}

#[test]
fn corrupted_config_blob_is_refused_by_digest() {
    let s = Scene::new();
    s.bad(&[Layer::gz(Tar::new().file("a", "1").finish())], None);
    // flip a byte of the config blob in place
    let manifest_path = std::fs::read_dir(s.p("bad/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap().starts_with(b"{\"config\""))
        .expect("manifest blob");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    let cfg = manifest["config"]["digest"].as_str().unwrap().to_string();
    let p = s.p("bad/blobs/sha256").join(&cfg[7..]);
    let mut data = std::fs::read(&p).unwrap();
    data[2] ^= 1;
    std::fs::write(&p, &data).unwrap();
    let err = s.assert_rejected(1);
    assert!(err.contains("digest mismatch for config") && err.contains(&format!("expected {cfg}")), "{err}");
}

#[test]
fn manifest_naming_a_missing_blob_is_refused() {
    let s = Scene::new();
    let mut l = Layer::gz(Tar::new().file("a", "never written").finish());
    l.present = false;
    let digest = l.digest();
    let label = s.bad(&[Layer::gz(Tar::new().file("b", "2").finish()), l], None);
    let err = s.assert_rejected(1);
    assert!(err.contains(&label), "{err}");
    assert!(err.contains(&format!("layer 2 blob {digest} is missing from the layout")), "{err}");
}

#[test]
fn truncated_gzip_layer_is_refused() {
    let s = Scene::new();
    // incompressible content, so the cut lands inside the deflate stream of the file data
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let tar = Tar::new().entry("noise", b'0', 0o644, &noise, "").finish();
    let mut l = Layer::gz(tar);
    l.blob.truncate(l.blob.len() / 2); // the descriptor digest matches the truncated blob
    let label = s.bad(&[l], None);
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/noise", "reading file data");
}

#[test]
fn truncated_gzip_trailer_is_refused() {
    // the tar stream is complete but the gzip member lacks its CRC and length
    let s = Scene::new();
    let mut l = Layer::gz(Tar::new().file("a", "1").finish());
    l.blob.truncate(l.blob.len() - 4);
    let label = s.bad(&[l], None);
    let err = s.assert_rejected(1);
    assert!(err.contains(&format!("layer {label} #1")), "{err}");
    assert!(err.contains("decompressing"), "{err}");
}

#[test]
fn layer_not_matching_its_diff_id_is_refused() {
    let s = Scene::new();
    let mut l = Layer::gz(Tar::new().file("a", "1").finish());
    let wrong = sha256_hex(b"some other layer");
    l.diff_id = wrong.clone();
    let label = s.bad(&[l], None);
    let err = s.assert_rejected(1);
    assert!(err.contains(&format!("digest mismatch for uncompressed layer {label} #1")), "{err}");
    assert!(err.contains(&format!("expected sha256:{wrong}")), "{err}");
}

#[test]
fn wrong_size_in_the_descriptor_is_refused() {
    let s = Scene::new();
    let mut l = Layer::gz(Tar::new().file("a", "1").finish());
    let real = l.blob.len() as u64;
    l.size = Some(real + 1);
    let label = s.bad(&[l], None);
    let err = s.assert_rejected(1);
    assert!(err.contains(&format!("size mismatch for {label} #1")), "{err}");
    assert!(err.contains(&format!("descriptor says {} bytes, read {real}", real + 1)), "{err}");
}

#[test]
fn config_with_fewer_diff_ids_than_layers_is_refused() {
    let s = Scene::new();
    let a = Layer::gz(Tar::new().file("a", "1").finish());
    let b = Layer::gz(Tar::new().file("b", "2").finish());
    let ids = vec![format!("sha256:{}", a.diff_id)];
    let label = s.bad(&[a, b], Some(ids));
    let err = s.assert_rejected(1);
    assert!(err.contains(&format!("{label}: manifest lists 2 layers but the config has 1 diff_ids")), "{err}");
}

// ---------------------------------------------------------------------------------------
// Decompression bombs

/// A gzip stream of a tar holding `n` files of `each` zero bytes, written without holding
/// the zeros in memory.
fn zero_bomb(n: usize, each: u64) -> (Vec<u8>, String) {
    struct Both<W: Write> {
        gz: flate2::write::GzEncoder<W>,
        sha: Sha256,
    }
    impl<W: Write> Both<W> {
        fn put(&mut self, b: &[u8]) {
            self.gz.write_all(b).unwrap();
            self.sha.update(b);
        }
    }
    let mut w = Both { gz: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9)), sha: Sha256::new() };
    let zeros = vec![0u8; 1 << 20];
    for i in 0..n {
        w.put(&header(format!("zeros{i}").as_bytes(), b'0', 0o644, each, b""));
        let mut left = each;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            w.put(&zeros[..k]);
            left -= k as u64;
        }
        w.put(&zeros[..(BLOCK - (each as usize % BLOCK)) % BLOCK]);
    }
    w.put(&[0u8; 2 * BLOCK]);
    let diff_id = hex::encode(w.sha.finalize());
    (w.gz.finish().unwrap(), diff_id)
}

#[test]
fn gzip_bomb_is_stopped_at_the_layer_limit() {
    let s = Scene::new();
    // 6 × 4 MiB of zeros in a gzip of a few KiB, against a lowered limit of 16 MiB
    let (blob, diff_id) = zero_bomb(6, 4 << 20);
    assert!(blob.len() < 200 << 10, "{}", blob.len());
    let label = s.bad(&[Layer { blob, media_type: MT_TAR_GZIP, diff_id, size: None, present: true, on_disk: None }], None);
    let r = build_env(s.dir(), &s.p("bad.toml"), &s.p("out"), &s.p("cache"), &[("STAGEBOX_MAX_LAYER_BYTES", "16777216")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_layer_error(&r.stderr, &label, 1, "/zeros4", "layer unpacks to more than 16777216 bytes; refusing (possible decompression bomb)");
    assert!(snapshot(&s.p("out")).is_empty());
    // without the lowered limit the same layer builds
    let r = s.build("bad.toml", "out", "cache");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(tar_listing(&s.p("out/demo.tar")).len(), 6);
}

#[test]
fn entry_claiming_more_than_the_default_limit_is_refused_before_reading() {
    // A header claiming 100 TiB (base-256 size) over a tiny gzip: refused at the header
    // with the default limit, without inflating anything.
    let s = Scene::new();
    let mut tar = header(b"huge", b'0', 0o644, 100 << 40, b"").to_vec();
    tar.extend_from_slice(&[0u8; 4 * BLOCK]);
    let label = s.bad(&[Layer::gz(tar)], None);
    let t = std::time::Instant::now();
    let err = s.assert_rejected(1);
    assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
    assert_layer_error(&err, &label, 1, "/huge", "possible decompression bomb");
}

// ---------------------------------------------------------------------------------------
// References and the store

#[test]
fn unpinned_reference_without_lock_is_a_box_error() {
    let s = Scene::new();
    let text = "name = \"demo\"\n\n[[layer]]\nimage =   \"oci:good\"\n\n[output.tar]\n";
    std::fs::write(s.p("box.toml"), text).unwrap();
    let r = s.build("box.toml", "out", "cache");
    assert_eq!(r.code, 2, "{}", r.stderr);
    let want = format!("stagebox: error: {}:4:11: image \"oci:good\" is not pinned", s.p("box.toml").display());
    assert!(r.stderr.starts_with(&want), "expected {want:?} in:\n{}", r.stderr);
    assert!(r.stderr.contains("box.lock"), "{}", r.stderr);
    assert!(!s.p("out").exists());
}

#[test]
fn store_never_names_a_blob_wrongly_after_a_mismatch() {
    let s = Scene::new();
    // a good build fills the store from good/
    assert_eq!(s.build("good.toml", "out", "cache").code, 0);
    assert_store_consistent(&s.p("cache"));
    let blobs_before = snapshot(&s.p("cache/blobs"));

    // an import whose layer blob does not match its digest leaves no blob behind
    let mut l = Layer::gz(Tar::new().file("a", "content").finish());
    let mut bytes = l.blob.clone();
    let n = bytes.len();
    bytes[n - 8] ^= 0xff; // inside the gzip CRC: still a "valid" looking blob
    l.on_disk = Some(bytes);
    let digest = l.digest();
    s.bad(&[l], None);
    let r = s.build("bad.toml", "out", "cache");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("digest mismatch"), "{}", r.stderr);
    assert_store_consistent(&s.p("cache"));
    assert!(!s.p("cache/blobs/sha256").join(&digest[7..]).exists());
    // manifest and config blobs of the failed import may be stored (they verified); no
    // blob of the earlier build changed
    let blobs_after = snapshot(&s.p("cache/blobs"));
    for (k, v) in &blobs_before {
        assert_eq!(blobs_after.get(k), Some(v), "{k:?} changed");
    }
    assert!(blobs_after.keys().all(|k| !k.to_string_lossy().contains(".tmp")), "temp files left: {:?}", blobs_after.keys());
}

#[test]
fn store_stays_consistent_when_a_layout_blob_changes_after_import() {
    // good/ is imported, then its layer blob is rewritten in place with other bytes (same
    // name). The next build must refuse the layer and the store must not keep a blob under
    // a name that does not match its bytes.
    let s = Scene::new();
    assert_eq!(s.build("good.toml", "out", "cache").code, 0);
    let before = snapshot(&s.p("out"));
    let layer = std::fs::read_dir(s.p("good/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
        .unwrap();
    let mut data = std::fs::read(&layer).unwrap();
    let n = data.len();
    data[n - 8] ^= 0xff;
    {
        // in place: same inode
        let mut f = std::fs::OpenOptions::new().write(true).open(&layer).unwrap();
        f.write_all(&data).unwrap();
    }
    let r = s.build("good.toml", "out", "cache");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("stagebox: error: layer oci:good@sha256:"), "{}", r.stderr);
    assert!(r.stderr.contains("no longer matched its digest"), "{}", r.stderr);
    assert_eq!(snapshot(&s.p("out")), before);
    assert_store_consistent(&s.p("cache"));
    // the changed layout now fails at import, naming the layout's file
    let r = s.build("good.toml", "out", "cache");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("digest mismatch") && r.stderr.contains(&layer.display().to_string()), "{}", r.stderr);
    assert_store_consistent(&s.p("cache"));
    // and once the layout is repaired (a new file), the store does not stand in the way
    data[n - 8] ^= 0xff;
    let fixed = layer.with_extension("new");
    std::fs::write(&fixed, &data).unwrap();
    std::fs::rename(&fixed, &layer).unwrap();
    let r = s.build("good.toml", "out", "cache");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(snapshot(&s.p("out")), before);
    assert_store_consistent(&s.p("cache"));
}

// ---------------------------------------------------------------------------------------
// Bombs the layer byte limit does not see: tar metadata the `tar` crate holds in memory,
// data skipped for non-file entries, and bytes after the end-of-archive marker.


/// Run a build and return its exit code, stderr and peak resident memory in KiB
/// ([`common::peak_rss`]).
fn build_measured(s: &Scene, box_name: &str) -> (i32, String, i64) {
    common::peak_rss(&build_command(s.dir(), &s.p(box_name), &s.p("out"), &s.p("cache")))
}

const BOMB: u64 = 256 << 20;

fn bomb_layer(s: &Scene, blob: Vec<u8>, diff_id: String) -> String {
    s.bad(&[Layer { blob, media_type: MT_TAR_GZIP, diff_id, size: None, present: true, on_disk: None }], None)
}

#[test]
fn gnu_long_name_bomb_is_refused_without_filling_memory() {
    let s = Scene::new();
    // a GNU long-name record of 256 MiB (the `tar` crate reads such records into memory)
    let mut tail = vec![0u8; 0];
    tail.extend_from_slice(&header(b"x", b'0', 0o644, 0, b""));
    tail.extend_from_slice(&[0u8; 2 * BLOCK]);
    let (blob, diff_id) = gz_with_zeros(&header(b"././@LongLink", b'L', 0o644, BOMB, b""), BOMB, &tail);
    assert!(blob.len() < 1 << 20);
    let label = bomb_layer(&s, blob, diff_id);
    let (code, stderr, maxrss_kib) = build_measured(&s, "bad.toml");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("layer {label} #1")), "{stderr}");
    assert!(stderr.contains("tar metadata") && stderr.contains("possible archive bomb"), "{stderr}");
    assert!(maxrss_kib < (BOMB / 2 / 1024) as i64, "peak RSS {maxrss_kib} KiB");
    assert!(snapshot(&s.p("out")).is_empty());
}

#[test]
fn pax_header_bomb_is_refused_without_filling_memory() {
    let s = Scene::new();
    let mut tail = Vec::new();
    tail.extend_from_slice(&header(b"x", b'0', 0o644, 0, b""));
    tail.extend_from_slice(&[0u8; 2 * BLOCK]);
    let (blob, diff_id) = gz_with_zeros(&header(b"PaxHeaders/x", b'x', 0o644, BOMB, b""), BOMB, &tail);
    let label = bomb_layer(&s, blob, diff_id);
    let (code, stderr, maxrss_kib) = build_measured(&s, "bad.toml");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("layer {label} #1")), "{stderr}");
    assert!(stderr.contains("possible archive bomb"), "{stderr}");
    assert!(maxrss_kib < (BOMB / 2 / 1024) as i64, "peak RSS {maxrss_kib} KiB");
}

#[test]
fn zeros_after_the_end_of_archive_are_bounded() {
    let s = Scene::new();
    let head = Tar::new().file("a", "1").finish();
    let (blob, diff_id) = gz_with_zeros(&head, BOMB, b"");
    let label = bomb_layer(&s, blob, diff_id);
    let err = s.assert_rejected(1);
    assert!(err.contains(&format!("layer {label} #1")), "{err}");
    assert!(err.contains("possible archive bomb"), "{err}");
}

#[test]
fn ordinary_record_padding_after_the_end_of_archive_is_fine() {
    // tar pads to 10 KiB records by default, `tar -b 2048` to 1 MiB
    let s = Scene::new();
    let head = Tar::new().file("a", "1").finish();
    let (blob, diff_id) = gz_with_zeros(&head, (1 << 20) - head.len() as u64, b"");
    bomb_layer(&s, blob, diff_id);
    let l = s.assert_builds();
    assert_eq!(l.keys().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn size_field_of_a_data_less_entry_is_ignored() {
    // A directory header claiming 32 MiB of data carries none (as Go, bsdtar and Python read
    // it): the next header follows at once, and nothing counts against the layer limit.
    let s = Scene::new();
    let mut tar = header(b"d/", b'5', 0o755, 32 << 20, b"").to_vec();
    tar.extend_from_slice(&header(b"d/f", b'0', 0o644, 0, b""));
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    s.bad(&[Layer::gz(tar)], None);
    let listing = s.assert_builds();
    assert_eq!(listing.get("d").map(|e| e.0), Some(b'5'), "{listing:?}");
    assert_eq!(listing.get("d/f").map(|e| e.0), Some(b'0'), "{listing:?}");
}

#[test]
fn zeros_claimed_as_a_directory_s_data_are_trailing_data() {
    // The same header followed by 32 MiB of zeros: those are the end of the archive and what
    // trails it, bounded like any trailing data.
    let s = Scene::new();
    let mut tail = Vec::new();
    tail.extend_from_slice(&header(b"f", b'0', 0o644, 0, b""));
    tail.extend_from_slice(&[0u8; 2 * BLOCK]);
    let (blob, diff_id) = gz_with_zeros(&header(b"d/", b'5', 0o755, 32 << 20, b""), 32 << 20, &tail);
    let label = bomb_layer(&s, blob, diff_id);
    let r = build_env(s.dir(), &s.p("bad.toml"), &s.p("out"), &s.p("cache"), &[("STAGEBOX_MAX_LAYER_BYTES", "16777216")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_layer_error(&r.stderr, &label, 1, "/", "tar metadata or trailing data");
}

#[test]
fn huge_path_is_refused_with_a_short_message() {
    // a 1 MiB GNU long name: refused by length, and the message does not print it whole
    let s = Scene::new();
    let name = vec![b'n'; 1 << 20];
    let mut tar = header(b"././@LongLink", b'L', 0o644, name.len() as u64 + 1, b"").to_vec();
    tar.extend_from_slice(&name);
    tar.extend(std::iter::repeat_n(0u8, BLOCK - name.len() % BLOCK));
    tar.extend_from_slice(&Tar::new().file("placeholder", "x").finish());
    let label = s.bad(&[Layer::gz(tar)], None);
    let err = s.assert_rejected(1);
    assert!(err.contains(&format!("layer {label} #1 (sha256:")), "{err}");
    assert!(err.contains("): /nnnn") && err.contains("n... (1048576 bytes): path is longer than 4096 bytes"), "{err}");
    assert!(err.len() < 4096, "message of {} bytes", err.len());
    assert!(err.contains("... (1048576 bytes)"), "{}", &err[err.len().saturating_sub(300)..]);
}

#[test]
fn device_number_out_of_range_is_refused() {
    // 8 octal digits without a NUL: 0o77777777 does not fit the 7 digits an output header
    // has (and no Linux device has such a number)
    let s = Scene::new();
    let mut h = header(b"dev/weird", b'3', 0o600, 0, b"");
    h[329..337].copy_from_slice(b"77777777");
    h[337..345].copy_from_slice(b"0000001\0");
    fix_tar_checksum(&mut h);
    let mut tar = Tar::new().dir("dev").0;
    tar.extend_from_slice(&h);
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    let label = s.bad(&[Layer::gz(tar)], None);
    let err = s.assert_rejected(1);
    assert_layer_error(&err, &label, 1, "/dev/weird", "device number");
}

#[test]
fn device_nodes_keep_their_numbers() {
    let s = Scene::new();
    let mut h = header(b"dev/null", b'3', 0o666, 0, b"");
    h[329..337].copy_from_slice(b"0000001\0");
    h[337..345].copy_from_slice(b"0000003\0");
    fix_tar_checksum(&mut h);
    let mut big = header(b"dev/big", b'4', 0o660, 0, b"");
    big[329..337].copy_from_slice(b"0007777\0"); // major 4095, the largest Linux has
    big[337..345].copy_from_slice(b"3777777\0"); // minor 2^20 - 1
    fix_tar_checksum(&mut big);
    let mut tar = Tar::new().dir("dev").0;
    tar.extend_from_slice(&h);
    tar.extend_from_slice(&big);
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    s.bad(&[Layer::tar(tar)], None);
    s.assert_builds();
    let mut ar = tar::Archive::new(std::fs::File::open(s.p("out/demo.tar")).unwrap());
    let devs: Vec<(String, u8, u32, u32)> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| matches!(e.header().entry_type().as_byte(), b'3' | b'4'))
        .map(|e| {
            let h = e.header();
            (e.path().unwrap().display().to_string(), h.entry_type().as_byte(), h.device_major().unwrap().unwrap(), h.device_minor().unwrap().unwrap())
        })
        .collect();
    assert_eq!(devs, [("dev/big".to_string(), b'4', 4095, (1 << 20) - 1), ("dev/null".to_string(), b'3', 1, 3)]);
}

#[test]
fn the_first_bad_layer_is_reported_whatever_the_thread_count() {
    // layer 2 breaks the tree, layer 3 is not even a tar (and fails to parse first when
    // parsed in parallel): the error is always layer 2's
    let s = Scene::new();
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let label = s.bad(
        &[
            Layer::gz(Tar::new().entry("big", b'0', 0o644, &big, "").finish()),
            Layer::gz(Tar::new().hardlink("l", "missing").finish()),
            Layer::tar(b"garbage, not a tar".repeat(64)),
        ],
        None,
    );
    for threads in ["1", "2", "8"] {
        let out = Command::new(stagebox_bin())
            .arg("build")
            .arg(s.p("bad.toml"))
            .args(["--out", s.p("out").to_str().unwrap(), "--cache", s.p("cache").to_str().unwrap(), "--quiet", "--threads", threads])
            .env_remove("STAGEBOX_CACHE")
            .env("TMPDIR", s.dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "threads {threads}: {stderr}");
        assert_layer_error(&stderr, &label, 2, "/l", "does not exist");
        assert!(!s.p("out").exists());
    }
}

#[test]
fn an_error_while_writing_outputs_leaves_the_earlier_outputs_alone() {
    // The bad prepend file is found only when the initramfs is written, after the tar: the
    // earlier build's tar, initramfs and manifest.json must all stay as they were.
    let s = Scene::new();
    let md = write_layout(&s.p("other"), &[Layer::gz(Tar::new().file("other", "different content\n").finish())], None);
    let good = format!("name = \"demo\"\n[[layer]]\nimage = \"oci:good@{}\"\n[output.tar]\n[output.initramfs]\n", {
        let t = std::fs::read_to_string(s.p("good.toml")).unwrap();
        t.split('@').nth(1).unwrap().split('"').next().unwrap().to_string()
    });
    std::fs::write(s.p("good-cpio.toml"), good).unwrap();
    std::fs::write(s.p("junk.bin"), b"not a cpio archive").unwrap();
    std::fs::write(
        s.p("bad-cpio.toml"),
        format!("name = \"demo\"\n[[layer]]\nimage = \"oci:other@{md}\"\n[output.tar]\n[output.initramfs]\nprepend = [\"junk.bin\"]\n"),
    )
    .unwrap();
    let r = s.build("good-cpio.toml", "out", "cache");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = snapshot(&s.p("out"));
    assert!(before.contains_key(Path::new("demo.tar")) && before.contains_key(Path::new("demo.cpio")), "{:?}", before.keys());
    let r = s.build("bad-cpio.toml", "out", "cache");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("prepend \"junk.bin\" is not an uncompressed newc cpio archive"), "{}", r.stderr);
    let after = snapshot(&s.p("out"));
    assert!(before == after, "outputs changed: before {:?} after {:?}", before.keys(), after.keys());
    // and a fresh --out gets nothing
    let r = s.build("bad-cpio.toml", "out-fresh", "cache");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(snapshot(&s.p("out-fresh")).is_empty(), "{:?}", snapshot(&s.p("out-fresh")).keys());
}

// ---------------------------------------------------------------------------------------
// Added for issue 8: names that are not plain text, a zstd bomb, a whiteout of `..`

/// Raw (name bytes, type, data or link) of every entry of a plain tar file.
fn raw_entries(path: &Path) -> Vec<(Vec<u8>, u8, Vec<u8>)> {
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let t = e.header().entry_type().as_byte();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (e.path_bytes().into_owned(), t, data)
        })
        .collect()
}

#[test]
fn names_with_newlines_and_invalid_utf8_are_kept_byte_for_byte_in_tar_oci_and_cpio() {
    // Documented normalisation: none. A name is a byte string (only `/`, NUL and `..` rules
    // apply); tar, the OCI layer and newc cpio all hold any bytes, so they are kept as they
    // are. Only text renderings (inspect, diff, the SBOM's fileName) show them lossily.
    let s = Scene::new();
    let mut tar = Tar::new().dir("etc").0;
    for (name, data) in [(&b"etc/new\nline"[..], &b"nl"[..]), (b"etc/bad\xff\xfename", b"bin"), (b"etc/tab\tand\rcr", b"ws")] {
        tar.extend_from_slice(&header(name, b'0', 0o644, data.len() as u64, b""));
        tar.extend_from_slice(data);
        tar.extend(std::iter::repeat_n(0u8, BLOCK - data.len()));
    }
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    s.bad(&[Layer::gz(tar)], None);
    // Build tar, OCI and an initramfs (cpio) of it.
    let text = std::fs::read_to_string(s.p("bad.toml")).unwrap() + "\n[output.initramfs]\n";
    std::fs::write(s.p("bad.toml"), text).unwrap();
    let r = s.build("bad.toml", "out", "cache");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let names: Vec<Vec<u8>> = raw_entries(&s.p("out/demo.tar")).into_iter().map(|e| e.0).collect();
    for want in [&b"etc/new\nline"[..], b"etc/bad\xff\xfename", b"etc/tab\tand\rcr"] {
        assert!(names.iter().any(|n| n == want), "{:?} missing from the tar: {names:?}", String::from_utf8_lossy(want));
    }
    // cpio: names with the same bytes, NUL-terminated.
    let cpio = std::fs::read(s.p("out/demo.cpio")).unwrap();
    for want in [&b"etc/new\nline\0"[..], b"etc/bad\xff\xfename\0", b"etc/tab\tand\rcr\0"] {
        assert!(cpio.windows(want.len()).any(|w| w == want), "{:?} missing from the cpio", String::from_utf8_lossy(want));
    }
    // OCI: the one layer holds the same names.
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(s.p("out/demo.oci/index.json")).unwrap()).unwrap();
    let blob = |d: &str| s.p("out/demo.oci/blobs/sha256").join(d.trim_start_matches("sha256:"));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(idx["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let layer = blob(m["layers"][0]["digest"].as_str().unwrap());
    let mut dec = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&layer).unwrap()).read_to_end(&mut dec).unwrap();
    let tmp = s.p("layer.tar");
    std::fs::write(&tmp, dec).unwrap();
    let names: Vec<Vec<u8>> = raw_entries(&tmp).into_iter().map(|e| e.0).collect();
    assert!(names.iter().any(|n| n == b"etc/bad\xff\xfename") && names.iter().any(|n| n == b"etc/new\nline"), "{names:?}");
    // Text views do not choke on them.
    let o = Command::new(stagebox_bin()).arg("inspect").arg(s.p("out/demo.tar")).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("etc/bad\u{fffd}\u{fffd}name"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn zstd_bomb_is_stopped_at_the_layer_limit() {
    let s = Scene::new();
    // 6 × 4 MiB of zeros in a zstd stream of a few KiB, against a lowered limit of 16 MiB.
    let mut tar = Vec::new();
    for i in 0..6 {
        tar.extend_from_slice(&header(format!("zeros{i}").as_bytes(), b'0', 0o644, 4 << 20, b""));
        tar.resize(tar.len() + (4 << 20), 0);
    }
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    let diff_id = sha256_hex(&tar);
    let blob = zstd::encode_all(&tar[..], 19).unwrap();
    drop(tar);
    assert!(blob.len() < 200 << 10, "{}", blob.len());
    let label = s.bad(&[Layer { blob, media_type: "application/vnd.oci.image.layer.v1.tar+zstd", diff_id, size: None, present: true, on_disk: None }], None);
    let r = build_env(s.dir(), &s.p("bad.toml"), &s.p("out"), &s.p("cache"), &[("STAGEBOX_MAX_LAYER_BYTES", "16777216")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_layer_error(&r.stderr, &label, 1, "/zeros4", "layer unpacks to more than 16777216 bytes; refusing (possible decompression bomb)");
    assert!(snapshot(&s.p("out")).is_empty());
}

#[test]
fn whiteout_of_dotdot_and_dot_is_refused() {
    // `.wh..` would name `..` (the parent) and `.wh..` + `.` the directory itself: deleting
    // either from inside a layer is not an OCI operation.
    for name in ["etc/.wh...", "etc/.wh.."] {
        let s = Scene::new();
        let label = one_layer(&s, Tar::new().dir("etc").file("etc/keep", "k").file(name, ""));
        let err = s.assert_rejected(1);
        assert!(err.contains(&label), "{err}");
        assert!(err.contains("whiteout"), "{name}: {err}");
    }
}

/// One PAX record, its length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

#[test]
fn sparse_file_larger_than_the_layer_limit_is_refused_before_any_work() {
    // A 100 GB sparse file in a few KiB, as PAX sparse 1.0 (map in the data) and as an old
    // GNU `S` entry: its logical size trips the default 64 GiB limit from the header alone,
    // naming the real path, at once and without writing any zeros.
    const REAL: u64 = 100_000_000_000;
    let pax: Vec<u8> = [
        pax_record("GNU.sparse.major", "1"),
        pax_record("GNU.sparse.minor", "0"),
        pax_record("GNU.sparse.name", "huge/disk.img"),
        pax_record("GNU.sparse.realsize", &REAL.to_string()),
    ]
    .concat();
    let mut pax_tar = header(b"PaxHeaders/disk.img", b'x', 0o644, pax.len() as u64, b"").to_vec();
    pax_tar.extend_from_slice(&pax);
    pax_tar.resize(pax_tar.len().div_ceil(BLOCK) * BLOCK, 0);
    pax_tar.extend_from_slice(&header(b"huge/GNUSparseFile.1/disk.img", b'0', 0o644, BLOCK as u64 + 1, b""));
    let mut map = format!("1\n{}\n1\n", REAL - 1).into_bytes();
    map.resize(BLOCK, 0);
    pax_tar.extend_from_slice(&map);
    pax_tar.extend_from_slice(&[b'x'; 1]);
    pax_tar.resize(pax_tar.len().div_ceil(BLOCK) * BLOCK + 2 * BLOCK, 0);

    let mut s_head = header(b"huge/disk.img", b'S', 0o644, 1, b"");
    s_head[257..265].copy_from_slice(b"ustar  \0");
    s_head[386] = 0x80;
    s_head[390..398].copy_from_slice(&(REAL - 1).to_be_bytes());
    octal(&mut s_head[398..410], 1);
    s_head[483] = 0x80;
    s_head[487..495].copy_from_slice(&REAL.to_be_bytes());
    s_head[148..156].copy_from_slice(b"        ");
    let sum: u32 = s_head.iter().map(|b| *b as u32).sum();
    s_head[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut s_tar = s_head.to_vec();
    s_tar.push(b'x');
    s_tar.resize(BLOCK * 4, 0);

    for tar in [pax_tar, s_tar] {
        let s = Scene::new();
        assert!(tar.len() < 8 << 10);
        let label = s.bad(&[Layer::gz(tar)], None);
        let started = std::time::Instant::now();
        let (code, stderr, maxrss_kib) = build_measured(&s, "bad.toml");
        assert_eq!(code, 1, "{stderr}");
        assert_layer_error(&stderr, &label, 1, "/huge/disk.img", "layer unpacks to more than 68719476736 bytes");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
        assert!(maxrss_kib < 200 << 10, "peak RSS {maxrss_kib} KiB");
        assert!(snapshot(&s.p("out")).is_empty());
    }
}

#[test]
fn sparse_map_bombs_are_refused_within_the_metadata_cap() {
    // An old GNU `S` entry whose extension blocks never end (256 MiB of them, ~12 million map
    // chunks), and a PAX 1.0 map announcing a billion chunks: both refused as archive bombs
    // with the entry named, peak RSS far below what the map would take.
    let s = Scene::new();
    let mut head = header(b"s", b'S', 0o644, 0, b"");
    head[257..265].copy_from_slice(b"ustar  \0");
    head[482] = 1;
    head[148..156].copy_from_slice(b"        ");
    let sum: u32 = head.iter().map(|b| *b as u32).sum();
    head[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut ext = [0u8; BLOCK];
    for i in 0..21 {
        ext[i * 24..i * 24 + 24].copy_from_slice(b"00000000000\x0000000000000\0");
    }
    ext[504] = 1;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    let mut sha = Sha256::new();
    let mut put = |b: &[u8]| {
        gz.write_all(b).unwrap();
        sha.update(b);
    };
    put(&head);
    for _ in 0..(BOMB / BLOCK as u64) {
        put(&ext);
    }
    put(&[0u8; 2 * BLOCK]);
    let (blob, diff_id) = (gz.finish().unwrap(), hex::encode(sha.finalize()));
    let label = bomb_layer(&s, blob, diff_id);
    let (code, stderr, maxrss_kib) = build_measured(&s, "bad.toml");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("layer {label} #1")) && stderr.contains("possible archive bomb"), "{stderr}");
    assert!(maxrss_kib < 200 << 10, "peak RSS {maxrss_kib} KiB");

    let s = Scene::new();
    let pax: Vec<u8> = [pax_record("GNU.sparse.major", "1"), pax_record("GNU.sparse.minor", "0"), pax_record("GNU.sparse.name", "m"), pax_record("GNU.sparse.realsize", "1000")].concat();
    let mut tar = header(b"PaxHeaders/m", b'x', 0o644, pax.len() as u64, b"").to_vec();
    tar.extend_from_slice(&pax);
    tar.resize(tar.len().div_ceil(BLOCK) * BLOCK, 0);
    tar.extend_from_slice(&header(b"GNUSparseFile.1/m", b'0', 0o644, BLOCK as u64, b""));
    let mut map = b"1000000000\n".to_vec();
    map.resize(BLOCK, 0);
    tar.extend_from_slice(&map);
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    let label = s.bad(&[Layer::gz(tar)], None);
    let (code, stderr, maxrss_kib) = build_measured(&s, "bad.toml");
    assert_eq!(code, 1, "{stderr}");
    assert_layer_error(&stderr, &label, 1, "/m", "GNU sparse map of 1000000000 chunks");
    assert!(maxrss_kib < 200 << 10, "peak RSS {maxrss_kib} KiB");
}
