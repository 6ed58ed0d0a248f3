//! `BOX.lock`: every image reference of a box pinned to a digest.
//!
//! TOML, one `[[image]]` per reference, keyed by the reference exactly as written and the
//! file it was written in. Written by `stagebox lock`; read by `build`.

use super::Source;
use crate::digest::Digest;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub version: u32,
    #[serde(default, rename = "image")]
    pub images: Vec<LockedImage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: String,
}

/// `demo.toml` → `demo.lock`.
pub fn lock_path(box_path: &Path) -> PathBuf {
    box_path.with_extension("lock")
}

/// Apply the lock file to an unpinned reference, or refuse it with its location.
pub fn pin(r: &crate::reference::ImageRef, at: &super::Location, lock: Option<&LockFile>, lock_path: &Path) -> Result<crate::reference::ImageRef> {
    if r.is_pinned() {
        return Ok(r.clone());
    }
    match lock.and_then(|l| l.get(&r.text)) {
        Some(d) => Ok(r.with_digest(d)),
        None => Err(at.error(format!(
            "image {:?} is not pinned: add @sha256:<digest>, or run `stagebox lock` to pin it in {}",
            r.text,
            lock_path.display()
        ))),
    }
}

/// A resolve error of `image` (as the box wrote it) at `at`: a wrong pin ([`crate::error::Error::Pin`])
/// becomes an error at the reference, saying when the pin came from the lock file.
pub fn locate_pin(image: &crate::reference::ImageRef, at: &super::Location, lock_path: &Path, e: crate::Error) -> crate::Error {
    match e {
        crate::Error::Pin { reference, message } if !image.is_pinned() => at.error(format!(
            "{reference}: {message}\n(the digest is the pin in {}; `stagebox lock` renews it)",
            lock_path.display()
        )),
        e => at.locate(e),
    }
}

impl LockFile {
    pub fn load(path: &Path) -> Result<Option<Self>> {
        if !path.exists() {
            return Ok(None);
        }
        let src = Source::read(path)?;
        let lock: LockFile = src.parse()?;
        if lock.version != 1 {
            let at = src.line_start("version").unwrap_or(0);
            return Err(src.loc(at..at).error(format!("unsupported lock file version {}", lock.version)));
        }
        for i in &lock.images {
            let at = src.text.find(&i.digest).unwrap_or(0);
            Digest::parse(&i.digest).map_err(|e| src.loc(at..at).error(e.to_string()))?;
        }
        Ok(Some(lock))
    }

    pub fn get(&self, reference: &str) -> Option<Digest> {
        self.images.iter().find(|i| i.reference == reference).and_then(|i| Digest::parse(&i.digest).ok())
    }

    pub fn to_toml(&self) -> String {
        let mut s = String::from("# Written by `stagebox lock`. Every image reference of the box, pinned.\n");
        s.push_str(&toml::to_string(self).expect("lock file serializes"));
        s
    }
}
