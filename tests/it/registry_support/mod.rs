//! A real registry for tests: Debian's `docker-registry` on a free loopback port, pushed to
//! with `skopeo copy`. Shared by tests/it/registry.rs and tests/it/signatures.rs.
#![allow(dead_code)]

use crate::common::*;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `docker-registry`, killed when dropped.
pub struct Registry {
    pub child: Arc<Mutex<Option<Child>>>,
    pub port: u16,
    config: PathBuf,
    /// The storage root (another registry may serve the same one).
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a test registry serves: its own storage or another's, TLS, authentication.
#[derive(Default)]
pub struct RegistryOpts {
    /// Serve this storage root (pushed into through another, plain registry).
    pub data: Option<PathBuf>,
    /// TLS certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The `auth:` section of the registry's config, in YAML, indented by two spaces.
    pub auth: Option<String>,
    /// With `tls`: require client certificates signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_for_port(port: u16) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "nothing listens on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// stagebox speaks HTTPS to every registry unless the host is named insecure. The plain-HTTP
/// test registries listen on 127.0.0.1, so every stagebox this test process starts names that
/// host (any port) insecure; the TLS tests use `localhost` and remove the variable.
pub fn allow_plain_http_on_127_0_0_1() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Set once, before the first registry is started; std serializes environment access.
    ONCE.call_once(|| std::env::set_var("STAGEBOX_INSECURE_REGISTRIES", "127.0.0.1"));
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(RegistryOpts::default())
    }

    pub fn start_with(opts: RegistryOpts) -> Registry {
        allow_plain_http_on_127_0_0_1();
        let bin = find_in_path("docker-registry")
            .or_else(|| Path::new("/usr/bin/docker-registry").is_file().then(|| "/usr/bin/docker-registry".into()))
            .unwrap_or_else(|| panic!("`docker-registry` is not installed: {INSTALL_HINT}"));
        let dir = tempdir();
        let port = free_port();
        let config = dir.path().join("config.yml");
        let data = opts.data.unwrap_or_else(|| dir.path().join("data"));
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        );
        if let Some((cert, key)) = &opts.tls {
            yaml.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
            if let Some(ca) = &opts.client_ca {
                yaml.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
        }
        if let Some(a) = &opts.auth {
            yaml.push_str(&format!("auth:\n{a}"));
        }
        write(&config, yaml);
        let r = Registry { child: Arc::new(Mutex::new(None)), port, config, data, _dir: dir };
        r.restart(&bin);
        r
    }

