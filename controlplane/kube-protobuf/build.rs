//! Compiles the vendored upstream `generated.proto` files (see
//! `proto/README.md`) into one descriptor set, embedded by `src/lib.rs`. protox
//! is a protobuf compiler in Rust: no `protoc` needed on the machine.

use prost::Message as _;

fn main() {
    let root = std::path::Path::new("proto");
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    collect(root, &mut files);
    files.sort();
    let relative: Vec<_> = files
        .iter()
        .map(|f| f.strip_prefix(root).expect("under proto/").to_path_buf())
        .collect();
    let set = protox::compile(&relative, [root]).unwrap_or_else(|e| panic!("{e:?}"));
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("kubernetes.fds"), set.encode_to_vec()).expect("writing descriptors");
}

fn collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading proto/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}
