//! The HTTP side of a registry pull: one [`Client`] per repository that answers
//! authentication challenges, follows redirects itself (so `Authorization` goes only to the
//! registry's own host), retries what is worth retrying, and downloads blobs resumably.
//!
//! - Scheme: HTTPS always first; plain HTTP only for insecure hosts whose TLS attempt failed
//!   (see `tls`). A TLS failure otherwise ends with advice on how to trust the registry.
//! - Redirects (docker.io sends blobs to a CDN): at most 10, followed by hand; a request to any
//!   other scheme/host/port than the registry's carries no `Authorization`.
//! - Retries: connection failures, timeouts, dropped bodies and HTTP 500/502/503/504 are retried
//!   [`RETRIES`] times with doubling waits from [`BACKOFF`]. HTTP 429 is retried only when the
//!   registry's `Retry-After` is at most [`MAX_RETRY_AFTER`]; otherwise the error quotes it.
//! - Blobs: written to `<store>/tmp/<hex>.partial`; after a dropped connection the next request
//!   asks for the rest with `Range: bytes=N-` (a `200` instead of `206` starts over). The
//!   partial file survives a failed run, so the next run resumes too. The whole file is
//!   hashed at the end and moved into the store only when digest and size match.
//! - [`Client`] is `Sync`; `pull_blobs` fetches up to [`PARALLEL`] blobs at once.

use super::auth::{self, Creds};
use super::tls;
use super::Repo;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::source::Store;
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// What we accept for a manifest GET: both index kinds and both manifest kinds.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and indexes larger than this are refused (the distribution spec suggests 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;
/// Retries after a transient failure (so 1 + RETRIES attempts without progress).
pub const RETRIES: u32 = 4;
/// The first wait between attempts; doubled each time (0.5 + 1 + 2 + 4 s at most).
pub const BACKOFF: Duration = Duration::from_millis(500);
/// A 429's `Retry-After` up to this is waited out; a longer one fails with the message.
pub const MAX_RETRY_AFTER: u64 = 10;
/// Blobs fetched at once (skopeo's default is 6 per image; 4 spares small machines).
pub const PARALLEL: usize = 4;
const MAX_REDIRECTS: usize = 10;

/// One failed attempt: whether trying again may help.
enum Failure {
    /// Try again at once (an insecure host's step from HTTPS to HTTP).
    Again,
    Transient(String),
    Fatal(Error),
}

/// A logged-in (or anonymous) connection to one repository.
pub struct Client {
    agent: ureq::Agent,
    repo: Repo,
    insecure: bool,
    /// The registries config's insecure hosts (for the token realm's host).
    config_insecure: Vec<String>,
    /// `https` until an insecure host's TLS attempt fails.
    scheme: Mutex<&'static str>,
    creds: Option<Creds>,
    /// `Authorization` header value once a challenge was answered.
    auth: Mutex<Option<String>>,
    cert_dirs: Vec<PathBuf>,
}

fn is_tls(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "corrupt message", "alert"].iter().any(|k| m.contains(k))
}

fn retryable(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::Io(_) | ureq::Error::BodyStalled)
}

fn backoff(attempt: u32) {
    std::thread::sleep(BACKOFF * 2u32.saturating_pow(attempt.min(6)));
}

/// `scheme://authority` of an absolute URL.
fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    url[after..].find('/').map_or(url, |i| &url[..after + i])
}

/// Resolve a `Location` header against the URL it answered.
fn resolve_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        format!("{}//{rest}", &base[..base.find("://").map_or(0, |i| i + 1)])
    } else if loc.starts_with('/') {
        format!("{}{loc}", origin_of(base))
    } else {
        let path = base.split('?').next().unwrap_or(base);
        format!("{}/{loc}", &path[..path.rfind('/').unwrap_or(path.len())])
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        404 => " (no such repository, tag or digest)",
        401 | 403 => " (access denied: no credentials, or they do not grant pull)",
        _ => "",
    }
}