    /// Start the registry process. It runs under a small `sh` that holds our end of a pipe on
    /// its stdin and kills the registry when that pipe closes: when [`stop_child`] closes it,
    /// and also when this test process exits without dropping the `Registry` (a fixture kept
    /// in a `static`), so no registry outlives the suite.
    pub fn restart(&self, bin: &Path) {
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" serve "$1" </dev/null >/dev/null 2>&1 & p=$!; read -r _; kill -9 "$p" 2>/dev/null; wait "$p"; exit 0"#)
            .arg(bin)
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry: {e} ({INSTALL_HINT})"));
        *self.child.lock().unwrap() = Some(child);
        wait_for_port(self.port);
    }

    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            stop_child(&mut c);
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `skopeo copy [extra] oci:LAYOUT:TAG docker://127.0.0.1:PORT/REPO:TAG`.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, extra: &[&str]) {
        require_tool("skopeo");
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet", "--dest-tls-verify=false"]).args(extra);
        c.arg(format!("oci:{}:{tag}", layout.display())).arg(format!("docker://{}/{repo}:{tag}", self.host()));
        run(&mut c);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stop a registry started by [`Registry::restart`]: close its watchdog's stdin and wait
/// until the registry is dead (killed with SIGKILL, so a pull in flight breaks off).
pub fn stop_child(c: &mut Child) {
    drop(c.stdin.take());
    let _ = c.wait();
}

/// The registry's digest for `repo:tag` (what `skopeo inspect` reports).
pub fn remote_digest(reg: &Registry, repo: &str, tag: &str) -> String {
    let o = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw"]).arg(format!("docker://{}/{repo}:{tag}", reg.host())));
    format!("sha256:{}", sha256_hex(&o.stdout))
}

/// The `docker-registry` binary.
pub fn registry_bin() -> PathBuf {
    find_in_path("docker-registry").unwrap_or_else(|| "/usr/bin/docker-registry".into())
}

// ---------------------------------------------------------------------------------------------
// A test CA, a token server, and an HTTP proxy that misbehaves on purpose
// ---------------------------------------------------------------------------------------------

/// A CA made with `openssl`, and a server certificate it signed for `localhost` and 127.0.0.1.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    require_tool("openssl");
    run(Command::new("openssl").current_dir(dir).args(args).stdin(Stdio::null()));
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempdir();
        let d = dir.path();
        openssl(d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=stagebox test CA", "-days", "2"]);
        openssl(d, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
        write(&d.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
        openssl(d, &["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf"]);
        TestCa { ca_cert: d.join("ca.crt"), server_cert: d.join("server.crt"), server_key: d.join("server.key"), dir }
    }

    /// A client certificate (for mutual TLS) signed by this CA: `client.cert`, `client.key`.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        openssl(d, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=stagebox test client"]);
        write(&d.join("client-ext.cnf"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
        openssl(d, &["x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.cert", "-days", "2", "-extfile", "client-ext.cnf"]);
        (d.join("client.cert"), d.join("client.key"))
    }
}

/// One request a test server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Read one request head (GET requests have no body).
fn read_head(c: &mut TcpStream) -> Option<(String, Seen)> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b).ok()? == 0 {
            return None;
        }
        if head.is_empty() && b[0] == 0x16 {
            // A TLS ClientHello: this server speaks plain HTTP; hang up, as a real one would.
            return None;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next()?.to_string();
    let path = first.split(' ').nth(1)?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((first, Seen { path, headers }))
}

/// A tiny HTTP/1.1 server on 127.0.0.1: every connection serves one request with `handle`.
/// Stopped (and its accept loop joined) when dropped.
pub struct Server {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(handle: impl Fn(&Seen, usize, &mut TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2, handle) = (seen.clone(), stop.clone(), Arc::new(handle));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let (seen, handle) = (seen2.clone(), handle.clone());
                std::thread::spawn(move || {
                    let Some((_, req)) = read_head(&mut c) else { return };
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.push(req.clone());
                        s.iter().filter(|r| r.path == req.path).count()
                    };
                    handle(&req, n, &mut c);
                    let _ = c.flush();
                    let _ = c.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Server { port, seen, stop, thread: Some(thread) }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answer with a status, extra headers and a body.
pub fn respond(c: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut h = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    let _ = c.write_all(h.as_bytes());
    let _ = c.write_all(body);
}

/// Send `req` to the registry on `upstream` and relay its answer; with `cut`, stop after
/// that many body bytes and drop the connection.
pub fn forward(req: &Seen, upstream: u16, c: &mut TcpStream, cut: Option<u64>) {
    use std::io::Read;
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    let mut head = format!("GET {} HTTP/1.1\r\n", req.path);
    for (k, v) in &req.headers {
        if k != "connection" && k != "host" {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Host: 127.0.0.1:{upstream}\r\nConnection: close\r\n\r\n"));
    if up.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut buf = vec![0u8; 65536];
    let mut sent_body: Option<u64> = None;
    let mut pending = Vec::new();
    loop {
        let n = match up.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        if sent_body.is_none() {
            pending.extend_from_slice(chunk);
            let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            if c.write_all(&pending[..i + 4]).is_err() {
                return;
            }
            sent_body = Some(0);
            let rest = pending.split_off(i + 4);
            pending.clear();
            pending.extend(rest);
            chunk = &[];
        }
        let mut out = std::mem::take(&mut pending);
        out.extend_from_slice(chunk);
        let done = sent_body.unwrap();
        let take = match cut {
            Some(limit) => (limit.saturating_sub(done) as usize).min(out.len()),
            None => out.len(),
        };
        if c.write_all(&out[..take]).is_err() {
            return;
        }
        sent_body = Some(done + take as u64);
        if cut.is_some_and(|l| done + take as u64 >= l) {
            return;
        }
    }
}

/// A token server for distribution's `auth.token`: RS256 JWTs signed by `openssl` with a
/// self-signed key whose certificate goes in the `x5c` header and in the registry's
/// `rootcertbundle`. Grants pull on the scope asked for, only with the Basic credentials given
/// (or to anyone with None).
pub struct TokenServer {
    pub server: Server,
    pub cert: PathBuf,
    pub dir: tempfile::TempDir,
}

pub const TOKEN_ISSUER: &str = "stagebox-test-issuer";
pub const TOKEN_SERVICE: &str = "stagebox-test-registry";

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenServer {
    pub fn start(basic: Option<(&str, &str)>) -> TokenServer {
        use base64::Engine as _;
        let dir = tempdir();
        let d = dir.path().to_path_buf();
        openssl(&d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token.key", "-out", "token.crt", "-subj", "/CN=stagebox test token signer", "-days", "2"]);
        openssl(&d, &["x509", "-in", "token.crt", "-outform", "DER", "-out", "token.der"]);
        let x5c = base64::engine::general_purpose::STANDARD.encode(read(&d.join("token.der")));
        let want = basic.map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let key = d.join("token.key");
        let server = Server::start(move |req, n, c| {
            if want.is_some() && req.header("authorization") != want.as_deref() {
                respond(c, "401 Unauthorized", &[], b"{\"details\":\"bad credentials\"}");
                return;
            }
            let q = req.path.split_once('?').map_or("", |(_, q)| q);
            let scope = q.split('&').find_map(|kv| kv.strip_prefix("scope=")).unwrap_or("");
            let scope = scope.replace("%3A", ":").replace("%2F", "/").replace("%2C", ",");
            let access: Vec<serde_json::Value> = scope
                .split(' ')
                .filter_map(|s| {
                    let mut p = s.splitn(3, ':');
                    let (t, name, _) = (p.next()?, p.next()?, p.next()?);
                    Some(serde_json::json!({"type": t, "name": name, "actions": ["pull"]}))
                })
                .collect();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
            let claims = serde_json::json!({"iss": TOKEN_ISSUER, "sub": "", "aud": TOKEN_SERVICE, "exp": now + 600,
                "nbf": now - 60, "iat": now, "jti": format!("t{n}"), "access": access});
            let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
            let mut sign = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            sign.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
            let sig = sign.wait_with_output().unwrap().stdout;
            let token = format!("{signing_input}.{}", b64url(&sig));
            respond(c, "200 OK", &[("Content-Type", "application/json".into())], serde_json::json!({"token": token}).to_string().as_bytes());
        });
        TokenServer { server, cert: d.join("token.crt"), dir }
    }

    /// The registry's `auth:` section for this token server.
    pub fn auth_yaml(&self) -> String {
        format!(
            "  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.server.port,
            self.cert.display()
        )
    }
}

/// An htpasswd file (bcrypt, as distribution requires) for one user, made with `htpasswd`.
pub fn htpasswd(dir: &Path, user: &str, password: &str) -> PathBuf {
    require_tool("htpasswd");
    let o = run(Command::new("htpasswd").args(["-Bbn", user, password]));
    let p = dir.join("htpasswd");
    write(&p, o.stdout);
    p
}
