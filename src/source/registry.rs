//! Registry sources: pull a platform manifest, its config and its layers from an OCI
//! distribution registry (`docker.io`, `quay.io`, `localhost:5000`, ...) into the store.
//!
//! Names are normalized the way Docker does it: a first component without `.` or `:` (and not
//! `localhost`) is a Docker Hub repository (`stagex/core-busybox` → `docker.io/stagex/core-busybox`,
//! `busybox` → `docker.io/library/busybox`). Manifests are fetched with every manifest and index
//! media type accepted (OCI and Docker), indexes are followed to the platform manifest, and
//! each blob is **streamed** into [`Store::put_reader`] with its expected digest and size: the
//! store writes a temp file, hashes it and renames it only when it matches, so a pull that
//! dies mid-way leaves no blob under a wrong name and the next run fetches it again.
//!
//! Anything already in the store is taken from there (blobs are content-addressed), so a
//! pinned image that was pulled once builds with no network. With `offline`, the store is
//! the only source and every missing blob is listed.
//!
//! Authentication: anonymous first; on a `401` the `WWW-Authenticate` challenge is answered
//! (`Bearer`: a token from the realm, with credentials when there are some; `Basic`: the
//! credentials). Credentials come from `$STAGEBOX_REGISTRY_USER`/`$STAGEBOX_REGISTRY_PASSWORD`,
//! else `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json` / `~/.docker/config.json`.
//! Plain HTTP is used only for loopback registries (`localhost`, `127.0.0.1`, `[::1]`) and for
//! hosts listed in `$STAGEBOX_INSECURE_REGISTRIES` (comma separated); everything else is HTTPS.
//!
//! Why `ureq` and not `oci-client`: the rest of stagebox is synchronous and streams from
//! `Read` into the store; `oci-client` needs a tokio runtime, brings ~100 crates (hyper,
//! reqwest, tokio) into every build, and streams blobs into an `AsyncWrite`. The distribution
//! API we need (GET manifest, GET blob, the token dance) is a few small functions over a
//! blocking client with rustls.

