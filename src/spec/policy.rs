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
//! [policy.outputs]                     # reproductions of this box's outputs (verify-build)
//! keyring = "keys/reproducers.asc"     # defaults to [policy]'s keyring
//! signatures = "https://example.org/reproductions"   # root of <box>/<version>/<FPR>.sig
//! quorum = 2
//! ```
//!
//! A `[policy]` that holds only `[policy.outputs]` checks no input images.

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
    outputs: Option<RawOutputPolicy>,
}

/// `[policy.outputs]`: the reproduction quorum of the box's outputs (`stagebox verify-build`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OutputPolicy")]
pub(crate) struct RawOutputPolicy {
    #[schemars(with = "Option<String>")]
    keyring: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    signatures: Option<Spanned<String>>,
    #[schemars(with = "Option<i64>")]
    quorum: Option<Spanned<i64>>,
}

/// `[policy.outputs]`, resolved: the reproduction quorum of this box's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPolicy {
    /// The reproducers' public keys: a file or a directory.
    pub keyring: PathBuf,
    /// A directory (absolute) or an `https://` URL: the root of `<box>/<version>/<FPR>.sig`.
    pub signatures: String,
    pub quorum: usize,
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

/// `[policy.outputs]`: how many distinct trusted reproducers must have signed a statement
/// attesting exactly this box's outputs (`stagebox verify-build --box`). Keyring and
/// signatures default to `[policy]`'s own.
pub(crate) fn load_output_policy(src: &Source, raw: &RawPolicy) -> Result<Option<OutputPolicy>> {
    let r = raw;
    let Some(o) = &r.outputs else { return Ok(None) };
    let at = src.loc(src.line_start("[policy.outputs]").or_else(|| src.line_start("[policy")).map(|i| i..i).unwrap_or(0..0));
    let or = o;
    let keyring = or.keyring.as_ref().or(r.keyring.as_ref()).ok_or_else(|| at.error("[policy.outputs] needs `keyring` (the reproducers' OpenPGP keys), here or in [policy]"))?;
    let sigs = or.signatures.as_ref().or(r.signatures.as_ref()).ok_or_else(|| at.error("[policy.outputs] needs `signatures` (a directory or https:// URL of reproducers' signatures), here or in [policy]"))?;
    let q = or.quorum.as_ref().ok_or_else(|| at.error("[policy.outputs] needs `quorum` (how many distinct trusted reproducers must attest the outputs)"))?;
    Ok(Some(OutputPolicy { keyring: src.dir().join(keyring.get_ref()), signatures: signatures(src, sigs)?, quorum: quorum(src, q)? }))
}

/// `[policy]` for input images; `None` when the table holds only `[policy.outputs]`.
/// Not `Spanned<RawPolicy>`: toml 0.8 cannot span an implicit table (a box file with only
/// `[policy.outputs]`), so `[policy]` is located by its header line.
pub(crate) fn load_policy(src: &Source, raw: &RawPolicy) -> Result<Option<PolicySpec>> {
    let at = src.loc(src.line_start("[policy]").or_else(|| src.line_start("[policy")).or_else(|| src.line_start("policy")).map(|i| i..i).unwrap_or(0..0));
    let r = raw;
    if r.outputs.is_some() && r.keyring.is_none() && r.signatures.is_none() && r.quorum.is_none() && r.images.is_empty() {
        return Ok(None);
    }
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
    Ok(Some(PolicySpec { default, images, at }))
}
