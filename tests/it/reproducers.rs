//! A quorum of reproducers (`stagebox verify-build`) with real signers and real builds:
//! throwaway keys made by `gpg --batch --quick-gen-key` (each signer in its own GNUPGHOME) and
//! one by `sq key generate` (a signing subkey), the same box built in separate directories
//! under different umask, TZ and locale, statements signed with `gpg --sign`, `--clearsign`,
//! `--detach-sign` (armored and binary) and `sq sign`.
//!
//! Cases: 2 of 3 and 3 of 3 pass; one key twice counts once; a signer whose `dir` layer differs
//! is DISAGREES with the output named and fails the command even when two others make the
//! quorum; another box's or other inputs' statements do not count; expired, revoked and
//! untrusted keys do not count; garbled and truncated files are errors naming the file. For
//! every signature file, `gpg --verify` (in a verifier's GNUPGHOME holding the trusted
//! keyring) must agree with stagebox on whether the signature is good. The example script
//! `examples/reproduce/reproduce.sh` runs end to end for a gpg and an sq signer, and the
//! publishing layout is read from a loopback HTTP server (`python3 -m http.server`).

use crate::common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn gpg(home: &Path) -> Command {
    require_tool("gpg");
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).args(["--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]);
    c
}

fn gpg_home(dir: &Path, name: &str) -> PathBuf {
    let h = dir.join(name);
    std::fs::create_dir_all(&h).unwrap();
    std::fs::set_permissions(&h, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    h
}

fn gpg_fingerprint(home: &Path, who: &str) -> String {
    let o = run(gpg(home).args(["--with-colons", "--list-keys", who]));
    let text = String::from_utf8(o.stdout).unwrap();
    text.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_string()
}

/// The box every reproducer builds: a `dir` layer, a tar, the statement, and
/// `[policy.outputs]` for `verify-build --box`. No `source_date_epoch`, so a builder's
/// `$SOURCE_DATE_EPOCH` is an input.
const BOX: &str = "name = \"repro\"\nversion = \"1.0\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\ncompression = \"gzip\"\n[output.provenance]\n[policy.outputs]\nkeyring = \"keys/trusted.asc\"\nsignatures = \"sigs\"\nquorum = 3\n";

/// A checkout of the box in `dir` (box file, rootfs; `motd` is the file a changed build edits).
fn checkout(dir: &Path, box_text: &str, motd: &str) -> PathBuf {
    write(&dir.join("box.toml"), box_text);
    write(&dir.join("rootfs/etc/motd"), motd);
    write(&dir.join("rootfs/usr/bin/hello"), "#!/bin/sh\necho hello\n");
    std::fs::set_permissions(dir.join("rootfs/usr/bin/hello"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir.join("box.toml")
}

/// `stagebox build` of `box_file` in its own directory under `umask`, `TZ` and `LANG`/`LC_ALL`.
fn build_as(box_file: &Path, cache: &Path, umask: &str, tz: &str, lang: &str, sde: Option<&str>) -> PathBuf {
    let dir = box_file.parent().unwrap();
    let out = dir.join("out");
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!("umask {umask} && exec \"$0\" \"$@\"")).arg(stagebox_bin());
    c.args(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()]);
    c.current_dir(dir).env("TZ", tz).env("LANG", lang).env("LC_ALL", lang).env_remove("STAGEBOX_CACHE").env_remove("SOURCE_DATE_EPOCH");
    if let Some(s) = sde {
        c.env("SOURCE_DATE_EPOCH", s);
    }
    run(&mut c);
    out
}

struct Signer {
    home: PathBuf,
    fpr: String,
}

impl Signer {
    fn gen(dir: &Path, name: &str) -> Signer {
        let home = gpg_home(dir, &format!("g{name}"));
        run(gpg(&home).args(["--quick-gen-key", &format!("{name} <{name}@stagebox.test>"), "ed25519", "sign", "never"]));
        let fpr = gpg_fingerprint(&home, &format!("{name}@stagebox.test"));
        Signer { home, fpr }
    }

    /// `gpg --sign` (binary), or with `extra` (`--armor`, `--clearsign`, `--detach-sign`).
    fn sign(&self, file: &Path, extra: &[&str]) -> Vec<u8> {
        let t = tempdir();
        let out = t.path().join("sig");
        let mut c = gpg(&self.home);
        c.args(["--local-user", &self.fpr, "--output"]).arg(&out);
        if !extra.iter().any(|e| *e == "--clearsign" || *e == "--detach-sign") {
            c.arg("--sign");
        }
        c.args(extra).arg(file);
        run(&mut c);
        read(&out)
    }

    fn public(&self) -> Vec<u8> {
        run(gpg(&self.home).args(["--armor", "--export", &self.fpr])).stdout
    }
}

struct World {
    dir: PathBuf,
    /// The verifier's own build (reproducer A's).
    ours: PathBuf,
    /// Statements of builds B and C (same box, other machines' settings), D (rootfs changed),
    /// another box, and other inputs (SOURCE_DATE_EPOCH=2).
    st_b: PathBuf,
    st_c: PathBuf,
    st_changed: PathBuf,
    st_other_box: PathBuf,
    st_other_inputs: PathBuf,
    keyring: PathBuf,
    /// The verifier's GNUPGHOME, holding the trusted keyring (for `gpg --verify`).
    verifier: PathBuf,
    alice: Signer,
    bob: Signer,
    carol: Signer,
    mallory: Signer,
    old: Signer,
    revoked: Signer,
    dave_key: PathBuf,
    dave_fpr: String,
    /// Signatures made before `revoked` was revoked / while `old` was valid.
    sig_revoked: Vec<u8>,
    sig_old: Vec<u8>,
}

fn statement(out: &Path) -> PathBuf {
    out.join("repro.intoto.json")
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        require_tools(&["gpg", "gpgconf", "sq", "python3"]);
        // Stop the agents of a previous run before their homes are wiped: an agent whose
        // socket vanishes under it races the new run's ("No agent running").
        let old_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reproducers");
        for h in ["galice", "gbob", "gcarol", "gmallory", "gold", "grevoked", "gv"] {
            if old_dir.join(h).is_dir() {
                let _ = output(Command::new("gpgconf").env("GNUPGHOME", old_dir.join(h)).args(["--kill", "gpg-agent"]));
            }
        }
        let dir = fixture_dir("reproducers");
        let cache = dir.join("cache");
        // Three reproducers on "three machines": own checkout, umask, zone and locale.
        let ours = build_as(&checkout(&dir.join("a"), BOX, "hello\n"), &cache, "022", "UTC", "C.UTF-8", None);
        let b = build_as(&checkout(&dir.join("b"), BOX, "hello\n"), &cache, "077", "Asia/Kathmandu", "tr_TR.UTF-8", None);
        let c = build_as(&checkout(&dir.join("c"), BOX, "hello\n"), &cache, "002", "America/St_Johns", "de_DE.UTF-8", None);
        let changed = build_as(&checkout(&dir.join("d"), BOX, "hello, changed\n"), &cache, "022", "UTC", "C", None);
        let other_box = build_as(&checkout(&dir.join("e"), &BOX.replace("name = \"repro\"", "name = \"other\""), "hello\n"), &cache, "022", "UTC", "C", None);
        let other_inputs = build_as(&checkout(&dir.join("f"), BOX, "hello\n"), &cache, "022", "UTC", "C", Some("2"));
        for o in [&b, &c] {
            assert_eq!(read(&statement(o)), read(&statement(&ours)), "the three builds reproduce each other");
        }
        assert_ne!(read(&changed.join("repro.tar.gz")), read(&ours.join("repro.tar.gz")));

        let (alice, bob, carol, mallory) = (Signer::gen(&dir, "alice"), Signer::gen(&dir, "bob"), Signer::gen(&dir, "carol"), Signer::gen(&dir, "mallory"));
        // A key valid for a day in 2020 that signed then; it has expired since.
        let home = gpg_home(&dir, "gold");
        run(gpg(&home).args(["--faked-system-time", "20200101T000000", "--quick-gen-key", "old <old@stagebox.test>", "ed25519", "sign", "1d"]));
        let old = Signer { fpr: gpg_fingerprint(&home, "old@stagebox.test"), home };
        let t = tempdir();
        run(gpg(&old.home).args(["--faked-system-time", "20200101T010000", "--local-user", &old.fpr, "--output"]).arg(t.path().join("s")).arg("--sign").arg(statement(&ours)));
        let sig_old = read(&t.path().join("s"));
        // A key that signed, then was revoked (gpg's own revocation certificate, imported).
        let revoked = Signer::gen(&dir, "revoked");
        let sig_revoked = revoked.sign(&statement(&ours), &[]);
        let rev = String::from_utf8(read(&revoked.home.join(format!("openpgp-revocs.d/{}.rev", revoked.fpr)))).unwrap();
        write(&t.path().join("rev.asc"), rev.replace(":-----BEGIN", "-----BEGIN"));
        run(gpg(&revoked.home).arg("--import").arg(t.path().join("rev.asc")));
        // dave: `sq key generate` (certification-only primary, signing subkey).
        let dave_key = dir.join("dave.key");
        run(Command::new("sq").args(["key", "generate", "--userid", "dave <dave@stagebox.test>", "--export"]).arg(&dave_key));
        let cert = dir.join("dave.cert");
        run(Command::new("sq").args(["key", "extract-cert", "--output"]).arg(&cert).arg(&dave_key));
        let inspect = String::from_utf8(run(Command::new("sq").arg("inspect").arg(&cert)).stdout).unwrap();
        let dave_fpr = inspect.lines().find_map(|l| l.trim().strip_prefix("Fingerprint:")).unwrap().trim().to_string();

        // The trusted keyring: everyone but mallory.
        let mut keyring = Vec::new();
        for s in [&alice, &bob, &carol, &old, &revoked] {
            keyring.extend(s.public());
        }
        keyring.extend(read(&cert));
        let keyring_path = dir.join("trusted.asc");
        write(&keyring_path, &keyring);
        let verifier = gpg_home(&dir, "gv");
        run(gpg(&verifier).arg("--import").arg(&keyring_path));
        World {
            st_b: statement(&b),
            st_c: statement(&c),
            st_changed: statement(&changed),
            st_other_box: other_box.join("other.intoto.json"),
            st_other_inputs: statement(&other_inputs),
            dir,
            ours,
            keyring: keyring_path,
            verifier,
            alice,
            bob,
            carol,
            mallory,
            old,
            revoked,
            dave_key,
            dave_fpr,
            sig_revoked,
            sig_old,
        }
    })
}

