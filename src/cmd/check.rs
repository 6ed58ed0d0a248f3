//! `stagebox build --check`: build every output twice, the second time under the host
//! variations that break reproducibility in practice, compare every byte, and publish the
//! first build only when both agree.
//!
//! How the two builds differ. The first build runs in this process, as a plain build would,
//! into a temporary directory inside `--out`. The second runs in a *child process of the same
//! binary* (`std::env::current_exe()`, a hidden `build --check-variant DIR` invocation), because
//! umask, environment and working directory are process-wide state: changing them inside a
//! multi-threaded process would race with our own threads. The child gets:
//! - another umask (077, or 002 when ours already is 077), set between fork and exec;
//! - another `TZ`, `LANG` and `LC_ALL` (a +05:45 zone and the Turkish locale, whose `i`/`I`
//!   case rules break naive sorting);
//! - another working directory (an empty temporary one) and another output path;
//! - another thread count (1, or 3 when the first build used 1);
//! - copies of every `dir` layer, written in *reverse* bytewise order of their paths (files,
//!   then directories' modes restored deepest first) at a later time, so the order a file
//!   system lists them in and their on-disk timestamps differ.
//!
//! Both builds share the content store (same digests, so same inputs). Outputs are compared
//! byte for byte, file by file (an OCI layout is walked in bytewise path order), and
//! `manifest.json` too; the first difference is reported with the output, the file inside it,
//! the byte offset and, where [`super::diff`] knows the format, the first differing entry.
//! On failure both builds are kept for `stagebox diff`; on success the first is published
//! exactly as `stagebox build` would.
//!
//! Test hook: `STAGEBOX_TEST_PERTURB=PATH` (undocumented for users, like
//! `STAGEBOX_MAX_LAYER_BYTES`) appends one byte to the file `PATH` of the first `dir` layer's
//! copy made for the second build, so a test can watch `--check` fail.

use crate::build::{self, BuildOptions, BuildResult};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::compare_paths;
use crate::spec::{self, LayerSpec};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Env var of the test hook (see the module doc).
pub const PERTURB_ENV: &str = "STAGEBOX_TEST_PERTURB";

/// What the check varied, for the success message.
#[derive(Debug, Clone)]
pub struct Variations {
    pub umask: u32,
    pub tz: &'static str,
    pub lang: &'static str,
    pub threads: usize,
    pub dir_layers: usize,
}

impl std::fmt::Display for Variations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "umask {:03o}, TZ={}, LANG=LC_ALL={}, another working directory and output path, {} thread(s), {} dir layer(s) copied in reverse order",
            self.umask, self.tz, self.lang, self.threads, self.dir_layers
        )
    }
}

/// The first difference between two builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The output (as named in manifest.json), or `manifest.json`.
    pub output: String,
    /// The file inside an output directory (an OCI layout), if any.
    pub inner: Option<String>,
    /// First differing byte offset, or `None` when one side lacks the file.
    pub offset: Option<u64>,
    /// The first differing entry, when `stagebox diff` knows the format.
    pub entry: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.output)?;
        if let Some(i) = &self.inner {
            write!(f, " (file {i})")?;
        }
        match self.offset {
            Some(o) => write!(f, " differs at byte offset {o}")?,
            None => write!(f, " exists in only one of the builds")?,
        }
        if let Some(e) = &self.entry {
            write!(f, "; first differing entry: {e}")?;
        }
        Ok(())
    }
}

