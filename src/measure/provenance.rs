//! `[output.provenance]` → `NAME.intoto.json`: an in-toto Statement v1 with a SLSA
//! provenance v1 predicate that binds every output's digest (the subjects) to the digests of
//! every input and of the box file (resolvedDependencies).
//!
//! Canonical JSON (object keys sorted bytewise, no whitespace, no trailing newline, strings
//! and integers only) and nothing from the host or the clock: every party that reproduces the
//! build gets the same bytes and can sign them (e.g. in a DSSE envelope) independently;
//! signatures then agree on one statement. The SBOM, when built, is a subject too; the
//! statement is not a subject of itself.

use super::{InputRecord, OutputRecord};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// `buildDefinition.buildType`: what a stagebox build is (box file + pinned inputs +
/// SOURCE_DATE_EPOCH → outputs); described in docs/reproducibility.md.
pub const BUILD_TYPE: &str = "https://stagebox.invalid/build-types/box/v1";
/// `runDetails.builder.id`: any stagebox of this version; no host or operator identity, so
/// that independent reproducers produce the same statement.
pub const BUILDER_ID: &str = "https://stagebox.invalid/builders/reproducible";

/// What the statement binds.
pub struct ProvenanceInput<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub source_date_epoch: u64,
    /// The box file's base name and its sha256 (hex).
    pub box_file: (&'a str, String),
    pub inputs: &'a [InputRecord],
    pub outputs: &'a [OutputRecord],
}

fn sha256_of(d: &str) -> Value {
    json!({"sha256": d.strip_prefix("sha256:").unwrap_or(d)})
}

/// One subject: name and digest, and what a verifier checks at run time as in-toto
/// annotations: the dm-verity root hash (`roothash`) and predicted TPM PCRs (`tpm_pcrs`).
fn subject(o: &OutputRecord) -> Value {
    let mut s = json!({"name": o.path, "digest": sha256_of(&o.sha256)});
    let mut a = serde_json::Map::new();
    if let Some(r) = &o.roothash {
        a.insert("roothash".into(), json!(r));
    }
    if let Some(p) = &o.tpm_pcrs {
        a.insert("tpm_pcrs".into(), json!(p));
    }
    if !a.is_empty() {
        s["annotations"] = Value::Object(a);
    }
    s
}

/// The statement, canonical JSON bytes.
pub fn statement(p: &ProvenanceInput) -> Vec<u8> {
    let subject: Vec<Value> = p.outputs.iter().map(subject).collect();
    let mut deps = vec![json!({"uri": format!("file:{}", p.box_file.0), "digest": sha256_of(&p.box_file.1), "name": "box file"})];
    deps.extend(p.inputs.iter().map(|i| json!({"uri": i.reference, "digest": sha256_of(&i.digest)})));
    let formats: Vec<&str> = p.outputs.iter().map(|o| o.format.as_str()).collect();
    let v = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "box": {"name": p.name, "version": p.version, "file": p.box_file.0},
                    "source_date_epoch": p.source_date_epoch,
                    "outputs": formats,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"stagebox": env!("CARGO_PKG_VERSION")}},
                "metadata": {},
            },
        },
    });
    // serde_json's Map is a BTreeMap here (no preserve_order feature): keys come out sorted.
    serde_json::to_vec(&v).expect("json")
}

/// Write `NAME.intoto.json` into `out`; returns its record.
pub fn emit(p: &ProvenanceInput, out: &Path) -> Result<OutputRecord> {
    let name = format!("{}.intoto.json", p.name);
    super::stage_bytes(out, "in-toto", name, &statement(p))
}

/// The sha256 (hex) of the box file, for [`ProvenanceInput::box_file`].
pub fn box_digest(path: &Path) -> Result<String> {
    crate::digest::Digest::of_file(path).map(|(d, _)| d.hex().to_string()).map_err(|e| Error::other(format!("provenance: {e}")))
}

/// What a statement attests, read back (from a reproducer's signed statement, or our own).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attested {
    pub name: String,
    pub version: String,
    /// The box file's base name and sha256 (hex).
    pub box_file: (String, String),
    pub source_date_epoch: u64,
    /// `resolvedDependencies` other than the box file: (uri, sha256 hex), in statement order.
    pub inputs: Vec<(String, String)>,
    /// The subjects: (output name, sha256 hex), in statement order.
    pub outputs: Vec<(String, String)>,
    /// `runDetails.builder.version.stagebox`.
    pub stagebox_version: String,
}

