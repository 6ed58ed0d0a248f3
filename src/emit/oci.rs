//! A single-layer OCI image layout of the rootfs: the reproducible tar (gzip), a config
//! with `created` = SOURCE_DATE_EPOCH, the box's platform and the runtime settings of the top
//! input image, a manifest, and `index.json` with the tag as `org.opencontainers.image.ref.name`
//! and the platform.
//!
//! JSON is written compact with sorted keys, so the same tree always gives the same
//! manifest digest.

use super::compress::Encoder;
use crate::digest::{Digest, HashWriter};
use crate::error::{Error, IoContext, Result};
use crate::source::{MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST};
use crate::spec::Compression;
use crate::tree::Tree;
use serde_json::json;
use std::io::{BufWriter, Write};
use std::path::Path;

pub struct OciImage {
    pub manifest_digest: Digest,
    pub manifest_size: u64,
}

/// Runtime settings copied from the top input image's config (`config` object).
const RUNTIME_KEYS: &[&str] =
    &["User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal"];

fn write_blob(dir: &Path, data: &[u8]) -> Result<(Digest, u64)> {
    let d = Digest::of_bytes(data);
    let p = dir.join("blobs/sha256").join(d.hex());
    std::fs::write(&p, data).at(&p)?;
    Ok((d, data.len() as u64))
}

/// The platform fields of the config and of the index entry (`os`, `architecture` and, where
/// the OCI image-index spec names one as the architecture's default, `variant`: `v8` for
/// arm64, as Docker and containerd normalise it) for a build's `os`/`arch`.
pub fn platform_fields(os: &str, arch: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("architecture".into(), arch.into());
    m.insert("os".into(), os.into());
    if arch == "arm64" {
        m.insert("variant".into(), "v8".into());
    }
    m
}

/// Write the layout into `dir` (an empty directory; the caller renames it into place).
/// `platform` is the box's (`os`, `arch`), in OCI's names: the config and the index entry say it.
pub fn write(tree: &Tree, sde: u64, tag: &str, base_config: Option<&serde_json::Value>, dir: &Path, created_by: &str, platform: (&str, &str)) -> Result<OciImage> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).at(&blobs)?;

    // Layer: tar → (hash = diff_id) → gzip → (hash = digest) → file
    let tmp_path = blobs.join(".layer.tmp");
    let file = std::fs::File::create(&tmp_path).at(&tmp_path)?;
    let outer = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
    let enc = Encoder::new(Compression::Gzip, outer).at(&tmp_path)?;
    let mut inner = HashWriter::new(enc);
    super::tar::write(tree, sde, &mut inner).at(&tmp_path)?;
    let (diff_id, _, enc) = inner.finish_with_inner();
    let outer = enc.finish().at(&tmp_path)?;
    let (layer_digest, layer_size, buf) = outer.finish_with_inner();
    let mut file = buf.into_inner().map_err(|e| Error::io(&tmp_path, e.into_error()))?;
    file.flush().at(&tmp_path)?;
    let layer_path = blobs.join(layer_digest.hex());
    std::fs::rename(&tmp_path, &layer_path).at(&layer_path)?;

    let created = crate::measure::rfc3339(sde);
    let mut runtime = serde_json::Map::new();
    if let Some(cfg) = base_config.and_then(|c| c.get("config")).and_then(|c| c.as_object()) {
        for k in RUNTIME_KEYS {
            if let Some(v) = cfg.get(*k) {
                if !v.is_null() {
                    runtime.insert((*k).to_string(), v.clone());
                }
            }
        }
    }
    let mut config = json!({
        "created": created,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
        "history": [{"created": created, "created_by": created_by}],
    });
    let fields = platform_fields(platform.0, platform.1);
    config.as_object_mut().expect("object").extend(fields.clone());
    let (config_digest, config_size) = write_blob(dir, &serde_json::to_vec(&config).expect("json"))?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest.as_str(), "size": config_size},
        "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": layer_digest.as_str(), "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = write_blob(dir, &serde_json::to_vec(&manifest).expect("json"))?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [{
            "mediaType": MT_OCI_MANIFEST,
            "digest": manifest_digest.as_str(),
            "size": manifest_size,
            "platform": fields,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    let p = dir.join("index.json");
    std::fs::write(&p, serde_json::to_vec(&index).expect("json")).at(&p)?;
    let p = dir.join("oci-layout");
    std::fs::write(&p, br#"{"imageLayoutVersion":"1.0.0"}"#).at(&p)?;
    Ok(OciImage { manifest_digest, manifest_size })
}
