//! TLS trust for registries: which root certificates a connection to one registry accepts,
//! and which registries may be reached over plain HTTP.
//!
//! Roots: the system store (`rustls-native-certs`, which reads `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` when set, else the distribution's bundle), Mozilla's roots bundled in the
//! binary (`webpki-root-certs`, so a machine without a CA bundle still reaches docker.io), and
//! per registry the `*.crt` files of a certificate directory, found like containers/image
//! does: `--cert-dir DIR` (`$STAGEBOX_CERT_DIR`) if given, else `/etc/containers/certs.d/HOST`,
//! `$HOME/.config/containers/certs.d/HOST` and `/etc/docker/certs.d/HOST` (HOST as written in
//! the reference, `host:port`, and the API host, e.g. `registry-1.docker.io`). A `NAME.cert`
//! with its `NAME.key` there is presented as a client certificate (mutual TLS).
//!
//! Insecure hosts (`--insecure-registry HOST`, `$STAGEBOX_INSECURE_REGISTRIES`, the
//! `insecure` list of the registries config): HTTPS is still tried first; plain HTTP only
//! when TLS fails. An entry without a port names every port of that host. Loopback is not
//! special: a registry on 127.0.0.1 gets HTTPS unless named.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts};

/// Env: hosts (`host[:port]`, comma separated) that may be reached over plain HTTP.
pub use crate::reference::ENV_INSECURE;
/// Env: a certificate directory (`*.crt`) used for every registry instead of `certs.d`.
pub const ENV_CERT_DIR: &str = "STAGEBOX_CERT_DIR";

/// System and bundled roots, loaded once per process.
fn base_roots() -> &'static Vec<Certificate<'static>> {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut v: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        v.extend(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()));
        v
    })
}

/// The certificate directories consulted for `hosts` (first existing ones win, all are read).
pub fn cert_dirs(hosts: &[&str]) -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os(ENV_CERT_DIR).filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(d)];
    }
    let mut roots = vec![PathBuf::from("/etc/containers/certs.d")];
    roots.extend(dirs::home_dir().map(|h| h.join(".config/containers/certs.d")));
    roots.push(PathBuf::from("/etc/docker/certs.d"));
    let mut out = Vec::new();
    for r in &roots {
        for h in hosts {
            let d = r.join(h);
            if d.is_dir() && !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// The `*.crt` certificates of `dir`, sorted by file name.
fn dir_certs(dir: &Path) -> Vec<Certificate<'static>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    let mut certs = Vec::new();
    for f in files {
        let Ok(data) = std::fs::read(&f) else { continue };
        for item in ureq::tls::parse_pem(&data).flatten() {
            if let PemItem::Certificate(c) = item {
                certs.push(c);
            }
        }
    }
    certs
}

/// A client certificate for mutual TLS: the first `NAME.cert` (PEM chain) with a `NAME.key`
/// beside it in the certificate directories, as containers tools pair them.
pub fn client_cert(dirs: &[PathBuf]) -> Option<ClientCert> {
    for d in dirs {
        let mut certs: Vec<PathBuf> = std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "cert")).collect();
        certs.sort();
        for c in certs {
            let (Ok(chain), Ok(key)) = (std::fs::read(&c), std::fs::read(c.with_extension("key"))) else { continue };
            let chain: Vec<Certificate<'static>> =
                ureq::tls::parse_pem(&chain).flatten().filter_map(|i| if let PemItem::Certificate(c) = i { Some(c) } else { None }).collect();
            if let (false, Ok(key)) = (chain.is_empty(), PrivateKey::from_pem(&key)) {
                return Some(ClientCert::new_with_certs(&chain, key));
            }
        }
    }
    None
}

/// Root certificates for a registry known as `hosts` (reference host, API host), and the
/// certificate directories that added to them (for messages).
pub fn roots_for(hosts: &[&str]) -> (RootCerts, Vec<PathBuf>) {
    let dirs = cert_dirs(hosts);
    let mut v = base_roots().clone();
    for d in &dirs {
        v.extend(dir_certs(d));
    }
    (RootCerts::Specific(Arc::new(v)), dirs)
}

/// Whether `host` (`host[:port]`) is in the comma-separated `list`: exactly, or by its host
/// part when the entry names no port.
pub fn listed(list: &str, host: &str) -> bool {
    let bare = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    list.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|e| e == host || e == bare)
}

/// Whether `host` may be reached over plain HTTP (after HTTPS failed).
pub fn insecure(host: &str, config: &[String]) -> bool {
    std::env::var(ENV_INSECURE).is_ok_and(|v| listed(&v, host)) || listed(&config.join(","), host)
}

/// What to tell a user whose TLS connection to `host` failed.
pub fn advice(host: &str, dirs: &[PathBuf]) -> String {
    let tried = if dirs.is_empty() { "no certificate directory for it was found".to_string() } else { format!("read {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")) };
    format!(
        "TLS with {host} failed. If it uses a private CA, put the CA certificate in \
/etc/containers/certs.d/{host}/ca.crt (or ~/.config/containers/certs.d/{host}/ca.crt), pass --cert-dir DIR, \
or set SSL_CERT_FILE; if it serves plain HTTP, name it with --insecure-registry {host} ({tried})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_lists_match_host_and_port() {
        assert!(listed("a.example:5000, 127.0.0.1", "127.0.0.1:41234"));
        assert!(listed("a.example:5000", "a.example:5000"));
        assert!(!listed("a.example:5000", "a.example:5001"));
        assert!(!listed("a.example:5000", "a.example"));
        assert!(!listed("", "localhost:5000"));
        assert!(!listed("localhost", "127.0.0.1:5000"));
    }
}
