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

/// The statement, canonical JSON bytes.
pub fn statement(p: &ProvenanceInput) -> Vec<u8> {
    let subject: Vec<Value> = p.outputs.iter().map(|o| json!({"name": o.path, "digest": sha256_of(&o.sha256)})).collect();
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
    let bytes = statement(p);
    crate::fsutil::write_atomic(&out.join(&name), &bytes)?;
    Ok(OutputRecord { format: "in-toto".into(), path: name, sha256: crate::digest::Digest::of_bytes(&bytes).hex().to_string(), size: bytes.len() as u64, pcrs: None })
}

/// The sha256 (hex) of the box file, for [`ProvenanceInput::box_file`].
pub fn box_digest(path: &Path) -> Result<String> {
    crate::digest::Digest::of_file(path).map(|(d, _)| d.hex().to_string()).map_err(|e| Error::other(format!("provenance: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_is_canonical_and_binds_digests() {
        let inputs = [InputRecord { reference: "oci:img@sha256:ab".into(), digest: "sha256:ab".into() }];
        let outputs = [OutputRecord { format: "tar".into(), path: "x.tar".into(), sha256: "cd".into(), size: 1, pcrs: None }];
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
    }
}
