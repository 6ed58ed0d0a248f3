//! Signature quorum over containers "simple signing" signatures, the format StageX publishes.
//!
//! For image `stagex/<name>` with manifest digest `sha256:<hex>`, signatures are the files
//! `stagex/<name>@sha256=<hex>/signature-1`, `signature-2`, ... (read until the first missing
//! one) under a lookaside root: a directory, or an HTTPS base URL (plain HTTP only for loopback
//! hosts). Each is an inline-signed OpenPGP message (usually compressed, one-pass signature,
//! literal data, signature) whose literal data is JSON naming the image:
//!
//! - current: `{"critical":{"identity":{"docker-reference":"stagex/<name>:<tag>"},
//!   "image":{"docker-manifest-digest":"sha256:<hex>"},"type":"atomic container signature"},"optional":{}}`
//! - before mid-2025: a one-element array of `{"critical":{... "docker-manifest-digest":"<hex>"
//!   ...,"type":"pgp container image signature"},"optional":null}`, over the index digest.
//!
//! A signature counts when its OpenPGP signature verifies against a key (primary or signing
//! subkey) of the trusted keyring, that key is neither expired nor revoked, the signed digest
//! is the digest whose directory holds it, and the signed identity names the same repository
//! (`stagex/<name>`; the registry host is not compared: StageX publishes the same signed
//! digests on docker.io and quay.io, and mirrors serve them under other hosts). The quorum
//! counts **distinct primary keys**: one key signing twice counts once.
//!
//! A signature that does not count never vetoes the ones that do: anyone who can drop a file
//! into a signature mirror (an empty `signature-1`, a truncated one, a signature over another
//! digest) could otherwise block any image. Each one is reported (file, why) and sorted as
//! [`Problem::Bad`] (damaged, empty, truncated, not verifying against the trusted key that
//! issued it, over another digest or repository, revoked key), [`Problem::Expired`] or
//! [`Problem::Untrusted`]. With `strict` (`verify --strict`, `[policy] strict = true`) any
//! bad signature fails the check. Memory: a signature file is read whole up to 1 MiB, at
//! most 64 per digest; the signed payload is capped at 64 KiB.

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::source::registry::Repo;
use pgp::composed::{Deserializable, Message, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, PublicKeyTrait};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Signature files per digest read at most (`signature-1` .. `signature-64`).
const MAX_SIGNATURES: usize = 64;
/// A signature file larger than this is refused unread (real ones are under 2 KiB).
pub(crate) const MAX_SIGNATURE_BYTES: u64 = 1 << 20;

/// One trusted key: the primary key with its user ids and subkeys.
pub struct TrustedKey {
    pub key: SignedPublicKey,
    /// Primary key fingerprint, upper-case hex.
    pub fingerprint: String,
    /// The primary user id (the one whose self-signature says so; else the first), for messages.
    pub user_id: String,
}

/// The trusted keys: a file (armored or binary, one or many keys) or a directory of such files.
pub struct Keyring {
    pub path: PathBuf,
    pub keys: Vec<TrustedKey>,
}

impl Keyring {
    /// The trusted key whose primary key or a subkey has one of `ids` (issuer fingerprints or
    /// key ids, as a signature names them) as its fingerprint or fingerprint suffix.
    pub(crate) fn named_by(&self, ids: &[Vec<u8>]) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| {
            std::iter::once(k.key.primary_key.fingerprint().as_bytes().to_vec())
                .chain(k.key.public_subkeys.iter().map(|s| s.key.fingerprint().as_bytes().to_vec()))
                .any(|f| ids.iter().any(|id| f.ends_with(id)))
        })
    }

    pub fn load(path: &Path) -> Result<Keyring> {
        let mut files = Vec::new();
        if path.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(path).at(path)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
            names.sort();
            files = names;
        } else {
            files.push(path.to_path_buf());
        }
        let mut keys = Vec::new();
        for f in &files {
            let data = std::fs::read(f).at(f)?;
            for key in parse_keys(&data).map_err(|e| Error::other(format!("keyring {}: {e}", f.display())))? {
                key.verify().map_err(|e| {
                    Error::other(format!("keyring {}: key {:X} has a broken self-signature: {e}", f.display(), key.primary_key.fingerprint()))
                })?;
                let user_id = key
                    .details
                    .users
                    .iter()
                    .find(|u| u.is_primary())
                    .or_else(|| key.details.users.first())
                    .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
                    .unwrap_or_default();
                keys.push(TrustedKey { fingerprint: format!("{:X}", key.primary_key.fingerprint()), user_id, key });
            }
        }
        if keys.is_empty() {
            return Err(Error::other(format!("keyring {} holds no OpenPGP public key", path.display())));
        }
        Ok(Keyring { path: path.to_path_buf(), keys })
    }
}