use super::{diff_ids, LayerBlob, ResolvedImage, SourceOptions, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::ImageRef;
use base64::Engine as _;
use oci_spec::image::ImageManifest;
use std::io::Read;
use std::time::Duration;

/// What we accept for a manifest GET: both index kinds and both manifest kinds.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and indexes larger than this are refused (the distribution spec suggests 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;

pub use crate::reference::{Repo, ENV_INSECURE};

/// Registry API addresses of a repository.
impl Repo {
    /// The host the API is served from (Docker Hub's differs from its name).
    fn api_host(&self) -> &str {
        if self.host == "docker.io" { "registry-1.docker.io" } else { &self.host }
    }

    fn base_url(&self) -> String {
        format!("{}://{}/v2/{}", if self.plain_http() { "http" } else { "https" }, self.api_host(), self.path)
    }
}

fn err(r: &ImageRef, message: impl Into<String>) -> Error {
    Error::Resolve { reference: r.text.clone(), message: message.into() }
}

/// A logged-in (or anonymous) connection to one repository.
struct Client {
    agent: ureq::Agent,
    repo: Repo,
    base: String,
    creds: Option<(String, String)>,
    /// `Authorization` header value once a challenge was answered.
    auth: Option<String>,
}

impl Client {
    fn new(repo: &Repo) -> Client {
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("stagebox/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .max_redirects(10);
        if repo.is_loopback() {
            cfg = cfg.proxy(None);
        }
        Client { agent: cfg.build().into(), repo: repo.clone(), base: repo.base_url(), creds: credentials(&repo.host), auth: None }
    }

    /// GET `url`, answering one authentication challenge if the registry asks.
    fn get(&mut self, url: &str, accept: Option<&str>) -> Result<ureq::http::Response<ureq::Body>> {
        let send = |auth: Option<&str>| {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.call().map_err(|e| Error::other(format!("GET {url}: {e}")))
        };
        let resp = send(self.auth.as_deref())?;
        if resp.status() != 401 {
            return Ok(resp);
        }
        let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        self.auth = Some(self.answer(&challenge, url)?);
        send(self.auth.as_deref())
    }

    /// Turn a `WWW-Authenticate` challenge into an `Authorization` header value.
    fn answer(&self, challenge: &str, url: &str) -> Result<String> {
        let (scheme, params) = parse_challenge(challenge);
        let basic = self.creds.as_ref().map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                let realm = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v.clone()).ok_or_else(|| {
                    Error::other(format!("GET {url}: 401 with a Bearer challenge that names no realm: {challenge:?}"))
                })?;
                let realm_repo = Repo::parse(realm.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or(""));
                if !realm.starts_with("https://") && !(realm.starts_with("http://") && (realm_repo.is_loopback() || self.repo.plain_http())) {
                    return Err(Error::other(format!("GET {url}: refusing token realm {realm:?}: not https")));
                }
                let mut q = Vec::new();
                if let Some((_, s)) = params.iter().find(|(k, _)| k == "service") {
                    q.push(format!("service={}", urlencode(s)));
                }
                match params.iter().find(|(k, _)| k == "scope") {
                    Some((_, s)) => q.push(format!("scope={}", urlencode(s))),
                    None => q.push(format!("scope={}", urlencode(&format!("repository:{}:pull", self.repo.path)))),
                }
                let token_url = format!("{realm}{}{}", if realm.contains('?') { '&' } else { '?' }, q.join("&"));
                let mut req = self.agent.get(&token_url);
                if let Some(b) = &basic {
                    req = req.header("Authorization", b);
                }
                let mut resp = req.call().map_err(|e| Error::other(format!("token request {token_url}: {e}")))?;
                if resp.status() != 200 {
                    return Err(Error::other(format!(
                        "token request {token_url}: HTTP {}{}",
                        resp.status(),
                        if basic.is_none() { " (no credentials found; set $STAGEBOX_REGISTRY_USER and $STAGEBOX_REGISTRY_PASSWORD or log in with docker/skopeo)" } else { "" }
                    )));
                }
                let body = resp.body_mut().with_config().limit(1 << 20).read_to_vec().map_err(|e| Error::other(format!("token request {token_url}: {e}")))?;
                let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::other(format!("token response from {token_url}: {e}")))?;
                let token = json["token"].as_str().or_else(|| json["access_token"].as_str()).ok_or_else(|| Error::other(format!("token response from {token_url} holds no token")))?;
                Ok(format!("Bearer {token}"))
            }
            "basic" => basic.ok_or_else(|| {
                Error::other(format!(
                    "GET {url}: the registry wants a user name and password; set $STAGEBOX_REGISTRY_USER and $STAGEBOX_REGISTRY_PASSWORD or log in with docker/skopeo"
                ))
            }),
            _ => Err(Error::other(format!("GET {url}: 401 with an authentication challenge stagebox does not speak: {challenge:?}"))),
        }
    }

    /// Fetch a manifest or index by tag or digest; returns its bytes and media type.
    fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String)> {
        let url = format!("{}/manifests/{reference}", self.base);
        let mut resp = self.get(&url, Some(ACCEPT))?;
        if resp.status() != 200 {
            return Err(Error::other(format!("GET {url}: HTTP {}{}", resp.status(), status_hint(resp.status().as_u16()))));
        }
        let mt = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
        let data = resp.body_mut().with_config().limit(MAX_MANIFEST).read_to_vec().map_err(|e| Error::other(format!("GET {url}: {e}")))?;
        Ok((data, mt))
    }

    /// Stream blob `d` into the store.
    fn blob(&mut self, store: &Store, what: &str, d: &Digest, size: u64) -> Result<()> {
        let url = format!("{}/blobs/{d}", self.base);
        let resp = self.get(&url, None)?;
        if resp.status() != 200 {
            return Err(Error::other(format!("GET {url}: HTTP {}{}", resp.status(), status_hint(resp.status().as_u16()))));
        }
        // One byte past the size so an over-long body is caught as a size mismatch.
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader().take(size.saturating_add(1));
        store
            .put_reader(what, Some(d), Some(size), reader)
            .map_err(|e| Error::other(format!("pulling {what} from {url}: {e} (nothing was stored for it; run again to fetch it anew)")))?;
        Ok(())
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        404 => " (no such repository, tag or digest)",
        401 | 403 => " (access denied)",
        429 => " (rate limited; try again later or log in)",
        _ => "",
    }
}

/// Percent-encode a query value.
fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Split `Bearer realm="x",service="y"` into the scheme and its parameters.
fn parse_challenge(s: &str) -> (String, Vec<(String, String)>) {
    let s = s.trim();
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            params.push((key.trim().to_ascii_lowercase(), String::new()));
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        params.push((key.trim().to_ascii_lowercase(), value));
    }
    (scheme.to_string(), params)
}

