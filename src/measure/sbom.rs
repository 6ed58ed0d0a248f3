//! `[output.sbom]` → `NAME.spdx.json`: an SPDX 2.3 JSON document of the build — the box as
//! a package that CONTAINS every regular file of the rootfs (path, SHA-256 and SHA-1) and is
//! GENERATED_FROM every input (images with their manifest digest, layers, checked signatures
//! and the keys that made them; kernel and prepended files by digest).
//!
//! Hand-written with `serde_json` (no SPDX crate: the few fields we fill are plain JSON, and
//! the tests validate the result against the official 2.3 schema). Deterministic: no clock
//! (`created` is SOURCE_DATE_EPOCH), no host paths, SPDX ids numbered in tree order, keys
//! sorted, and `documentNamespace` derived from a sha256 of the document itself written with
//! an empty namespace — so the same inputs give the same bytes, and different inputs a
//! different namespace.
//!
//! File digests come from the tree's spilled contents (a box with `[output.sbom]` flattens in
//! spill mode, see `build::outputs::Output::content_mode`): one sequential read of each
//! inode's bytes from the spill files, which are still in the page cache after emitting; no
//! layer is decompressed again. SHA-1 is there because SPDX 2.3 requires it for every file (and
//! `packageVerificationCode` is defined over it); SHA-256 is the digest to trust.

use super::{InputRecord, OutputRecord};
use crate::error::{Error, Result};
use crate::source::ResolvedImage;
use crate::source::signature::Report;
use crate::tree::{Kind, Tree};
use serde_json::{json, Value};
use sha1::Digest as _;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// What the SBOM describes, gathered by `build`.
pub struct SbomInput<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub source_date_epoch: u64,
    /// Every input of manifest.json, in its order.
    pub inputs: &'a [InputRecord],
    /// The resolved images (their layers); matched to `inputs` by reference text.
    pub images: &'a [ResolvedImage],
    /// The signature reports of `[policy]` (empty without a policy).
    pub signatures: &'a [Report],
    pub tree: &'a Tree,
}

