//! `stagebox lock`: resolve every image reference of a box to the digest a build pins, and
//! write `BOX.lock` beside the box file; and `build --locked`, which refuses a lock file that
//! is missing a reference or disagrees with a pinned one.
//!
//! StageX publishes its pins as `digests/<stage>.txt`, one `<sha256-hex> <stage>-<name>` a
//! line (the linux/amd64 *manifest* digest). `--import-digests FILE` takes those as the pins
//! of `stagex/<stage>-<name>` registry references, with no registry access.
//!
//! `stagebox lock --check` writes nothing: it resolves every reference again (a tag to what
//! it names today, a digest to the verified manifest it names) and reports each pin as
//! current, stale or missing; with `--import-digests` it compares the pins of `stagex/...`
//! references with a release's digest list instead, offline.

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::reference::{ImageRef, RefKind};
use crate::source::registry::Repo;
use crate::source::{self, SourceOptions, Store};
use crate::spec::{self, LockFile, LockedImage, Location};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Settings of `stagebox lock`.
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    pub cache: Option<PathBuf>,
    pub platform: Option<source::Platform>,
    pub offline: bool,
    /// StageX digest lists (`<hex> <stage>-<name>` lines) whose entries pin `stagex/...` refs.
    pub import_digests: Vec<PathBuf>,
}

pub fn lock(box_path: &Path, cache: Option<&Path>, platform: Option<source::Platform>) -> Result<LockFile> {
    lock_with(box_path, &LockOptions { cache: cache.map(Path::to_path_buf), platform, ..Default::default() })
}

pub fn lock_with(box_path: &Path, opts: &LockOptions) -> Result<LockFile> {
    let mut spec = spec::load_box(box_path)?;
    let sde = spec.source_date_epoch()?;
    let store = Store::open(&source::store::default_root(opts.cache.as_deref())?)?;
    let platform = source::Platform::for_box(opts.platform.as_ref(), &spec);
    spec.select_platform(&platform.to_string())?;
    let sopts = SourceOptions { platform, source_date_epoch: sde, offline: opts.offline };
    let mut imported = BTreeMap::new();
    for f in &opts.import_digests {
        imported.extend(read_digest_list(f)?);
    }
    let mut lock = LockFile { version: 1, images: Vec::new() };
    for (r, at) in spec.image_refs() {
        if matches!(r.kind, RefKind::Dir { .. }) || lock.images.iter().any(|i| i.reference == r.text) {
            continue;
        }
        let digest = match (stagex_name(&r).and_then(|n| imported.get(&n)), &r.digest) {
            (Some(d), None) => d.clone(),
            _ => {
                let img = source::resolve(&store, &r, &sopts).map_err(|e| at.locate(e))?;
                // Never pin an image that cannot run on the box's platform.
                source::check_platform(&img, &sopts.platform).map_err(|found| {
                    at.error(format!("{}: {found}, but the box builds for {} (the box's `platform`, or --platform); not pinned", r.text, sopts.platform))
                })?;
                img.pin
            }
        };
        lock.images.push(LockedImage { reference: r.text.clone(), digest: digest.to_string() });
    }
    crate::fsutil::write_atomic(&spec::lock_path(box_path), lock.to_toml().as_bytes())?;
    Ok(lock)
}

/// One reference as `lock --check` found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCheck {
    pub reference: String,
    /// The digest the box file or BOX.lock pins it to, if any.
    pub pinned: Option<Digest>,
    /// What the reference resolves to now (or what the imported digest list says), or why
    /// it could not be resolved.
    pub found: std::result::Result<Digest, String>,
}

impl PinCheck {
    /// `current`, `stale`, `unpinned` or `failed` (what [`PinCheck::line`] begins with).
    pub fn status(&self) -> &'static str {
        match (&self.pinned, &self.found) {
            (Some(p), Ok(f)) if p == f => "current",
            (Some(_), Ok(_)) => "stale",
            (None, Ok(_)) => "unpinned",
            (_, Err(_)) => "failed",
        }
    }

    /// `lock --check --json`: one object per reference (snake_case keys).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ref": self.reference,
            "status": self.status(),
            "pinned": self.pinned.as_ref().map(|d| d.to_string()),
            "resolves_to": self.found.as_ref().ok().map(|d| d.to_string()),
            "error": self.found.as_ref().err(),
        })
    }

    pub fn ok(&self) -> bool {
        matches!((&self.pinned, &self.found), (Some(p), Ok(f)) if p == f)
    }

    /// One line for the report: `ok <digest> <ref>`, or what is wrong.
    pub fn line(&self) -> String {
        match (&self.pinned, &self.found) {
            (Some(p), Ok(f)) if p == f => format!("ok       {p}  {}", self.reference),
            (Some(p), Ok(f)) => format!("STALE    {}: pinned to {p}, resolves to {f}", self.reference),
            (None, Ok(f)) => format!("UNPINNED {}: resolves to {f}; run `stagebox lock`", self.reference),
            (_, Err(e)) => format!("FAILED   {}: {e}", self.reference),
        }
    }
}

