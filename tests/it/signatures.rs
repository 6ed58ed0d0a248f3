//! Signature quorum with real signatures: throwaway keys made by `gpg` in a temp GNUPGHOME,
//! signatures made by `skopeo standalone-sign` (current payload) and by `gpg --sign` over the
//! older StageX payload, laid out as a lookaside directory
//! (`stagex/<name>@sha256=<hex>/signature-N`). `stagebox verify` and a box's `[policy]` must
//! count distinct trusted keys and refuse duplicates, neighbour digests, untrusted and
//! expired keys; `skopeo standalone-verify` accepts what stagebox accepts.

use crate::common;
use crate::registry_support;

use common::*;
use registry_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Keys {
    home: PathBuf,
    /// Public keys of alice, bob, carol and old (expired), armored.
    keyring: PathBuf,
    alice: String,
    bob: String,
    carol: String,
    mallory: String,
    old: String,
}

fn gpg(home: &Path) -> Command {
    require_tool("gpg");
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).args(["--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]);
    c
}

fn fingerprint(home: &Path, email: &str) -> String {
    let o = run(gpg(home).args(["--with-colons", "--list-keys", email]));
    let text = String::from_utf8(o.stdout).unwrap();
    text.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_string()
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        // A gpg-agent left by an earlier run still serves the old GNUPGHOME: stop it before
        // that directory is wiped, or a new gpg may talk to a dying agent ("No agent running").
        let old_home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("signatures").join("g");
        if old_home.exists() {
            let _ = output(Command::new("gpgconf").env("GNUPGHOME", &old_home).args(["--kill", "gpg-agent"]));
        }
        let dir = fixture_dir("signatures");
        // gpg-agent's socket path must stay short: keep GNUPGHOME near the root of target/tmp.
        let home = dir.join("g");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        for (name, algo) in [("alice", "rsa3072"), ("bob", "ed25519"), ("carol", "rsa3072"), ("mallory", "ed25519")] {
            run(gpg(&home).args(["--quick-gen-key", &format!("{name} <{name}@stagebox.test>"), algo, "sign", "never"]));
        }
        // A key that was valid for a day in 2020: its signatures were made while it was valid,
        // and it has expired since.
        run(gpg(&home).args(["--faked-system-time", "20200101T000000", "--quick-gen-key", "old <old@stagebox.test>", "ed25519", "sign", "1d"]));
        // carol's primary user id is her second one: reports must show it, not the first.
        run(gpg(&home).args(["--quick-add-uid", "carol@stagebox.test", "Carol Primary <carol.primary@stagebox.test>"]));
        run(gpg(&home).args(["--quick-set-primary-uid", "carol@stagebox.test", "Carol Primary <carol.primary@stagebox.test>"]));
        let keyring = dir.join("trusted.asc");
        let o = run(gpg(&home).args(["--armor", "--export", "alice@stagebox.test", "bob@stagebox.test", "carol@stagebox.test", "old@stagebox.test"]));
        write(&keyring, &o.stdout);
        Keys {
            alice: fingerprint(&home, "alice@stagebox.test"),
            bob: fingerprint(&home, "bob@stagebox.test"),
            carol: fingerprint(&home, "carol@stagebox.test"),
            mallory: fingerprint(&home, "mallory@stagebox.test"),
            old: fingerprint(&home, "old@stagebox.test"),
            home,
            keyring,
        }
    })
}

/// A manifest-like blob and its digest.
fn manifest(seed: &str) -> (Vec<u8>, String) {
    let m = format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[]}}"#, sha256_hex(seed.as_bytes()));
    let d = format!("sha256:{}", sha256_hex(m.as_bytes()));
    (m.into_bytes(), d)
}

/// `skopeo standalone-sign` the manifest for `reference` with key `fpr`; returns the signature.
fn skopeo_sign(k: &Keys, manifest: &[u8], reference: &str, fpr: &str) -> Vec<u8> {
    require_tool("skopeo");
    let dir = tempdir();
    let m = dir.path().join("manifest.json");
    write(&m, manifest);
    let out = dir.path().join("sig");
    run(Command::new("skopeo").env("GNUPGHOME", &k.home).args(["standalone-sign", "--output"]).arg(&out).arg(&m).args([reference, fpr]));
    read(&out)
}

/// `skopeo standalone-verify`: does skopeo accept this signature?
fn skopeo_accepts(k: &Keys, manifest: &[u8], reference: &str, fpr: &str, sig: &[u8]) -> bool {
    let dir = tempdir();
    let (m, s) = (dir.path().join("manifest.json"), dir.path().join("sig"));
    write(&m, manifest);
    write(&s, sig);
    output(Command::new("skopeo").env("GNUPGHOME", &k.home).arg("standalone-verify").arg(&m).args([reference, fpr]).arg(&s)).status.success()
}