/// `sq sign` (inline, armored) with dave's key.
fn sq_sign(w: &World, file: &Path) -> Vec<u8> {
    let t = tempdir();
    let out = t.path().join("sig");
    run(Command::new("sq").args(["sign", "--signer-key"]).arg(&w.dave_key).arg("--output").arg(&out).arg(file));
    read(&out)
}

/// A signatures directory holding `files` (name → bytes).
fn sigs(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let d = tempdir();
    for (n, b) in files {
        write(&d.path().join(n), b);
    }
    d
}

struct Outcome {
    ok: bool,
    code: Option<i32>,
    json: Value,
    stdout: String,
    stderr: String,
}

/// `stagebox verify-build OURS --keyring K --signatures DIR --quorum Q` (table and --json),
/// then `gpg --verify` of every signature file in DIR, which must agree with stagebox on which
/// signatures are good.
fn verify(w: &World, dir: &Path, quorum: usize) -> Outcome {
    let args = |json: bool| {
        let mut c = stagebox(["verify-build".as_ref(), w.ours.as_os_str(), "--keyring".as_ref(), w.keyring.as_os_str(), "--signatures".as_ref(), dir.as_os_str(), "--quorum".as_ref(), quorum.to_string().as_ref()]);
        if json {
            c.arg("--json");
        }
        c.env_remove("GNUPGHOME");
        c
    };
    let o = output(&mut args(false));
    let j = output(&mut args(true));
    assert_eq!(o.status.code(), j.status.code(), "--json exits as the table does");
    let code = o.status.code();
    assert!(matches!(code, Some(0) | Some(1)), "exit {code:?}: {}", String::from_utf8_lossy(&o.stderr));
    let json: Value = serde_json::from_slice(&j.stdout).unwrap_or(Value::Null);
    let out = Outcome { ok: o.status.success(), code, json, stdout: String::from_utf8_lossy(&o.stdout).into_owned(), stderr: String::from_utf8_lossy(&o.stderr).into_owned() };
    if let Some(rows) = out.json["rows"].as_array() {
        for r in rows {
            let file = Path::new(r["file"].as_str().unwrap());
            let ours_good = r["signature"] == "good";
            let gpg_says = r["fingerprint"].as_str().is_some_and(|f| gpg_good(w, file).iter().any(|g| g == f));
            assert_eq!(gpg_says, ours_good, "gpg --verify and stagebox disagree on {}: {r}", file.display());
        }
    }
    out
}

