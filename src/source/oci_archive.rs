//! `oci-archive:FILE[:TAG][@sha256:HEX]` sources: an OCI image layout stored as a tar file,
//! as `skopeo copy … oci-archive:`, `podman save --format oci-archive` and
//! `docker buildx build --output type=oci` write it.
//!
//! The archive is read in place: its tar headers are walked once (seeking over the data) into
//! a map of member name → (offset, size), and every file of the layout is then read straight
//! from that byte range (a hard or symbolic link member reads as its target's range). Nothing
//! is unpacked to disk. Resolution, digest and size checks are
//! [`super::oci_layout`]'s, so an archive gives the same errors as the layout it holds; a
//! member whose data runs past the end of the file (a truncated archive) is refused when the
//! archive is indexed.

use super::oci_layout::{self, LayoutFiles};
use super::{ResolvedImage, SourceOptions, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::ImageRef;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The regular-file members of an archive: normalized name → (data offset, size).
pub(crate) struct ArchiveFiles {
    file: PathBuf,
    members: BTreeMap<String, (u64, u64)>,
}

/// Lexically clean a member path (`./a//b` → `a/b`); `None` for paths that climb out (`..`).
fn normalize(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

impl ArchiveFiles {
    /// Walk the archive's headers once. A member whose data does not fit in the file, a tar
    /// that cannot be read, or a name given twice is an error naming the file.
    pub(crate) fn index(file: &Path) -> std::result::Result<Self, String> {
        let at = file.display();
        let f = File::open(file).map_err(|e| format!("{at}: {e}"))?;
        let total = f.metadata().map_err(|e| format!("{at}: {e}"))?.len();
        let mut ar = tar::Archive::new(f);
        let mut members = BTreeMap::new();
        let mut links = Vec::new();
        // Where the last member's data (padded to 512-byte blocks) ends.
        let mut end = 0u64;
        let entries = ar.entries_with_seek().map_err(|e| format!("{at}: not a readable tar: {e}"))?;
        for e in entries {
            let e = e.map_err(|e| format!("{at}: not a readable tar (truncated or damaged?): {e}"))?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let (off, size) = (e.raw_file_position(), e.size());
            if off.checked_add(size).is_none_or(|end| end > total) {
                return Err(format!(
                    "{at}: member {raw} needs bytes {off}..{} but the file has {total}: the archive is truncated",
                    off.saturating_add(size)
                ));
            }
            end = off + size.div_ceil(512) * 512;
            let name = normalize(&raw).ok_or_else(|| format!("{at}: member {raw:?} climbs out of the archive"))?;
            let kind = e.header().entry_type();
            if matches!(kind, tar::EntryType::Link | tar::EntryType::Symlink) {
                // A tar of a layout may store a blob twice as a link (GNU tar does for
                // hardlinked files); it reads as its target's bytes.
                let target = String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()).into_owned();
                let base = match (kind, name.rsplit_once('/')) {
                    (tar::EntryType::Symlink, Some((dir, _))) => format!("{dir}/"),
                    _ => String::new(),
                };
                let target = normalize(&format!("{base}{target}")).ok_or_else(|| format!("{at}: link {raw} points out of the archive"))?;
                links.push((name, target));
                continue;
            }
            if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
                continue;
            }
            if members.insert(name, (off, size)).is_some() {
                return Err(format!("{at}: member {raw} appears twice"));
            }
        }
        for (name, target) in links {
            let range = *members.get(&target).ok_or_else(|| format!("{at}: link {name} points at {target}, which the archive does not hold"))?;
            if members.insert(name.clone(), range).is_some() {
                return Err(format!("{at}: member {name} appears twice"));
            }
        }
        // A tar ends with zero blocks; an archive cut at a header boundary reads as a shorter
        // tar, so their absence is what tells it from a whole one.
        let mut f = ar.into_inner();
        let mut block = [0u8; 512];
        let ended = f.seek(SeekFrom::Start(end)).and_then(|_| f.read_exact(&mut block)).is_ok() && block.iter().all(|b| *b == 0);
        if !ended {
            return Err(format!("{at}: no end-of-archive block after the last member (at byte {end} of {total}): the archive is truncated"));
        }
        Ok(ArchiveFiles { file: file.to_path_buf(), members })
    }

    fn member(&self, name: &str) -> io::Result<(u64, u64)> {
        self.members
            .get(name)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such member in the archive"))
    }
}