/// The older StageX payload, signed by `gpg --sign` (as StageX's own scripts did).
fn gpg_sign_old(k: &Keys, reference: &str, hex: &str, fpr: &str) -> Vec<u8> {
    let payload = format!(
        r#"[{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{hex}"}},"type":"pgp container image signature"}},"optional":null}}]"#
    );
    let dir = tempdir();
    let p = dir.path().join("payload");
    write(&p, payload);
    let out = dir.path().join("sig");
    run(gpg(&k.home).args(["--local-user", fpr, "--output"]).arg(&out).arg("--sign").arg(&p));
    read(&out)
}

/// Lay out `sigs` as `ROOT/stagex/<name>@sha256=<hex>/signature-1..`.
fn lookaside(root: &Path, name: &str, digest: &str, sigs: &[Vec<u8>]) {
    let dir = root.join(format!("{name}@sha256={}", &digest[7..]));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, s) in sigs.iter().enumerate() {
        write(&dir.join(format!("signature-{}", i + 1)), s);
    }
}

/// `stagebox verify stagex/NAME@DIGEST --keyring K --signatures DIR --quorum Q`.
fn verify(name: &str, digest: &str, keyring: &Path, sigs: &Path, quorum: usize) -> (bool, String, String) {
    verify_with(name, digest, keyring, sigs, quorum, &[])
}

/// [`verify`] with extra arguments (`--strict`).
fn verify_with(name: &str, digest: &str, keyring: &Path, sigs: &Path, quorum: usize, extra: &[&str]) -> (bool, String, String) {
    let cache = tempdir();
    let o = output(
        stagebox(["verify".as_ref(), format!("{name}@{digest}").as_ref(), "--keyring".as_ref(), keyring.as_os_str(), "--signatures".as_ref(), sigs.as_os_str(), "--quorum".as_ref(), quorum.to_string().as_ref(), "--cache".as_ref(), cache.path().as_os_str()])
            .args(extra)
            .env_remove("GNUPGHOME"),
    );
    let code = o.status.code();
    assert!(matches!(code, Some(0) | Some(1)), "exit {code:?}: {}", String::from_utf8_lossy(&o.stderr));
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn two_of_three_distinct_keys_pass_and_skopeo_agrees() {
    let k = keys();
    let (m, d) = manifest("two-of-three");
    let name = "stagex/core-quorum";
    let reference = format!("{name}:1.0");
    let a = skopeo_sign(k, &m, &reference, &k.alice);
    let b = skopeo_sign(k, &m, &reference, &k.bob);
    assert!(skopeo_accepts(k, &m, &reference, &k.alice, &a) && skopeo_accepts(k, &m, &reference, &k.bob, &b), "skopeo accepts both");
    let root = tempdir();
    lookaside(root.path(), name, &d, &[a, b]);

    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 2);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&k.alice) && out.contains("alice <alice@stagebox.test>") && out.contains("signature-1"), "reports who signed what: {out}");
    assert!(out.contains(&k.bob) && out.contains("signature-2"), "{out}");
    assert!(out.contains("2 of 2"), "{out}");
    // 3 of 3 is not met by two signers: exit 1, naming the image and the signers.
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 3);
    assert!(!ok, "{out}");
    assert!(err.contains(name) && err.contains("2 of 3") && err.contains(&k.alice), "{err}");
    // --json for scripts.
    let cache = tempdir();
    let o = run(stagebox(["verify", &format!("{name}@{d}"), "--json", "--quorum", "2", "--signatures"]).arg(root.path()).arg("--keyring").arg(&k.keyring).arg("--cache").arg(cache.path()));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["distinct_keys"].as_array().unwrap().len(), 2);
    assert_eq!(j["accepted"][0]["identity"], reference.as_str());
}

#[test]
fn one_key_signing_twice_counts_once() {
    let k = keys();
    let (m, d) = manifest("twice");
    let name = "stagex/core-twice";
    let s1 = skopeo_sign(k, &m, &format!("{name}:1"), &k.carol);
    let s2 = skopeo_sign(k, &m, &format!("{name}:latest"), &k.carol);
    let root = tempdir();
    lookaside(root.path(), name, &d, &[s1, s2]);
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 2);
    assert!(!ok, "{out}");
    assert!(err.contains("1 of 2") && err.contains("distinct") && err.contains(&k.carol), "{err}");
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 1);
    assert!(ok, "{err}");
    assert!(out.contains("Carol Primary <carol.primary@stagebox.test>") && !out.contains("carol <carol@"), "the primary user id: {out}");
}

