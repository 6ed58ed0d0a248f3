//! Image references as written in box and pallet files, and on the command line.
//!
//! `oci:DIR[:TAG][@sha256:HEX]`, `oci-archive:FILE[:TAG][@sha256:HEX]` (the same layout as a
//! tar), `docker-archive:FILE[@sha256:HEX]`, `dir:PATH`, and registry
//! references (`docker://NAME…`, `stagex/core-busybox@sha256:…`). Relative paths are resolved
//! against a base directory (the file the reference was written in).

use crate::digest::Digest;
use std::path::{Path, PathBuf};

/// A parsed image reference. `text` is always the reference exactly as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub text: String,
    pub kind: RefKind,
    /// The pinned digest, if any. For `oci:` and `oci-archive:` it names a manifest or an index; for
    /// `docker-archive:` it is the image ID (the config digest), since the archive holds no
    /// manifest digest.
    pub digest: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefKind {
    OciLayout { dir: PathBuf, tag: Option<String> },
    OciArchive { file: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf },
    Dir { path: PathBuf },
    Registry { name: String, tag: Option<String> },
}

impl ImageRef {
    /// Parse `text`, resolving relative paths against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let (body, digest) = split_digest(text)?;
        let resolve = |p: &str| -> Result<PathBuf, String> {
            if p.is_empty() {
                return Err("empty path".into());
            }
            Ok(base.join(p))
        };
        let kind = if let Some(rest) = body.strip_prefix("oci-archive:") {
            let (file, tag) = match rest.rsplit_once(':') {
                Some((f, t)) if is_tag(t) => (f, Some(t.to_string())),
                _ => (rest, None),
            };
            RefKind::OciArchive { file: resolve(file)?, tag }
        } else if let Some(rest) = body.strip_prefix("oci:") {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if is_tag(t) => (d, Some(t.to_string())),
                _ => (rest, None),
            };
            RefKind::OciLayout { dir: resolve(dir)?, tag }
        } else if let Some(rest) = body.strip_prefix("docker-archive:") {
            RefKind::DockerArchive { file: resolve(rest)? }
        } else if let Some(rest) = body.strip_prefix("dir:") {
            if digest.is_some() {
                return Err("dir: references take no digest; the directory is hashed when read".into());
            }
            RefKind::Dir { path: resolve(rest)? }
        } else {
            if !body.starts_with("docker://") {
                if let Some(why) = local_path_reason(body) {
                    return Err(local_path_error(body, why, &base.join(body)));
                }
            }
            let rest = body.strip_prefix("docker://").unwrap_or(body);
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(format!(
                    "not an image reference: {text:?} (expected oci:DIR, oci-archive:FILE, docker-archive:FILE, dir:PATH or a registry name)"
                ));
            }
            let (name, tag) = match rest.rsplit_once(':') {
                Some((n, t)) if is_tag(t) => (n.to_string(), Some(t.to_string())),
                _ => (rest.to_string(), None),
            };
            RefKind::Registry { name, tag }
        };
        Ok(ImageRef { text: text.to_string(), kind, digest })
    }

    /// True when the reference names a fixed content digest (or is a local dir, which is
    /// hashed on read).
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some() || matches!(self.kind, RefKind::Dir { .. })
    }

    pub fn with_digest(&self, digest: Digest) -> Self {
        ImageRef { digest: Some(digest), ..self.clone() }
    }
}

/// File name endings that mark a local file: what stagebox writes and reads (archives,
/// images, packages, box files). A registry repository may contain dots, so without this
/// `out/x.cpio.gz` would be a request to docker.io.
pub const LOCAL_EXTENSIONS: &[&str] = &[
    ".tar", ".tgz", ".gz", ".zst", ".xz", ".bz2", ".cpio", ".iso", ".img", ".raw", ".qcow2", ".eif", ".pcrs", ".cmdline",
    ".squashfs", ".sqfs", ".erofs", ".deb", ".rpm", ".apk", ".oci", ".json", ".toml", ".lock", ".efi", ".bzImage",
];

