//! `docker-archive:FILE` sources: the tarball `docker save` and `skopeo copy … docker-archive:`
//! write (`manifest.json` naming a config and layer members).
//!
//! The archive holds no manifest digest, so its pin is the image ID (the config digest), which
//! fixes every layer through `rootfs.diff_ids`. Layers are copied into the store as they are
//! and an OCI manifest is written for them there.

use super::{diff_ids, LayerBlob, ResolvedImage, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::ImageRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn err(r: &ImageRef, message: impl Into<String>) -> Error {
    Error::Resolve { reference: r.text.clone(), message: message.into() }
}

/// Member name → (data offset, size); symlink members are resolved to their targets.
fn index_members(r: &ImageRef, file: &Path) -> Result<BTreeMap<String, (u64, u64)>> {
    let f = File::open(file).map_err(|e| err(r, format!("{}: {e}", file.display())))?;
    let mut ar = tar::Archive::new(f);
    let mut members = BTreeMap::new();
    let mut links = Vec::new();
    for e in ar.entries().map_err(|e| err(r, format!("{}: {e}", file.display())))? {
        let e = e.map_err(|e| err(r, format!("{}: not a readable tar: {e}", file.display())))?;
        let name = normalize(&String::from_utf8_lossy(&e.path_bytes()));
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                members.insert(name, (e.raw_file_position(), e.size()));
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()).to_string();
                let base = if e.header().entry_type() == tar::EntryType::Symlink {
                    name.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default()
                } else {
                    String::new()
                };
                links.push((name, normalize(&format!("{base}{target}"))));
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(v) = members.get(&target).copied() {
            members.insert(name, v);
        }
    }
    Ok(members)
}

/// Lexically clean a member path (`./a/../b` → `b`).
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn open_member(r: &ImageRef, file: &Path, members: &BTreeMap<String, (u64, u64)>, name: &str) -> Result<(impl Read, u64)> {
    let (off, size) = *members
        .get(&normalize(name))
        .ok_or_else(|| err(r, format!("{} names {name:?}, which the archive does not hold", "manifest.json")))?;
    let mut f = File::open(file).map_err(|e| err(r, format!("{}: {e}", file.display())))?;
    f.seek(SeekFrom::Start(off)).map_err(|e| err(r, format!("{}: {e}", file.display())))?;
    Ok((f.take(size), size))
}

fn read_member(r: &ImageRef, file: &Path, members: &BTreeMap<String, (u64, u64)>, name: &str) -> Result<Vec<u8>> {
    let (mut rd, size) = open_member(r, file, members, name)?;
    if size > super::oci_layout::MAX_JSON_BLOB {
        return Err(err(r, format!("{name} is {size} bytes; refusing JSON members over {}", super::oci_layout::MAX_JSON_BLOB)));
    }
    let mut v = Vec::with_capacity(size as usize);
    rd.read_to_end(&mut v).map_err(|e| err(r, format!("reading {name}: {e}")))?;
    if v.len() as u64 != size {
        return Err(err(r, format!("{name} is truncated")));
    }
    Ok(v)
}

pub fn resolve(store: &Store, r: &ImageRef, file: &Path) -> Result<ResolvedImage> {
    let members = index_members(r, file)?;
    let mf = read_member(r, file, &members, "manifest.json")?;
    let entries: Vec<ArchiveManifest> = serde_json::from_slice(&mf).map_err(|e| err(r, format!("manifest.json: {e}")))?;

    // Pick the image: the pinned image ID, else the only one.
    let mut chosen = None;
    let mut offered = String::new();
    for m in &entries {
        let cfg = read_member(r, file, &members, &m.config)?;
        let id = Digest::of_bytes(&cfg);
        let tags = m.repo_tags.as_deref().unwrap_or_default();
        offered.push_str(&format!("\n  {id}{}", if tags.is_empty() { String::new() } else { format!(" ({})", tags.join(", ")) }));
        match &r.digest {
            Some(d) if d == &id => chosen = Some((m, cfg, id)),
            Some(_) => {}
            None if entries.len() == 1 => chosen = Some((m, cfg, id)),
            None => {}
        }
    }
    let (m, cfg_bytes, config_digest) = match (chosen, &r.digest) {
        (Some(c), _) => c,
        (None, Some(d)) => {
            return Err(Error::Pin {
                reference: r.text.clone(),
                message: format!(
                    "no image with ID {d} in {} (a docker-archive: pin is the image ID, the config digest); it holds:{offered}",
                    file.display()
                ),
            })
        }
        (None, None) => return Err(err(r, format!("the archive holds {} images; pin one by image ID (@sha256:…)", entries.len()))),
    };
    let config: serde_json::Value = serde_json::from_slice(&cfg_bytes).map_err(|e| err(r, format!("config: {e}")))?;
    let ids = diff_ids(&config, m.layers.len(), &r.text)?;
    store.put_bytes(&cfg_bytes)?;

    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for (i, (name, diff_id)) in m.layers.iter().zip(ids).enumerate() {
        let label = format!("{} #{} ({})", r.text, i + 1, name);
        let (mut rd, size) = open_member(r, file, &members, name)?;
        let mut magic = [0u8; 4];
        let head = rd.read(&mut magic).map_err(|e| err(r, format!("{name}: {e}")))?;
        let compressed = magic[..head].starts_with(&[0x1f, 0x8b]) || magic[..head].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        let whole = std::io::Cursor::new(magic[..head].to_vec()).chain(rd);
        // An uncompressed member must hash to its diff_id; a compressed one is checked
        // against the diff_id when it is decompressed.
        let expected = if compressed { None } else { Some(&diff_id) };
        let (digest, _) = store.put_reader(&label, expected, Some(size), whole)?;
        let media_type = if magic.starts_with(&[0x1f, 0x8b]) {
            super::MT_OCI_LAYER_GZIP
        } else if compressed {
            super::MT_OCI_LAYER_ZSTD
        } else {
            super::MT_OCI_LAYER
        };
        descs.push(serde_json::json!({"mediaType": media_type, "digest": digest.as_str(), "size": size}));
        layers.push(LayerBlob { digest, size, diff_id, media_type: media_type.into(), label });
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": super::MT_OCI_MANIFEST,
        "config": {"mediaType": super::MT_OCI_CONFIG, "digest": config_digest.as_str(), "size": cfg_bytes.len()},
        "layers": descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    store.add_to_index(&format!("sha256-{}", config_digest.hex()), super::MT_OCI_MANIFEST, &manifest_digest, manifest_bytes.len() as u64)?;
    Ok(ResolvedImage { reference: r.clone(), pin: config_digest, manifest_digest, config, layers })
}
