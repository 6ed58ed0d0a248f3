//! `stagebox verify REF`: the signature quorum of one registry image, outside a build. The
//! checking itself is `source::signature`'s; this command resolves the reference and the
//! options into a call of [`check`].

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
}

/// `stagebox verify REF`: check the signatures of a registry image. A pinned reference is
/// checked for its digest (and, when the store holds it as an index, the platform manifest
/// it points at) with no registry access; a tag is resolved first.
pub fn verify(text: &str, opts: &VerifyOptions) -> Result<Report> {
    let cwd = std::env::current_dir().at(".")?;
    let r = ImageRef::parse(text, &cwd).map_err(|m| Error::Usage(format!("{text}: {m}")))?;
    let RefKind::Registry { name, .. } = &r.kind else {
        return Err(Error::Usage(format!("{text}: verify takes a registry reference (e.g. stagex/core-busybox@sha256:...)")));
    };
    if opts.quorum < 1 {
        return Err(Error::Usage("--quorum must be at least 1".into()));
    }
    let la = Lookaside::parse(&opts.signatures, &cwd).map_err(Error::Usage)?;
    let keyring = Keyring::load(&opts.keyring)?;
    let store = crate::source::Store::open(&crate::source::store::default_root(opts.cache.as_deref())?)?;
    let platform = opts.platform.clone().unwrap_or_default();
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
