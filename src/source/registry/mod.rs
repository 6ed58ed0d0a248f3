//! Registry sources: pull a platform manifest, its config and its layers from an OCI
//! distribution registry (`docker.io`, `quay.io`, `localhost:5000`, ...) into the store.
//!
//! Names are normalized the way Docker does it: a first component without `.` or `:` (and not
//! `localhost`) is a Docker Hub repository (`stagex/core-busybox` → `docker.io/stagex/core-busybox`,
//! `busybox` → `docker.io/library/busybox`). Manifests are fetched with every manifest and index
//! media type accepted (OCI and Docker), indexes are followed to the platform manifest, and
//! each blob is **streamed** into a partial file under the store's `tmp/`, then hashed and
//! moved in by [`Store::adopt`] only when digest and size match: a pull that dies mid-way
//! leaves no blob under a wrong name, and the next run resumes the partial file.
//!
//! Anything already in the store is taken from there (blobs are content-addressed), so a
//! pinned image that was pulled once builds with no network. With `offline`, the store is
//! the only source and every missing blob is listed.
//!
//! Authentication ([`auth`]): anonymous first; on a `401` the `WWW-Authenticate` challenge is
//! answered with the credentials docker and containers tools already stored. TLS ([`tls`]):
//! system, bundled and per-registry roots; HTTPS first for every host, plain HTTP only for
//! hosts named insecure. Transfers ([`transfer`]): redirects without credentials to other
//! hosts, retries, resumable blobs, several blobs at once.
//!
//! Mirrors: the registries config (`$STAGEBOX_REGISTRIES_CONF`, else
//! `~/.config/stagebox/registries.toml`) may list, per repository prefix, mirrors that are
//! tried in order before the origin — for digest-pinned references only (a digest makes any
//! mirror safe; a tag could be answered differently), as containers' `mirror-by-digest-only`:
//!
//! ```toml
//! insecure = ["registry.internal:5000"]     # may fall back to plain HTTP
//! [mirrors]
//! "docker.io/stagex" = ["quay.io/stagex"]
//! ```
//!
//! Why `ureq` and not `oci-client`: the rest of stagebox is synchronous and streams from
//! `Read` into the store; `oci-client` needs a tokio runtime, brings ~100 crates (hyper,
//! reqwest, tokio) into every build, and streams blobs into an `AsyncWrite`. The distribution
//! API we need (GET manifest, GET blob, the token dance) is a few small functions over a
//! blocking client with rustls.

use super::{diff_ids, LayerBlob, ResolvedImage, SourceOptions, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::source::reference::ImageRef;
use oci_spec::image::ImageManifest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use transfer::Client;

pub mod auth;
pub mod tls;
pub mod transfer;

pub use tls::{ENV_CERT_DIR, ENV_INSECURE};

/// Env: the registries config file (default `~/.config/stagebox/registries.toml`).
pub const ENV_REGISTRIES_CONF: &str = "STAGEBOX_REGISTRIES_CONF";

/// The user's registries config: insecure hosts and mirrors.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Hosts (`host[:port]`; without a port, every port) that may use plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Repository prefix (`docker.io/stagex`) → mirror prefixes, tried in order.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
}

impl RegistriesConfig {
    fn path() -> Option<PathBuf> {
        std::env::var_os(ENV_REGISTRIES_CONF)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| dirs::config_dir().map(|d| d.join("stagebox/registries.toml")))
    }

    /// Read the config (an absent file is an empty config; a bad one an error naming it).
    pub fn load() -> Result<RegistriesConfig> {
        let Some(p) = Self::path() else { return Ok(Self::default()) };
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(&p, e)),
        };
        toml::from_str(&text).map_err(|e| Error::other(format!("{}: {e}", p.display())))
    }

    /// Mirrors of `repo`, in order: each matching prefix replaced by its mirrors.
    pub fn mirrors_of(&self, repo: &Repo) -> Vec<Repo> {
        let full = repo.full_name();
        let mut out = Vec::new();
        for (prefix, list) in &self.mirrors {
            let prefix = prefix.trim_end_matches('/');
            let p = match prefix.split_once('/') {
                Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => prefix.to_string(),
                _ if prefix.contains('.') || prefix.contains(':') => prefix.to_string(),
                _ => format!("docker.io/{prefix}"),
            };
            let rest = match full.strip_prefix(p.as_str()) {
                Some(r) if r.is_empty() || r.starts_with('/') => r,
                _ => continue,
            };
            for m in list {
                let m = Repo::parse(&format!("{}{rest}", m.trim_end_matches('/')));
                if m != *repo && !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }
}

fn config() -> Result<&'static RegistriesConfig> {
    static CONFIG: OnceLock<std::result::Result<RegistriesConfig, String>> = OnceLock::new();
    CONFIG.get_or_init(|| RegistriesConfig::load().map_err(|e| e.to_string())).as_ref().map_err(|e| Error::other(e.clone()))
}

