//! The content-addressed local store: an OCI image layout under the user's cache directory.
//!
//! Every blob is written to a temp file in `blobs/sha256/`, hashed while written, checked
//! against the digest (and size) that names it, then renamed into place; a killed build
//! leaves a stray temp file at worst, never a blob under a wrong name. `index.json` lists the
//! manifests imported so `skopeo`/`umoci` can read the store as an ordinary layout.

use crate::digest::{Digest, HashWriter};
use super::oci_layout::REF_NAME;
use crate::error::{Error, IoContext, Result};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub const ENV_CACHE: &str = "STAGEBOX_CACHE";

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The store location: `--cache` flag, else `$STAGEBOX_CACHE`, else `<user cache dir>/stagebox`.
pub fn default_root(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENV_CACHE).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::cache_dir()
        .map(|d| d.join("stagebox"))
        .ok_or_else(|| Error::other(format!("no cache directory: set ${ENV_CACHE} or pass --cache DIR")))
}

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).at(&blobs)?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            crate::fsutil::write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            crate::fsutil::write_atomic(&index, br#"{"schemaVersion":2,"manifests":[]}"#)?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Remove blob `d` if its bytes no longer hash to `d` (a hardlinked source rewritten in
    /// place). Returns true when it was removed.
    pub fn evict_if_changed(&self, d: &Digest) -> bool {
        let p = self.blob_path(d);
        match Digest::of_file(&p) {
            Ok((found, _)) if &found != d => fs::remove_file(&p).is_ok(),
            _ => false,
        }
    }

    /// Stream `reader` into the store. With `expected`, the content must hash to it (and
    /// have `size` bytes when given); without, the computed digest names the blob.
    pub fn put_reader(
        &self,
        what: &str,
        expected: Option<&Digest>,
        size: Option<u64>,
        mut reader: impl Read,
    ) -> Result<(Digest, u64)> {
        let dir = self.root.join("blobs").join("sha256");
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir).at(&dir)?;
        let mut w = HashWriter::new(io::BufWriter::with_capacity(1 << 20, tmp));
        let mut reader = crate::progress::track(&format!("import {what}"), size, &mut reader);
        io::copy(&mut reader, &mut w).map_err(|e| Error::other(format!("reading {what}: {e}")))?;
        let (digest, n, buf) = w.finish_with_inner();
        let tmp = buf.into_inner().map_err(|e| Error::other(format!("writing {what} to the store: {}", e.error())))?;
        if let Some(exp) = expected {
            if &digest != exp {
                return Err(Error::DigestMismatch { what: what.into(), expected: exp.to_string(), found: digest.to_string() });
            }
        }
        if let Some(s) = size {
            if s != n {
                return Err(Error::SizeMismatch { what: what.into(), expected: s, found: n });
            }
        }
        let target = self.blob_path(&digest);
        if !target.exists() {
            tmp.as_file().sync_all().at(tmp.path())?;
            tmp.persist(&target).map_err(|e| Error::io(&target, e.error))?;
        }
        Ok((digest, n))
    }

    /// Bring a file into the store, checking digest and size. Skips the work when the blob
    /// is already there (its content is re-hashed whenever a layer is read). The file is
    /// hashed first and then hardlinked in when it is on the same file system (no second
    /// copy of every layer on disk), else copied through a temp file.
    pub fn put_file(&self, what: &str, expected: &Digest, size: Option<u64>, path: &Path) -> Result<()> {
        if self.has(expected) {
            let have = fs::metadata(self.blob_path(expected)).at(self.blob_path(expected))?.len();
            if size.is_none_or(|s| s == have) {
                return Ok(());
            }
        }
        let open = |p: &Path| fs::File::open(p).map_err(|e| Error::other(format!("{what}: cannot open blob {}: {e}", p.display())));
        let mut hw = HashWriter::new(io::sink());
        let mut file = crate::progress::track(&format!("check {what}"), size, open(path)?);
        io::copy(&mut file, &mut hw).map_err(|e| Error::other(format!("reading {what}: {e}")))?;
        let (digest, n) = hw.finish();
        if &digest != expected {
            return Err(Error::DigestMismatch { what: format!("{what} ({})", path.display()), expected: expected.to_string(), found: digest.to_string() });
        }
        if let Some(s) = size {
            if s != n {
                return Err(Error::SizeMismatch { what: what.into(), expected: s, found: n });
            }
        }
        let dir = self.root.join("blobs").join("sha256");
        let tmp = dir.join(format!(".tmp-link-{}-{}", std::process::id(), expected.hex()));
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(path, &tmp).is_ok() {
            let target = self.blob_path(expected);
            return fs::rename(&tmp, &target).at(&target);
        }
        self.put_reader(what, Some(expected), size, open(path)?)?;
        Ok(())
    }

    /// Where a download of blob `d` in progress is kept (`<store>/tmp/<hex>.partial`), so a
    /// pull that stops can resume; the directory is created.
    pub fn partial_path(&self, d: &Digest) -> Result<PathBuf> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).at(&dir)?;
        Ok(dir.join(format!("{}.partial", d.hex())))
    }

    /// Move a finished download at `path` (under this store) into place as blob `expected`,
    /// after checking its digest and size; a file that does not match is deleted.
    pub fn adopt(&self, what: &str, expected: &Digest, size: u64, path: &Path) -> Result<()> {
        let checked = (|| {
            let mut f = fs::File::open(path).at(path)?;
            let mut hw = HashWriter::new(io::sink());
            io::copy(&mut f, &mut hw).map_err(|e| Error::other(format!("reading {what} ({}): {e}", path.display())))?;
            let (digest, n) = hw.finish();
            if &digest != expected {
                return Err(Error::DigestMismatch { what: what.into(), expected: expected.to_string(), found: digest.to_string() });
            }
            if n != size {
                return Err(Error::SizeMismatch { what: what.into(), expected: size, found: n });
            }
            f.sync_all().at(path)
        })();
        if let Err(e) = checked {
            let _ = fs::remove_file(path);
            return Err(e);
        }
        let target = self.blob_path(expected);
        fs::rename(path, &target).at(&target)
    }

    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of_bytes(data);
        if !self.has(&d) {
            self.put_reader("blob", Some(&d), Some(data.len() as u64), data)?;
        }
        Ok(d)
    }

    /// Read a small blob (manifest, config) and check it against its digest.
    pub fn read_verified(&self, what: &str, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let len = fs::metadata(&p).at(&p)?.len();
        let max = super::oci_layout::MAX_JSON_BLOB;
        if len > max {
            return Err(Error::other(format!("{what} {d} in the store ({}) is {len} bytes; refusing JSON blobs over {max}", p.display())));
        }
        let data = fs::read(&p).at(&p)?;
        let found = Digest::of_bytes(&data);
        if &found != d {
            return Err(Error::DigestMismatch { what: format!("{what} in the store ({})", p.display()), expected: d.to_string(), found: found.to_string() });
        }
        Ok(data)
    }

    /// Record a manifest in `index.json` under `name` (replacing an older entry of that name).
    pub fn add_to_index(&self, name: &str, media_type: &str, d: &Digest, size: u64) -> Result<()> {
        // A missing or unreadable index starts over empty: the blobs are the store, the
        // index only names some of them.
        let mut list = super::oci_layout::read_index(&self.root).map(|i| i.manifests().clone()).unwrap_or_default();
        list.retain(|m| super::oci_layout::ref_name(m) != Some(name));
        let entry = serde_json::json!({
            "mediaType": media_type, "digest": d.as_str(), "size": size,
            "annotations": {(REF_NAME): name}
        });
        list.push(serde_json::from_value(entry).map_err(|e| Error::other(format!("store index.json entry {d}: {e}")))?);
        // Through a JSON value, so the keys come out sorted as they always have.
        let index = serde_json::json!({"schemaVersion": 2, "manifests": list});
        let path = self.root.join("index.json");
        let mut data = serde_json::to_vec(&index).expect("json");
        data.push(b'\n');
        crate::fsutil::write_atomic(&path, &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_to_index_replaces_a_name_and_writes_sorted_keys() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        s.add_to_index("x", "application/vnd.oci.image.manifest.v1+json", &a, 1).unwrap();
        s.add_to_index("y", "application/vnd.oci.image.manifest.v1+json", &a, 1).unwrap();
        s.add_to_index("x", "application/vnd.docker.distribution.manifest.v2+json", &b, 2).unwrap();
        let entry = |name: &str, mt: &str, d: &Digest, size: u64| {
            format!(r#"{{"annotations":{{"org.opencontainers.image.ref.name":"{name}"}},"digest":"{d}","mediaType":"{mt}","size":{size}}}"#)
        };
        let want = format!(
            "{{\"manifests\":[{},{}],\"schemaVersion\":2}}\n",
            entry("y", "application/vnd.oci.image.manifest.v1+json", &a, 1),
            entry("x", "application/vnd.docker.distribution.manifest.v2+json", &b, 2)
        );
        assert_eq!(std::fs::read_to_string(d.path().join("index.json")).unwrap(), want);
        assert_eq!(crate::source::oci_layout::tagged(&crate::source::oci_layout::read_index(d.path()).unwrap(), "x"), Some(b));
    }
}
