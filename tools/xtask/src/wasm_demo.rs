//! The demo's wasm images: a real registry (Debian's `docker-registry`) on
//! a loopback port, and pushes of the example guests (`tests/wasm`, built
//! by `skiff-build`) with the real oras client from the setup's
//! virtualenv, as a user would do it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const PUSH_PY: &str = r#"
import sys, oras.client
host, target, config, wasm = sys.argv[1:5]
client = oras.client.OrasClient(hostname=host, insecure=True)
resp = client.push(target=f"{host}/{target}", files=[f"{wasm}:application/wasm"],
                   manifest_config=f"{config}:application/vnd.wasm.config.v0+json",
                   disable_path_validation=True)
print(resp.headers["Docker-Content-Digest"])
"#;

/// A registry for the demo; stopped on drop.
pub struct Registry {
    child: Child,
    pub host: String,
    dir: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start(root: &Path) -> Result<Registry> {
        // Not under `target/demo`: the demo cluster wipes that when it
        // starts, after the registry.
        let dir = root.join("target/demo-registry");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = skiff_qemu::free_port()?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: skiff-demo\n",
                dir.join("storage").display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (run `cargo xtask setup`)")?;
        let reg = Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !http_get(port, "/v2/").is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
            if Instant::now() > deadline {
                bail!("docker-registry did not answer on {}", reg.host);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(reg)
    }

    /// Pushes `wasm` as a CNCF wasm artifact with oras; returns the
    /// manifest digest.
    pub fn push(&self, python: &Path, repo_tag: &str, wasm: &Path) -> Result<String> {
        let script = self.dir.join("push.py");
        let config = self.dir.join("config.json");
        std::fs::write(&script, PUSH_PY)?;
        std::fs::write(&config, r#"{"architecture":"wasm","os":"wasip1"}"#)?;
        let out = Command::new(python)
            .arg(&script)
            .args([self.host.as_str(), repo_tag])
            .arg(&config)
            .arg(wasm)
            .output()
            .context("running oras")?;
        if !out.status.success() {
            bail!(
                "oras push {repo_tag} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // oras prints its own progress first; the digest is the last line.
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.lines().last().unwrap_or("").trim().to_string())
    }
}

/// One plain HTTP GET on loopback; the whole answer.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: skiff-demo\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
