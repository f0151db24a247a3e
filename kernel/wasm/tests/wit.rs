//! Our copy of the WASI 0.2 WIT (`wit/`, which `bindgen!` reads: its `path:`
//! must lie inside this crate) is byte-identical to the `wit/` directory of
//! the pinned `wasip2` crate (a dev-dependency, so cargo has its source):
//! same files, same bytes. Upgrading WASI means bumping the pin and copying
//! the directory again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where cargo keeps the pinned `wasip2` source: `cargo metadata` names its
/// manifest, whatever the registry or vendoring setup.
fn pinned_wit() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let wasip2 = packages
        .iter()
        .find(|p| p["name"] == "wasip2" && p["version"] == "2.0.1+wasi-0.2.12")
        .expect("the pinned wasip2 in cargo metadata");
    let manifest = Path::new(wasip2["manifest_path"].as_str().expect("manifest_path"));
    manifest.parent().expect("crate directory").join("wit")
}

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read WIT file");
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    out
}

#[test]
fn wit_copy_is_byte_identical_to_the_pinned_wasip2_crate() {
    let ours = files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("wit"));
    let pinned = files(&pinned_wit());
    assert!(pinned.contains_key(Path::new("deps/cli.wit")), "{pinned:?}");
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&pinned), "same WIT files");
    for (name, bytes) in &pinned {
        assert!(
            ours[name] == *bytes,
            "wit/{} differs from the pinned crate's",
            name.display()
        );
    }
}
