//! A real registry for tests: Debian's `docker-registry` on a free loopback port, pushed to
//! with `skopeo copy`. Shared by tests/registry.rs and tests/signatures.rs.
#![allow(dead_code)]

use crate::common::*;
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
    _dir: tempfile::TempDir,
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
        allow_plain_http_on_127_0_0_1();
        let bin = find_in_path("docker-registry")
            .or_else(|| Path::new("/usr/bin/docker-registry").is_file().then(|| "/usr/bin/docker-registry".into()))
            .unwrap_or_else(|| panic!("`docker-registry` is not installed: {INSTALL_HINT}"));
        let dir = tempdir();
        let port = free_port();
        let config = dir.path().join("config.yml");
        write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        );
        let r = Registry { child: Arc::new(Mutex::new(None)), port, config, _dir: dir };
        r.restart(&bin);
        r
    }

    pub fn restart(&self, bin: &Path) {
        let child = Command::new(bin)
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry: {e} ({INSTALL_HINT})"));
        *self.child.lock().unwrap() = Some(child);
        wait_for_port(self.port);
    }

    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
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

/// The registry's digest for `repo:tag` (what `skopeo inspect` reports).
pub fn remote_digest(reg: &Registry, repo: &str, tag: &str) -> String {
    let o = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw"]).arg(format!("docker://{}/{repo}:{tag}", reg.host())));
    format!("sha256:{}", sha256_hex(&o.stdout))
}

/// The `docker-registry` binary.
pub fn registry_bin() -> PathBuf {
    find_in_path("docker-registry").unwrap_or_else(|| "/usr/bin/docker-registry".into())
}