/// Why a reference without a prefix names a local path rather than a registry image, if it
/// does (docs/registries.md, "Local path or registry reference"): it starts with `/`, `./`,
/// `../` or `~`, is `.` or `..`, its last component (before a `:TAG`) ends with one of
/// [`LOCAL_EXTENSIONS`], or it has characters no registry repository may hold (upper case,
/// whitespace, a backslash). `docker://` always means a registry.
pub fn local_path_reason(text: &str) -> Option<&'static str> {
    if text.starts_with('/') || text.starts_with("./") || text.starts_with("../") || text.starts_with('~') || text == "." || text == ".." {
        return Some("it starts like a path");
    }
    let last = text.rsplit('/').next().unwrap_or(text);
    // A `:TAG` ends a registry name, never a file name stagebox reads (a host's `:PORT` is
    // never the last component).
    let last = match last.rsplit_once(':') {
        Some((n, t)) if is_tag(t) => n,
        _ => last,
    };
    if LOCAL_EXTENSIONS.iter().any(|e| last.len() > e.len() && last.ends_with(e)) {
        return Some("its name ends like a file stagebox reads or writes");
    }
    let path = match text.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => rest,
        _ => text,
    };
    if path.chars().any(|c| c.is_ascii_uppercase() || c.is_whitespace() || c == '\\') {
        return Some("a registry repository has no upper case, spaces or backslashes");
    }
    None
}

/// The error for a local-looking reference (`why`, see [`local_path_reason`]) at `path`.
fn local_path_error(text: &str, why: &str, path: &Path) -> String {
    let how = "a registry image is written [HOST/]REPO[:TAG][@sha256:HEX] (or docker://...); a local image oci:DIR, oci-archive:FILE or docker-archive:FILE";
    if !path.exists() {
        return format!("no such file or directory: {} ({text:?} is a local path: {why}; {how})", path.display());
    }
    let hint = if path.join("oci-layout").is_file() {
        format!("oci:{text}")
    } else if path.is_dir() {
        format!("dir:{text}")
    } else {
        format!("oci-archive:{text} or docker-archive:{text}")
    };
    format!("{text:?} is a local path ({why}): say what it holds, e.g. {hint}")
}

fn split_digest(text: &str) -> Result<(&str, Option<Digest>), String> {
    if let Some((body, hex)) = text.rsplit_once('@') {
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{text:?}: a digest is written with its algorithm: {body}@sha256:{hex}"));
        }
    }
    match text.rfind('@') {
        Some(i) if text[i + 1..].contains(':') && !text[i + 1..].contains('/') => {
            let d = Digest::parse(&text[i + 1..]).map_err(|e| e.to_string())?;
            Ok((&text[..i], Some(d)))
        }
        _ => Ok((text, None)),
    }
}

/// OCI tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Env: hosts (as written in references, `host[:port]`) that may be reached over plain HTTP.
pub const ENV_INSECURE: &str = "STAGEBOX_INSECURE_REGISTRIES";

/// A registry repository, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// The registry as written (`docker.io`, `quay.io`, `localhost:5000`).
    pub host: String,
    /// The repository path (`stagex/core-busybox`, `library/busybox`).
    pub path: String,
}

impl Repo {
    /// Normalize a reference name (without tag or digest).
    pub fn parse(name: &str) -> Repo {
        let name = name.strip_prefix("docker://").unwrap_or(name);
        let (host, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let host = if host == "index.docker.io" || host == "registry-1.docker.io" { "docker.io".to_string() } else { host };
        let path = if host == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path };
        Repo { host, path }
    }

    /// `docker.io/stagex/core-busybox`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }

    pub fn is_loopback(&self) -> bool {
        let h = self.host.rsplit_once(':').map_or(self.host.as_str(), |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { &self.host });
        matches!(h, "localhost" | "127.0.0.1" | "[::1]") || h.starts_with("127.")
    }

    /// Plain HTTP is allowed only for loopback registries and those named in `$STAGEBOX_INSECURE_REGISTRIES`.
    pub fn plain_http(&self) -> bool {
        self.is_loopback()
            || std::env::var(ENV_INSECURE).is_ok_and(|v| v.split(',').any(|h| !h.trim().is_empty() && h.trim() == self.host))
    }
}