pub use crate::reference::Repo;

/// Registry API addresses of a repository (the type itself is `crate::reference`'s, so the
/// spec can name repositories without the registry client).
impl Repo {
    /// The host the API is served from (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        if self.host == "docker.io" { "registry-1.docker.io" } else { &self.host }
    }
}

fn err(r: &ImageRef, message: impl Into<String>) -> Error {
    Error::Resolve { reference: r.text.clone(), message: message.into() }
}

/// The store's `index.json` name recording which digest a tag pointed at when last pulled.
fn tag_name(repo: &Repo, tag: &str) -> String {
    format!("{}:{tag}", repo.full_name())
}

/// Look up a tag recorded by an earlier pull (for `--offline`).
fn cached_tag(store: &Store, name: &str) -> Option<Digest> {
    crate::source::oci_layout::tagged(&crate::source::oci_layout::read_index(store.root()).ok()?, name)
}

/// Pulls from one repository (the origin or a mirror), or (offline) records what is missing.
struct Puller<'a> {
    r: &'a ImageRef,
    store: &'a Store,
    repo: Repo,
    offline: bool,
    client: Option<Client>,
    missing: Vec<String>,
    /// Blobs not in the store yet: label, digest, size (fetched together, several at once).
    wanted: Vec<(String, Digest, u64)>,
}

impl Puller<'_> {
    fn client(&mut self) -> Result<&Client> {
        if self.client.is_none() {
            self.client = Some(Client::new(&self.repo, &config()?.insecure));
        }
        Ok(self.client.as_ref().expect("just set"))
    }

    /// A manifest or index by digest: from the store, else the registry (checked, then stored).
    fn manifest_by_digest(&mut self, d: &Digest, size: Option<u64>) -> Result<Option<Vec<u8>>> {
        if self.store.has(d) {
            return self.store.read_verified("manifest", d).map(Some);
        }
        if self.offline {
            self.missing.push(format!("manifest {d}"));
            return Ok(None);
        }
        let r = self.r;
        let full_name = self.repo.full_name();
        let client = self.client()?;
        let (data, _) = client.manifest(d.as_str()).map_err(|e| match e {
            Error::Pin { message, .. } => Error::Pin {
                reference: r.text.clone(),
                message: format!(
                    "the registry {full_name} has no manifest or index {d}: check the pinned digest ({message}){}",
                    offered_tags(client)
                ),
            },
            e => err(r, e.to_string()),
        })?;
        let found = Digest::of_bytes(&data);
        if &found != d {
            return Err(Error::DigestMismatch { what: format!("manifest of {} from {}", self.r.text, self.repo.full_name()), expected: d.to_string(), found: found.to_string() });
        }
        if let Some(s) = size.filter(|s| *s != data.len() as u64) {
            return Err(Error::SizeMismatch { what: format!("manifest {d} of {}", self.r.text), expected: s, found: data.len() as u64 });
        }
        self.store.put_bytes(&data)?;
        Ok(Some(data))
    }

    /// Note that blob `d` must be in the store (checked now if it is; fetched by `fetch`).
    fn blob(&mut self, what: &str, d: &Digest, size: u64) -> Result<()> {
        if self.store.has(d) {
            let have = std::fs::metadata(self.store.blob_path(d)).map(|m| m.len()).unwrap_or(u64::MAX);
            if have == size {
                return Ok(());
            }
            return Err(Error::SizeMismatch { what: format!("{what} in the store ({})", self.store.blob_path(d).display()), expected: size, found: have });
        }
        if self.offline {
            self.missing.push(format!("{what} {d} ({size} bytes)"));
            return Ok(());
        }
        if !self.wanted.iter().any(|(_, w, _)| w == d) {
            self.wanted.push((what.to_string(), d.clone(), size));
        }
        Ok(())
    }

    /// Fetch every wanted blob, several at once.
    fn fetch(&mut self) -> Result<()> {
        if self.wanted.is_empty() {
            return Ok(());
        }
        let (store, r, wanted) = (self.store, self.r, std::mem::take(&mut self.wanted));
        transfer::pull_blobs(self.client()?, store, &wanted).map_err(|e| err(r, e.to_string()))
    }

    fn offline_error(&self) -> Error {
        err(
            self.r,
            format!(
                "--offline: not in the store ({}):\n  {}\n  (run once without --offline to pull them)",
                self.store.root().display(),
                self.missing.join("\n  ")
            ),
        )
    }
}

