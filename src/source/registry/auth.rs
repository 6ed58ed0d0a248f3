//! Registry credentials: found in the files and credential helpers users already have, in the
//! order skopeo (containers/image) looks, and turned into an `Authorization` header when a
//! registry challenges us.
//!
//! Order: `$STAGEBOX_REGISTRY_USER`/`$STAGEBOX_REGISTRY_PASSWORD`; then each auth file in turn —
//! `$REGISTRY_AUTH_FILE` (else `$XDG_RUNTIME_DIR/containers/auth.json`),
//! `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/containers/auth.json`),
//! `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`). In one file, a `credHelpers`
//! entry for the registry wins, then `auths` (the most specific key first: `host/ns/repo`,
//! `host/ns`, `host`; Docker Hub's legacy `https://index.docker.io/v1/` too), then the file's
//! `credsStore`. A helper is `docker-credential-NAME get` with the server on stdin.
//!
//! Credentials never appear in messages ([`Creds`]'s `Debug` hides them), are never written
//! anywhere, and are sent only to the registry's own host and its token realm (redirects to
//! another host go without them; see `transfer`). The challenge parser is hand-written: it is
//! twenty lines of RFC 7235 and no small crate parses `WWW-Authenticate` for a blocking client.

use base64::Engine as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A user name and a secret (password or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Creds {
    pub user: String,
    pub secret: String,
    /// Where they came from, for messages (a file path or a helper name; never the secret).
    pub origin: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Creds {{ user: {:?}, secret: <hidden>, origin: {:?} }}", self.user, self.origin)
    }
}

impl Creds {
    pub fn basic_header(&self) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.secret)))
    }
}

/// The auth files to read, in containers/image's order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    match std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        Some(f) => files.push(PathBuf::from(f)),
        None => files.extend(std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()).map(|d| PathBuf::from(d).join("containers/auth.json"))),
    }
    let config = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| dirs::home_dir().map(|h| h.join(".config")));
    files.extend(config.map(|c| c.join("containers/auth.json")));
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => files.push(PathBuf::from(d).join("config.json")),
        None => files.extend(dirs::home_dir().map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// The keys an auth file may list `host` (and repository `path`) under, most specific first.
fn keys(host: &str, path: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let parts: Vec<&str> = path.split('/').collect();
    for n in (1..=parts.len()).rev() {
        keys.push(format!("{host}/{}", parts[..n].join("/")));
    }
    keys.push(host.to_string());
    if host == "docker.io" {
        keys.extend(["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"].map(String::from));
    } else {
        keys.push(format!("https://{host}"));
        keys.push(format!("http://{host}"));
    }
    keys
}

/// The server name a credential helper is asked about.
fn helper_server(host: &str) -> String {
    if host == "docker.io" { "https://index.docker.io/v1/".into() } else { host.into() }
}

/// Credentials for repository `path` on `host` (as written in references: `docker.io`,
/// `quay.io`, `localhost:5000`), or None for anonymous access.
pub fn credentials(host: &str, path: &str) -> Option<Creds> {
    if let (Ok(u), Ok(p)) = (std::env::var("STAGEBOX_REGISTRY_USER"), std::env::var("STAGEBOX_REGISTRY_PASSWORD")) {
        return Some(Creds { user: u, secret: p, origin: "$STAGEBOX_REGISTRY_USER".into() });
    }
    let keys = keys(host, path);
    for f in auth_files() {
        let Some(json) = std::fs::read(&f).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) else { continue };
        let origin = f.display().to_string();
        // credHelpers: the registry's own helper (keys are host names).
        if let Some(name) = json["credHelpers"][host].as_str().or_else(|| if host == "docker.io" { json["credHelpers"]["index.docker.io"].as_str() } else { None }) {
            if let Some(c) = helper(name, host) {
                return Some(c);
            }
        }
        for k in &keys {
            let e = &json["auths"][k.as_str()];
            if let Some(a) = e["auth"].as_str().filter(|a| !a.trim().is_empty()) {
                let dec = base64::engine::general_purpose::STANDARD.decode(a.trim()).ok().and_then(|b| String::from_utf8(b).ok());
                if let Some((u, p)) = dec.as_deref().and_then(|s| s.split_once(':')) {
                    return Some(Creds { user: u.into(), secret: p.into(), origin });
                }
            }
            if let (Some(u), Some(p)) = (e["username"].as_str(), e["password"].as_str()) {
                return Some(Creds { user: u.into(), secret: p.into(), origin });
            }
        }
        if let Some(name) = json["credsStore"].as_str().filter(|n| !n.is_empty()) {
            if let Some(c) = helper(name, host) {
                return Some(c);
            }
        }
    }
    None
}

/// `docker-credential-NAME get` for `host`; None when it has nothing (or is not installed).
fn helper(name: &str, host: &str) -> Option<Creds> {
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog).arg("get").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    child.stdin.take()?.write_all(helper_server(host).as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let (user, secret) = (j["Username"].as_str()?, j["Secret"].as_str()?);
    // `<token>` marks an identity token, which needs an OAuth2 exchange stagebox does not do.
    if user == "<token>" || secret.is_empty() {
        return None;
    }
    Some(Creds { user: user.into(), secret: secret.into(), origin: prog })
}

/// Percent-encode a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bearer token in a token server's JSON answer: `token`, else `access_token` (Docker's
/// token spec allows either).
pub fn token_from_response(body: &[u8]) -> std::result::Result<String, String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    json["token"].as_str().or_else(|| json["access_token"].as_str()).map(String::from).ok_or_else(|| "it holds no token".to_string())
}

/// Split `Bearer realm="x",service="y"` into the scheme and its parameters.
pub fn parse_challenge(s: &str) -> (String, Vec<(String, String)>) {
    let s = s.trim();
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            params.push((key.trim().to_ascii_lowercase(), String::new()));
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        params.push((key.trim().to_ascii_lowercase(), value));
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:stagex/a:pull,push""#);
        assert_eq!(s, "Bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.docker.io/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.docker.io".into()));
        assert_eq!(p[2], ("scope".into(), "repository:stagex/a:pull,push".into()));
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!((s.as_str(), p[0].1.as_str()), ("Basic", "Registry Realm"));
        assert_eq!(urlencode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn auth_keys_most_specific_first() {
        assert_eq!(keys("quay.io", "stagex/core-gcc")[..3], ["quay.io/stagex/core-gcc", "quay.io/stagex", "quay.io"]);
        assert!(keys("docker.io", "stagex/x").contains(&"https://index.docker.io/v1/".to_string()));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = Creds { user: "u".into(), secret: "hunter2".into(), origin: "f".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