/// Whether a signature lookaside URL may be used: `https://`, or plain `http://` only for a
/// host that [`Repo::plain_http`] allows. `Err` says why not.
pub fn check_signature_url(s: &str) -> std::result::Result<(), String> {
    if let Some(rest) = s.strip_prefix("http://") {
        let host = rest.split('/').next().unwrap_or("");
        if !Repo::parse(&format!("{host}/x")).plain_http() {
            return Err(format!("signature URL {s:?}: plain http is allowed only for loopback hosts; use https"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn oci_forms() {
        let r = ImageRef::parse("oci:img", Path::new("/b")).unwrap();
        assert_eq!(r.kind, RefKind::OciLayout { dir: "/b/img".into(), tag: None });
        let r = ImageRef::parse("oci:../x/img:1.0", Path::new("/b")).unwrap();
        assert_eq!(r.kind, RefKind::OciLayout { dir: "/b/../x/img".into(), tag: Some("1.0".into()) });
        let r = ImageRef::parse(&format!("oci:/abs/img@sha256:{HEX}"), Path::new("/b")).unwrap();
        assert_eq!(r.kind, RefKind::OciLayout { dir: "/abs/img".into(), tag: None });
        assert_eq!(r.digest.unwrap().hex(), HEX);
        assert!(ImageRef::parse("oci:x@sha256:abc", Path::new("/")).is_err());
        let e = ImageRef::parse(&format!("oci:x@{HEX}"), Path::new("/")).unwrap_err();
        assert!(e.contains(&format!("oci:x@sha256:{HEX}")), "{e}");
    }

    #[test]
    fn oci_archive_forms() {
        let r = ImageRef::parse("oci-archive:img.tar", Path::new("/b")).unwrap();
        assert_eq!(r.kind, RefKind::OciArchive { file: "/b/img.tar".into(), tag: None });
        assert!(!r.is_pinned());
        let r = ImageRef::parse(&format!("oci-archive:../x/img.tar:1.0@sha256:{HEX}"), Path::new("/b")).unwrap();
        assert_eq!(r.kind, RefKind::OciArchive { file: "/b/../x/img.tar".into(), tag: Some("1.0".into()) });
        assert_eq!(r.digest.unwrap().hex(), HEX);
        assert!(ImageRef::parse("oci-archive:", Path::new("/b")).is_err());
    }

    #[test]
    fn registry_and_archive_forms() {
        let r = ImageRef::parse(&format!("stagex/core-busybox@sha256:{HEX}"), Path::new("/")).unwrap();
        assert_eq!(r.kind, RefKind::Registry { name: "stagex/core-busybox".into(), tag: None });
        let r = ImageRef::parse("docker://localhost:5000/a/b:sx2026.03.0", Path::new("/")).unwrap();
        assert_eq!(r.kind, RefKind::Registry { name: "localhost:5000/a/b".into(), tag: Some("sx2026.03.0".into()) });
        let r = ImageRef::parse("docker-archive:a.tar", Path::new("/w")).unwrap();
        assert_eq!(r.kind, RefKind::DockerArchive { file: "/w/a.tar".into() });
        assert!(!r.is_pinned());
        assert!(ImageRef::parse("dir:rootfs", Path::new("/w")).unwrap().is_pinned());
    }

    #[test]
    fn local_paths_are_not_registry_names() {
        for local in ["out/x.cpi.gz", "./busybox", "/abs/img", "../img", "busybox.tar", "out/Demo", "quay.io/x/y.tar:1.0", "~/img"] {
            assert!(local_path_reason(local).is_some(), "{local}");
            let e = ImageRef::parse(local, Path::new("/nonexistent-base")).unwrap_err();
            assert!(e.contains("no such file or directory"), "{local}: {e}");
        }
        for remote in ["stagex/core-busybox:1.36.1", "quay.io/stagex/core-busybox", "localhost:5000/a/b:sx2026.03.0", "busybox", "ghcr.io/o/r.x:v1.2"] {
            assert_eq!(local_path_reason(remote), None, "{remote}");
        }
        assert!(ImageRef::parse("docker://registry.example/x/y.tar", Path::new("/")).is_ok(), "docker:// is always a registry");
    }
}
