//! Every box the repository ships (`boxes/*.toml`, `examples/*/`) builds, against stand-ins.
//!
//! The real boxes pin StageX 2026.03.0 images on docker.io, which CI cannot reach. The test
//! setup makes a stand-in image for every `stagex/<name>` the definitions name (Debian's
//! cloud kernel for `user-linux-*`, busybox-static for `core-busybox`, a core-filesystem-like
//! layer, Debian's boot loaders at StageX's paths, a marker file for the rest), pushes them to
//! a local registry, copies `boxes/`, `pallets/`, `kernels/` and `examples/` into a temp dir
//! with every `stagex/<name>@sha256:<release pin>` rewritten to the stand-in's registry
//! reference and digest, and then runs `stagebox build` and `stagebox lock --check` on every
//! box. So the definitions stay valid (keys, paths inside the images, kernel checks), and
//! the only thing swapped is the bytes behind each pin.

use crate::common;
use crate::registry_support;

use common::*;
use registry_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Directories of the repository the boxes read, copied (and rewritten) into the test root.
const TREES: &[&str] = &["boxes", "pallets", "kernels", "examples"];

/// `stagex/<name>@sha256:<hex>` in `text` → the names, in order of first appearance.
fn stagex_pins(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("stagex/").map(|i| i + from) {
        let rest = &text[i + 7..];
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c))).unwrap_or(rest.len());
        let after = &rest[name_len..];
        if after.starts_with("@sha256:") && after.len() >= 8 + 64 {
            out.push((i, i + 7 + name_len + 8 + 64, rest[..name_len].to_string()));
        }
        from = i + 7;
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == "out" || name == "target" || name == "build" {
            continue;
        }
        if p.is_dir() && !p.is_symlink() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A stand-in layer for StageX image `name`.
fn standin(name: &str, scratch: &Path) -> Vec<(String, Vec<u8>)> {
    let base = ("core-filesystem".to_string(), core_filesystem_layer());
    let own = match name {
        "core-filesystem" => return vec![base],
        "core-busybox" => layer(&[
            Entry::dir("usr"),
            Entry::dir("usr/bin"),
            Entry::file("usr/bin/busybox", busybox()).mode(0o755),
            Entry::symlink("usr/bin/sh", "busybox"),
            Entry::symlink("usr/bin/mount", "busybox"),
            Entry::symlink("usr/bin/mkdir", "busybox"),
            Entry::symlink("usr/bin/sleep", "busybox"),
            Entry::symlink("usr/bin/echo", "busybox"),
        ]),
        // Debian's isolinux and syslinux-common files where StageX's syslinux keeps them.
        "user-syslinux" => {
            let d = scratch.join(name);
            std::fs::create_dir_all(&d).unwrap();
            for p in ["isolinux", "syslinux-common"] {
                run(Command::new("dpkg-deb").arg("-x").arg(deb(p)).arg(&d));
            }
            let f = |p: &str| read(&d.join(p));
            layer(&[
                Entry::dir("usr"),
                Entry::dir("usr/share"),
                Entry::dir("usr/share/syslinux"),
                Entry::file("usr/share/syslinux/isolinux.bin", f("usr/lib/ISOLINUX/isolinux.bin")),
                Entry::file("usr/share/syslinux/isohdpfx.bin", f("usr/lib/ISOLINUX/isohdpfx.bin")),
                Entry::file("usr/share/syslinux/ldlinux.c32", f("usr/lib/syslinux/modules/bios/ldlinux.c32")),
            ])
        }
        // Debian's grub-efi-amd64-bin: the same /usr/lib/grub/x86_64-efi as StageX's user-grub.
        "user-grub" => deb_layer("grub-efi-amd64-bin"),
        "core-curl" => layer(&[Entry::dir("usr"), Entry::dir("usr/bin"), Entry::file("usr/bin/curl", "#!/bin/sh\necho curl stand-in\n").mode(0o755)]),
        // StageX's nitro kernel has vsock, virtio-mmio and the NSM driver built in; Debian's has
        // them as modules or not at all. This box is built here, not booted as an enclave, so
        // the stand-in's config says what StageX's nitro.config says, for the EIF kernel gate.
        "user-linux-nitro" => {
            let d = scratch.join(name);
            std::fs::create_dir_all(&d).unwrap();
            cloud_kernel_layer(&d);
            let boot = |prefix: &str| {
                let p = std::fs::read_dir(d.join("boot")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix)).unwrap();
                read(&p)
            };
            let mut config = boot("config-");
            config.extend_from_slice(b"CONFIG_VSOCKETS=y\nCONFIG_VIRTIO_VSOCKETS=y\nCONFIG_VIRTIO_MMIO=y\nCONFIG_NSM=y\n");
            layer(&[Entry::file("bzImage", boot("vmlinuz-")), Entry::file("linux.config", config)])
        }
        n if n.starts_with("user-linux-") => {
            let d = scratch.join(n);
            std::fs::create_dir_all(&d).unwrap();
            cloud_kernel_layer(&d)
        }
        n => layer(&[
            Entry::dir("usr"),
            Entry::dir("usr/share"),
            Entry::dir("usr/share/stagex-standin"),
            Entry::file(&format!("usr/share/stagex-standin/{n}"), format!("stand-in for stagex/{n}\n")),
        ]),
    };
    vec![base, (name.to_string(), own)]
}