/// The primary keys whose signatures in `file` `gpg --verify` reports as good by a valid key
/// (GOODSIG, then VALIDSIG naming the primary key). A detached signature is checked over the
/// statement beside it, else over ours.
fn gpg_good(w: &World, file: &Path) -> Vec<String> {
    let mut c = gpg(&w.verifier);
    c.args(["--status-fd", "1", "--output", "/dev/null", "--verify"]).arg(file);
    let data = read(file);
    let detached = data.starts_with(b"-----BEGIN PGP SIGNATURE-----") || data.first().is_some_and(|b| *b == 0x89 || *b == 0xc2 || *b == 0x88);
    if detached {
        let stem = file.with_extension("");
        let beside = [stem.clone(), PathBuf::from(format!("{}.intoto.json", stem.display()))].into_iter().find(|p| p.extension().is_some_and(|e| e == "json") && p.is_file());
        c.arg(beside.unwrap_or_else(|| statement(&w.ours)));
    }
    let o = output(&mut c);
    let mut good = Vec::new();
    let mut goodsig = false;
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if l.starts_with("[GNUPG:] NEWSIG") {
            goodsig = false;
        } else if l.starts_with("[GNUPG:] GOODSIG ") {
            goodsig = true;
        } else if let Some(rest) = l.strip_prefix("[GNUPG:] VALIDSIG ") {
            if goodsig {
                good.push(rest.split_whitespace().nth(9).unwrap_or("").to_string());
            }
        }
    }
    good
}