/// "; its tags: a, b, …" when the repository lists any (at most 20 shown; `stagebox lock`
/// pins a tag to its digest).
fn offered_tags(client: &Client) -> String {
    match client.tags() {
        Some(t) if !t.is_empty() => {
            let more = if t.len() > 20 { format!(" and {} more", t.len() - 20) } else { String::new() };
            format!("; the repository has the tags {}{more} (`stagebox lock` pins a tag)", t.iter().take(20).cloned().collect::<Vec<_>>().join(", "))
        }
        _ => String::new(),
    }
}

/// Resolve the top-level digest of a reference: its pin, else its tag (online: asking the
/// registry, which also hands us the bytes; offline: the store's record of the last pull).
/// A pinned reference is tried on its mirrors first, in order, then on its own registry.
pub fn resolve(store: &Store, r: &ImageRef, name: &str, tag: Option<&str>, opts: &SourceOptions) -> Result<ResolvedImage> {
    let repo = Repo::parse(name);
    let mirrors = if r.digest.is_some() && !opts.offline { config()?.mirrors_of(&repo) } else { Vec::new() };
    let mut failed = Vec::new();
    for m in mirrors {
        match resolve_from(store, r, m.clone(), tag, opts) {
            Ok(i) => return Ok(i),
            Err(e) => failed.push(format!("mirror {}: {e}", m.full_name())),
        }
    }
    resolve_from(store, r, repo, tag, opts).map_err(|e| {
        if failed.is_empty() {
            e
        } else {
            err(r, format!("every source failed:\n  {}\n  origin: {e}", failed.join("\n  ")))
        }
    })
}

