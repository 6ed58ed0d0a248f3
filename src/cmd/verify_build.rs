//! `stagebox verify-build OUT_DIR`: do at least M distinct trusted reproducers attest exactly
//! the outputs in OUT_DIR, and does no trusted reproducer attest other outputs for the same
//! box and inputs?
//!
//! Steps: read `OUT_DIR/manifest.json`, recompute every output's sha256 (an OCI layout: its
//! manifest digest, and every blob against its name), read our own statement
//! (`NAME.intoto.json`, from `[output.provenance]`) and check it binds those outputs; then
//! check each reproducer's signature file (`source::attestation`) and compare what each good
//! signature attests with our statement:
//! - another box name, version, box file, SOURCE_DATE_EPOCH or pinned input image: *not
//!   counted* (a statement about something else);
//! - the same box and pinned inputs but other output digests: **DISAGREES**, naming each
//!   differing output with both digests (and any differing `dir:`/`file:` input, which comes
//!   from the reproducer's checkout). This is a split view: one of the two builds did not
//!   build what the box says, and the command fails whatever the count;
//! - the same outputs from other `dir:`/`file:` input digests: *not counted* (odd, not a split
//!   view);
//! - the same statement: *agrees*. Distinct primary keys are counted; a key twice counts once.
//!
//! Signatures that are bad, by keys outside the keyring, by expired or revoked keys are
//! reported and not counted; a garbled file fails the command, naming the file.

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::measure::provenance::{self, Attested};
use crate::measure::BuildManifest;
use crate::source::attestation::{self, Form, SignatureFile, Status};
use crate::source::signature::{Keyring, Lookaside};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Settings of `stagebox verify-build`; what is not given comes from `[policy.outputs]` of
/// `box_file`.
#[derive(Debug, Clone, Default)]
pub struct VerifyBuildOptions {
    pub keyring: Option<PathBuf>,
    pub signatures: Option<String>,
    pub quorum: Option<usize>,
    pub box_file: Option<PathBuf>,
}

/// What one signature file's signer attested, compared with us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Agrees,
    Disagrees,
    NotCounted,
    Garbled,
}

/// One item that differs between a signer's statement and ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// An output name, or an input (`dir:…`, `file:…`).
    pub item: String,
    pub theirs: Option<String>,
    pub ours: Option<String>,
}

/// What a signer attested, in short.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(rename = "box")]
    pub name: String,
    pub version: String,
    pub outputs: usize,
    pub stagebox_version: String,
}

/// One signature file and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub file: String,
    pub form: Option<Form>,
    /// The OpenPGP verdict alone (as `gpg --verify` would give it).
    pub signature: Status,
    pub fingerprint: Option<String>,
    pub user_id: Option<String>,
    pub signed_over: Option<String>,
    pub attested: Option<Summary>,
    pub verdict: Verdict,
    /// Why not counted, or what disagrees (empty when it agrees).
    pub reason: String,
    pub differences: Vec<Difference>,
}

/// The outcome of `verify-build`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(rename = "box")]
    pub name: String,
    pub version: String,
    pub out_dir: String,
    pub keyring: String,
    pub signatures: String,
    pub quorum: usize,
    /// Our outputs (name, sha256), recomputed.
    pub outputs: Vec<(String, String)>,
    pub rows: Vec<Row>,
    /// Distinct primary keys whose statements agree with ours.
    pub agreeing_keys: Vec<String>,
    /// Distinct trusted primary keys whose statements disagree (a split view).
    pub disagreeing_keys: Vec<String>,
    pub ok: bool,
}