/// Read a statement [`statement`] wrote (any stagebox version with this build type).
pub fn parse(bytes: &[u8]) -> std::result::Result<Attested, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if v["_type"] != "https://in-toto.io/Statement/v1" || v["predicateType"] != "https://slsa.dev/provenance/v1" {
        return Err("not an in-toto v1 statement with a SLSA provenance v1 predicate".into());
    }
    let bd = &v["predicate"]["buildDefinition"];
    if bd["buildType"] != BUILD_TYPE {
        return Err(format!("build type {} is not a stagebox build ({BUILD_TYPE})", bd["buildType"]));
    }
    let str_at = |x: &Value, what: &str| x.as_str().map(str::to_string).ok_or_else(|| format!("statement has no {what}"));
    let sha = |x: &Value, what: &str| str_at(&x["digest"]["sha256"], &format!("sha256 digest of {what}"));
    let ext = &bd["externalParameters"];
    let mut box_file = None;
    let mut inputs = Vec::new();
    for d in bd["resolvedDependencies"].as_array().ok_or("statement has no resolvedDependencies")? {
        let uri = str_at(&d["uri"], "dependency uri")?;
        if d["name"] == "box file" {
            box_file = Some((uri.strip_prefix("file:").unwrap_or(&uri).to_string(), sha(d, &uri)?));
        } else {
            inputs.push((uri.clone(), sha(d, &uri)?));
        }
    }
    let mut outputs = Vec::new();
    for s in v["subject"].as_array().ok_or("statement has no subject list")? {
        let name = str_at(&s["name"], "subject name")?;
        outputs.push((name.clone(), sha(s, &name)?));
    }
    Ok(Attested {
        name: str_at(&ext["box"]["name"], "box name")?,
        version: str_at(&ext["box"]["version"], "box version")?,
        box_file: box_file.ok_or("statement names no box file")?,
        source_date_epoch: ext["source_date_epoch"].as_u64().ok_or("statement has no source_date_epoch")?,
        inputs,
        outputs,
        stagebox_version: v["predicate"]["runDetails"]["builder"]["version"]["stagebox"].as_str().unwrap_or("").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_is_canonical_and_binds_digests() {
        let inputs = [InputRecord { reference: "oci:img@sha256:ab".into(), digest: "sha256:ab".into() }];
        let outputs = [OutputRecord { format: "tar".into(), path: "x.tar".into(), sha256: "cd".into(), size: 1, pcrs: None, ..Default::default() }];
        let p = ProvenanceInput { name: "x", version: "1", source_date_epoch: 1, box_file: ("x.toml", "ef".into()), inputs: &inputs, outputs: &outputs };
        let b = statement(&p);
        let s = std::str::from_utf8(&b).unwrap();
        assert!(s.starts_with(r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"buildDefinition":"#), "{s}");
        assert!(s.contains(r#""subject":[{"digest":{"sha256":"cd"},"name":"x.tar"}]"#), "{s}");
        assert!(s.contains(r#"{"digest":{"sha256":"ab"},"uri":"oci:img@sha256:ab"}"#), "{s}");
        assert!(s.contains(r#"{"digest":{"sha256":"ef"},"name":"box file","uri":"file:x.toml"}"#), "{s}");
        assert!(!s.contains(' ') || !s.contains(": "), "no whitespace between tokens: {s}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), b, "re-serializing gives the same bytes");
        let a = parse(&b).unwrap();
        assert_eq!((a.name.as_str(), a.version.as_str(), a.source_date_epoch), ("x", "1", 1));
        assert_eq!(a.box_file, ("x.toml".to_string(), "ef".to_string()));
        assert_eq!(a.inputs, vec![("oci:img@sha256:ab".to_string(), "ab".to_string())]);
        assert_eq!(a.outputs, vec![("x.tar".to_string(), "cd".to_string())]);
        assert!(parse(b"{}").is_err() && parse(b"[").is_err());
    }
}