struct Fixture {
    /// The rewritten copy of the repository's definitions.
    root: PathBuf,
    cache: PathBuf,
    _registry: Registry,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = fixture_dir("boxes");
        let mut files = Vec::new();
        for t in TREES {
            files_under(&manifest_dir().join(t), &mut files);
        }
        let mut names = BTreeSet::new();
        for f in &files {
            if let Ok(text) = std::fs::read_to_string(f) {
                names.extend(stagex_pins(&text).into_iter().map(|(_, _, n)| n));
            }
        }
        assert!(names.contains("core-filesystem") && names.iter().any(|n| n.starts_with("user-linux-")), "{names:?}");

        // One stand-in image per name, pushed as 127.0.0.1:PORT/stagex/<name>:standin.
        let reg = Registry::start();
        let layout = dir.join("standins");
        let mut digests = BTreeMap::new();
        for n in &names {
            umoci_image(&layout, n, &standin(n, &dir.join("scratch")));
            reg.push(&layout, n, &format!("stagex/{n}"), &[]);
            digests.insert(n.clone(), remote_digest(&reg, &format!("stagex/{n}"), n));
        }

        // The definitions, with every pin pointing at its stand-in.
        let root = dir.join("repo");
        for f in &files {
            let rel = f.strip_prefix(manifest_dir()).unwrap();
            let to = root.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            if f.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(f).unwrap(), &to).unwrap();
                continue;
            }
            let Ok(text) = std::fs::read_to_string(f) else {
                std::fs::copy(f, &to).unwrap();
                continue;
            };
            let mut out = String::new();
            let mut last = 0;
            for (a, b, n) in stagex_pins(&text) {
                out.push_str(&text[last..a]);
                out.push_str(&format!("{}/stagex/{n}@{}", reg.host(), digests[&n]));
                last = b;
            }
            out.push_str(&text[last..]);
            write(&to, out);
            std::fs::set_permissions(&to, std::fs::metadata(f).unwrap().permissions()).unwrap();
        }
        Fixture { root, cache: dir.join("cache"), _registry: reg }
    })
}

/// `stagebox build BOX -q`, with the outputs under `<box dir>/out-<box name>`.
fn build_box(bx: &Path) -> (PathBuf, serde_json::Value) {
    let f = fixture();
    let out = bx.parent().unwrap().join(format!("out-{}", bx.file_stem().unwrap().to_string_lossy()));
    build(bx, &out, &f.cache);
    let m = read_json(&out.join("manifest.json"));
    (out, m)
}