fn row<'a>(o: &'a Outcome, file_end: &str) -> &'a Value {
    o.json["rows"].as_array().unwrap().iter().find(|r| r["file"].as_str().unwrap().ends_with(file_end)).unwrap_or_else(|| panic!("no row for {file_end}: {}", o.json))
}

#[test]
fn two_of_three_and_three_of_three_pass() {
    let w = world();
    let ours = statement(&w.ours);
    let (a, b) = (w.alice.sign(&ours, &[]), w.bob.sign(&w.st_b, &["--armor"]));
    let d = sigs(&[("alice.gpg", &a), ("bob.asc", &b)]);
    let o = verify(w, d.path(), 2);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains(&w.alice.fpr) && o.stdout.contains("alice <alice@stagebox.test>") && o.stdout.contains("agrees"), "{}", o.stdout);
    assert!(o.stdout.contains("REPRODUCED: 2 of 2"), "{}", o.stdout);
    assert_eq!(o.json["agreeing_keys"].as_array().unwrap().len(), 2);
    assert_eq!(row(&o, "bob.asc")["attested"]["box"], "repro");
    // 2 of 3 is not 3 of 3.
    let o = verify(w, d.path(), 3);
    assert!(!o.ok && o.stderr.contains("QUORUM NOT MET: 2 of 3"), "{}", o.stderr);

    // Three signers: gpg inline, gpg clearsign, and sq (a signing subkey); a fourth with a
    // binary detached signature over our statement (nothing beside it) counts too.
    let c = w.carol.sign(&w.st_c, &["--clearsign"]);
    let dave = sq_sign(w, &ours);
    let d = sigs(&[("alice.gpg", &a), ("bob.asc", &b), ("carol.asc", &c), ("dave.sig", &dave)]);
    let o = verify(w, d.path(), 4);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    assert_eq!(row(&o, "dave.sig")["fingerprint"], w.dave_fpr.as_str());
    assert_eq!(row(&o, "carol.asc")["form"], "cleartext");
    let o = verify(w, sigs(&[("alice.gpg", &a), ("bob.asc", &b), ("carol.asc", &c)]).path(), 3);
    assert!(o.ok && o.stdout.contains("REPRODUCED: 3 of 3"), "{}{}", o.stdout, o.stderr);
    let det = w.bob.sign(&ours, &["--detach-sign"]);
    let o = verify(w, sigs(&[("alice.gpg", &a), ("bob.sig", &det)]).path(), 2);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    assert_eq!(row(&o, "bob.sig")["form"], "detached");
}

