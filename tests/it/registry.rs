//! Registry sources against a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free loopback port, images pushed into it with `skopeo copy`.
//! stagebox pulls by tag (via `lock`) and by digest, through a multi-platform index, OCI and
//! Docker media types; `--offline` uses only the store; a registry that stops mid-pull leaves
//! a clear error, a store whose every blob hashes to its name and the partial blob under the
//! store's `tmp/`, and the next run resumes it. TLS, credentials, redirects, resumes and retries
//! against a test proxy are in the second half of this file.

use crate::common;
use crate::registry_support;

use common::*;
use registry_support::*;
use std::borrow::BorrowMut;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

struct Fixture {
    dir: PathBuf,
    /// umoci-made layout with `small` (two small layers) and `big` (plus a 6 MiB random layer).
    layout: PathBuf,
    small: String,
    big: String,
    /// Hand-written layout with an index `multi` (amd64, arm64).
    multi: PathBuf,
    multi_index: String,
    amd64: String,
    arm64: String,
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = fixture_dir("registry");
        let layout = dir.join("layout");
        let app = layer(&[Entry::dir("etc"), Entry::file("etc/hello", "hello from the registry\n"), Entry::file("usr/bin/tool", "#!/bin/sh\n").mode(0o755)]);
        let small = umoci_image(&layout, "small", &[("core-filesystem".into(), core_filesystem_layer()), ("app".into(), app.clone())]);
        let blob = layer(&[Entry::dir("opt"), Entry::file("opt/big.bin", random_bytes(6 << 20, 7))]);
        let big = umoci_image(&layout, "big", &[("core-filesystem".into(), core_filesystem_layer()), ("app".into(), app), ("big".into(), blob)]);

        let multi = dir.join("multi");
        let l = Layout::create(&multi);
        let core = core_filesystem_layer();
        let marker = |arch: &str| layer(&[Entry::dir("etc"), Entry::file("etc/arch", arch)]);
        let (ma, mb) = (marker("amd64\n"), marker("arm64\n"));
        let amd64 = l.image(&[(&core, Comp::Gzip), (&ma, Comp::Gzip)], "amd64");
        let arm64 = l.image(&[(&core, Comp::Gzip), (&mb, Comp::Gzip)], "arm64");
        let idx = l.index_blob(&[arm64.clone(), amd64.clone()]);
        l.set_index(&[(idx.clone(), "multi")]);
        Fixture { dir, layout, small, big, multi, multi_index: digest_of(&idx), amd64: digest_of(&amd64), arm64: digest_of(&arm64) }
    })
}

fn box_file(dir: &Path, name: &str, image: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(format!("{name}.toml"));
    write(&p, format!("name = \"{name}\"\n\n[[layer]]\nimage = \"{image}\"\n\n[output.tar]\n"));
    p
}

fn args<'a>(v: &'a [&'a dyn AsRef<std::ffi::OsStr>]) -> Vec<&'a std::ffi::OsStr> {
    v.iter().map(|a| a.as_ref()).collect()
}

/// `stagebox build BOX --out OUT --cache CACHE -q EXTRA...`, not checked.
fn try_build(bx: &Path, out: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = stagebox(args(&[&"build", &bx, &"--out", &out, &"--cache", &cache, &"-q"]));
    c.args(extra);
    output(&mut c)
}

fn lock_digest(bx: &Path) -> String {
    let lock: toml::Value = toml::from_str(&String::from_utf8(read(&bx.with_extension("lock"))).unwrap()).unwrap();
    lock["image"][0]["digest"].as_str().unwrap().to_string()
}

/// Every blob in the store hashes to its name, and no temp file is left behind.
fn assert_store_sound(cache: &Path) {
    let dir = cache.join("blobs/sha256");
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "a temp file was left in the store: {name}");
        assert_eq!(sha256_file(&e.path()), name, "store blob {name} does not hash to its name");
    }
}

fn arch_of(tar_path: &Path) -> String {
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == b"etc/arch" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return s.trim().to_string();
        }
    }
    panic!("no etc/arch in {}", tar_path.display());
}

/// The reference build: the same image from its OCI layout.
fn reference_tar(f: &Fixture, name: &str, digest: &str) -> String {
    let dir = f.dir.join("reference");
    let bx = box_file(&dir, name, &format!("oci:{}@{digest}", f.layout.display()));
    let b = build(&bx, &dir.join(format!("out-{name}")), &dir.join("cache"));
    b[0].sha256.clone()
}