fn lock_check(bx: &Path) {
    let f = fixture();
    let o = output(&mut stagebox(["lock".as_ref(), "--check".as_ref(), "--cache".as_ref(), f.cache.as_os_str(), bx.as_os_str()]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "lock --check {}:\n{out}{}", bx.display(), String::from_utf8_lossy(&o.stderr));
    assert!(!out.is_empty() && out.lines().all(|l| l.starts_with("ok ")), "{out}");
}

fn formats(m: &serde_json::Value) -> BTreeSet<String> {
    m["outputs"].as_array().unwrap().iter().map(|o| o["format"].as_str().unwrap().to_string()).collect()
}

#[test]
fn every_shipped_box_is_covered_here() {
    // A new box in boxes/ must get a test below (and a line here).
    let mut shipped: Vec<String> = std::fs::read_dir(manifest_dir().join("boxes"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
        .collect();
    shipped.sort();
    assert_eq!(shipped, ["airgap", "enclave", "export-curl", "firmware"], "boxes/ changed: add a build test for each box in tests/it/boxes.rs");
}

#[test]
fn enclave_box_builds_an_eif_with_pcrs() {
    let f = fixture();
    let bx = f.root.join("boxes/enclave.toml");
    lock_check(&bx);
    let (out, m) = build_box(&bx);
    assert!(formats(&m).contains("eif"), "{m}");
    let eif = m["outputs"].as_array().unwrap().iter().find(|o| o["format"] == "eif").unwrap();
    for pcr in ["PCR0", "PCR1", "PCR2"] {
        assert_eq!(eif["pcrs"][pcr].as_str().map(str::len), Some(96), "{eif}");
    }
    assert!(out.join("enclave.eif").is_file());
    // Every input is a pinned stand-in from the local registry.
    for i in m["inputs"].as_array().unwrap() {
        let r = i["ref"].as_str().unwrap();
        assert!(r.starts_with("dir:") || r.contains("/stagex/") && r.contains("@sha256:"), "{r}");
    }
}

#[test]
fn firmware_box_builds_a_squashfs_that_unsquashfs_reads() {
    let f = fixture();
    let bx = f.root.join("boxes/firmware.toml");
    lock_check(&bx);
    let (out, m) = build_box(&bx);
    assert_eq!(formats(&m), BTreeSet::from(["squashfs".to_string()]), "{m}");
    let o = run(Command::new("unsquashfs").args(["-lln", "-no-progress"]).arg(out.join("firmware.squashfs")));
    let l = String::from_utf8_lossy(&o.stdout);
    assert!(l.contains("squashfs-root/etc/inittab") && l.contains("squashfs-root/usr/bin/busybox"), "{l}");
    assert!(l.lines().any(|x| x.starts_with("-rwxr-xr-x 0/0") && x.ends_with("etc/init.d/rcS")), "{l}");
}

#[test]
fn airgap_box_builds_a_hybrid_iso_that_boots() {
    let f = fixture();
    // Only StageX pins (syslinux for BIOS, GRUB for UEFI): nothing to make first.
    let bx = f.root.join("boxes/airgap.toml");
    assert!(!std::fs::read_to_string(&bx).unwrap().lines().any(|l| !l.starts_with('#') && l.contains("debian")), "airgap.toml uses a Debian binary");
    run(stagebox(["lock".as_ref(), "--cache".as_ref(), f.cache.as_os_str(), bx.as_os_str()]).borrow_mut());
    lock_check(&bx);
    let (out, m) = build_box(&bx);
    assert!(formats(&m).contains("iso"), "{m}");
    let o = run(Command::new("xorriso").args(["-indev"]).arg(out.join("airgap.iso")).args(["-report_el_torito", "plain"]));
    let r = String::from_utf8_lossy(&o.stdout);
    assert!(r.contains("BIOS") && r.contains("UEFI"), "both boot entries: {r}");
    let o = run(stagebox(["run".as_ref(), out.join("airgap.iso").as_os_str(), "--expect".as_ref(), "stagebox airgap: up".as_ref(), "--timeout".as_ref(), "150".as_ref()]).borrow_mut());
    assert!(String::from_utf8_lossy(&o.stdout).contains("stagebox airgap: up"));
    // UEFI through the GRUB image assembled from the user-grub pin.
    let o = run(stagebox(["run".as_ref(), out.join("airgap.iso").as_os_str(), "--uefi".as_ref(), "--expect".as_ref(), "stagebox airgap: up".as_ref(), "--timeout".as_ref(), "200".as_ref()]).borrow_mut());
    assert!(String::from_utf8_lossy(&o.stdout).contains("stagebox airgap: up"));
}

#[test]
fn export_curl_box_builds_four_packages() {
    let f = fixture();
    let bx = f.root.join("boxes/export-curl.toml");
    lock_check(&bx);
    let (out, m) = build_box(&bx);
    assert_eq!(formats(&m), BTreeSet::from(["deb", "rpm", "arch", "apk"].map(String::from)), "{m}");
    let deb = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "deb")).unwrap();
    let o = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let l = String::from_utf8_lossy(&o.stdout);
    assert!(l.contains("./usr/bin/curl") && !l.contains("etc/passwd"), "only the curl layer: {l}");
}

#[test]
fn rust_hello_example_builds_its_app_and_an_eif() {
    let f = fixture();
    let ex = f.root.join("examples/rust-hello");
    // The app, built here with the host toolchain in place of the Containerfile's
    // stagex/pallet-rust build, then made into the OCI layout the box expects.
    let target = test_cache().join("rust-hello-target");
    run(Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(ex.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target));
    let app = layer(&[Entry::dir("usr"), Entry::dir("usr/bin"), Entry::file("usr/bin/hello", read(&target.join("release/hello"))).mode(0o755)]);
    umoci_image(&ex.join("build/app.oci"), "latest", &[("core-filesystem".into(), core_filesystem_layer()), ("hello".into(), app)]);
    let bx = ex.join("enclave.toml");
    run(stagebox(["lock".as_ref(), "--cache".as_ref(), f.cache.as_os_str(), bx.as_os_str()]).borrow_mut());
    lock_check(&bx);
    let (out, m) = build_box(&bx);
    assert!(formats(&m).contains("eif"), "{m}");
    assert!(out.join("hello-enclave.eif").is_file());
}

use std::borrow::BorrowMut;