/// Every public key in `data`: armored blocks (several may follow each other) or binary packets.
fn parse_keys(data: &[u8]) -> std::result::Result<Vec<SignedPublicKey>, String> {
    let mut out = Vec::new();
    let text = std::str::from_utf8(data).ok().filter(|t| t.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    if let Some(text) = text {
        const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            let end = rest[start..].find(END).ok_or("armor block without an END line")? + start + END.len();
            let (keys, _) = SignedPublicKey::from_armor_many(&rest.as_bytes()[start..end]).map_err(|e| e.to_string())?;
            for k in keys {
                out.push(k.map_err(|e| e.to_string())?);
            }
            rest = &rest[end..];
        }
    } else {
        for k in SignedPublicKey::from_bytes_many(data).map_err(|e| e.to_string())? {
            out.push(k.map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

/// Where signature files are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookaside {
    Dir(PathBuf),
    Url(String),
}

impl Lookaside {
    /// `https://...` (or `http://` for a loopback host) is a URL; anything else a directory,
    /// relative to `base`.
    pub fn parse(s: &str, base: &Path) -> std::result::Result<Lookaside, String> {
        if s.starts_with("https://") || s.starts_with("http://") {
            crate::reference::check_signature_url(s)?;
            return Ok(Lookaside::Url(s.trim_end_matches('/').to_string()));
        }
        if s.is_empty() {
            return Err("signatures: empty path".into());
        }
        Ok(Lookaside::Dir(base.join(s)))
    }

    pub(crate) fn display(&self) -> String {
        match self {
            Lookaside::Dir(d) => d.display().to_string(),
            Lookaside::Url(u) => u.clone(),
        }
    }

    /// The content of signature file `rel`, or `None` when there is none.
    pub(crate) fn read(&self, agent: &ureq::Agent, rel: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Lookaside::Dir(d) => {
                let p = d.join(rel);
                match std::fs::metadata(&p) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io(&p, e)),
                    Ok(m) if m.len() > MAX_SIGNATURE_BYTES => Err(Error::other(format!("{}: {} bytes is too large for a signature", p.display(), m.len()))),
                    Ok(_) => std::fs::read(&p).at(&p).map(Some),
                }
            }
            Lookaside::Url(u) => {
                let url = format!("{u}/{rel}");
                let mut resp = agent.get(&url).call().map_err(|e| Error::other(format!("GET {url}: {e}")))?;
                match resp.status().as_u16() {
                    200 => resp.body_mut().with_config().limit(MAX_SIGNATURE_BYTES).read_to_vec().map(Some).map_err(|e| Error::other(format!("GET {url}: {e}"))),
                    404 | 403 => Ok(None),
                    s => Err(Error::other(format!("GET {url}: HTTP {s}"))),
                }
            }
        }
    }
}

/// A signature that counts: who made it and where it was.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    pub fingerprint: String,
    pub user_id: String,
    pub file: String,
    pub digest: String,
    pub identity: String,
}

/// Why a signature does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    /// Empty, truncated or garbled, or a trusted key's signature that does not verify, names
    /// another digest or repository, or comes from a revoked key. Fails a strict check.
    Bad,
    /// By a trusted key (or subkey, or a signature) past its expiry: valid once, no longer
    /// counted. Not a failure even when strict (old images stay checkable).
    Expired,
    /// By a key outside the keyring (StageX directories hold signatures of every maintainer;
    /// a keyring may trust a subset). Never a failure.
    Untrusted,
}

/// A signature that does not count, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    pub file: String,
    pub reason: String,
    pub problem: Problem,
}