/// `stagebox build --check`: see the module doc. Returns the published build and what varied.
pub fn check(box_path: &Path, opts: &BuildOptions) -> Result<(BuildResult, Variations)> {
    let spec = spec::load_box(box_path)?;
    let final_out = opts.out.clone().unwrap_or_else(|| spec.dir.join("out"));
    fs::create_dir_all(&final_out).at(&final_out)?;
    let tmp = tempfile::Builder::new().prefix(".stagebox-check-").tempdir_in(&final_out).at(&final_out)?;
    let (a_dir, b_dir, dirs, cwd) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("dirs"), tmp.path().join("cwd"));
    fs::create_dir_all(&cwd).at(&cwd)?;

    // First build: this process, as it is.
    let a = build::build(box_path, &BuildOptions { out: Some(a_dir.clone()), ..opts.clone() })?;

    // Second build's inputs: every dir layer copied in reverse order.
    let mut n_dirs = 0;
    for (i, l) in spec.layers.iter().filter_map(|l| if let LayerSpec::Dir { path, .. } = l { Some(path) } else { None }).enumerate() {
        copy_reversed(l, &dirs.join(i.to_string()))?;
        n_dirs += 1;
    }
    if let Some(p) = std::env::var_os(PERTURB_ENV).filter(|p| !p.is_empty()) {
        let f = dirs.join("0").join(&p);
        let mut data = fs::read(&f).at(&f)?;
        data.push(b'!');
        fs::write(&f, data).at(&f)?;
    }

    let umask = if current_umask() == 0o077 { 0o002 } else { 0o077 };
    let (tz, lang) = ("Asia/Kathmandu", "tr_TR.UTF-8");
    let threads = if opts.threads == 1 { 3 } else { 1 };
    let variations = Variations { umask, tz, lang, threads, dir_layers: n_dirs };
    let exe = std::env::current_exe().map_err(|e| Error::other(format!("--check: cannot find this program to run it again: {e}")))?;
    let abs_box = std::path::absolute(box_path).at(box_path)?;
    let store = crate::source::store::default_root(opts.cache.as_deref())?;
    let store = std::path::absolute(&store).at(&store)?;
    let mut cmd = Command::new(&exe);
    cmd.arg("build").arg(&abs_box).arg("--out").arg(&b_dir).arg("--cache").arg(&store);
    cmd.arg("--threads").arg(threads.to_string()).arg("--quiet").arg("--check-variant").arg(&dirs);
    if let Some(p) = &opts.platform {
        cmd.arg("--platform").arg(format!("{}/{}", p.os, p.arch));
    }
    if opts.offline {
        cmd.arg("--offline");
    }
    if opts.locked {
        cmd.arg("--locked");
    }
    cmd.current_dir(&cwd).env("TZ", tz).env("LANG", lang).env("LC_ALL", lang);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask as libc::mode_t);
                Ok(())
            });
        }
    }
    let out = cmd.output().map_err(|e| Error::other(format!("--check: cannot run {}: {e}", exe.display())))?;
    if !out.status.success() {
        return Err(Error::other(format!(
            "--check: the second build failed ({}) where the first succeeded:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }

    if let Some(d) = compare_builds(&a_dir, &b_dir, &a.manifest)? {
        let kept = tmp.keep();
        return Err(Error::other(format!(
            "not reproducible: {d}\n  the two builds are kept in {} (a/ and b/; compare them with `stagebox diff`)\n  the second build varied: {variations}",
            kept.display()
        )));
    }

    // Publish the first build as a plain build would.
    let removed = crate::build::publish(&a_dir, &final_out, &a.manifest)?;
    drop(tmp);
    Ok((BuildResult { out_dir: final_out, manifest: a.manifest, removed }, variations))
}

/// This process's umask, from /proc (reading it with umask(2) would change it for a moment).
fn current_umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
        .unwrap_or(0o022)
}

/// Copy the directory `src` to `dst`, creating entries in reverse bytewise path order (so a
/// readdir of the copy tends to list them in another order) and keeping modes, symlinks,
/// hardlinks and special files. Directories get their modes last, deepest first.
pub fn copy_reversed(src: &Path, dst: &Path) -> Result<()> {
    let mut entries = Vec::new();
    crate::fsutil::list_tree(src, Path::new(""), &mut entries)?;
    entries.sort_by(|a, b| b.as_os_str().as_bytes().cmp(a.as_os_str().as_bytes()));
    fs::create_dir_all(dst).at(dst)?;
    let mut links: std::collections::BTreeMap<(u64, u64), PathBuf> = Default::default();
    let mut dirs = Vec::new();
    for rel in &entries {
        let (s, d) = (src.join(rel), dst.join(rel));
        let m = fs::symlink_metadata(&s).at(&s)?;
        let ft = m.file_type();
        if let Some(parent) = d.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        if ft.is_dir() {
            fs::create_dir_all(&d).at(&d)?;
            dirs.push((d, m.permissions().mode()));
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s).at(&s)?, &d).at(&d)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    fs::hard_link(first, &d).at(&d)?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), d.clone());
            }
            fs::copy(&s, &d).at(&d)?;
            fs::set_permissions(&d, fs::Permissions::from_mode(m.permissions().mode())).at(&d)?;
        } else {
            // Devices, fifos and sockets: mknod keeps their kind and numbers (needs the same
            // privileges the source directory's owner had).
            let c = std::ffi::CString::new(d.as_os_str().as_bytes()).map_err(|_| Error::other(format!("{}: NUL in path", d.display())))?;
            // SAFETY: a valid NUL-terminated path; mknod has no other memory effects.
            if unsafe { libc::mknod(c.as_ptr(), m.mode() as libc::mode_t, m.rdev() as libc::dev_t) } != 0 {
                return Err(Error::io(&d, std::io::Error::last_os_error()));
            }
        }
    }
    dirs.sort_by(|a, b| b.0.as_os_str().as_bytes().cmp(a.0.as_os_str().as_bytes()));
    for (d, mode) in dirs {
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).at(&d)?;
    }
    let root_mode = fs::metadata(src).at(src)?.permissions().mode();
    fs::set_permissions(dst, fs::Permissions::from_mode(root_mode)).at(dst)?;
    Ok(())
}