/// Credentials for `host`: the environment, else a containers auth file, else Docker's config.
fn credentials(host: &str) -> Option<(String, String)> {
    if let (Ok(u), Ok(p)) = (std::env::var("STAGEBOX_REGISTRY_USER"), std::env::var("STAGEBOX_REGISTRY_PASSWORD")) {
        return Some((u, p));
    }
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(std::path::PathBuf::from(f));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => files.push(std::path::PathBuf::from(d).join("config.json")),
        None => files.extend(dirs::home_dir().map(|h| h.join(".docker").join("config.json"))),
    }
    let keys: Vec<&str> =
        if host == "docker.io" { vec!["docker.io", "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"] } else { vec![host] };
    for f in files {
        let Some(json) = std::fs::read(&f).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) else { continue };
        for k in &keys {
            let e = &json["auths"][*k];
            if let Some(a) = e["auth"].as_str() {
                let dec = base64::engine::general_purpose::STANDARD.decode(a.trim()).ok().and_then(|b| String::from_utf8(b).ok());
                if let Some((u, p)) = dec.as_deref().and_then(|s| s.split_once(':')) {
                    return Some((u.to_string(), p.to_string()));
                }
            }
            if let (Some(u), Some(p)) = (e["username"].as_str(), e["password"].as_str()) {
                return Some((u.to_string(), p.to_string()));
            }
        }
    }
    None
}

/// The store's `index.json` name recording which digest a tag pointed at when last pulled.
fn tag_name(repo: &Repo, tag: &str) -> String {
    format!("{}:{tag}", repo.full_name())
}

/// Look up a tag recorded by an earlier pull (for `--offline`).
fn cached_tag(store: &Store, name: &str) -> Option<Digest> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(store.root().join("index.json")).ok()?).ok()?;
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .and_then(|m| Digest::parse(m["digest"].as_str()?).ok())
}

/// Pulls blobs from the registry, or (offline) records what is missing.
struct Puller<'a> {
    r: &'a ImageRef,
    store: &'a Store,
    repo: Repo,
    offline: bool,
    client: Option<Client>,
    missing: Vec<String>,
}

impl Puller<'_> {
    fn client(&mut self) -> &mut Client {
        let repo = &self.repo;
        self.client.get_or_insert_with(|| Client::new(repo))
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
        let (data, _) = self.client().manifest(d.as_str()).map_err(|e| err(self.r, e.to_string()))?;
        let found = Digest::of_bytes(&data);
        if &found != d {
            return Err(Error::DigestMismatch { what: format!("manifest of {} from the registry", self.r.text), expected: d.to_string(), found: found.to_string() });
        }
        if let Some(s) = size.filter(|s| *s != data.len() as u64) {
            return Err(Error::SizeMismatch { what: format!("manifest {d} of {}", self.r.text), expected: s, found: data.len() as u64 });
        }
        self.store.put_bytes(&data)?;
        Ok(Some(data))
    }

    /// Make sure blob `d` is in the store.
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
        let (store, r) = (self.store, self.r);
        self.client().blob(store, what, d, size).map_err(|e| err(r, e.to_string()))
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

/// Resolve the top-level digest of a reference: its pin, else its tag (online: asking the
/// registry, which also hands us the bytes; offline: the store's record of the last pull).
pub fn resolve(store: &Store, r: &ImageRef, name: &str, tag: Option<&str>, opts: &SourceOptions) -> Result<ResolvedImage> {
    let repo = Repo::parse(name);
    let mut p = Puller { r, store, repo: repo.clone(), offline: opts.offline, client: None, missing: Vec::new() };
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
            let (data, _) = p.client().manifest(tag).map_err(|e| err(r, e.to_string()))?;
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
    fn plain_http_only_for_loopback() {
        assert!(Repo::parse("localhost:5000/a").plain_http());
        assert!(Repo::parse("127.0.0.1:5000/a").plain_http());
        assert!(!Repo::parse("quay.io/stagex/a").plain_http());
        assert!(!Repo::parse("stagex/a").plain_http());
        assert_eq!(Repo::parse("stagex/a").base_url(), "https://registry-1.docker.io/v2/stagex/a");
        assert_eq!(Repo::parse("127.0.0.1:5000/stagex/a").base_url(), "http://127.0.0.1:5000/v2/stagex/a");
    }

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:stagex/a:pull,push""#);
        assert_eq!(s, "Bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.docker.io/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.docker.io".into()));
        assert_eq!(p[2], ("scope".into(), "repository:stagex/a:pull,push".into()));
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!((s.as_str(), p[0].1.as_str()), ("Basic", "Registry Realm"));
        assert_eq!(urlencode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