impl Client {
    pub fn new(repo: &Repo, config_insecure: &[String]) -> Client {
        let (roots, cert_dirs) = tls::roots_for(&[repo.host.as_str(), repo.api_host()]);
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("stagebox/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .max_redirects(0)
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).client_cert(tls::client_cert(&cert_dirs)).build());
        if repo.is_loopback() {
            cfg = cfg.proxy(None);
        }
        Client {
            agent: cfg.build().into(),
            repo: repo.clone(),
            insecure: tls::insecure(&repo.host, config_insecure),
            config_insecure: config_insecure.to_vec(),
            scheme: Mutex::new("https"),
            creds: auth::credentials(&repo.host, &repo.path),
            auth: Mutex::new(None),
            cert_dirs,
        }
    }

    fn base(&self) -> String {
        format!("{}://{}/v2/{}", self.scheme.lock().unwrap(), self.repo.api_host(), self.repo.path)
    }

    /// One GET, following redirects by hand; `Authorization` only to the registry itself.
    fn send(&self, url: &str, accept: Option<&str>, range: Option<u64>) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let home = origin_of(url).to_string();
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(r) = range {
                req = req.header("Range", format!("bytes={r}-"));
            }
            if origin_of(&url) == home {
                if let Some(a) = self.auth.lock().unwrap().clone() {
                    req = req.header("Authorization", a);
                }
            }
            let resp = req.call()?;
            let s = resp.status().as_u16();
            if matches!(s, 301 | 302 | 303 | 307 | 308) {
                if let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
                    url = resolve_location(&url, loc);
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(ureq::Error::TooManyRedirects)
    }

    /// GET `rel` (under `/v2/<repo>/`) with retries, one authentication answer and the HTTPS →
    /// HTTP step for insecure hosts. Returns the first response that is not worth retrying.
    fn get(&self, rel: &str, accept: Option<&str>, range: Option<u64>) -> Result<ureq::http::Response<ureq::Body>> {
        let mut attempt = 0;
        let mut answered = false;
        loop {
            let url = format!("{}/{rel}", self.base());
            match self.attempt(&url, accept, range, &mut answered) {
                Ok(r) => return Ok(r),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Again) => {}
                Err(Failure::Transient(m)) => {
                    if attempt >= RETRIES {
                        return Err(Error::other(format!("GET {url}: {m} (gave up after {} attempts)", attempt + 1)));
                    }
                    backoff(attempt);
                    attempt += 1;
                }
            }
        }
    }

    fn attempt(&self, url: &str, accept: Option<&str>, range: Option<u64>, answered: &mut bool) -> std::result::Result<ureq::http::Response<ureq::Body>, Failure> {
        let resp = match self.send(url, accept, range) {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                let https = *self.scheme.lock().unwrap() == "https";
                if https && self.insecure {
                    // An insecure host: HTTPS did not work, plain HTTP may.
                    *self.scheme.lock().unwrap() = "http";
                    return Err(Failure::Again);
                }
                if https && is_tls(&msg) {
                    return Err(Failure::Fatal(Error::other(format!("GET {url}: {msg}\n  {}", tls::advice(&self.repo.host, &self.cert_dirs)))));
                }
                if retryable(&e) {
                    return Err(Failure::Transient(msg));
                }
                return Err(Failure::Fatal(Error::other(format!("GET {url}: {msg}"))));
            }
        };
        let status = resp.status().as_u16();
        match status {
            401 if !*answered => {
                *answered = true;
                let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let a = self.answer(&challenge, url).map_err(Failure::Fatal)?;
                *self.auth.lock().unwrap() = Some(a);
                self.attempt(url, accept, range, answered)
            }
            429 => {
                let after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string());
                let secs = after.as_deref().and_then(|s| s.parse::<u64>().ok());
                match secs {
                    Some(s) if s <= MAX_RETRY_AFTER => {
                        std::thread::sleep(Duration::from_secs(s));
                        Err(Failure::Transient(format!("HTTP 429 Too Many Requests (Retry-After: {s})")))
                    }
                    _ => Err(Failure::Fatal(Error::other(format!(
                        "GET {url}: HTTP 429 Too Many Requests: {} is rate limiting pulls; {}. Log in (docker login / skopeo login) for a higher limit, or list a mirror in the registries config",
                        self.repo.host,
                        match after {
                            Some(a) => format!("it asks to retry after {a}{}", if secs.is_some() { " seconds" } else { "" }),
                            None => "it gave no Retry-After".into(),
                        }
                    )))),
                }
            }
            500 | 502 | 503 | 504 => Err(Failure::Transient(format!("HTTP {status}"))),
            400 if *self.scheme.lock().unwrap() == "http" && self.insecure => Err(Failure::Fatal(Error::other(format!(
                "GET {url}: HTTP 400 over plain HTTP (the registry probably speaks TLS, which failed first)\n  {}",
                tls::advice(&self.repo.host, &self.cert_dirs)
            )))),
            _ => Ok(resp),
        }
    }

    /// Turn a `WWW-Authenticate` challenge into an `Authorization` header value.
    fn answer(&self, challenge: &str, url: &str) -> Result<String> {
        let (scheme, params) = auth::parse_challenge(challenge);
        let basic = self.creds.as_ref().map(Creds::basic_header);
        let none_found = "no credentials found: log in with `docker login` or `skopeo login`, or set $REGISTRY_AUTH_FILE";
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                let realm = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v.clone()).ok_or_else(|| {
                    Error::other(format!("GET {url}: 401 with a Bearer challenge that names no realm: {challenge:?}"))
                })?;
                let realm_host = Repo::parse(realm.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("")).host;
                if !realm.starts_with("https://") && !(realm.starts_with("http://") && (self.insecure || tls::insecure(&realm_host, &self.config_insecure))) {
                    return Err(Error::other(format!("GET {url}: refusing token realm {realm:?}: not https (name it with --insecure-registry to allow)")));
                }
                let mut q = Vec::new();
                if let Some((_, s)) = params.iter().find(|(k, _)| k == "service") {
                    q.push(format!("service={}", auth::urlencode(s)));
                }
                match params.iter().find(|(k, _)| k == "scope") {
                    Some((_, s)) => q.push(format!("scope={}", auth::urlencode(s))),
                    None => q.push(format!("scope={}", auth::urlencode(&format!("repository:{}:pull", self.repo.path)))),
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
                        match &self.creds {
                            None => format!(" ({none_found})"),
                            Some(c) => format!(" (as user {:?}, credentials from {})", c.user, c.origin),
                        }
                    )));
                }
                let body = resp.body_mut().with_config().limit(1 << 20).read_to_vec().map_err(|e| Error::other(format!("token request {token_url}: {e}")))?;
                let token = auth::token_from_response(&body).map_err(|e| Error::other(format!("token response from {token_url}: {e}")))?;
                Ok(format!("Bearer {token}"))
            }
            "basic" => basic.ok_or_else(|| Error::other(format!("GET {url}: the registry wants a user name and password; {none_found}"))),
            _ => Err(Error::other(format!("GET {url}: 401 with an authentication challenge stagebox does not speak: {challenge:?}"))),
        }
    }

    fn status_error(&self, url: &str, status: u16) -> Error {
        let creds = match (&self.creds, status) {
            (Some(c), 401 | 403) => format!(" (as user {:?}, credentials from {})", c.user, c.origin),
            _ => String::new(),
        };
        Error::other(format!("GET {url}: HTTP {status}{}{creds}", status_hint(status)))
    }

    /// Fetch a manifest or index by tag or digest; returns its bytes and media type.
    pub fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String)> {
        let rel = format!("manifests/{reference}");
        let mut resp = self.get(&rel, Some(ACCEPT), None)?;
        let url = format!("{}/{rel}", self.base());
        if resp.status() == 404 {
            // The reference names nothing there: the box file's mistake, not the build's.
            return Err(Error::Pin { reference: reference.to_string(), message: self.status_error(&url, 404).to_string() });
        }
        if resp.status() != 200 {
            return Err(self.status_error(&url, resp.status().as_u16()));
        }
        let mt = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
        let data = resp.body_mut().with_config().limit(MAX_MANIFEST).read_to_vec().map_err(|e| Error::other(format!("GET {url}: {e}")))?;
        Ok((data, mt))
    }

    /// The repository's tags (`GET tags/list`), for messages about a reference it does not
    /// hold; None when the registry does not say.
    pub fn tags(&self) -> Option<Vec<String>> {
        let mut resp = self.get("tags/list", Some("application/json"), None).ok()?;
        if resp.status() != 200 {
            return None;
        }
        let data = resp.body_mut().with_config().limit(MAX_MANIFEST).read_to_vec().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
        Some(v["tags"].as_array()?.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
    }

    /// Download blob `d` (`size` bytes) into the store, resuming a partial file.
    pub fn blob(&self, store: &Store, what: &str, d: &Digest, size: u64) -> Result<()> {
        let part = store.partial_path(d)?;
        // One writer per partial file: two builds on one store (or two images sharing a layer)
        // would otherwise append to the same file, and a writer still holding it open after
        // the other moved it into the store would corrupt the stored blob. The lock is on a
        // file of its own so it outlives the partial file's rename.
        let lock_path = part.with_extension("lock");
        let _lock = lock_exclusive(&lock_path)?;
        if store.has(d) {
            // Another process or thread finished it while we waited.
            return Ok(());
        }
        let rel = format!("blobs/{d}");
        let mut failures = 0;
        loop {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&part).map_err(|e| Error::io(&part, e))?;
            let mut have = file.metadata().map_err(|e| Error::io(&part, e))?.len();
            if have > size {
                file.set_len(0).map_err(|e| Error::io(&part, e))?;
                have = 0;
            }
            if have == size {
                break;
            }
            let resp = self.get(&rel, None, (have > 0).then_some(have)).map_err(|e| {
                if have == 0 {
                    let _ = std::fs::remove_file(&part);
                }
                Error::other(format!("pulling {what}: {e} ({have} of {size} bytes kept in {}; run again to resume)", part.display()))
            })?;
            let url = format!("{}/{rel}", self.base());
            match resp.status().as_u16() {
                206 => {
                    let start = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).and_then(|v| {
                        v.strip_prefix("bytes ")?.split('-').next()?.trim().parse::<u64>().ok()
                    });
                    if start != Some(have) {
                        file.set_len(0).map_err(|e| Error::io(&part, e))?;
                        continue;
                    }
                }
                200 => {
                    if have > 0 {
                        file.set_len(0).map_err(|e| Error::io(&part, e))?;
                        have = 0;
                    }
                }
                // The partial file is not a prefix the registry recognizes: start over.
                416 if have > 0 => {
                    file.set_len(0).map_err(|e| Error::io(&part, e))?;
                    continue;
                }
                s => return Err(self.status_error(&url, s)),
            }
            file.seek(std::io::SeekFrom::End(0)).map_err(|e| Error::io(&part, e))?;
            let remaining = size - have;
            // One byte past the size so an over-long body is caught.
            let mut body = std::io::Read::take(resp.into_body().into_with_config().limit(u64::MAX).reader(), remaining + 1);
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let copied = std::io::copy(&mut body, &mut w);
            w.flush().map_err(|e| Error::io(&part, e))?;
            let now = std::fs::metadata(&part).map_err(|e| Error::io(&part, e))?.len();
            let problem = match copied {
                Ok(_) if now > size => {
                    let _ = std::fs::remove_file(&part);
                    return Err(Error::SizeMismatch { what: format!("{what} from {url}"), expected: size, found: now });
                }
                Ok(_) if now == size => break,
                Ok(_) => "the connection closed early".to_string(),
                Err(e) => e.to_string(),
            };
            if now > have {
                failures = 0;
            } else {
                failures += 1;
            }
            if failures > RETRIES {
                return Err(Error::other(format!(
                    "pulling {what} from {url}: {problem} ({now} of {size} bytes kept in {}; run again to resume)",
                    part.display()
                )));
            }
            backoff(failures);
        }
        store.adopt(what, d, size, &part).map_err(|e| Error::other(format!("pulling {what}: {e} (the download was discarded; run again to fetch it anew)")))
    }
}