/// The outcome of checking one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub image: String,
    pub digests: Vec<String>,
    pub lookaside: String,
    pub quorum: usize,
    /// Any [`Problem::Bad`] signature fails the check.
    pub strict: bool,
    pub accepted: Vec<Signer>,
    pub rejected: Vec<Rejected>,
    /// Distinct primary key fingerprints among `accepted`.
    pub distinct_keys: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.distinct_keys.len() >= self.quorum && !(self.strict && self.any_bad())
    }

    fn any_bad(&self) -> bool {
        self.rejected.iter().any(|r| r.problem == Problem::Bad)
    }

    /// Human-readable lines: each accepted and rejected signature, then the verdict.
    pub fn render(&self) -> String {
        let mut s = format!("{} ({})\n", self.image, self.digests.join(", "));
        for a in &self.accepted {
            s += &format!("  good  {}  {}  {}\n", a.fingerprint, a.user_id, a.file);
        }
        for r in &self.rejected {
            let tag = match r.problem {
                Problem::Bad => "bad ",
                Problem::Expired => "old ",
                Problem::Untrusted => "skip",
            };
            s += &format!("  {tag}  {}: {}\n", r.file, r.reason);
        }
        s += &format!(
            "  {} of {} required distinct keys: {}\n",
            self.distinct_keys.len(),
            self.quorum,
            if self.ok() {
                "quorum holds"
            } else if self.distinct_keys.len() >= self.quorum {
                "REJECTED (a bad signature, --strict)"
            } else {
                "QUORUM NOT MET"
            }
        );
        s
    }

    /// The error a failed check stops a build with: the image, and each key or file and why.
    pub fn error(&self) -> Error {
        let mut why: Vec<String> = self.rejected.iter().map(|r| format!("{}: {}", r.file, r.reason)).collect();
        if self.strict && self.any_bad() && self.distinct_keys.len() >= self.quorum {
            why.insert(0, "strict: a bad signature fails the check even though the quorum is met".into());
        }
        let signers: Vec<String> = self.distinct_keys.clone();
        if self.accepted.len() > self.distinct_keys.len() {
            why.push(format!("{} good signatures but only {} distinct keys (a key signing twice counts once)", self.accepted.len(), self.distinct_keys.len()));
        }
        if self.accepted.is_empty() && self.rejected.is_empty() {
            why.push(format!("no signatures found under {}", self.lookaside));
        }
        Error::other(format!(
            "signature check failed for {} ({}): {} of {} required distinct trusted keys signed{}{}",
            self.image,
            self.digests.join(", "),
            self.distinct_keys.len(),
            self.quorum,
            if signers.is_empty() { String::new() } else { format!(" ({})", signers.join(", ")) },
            why.iter().map(|w| format!("\n  {w}")).collect::<String>()
        ))
    }
}

/// Check the signatures of image `name` (a repository, e.g. `stagex/core-busybox`) for each of
/// `digests` (its manifest digest, and the index digest it was pinned by, if any).
pub fn check(name: &str, digests: &[Digest], lookaside: &Lookaside, keyring: &Keyring, quorum: usize, strict: bool) -> Result<Report> {
    let repo = Repo::parse(name);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut digests: Vec<Digest> = digests.to_vec();
    digests.dedup();
    let mut report = Report {
        image: repo.path.clone(),
        digests: digests.iter().map(|d| d.to_string()).collect(),
        lookaside: lookaside.display(),
        quorum,
        strict,
        accepted: Vec::new(),
        rejected: Vec::new(),
        distinct_keys: Vec::new(),
    };
    for d in &digests {
        for n in 1..=MAX_SIGNATURES {
            let rel = format!("{}@sha256={}/signature-{n}", repo.path, d.hex());
            let Some(data) = lookaside.read(&agent, &rel)? else { break };
            match verify_one(&data, &repo, d, keyring, now) {
                Ok((k, identity)) => report.accepted.push(Signer {
                    fingerprint: k.fingerprint.clone(),
                    user_id: k.user_id.clone(),
                    file: rel,
                    digest: d.to_string(),
                    identity,
                }),
                Err((reason, problem)) => report.rejected.push(Rejected { file: rel, reason, problem }),
            }
        }
    }
    let distinct: BTreeSet<&str> = report.accepted.iter().map(|a| a.fingerprint.as_str()).collect();
    report.distinct_keys = distinct.into_iter().map(str::to_string).collect();
    Ok(report)
}

/// Verify one signature file for digest `d`; returns the trusted key and the signed identity.
fn verify_one<'k>(data: &[u8], repo: &Repo, d: &Digest, keyring: &'k Keyring, now: i64) -> std::result::Result<(&'k TrustedKey, String), (String, Problem)> {
    if data.is_empty() {
        return Err(("empty file".into(), Problem::Bad));
    }
    // The OpenPGP parser is given untrusted bytes: a panic in it must be a bad signature,
    // not a crash of the whole check.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify_inner(data, repo, d, keyring, now))) {
        Ok(r) => r,
        Err(_) => Err(("damaged: the OpenPGP parser gave up on it".into(), Problem::Bad)),
    }
}

