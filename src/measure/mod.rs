//! Measurements of a build: the sha256 and size of every output, the inputs that went in,
//! and `manifest.json` (DESIGN §6), written with sorted keys so it is itself reproducible.
//! Every output file is written through [`stage_file`] or [`stage_bytes`], which commit it
//! atomically and return its record.

pub mod pcr;
pub mod provenance;
pub mod sbom;
pub mod tpm;

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputRecord {
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputRecord {
    pub format: String,
    /// File name relative to the output directory.
    pub path: String,
    /// For a file, its sha256; for an OCI layout directory, its manifest digest.
    pub sha256: String,
    pub size: u64,
    /// For an EIF: its PCRs, `{"PCR0": hex, ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcrs: Option<std::collections::BTreeMap<String, String>>,
    /// For an image with `verity = true` (squashfs, erofs, disk): the dm-verity root hash, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roothash: Option<String>,
    /// For an output UEFI firmware boots (ISO, disk): the predicted TPM 2.0 PCRs (sha256
    /// bank), `{"PCR4": hex, ...}` (see `measure::tpm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_pcrs: Option<std::collections::BTreeMap<String, String>>,
    /// For a kernel and the outputs that boot it (initramfs' kernel, ISO, disk): the
    /// architecture in OCI's names when it is not amd64 (absent means amd64), which
    /// `stagebox run` reads to pick the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildManifest {
    #[serde(rename = "box")]
    pub name: String,
    pub version: String,
    pub source_date_epoch: u64,
    pub inputs: Vec<InputRecord>,
    pub outputs: Vec<OutputRecord>,
}

impl BuildManifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_atomic(&dir.join("manifest.json"), &self.to_json())
    }

    /// `NAME.manifest.json`: the file name of this box's own manifest in a shared directory.
    pub fn file_name(&self) -> String {
        box_manifest_name(&self.name)
    }
}

/// The manifest file of box `name`: `NAME.manifest.json`.
pub fn box_manifest_name(name: &str) -> String {
    format!("{name}.manifest.json")
}

/// Every build manifest in `dir`: `manifest.json` (the single-box name) and each
/// `NAME.manifest.json`, by file name; files that are not manifests are left out.
pub fn manifests_in(dir: &Path) -> Result<Vec<(std::path::PathBuf, BuildManifest)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(crate::Error::io(dir, e)),
    };
    let mut names: Vec<String> = rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for n in names.into_iter().filter(|n| n == "manifest.json" || (n.ends_with(".manifest.json") && !n.starts_with('.'))) {
        let p = dir.join(&n);
        if let Ok(m) = std::fs::read(&p).map_err(|_| ()).and_then(|b| serde_json::from_slice::<BuildManifest>(&b).map_err(|_| ())) {
            out.push((p, m));
        }
    }
    Ok(out)
}

/// The manifest in `dir` that lists output file `name` (boxes sharing a directory each have
/// their `NAME.manifest.json`; the first by file name wins) and its record of that file.
/// `None` when no manifest there lists it.
pub fn manifest_listing(dir: &Path, name: &str) -> Result<Option<(std::path::PathBuf, OutputRecord)>> {
    Ok(manifests_in(dir)?.into_iter().find_map(|(p, m)| Some((p, m.outputs.into_iter().find(|o| o.path == name)?))))
}

