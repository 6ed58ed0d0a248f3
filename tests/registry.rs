//! Registry sources against a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free loopback port, images pushed into it with `skopeo copy`.
//! stagebox pulls by tag (via `lock`) and by digest, through a multi-platform index, OCI and
//! Docker media types; `--offline` uses only the store; a registry that stops mid-pull leaves
//! a clear error, a store whose every blob hashes to its name and the partial blob under the
//! store's `tmp/`, and the next run resumes it. TLS, credentials, redirects, resumes and retries
//! against a test proxy are in the second half of this file.

mod common;
mod registry_support;

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

    // A digest the registry does not have: a clear error naming the reference, exit 1.
    let bogus = format!("sha256:{}", "0".repeat(64));
    let bx = box_file(dir.path(), "bogus", &format!("{}/stagex/core-small@{bogus}", reg.host()));
    let o = try_build(&bx, &dir.path().join("out-bogus"), &cache2, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
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
                            let _ = c.kill();
                            let _ = c.wait();
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