/// SHA-256 and SHA-1 (hex) of every regular file's content, by inode.
fn file_digests(tree: &Tree) -> Result<HashMap<u64, (String, String)>> {
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    for (path, node) in tree.walk() {
        let Kind::File { content, inode } = &node.kind else { continue };
        if out.contains_key(inode) {
            continue;
        }
        let (mut s256, mut s1) = (sha2::Sha256::new(), sha1::Sha1::new());
        let mut r = tree.open(content);
        loop {
            let n = r.read(&mut buf).map_err(|e| Error::other(format!("sbom: reading {}: {e}", crate::tree::path::show(path))))?;
            if n == 0 {
                break;
            }
            s256.update(&buf[..n]);
            s1.update(&buf[..n]);
        }
        out.insert(*inode, (hex::encode(s256.finalize()), hex::encode(s1.finalize())));
    }
    Ok(out)
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The SPDX document, as bytes (pretty JSON, sorted keys, trailing newline).
pub fn document(s: &SbomInput) -> Result<Vec<u8>> {
    let digests = file_digests(s.tree)?;
    let mut files = Vec::new();
    let mut rels = vec![json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Box"})];
    let mut sha1s = Vec::new();
    for (n, (path, node)) in s.tree.walk().filter(|(_, n)| matches!(n.kind, Kind::File { .. })).enumerate() {
        let Kind::File { inode, .. } = node.kind else { unreachable!("filtered") };
        let (s256, s1) = &digests[&inode];
        let id = format!("SPDXRef-File-{n}");
        files.push(json!({
            "SPDXID": id,
            "fileName": format!("./{}", String::from_utf8_lossy(path)),
            "checksums": [{"algorithm": "SHA1", "checksumValue": s1}, {"algorithm": "SHA256", "checksumValue": s256}],
        }));
        rels.push(json!({"spdxElementId": "SPDXRef-Box", "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        sha1s.push(s1.clone());
    }
    // SPDX 2.3 §7.9: SHA-1 over the sorted, concatenated SHA-1s of the package's files.
    sha1s.sort();
    let verification = hex::encode(sha1::Sha1::digest(sha1s.concat().as_bytes()));
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Box",
        "name": s.name,
        "versionInfo": s.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": true,
        "packageVerificationCode": {"packageVerificationCodeValue": verification},
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": "The root file system stagebox built from the inputs below; every regular file is listed.",
    })];
    for (n, input) in s.inputs.iter().enumerate() {
        let id = format!("SPDXRef-Input-{n}");
        let image = s.images.iter().find(|i| i.reference.text == input.reference);
        let mut comment = format!("pinned {}", input.digest);
        let mut checksums = vec![json!({"algorithm": "SHA256", "checksumValue": hex_of(&input.digest)})];
        if let Some(img) = image {
            if img.manifest_digest.as_str() != input.digest {
                comment += &format!("; manifest {}", img.manifest_digest);
                checksums = vec![json!({"algorithm": "SHA256", "checksumValue": img.manifest_digest.hex()})];
            }
            for (m, l) in img.layers.iter().enumerate() {
                let lid = format!("SPDXRef-Input-{n}-Layer-{m}");
                packages.push(json!({
                    "SPDXID": lid,
                    "name": format!("{} layer {m}", input.reference),
                    "versionInfo": l.digest.as_str(),
                    "downloadLocation": "NOASSERTION",
                    "filesAnalyzed": false,
                    "checksums": [{"algorithm": "SHA256", "checksumValue": l.digest.hex()}],
                    "comment": format!("media type {}; diff_id {}; {} bytes", l.media_type, l.diff_id, l.size),
                }));
                rels.push(json!({"spdxElementId": id, "relationshipType": "CONTAINS", "relatedSpdxElement": lid}));
            }
        }
        match s.signatures.iter().find(|r| r.image == input.reference) {
            Some(r) => {
                comment += &format!("; signatures checked: {} accepted, quorum {} of distinct keys", r.accepted.len(), r.quorum);
                for a in &r.accepted {
                    comment += &format!("; signed by {} ({}) for {}", a.fingerprint, a.user_id, a.identity);
                }
            }
            None => comment += "; signatures not checked (no [policy] for it)",
        }
        packages.push(json!({
            "SPDXID": id,
            "name": input.reference,
            "versionInfo": input.digest,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": checksums,
            "comment": comment,
        }));
        rels.push(json!({"spdxElementId": "SPDXRef-Box", "relationshipType": "GENERATED_FROM", "relatedSpdxElement": id}));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", s.name, s.version),
        "documentNamespace": "",
        "creationInfo": {
            "created": super::rfc3339(s.source_date_epoch),
            "creators": [format!("Tool: stagebox-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "files": files,
        "relationships": rels,
    });
    let self_digest = crate::digest::Digest::of_bytes(&serde_json::to_vec(&doc).expect("json"));
    let safe: String = format!("{}-{}", s.name, s.version).chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    doc["documentNamespace"] = Value::String(format!("https://spdx.org/spdxdocs/stagebox-{safe}-{}", self_digest.hex()));
    let mut v = serde_json::to_vec_pretty(&doc).expect("json");
    v.push(b'\n');
    Ok(v)
}

/// Write `NAME.spdx.json` into `out`; returns its record.
pub fn emit(s: &SbomInput, out: &Path) -> Result<OutputRecord> {
    let name = format!("{}.spdx.json", s.name);
    super::stage_bytes(out, "spdx", name, &document(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::source::signature::Signer;
    use crate::source::LayerBlob;

    #[test]
    fn inputs_carry_layers_and_the_keys_that_signed_them() {
        let d = |c: &str| Digest::parse(&format!("sha256:{}", c.repeat(64))).unwrap();
        let text = format!("stagex/core-busybox@{}", d("a"));
        let reference = crate::reference::ImageRef::parse(&text, Path::new("/")).unwrap();
        let layer = LayerBlob { digest: d("b"), size: 5, diff_id: d("c"), media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(), label: "l".into() };
        let images = [ResolvedImage { reference, pin: d("a"), manifest_digest: d("a"), config: serde_json::json!({}), layers: vec![layer] }];
        let inputs = [InputRecord { reference: text.clone(), digest: d("a").to_string() }, InputRecord { reference: "file:ucode.cpio".into(), digest: d("e").to_string() }];
        let signer = Signer { fingerprint: "F00D".into(), user_id: "Alice".into(), file: "signature-1".into(), digest: d("a").to_string(), identity: "stagex/core-busybox:1".into() };
        let signatures = [Report { image: text.clone(), digests: vec![], lookaside: "/x".into(), quorum: 1, strict: false, accepted: vec![signer], rejected: vec![], distinct_keys: vec!["F00D".into()] }];
        let tree = Tree::new(1);
        let s = SbomInput { name: "n", version: "1", source_date_epoch: 86400, inputs: &inputs, images: &images, signatures: &signatures, tree: &tree };
        let doc: Value = serde_json::from_slice(&document(&s).unwrap()).unwrap();
        let p = doc["packages"].as_array().unwrap();
        let input = p.iter().find(|x| x["SPDXID"] == "SPDXRef-Input-0").unwrap();
        assert_eq!(input["checksums"][0]["checksumValue"], "a".repeat(64));
        let c = input["comment"].as_str().unwrap();
        assert!(c.contains("1 accepted, quorum 1") && c.contains("signed by F00D (Alice)"), "{c}");
        assert!(p.iter().any(|x| x["SPDXID"] == "SPDXRef-Input-0-Layer-0" && x["checksums"][0]["checksumValue"] == "b".repeat(64)));
        let other = p.iter().find(|x| x["SPDXID"] == "SPDXRef-Input-1").unwrap();
        assert!(other["comment"].as_str().unwrap().contains("signatures not checked"));
        assert_eq!(doc["creationInfo"]["created"], "1970-01-02T00:00:00Z");
        // The namespace follows the content.
        let again: Value = serde_json::from_slice(&document(&s).unwrap()).unwrap();
        assert_eq!(again["documentNamespace"], doc["documentNamespace"]);
        let s2 = SbomInput { version: "2", ..s };
        let other: Value = serde_json::from_slice(&document(&s2).unwrap()).unwrap();
        assert_ne!(other["documentNamespace"], doc["documentNamespace"]);
    }
}
