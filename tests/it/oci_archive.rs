//! `oci-archive:` references: an OCI layout written as a tar by `skopeo copy … oci-archive:`
//! builds exactly what the layout builds (image layer, pallet and kernel all from archives),
//! `lock` and `inspect` pin it like an `oci:` layout, and a truncated archive or one with a
//! changed blob fails with a clear error and writes nothing.

use crate::common;

use common::*;
use std::borrow::BorrowMut;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Fixture {
    dir: PathBuf,
    /// Manifest digests (`sha256:…`) of the root image (tag `r`), the pallet image (tag `p`)
    /// and the kernel image (tag `k`), all in `dir/layout`.
    root: String,
    pallet: String,
    kernel: String,
}

fn rootfs() -> Vec<Entry> {
    vec![
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/busybox", "\x7fELF stand-in").mode(0o755),
        Entry::symlink("usr/bin/sh", "busybox"),
        Entry::file("init", "#!/bin/sh\necho hello\n").mode(0o755),
        Entry::file("usr/bin/gone", "removed by the pallet"),
        Entry::dir("sbin"),
        Entry::symlink("sbin/init", "../usr/bin/busybox"),
    ]
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["umoci", "skopeo"]);
        let dir = fixture_dir("oci_archive");
        let layout = dir.join("layout");
        let root = umoci_image(&layout, "r", &[("core-filesystem".into(), core_filesystem_layer()), ("init".into(), layer(&rootfs()))]);
        let extra = layer(&[
            Entry::dir("opt"),
            Entry::file("opt/data", vec![b'x'; 200_000]),
            Entry::hardlink("opt/data-link", "opt/data"),
            Entry::whiteout("usr/bin/gone"),
        ]);
        let pallet = umoci_image(&layout, "p", &[("extra".into(), extra)]);
        let kernel = umoci_image(
            &layout,
            "k",
            &[("kernel".into(), layer(&[Entry::file("bzImage", "stand-in kernel bytes\n"), Entry::file("linux.config", "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\n")]))],
        );
        // One archive per image, as `podman save` / `docker buildx --output type=oci` give them.
        for tag in ["r", "p", "k"] {
            run(Command::new("skopeo")
                .arg("copy")
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("oci-archive:{}:{tag}", dir.join(format!("{tag}.tar")).display())));
        }
        Fixture { dir, root, pallet, kernel }
    })
}

/// A box in `dir` whose root image, pallet and kernel come from `root`, `pallet`, `kernel`.
fn write_box(dir: &Path, name: &str, root: &str, pallet: &str, kernel: &str) -> PathBuf {
    write(&dir.join(format!("pallets/{name}.toml")), format!("name = \"{name}\"\nimages = [\"{pallet}\"]\n"));
    let p = dir.join(format!("{name}.toml"));
    write(
        &p,
        format!(
            "name = \"fit\"\n\n[[layer]]\nimage = \"{root}\"\n\n[[layer]]\npallet = \"{name}\"\n\n[kernel]\nimage = \"{kernel}\"\ncmdline = \"console=ttyS0\"\n\n[output.tar]\n\n[output.initramfs]\ncompression = \"gzip\"\n\n[output.oci]\n"
        ),
    );
    p
}

fn archive_refs(f: &Fixture) -> (String, String, String) {
    let a = |tag: &str, d: &str| format!("oci-archive:{}:{tag}@{d}", f.dir.join(format!("{tag}.tar")).display());
    (a("r", &f.root), a("p", &f.pallet), a("k", &f.kernel))
}

/// Output files (and OCI layout members) of a build → sha256, without the manifests (their
/// inputs name the references, which differ by design).
fn outputs(out: &Path) -> std::collections::BTreeMap<String, String> {
    let mut t = hash_tree(out);
    t.retain(|k, _| !k.ends_with("manifest.json"));
    t
}

#[test]
fn archive_builds_the_same_bytes_as_its_layout() {
    let f = fixture();
    let d = tempdir();
    let cache = d.path().join("cache");
    let layout = f.dir.join("layout");
    let l = |d: &str| format!("oci:{}@{d}", layout.display());
    let from_layout = write_box(d.path(), "layout", &l(&f.root), &l(&f.pallet), &l(&f.kernel));
    let (r, p, k) = archive_refs(f);
    let from_archive = write_box(d.path(), "archive", &r, &p, &k);

    let a = build(&from_layout, &d.path().join("out-layout"), &cache);
    // A fresh store, so every blob really comes out of the archive.
    let b = build(&from_archive, &d.path().join("out-archive"), &d.path().join("cache2"));
    assert_eq!(a.len(), 5, "tar, OCI layout, initramfs, kernel, cmdline: {a:?}");
    let sha = |v: &[Built]| v.iter().map(|x| x.sha256.clone()).collect::<Vec<_>>();
    assert_eq!(sha(&a), sha(&b), "outputs built from the archive differ from those built from the layout");
    let (ta, tb) = (outputs(&d.path().join("out-layout")), outputs(&d.path().join("out-archive")));
    assert!(ta.keys().any(|k| k.starts_with("fit.oci/blobs/")), "{ta:?}");
    assert_eq!(ta, tb);

    // The archive's pins are the manifest digests, as for the layout.
    let m = read_json(&d.path().join("out-archive/manifest.json"));
    let pins: Vec<(String, String)> =
        m["inputs"].as_array().unwrap().iter().map(|i| (i["ref"].as_str().unwrap().into(), i["digest"].as_str().unwrap().into())).collect();
    for (reference, digest) in [(&r, &f.root), (&p, &f.pallet), (&k, &f.kernel)] {
        assert!(pins.contains(&(reference.clone(), digest.clone())), "{reference} not pinned to {digest}: {pins:?}");
    }
}