#[test]
fn pull_by_tag_via_lock_and_by_digest_builds_what_the_layout_builds() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.layout, "small", "stagex/core-small", &[]);
    assert_eq!(remote_digest(&reg, "stagex/core-small", "small"), f.small, "skopeo keeps the manifest digest");
    let want = reference_tar(f, "small", &f.small);
    let dir = tempdir();
    let cache = dir.path().join("cache");

    // By tag: unpinned, so build refuses; lock pins it to the manifest digest; build uses it.
    let bx = box_file(dir.path(), "tag", &format!("{}/stagex/core-small:small", reg.host()));
    let o = try_build(&bx, &dir.path().join("out-tag"), &cache, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    run(stagebox(args(&[&"lock", &bx, &"--cache", &cache])).borrow_mut());
    assert_eq!(lock_digest(&bx), f.small);
    let b = build(&bx, &dir.path().join("out-tag"), &cache);
    assert_eq!(b[0].sha256, want, "the registry image builds the same tar as its layout");
    let m = read_json(&dir.path().join("out-tag/manifest.json"));
    assert_eq!(m["inputs"][0]["digest"].as_str(), Some(f.small.as_str()));

    // By digest, in docker:// form, into a fresh store.
    let cache2 = dir.path().join("cache2");
    let bx = box_file(dir.path(), "digest", &format!("docker://{}/stagex/core-small@{}", reg.host(), f.small));
    let b = build(&bx, &dir.path().join("out-digest"), &cache2);
    assert_eq!(b[0].sha256, want);
    assert_store_sound(&cache2);

    // A digest the registry does not have: a clear error naming the reference, exit 2 (a
    // wrong pin is the box file's error).
    let bogus = format!("sha256:{}", "0".repeat(64));
    let bx = box_file(dir.path(), "bogus", &format!("{}/stagex/core-small@{bogus}", reg.host()));
    let o = try_build(&bx, &dir.path().join("out-bogus"), &cache2, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("stagex/core-small") && err.contains("404"), "{err}");
    assert!(!dir.path().join("out-bogus").exists(), "nothing is written");

    // inspect speaks registries too.
    let o = run(stagebox(args(&[&"inspect", &"--json", &"--cache", &cache2, &format!("{}/stagex/core-small:small", reg.host())])).borrow_mut());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["manifest_digest"].as_str(), Some(f.small.as_str()));
    assert_eq!(j["layers"].as_array().unwrap().len(), 2);
}