/// `verify_one` without its panic guard, for the fuzz targets: verify one signature file's
/// bytes for digest `d` of repository `name`; the signing key's fingerprint, or why not.
pub fn verify_file(data: &[u8], name: &str, d: &Digest, keyring: &Keyring, now: i64) -> std::result::Result<String, (String, Problem)> {
    verify_inner(data, &Repo::parse(name), d, keyring, now).map(|(k, _)| k.fingerprint.clone())
}

fn verify_inner<'k>(data: &[u8], repo: &Repo, d: &Digest, keyring: &'k Keyring, now: i64) -> std::result::Result<(&'k TrustedKey, String), (String, Problem)> {
    let fatal = |m: String| (m, Problem::Bad);
    let msg = Message::from_bytes(data).map_err(|e| fatal(format!("damaged or truncated: not an OpenPGP message: {e}")))?;
    let mut msg = msg.decompress().map_err(|e| fatal(format!("garbled: cannot decompress the OpenPGP message: {e}")))?;
    if !msg.is_signed() {
        return Err(fatal("garbled: the OpenPGP message is not signed".into()));
    }
    let payload = msg.as_data_vec().map_err(|e| fatal(format!("garbled OpenPGP message: {e}")))?;
    if payload.len() > 64 << 10 {
        return Err(fatal("signed payload is implausibly large".into()));
    }

    // Which trusted key made it: the primary or a signing subkey of a keyring key.
    let mut found = None;
    'keys: for k in &keyring.keys {
        if let Ok(sig) = msg.verify(&k.key.primary_key) {
            found = Some((k, sig.clone(), None));
            break;
        }
        for sub in &k.key.public_subkeys {
            if let Ok(sig) = msg.verify(&sub.key) {
                found = Some((k, sig.clone(), Some(sub)));
                break 'keys;
            }
        }
    }
    let Some((k, sig, sub)) = found else {
        let (issuer, ids) = signature_issuer(&msg).unwrap_or_else(|| ("an unknown key".into(), Vec::new()));
        let trusted = keyring.named_by(&ids);
        return Err(match trusted {
            Some(k) => fatal(format!("signed by trusted key {} ({}), but the signature does not verify", k.fingerprint, k.user_id)),
            None => (format!("signed by {issuer}, which is not in the trusted keyring"), Problem::Untrusted),
        });
    };
    let who = format!("key {} ({})", k.fingerprint, k.user_id);

    // Key validity: revoked or expired keys do not count.
    if let Some((state, why)) = key_problem(k, sub, &sig, now) {
        return Err((format!("{who} {why}"), if state == KeyState::Expired { Problem::Expired } else { Problem::Bad }));
    }

    // The payload must name this digest and this repository.
    let (identity, signed_digest) = parse_payload(&payload).map_err(|e| fatal(format!("{who}: {e}")))?;
    let signed_digest_norm = if signed_digest.starts_with("sha256:") { signed_digest.clone() } else { format!("sha256:{signed_digest}") };
    if signed_digest_norm != d.as_str() {
        return Err(fatal(format!("{who} signed digest {signed_digest}, not {d}")));
    }
    let id_name = strip_tag(&identity);
    if Repo::parse(id_name).path != repo.path {
        return Err(fatal(format!("{who} signed identity {identity:?}, which is not {}", repo.path)));
    }
    Ok((k, identity))
}

/// The issuer a signature names (fingerprint, else key id), for messages about unknown keys.
fn signature_issuer(msg: &Message<'_>) -> Option<(String, Vec<Vec<u8>>)> {
    let sig = match msg {
        Message::SignedOnePass { reader, .. } => reader.signature()?.clone(),
        Message::Signed { reader, .. } => reader.signature().clone(),
        _ => return None,
    };
    let ((name, _), ids) = issuer_of(&sig);
    Some((name, ids))
}