fn resolve_from(store: &Store, r: &ImageRef, repo: Repo, tag: Option<&str>, opts: &SourceOptions) -> Result<ResolvedImage> {
    let mut p = Puller { r, store, repo: repo.clone(), offline: opts.offline, client: None, missing: Vec::new(), wanted: Vec::new() };
    let tag = tag.unwrap_or("latest");

    let digest = match &r.digest {
        Some(d) => d.clone(),
        None if opts.offline => match cached_tag(store, &tag_name(&repo, tag)) {
            Some(d) => d,
            None => {
                p.missing.push(format!("tag {tag} (never pulled; pin a digest or run `stagebox lock` online)"));
                return Err(p.offline_error());
            }
        },
        None => {
            let (data, _) = p.client()?.manifest(tag).map_err(|e| match e {
                Error::Pin { message, .. } => Error::Pin {
                    reference: r.text.clone(),
                    message: format!("the registry {} has no tag {tag:?} ({message}){}", repo.full_name(), p.client.as_ref().map(offered_tags).unwrap_or_default()),
                },
                e => err(r, e.to_string()),
            })?;
            let d = store.put_bytes(&data)?;
            store.add_to_index(&tag_name(&repo, tag), &media_type_of(&data, super::MT_OCI_MANIFEST), &d, data.len() as u64)?;
            d
        }
    };
    let (manifest_digest, manifest_bytes) = super::follow_to_manifest(r, digest, None, &opts.platform, |d, size| {
        p.manifest_by_digest(d, size)?.ok_or_else(|| p.offline_error())
    })?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| err(r, format!("manifest {manifest_digest}: {e}")))?;

    let cfg = manifest.config();
    let cfg_digest = Digest::parse(cfg.digest().as_ref()).map_err(|e| err(r, e.to_string()))?;
    p.blob("config", &cfg_digest, cfg.size())?;
    let mut layers = Vec::new();
    for (i, l) in manifest.layers().iter().enumerate() {
        let d = Digest::parse(l.digest().as_ref()).map_err(|e| err(r, e.to_string()))?;
        let label = format!("{} #{} ({})", r.text, i + 1, d.short());
        p.blob(&format!("layer {}", i + 1), &d, l.size())?;
        layers.push((d, l, label));
    }
    if !p.missing.is_empty() {
        return Err(p.offline_error());
    }
    p.fetch()?;
    let config: serde_json::Value = serde_json::from_slice(&store.read_verified("config", &cfg_digest)?)
        .map_err(|e| err(r, format!("config {cfg_digest}: {e}")))?;
    let ids = diff_ids(&config, layers.len(), &r.text)?;
    let layers = layers
        .into_iter()
        .zip(ids)
        .map(|((digest, l, label), diff_id)| LayerBlob { digest, size: l.size(), diff_id, media_type: l.media_type().to_string(), label })
        .collect();
    store.add_to_index(
        &format!("sha256-{}", manifest_digest.hex()),
        &media_type_of(&manifest_bytes, super::MT_OCI_MANIFEST),
        &manifest_digest,
        manifest_bytes.len() as u64,
    )?;
    Ok(ResolvedImage { reference: r.clone(), pin: manifest_digest.clone(), manifest_digest, config, layers })
}

/// The `mediaType` a manifest or index declares, else `default`.
fn media_type_of(data: &[u8], default: &str) -> String {
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|j| {
            j["mediaType"].as_str().map(str::to_string).or_else(|| j.get("manifests").map(|_| super::MT_OCI_INDEX.to_string()))
        })
        .unwrap_or_else(|| default.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_docker() {
        assert_eq!(Repo::parse("stagex/core-busybox").full_name(), "docker.io/stagex/core-busybox");
        assert_eq!(Repo::parse("busybox").full_name(), "docker.io/library/busybox");
        assert_eq!(Repo::parse("docker.io/busybox").full_name(), "docker.io/library/busybox");
        assert_eq!(Repo::parse("index.docker.io/stagex/x").full_name(), "docker.io/stagex/x");
        assert_eq!(Repo::parse("quay.io/stagex/core-gcc").host, "quay.io");
        let r = Repo::parse("localhost:5000/stagex/core-busybox");
        assert_eq!((r.host.as_str(), r.path.as_str()), ("localhost:5000", "stagex/core-busybox"));
        assert_eq!(Repo::parse("docker://127.0.0.1:5000/a").path, "a");
        assert_eq!(Repo::parse("localhost/a/b").host, "localhost");
    }

    #[test]
    fn mirrors_replace_the_prefix_in_order() {
        let c: RegistriesConfig = toml::from_str("[mirrors]\n\"docker.io/stagex\" = [\"quay.io/stagex\", \"localhost:5000/sx/\"]\n").unwrap();
        let m = c.mirrors_of(&Repo::parse("stagex/core-busybox"));
        assert_eq!(m.iter().map(Repo::full_name).collect::<Vec<_>>(), ["quay.io/stagex/core-busybox", "localhost:5000/sx/core-busybox"]);
        assert!(c.mirrors_of(&Repo::parse("stagexx/core-busybox")).is_empty(), "prefixes match whole components");
        assert!(c.mirrors_of(&Repo::parse("quay.io/stagex/a")).is_empty());
    }
}
