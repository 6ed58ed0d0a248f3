//! The box file's `[policy]` table: which keys to trust, where signatures are, and how many
//! distinct keys must have signed each registry image before a build uses it.
//!
//! ```toml
//! [policy]
//! keyring = "keys/stagex.asc"          # file (armored or binary, many keys) or a directory
//! signatures = "https://sigs.stagex.tools"   # or a lookaside directory (relative to the box file)
//! quorum = 2
//! strict = false                       # true: any bad signature fails, even with the quorum met
//! [policy.images."stagex/core-busybox"]
//! quorum = 3                           # keyring and signatures may be overridden too
//! ```

use super::{Location, Source};
use crate::error::Result;
use crate::reference::Repo;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use toml::Spanned;

/// Settings for one image (or the default): all resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePolicy {
    pub keyring: PathBuf,
    /// A directory (absolute) or an `https://` URL, as `source::signature::Lookaside` takes it.
    pub signatures: String,
    pub quorum: usize,
    /// Any bad signature (damaged, not verifying, wrong digest) fails the check.
    pub strict: bool,
}

/// `[policy]`, validated.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub default: ImagePolicy,
    /// Per-repository overrides, keyed by normalized repository path (`stagex/core-busybox`).
    pub images: BTreeMap<String, ImagePolicy>,
    pub at: Location,
}

impl PolicySpec {
    /// The policy for registry repository `name` (any spelling: `stagex/x`, `docker.io/stagex/x`).
    pub fn for_image(&self, name: &str) -> &ImagePolicy {
        self.images.get(&Repo::parse(name).path).unwrap_or(&self.default)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Policy")]
pub(crate) struct RawPolicy {
    #[schemars(with = "Option<String>")]
    keyring: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    signatures: Option<Spanned<String>>,
    #[schemars(with = "Option<i64>")]
    quorum: Option<Spanned<i64>>,
    strict: Option<bool>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawImagePolicy>")]
    images: BTreeMap<String, Spanned<RawImagePolicy>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ImagePolicy")]
pub(crate) struct RawImagePolicy {
    #[schemars(with = "Option<String>")]
    keyring: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    signatures: Option<Spanned<String>>,
    #[schemars(with = "Option<i64>")]
    quorum: Option<Spanned<i64>>,
    strict: Option<bool>,
}

fn quorum(src: &Source, q: &Spanned<i64>) -> Result<usize> {
    if *q.get_ref() < 1 {
        return Err(src.loc(q.span()).error("quorum must be at least 1"));
    }
    Ok(*q.get_ref() as usize)
}

fn signatures(src: &Source, s: &Spanned<String>) -> Result<String> {
    let v = s.get_ref();
    if v.is_empty() {
        return Err(src.loc(s.span()).error("signatures must name a directory or an https:// URL"));
    }
    if v.starts_with("http://") || v.starts_with("https://") {
        crate::reference::check_signature_url(v).map_err(|m| src.loc(s.span()).error(m))?;
        return Ok(v.clone());
    }
    Ok(src.dir().join(v).to_string_lossy().into_owned())
}

pub(crate) fn load_policy(src: &Source, raw: &Spanned<RawPolicy>) -> Result<PolicySpec> {
    let at = src.loc(raw.span());
    let r = raw.get_ref();
    let keyring = r.keyring.as_ref().ok_or_else(|| at.error("[policy] needs `keyring` (the trusted OpenPGP keys)"))?;
    let sigs = r.signatures.as_ref().ok_or_else(|| at.error("[policy] needs `signatures` (a lookaside directory or https:// URL)"))?;
    let default = ImagePolicy {
        keyring: src.dir().join(keyring.get_ref()),
        signatures: signatures(src, sigs)?,
        quorum: quorum(src, r.quorum.as_ref().ok_or_else(|| at.error("[policy] needs `quorum` (how many distinct trusted keys must sign each image)"))?)?,
        strict: r.strict.unwrap_or(false),
    };
    let mut images = BTreeMap::new();
    for (name, p) in &r.images {
        let pr = p.get_ref();
        let policy = ImagePolicy {
            keyring: pr.keyring.as_ref().map(|k| src.dir().join(k.get_ref())).unwrap_or_else(|| default.keyring.clone()),
            signatures: pr.signatures.as_ref().map(|s| signatures(src, s)).transpose()?.unwrap_or_else(|| default.signatures.clone()),
            quorum: pr.quorum.as_ref().map(|q| quorum(src, q)).transpose()?.unwrap_or(default.quorum),
            strict: pr.strict.unwrap_or(default.strict),
        };
        images.insert(Repo::parse(name).path, policy);
    }
    Ok(PolicySpec { default, images, at })
}
