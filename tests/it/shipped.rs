//! The definitions the repository ships (`pallets/`, `kernels/`, `boxes/`) stay valid: they
//! parse, every image in them is pinned, and every pin is the one StageX published for the
//! release they name (`pallets/stagex-2026.03.0.digests`; a kernel definition whose comment
//! says "Pinned to StageX release X" against `pallets/stagex-X.digests`), checked offline with
//! `stagebox lock --check --import-digests`.

use crate::common;

use common::*;
use std::path::Path;

const RELEASE_DIGESTS: &str = "pallets/stagex-2026.03.0.digests";

/// `stagebox lock --check --offline --import-digests <release list> BOX`: (exit code, stdout).
fn check_against_release(bx: &Path, cache: &Path) -> (Option<i32>, String, String) {
    check_against(bx, cache, RELEASE_DIGESTS)
}

/// The same against the release list `list` (a path in the repository).
fn check_against(bx: &Path, cache: &Path, list: &str) -> (Option<i32>, String, String) {
    let list = manifest_dir().join(list);
    let o = output(&mut stagebox([
        "lock".as_ref(),
        "--check".as_ref(),
        "--offline".as_ref(),
        "--import-digests".as_ref(),
        list.as_os_str(),
        "--cache".as_ref(),
        cache.as_os_str(),
        bx.as_os_str(),
    ]));
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn pallets_and_kernels_are_pinned_to_the_release_they_name() {
    let d = tempdir();
    copy_dir(&manifest_dir().join("pallets"), &d.path().join("pallets"));
    copy_dir(&manifest_dir().join("kernels"), &d.path().join("kernels"));
    let mut pallets: Vec<String> = std::fs::read_dir(manifest_dir().join("pallets"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
        .collect();
    pallets.sort();
    assert!(pallets.len() >= 3, "a base, an airgap tool set and an enclave base: {pallets:?}");
    let mut kernels: Vec<String> = std::fs::read_dir(manifest_dir().join("kernels"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
        .collect();
    kernels.sort();
    let mut checked = 0;
    for p in &pallets {
        let bx = d.path().join(format!("pallet-{p}.toml"));
        write(&bx, format!("name = \"p\"\n[[layer]]\npallet = \"{p}\"\n[output.tar]\n"));
        let (code, out, err) = check_against_release(&bx, &d.path().join("cache"));
        assert_eq!(code, Some(0), "pallets/{p}.toml:\n{out}{err}");
        assert!(out.lines().all(|l| l.starts_with("ok ")), "{out}");
        checked += out.lines().count();
    }
    for k in &kernels {
        let text = std::fs::read_to_string(d.path().join(format!("kernels/{k}.toml"))).unwrap();
        if text.lines().any(|l| l.starts_with("kind = ")) {
            // A bootloader definition: checked through a bootable ISO box, when it names an
            // image (Debian's layouts leave the image to the box).
            if !text.lines().any(|l| l.starts_with("image = ")) {
                continue;
            }
            let bx = d.path().join(format!("bootloader-{k}.toml"));
            write(&bx, format!("name = \"b\"\n[[layer]]\npallet = \"stagex-base\"\n[kernel]\ndefinition = \"kernels/airgap.toml\"\n[output.iso]\nbootloader = \"kernels/{k}.toml\"\n"));
            let (code, out, err) = check_against_release(&bx, &d.path().join("cache"));
            assert_eq!(code, Some(0), "kernels/{k}.toml:\n{out}{err}");
            assert!(out.contains("stagex/user-"), "{out}");
            continue;
        }
        let bx = d.path().join(format!("kernel-{k}.toml"));
        // The kernel's own definition only, checked against the release its comment names
        // (kernels/nitro.toml keeps an older, gcc-built one).
        let release = text.split("Pinned to StageX release ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("2026.03.0");
        let list = format!("pallets/stagex-{release}.digests");
        write(&bx, format!("name = \"k\"\n[[layer]]\ndir = \".\"\n[kernel]\ndefinition = \"kernels/{k}.toml\"\n[output.tar]\n"));
        let (code, out, err) = check_against(&bx, &d.path().join("cache"), &list);
        assert_eq!(code, Some(0), "kernels/{k}.toml:\n{out}{err}");
        assert!(out.contains("stagex/user-linux-"), "{out}");
    }
    assert!(checked >= 10, "{checked} pins checked");

    // The check has teeth: a pin one hex digit off is reported as stale.
    let text = std::fs::read_to_string(d.path().join("pallets/stagex-base.toml")).unwrap();
    let at = text.find("@sha256:").unwrap() + 8;
    let flipped = if &text[at..at + 1] == "0" { "1" } else { "0" };
    write(&d.path().join("pallets/stagex-base.toml"), format!("{}{flipped}{}", &text[..at], &text[at + 1..]));
    let (code, out, _) = check_against_release(&d.path().join("pallet-stagex-base.toml"), &d.path().join("cache"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("STALE"), "{out}");
}

#[test]
fn containerfiles_pin_the_same_release() {
    let list = std::fs::read_to_string(manifest_dir().join(RELEASE_DIGESTS)).unwrap();
    let release: std::collections::BTreeMap<&str, &str> =
        list.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once(' ')).map(|(h, n)| (n, h)).collect();
    let mut seen = 0;
    for f in ["Containerfile", "examples/rust-hello/Containerfile"] {
        let text = std::fs::read_to_string(manifest_dir().join(f)).unwrap();
        for line in text.lines().filter(|l| l.starts_with("FROM ")) {
            let r = line.split_whitespace().nth(1).unwrap();
            if r == "fetch" || !r.starts_with("stagex/") {
                continue;
            }
            let (name, hex) = r.trim_start_matches("stagex/").split_once("@sha256:").unwrap_or_else(|| panic!("{f}: {r} is not pinned"));
            assert_eq!(release.get(name), Some(&hex), "{f}: {r} is not the 2026.03.0 pin of {name}");
            seen += 1;
        }
    }
    assert!(seen >= 4, "{seen}");
}