/// `stagebox lock --check`: every image reference of the box (layers, pallets, kernel,
/// bootloaders), its pin from the box file or BOX.lock, and what it resolves to now.
/// Writes nothing; a reference that cannot be resolved is reported, not fatal.
pub fn check(box_path: &Path, opts: &LockOptions) -> Result<Vec<PinCheck>> {
    let mut spec = spec::load_box(box_path)?;
    let sde = spec.source_date_epoch()?;
    let store = Store::open(&source::store::default_root(opts.cache.as_deref())?)?;
    let sopts = SourceOptions { platform: source::Platform::for_box(opts.platform.as_ref(), &spec), source_date_epoch: sde, offline: opts.offline };
    spec.select_platform(&sopts.platform.to_string())?;
    let lock = LockFile::load(&spec::lock_path(box_path))?;
    let mut imported = BTreeMap::new();
    for f in &opts.import_digests {
        imported.extend(read_digest_list(f)?);
    }
    let mut out: Vec<PinCheck> = Vec::new();
    for (r, _) in spec.image_refs() {
        if matches!(r.kind, RefKind::Dir { .. }) || out.iter().any(|c| c.reference == r.text) {
            continue;
        }
        let pinned = r.digest.clone().or_else(|| lock.as_ref().and_then(|l| l.get(&r.text)));
        let found = match stagex_name(&r).and_then(|n| imported.get(&n)) {
            Some(d) => Ok(d.clone()),
            None => {
                // A tag is checked for what it names today; a bare digest for being there
                // and hashing to itself.
                let has_tag = matches!(&r.kind, RefKind::Registry { tag: Some(_), .. } | RefKind::OciLayout { tag: Some(_), .. } | RefKind::OciArchive { tag: Some(_), .. });
                let probe = if has_tag { ImageRef { digest: None, ..r.clone() } } else { pinned.clone().map_or(r.clone(), |d| r.with_digest(d)) };
                match source::resolve(&store, &probe, &sopts) {
                    // An index digest pins the platform manifest it leads to.
                    Ok(img) if probe.digest.is_some() && probe.digest == pinned => Ok(pinned.clone().unwrap_or(img.pin)),
                    Ok(img) => Ok(img.pin),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        out.push(PinCheck { reference: r.text.clone(), pinned, found });
    }
    Ok(out)
}

/// `stagex/core-busybox:1.36` (on any registry) → `core-busybox`.
fn stagex_name(r: &ImageRef) -> Option<String> {
    let RefKind::Registry { name, .. } = &r.kind else { return None };
    Repo::parse(name).path.strip_prefix("stagex/").filter(|n| !n.contains('/')).map(str::to_string)
}

/// Parse a StageX digest list: `<64 hex> <stage>-<name>` lines; blank lines and `#` comments
/// are skipped; anything else is an error at its file:line:column.
pub fn read_digest_list(path: &Path) -> Result<BTreeMap<String, Digest>> {
    let text = std::fs::read_to_string(path).at(path)?;
    parse_digest_list(path, &text)
}

fn parse_digest_list(path: &Path, text: &str) -> Result<BTreeMap<String, Digest>> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let col = at + (line.len() - line.trim_start().len());
        let loc = || Location::at(path, text, col);
        let mut words = t.split_whitespace();
        let (Some(hex), Some(name), None) = (words.next(), words.next(), words.next()) else {
            return Err(loc().error(format!("expected `<sha256-hex> <stage>-<name>`, found {t:?}")));
        };
        let d = Digest::parse(&format!("sha256:{hex}")).map_err(|e| loc().error(e.to_string()))?;
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(loc().error(format!("{name:?} is not a StageX image name")));
        }
        out.insert(name.to_string(), d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digest_lists_parse_and_point_at_errors() {
        let text = format!("# comment\n{HEX} core-busybox\n\n{HEX}  user-linux-generic\n");
        let m = parse_digest_list(Path::new("core.txt"), &text).unwrap();
        assert_eq!(m["core-busybox"].hex(), HEX);
        assert_eq!(m.len(), 2);
        let e = parse_digest_list(Path::new("core.txt"), &format!("{HEX} a\n  xyz core-gcc\n")).unwrap_err();
        assert!(e.to_string().starts_with("core.txt:2:3:"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn stagex_names_on_any_registry() {
        let p = |s: &str| ImageRef::parse(s, Path::new("/")).unwrap();
        assert_eq!(stagex_name(&p("stagex/core-busybox:1.0")).as_deref(), Some("core-busybox"));
        assert_eq!(stagex_name(&p("quay.io/stagex/core-busybox")).as_deref(), Some("core-busybox"));
        assert_eq!(stagex_name(&p("docker://127.0.0.1:5000/stagex/user-eif_build:sx2026.03.0")).as_deref(), Some("user-eif_build"));
        assert_eq!(stagex_name(&p("busybox")), None);
        assert_eq!(stagex_name(&p("oci:x")), None);
    }
}