/// `[output.sbom]` and `[output.provenance]`, after every other output (the provenance's
/// subjects are all outputs before it, the SBOM included). `s` is what the build knows
/// (the box's name, version, inputs, images, signatures and tree).
pub fn emit_attestations(
    spec: &crate::spec::BoxSpec,
    s: &sbom::SbomInput,
    out: &Path,
    outputs: &mut Vec<OutputRecord>,
    progress: &crate::progress::Progress,
) -> Result<()> {
    let (sde, inputs, tree) = (s.source_date_epoch, s.inputs, s.tree);
    if spec.outputs.sbom.is_some() {
        let t0 = std::time::Instant::now();
        progress.set_message(format!("write {}.spdx.json", spec.name));
        outputs.push(sbom::emit(s, out)?);
        progress.timing(|| format!("sbom ({} bytes hashed)", tree.content_bytes()), t0);
    }
    if spec.outputs.provenance.is_some() {
        progress.set_message(format!("write {}.intoto.json", spec.name));
        let file = spec.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let p = provenance::ProvenanceInput {
            name: &spec.name,
            version: &spec.version,
            source_date_epoch: sde,
            box_file: (&file, provenance::box_digest(&spec.path)?),
            inputs,
            outputs,
        };
        let rec = provenance::emit(&p, out)?;
        outputs.push(rec);
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC; no host time zone).
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d, h, mi, s) = crate::date::utc(secs);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The writer of an output written front to back in one pass: its bytes go to a thread that
/// hashes them and hands them on to a thread of its own that writes them to `file` with disk
/// space reserved ahead, past the page cache where the file system allows it
/// ([`crate::fsutil::DirectFile`]); the emitter, the hash and the disk each keep a thread busy.
/// Hand it back to [`finish_streamed`] for the digest and size [`stage_file`] records.
pub type Streamed = crate::fsutil::BackgroundWriter<crate::digest::HashWriter<crate::fsutil::BackgroundWriter<crate::fsutil::DirectFile>>>;

/// A [`Streamed`] writer onto `file` (named `path` in errors).
pub fn streamed(file: &std::fs::File, path: &Path) -> Result<Streamed> {
    use crate::error::IoContext;
    use crate::fsutil::{BackgroundWriter, DirectFile};
    let f = file.try_clone().at(path)?;
    Ok(BackgroundWriter::new(crate::digest::HashWriter::new(BackgroundWriter::new(DirectFile::new(f)))))
}

/// Wait for the writes of `w`, trim its reserve, and return the digest and size of what went
/// through it.
pub fn finish_streamed(w: Streamed, path: &Path) -> Result<(crate::digest::Digest, u64)> {
    use crate::error::IoContext;
    let (d, size, bw) = w.finish().at(path)?.finish_with_inner();
    bw.finish().at(path)?.finish().at(path)?;
    Ok((d, size))
}

/// Write one output file `dir/name` atomically and record it: `write` fills the file (named
/// `path` in its errors) and returns the digest and size when it hashed the bytes on their
/// way out, or `None` to have them read back (outputs laid out or patched in place); then the
/// file takes its name. The one write → hash → commit → record sequence of every output file.
pub fn stage_file(
    dir: &Path,
    format: &str,
    name: String,
    write: impl FnOnce(&mut std::fs::File, &Path) -> Result<Option<(crate::digest::Digest, u64)>>,
) -> Result<OutputRecord> {
    let path = dir.join(&name);
    let mut af = crate::fsutil::AtomicFile::create(&path)?;
    let (d, size) = match write(af.file(), &path)? {
        Some(h) => h,
        None => crate::digest::Digest::of_file(&path.with_file_name(af.temp_name()))?,
    };
    af.commit()?;
    Ok(OutputRecord { format: format.into(), path: name, sha256: d.hex().to_string(), size, pcrs: None, ..Default::default() })
}

/// Write one output file `dir/name` atomically from `bytes` held in memory and record it
/// (the bytes are hashed as they are, not read back): [`stage_file`] for small text outputs.
pub fn stage_bytes(dir: &Path, format: &str, name: String, bytes: &[u8]) -> Result<OutputRecord> {
    crate::fsutil::write_atomic(&dir.join(&name), bytes)?;
    let d = crate::digest::Digest::of_bytes(bytes);
    Ok(OutputRecord { format: format.into(), path: name, sha256: d.hex().to_string(), size: bytes.len() as u64, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_bytes_records_what_stage_file_would() {
        let d = tempfile::tempdir().unwrap();
        let a = stage_bytes(d.path(), "pcrs", "a.pcrs".into(), b"abc\n").unwrap();
        let b = stage_file(d.path(), "pcrs", "b.pcrs".into(), |f, _| {
            std::io::Write::write_all(f, b"abc\n").unwrap();
            Ok(None)
        })
        .unwrap();
        assert_eq!(std::fs::read(d.path().join("a.pcrs")).unwrap(), b"abc\n");
        assert_eq!((a.sha256, a.size, a.format), (b.sha256, b.size, b.format));
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(951782400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1700000000), "2023-11-14T22:13:20Z");
    }
}