#[test]
fn index_picks_linux_amd64_or_platform_and_docker_media_types_work() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.multi, "multi", "stagex/core-multi", &["--all", "--preserve-digests"]);
    assert_eq!(remote_digest(&reg, "stagex/core-multi", "multi"), f.multi_index);
    let dir = tempdir();
    let cache = dir.path().join("cache");

    // lock pins the tag to the linux/amd64 manifest, not the index (as StageX's digests/ lists do).
    let bx = box_file(dir.path(), "multi", &format!("{}/stagex/core-multi:multi", reg.host()));
    run(stagebox(args(&[&"lock", &bx, &"--cache", &cache])).borrow_mut());
    assert_eq!(lock_digest(&bx), f.amd64);
    let b = build(&bx, &dir.path().join("out-multi"), &cache);
    assert_eq!(arch_of(&b[0].path), "amd64");
    run(stagebox(args(&[&"lock", &bx, &"--cache", &cache, &"--platform", &"linux/arm64"])).borrow_mut());
    assert_eq!(lock_digest(&bx), f.arm64);

    // Pinned to the index digest: amd64 by default, arm64 with --platform.
    let bx = box_file(dir.path(), "idx", &format!("{}/stagex/core-multi@{}", reg.host(), f.multi_index));
    let b = build(&bx, &dir.path().join("out-idx"), &dir.path().join("cache-idx"));
    assert_eq!(arch_of(&b[0].path), "amd64");
    let out = dir.path().join("out-idx-arm");
    let o = try_build(&bx, &out, &dir.path().join("cache-idx"), &["--platform", "linux/arm64"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(arch_of(&out.join("idx.tar")), "arm64");
    let o = try_build(&bx, &dir.path().join("out-s390x"), &dir.path().join("cache-idx"), &["--platform", "linux/s390x"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("linux/s390x"), "{}", String::from_utf8_lossy(&o.stderr));

    // Docker schema 2 manifests and layer media types (skopeo converts on push).
    reg.push(&f.layout, "small", "stagex/core-docker", &["--format", "v2s2"]);
    let raw = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw"]).arg(format!("docker://{}/stagex/core-docker:small", reg.host())));
    let mj: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(mj["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let bx = box_file(dir.path(), "docker", &format!("{}/stagex/core-docker:small", reg.host()));
    run(stagebox(args(&[&"lock", &bx, &"--cache", &cache])).borrow_mut());
    let b = build(&bx, &dir.path().join("out-docker"), &cache);
    assert_eq!(b[0].sha256, reference_tar(f, "small", &f.small), "Docker-typed image builds the same tar");
    assert_store_sound(&cache);
}

#[test]
fn offline_uses_the_store_only_and_lists_what_is_missing() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.layout, "small", "stagex/core-small", &[]);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let bx = box_file(dir.path(), "off", &format!("{}/stagex/core-small@{}", reg.host(), f.small));

    let o = try_build(&bx, &dir.path().join("out"), &cache, &["--offline"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--offline") && err.contains(&format!("manifest {}", f.small)), "names the missing manifest: {err}");

    // Pull once (tag and digest), then stop the registry: offline builds and locks still work.
    let tagged = box_file(dir.path(), "tagged", &format!("{}/stagex/core-small:small", reg.host()));
    run(stagebox(args(&[&"lock", &tagged, &"--cache", &cache])).borrow_mut());
    let online = build(&bx, &dir.path().join("out"), &cache);
    reg.stop();
    let o = try_build(&bx, &dir.path().join("out2"), &cache, &["--offline"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(parse_build_stdout(&o.stdout)[0].sha256, online[0].sha256);
    std::fs::remove_file(tagged.with_extension("lock")).unwrap();
    run(stagebox(args(&[&"lock", &tagged, &"--cache", &cache, &"--offline"])).borrow_mut());
    assert_eq!(lock_digest(&tagged), f.small, "offline lock uses the tag recorded by the last pull");

    // A layer removed from the store: offline names exactly that blob.
    let m = read_json(&cache.join("blobs/sha256").join(&f.small[7..]));
    let layer = m["layers"][1]["digest"].as_str().unwrap().to_string();
    std::fs::remove_file(cache.join("blobs/sha256").join(&layer[7..])).unwrap();
    let o = try_build(&bx, &dir.path().join("out3"), &cache, &["--offline"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("layer 2 {layer}")), "names the missing layer: {err}");
    assert!(!err.contains("layer 1 "), "and only that one: {err}");
}

/// A TCP relay in front of the registry that, once `cut_after` bytes have gone back to the
/// client, kills the registry and drops the connection: the registry stops mid-pull.
fn relay(reg: &Registry, cut_after: u64) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = reg.port;
    let child = reg.child.clone();
    let sent = Arc::new(AtomicU64::new(0));
    let armed = Arc::new(AtomicBool::new(true));
    let armed2 = armed.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { break };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
            });
            let (sent, child, armed) = (sent.clone(), child.clone(), armed2.clone());
            std::thread::spawn(move || {
                let (mut s_in, mut c_out) = (server, client);
                let mut buf = [0u8; 16384];
                loop {
                    let n = match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if armed.load(Ordering::SeqCst) && sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > cut_after {
                        armed.store(false, Ordering::SeqCst);
                        if let Some(mut c) = child.lock().unwrap().take() {
                            stop_child(&mut c);
                        }
                        let _ = c_out.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    (port, armed)
}

#[test]
fn registry_stopping_mid_pull_leaves_a_sound_store_and_the_next_run_resumes() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.layout, "big", "stagex/core-big", &[]);
    let (port, armed) = relay(&reg, 2 << 20);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let bx = box_file(dir.path(), "big", &format!("127.0.0.1:{port}/stagex/core-big@{}", f.big));
    let out = dir.path().join("out");

    let o = try_build(&bx, &out, &cache, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!armed.load(Ordering::SeqCst), "the relay cut the pull");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("stagex/core-big") && err.contains("layer 3") && err.contains("run again"), "a clear error: {err}");
    assert!(!out.join("big.tar").exists(), "no output after a failed pull");
    assert_store_sound(&cache);
    let m = read_json(&cache.join("blobs/sha256").join(&f.big[7..]));
    let big_layer = m["layers"][2]["digest"].as_str().unwrap().to_string();
    assert!(!cache.join("blobs/sha256").join(&big_layer[7..]).exists(), "the cut layer is not in the store");
    let part = cache.join("tmp").join(format!("{}.partial", &big_layer[7..]));
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let full = m["layers"][2]["size"].as_u64().unwrap();
    assert!(kept > 0 && kept < full, "the bytes received are kept for the next run: {kept} of {full} in {}", part.display());
    assert!(err.contains(&format!("{kept} of {full} bytes kept")), "{err}");

    // The registry comes back: the next run fetches the rest of the layer and builds.
    reg.restart(&registry_bin());
    let b = build(&bx, &out, &cache);
    assert_eq!(b[0].sha256, reference_tar(f, "big", &f.big));
    assert_store_sound(&cache);
    assert!(!part.exists(), "the partial file became the blob");
}

#[test]
fn import_stagex_digest_lists_and_locked_builds() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.layout, "small", "stagex/core-small", &[]);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let bx = box_file(dir.path(), "imp", &format!("{}/stagex/core-small:small", reg.host()));

    // --locked without a lock file: exit 2.
    let o = try_build(&bx, &dir.path().join("out"), &cache, &["--locked"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));

    // StageX's digests/<stage>.txt: `<hex> <stage>-<name>`; imported with no registry access.
    let list = dir.path().join("core.txt");
    write(&list, format!("{} core-other\n{} core-small\n", "1".repeat(64), &f.small[7..]));
    reg.stop();
    run(stagebox(args(&[&"lock", &bx, &"--cache", &cache, &"--import-digests", &list])).borrow_mut());
    assert_eq!(lock_digest(&bx), f.small);
    reg.restart(&registry_bin());
    let o = try_build(&bx, &dir.path().join("out"), &cache, &["--locked"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A pinned reference whose lock entry differs: stale, exit 2, before any output.
    let pinned = box_file(dir.path(), "pinned", &format!("{}/stagex/core-small@{}", reg.host(), f.small));
    write(&pinned.with_extension("lock"), format!("version = 1\n[[image]]\nref = \"{}/stagex/core-small@{}\"\ndigest = \"sha256:{}\"\n", reg.host(), f.small, "2".repeat(64)));
    let o = try_build(&pinned, &dir.path().join("out-pinned"), &cache, &["--locked"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("stale"), "{err}");
    assert!(!dir.path().join("out-pinned").exists());

    // A second layer missing from the lock: incomplete, exit 2, naming the reference's location.
    let two = dir.path().join("two.toml");
    write(&two, format!("name = \"two\"\n[[layer]]\nimage = \"{h}/stagex/core-small:small\"\n[[layer]]\nimage = \"{h}/stagex/core-other:1\"\n[output.tar]\n", h = reg.host()));
    write(&two.with_extension("lock"), read(&bx.with_extension("lock")));
    let o = try_build(&two, &dir.path().join("out-two"), &cache, &["--locked"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("two.toml:5:") && err.contains("incomplete"), "{err}");

    // A malformed digest list points at its line and column.
    write(&list, format!("{} core-small\nnot-a-digest core-x\n", &f.small[7..]));
    let o = output(stagebox(args(&[&"lock", &bx, &"--cache", &cache, &"--import-digests", &list])).borrow_mut());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("core.txt:2:1"), "{err}");
}

#[test]
fn lock_check_reports_current_stale_and_unpinned_references() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.layout, "small", "stagex/core-small", &[]);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let check = |bx: &Path, extra: &[&str]| {
        let mut c = stagebox(args(&[&"lock", &"--check", &bx, &"--cache", &cache]));
        c.args(extra);
        let o = output(&mut c);
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };

    // A tag with no lock file: unpinned, exit 1, and nothing written.
    let tagged = box_file(dir.path(), "tagged", &format!("{}/stagex/core-small:small", reg.host()));
    let (code, out, err) = check(&tagged, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("UNPINNED") && out.contains(&f.small), "{out}");
    assert!(!tagged.with_extension("lock").exists(), "--check writes nothing");

    // Locked: current. Then the tag moves to another image: stale, naming both digests.
    run(stagebox(args(&[&"lock", &tagged, &"--cache", &cache])).borrow_mut());
    let (code, out, _) = check(&tagged, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("ok ") && out.contains(&f.small), "{out}");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:big", f.layout.display()))
        .arg(format!("docker://{}/stagex/core-small:small", reg.host())));
    let (code, out, err) = check(&tagged, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("STALE") && out.contains(&f.small) && out.contains(&f.big), "{out}");
    assert!(err.contains("1 of 1 pins are not current"), "{err}");

    // A digest pin the registry holds: current; one it does not hold: reported, exit 1.
    let pinned = box_file(dir.path(), "pinned", &format!("{}/stagex/core-small@{}", reg.host(), f.big));
    assert_eq!(check(&pinned, &[]).0, Some(0));
    let missing = box_file(dir.path(), "missing", &format!("{}/stagex/core-small@sha256:{}", reg.host(), "3".repeat(64)));
    let (code, out, _) = check(&missing, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED"), "{out}");

    // Against a release's digest list, offline: the list is the truth.
    reg.stop();
    let list = dir.path().join("core.txt");
    write(&list, format!("{} core-small\n", &f.big[7..]));
    let (code, out, _) = check(&pinned, &["--offline", "--import-digests", list.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    write(&list, format!("{} core-small\n", &f.small[7..]));
    let (code, out, _) = check(&pinned, &["--offline", "--import-digests", list.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("STALE"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Registries as they are on the internet: TLS, credentials, redirects, resumes, retries
// ---------------------------------------------------------------------------------------------

/// A stagebox command that sees none of this machine's registry settings: `HOME` is `home`,
/// no auth file, docker config, CA override or insecure host unless the test adds one.
fn isolated(home: &Path, a: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    std::fs::create_dir_all(home).unwrap();
    let mut c = stagebox(args(a));
    c.env("HOME", home);
    for v in ["REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "STAGEBOX_REGISTRY_USER", "STAGEBOX_REGISTRY_PASSWORD", "STAGEBOX_REGISTRIES_CONF", "STAGEBOX_CERT_DIR"] {
        c.env_remove(v);
    }
    c
}

/// `stagebox build BOX` into fresh `out-NAME`/`cache-NAME` under `dir`, isolated, plus `setup`.
fn build_isolated(dir: &Path, bx: &Path, name: &str, home: &Path, setup: impl FnOnce(&mut Command)) -> (std::process::Output, String) {
    let (out, cache) = (dir.join(format!("out-{name}")), dir.join(format!("cache-{name}")));
    let mut c = isolated(home, &[&"build", &bx, &"--out", &out, &"--cache", &cache, &"-q"]);
    setup(&mut c);
    let o = output(&mut c);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o, err)
}

fn built_sha(o: &std::process::Output, err: &str) -> String {
    assert!(o.status.success(), "{err}");
    parse_build_stdout(&o.stdout)[0].sha256.clone()
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
}

#[test]
fn tls_registry_is_trusted_through_ssl_cert_file_certs_d_or_cert_dir_and_refused_otherwise_with_client_certs() {
    let f = fixture();
    let plain = Registry::start();
    plain.push(&f.layout, "small", "stagex/core-small", &[]);
    let ca = TestCa::new();
    let reg = Registry::start_with(RegistryOpts { data: Some(plain.data.clone()), tls: Some((ca.server_cert.clone(), ca.server_key.clone())), auth: None, client_ca: None });
    let want = reference_tar(f, "small", &f.small);
    let dir = tempdir();
    let d = dir.path();
    let host = format!("localhost:{}", reg.port);
    let bx = box_file(d, "tls", &format!("{host}/stagex/core-small@{}", f.small));
    let home = d.join("home");

    // Not trusted: refused, saying how to trust it; nothing built.
    let (o, err) = build_isolated(d, &bx, "none", &home, |c| {
        c.env_remove("STAGEBOX_INSECURE_REGISTRIES");
    });
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("invalid peer certificate") && err.contains(&format!("certs.d/{host}/ca.crt")) && err.contains("--cert-dir") && err.contains("SSL_CERT_FILE"), "{err}");
    assert!(!d.join("out-none/tls.tar").exists());

    // SSL_CERT_FILE, a certs.d directory, --cert-dir: each is enough.
    let (o, err) = build_isolated(d, &bx, "file", &home, |c| {
        c.env("SSL_CERT_FILE", &ca.ca_cert);
    });
    assert_eq!(built_sha(&o, &err), want);
    let home2 = d.join("home2");
    let certs_d = home2.join(".config/containers/certs.d").join(&host);
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(&ca.ca_cert, certs_d.join("ca.crt")).unwrap();
    let (o, err) = build_isolated(d, &bx, "certsd", &home2, |_| {});
    assert_eq!(built_sha(&o, &err), want);
    let cert_dir = d.join("certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(&ca.ca_cert, cert_dir.join("test-ca.crt")).unwrap();
    let (o, err) = build_isolated(d, &bx, "certdir", &home, |c| {
        c.arg("--cert-dir").arg(&cert_dir);
    });
    assert_eq!(built_sha(&o, &err), want);

    // A plain-HTTP registry on loopback: HTTPS first, so refused unless named insecure.
    let bx = box_file(d, "plain", &format!("{}/stagex/core-small@{}", plain.host(), f.small));
    let (o, err) = build_isolated(d, &bx, "plain-refused", &home, |c| {
        c.env_remove("STAGEBOX_INSECURE_REGISTRIES");
    });
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("--insecure-registry {}", plain.host())), "{err}");
    let (o, err) = build_isolated(d, &bx, "plain-named", &home, |c| {
        c.env_remove("STAGEBOX_INSECURE_REGISTRIES").arg("--insecure-registry").arg(plain.host());
    });
    assert_eq!(built_sha(&o, &err), want);

    // Mutual TLS: a registry that wants a client certificate signed by the CA. The CA alone is
    // not enough; `client.cert` + `client.key` in the certificate directory are presented.
    let mtls = Registry::start_with(RegistryOpts {
        data: Some(plain.data.clone()),
        tls: Some((ca.server_cert.clone(), ca.server_key.clone())),
        auth: None,
        client_ca: Some(ca.ca_cert.clone()),
    });
    let bx = box_file(d, "mtls", &format!("localhost:{}/stagex/core-small@{}", mtls.port, f.small));
    let (o, err) = build_isolated(d, &bx, "mtls-none", &home, |c| {
        c.arg("--cert-dir").arg(&cert_dir);
    });
    assert_eq!(o.status.code(), Some(1), "{err}");
    let (cert, key) = ca.client_cert();
    std::fs::copy(&cert, cert_dir.join("client.cert")).unwrap();
    std::fs::copy(&key, cert_dir.join("client.key")).unwrap();
    let (o, err) = build_isolated(d, &bx, "mtls", &home, |c| {
        c.arg("--cert-dir").arg(&cert_dir);
    });
    assert_eq!(built_sha(&o, &err), want);
}

#[test]
fn token_auth_with_credentials_from_auth_files_and_helpers_in_skopeos_order() {
    let f = fixture();
    let plain = Registry::start();
    plain.push(&f.layout, "small", "stagex/core-small", &[]);
    let ts = TokenServer::start(Some(("puller", "s3cret-pw")));
    let reg = Registry::start_with(RegistryOpts { data: Some(plain.data.clone()), tls: None, auth: Some(ts.auth_yaml()), client_ca: None });
    let want = reference_tar(f, "small", &f.small);
    let dir = tempdir();
    let d = dir.path();
    let host = reg.host();
    let bx = box_file(d, "tok", &format!("{host}/stagex/core-small@{}", f.small));
    let home = d.join("home");

    // No credentials anywhere: the token server refuses; the error says where to log in.
    let (o, err) = build_isolated(d, &bx, "anon", &home, |_| {});
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no credentials found"), "{err}");

    // $REGISTRY_AUTH_FILE (containers auth.json) with the right password: pulls.
    let auth_file = d.join("auth.json");
    write(&auth_file, format!(r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#, basic("puller", "s3cret-pw")));
    let (o, err) = build_isolated(d, &bx, "authfile", &home, |c| {
        c.env("REGISTRY_AUTH_FILE", &auth_file);
    });
    assert_eq!(built_sha(&o, &err), want);
    let seen = ts.server.seen();
    let ok = seen.iter().find(|s| s.header("authorization") == Some(&format!("Basic {}", basic("puller", "s3cret-pw")))).expect("the token server got the credentials");
    assert!(ok.path.contains("scope=repository%3Astagex%2Fcore-small%3Apull") && ok.path.contains("service=stagebox-test-registry"), "{}", ok.path);

    // skopeo's order: the containers auth file comes before docker's config; a wrong password
    // there wins over a right one in ~/.docker/config.json, and is never printed.
    let home2 = d.join("home2");
    std::fs::create_dir_all(home2.join(".docker")).unwrap();
    write(&home2.join(".docker/config.json"), format!(r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#, basic("puller", "s3cret-pw")));
    write(&auth_file, format!(r#"{{"auths":{{"{host}":{{"username":"puller","password":"wrong-pw-1234"}}}}}}"#));
    let (o, err) = build_isolated(d, &bx, "order", &home2, |c| {
        c.env("REGISTRY_AUTH_FILE", &auth_file);
    });
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&auth_file.display().to_string()) && !err.contains("wrong-pw-1234") && !err.contains("s3cret"), "{err}");
    let (o, err) = build_isolated(d, &bx, "docker-config", &home2, |_| {});
    assert_eq!(built_sha(&o, &err), want);

    // A credential helper named by credHelpers: `docker-credential-NAME get`, server on stdin.
    let home3 = d.join("home3");
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-stbtest");
    write(&helper, format!("#!/bin/sh\nread server\necho \"$server\" > {}\n[ \"$server\" = \"{host}\" ] || exit 1\necho '{{\"ServerURL\":\"{host}\",\"Username\":\"puller\",\"Secret\":\"s3cret-pw\"}}'\n", d.join("helper-asked").display()));
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(home3.join(".docker")).unwrap();
    write(&home3.join(".docker/config.json"), format!(r#"{{"auths":{{}},"credHelpers":{{"{host}":"stbtest"}}}}"#));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let (o, err) = build_isolated(d, &bx, "helper", &home3, |c| {
        c.env("PATH", &path);
    });
    assert_eq!(built_sha(&o, &err), want);
    assert_eq!(String::from_utf8(read(&d.join("helper-asked"))).unwrap().trim(), host);
}

/// The registry behind basic auth (htpasswd) and a plain one on the same storage.
struct Authed {
    plain: Registry,
    authed: Registry,
    _dir: tempfile::TempDir,
}

fn htpasswd_registry(f: &Fixture, image: &str) -> Authed {
    let plain = Registry::start();
    plain.push(&f.layout, image, &format!("stagex/core-{image}"), &[]);
    let dir = tempdir();
    let pw = htpasswd(dir.path(), "alice", "open-sesame");
    let authed = Registry::start_with(RegistryOpts {
        data: Some(plain.data.clone()),
        tls: None,
        auth: Some(format!("  htpasswd:\n    realm: stagebox-test\n    path: {}\n", pw.display())),
        client_ca: None,
    });
    Authed { plain, authed, _dir: dir }
}

fn docker_config(home: &Path, host: &str) {
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    write(&home.join(".docker/config.json"), format!(r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#, basic("alice", "open-sesame")));
}

#[test]
fn htpasswd_basic_auth_with_a_docker_config_and_blob_redirects_drop_authorization() {
    let f = fixture();
    let r = htpasswd_registry(f, "small");
    let want = reference_tar(f, "small", &f.small);
    let dir = tempdir();
    let d = dir.path();

    // Basic auth straight at the registry, with ~/.docker/config.json; refused without it.
    let bx = box_file(d, "basic", &format!("{}/stagex/core-small@{}", r.authed.host(), f.small));
    let (o, err) = build_isolated(d, &bx, "nocreds", &d.join("home0"), |_| {});
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("wants a user name and password"), "{err}");
    let home = d.join("home");
    docker_config(&home, &r.authed.host());
    let (o, err) = build_isolated(d, &bx, "basic", &home, |_| {});
    assert_eq!(built_sha(&o, &err), want);

    // A front that sends blob GETs to another host (a "CDN" serving the same storage without
    // auth), as docker.io does: the CDN never sees Authorization.
    let (plain_port, authed_port) = (r.plain.port, r.authed.port);
    let cdn = Server::start(move |req, _, c| forward(req, plain_port, c, None));
    let cdn_port = cdn.port;
    let front = Server::start(move |req, _, c| {
        if req.path.contains("/blobs/") {
            respond(c, "307 Temporary Redirect", &[("Location", format!("http://127.0.0.1:{cdn_port}{}", req.path))], b"");
        } else {
            forward(req, authed_port, c, None)
        }
    });
    let host = format!("127.0.0.1:{}", front.port);
    let home = d.join("home-front");
    docker_config(&home, &host);
    let bx = box_file(d, "redirect", &format!("{host}/stagex/core-small@{}", f.small));
    let (o, err) = build_isolated(d, &bx, "redirect", &home, |_| {});
    assert_eq!(built_sha(&o, &err), want);
    let front_seen = front.seen();
    let blobs: Vec<_> = front_seen.iter().filter(|s| s.path.contains("/blobs/")).collect();
    assert!(blobs.len() >= 3, "config and two layers went through the front: {front_seen:?}");
    assert!(blobs.iter().all(|s| s.header("authorization").is_some_and(|a| a.starts_with("Basic "))), "the registry got credentials: {blobs:?}");
    let cdn_seen = cdn.seen();
    assert_eq!(cdn_seen.len(), blobs.len(), "every blob came from the CDN: {cdn_seen:?}");
    assert!(cdn_seen.iter().all(|s| s.header("authorization").is_none()), "no Authorization followed the redirect: {cdn_seen:?}");
}

#[test]
fn a_connection_dropped_mid_blob_resumes_with_range_and_the_blob_is_verified() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.layout, "big", "stagex/core-big", &[]);
    let m = read_json(&f.layout.join("blobs/sha256").join(&f.big[7..]));
    let (layer, size) = (m["layers"][2]["digest"].as_str().unwrap().to_string(), m["layers"][2]["size"].as_u64().unwrap());
    let half = size / 2;
    let upstream = reg.port;
    let blob_path = format!("/v2/stagex/core-big/blobs/{layer}");
    let bp = blob_path.clone();
    let front = Server::start(move |req, n, c| forward(req, upstream, c, (req.path == bp && n == 1).then_some(half)));
    let dir = tempdir();
    let d = dir.path();
    let bx = box_file(d, "resume", &format!("127.0.0.1:{}/stagex/core-big@{}", front.port, f.big));
    let (o, err) = build_isolated(d, &bx, "resume", &d.join("home"), |c| {
        c.env("STAGEBOX_INSECURE_REGISTRIES", "127.0.0.1");
    });
    assert_eq!(built_sha(&o, &err), reference_tar(f, "big", &f.big));
    let gets: Vec<_> = front.seen().into_iter().filter(|s| s.path == blob_path).collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].header("range"), None);
    assert_eq!(gets[1].header("range"), Some(format!("bytes={half}-").as_str()), "the rest was asked for with Range");
    let cache = d.join("cache-resume");
    assert_store_sound(&cache);
    assert!(!cache.join("tmp").join(format!("{}.partial", &layer[7..])).exists());
}

#[test]
fn busy_registries_are_retried_and_rate_limits_are_explained() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.layout, "small", "stagex/core-small", &[]);
    let want = reference_tar(f, "small", &f.small);
    let upstream = reg.port;
    let dir = tempdir();
    let d = dir.path();
    let home = d.join("home");

    // 503 twice for every blob, then the real answer: the pull succeeds after retries.
    let front = Server::start(move |req, n, c| {
        if req.path.contains("/blobs/") && n <= 2 {
            respond(c, "503 Service Unavailable", &[], b"busy");
        } else {
            forward(req, upstream, c, None)
        }
    });
    let bx = box_file(d, "busy", &format!("127.0.0.1:{}/stagex/core-small@{}", front.port, f.small));
    let (o, err) = build_isolated(d, &bx, "busy", &home, |c| {
        c.env("STAGEBOX_INSECURE_REGISTRIES", "127.0.0.1");
    });
    assert_eq!(built_sha(&o, &err), want);
    let seen = front.seen();
    let blob_paths: std::collections::BTreeSet<_> = seen.iter().filter(|s| s.path.contains("/blobs/")).map(|s| s.path.clone()).collect();
    assert_eq!(blob_paths.len(), 3, "config and two layers");
    for p in &blob_paths {
        assert_eq!(seen.iter().filter(|s| &s.path == p).count(), 3, "two 503s and one answer for {p}");
    }

    // 429 with a short Retry-After: waited out once. With an hour: a clear error quoting it.
    let front = Server::start(move |req, n, c| {
        if req.path.contains("/manifests/") && n == 1 {
            respond(c, "429 Too Many Requests", &[("Retry-After", "1".into())], b"slow down");
        } else {
            forward(req, upstream, c, None)
        }
    });
    let bx = box_file(d, "short", &format!("127.0.0.1:{}/stagex/core-small@{}", front.port, f.small));
    let (o, err) = build_isolated(d, &bx, "short", &home, |c| {
        c.env("STAGEBOX_INSECURE_REGISTRIES", "127.0.0.1");
    });
    assert_eq!(built_sha(&o, &err), want);
    let front = Server::start(move |_, _, c| respond(c, "429 Too Many Requests", &[("Retry-After", "3600".into())], b"slow down"));
    let bx = box_file(d, "limited", &format!("127.0.0.1:{}/stagex/core-small@{}", front.port, f.small));
    let t0 = std::time::Instant::now();
    let (o, err) = build_isolated(d, &bx, "limited", &home, |c| {
        c.env("STAGEBOX_INSECURE_REGISTRIES", "127.0.0.1");
    });
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("429") && err.contains("retry after 3600 seconds") && err.contains("Log in"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(60), "an hour is not waited out");
    assert_eq!(front.seen().len(), 1, "a long Retry-After is not retried");
}

#[test]
fn digest_pins_are_pulled_from_a_mirror_listed_in_the_registries_config() {
    let f = fixture();
    let mirror = Registry::start();
    mirror.push(&f.layout, "small", "sx/core-small", &[]);
    let dir = tempdir();
    let d = dir.path();
    // The origin does not exist; the pin makes the mirror's bytes as good as the origin's.
    let origin = format!("127.0.0.1:{}", free_port());
    let conf = d.join("registries.toml");
    write(&conf, format!("[mirrors]\n\"{origin}/stagex\" = [\"{}/sx\"]\n", mirror.host()));
    let bx = box_file(d, "mirrored", &format!("{origin}/stagex/core-small@{}", f.small));
    let (o, err) = build_isolated(d, &bx, "mirrored", &d.join("home"), |c| {
        c.env("STAGEBOX_INSECURE_REGISTRIES", "127.0.0.1").env("STAGEBOX_REGISTRIES_CONF", &conf);
    });
    assert_eq!(built_sha(&o, &err), reference_tar(f, "small", &f.small));
}

/// Regression: several builds pulling images that share layers into one store at once. Each
/// blob's download goes through one partial file per digest; without a lock two writers
/// appended to the same file ("descriptor says 498 bytes, read 996") and a writer still holding
/// it after the other moved it into the store corrupted the stored blob.
#[test]
fn concurrent_pulls_of_images_sharing_layers_into_one_store_keep_it_sound() {
    let f = fixture();
    let reg = Registry::start();
    reg.push(&f.layout, "small", "stagex/core-small", &[]);
    reg.push(&f.layout, "big", "stagex/core-big", &[]);
    let want_small = reference_tar(f, "small", &f.small);
    let want_big = reference_tar(f, "big", &f.big);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let jobs: Vec<(String, String, String)> = (0..6)
        .map(|i| {
            let (repo, digest, want) = if i % 2 == 0 { ("core-small", &f.small, &want_small) } else { ("core-big", &f.big, &want_big) };
            (format!("c{i}"), format!("{}/stagex/{repo}@{digest}", reg.host()), want.clone())
        })
        .collect();
    let results: Vec<(String, std::process::Output, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(name, image, want)| {
                let (dir, cache) = (dir.path(), &cache);
                s.spawn(move || {
                    let bx = box_file(dir, name, image);
                    let out = dir.join(format!("out-{name}"));
                    let o = try_build(&bx, &out, cache, &[]);
                    (out.join(format!("{name}.tar")).display().to_string(), o, want.clone())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (tar, o, want) in &results {
        assert!(o.status.success(), "a concurrent pull failed: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(&sha256_file(Path::new(tar)), want, "{tar} differs from the layout's build");
    }
    assert_store_sound(&cache);
}
