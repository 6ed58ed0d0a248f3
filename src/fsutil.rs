//! Atomic output files and directories: write to a temp name beside the target, then rename.
//!
//! A killed build leaves at most a `.stagebox-tmp-*` file (removed on drop when the process
//! survives), never a half-written output under its final name.

use crate::error::{IoContext, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// A temp file in the target's directory that becomes `target` on [`AtomicFile::commit`].
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).at(dir)?;
        let tmp = tempfile::Builder::new().prefix(".stagebox-tmp-").tempfile_in(dir).at(dir)?;
        Ok(AtomicFile { tmp, target: target.to_path_buf() })
    }

    pub fn file(&mut self) -> &mut fs::File {
        self.tmp.as_file_mut()
    }

    /// fsync, set mode 0644 (independent of umask), and rename over the target.
    pub fn commit(self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let f = self.tmp.as_file();
        f.set_permissions(fs::Permissions::from_mode(0o644)).at(self.tmp.path())?;
        f.sync_all().at(self.tmp.path())?;
        let target = self.target.clone();
        self.tmp.persist(&target).map_err(|e| crate::Error::io(&target, e.error))?;
        Ok(())
    }
}

/// Write `data` to `target` atomically.
pub fn write_atomic(target: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = AtomicFile::create(target)?;
    f.file().write_all(data).at(target)?;
    f.commit()
}

/// A temp directory beside `target` that replaces it on [`AtomicDir::commit`].
pub struct AtomicDir {
    tmp: tempfile::TempDir,
    target: PathBuf,
}

impl AtomicDir {
    pub fn create(target: &Path) -> Result<Self> {
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).at(dir)?;
        let tmp = tempfile::Builder::new().prefix(".stagebox-tmp-").tempdir_in(dir).at(dir)?;
        Ok(AtomicDir { tmp, target: target.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Replace `target` with the temp dir. An old target is moved aside first and removed
    /// after the rename, so the final name always holds a complete directory or nothing.
    pub fn commit(self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let tmp = self.tmp.keep();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).at(&tmp)?;
        if self.target.exists() {
            let old = tmp.with_extension("old");
            fs::rename(&self.target, &old).at(&self.target)?;
            fs::rename(&tmp, &self.target).at(&self.target)?;
            fs::remove_dir_all(&old).at(&old)?;
        } else {
            fs::rename(&tmp, &self.target).at(&self.target)?;
        }
        Ok(())
    }
}
