//! A real OCI registry for tests: Debian's `docker-registry` (CNCF
//! distribution 2.8) on a loopback port with filesystem storage in a temp
//! dir, and pushes through the real oras-py client (`SKIFF_PYTHON`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The CNCF wasm artifact media types.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";
pub const WASM_LAYER_OLD: &str = "application/vnd.wasm.content.layer.v1+wasm";

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Push and manifest-upload helper run with the venv Python.
const PUSH_PY: &str = r#"
import json, sys
import oras.client, oras.defaults, requests

mode, host, user, password = sys.argv[1:5]
if mode == "push":
    target, config_path, config_type = sys.argv[5:8]
    files = sys.argv[8:]
    client = oras.client.OrasClient(hostname=host, insecure=True,
                                    auth_backend="basic" if user else "token")
    if user:
        client.auth.set_basic_auth(user, password)
    resp = client.push(target=f"{host}/{target}", files=files,
                       manifest_config=f"{config_path}:{config_type}",
                       disable_path_validation=True)
    print("DIGEST", resp.headers["Docker-Content-Digest"])
elif mode == "put-manifest":
    repo, ref, media_type, path = sys.argv[5:9]
    body = open(path, "rb").read()
    auth = (user, password) if user else None
    resp = requests.put(f"http://{host}/v2/{repo}/manifests/{ref}", data=body,
                        headers={"Content-Type": media_type}, auth=auth)
    if resp.status_code != 201:
        sys.exit(f"PUT manifest: {resp.status_code} {resp.text}")
    print("DIGEST", resp.headers["Docker-Content-Digest"])
"#;

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Registry {
        Self::launch(None)
    }

    /// A registry requiring HTTP basic auth for `user`/`pass` (htpasswd,
    /// bcrypt). Pushes from this handle authenticate.
    pub fn start_with_htpasswd(user: &str, pass: &str) -> Registry {
        Self::launch(Some((user.to_string(), pass.to_string())))
    }

    fn launch(auth: Option<(String, String)>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} not found: run `cargo xtask setup` (Debian package docker-registry)"
        );
        let dir = tempfile::tempdir().expect("registry temp dir");
        let port = skiff_qemu::free_port().expect("free port");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: skiff-test\n",
            storage.display()
        );
        if let Some((user, pass)) = &auth {
            let hash = bcrypt::hash(pass, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        std::fs::write(dir.path().join("push.py"), PUSH_PY).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {REGISTRY_BIN}: {e}"));
        let mut registry = Registry {
            child,
            port,
            dir,
            auth,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}):\n{}", self.log());
            }
            if let Some(status) = self.http_status("GET", "/v2/") {
                // 401 when auth is on: it answers, that is enough.
                assert!(status == 200 || status == 401, "/v2/ answered {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer /v2/ within 15 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The status of one plain HTTP request, `None` when nothing answers.
    pub fn http_status(&self, method: &str, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host()
        )
        .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    /// "127.0.0.1:PORT".
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage root (`docker/registry/v2/...` below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes `wasm` as a CNCF wasm artifact (config
    /// `application/vnd.wasm.config.v0+json`, one `application/wasm` layer)
    /// with oras-py; returns the manifest digest.
    pub fn push_wasm(&self, repo_tag: &str, wasm: &Path) -> String {
        self.push_artifact(repo_tag, WASM_CONFIG, &[(wasm, WASM_LAYER)])
    }

    /// [`Registry::push_wasm`] with the older layer media type
    /// `application/vnd.wasm.content.layer.v1+wasm`.
    pub fn push_wasm_old_layer_type(&self, repo_tag: &str, wasm: &Path) -> String {
        self.push_artifact(repo_tag, WASM_CONFIG, &[(wasm, WASM_LAYER_OLD)])
    }

    /// Any artifact: a config of `config_type` and `layers` (file, media
    /// type), pushed with oras-py; returns the manifest digest.
    pub fn push_artifact(
        &self,
        repo_tag: &str,
        config_type: &str,
        layers: &[(&Path, &str)],
    ) -> String {
        let config = self.dir.path().join("wasm-config.json");
        std::fs::write(&config, r#"{"architecture":"wasm","os":"wasip1"}"#).unwrap();
        let mut args = vec![
            repo_tag.to_string(),
            config.display().to_string(),
            config_type.to_string(),
        ];
        for (path, media) in layers {
            let path = path
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            args.push(format!("{}:{media}", path.display()));
        }
        self.python("push", &args)
    }

    /// Uploads a raw manifest (e.g. an image index) under `reference` (tag
    /// or digest); returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let path = self.dir.path().join("manifest.json");
        std::fs::write(&path, body).unwrap();
        self.python(
            "put-manifest",
            &[
                repo.to_string(),
                reference.to_string(),
                media_type.to_string(),
                path.display().to_string(),
            ],
        )
    }

    fn python(&self, mode: &str, args: &[String]) -> String {
        let (user, pass) = self.auth.clone().unwrap_or_default();
        let out = Command::new(crate::peers::python())
            .arg(self.dir.path().join("push.py"))
            .args([mode, &self.host(), &user, &pass])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("running the oras-py push script");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "oras-py {mode} {args:?} failed ({}):\n{stdout}\n{}\nregistry log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("DIGEST "))
            .unwrap_or_else(|| panic!("no digest in oras-py output:\n{stdout}"))
            .trim()
            .to_string()
    }

    /// Where the registry keeps the blob `digest` ("sha256:<hex>").
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Flips one byte in the middle of the stored blob (same length, so the
    /// registry still serves it whole): its content no longer matches
    /// `digest`.
    pub fn corrupt_blob(&self, digest: &str) {
        let path = self.blob_path(digest);
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!bytes.is_empty(), "empty blob {digest}");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sha256 digest of a file ("sha256:<hex>") via `sha256sum`-free Rust: the
/// tests compare it with what the image service reports.
pub fn file_digest(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("sha256:{:x}", Sha256::digest(&bytes))
}