#[test]
fn a_signature_for_a_neighbour_digest_fails() {
    let k = keys();
    let (m, d) = manifest("mine");
    let (other, _) = manifest("neighbour");
    let name = "stagex/core-neighbour";
    let good = skopeo_sign(k, &m, &format!("{name}:1"), &k.alice);
    let wrong = skopeo_sign(k, &other, &format!("{name}:1"), &k.bob);
    assert!(!skopeo_accepts(k, &m, &format!("{name}:1"), &k.bob, &wrong), "skopeo refuses it too");
    let root = tempdir();
    lookaside(root.path(), name, &d, &[good, wrong]);
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 2);
    assert!(!ok, "{out}");
    assert!(err.contains("signature-2") && err.contains("signed digest") && err.contains(&k.bob), "{err}");
    // Quorum 1 is met by alice: bob's signature over another digest is reported, not a veto;
    // --strict makes it fail the check.
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 1);
    assert!(ok, "{out}{err}");
    assert!(out.contains("bad ") && out.contains("signature-2") && out.contains("signed digest"), "{out}");
    let (ok, out, err) = verify_with(name, &d, &k.keyring, root.path(), 1, &["--strict"]);
    assert!(!ok, "{out}");
    assert!(err.contains("strict") && err.contains("signature-2"), "{err}");

    // A signature for another image name (identity) fails as well.
    let (m2, d2) = manifest("identity");
    let root = tempdir();
    lookaside(root.path(), "stagex/core-a", &d2, &[skopeo_sign(k, &m2, "stagex/core-b:1", &k.alice), skopeo_sign(k, &m2, "stagex/core-a:1", &k.bob)]);
    let (ok, _, err) = verify("stagex/core-a", &d2, &k.keyring, root.path(), 2);
    assert!(!ok);
    assert!(err.contains("identity") && err.contains("stagex/core-b"), "{err}");
}

#[test]
fn an_untrusted_key_does_not_count() {
    let k = keys();
    let (m, d) = manifest("untrusted");
    let name = "stagex/core-untrusted";
    let reference = format!("{name}:1");
    let a = skopeo_sign(k, &m, &reference, &k.alice);
    let x = skopeo_sign(k, &m, &reference, &k.mallory);
    assert!(skopeo_accepts(k, &m, &reference, &k.mallory, &x), "a valid signature, just not by a trusted key");
    let root = tempdir();
    lookaside(root.path(), name, &d, &[a, x]);
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 2);
    assert!(!ok, "{out}");
    assert!(err.contains("1 of 2") && err.contains(&k.mallory) && err.contains("not in the trusted keyring"), "{err}");
}

#[test]
fn an_expired_key_does_not_count() {
    let k = keys();
    let (m, d) = manifest("expired");
    let name = "stagex/core-expired";
    let reference = format!("{name}:1");
    let a = skopeo_sign(k, &m, &reference, &k.alice);
    // Signed in 2020, while the key was valid.
    let dir = tempdir();
    let mf = dir.path().join("manifest.json");
    write(&mf, &m);
    let payload = format!(r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"atomic container signature"}},"optional":{{}}}}"#);
    write(&dir.path().join("payload"), payload);
    run(gpg(&k.home).args(["--faked-system-time", "20200101T010000", "--local-user", &k.old, "--output"]).arg(dir.path().join("sig")).arg("--sign").arg(dir.path().join("payload")));
    let old = read(&dir.path().join("sig"));
    let root = tempdir();
    lookaside(root.path(), name, &d, &[a, old]);
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 2);
    assert!(!ok, "{out}");
    assert!(err.contains(&k.old) && err.contains("expired"), "{err}");
    // An expired key simply does not count: quorum 1 holds with alice, strict or not.
    for extra in [&[][..], &["--strict"][..]] {
        let (ok, out, err) = verify_with(name, &d, &k.keyring, root.path(), 1, extra);
        assert!(ok, "{extra:?}: {out}{err}");
        assert!(out.contains("old ") && out.contains(&k.old), "{out}");
    }
}

#[test]
fn the_older_stagex_payload_is_accepted() {
    let k = keys();
    let (m, d) = manifest("old-generation");
    let name = "stagex/core-oldgen";
    let root = tempdir();
    // Old generation: bare hex digest, reference without a tag, a one-element array.
    let a = gpg_sign_old(k, name, &d[7..], &k.alice);
    let b = skopeo_sign(k, &m, &format!("{name}:1"), &k.bob);
    lookaside(root.path(), name, &d, &[a, b]);
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 2);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&k.alice) && out.contains(&k.bob), "{out}");
}