impl Report {
    /// The table: one line per signature file, then the verdict.
    pub fn render(&self) -> String {
        let mut s = format!("{} {}: {} output(s) in {} (recomputed)\n", self.name, self.version, self.outputs.len(), self.out_dir);
        for (n, d) in &self.outputs {
            s += &format!("  {d}  {n}\n");
        }
        s += &format!("signatures: {} (keyring {}), quorum {}\n\n", self.signatures, self.keyring, self.quorum);
        for r in &self.rows {
            let who = match (&r.fingerprint, &r.user_id) {
                (Some(f), Some(u)) => format!("{f} {u}"),
                (Some(f), None) => f.clone(),
                _ => "(unknown signer)".into(),
            };
            let what = r.attested.as_ref().map(|a| format!("{} {}, {} output(s)", a.name, a.version, a.outputs)).unwrap_or_else(|| "-".into());
            let verdict = match r.verdict {
                Verdict::Agrees => "agrees".to_string(),
                Verdict::Disagrees => "DISAGREES".to_string(),
                Verdict::NotCounted => "not counted".to_string(),
                Verdict::Garbled => "GARBLED".to_string(),
            };
            s += &format!("  {who}\n      file: {}\n      attests: {what}\n      {verdict}", r.file);
            if !r.reason.is_empty() {
                s += &format!(": {}", r.reason);
            }
            s += "\n";
            for d in &r.differences {
                s += &format!("        {}: theirs {}, ours {}\n", d.item, d.theirs.as_deref().unwrap_or("(none)"), d.ours.as_deref().unwrap_or("(none)"));
            }
        }
        if self.rows.is_empty() {
            s += "  (no signature files found)\n";
        }
        s += &format!("\n{}\n", self.verdict_line());
        s
    }

    fn verdict_line(&self) -> String {
        let count = format!("{} of {} required distinct trusted keys attest these outputs", self.agreeing_keys.len(), self.quorum);
        if !self.disagreeing_keys.is_empty() {
            return format!(
                "SPLIT VIEW: trusted key(s) {} attest DIFFERENT outputs for the same box and inputs; {count}. Do not ship: compare the builds with `stagebox diff`",
                self.disagreeing_keys.join(", ")
            );
        }
        let garbled: Vec<&str> = self.rows.iter().filter(|r| r.verdict == Verdict::Garbled).map(|r| r.file.as_str()).collect();
        if !garbled.is_empty() {
            return format!("FAILED: garbled signature file(s) {}; {count}", garbled.join(", "));
        }
        if self.ok {
            format!("REPRODUCED: {count}")
        } else {
            format!("QUORUM NOT MET: {count}")
        }
    }

    /// The error a failed check exits with (1): the verdict and each failing file.
    pub fn error(&self) -> Error {
        let mut m = format!("verify-build {} {} ({}): {}", self.name, self.version, self.out_dir, self.verdict_line());
        for r in &self.rows {
            match r.verdict {
                Verdict::Disagrees => {
                    m += &format!("\n  {} ({}) DISAGREES:", r.fingerprint.as_deref().unwrap_or("?"), r.file);
                    for d in &r.differences {
                        m += &format!(" {} theirs {} ours {};", d.item, d.theirs.as_deref().unwrap_or("(none)"), d.ours.as_deref().unwrap_or("(none)"));
                    }
                }
                Verdict::Garbled => m += &format!("\n  {}: {}", r.file, r.reason),
                Verdict::NotCounted => m += &format!("\n  {}: not counted: {}", r.file, r.reason),
                Verdict::Agrees => {}
            }
        }
        if self.rows.is_empty() {
            m += &format!("\n  no signature files found under {}", self.signatures);
        }
        Error::other(m)
    }
}