#[test]
fn one_key_twice_counts_once() {
    let w = world();
    let ours = statement(&w.ours);
    let a1 = w.alice.sign(&ours, &[]);
    // The same key again: a detached armored signature over its own copy of the statement.
    let a2 = w.alice.sign(&w.st_b, &["--detach-sign", "--armor"]);
    let d = sigs(&[("a1.gpg", &a1), ("a2.intoto.json.asc", &a2), ("a2.intoto.json", &read(&w.st_b))]);
    let o = verify(w, d.path(), 2);
    assert!(!o.ok, "{}", o.stdout);
    assert!(o.stderr.contains("1 of 2"), "{}", o.stderr);
    assert!(o.stdout.contains("counts once"), "{}", o.stdout);
    assert_eq!(row(&o, "a2.intoto.json.asc")["verdict"], "agrees");
    assert!(row(&o, "a2.intoto.json.asc")["signed_over"].as_str().unwrap().contains("beside"));
    assert!(verify(w, d.path(), 1).ok);
}

#[test]
fn a_disagreeing_signer_fails_even_with_a_quorum() {
    let w = world();
    let ours = statement(&w.ours);
    let theirs_tar = read_json(&w.st_changed.parent().unwrap().join("manifest.json"))["outputs"][0]["sha256"].as_str().unwrap().to_string();
    let ours_tar = sha256_file(&w.ours.join("repro.tar.gz"));
    let d = sigs(&[("alice.gpg", &w.alice.sign(&ours, &[])), ("bob.gpg", &w.bob.sign(&w.st_b, &[])), ("carol.gpg", &w.carol.sign(&w.st_changed, &[]))]);
    let o = verify(w, d.path(), 2);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    let r = row(&o, "carol.gpg");
    assert_eq!(r["verdict"], "disagrees");
    assert_eq!(r["signature"], "good");
    let diff = r["differences"].as_array().unwrap().iter().find(|d| d["item"] == "repro.tar.gz").unwrap_or_else(|| panic!("{r}"));
    assert_eq!((diff["theirs"].as_str().unwrap(), diff["ours"].as_str().unwrap()), (theirs_tar.as_str(), ours_tar.as_str()));
    assert!(o.stdout.contains("DISAGREES") && o.stdout.contains("SPLIT VIEW"), "{}", o.stdout);
    assert!(o.stderr.contains("SPLIT VIEW") && o.stderr.contains(&w.carol.fpr) && o.stderr.contains("repro.tar.gz") && o.stderr.contains(&theirs_tar), "{}", o.stderr);
    assert!(o.stderr.contains("stagebox diff"), "{}", o.stderr);
    assert_eq!(o.json["agreeing_keys"].as_array().unwrap().len(), 2);
}

#[test]
fn another_box_or_other_inputs_are_not_counted() {
    let w = world();
    let ours = statement(&w.ours);
    let d = sigs(&[("alice.gpg", &w.alice.sign(&w.st_other_box, &[])), ("bob.gpg", &w.bob.sign(&w.st_other_inputs, &[])), ("carol.gpg", &w.carol.sign(&ours, &[]))]);
    let o = verify(w, d.path(), 2);
    assert!(!o.ok, "{}", o.stdout);
    assert!(o.stderr.contains("1 of 2"), "{}", o.stderr);
    let (a, b) = (row(&o, "alice.gpg"), row(&o, "bob.gpg"));
    assert_eq!((&a["verdict"], &b["verdict"]), (&Value::from("not-counted"), &Value::from("not-counted")));
    assert!(a["reason"].as_str().unwrap().contains("another box: other 1.0"), "{a}");
    assert!(b["reason"].as_str().unwrap().contains("other inputs") && b["reason"].as_str().unwrap().contains("SOURCE_DATE_EPOCH 2"), "{b}");
    assert!(o.json["disagreeing_keys"].as_array().unwrap().is_empty(), "not a split view");
    assert!(verify(w, d.path(), 1).ok);
}

#[test]
fn expired_revoked_and_untrusted_keys_are_not_counted() {
    let w = world();
    let ours = statement(&w.ours);
    let d = sigs(&[("old.gpg", &w.sig_old), ("revoked.gpg", &w.sig_revoked), ("mallory.gpg", &w.mallory.sign(&ours, &[])), ("alice.gpg", &w.alice.sign(&ours, &[]))]);
    let o = verify(w, d.path(), 2);
    assert!(!o.ok, "{}", o.stdout);
    assert!(o.stderr.contains("1 of 2"), "{}", o.stderr);
    assert_eq!(row(&o, "old.gpg")["signature"], "expired");
    assert_eq!(row(&o, "old.gpg")["fingerprint"], w.old.fpr.as_str());
    assert_eq!(row(&o, "revoked.gpg")["signature"], "revoked");
    assert_eq!(row(&o, "revoked.gpg")["fingerprint"], w.revoked.fpr.as_str());
    let m = row(&o, "mallory.gpg");
    assert_eq!(m["signature"], "unknown-key");
    assert!(m["reason"].as_str().unwrap().contains(&w.mallory.fpr) && m["reason"].as_str().unwrap().contains("not in the trusted keyring"), "{m}");
    for f in ["old.gpg", "revoked.gpg", "mallory.gpg"] {
        assert_eq!(row(&o, f)["verdict"], "not-counted");
    }
    assert!(o.stderr.contains("expired") && o.stderr.contains("revoked"), "{}", o.stderr);
    assert!(verify(w, d.path(), 1).ok, "reported, not fatal");
}