#[test]
fn damaged_signatures_are_reported_without_vetoing_the_quorum() {
    let k = keys();
    let (m, d) = manifest("garbled");
    let name = "stagex/core-garbled";
    let root = tempdir();
    let mut a = skopeo_sign(k, &m, &format!("{name}:1"), &k.alice);
    let n = a.len();
    a[n / 2] ^= 0x55;
    let good = skopeo_sign(k, &m, &format!("{name}:1"), &k.bob);
    // As in StageX's own tree: an empty signature-1, a flipped byte, a truncated one, and a
    // good one; quorum 1 holds, each other file is named with its reason.
    let mut truncated = skopeo_sign(k, &m, &format!("{name}:1"), &k.carol);
    truncated.truncate(truncated.len() / 3);
    lookaside(root.path(), name, &d, &[Vec::new(), a, truncated, good]);
    let (ok, out, err) = verify(name, &d, &k.keyring, root.path(), 1);
    assert!(ok, "{out}{err}");
    assert!(out.contains("signature-1: empty file"), "{out}");
    assert!(out.contains("bad   stagex/core-garbled") && out.contains("signature-2") && out.contains("signature-3"), "{out}");
    assert!(out.contains("good") && out.contains(&k.bob) && out.contains("signature-4"), "{out}");
    // Quorum 2 is not met by bob alone, and the damaged ones are listed in the error.
    let (ok, _, err) = verify(name, &d, &k.keyring, root.path(), 2);
    assert!(!ok);
    assert!(err.contains("1 of 2") && err.contains("signature-1: empty file") && err.contains("signature-3"), "{err}");
    // --strict: any bad one fails, naming it.
    let (ok, out, err) = verify_with(name, &d, &k.keyring, root.path(), 1, &["--strict"]);
    assert!(!ok, "{out}");
    assert!(err.contains("strict") && err.contains("signature-1: empty file"), "{err}");
    let cache = tempdir();
    let o = output(stagebox(["verify", &format!("{name}@{d}"), "--json", "--quorum", "1", "--signatures"]).arg(root.path()).arg("--keyring").arg(&k.keyring).arg("--cache").arg(cache.path()));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["rejected"].as_array().unwrap().iter().filter(|r| r["problem"] == "bad").count(), 3, "{j}");
    // No signatures at all.
    let empty = tempdir();
    let (ok, _, err) = verify(name, &d, &k.keyring, empty.path(), 1);
    assert!(!ok);
    assert!(err.contains("no signatures found"), "{err}");
}

#[test]
fn box_policy_gates_the_build_before_any_output() {
    let k = keys();
    let reg = Registry::start();
    // A small image pushed to the registry; its manifest signed by alice and bob.
    let dir = tempdir();
    let layout = dir.path().join("layout");
    let d = umoci_image(&layout, "1", &[("core-filesystem".into(), core_filesystem_layer())]);
    reg.push(&layout, "1", "stagex/core-policy", &[]);
    let m = read(&layout.join("blobs/sha256").join(&d[7..]));
    let sigs = dir.path().join("sigs");
    lookaside(&sigs, "stagex/core-policy", &d, &[skopeo_sign(k, &m, "stagex/core-policy:1", &k.alice), skopeo_sign(k, &m, "stagex/core-policy:1", &k.bob)]);
    std::fs::copy(&k.keyring, dir.path().join("keys.asc")).unwrap();
    let image = format!("{}/stagex/core-policy@{d}", reg.host());
    let bx = |q: &str, extra: &str| {
        let p = dir.path().join("box.toml");
        write(&p, format!("name = \"pol\"\n[[layer]]\nimage = \"{image}\"\n[output.tar]\n[policy]\nkeyring = \"keys.asc\"\nsignatures = \"sigs\"\nquorum = {q}\n{extra}"));
        p
    };
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");

    let built = build(&bx("2", ""), &out, &cache);
    assert_eq!(built.len(), 1);

    // A damaged extra signature: a warning, the build goes on; with `strict = true` it fails.
    write(&sigs.join(format!("stagex/core-policy@sha256={}/signature-3", &d[7..])), b"");
    std::fs::remove_dir_all(&out).unwrap();
    let o = output(&mut stagebox(["build".as_ref(), bx("2", "").as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("warning") && err.contains("signature-3: empty file"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
    let o = output(&mut stagebox(["build".as_ref(), bx("2", "strict = true\n").as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("strict") && err.contains("signature-3: empty file"), "{err}");
    assert!(!out.exists(), "no output when a strict check fails");
    std::fs::remove_file(sigs.join(format!("stagex/core-policy@sha256={}/signature-3", &d[7..]))).unwrap();

    // A per-image override asks for 3: exit 1, nothing written, naming image and signers.
    let p = bx("2", "[policy.images.\"stagex/core-policy\"]\nquorum = 3\n");
    let o = output(&mut stagebox(["build".as_ref(), p.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("stagex/core-policy") && err.contains("2 of 3") && err.contains(&k.alice), "{err}");
    assert!(!out.exists(), "no output when the quorum fails");

    // A bad policy value is a box-file error with its location.
    let p = bx("0", "");
    let o = output(&mut stagebox(["build".as_ref(), p.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("box.toml:8:"), "{err}");
}