impl LayoutFiles for ArchiveFiles {
    fn describe(&self) -> String {
        self.file.display().to_string()
    }
    fn location(&self, name: &str) -> String {
        format!("{} member {name}", self.file.display())
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        self.member(name).map(|(_, size)| size)
    }
    fn open(&self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        let (off, size) = self.member(name)?;
        let mut f = File::open(&self.file)?;
        f.seek(SeekFrom::Start(off))?;
        Ok(Box::new(f.take(size)))
    }
    fn import(&self, store: &Store, label: &str, d: &Digest, size: u64) -> Result<()> {
        if store.has(d) && std::fs::metadata(store.blob_path(d)).is_ok_and(|m| m.len() == size) {
            return Ok(());
        }
        let name = oci_layout::blob_name(d);
        let rd = self.open(&name).map_err(|e| Error::other(format!("{label}: cannot read {}: {e}", self.location(&name))))?;
        store.put_reader(&format!("{label} ({})", self.location(&name)), Some(d), Some(size), rd)?;
        Ok(())
    }
}

pub fn resolve(store: &Store, r: &ImageRef, file: &Path, tag: Option<&str>, opts: &SourceOptions) -> Result<ResolvedImage> {
    let files = ArchiveFiles::index(file).map_err(|message| Error::Resolve { reference: r.text.clone(), message })?;
    oci_layout::resolve_files(store, r, &files, tag, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            // `name` or `name -> target` (a hard link).
            let (name, link) = name.split_once(" -> ").map_or((*name, None), |(n, t)| (n, Some(t)));
            h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_mode(0o644);
            if let Some(t) = link {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name(t).unwrap();
                h.set_size(0);
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
            }
            h.set_cksum();
            b.append(&h, if link.is_some() { &[][..] } else { *data }).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn indexes_members_and_reads_them_in_place() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.tar");
        std::fs::write(&p, tar_of(&[("./oci-layout", b"{}"), ("blobs/sha256/ab", b"hello")])).unwrap();
        let a = ArchiveFiles::index(&p).unwrap();
        assert_eq!(a.len("oci-layout").unwrap(), 2);
        let mut s = String::new();
        a.open("blobs/sha256/ab").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(a.len("index.json").is_err());

        std::fs::write(&p, tar_of(&[("blobs/sha256/ab", b"hello"), ("blobs/sha256/cd -> blobs/sha256/ab", b"")])).unwrap();
        let a = ArchiveFiles::index(&p).unwrap();
        let mut s = String::new();
        a.open("blobs/sha256/cd").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        std::fs::write(&p, tar_of(&[("blobs/sha256/cd -> blobs/sha256/zz", b"")])).unwrap();
        assert!(ArchiveFiles::index(&p).err().unwrap().contains("does not hold"));
    }

    #[test]
    fn truncated_and_duplicate_members_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.tar");
        let whole = tar_of(&[("oci-layout", b"{}"), ("big", &[7u8; 3000])]);
        std::fs::write(&p, &whole[..1024 + 512 + 1000]).unwrap();
        let e = ArchiveFiles::index(&p).err().unwrap();
        assert!(e.contains("truncated"), "{e}");
        // Cut between members: a shorter tar, but without its end-of-archive blocks.
        std::fs::write(&p, &whole[..1024]).unwrap();
        let e = ArchiveFiles::index(&p).err().unwrap();
        assert!(e.contains("end-of-archive"), "{e}");
        std::fs::write(&p, tar_of(&[("x", b"1"), ("./x", b"2")])).unwrap();
        assert!(ArchiveFiles::index(&p).err().unwrap().contains("twice"));
        std::fs::write(&p, tar_of(&[("a/../../x", b"1")])).unwrap();
        assert!(ArchiveFiles::index(&p).err().unwrap().contains("climbs out"));
    }
}