/// Compare two build directories: every output of `manifest`, then manifest.json.
pub fn compare_builds(a: &Path, b: &Path, manifest: &crate::measure::BuildManifest) -> Result<Option<Difference>> {
    for o in &manifest.outputs {
        if let Some((inner, offset)) = compare_paths(&a.join(&o.path), &b.join(&o.path))? {
            let entry = crate::cmd::diff::first_entry(&a.join(&o.path), &b.join(&o.path));
            return Ok(Some(Difference { output: o.path.clone(), inner, offset, entry }));
        }
    }
    if let Some((_, offset)) = compare_paths(&a.join("manifest.json"), &b.join("manifest.json"))? {
        return Ok(Some(Difference { output: "manifest.json".into(), inner: None, offset, entry: None }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::first_byte_difference;

    #[test]
    fn first_byte_difference_finds_offsets() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, vec![7u8; 200_000]).unwrap();
        let mut v = vec![7u8; 200_000];
        v[131_073] = 8;
        fs::write(&b, &v).unwrap();
        assert_eq!(first_byte_difference(&a, &b).unwrap(), Some(131_073));
        fs::write(&b, vec![7u8; 100]).unwrap();
        assert_eq!(first_byte_difference(&a, &b).unwrap(), Some(100));
        fs::write(&b, vec![7u8; 200_000]).unwrap();
        assert_eq!(first_byte_difference(&a, &b).unwrap(), None);
    }

    #[test]
    fn copy_reversed_keeps_modes_links_and_content() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/b/f"), "x").unwrap();
        fs::set_permissions(src.join("a/b/f"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::hard_link(src.join("a/b/f"), src.join("h")).unwrap();
        std::os::unix::fs::symlink("a/b/f", src.join("s")).unwrap();
        fs::set_permissions(src.join("a"), fs::Permissions::from_mode(0o711)).unwrap();
        let dst = d.path().join("dst");
        copy_reversed(&src, &dst).unwrap();
        assert_eq!(compare_paths(&src, &dst).unwrap(), None);
        let m = |p: &Path| fs::symlink_metadata(p).unwrap();
        assert_eq!(m(&dst.join("a/b/f")).permissions().mode() & 0o7777, 0o751);
        assert_eq!(m(&dst.join("a")).permissions().mode() & 0o7777, 0o711);
        assert_eq!(m(&dst.join("h")).ino(), m(&dst.join("a/b/f")).ino());
        assert_eq!(fs::read_link(dst.join("s")).unwrap(), Path::new("a/b/f"));
    }
}