#[test]
fn garbled_and_truncated_files_are_errors_naming_the_file() {
    let w = world();
    let ours = statement(&w.ours);
    let good = w.bob.sign(&ours, &[]);
    let a = w.alice.sign(&ours, &[]);
    let truncated = &a[..a.len() / 2];
    let armored = String::from_utf8(w.alice.sign(&ours, &["--armor"])).unwrap();
    let garbled = armored.replacen("\n\n", "\n\n!!not base64!!\n", 1);
    for (name, bytes) in [("truncated.gpg", truncated.to_vec()), ("garbled.asc", garbled.into_bytes()), ("noise.sig", b"hello, not a signature\n".to_vec())] {
        let d = sigs(&[("bob.gpg", &good), (name, &bytes)]);
        let o = verify(w, d.path(), 1);
        assert_eq!(o.code, Some(1), "{name}: {}", o.stdout);
        assert!(o.stderr.contains(&d.path().join(name).display().to_string()) && o.stderr.contains("garbled"), "{name}: {}", o.stderr);
        assert_eq!(row(&o, name)["verdict"], "garbled");
    }
    // A flipped byte inside the signed data is a bad signature (gpg says BADSIG): reported,
    // not counted.
    let mut flipped = w.alice.sign(&ours, &["--compress-algo", "none"]);
    let at = flipped.windows(8).position(|x| x == b"\"_type\":").unwrap();
    flipped[at + 1] ^= 0x01;
    let o = verify(w, sigs(&[("bob.gpg", &good), ("flipped.gpg", &flipped)]).path(), 2);
    assert!(!o.ok);
    assert_eq!(row(&o, "flipped.gpg")["signature"], "bad");
    // Nothing at all.
    let o = verify(w, tempdir().path(), 1);
    assert!(!o.ok && o.stderr.contains("no signature files found"), "{}", o.stderr);
}

#[test]
fn an_output_changed_after_the_build_is_an_error() {
    let w = world();
    let t = tempdir();
    run(Command::new("cp").arg("-a").arg(&w.ours).arg(t.path().join("out")));
    let tar = t.path().join("out/repro.tar.gz");
    let mut b = read(&tar);
    b.push(0);
    write(&tar, b);
    let d = sigs(&[("alice.gpg", &w.alice.sign(&statement(&w.ours), &[]))]);
    let o = output(stagebox(["verify-build".as_ref(), t.path().join("out").as_os_str(), "--keyring".as_ref(), w.keyring.as_os_str(), "--signatures".as_ref(), d.path().as_os_str(), "--quorum".as_ref(), "1".as_ref()]).borrow_mut());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("repro.tar.gz") && err.contains("manifest.json records"), "{err}");
}