/// The manifest to verify: `manifest.json` of a single-box directory; in a directory that
/// boxes share, the `NAME.manifest.json` of the `--box` file's box, or of the only box.
fn manifest_path(out_dir: &Path, box_file: Option<&Path>) -> Result<std::path::PathBuf> {
    let single = out_dir.join("manifest.json");
    if single.is_file() {
        return Ok(single);
    }
    let found = crate::measure::manifests_in(out_dir)?;
    if let Some(b) = box_file {
        let name = crate::spec::load_box(b).map(|s| s.name).ok();
        if let Some((p, _)) = found.iter().find(|(_, m)| Some(&m.name) == name.as_ref()) {
            return Ok(p.clone());
        }
    }
    match found.len() {
        0 => Ok(single),
        1 => Ok(found[0].0.clone()),
        _ => Err(Error::Usage(format!(
            "{} holds the manifests of several boxes ({}): name the box with --box BOX.toml",
            out_dir.display(),
            found.iter().map(|(_, m)| m.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// `stagebox verify-build OUT_DIR`.
pub fn verify_build(out_dir: &Path, opts: &VerifyBuildOptions) -> Result<Report> {
    let manifest_path = manifest_path(out_dir, opts.box_file.as_deref())?;
    let manifest: BuildManifest = serde_json::from_slice(&std::fs::read(&manifest_path).at(&manifest_path)?)
        .map_err(|e| Error::other(format!("{}: not a stagebox manifest: {e}", manifest_path.display())))?;
    let outputs = recompute(out_dir, &manifest)?;

    // Our statement, and that it binds the outputs and inputs of manifest.json.
    let st_rec = manifest.outputs.iter().find(|o| o.format == "in-toto").ok_or_else(|| {
        Error::other(format!("{}: no in-toto statement among the outputs; add [output.provenance] to the box file, build, and have reproducers sign NAME.intoto.json", manifest_path.display()))
    })?;
    let st_path = out_dir.join(&st_rec.path);
    let st_bytes = std::fs::read(&st_path).at(&st_path)?;
    let ours = provenance::parse(&st_bytes).map_err(|e| Error::other(format!("{}: {e}", st_path.display())))?;
    let bound: Vec<(String, String)> = manifest.outputs.iter().filter(|o| o.format != "in-toto").map(|o| (o.path.clone(), o.sha256.clone())).collect();
    let inputs: Vec<(String, String)> = manifest.inputs.iter().map(|i| (i.reference.clone(), i.digest.trim_start_matches("sha256:").to_string())).collect();
    if sorted(&ours.outputs) != sorted(&bound) || sorted(&ours.inputs) != sorted(&inputs) || ours.name != manifest.name || ours.version != manifest.version {
        return Err(Error::other(format!("{} and {} do not describe the same build", st_path.display(), manifest_path.display())));
    }

    // Settings: flags first, then [policy.outputs] of the box file.
    let mut policy = None;
    if let Some(bf) = &opts.box_file {
        let spec = crate::spec::load_box(bf)?;
        let d = provenance::box_digest(bf)?;
        if d != ours.box_file.1 || spec.name != ours.name {
            return Err(Error::other(format!(
                "{} (sha256 {d}) is not the box file {} was built from ({}, sha256 {})",
                bf.display(),
                out_dir.display(),
                ours.box_file.0,
                ours.box_file.1
            )));
        }
        policy = spec.output_policy;
    }
    let missing = |what: &str| Error::Usage(format!("verify-build needs {what} (or --box BOX.toml with [policy.outputs])"));
    let keyring_path = opts.keyring.clone().or_else(|| policy.as_ref().map(|p| p.keyring.clone())).ok_or_else(|| missing("--keyring"))?;
    let signatures = opts.signatures.clone().or_else(|| policy.as_ref().map(|p| p.signatures.clone())).ok_or_else(|| missing("--signatures"))?;
    let quorum = opts.quorum.or_else(|| policy.as_ref().map(|p| p.quorum)).ok_or_else(|| missing("--quorum"))?;
    if quorum < 1 {
        return Err(Error::Usage("--quorum must be at least 1".into()));
    }
    let cwd = std::env::current_dir().at(".")?;
    let la = Lookaside::parse(&signatures, &cwd).map_err(Error::Usage)?;
    let keyring = Keyring::load(&keyring_path)?;
    let found = attestation::gather(&la, &ours.name, &ours.version, &keyring)?;

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let st_name = st_rec.path.as_str();
    let mut rows = Vec::new();
    for f in &found {
        let file = SignatureFile { data: &f.data, beside: f.beside.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())), local: (st_name, &st_bytes) };
        for c in attestation::check(&file, &keyring, now) {
            let mut row = Row {
                file: f.name.clone(),
                form: c.form,
                signature: c.status,
                fingerprint: c.fingerprint.clone(),
                user_id: c.user_id.clone(),
                signed_over: c.signed_over.clone(),
                attested: None,
                verdict: Verdict::NotCounted,
                reason: c.reason.clone(),
                differences: Vec::new(),
            };
            let theirs = c.payload.as_deref().map(provenance::parse);
            if let Some(Ok(t)) = &theirs {
                row.attested = Some(Summary { name: t.name.clone(), version: t.version.clone(), outputs: t.outputs.len(), stagebox_version: t.stagebox_version.clone() });
            }
            match c.status {
                Status::Garbled => row.verdict = Verdict::Garbled,
                Status::Good => match theirs {
                    Some(Ok(t)) => compare(&t, &ours, &mut row),
                    Some(Err(e)) => row.reason = format!("signed something that is not a stagebox build statement: {e}"),
                    None => row.reason = "no signed statement to read".into(),
                },
                _ => {}
            }
            rows.push(row);
        }
    }
    let keys = |v: Verdict| -> Vec<String> {
        let s: BTreeSet<&str> = rows.iter().filter(|r| r.verdict == v).filter_map(|r| r.fingerprint.as_deref()).collect();
        s.into_iter().map(str::to_string).collect()
    };
    let (agreeing_keys, disagreeing_keys) = (keys(Verdict::Agrees), keys(Verdict::Disagrees));
    // A key twice: say so on its later rows.
    let mut seen = BTreeSet::new();
    for r in rows.iter_mut().filter(|r| r.verdict == Verdict::Agrees) {
        if let Some(f) = &r.fingerprint {
            if !seen.insert(f.clone()) {
                r.reason = "the same key signed another file too: counts once".into();
            }
        }
    }
    let ok = agreeing_keys.len() >= quorum && disagreeing_keys.is_empty() && !rows.iter().any(|r| r.verdict == Verdict::Garbled);
    Ok(Report {
        name: ours.name.clone(),
        version: ours.version.clone(),
        out_dir: out_dir.display().to_string(),
        keyring: keyring_path.display().to_string(),
        signatures: la.display(),
        quorum,
        outputs,
        rows,
        agreeing_keys,
        disagreeing_keys,
        ok,
    })
}

fn sorted(v: &[(String, String)]) -> Vec<(String, String)> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// `dir:` layers and `file:` inputs come from the builder's own checkout: a difference there is
/// a different build of the same box, not another box.
fn is_local(uri: &str) -> bool {
    uri.starts_with("dir:") || uri.starts_with("file:")
}

/// Set `row`'s verdict from their statement against ours.
fn compare(t: &Attested, ours: &Attested, row: &mut Row) {
    if t.name != ours.name || t.version != ours.version {
        row.reason = format!("attests another box: {} {} (ours is {} {})", t.name, t.version, ours.name, ours.version);
        return;
    }
    if t.box_file.1 != ours.box_file.1 {
        row.reason = format!("attests another box file: {} sha256 {} (ours {})", t.box_file.0, t.box_file.1, ours.box_file.1);
        return;
    }
    if t.source_date_epoch != ours.source_date_epoch {
        row.reason = format!("other inputs: SOURCE_DATE_EPOCH {} (ours {})", t.source_date_epoch, ours.source_date_epoch);
        return;
    }
    let pinned = |a: &Attested| sorted(&a.inputs.iter().filter(|(u, _)| !is_local(u)).cloned().collect::<Vec<_>>());
    let (tp, op) = (pinned(t), pinned(ours));
    if tp != op {
        let diffs = differences(&tp, &op);
        let list: Vec<String> = diffs.iter().take(3).map(|d| format!("{} theirs {} ours {}", d.item, d.theirs.as_deref().unwrap_or("(none)"), d.ours.as_deref().unwrap_or("(none)"))).collect();
        row.reason = format!("other inputs: {}", list.join("; "));
        row.differences = diffs;
        return;
    }
    let local = |a: &Attested| sorted(&a.inputs.iter().filter(|(u, _)| is_local(u)).cloned().collect::<Vec<_>>());
    let out_diffs = differences(&sorted(&t.outputs), &sorted(&ours.outputs));
    let in_diffs = differences(&local(t), &local(ours));
    if out_diffs.is_empty() && in_diffs.is_empty() {
        row.verdict = Verdict::Agrees;
        row.reason.clear();
        return;
    }
    let names = |v: &[Difference]| v.iter().map(|d| d.item.as_str()).collect::<Vec<_>>().join(", ");
    if out_diffs.is_empty() {
        // The same outputs from other local input digests: not a split view, not this build.
        row.reason = format!("the same outputs, but other local inputs from their checkout: {}", names(&in_diffs));
        row.differences = in_diffs;
        return;
    }
    row.verdict = Verdict::Disagrees;
    row.reason = if in_diffs.is_empty() {
        format!("same box and pinned inputs, different outputs: {}", names(&out_diffs))
    } else {
        format!("same box and pinned inputs, different outputs: {} (and local inputs from their checkout: {})", names(&out_diffs), names(&in_diffs))
    };
    row.differences = out_diffs.into_iter().chain(in_diffs).collect();
}

/// Items (name → digest) that differ between two sorted lists.
fn differences(theirs: &[(String, String)], ours: &[(String, String)]) -> Vec<Difference> {
    let names: BTreeSet<&str> = theirs.iter().chain(ours).map(|(n, _)| n.as_str()).collect();
    let get = |v: &[(String, String)], n: &str| -> Option<String> {
        let all: Vec<&str> = v.iter().filter(|(k, _)| k == n).map(|(_, d)| d.as_str()).collect();
        (!all.is_empty()).then(|| all.join(","))
    };
    names
        .into_iter()
        .filter_map(|n| {
            let (a, b) = (get(theirs, n), get(ours, n));
            (a != b).then(|| Difference { item: n.to_string(), theirs: a, ours: b })
        })
        .collect()
}

/// Recompute every output of `manifest` in `dir`: (name, sha256) in manifest order. An output
/// whose bytes no longer match its record is an error naming it.
fn recompute(dir: &Path, manifest: &BuildManifest) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for o in &manifest.outputs {
        if o.path.contains('/') || o.path.starts_with('.') {
            return Err(Error::other(format!("{}: output path {:?} is not a plain name", dir.join("manifest.json").display(), o.path)));
        }
        let p = dir.join(&o.path);
        let meta = std::fs::metadata(&p).at(&p)?;
        let found = if meta.is_dir() { oci_layout_digest(&p)? } else { Digest::of_file(&p)?.0.hex().to_string() };
        if found != o.sha256 {
            return Err(Error::other(format!("{}: sha256 is {found}, but manifest.json records {} (changed after the build?)", p.display(), o.sha256)));
        }
        out.push((o.path.clone(), found));
    }
    Ok(out)
}

/// An OCI layout output: every blob must hash to its name; the digest is that of the manifest
/// `index.json` names (the one [`crate::emit::oci`] writes).
fn oci_layout_digest(layout: &Path) -> Result<String> {
    let blobs = layout.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).at(&blobs)? {
        let p = e.at(&blobs)?.path();
        let (d, _) = Digest::of_file(&p)?;
        if p.file_name().and_then(|n| n.to_str()) != Some(d.hex()) {
            return Err(Error::other(format!("{}: content hashes to {d}, not to its name", p.display())));
        }
    }
    let ip = layout.join("index.json");
    let index = crate::source::oci_layout::read_index(layout)?;
    let m = index.manifests().first().ok_or_else(|| Error::other(format!("{}: names no manifest", ip.display())))?;
    let d = Digest::parse(m.digest().as_ref())?;
    if !blobs.join(d.hex()).is_file() {
        return Err(Error::other(format!("{}: manifest {d} is missing", layout.display())));
    }
    Ok(d.hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oci_layout_output_is_named_by_the_manifest_its_index_lists() {
        let d = tempfile::tempdir().unwrap();
        let tree = crate::tree::testutil::tree(&[("a", "file:x", 0o644, 1)]);
        let img = crate::emit::oci::write(&tree, 1, "t", None, d.path(), "test", ("linux", "amd64")).unwrap();
        assert_eq!(oci_layout_digest(d.path()).unwrap(), img.manifest_digest.hex());
    }

    #[test]
    fn the_manifest_of_a_shared_directory_is_the_named_boxs() {
        let d = tempfile::tempdir().unwrap();
        let m = |name: &str| BuildManifest { name: name.into(), version: "1".into(), source_date_epoch: 1, inputs: Vec::new(), outputs: Vec::new() };
        // Single box: manifest.json.
        m("a").write(d.path()).unwrap();
        assert_eq!(manifest_path(d.path(), None).unwrap(), d.path().join("manifest.json"));
        // Two boxes and no manifest.json: the only one, or the --box file's, else a usage error naming both.
        std::fs::remove_file(d.path().join("manifest.json")).unwrap();
        std::fs::write(d.path().join("a.manifest.json"), m("a").to_json()).unwrap();
        assert_eq!(manifest_path(d.path(), None).unwrap(), d.path().join("a.manifest.json"));
        std::fs::write(d.path().join("b.manifest.json"), m("b").to_json()).unwrap();
        let e = manifest_path(d.path(), None).unwrap_err();
        assert!(e.exit_code() == 2 && e.to_string().contains("a, b") && e.to_string().contains("--box"), "{e}");
        std::fs::write(d.path().join("b.toml"), "name = \"b\"\n[[layer]]\ndir = \".\"\n[output.tar]\n").unwrap();
        assert_eq!(manifest_path(d.path(), Some(&d.path().join("b.toml"))).unwrap(), d.path().join("b.manifest.json"));
    }

    fn att(outputs: &[(&str, &str)], inputs: &[(&str, &str)]) -> Attested {
        let v = |x: &[(&str, &str)]| x.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Attested { name: "b".into(), version: "1".into(), box_file: ("b.toml".into(), "bf".into()), source_date_epoch: 1, inputs: v(inputs), outputs: v(outputs), stagebox_version: "0".into() }
    }

    fn row() -> Row {
        Row { file: "f".into(), form: None, signature: Status::Good, fingerprint: None, user_id: None, signed_over: None, attested: None, verdict: Verdict::NotCounted, reason: String::new(), differences: Vec::new() }
    }

    #[test]
    fn same_box_other_outputs_disagrees_other_pins_not_counted() {
        let ours = att(&[("b.tar", "aa")], &[("oci:x@sha256:11", "11"), ("dir:root", "22")]);
        let mut r = row();
        compare(&ours.clone(), &ours, &mut r);
        assert_eq!(r.verdict, Verdict::Agrees);

        let mut r = row();
        compare(&att(&[("b.tar", "bb")], &[("oci:x@sha256:11", "11"), ("dir:root", "33")]), &ours, &mut r);
        assert_eq!(r.verdict, Verdict::Disagrees);
        assert_eq!(r.differences[0], Difference { item: "b.tar".into(), theirs: Some("bb".into()), ours: Some("aa".into()) });
        assert_eq!(r.differences[1].item, "dir:root");

        let mut r = row();
        compare(&att(&[("b.tar", "aa")], &[("oci:x@sha256:11", "11"), ("dir:root", "33")]), &ours, &mut r);
        assert_eq!(r.verdict, Verdict::NotCounted, "same outputs, other checkout: {}", r.reason);

        let mut r = row();
        compare(&att(&[("b.tar", "bb")], &[("oci:x@sha256:12", "12"), ("dir:root", "22")]), &ours, &mut r);
        assert_eq!(r.verdict, Verdict::NotCounted);
        assert!(r.reason.contains("other inputs"), "{}", r.reason);

        let mut other = ours.clone();
        other.name = "c".into();
        let mut r = row();
        compare(&other, &ours, &mut r);
        assert_eq!(r.verdict, Verdict::NotCounted);
        assert!(r.reason.contains("another box"), "{}", r.reason);
    }
}