/// Open `path` (created if absent) and take an exclusive `flock` on it, waiting for any other
/// holder; the lock is released when the returned file is dropped.
fn lock_exclusive(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(|e| Error::io(path, e))?;
    loop {
        // SAFETY: flock on a file descriptor we own for the duration of the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io(path, e));
        }
    }
}

/// Download `blobs` (label, digest, size) with up to [`PARALLEL`] at once; after every
/// download has ended, every failure is reported (in list order).
pub fn pull_blobs(client: &Client, store: &Store, blobs: &[(String, Digest, u64)]) -> Result<()> {
    use crate::source::{for_each_parallel, OnError};
    let failed = for_each_parallel(blobs, PARALLEL, OnError::Continue, |(what, d, size)| client.blob(store, what, d, *size));
    let mut errors: Vec<Error> = failed.into_iter().map(|(_, e)| e).collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => Err(Error::other(format!("{n} blobs failed:\n  {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  ")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve() {
        assert_eq!(resolve_location("https://r.io/v2/a/blobs/x", "https://cdn.io/b?s=1"), "https://cdn.io/b?s=1");
        assert_eq!(resolve_location("https://r.io/v2/a/blobs/x", "/other/y"), "https://r.io/other/y");
        assert_eq!(resolve_location("https://r.io/v2/a/blobs/x", "//cdn.io/z"), "https://cdn.io/z");
        assert_eq!(resolve_location("https://r.io/v2/a/blobs/x", "y"), "https://r.io/v2/a/blobs/y");
        assert_eq!(origin_of("http://127.0.0.1:5000/v2/x"), "http://127.0.0.1:5000");
        assert_ne!(origin_of("http://127.0.0.1:5000/v2/x"), origin_of("http://127.0.0.1:5001/v2/x"));
    }
}