/// `examples/reproduce/reproduce.sh`: two reproducers (gpg and sq) build with --check in their
/// own checkouts, sign and lay out signatures; the verifier's `verify-build --box` takes keyring,
/// signatures and quorum from `[policy.outputs]`.
#[test]
fn the_reproduce_script_runs_end_to_end() {
    let w = world();
    let script = manifest_dir().join("examples/reproduce/reproduce.sh");
    let t = tempdir();
    let cache = w.dir.join("cache");
    let verifier_box = checkout(&t.path().join("verifier"), BOX, "hello\n");
    let sigdir = t.path().join("verifier/sigs");
    for (who, key, umask, tz) in [("carol", w.carol.fpr.clone(), "077", "Pacific/Chatham"), ("dave", w.dave_key.display().to_string(), "002", "America/St_Johns")] {
        let bx = checkout(&t.path().join(who), BOX, "hello\n");
        let o = run(Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec sh \"$@\""))
            .arg("sh")
            .arg(&script)
            .arg(&bx)
            .arg(&key)
            .arg(&sigdir)
            .env("STAGEBOX", stagebox_bin())
            .env("STAGEBOX_BUILD_ARGS", format!("--cache {}", cache.display()))
            .env("GNUPGHOME", &w.carol.home)
            .env("TZ", tz)
            .env_remove("SOURCE_DATE_EPOCH"));
        let printed = String::from_utf8(o.stdout).unwrap();
        let fpr = if who == "carol" { w.carol.fpr.clone() } else { w.dave_fpr.clone() };
        let want = sigdir.join(format!("repro/1.0/{fpr}.sig"));
        assert!(printed.lines().any(|l| Path::new(l) == want), "prints where the signature went: {printed}");
        assert!(want.is_file());
    }
    std::fs::create_dir_all(t.path().join("verifier/keys")).unwrap();
    std::fs::copy(&w.keyring, t.path().join("verifier/keys/trusted.asc")).unwrap();
    let vout = build_as(&verifier_box, &cache, "022", "UTC", "C", None);
    // [policy.outputs] asks for 3: carol and dave make 2.
    let vb = |extra: &[&str]| output(stagebox(["verify-build".as_ref(), vout.as_os_str(), "--box".as_ref(), verifier_box.as_os_str()]).args(extra).current_dir(t.path()));
    let o = vb(&[]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("2 of 3"), "{err}");
    assert!(out.contains(&w.carol.fpr) && out.contains(&w.dave_fpr), "{out}");
    // The command line overrides the policy's quorum.
    let o = vb(&["--quorum", "2"]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // A box file that is not the one built is refused.
    let other = t.path().join("other.toml");
    write(&other, BOX.replace("quorum = 3", "quorum = 1"));
    let o = output(stagebox(["verify-build".as_ref(), vout.as_os_str(), "--box".as_ref(), other.as_os_str()]).borrow_mut());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not the box file"), "{}", String::from_utf8_lossy(&o.stderr));
}

use std::borrow::BorrowMut;

/// A loopback HTTP server (`python3 -m http.server`) over `root`, stopped on drop.
struct Http {
    child: std::process::Child,
    url: String,
}

