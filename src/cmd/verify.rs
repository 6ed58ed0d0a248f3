//! `stagebox verify REF`: the signature quorum of one image, outside a build: a registry
//! image, or a local copy of one (`oci:DIR`, `oci-archive:FILE`, as carried into an air gap),
//! checked under the repository name it was signed as. The checking itself is
//! `source::signature`'s; this command resolves the reference and the options into a call of
//! [`check`].

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::reference::{ImageRef, RefKind};
use crate::source::signature::{check, Keyring, Lookaside, Report};
use std::path::PathBuf;

/// Settings of `stagebox verify`.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub keyring: PathBuf,
    pub signatures: String,
    pub quorum: usize,
    /// Any bad signature fails the check (see [`crate::source::signature::Problem::Bad`]).
    pub strict: bool,
    pub cache: Option<PathBuf>,
    pub platform: Option<crate::source::Platform>,
    pub offline: bool,
    /// For a local layout: the repository it was signed as (`stagex/core-busybox`); default:
    /// the one a lookaside directory holds signatures of this digest for.
    pub repository: Option<String>,
}

/// `stagebox verify REF`: check the signatures of a registry image. A pinned reference is
/// checked for its digest (and, when the store holds it as an index, the platform manifest
/// it points at) with no registry access; a tag is resolved first.
pub fn verify(text: &str, opts: &VerifyOptions) -> Result<Report> {
    let cwd = std::env::current_dir().at(".")?;
    let r = ImageRef::parse(text, &cwd).map_err(|m| Error::Usage(format!("{text}: {m}")))?;
    let local = matches!(r.kind, RefKind::OciLayout { .. } | RefKind::OciArchive { .. });
    if !local && !matches!(r.kind, RefKind::Registry { .. }) {
        return Err(Error::Usage(format!(
            "{text}: verify takes a registry reference (e.g. stagex/core-busybox@sha256:...) or a local copy of one (oci:DIR, oci-archive:FILE)"
        )));
    }
    if opts.quorum < 1 {
        return Err(Error::Usage("--quorum must be at least 1".into()));
    }
    let la = Lookaside::parse(&opts.signatures, &cwd).map_err(Error::Usage)?;
    let keyring = Keyring::load(&opts.keyring)?;
    let store = crate::source::Store::open(&crate::source::store::default_root(opts.cache.as_deref())?)?;
    let platform = opts.platform.clone().unwrap_or_default();
    if local {
        // A copy of a registry image: its manifest digest (and the digest it is pinned by)
        // is what the publisher signed, under the repository name it was signed as.
        let sopts = crate::source::SourceOptions { platform, source_date_epoch: 1, offline: true };
        let img = crate::source::resolve(&store, &r, &sopts)?;
        let mut digests = vec![img.manifest_digest.clone()];
        digests.extend(r.digest.clone().filter(|d| *d != img.manifest_digest));
        let name = match &opts.repository {
            Some(n) => n.clone(),
            None => signed_repository(&la, &digests).ok_or_else(|| {
                Error::Usage(format!(
                    "{text}: name the repository it was signed as with --repository (e.g. stagex/core-busybox); {} holds no signatures of {}",
                    la.display(),
                    digests.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" or ")
                ))
            })?,
        };
        return check(&name, &digests, &la, &keyring, opts.quorum, opts.strict);
    }
    let RefKind::Registry { name, .. } = &r.kind else { unreachable!("checked above") };
    let digests = match &r.digest {
        Some(d) => {
            let mut v = vec![d.clone()];
            let mut cur = d.clone();
            // Follow an index in the store down to the platform manifest (offline, cheap).
            for _ in 0..8 {
                let Ok(data) = store.read_verified("manifest", &cur) else { break };
                let Ok(idx) = serde_json::from_slice::<oci_spec::image::ImageIndex>(&data) else { break };
                let Ok(m) = crate::source::oci_layout::pick_platform(&r, &idx, &platform) else { break };
                let Ok(next) = Digest::parse(m.digest().as_ref()) else { break };
                v.push(next.clone());
                cur = next;
            }
            v
        }
        None => {
            let sopts = crate::source::SourceOptions { platform, source_date_epoch: 1, offline: opts.offline };
            vec![crate::source::resolve(&store, &r, &sopts)?.manifest_digest]
        }
    };
    check(name, &digests, &la, &keyring, opts.quorum, opts.strict)
}

/// The repository a lookaside directory holds signatures of one of `digests` for: the path of
/// its `REPO@sha256=HEX` directory (at most four levels down). None for a URL, or when there
/// is not exactly one.
fn signed_repository(la: &Lookaside, digests: &[Digest]) -> Option<String> {
    let Lookaside::Dir(root) = la else { return None };
    let suffixes: Vec<String> = digests.iter().map(|d| format!("@sha256={}", d.hex())).collect();
    let mut found = std::collections::BTreeSet::new();
    let mut todo = vec![(root.clone(), 0)];
    while let Some((dir, depth)) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let rel = p.strip_prefix(root).ok()?.to_string_lossy().into_owned();
            match suffixes.iter().find(|s| rel.ends_with(s.as_str())) {
                Some(s) => {
                    found.insert(rel[..rel.len() - s.len()].to_string());
                }
                None if depth < 4 => todo.push((p, depth + 1)),
                None => {}
            }
        }
    }
    (found.len() == 1).then(|| found.into_iter().next().expect("one"))
}