/// How a signature names its issuer: a readable name and fingerprint (when it carries one),
/// and every issuer id (fingerprint and key id bytes) to match against the keyring.
pub(crate) fn issuer_of(sig: &Signature) -> ((String, Option<String>), Vec<Vec<u8>>) {
    let mut ids: Vec<Vec<u8>> = sig.issuer_fingerprint().iter().map(|f| f.as_bytes().to_vec()).collect();
    ids.extend(sig.issuer().iter().map(|id| id.as_ref().to_vec()));
    let name = match (sig.issuer_fingerprint().first(), sig.issuer().first()) {
        (Some(f), _) => (format!("key {f:X}"), Some(format!("{f:X}"))),
        (None, Some(id)) => (format!("key id {}", hex::encode_upper(id.as_ref())), None),
        (None, None) => ("an unnamed key".into(), None),
    };
    (name, ids)
}

/// `stagex/core-busybox:1.36@sha256:...` → `stagex/core-busybox`.
fn strip_tag(identity: &str) -> &str {
    let s = identity.split('@').next().unwrap_or(identity);
    match s.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => n,
        _ => s,
    }
}

/// The docker-reference and docker-manifest-digest of a payload of either generation.
pub fn parse_payload(payload: &[u8]) -> std::result::Result<(String, String), String> {
    let json: serde_json::Value = serde_json::from_slice(payload).map_err(|e| format!("signed payload is not JSON: {e}"))?;
    let obj = match &json {
        serde_json::Value::Array(a) if a.len() == 1 => &a[0],
        serde_json::Value::Object(_) => &json,
        _ => return Err("signed payload is neither a signature object nor a one-element array".into()),
    };
    let crit = &obj["critical"];
    let typ = crit["type"].as_str().unwrap_or("");
    if typ != "atomic container signature" && typ != "pgp container image signature" {
        return Err(format!("signed payload has unknown type {typ:?}"));
    }
    let identity = crit["identity"]["docker-reference"].as_str().ok_or("signed payload has no critical.identity.docker-reference")?;
    let digest = crit["image"]["docker-manifest-digest"].as_str().ok_or("signed payload has no critical.image.docker-manifest-digest")?;
    Ok((identity.to_string(), digest.to_string()))
}

/// `[policy]` in a build: every registry image of the box (layers, pallets, kernel) must
/// meet its quorum. Called after the inputs are resolved (so the platform manifest digest is
/// known) and before any layer is read or any output written. Images from `oci:`,
/// `docker-archive:` and `dir:` have no repository name to look signatures up by and are not
/// checked.
pub fn enforce(spec: &crate::spec::BoxSpec, images: &[crate::source::ResolvedImage]) -> Result<Vec<Report>> {
    use crate::reference::RefKind;
    let Some(policy) = &spec.policy else { return Ok(Vec::new()) };
    let lock = crate::spec::LockFile::load(&crate::spec::lock_path(&spec.path))?;
    let mut keyrings: std::collections::BTreeMap<PathBuf, Keyring> = Default::default();
    let mut reports = Vec::new();
    let mut seen = BTreeSet::new();
    // Resolved images first (manifest digest known), then references resolved elsewhere (kernel).
    let mut todo: Vec<(String, String, Vec<Digest>)> = Vec::new();
    for img in images {
        if let RefKind::Registry { name, .. } = &img.reference.kind {
            let mut d = vec![img.manifest_digest.clone()];
            d.extend(img.reference.digest.clone());
            todo.push((img.reference.text.clone(), name.clone(), d));
        }
    }
    for (r, _) in spec.image_refs() {
        if let RefKind::Registry { name, .. } = &r.kind {
            if let Some(d) = r.digest.clone().or_else(|| lock.as_ref().and_then(|l| l.get(&r.text))) {
                todo.push((r.text.clone(), name.clone(), vec![d]));
            }
        }
    }
    for (text, name, digests) in todo {
        if !seen.insert(text.clone()) {
            continue;
        }
        let p = policy.for_image(&name);
        if !keyrings.contains_key(&p.keyring) {
            keyrings.insert(p.keyring.clone(), Keyring::load(&p.keyring)?);
        }
        let la = Lookaside::parse(&p.signatures, &spec.dir).map_err(|m| policy.at.error(m))?;
        let rep = check(&name, &digests, &la, &keyrings[&p.keyring], p.quorum, p.strict)?;
        if !rep.ok() {
            return Err(rep.error());
        }
        // The quorum holds; signatures that did not count are still worth a look.
        for r in rep.rejected.iter().filter(|r| r.problem == Problem::Bad) {
            eprintln!("stagebox: warning: {}: {}: {} (not counted)", rep.image, r.file, r.reason);
        }
        reports.push(rep);
    }
    Ok(reports)
}