impl Http {
    fn serve(root: &Path) -> Http {
        use std::io::BufRead;
        require_tool("python3");
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_else(|| panic!("http.server said {line:?}"));
        Http { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The publishing layout over HTTP: `<root>/<box>/<version>/<FINGERPRINT>.sig` fetched for each
/// key of the keyring (a detached one with its `<FINGERPRINT>.intoto.json` beside it); keys that
/// have not signed are simply absent (404).
#[test]
fn signatures_from_an_http_root_in_the_publishing_layout() {
    let w = world();
    let ours = statement(&w.ours);
    let root = tempdir();
    let dir = root.path().join("repro/1.0");
    write(&dir.join(format!("{}.sig", w.alice.fpr)), w.alice.sign(&ours, &["--armor"]));
    write(&dir.join(format!("{}.sig", w.bob.fpr)), w.bob.sign(&w.st_b, &["--detach-sign"]));
    write(&dir.join(format!("{}.intoto.json", w.bob.fpr)), read(&w.st_b));
    write(&dir.join(format!("{}.sig", w.carol.fpr)), w.carol.sign(&w.st_changed, &[]));
    let http = Http::serve(root.path());
    let vb = |q: &str| output(stagebox(["verify-build".as_ref(), w.ours.as_os_str(), "--keyring".as_ref(), w.keyring.as_os_str(), "--signatures".as_ref(), http.url.as_ref(), "--quorum".as_ref(), q.as_ref(), "--json".as_ref()]).borrow_mut());
    let o = vb("2");
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(1), "carol disagrees: {j}");
    assert_eq!(j["agreeing_keys"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j["disagreeing_keys"][0], w.carol.fpr.as_str());
    let bob = j["rows"].as_array().unwrap().iter().find(|r| r["fingerprint"] == w.bob.fpr.as_str()).unwrap();
    assert!(bob["file"].as_str().unwrap().starts_with(&format!("{}/repro/1.0/", http.url)), "{bob}");
    assert!(bob["signed_over"].as_str().unwrap().contains("beside"), "{bob}");
    // Without carol's file: 2 of 2 from the server.
    std::fs::remove_file(dir.join(format!("{}.sig", w.carol.fpr))).unwrap();
    let o = vb("2");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Damaged signature files (every byte flipped in turn, every truncation) never panic, and a
/// truncated file never counts. Called through the library, as a fuzzer would.
#[test]
fn damaged_signature_files_never_panic_and_truncations_never_count() {
    use stagebox::source::attestation::{check, SignatureFile, Status};
    let w = world();
    let ours = statement(&w.ours);
    let st = read(&ours);
    let keyring = stagebox::source::signature::Keyring::load(&w.keyring).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("inline", w.alice.sign(&ours, &[])),
        ("armored", w.alice.sign(&ours, &["--armor"])),
        ("clearsigned", w.alice.sign(&ours, &["--clearsign"])),
        ("detached", w.alice.sign(&ours, &["--detach-sign"])),
        ("sq", sq_sign(w, &ours)),
    ];
    for (form, good) in &forms {
        let c = check(&SignatureFile { data: good, beside: None, local: ("repro.intoto.json", &st) }, &keyring, now);
        assert!(c.len() == 1 && c[0].status == Status::Good, "{form}: {c:?}");
        for cut in 0..good.len() {
            let v = check(&SignatureFile { data: &good[..cut], beside: None, local: ("repro.intoto.json", &st) }, &keyring, now);
            let c = &v[0];
            // A cut inside trailing armor or line ends can leave a whole message.
            let whole = good[cut..].iter().all(|b| b.is_ascii_whitespace()) || (String::from_utf8_lossy(&good[..cut]).contains("-----END PGP") && good[cut..].iter().all(|b| b.is_ascii()));
            assert!(c.status != Status::Good || whole, "{form} cut at {cut} of {} still counts: {c:?}", good.len());
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x41;
            let _ = check(&SignatureFile { data: &bad, beside: None, local: ("repro.intoto.json", &st) }, &keyring, now);
        }
    }
}

/// A small signed file that inflates to megabytes (zlib over zeros) is refused as implausibly
/// large, read no further than the limit.
#[test]
fn a_compressed_bomb_is_refused() {
    use stagebox::source::attestation::{check, SignatureFile, Status};
    let w = world();
    let t = tempdir();
    let big = t.path().join("zeros.json");
    write(&big, vec![b' '; 8 << 20]);
    let sig = w.alice.sign(&big, &["--compress-algo", "zlib"]);
    assert!(sig.len() < 64 << 10, "{} bytes", sig.len());
    let keyring = stagebox::source::signature::Keyring::load(&w.keyring).unwrap();
    let v = check(&SignatureFile { data: &sig, beside: None, local: ("x", b"") }, &keyring, 0);
    let c = &v[0];
    assert_eq!(c.status, Status::Garbled, "{c:?}");
    assert!(c.reason.contains("implausibly large"), "{}", c.reason);
}

/// One file co-signed by two reproducers (alice's `gpg --sign --armor`, then
/// `sq sign --append` by dave) counts both keys; a co-signature by a key outside the keyring
/// is reported on its own row. gpg agrees signature by signature.
#[test]
fn a_co_signed_file_counts_each_signer() {
    let w = world();
    let ours = statement(&w.ours);
    let t = tempdir();
    let a = t.path().join("alice.asc");
    write(&a, w.alice.sign(&ours, &["--armor"]));
    let ad = t.path().join("alice+dave.asc");
    run(Command::new("sq").args(["sign", "--append", "--signer-key"]).arg(&w.dave_key).arg("--output").arg(&ad).arg(&a));
    // Dave appends to mallory's message: one untrusted and one trusted signature.
    let am = t.path().join("mallory+dave.asc");
    write(&t.path().join("m.asc"), w.mallory.sign(&ours, &["--armor"]));
    run(Command::new("sq").args(["sign", "--append", "--signer-key"]).arg(&w.dave_key).arg("--output").arg(&am).arg(t.path().join("m.asc")));
    let d = sigs(&[("alice+dave.asc", &read(&ad))]);
    let o = verify(w, d.path(), 2);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    let rows = o.json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", o.json);
    let d = sigs(&[("mallory+dave.asc", &read(&am))]);
    let o = verify(w, d.path(), 1);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    let rows = o.json["rows"].as_array().unwrap();
    assert_eq!(rows.iter().filter(|r| r["signature"] == "good").count(), 1, "{}", o.json);
    assert_eq!(rows.iter().filter(|r| r["signature"] == "unknown-key").count(), 1, "{}", o.json);
    assert!(!verify(w, d.path(), 2).ok);
}