#[test]
fn lock_and_inspect_pin_an_archive_like_a_layout() {
    let f = fixture();
    let d = tempdir();
    let cache = d.path().join("cache");
    let tagged = |tag: &str| format!("oci-archive:{}:{tag}", f.dir.join(format!("{tag}.tar")).display());
    let b = write_box(d.path(), "tagged", &tagged("r"), &tagged("p"), &tagged("k"));
    let o = run(stagebox(["lock".as_ref(), b.as_os_str(), "--cache".as_ref(), cache.as_os_str()]).borrow_mut());
    let lines = String::from_utf8(o.stdout).unwrap();
    for (tag, digest) in [("r", &f.root), ("p", &f.pallet), ("k", &f.kernel)] {
        assert!(lines.contains(&format!("{digest}  {}", tagged(tag))), "lock did not pin {tag} to {digest}:\n{lines}");
    }
    run(stagebox(["lock".as_ref(), b.as_os_str(), "--check".as_ref(), "--cache".as_ref(), cache.as_os_str()]).borrow_mut());
    // --locked builds from the pins.
    let out = d.path().join("out");
    run(stagebox(["build".as_ref(), b.as_os_str(), "--locked".as_ref(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()]).borrow_mut());

    let o = run(stagebox(["inspect", "--json", "--cache", cache.to_str().unwrap(), &tagged("r")]).borrow_mut());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["pin"], f.root.as_str(), "{j}");
    assert_eq!(j["layers"].as_array().map(Vec::len), Some(2), "{j}");
}

/// Build a box whose root image is `archive` (pinned to the root digest) with a fresh store;
/// it must fail with exit 1, print `needle`, and leave no output directory.
fn assert_refused(f: &Fixture, archive: &Path, needle: &str) {
    let d = tempdir();
    let (_, p, k) = archive_refs(f);
    let b = write_box(d.path(), "bad", &format!("oci-archive:{}@{}", archive.display(), f.root), &p, &k);
    let out = d.path().join("out");
    let o = output(stagebox(["build".as_ref(), b.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), d.path().join("cache").as_os_str(), "-q".as_ref()]).borrow_mut());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(err.contains(&archive.display().to_string()), "the error must name the archive:\n{err}");
    assert!(!out.exists(), "a failed build wrote {}", out.display());
}

/// Member name → (data offset, size) of a tar, read with the `tar` crate.
fn members(tar_bytes: &[u8]) -> Vec<(String, u64, u64)> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().display().to_string(), e.raw_file_position(), e.size())
        })
        .collect()
}

#[test]
fn truncated_archive_is_refused() {
    let f = fixture();
    let whole = read(&f.dir.join("r.tar"));
    let d = tempdir();
    let cut = d.path().join("cut.tar");
    // Cut in the middle of the largest member's data.
    let (_, off, size) = members(&whole).into_iter().max_by_key(|m| m.2).unwrap();
    write(&cut, &whole[..(off + size / 2) as usize]);
    assert_refused(f, &cut, "truncated");
    // Cut just before a member's header: what is left is a well-formed but shorter tar,
    // without its end-of-archive blocks.
    let (_, off, _) = members(&whole).into_iter().rfind(|m| m.0.contains("blobs/sha256/") && m.2 > 0).unwrap();
    write(&cut, &whole[..(off - 512) as usize]);
    assert_refused(f, &cut, "truncated");
}

#[test]
fn changed_blob_is_refused() {
    let f = fixture();
    let mut bytes = read(&f.dir.join("r.tar"));
    let d = tempdir();
    let bad = d.path().join("changed.tar");
    // Flip one byte in the middle of the largest blob (a layer): same size, other content.
    let (name, off, size) = members(&bytes).into_iter().filter(|m| m.0.contains("blobs/sha256/")).max_by_key(|m| m.2).unwrap();
    bytes[(off + size / 2) as usize] ^= 0x55;
    write(&bad, &bytes);
    assert_refused(f, &bad, "digest mismatch");
    let hex = name.rsplit('/').next().unwrap();
    let o = output(stagebox(["inspect", "--cache", d.path().join("c2").to_str().unwrap(), &format!("oci-archive:{}", bad.display())]).borrow_mut());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("digest mismatch") && err.contains(hex), "inspect must refuse the changed blob {hex}:\n{err}");
}