/// Why a trusted key cannot count now (see [`key_problem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyState {
    Revoked,
    Expired,
    /// A subkey without a valid signing binding.
    Bad,
}

/// Why key `k` (signing with `sub`, if a subkey) does not count at `now`, if it does not:
/// revoked, expired, a subkey without a valid signing binding, or an expired signature.
pub(crate) fn key_problem(k: &TrustedKey, sub: Option<&SignedPublicSubKey>, sig: &Signature, now: i64) -> Option<(KeyState, String)> {
    if !k.key.details.revocation_signatures.is_empty() {
        return Some((KeyState::Revoked, "is revoked".into()));
    }
    if let Some(exp) = k.key.expires_at() {
        if exp.timestamp() <= now {
            return Some((KeyState::Expired, format!("expired at {}", exp.to_rfc3339())));
        }
    }
    if let Some(sub) = sub {
        let fpr = sub.key.fingerprint();
        if sub.signatures.iter().any(|s| s.typ() == Some(SignatureType::SubkeyRevocation)) {
            return Some((KeyState::Revoked, format!("has its signing subkey {fpr:X} revoked")));
        }
        if sub.verify(&k.key.primary_key).is_err() {
            return Some((KeyState::Bad, format!("has no valid binding for subkey {fpr:X}")));
        }
        let latest = sub.signatures.iter().filter(|s| s.typ() == Some(SignatureType::SubkeyBinding)).max_by_key(|s| s.created().map(|c| c.timestamp()));
        if let Some(exp) = latest.and_then(|s| s.key_expiration_time()) {
            if exp.num_seconds() > 0 && sub.key.created_at().timestamp() + exp.num_seconds() <= now {
                return Some((KeyState::Expired, format!("has its signing subkey {fpr:X} expired")));
            }
        }
        if !latest.is_some_and(|s| s.key_flags().sign()) {
            return Some((KeyState::Bad, format!("signed with subkey {fpr:X}, which is not a signing subkey")));
        }
    }
    if let (Some(created), Some(exp)) = (sig.created(), sig.signature_expiration_time()) {
        if exp.num_seconds() > 0 && created.timestamp() + exp.num_seconds() <= now {
            return Some((KeyState::Expired, "made a signature that has itself expired".into()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_both_generations() {
        let new = br#"{"critical":{"identity":{"docker-reference":"stagex/core-busybox:1.36"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"atomic container signature"},"optional":{}}"#;
        assert_eq!(parse_payload(new).unwrap(), ("stagex/core-busybox:1.36".into(), "sha256:ab".into()));
        let old = br#"[{"critical":{"identity":{"docker-reference":"stagex/core-busybox"},"image":{"docker-manifest-digest":"ab"},"type":"pgp container image signature"},"optional":null}]"#;
        assert_eq!(parse_payload(old).unwrap(), ("stagex/core-busybox".into(), "ab".into()));
        assert!(parse_payload(br#"{"critical":{"type":"other"}}"#).is_err());
        assert!(parse_payload(b"[1,2]").is_err());
    }

    #[test]
    fn identities_lose_tag_and_digest() {
        assert_eq!(strip_tag("stagex/core-busybox:1.36"), "stagex/core-busybox");
        assert_eq!(strip_tag("localhost:5000/stagex/a"), "localhost:5000/stagex/a");
        assert_eq!(strip_tag("localhost:5000/stagex/a:t@sha256:00"), "localhost:5000/stagex/a");
    }

    #[test]
    fn lookaside_urls_need_https_except_loopback() {
        assert!(matches!(Lookaside::parse("https://sigs.stagex.tools/", Path::new("/")), Ok(Lookaside::Url(u)) if u == "https://sigs.stagex.tools"));
        assert!(Lookaside::parse("http://example.org/sigs", Path::new("/")).is_err());
        assert!(Lookaside::parse("http://127.0.0.1:8080/sigs", Path::new("/")).is_ok());
        assert_eq!(Lookaside::parse("sigs", Path::new("/b")).unwrap(), Lookaside::Dir("/b/sigs".into()));
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        let kr = Keyring { path: "k".into(), keys: Vec::new() };
        let repo = Repo::parse("stagex/a");
        let d = Digest::of_bytes(b"");
        for data in [&b""[..], b"\x00\x01\x02", b"-----BEGIN PGP MESSAGE-----\n\nxx\n", &[0xa3, 0x01, 0x00][..]] {
            assert!(verify_one(data, &repo, &d, &kr, 0).is_err());
        }
    }
}
