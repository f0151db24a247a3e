//! A WASI preview 2 component (built for `wasm32-wasip2`) using `std::fs`
//! on the pod's volumes. Each argument after argv[0] is one operation, run
//! in order, printing `<op> <path>: <result>` (errors as `io::ErrorKind` and
//! WASI errno):
//!
//! - `write:PATH=TEXT`, `append:PATH=TEXT`, `read:PATH`, `ls:PATH` (sorted
//!   names), `mkdir:PATH`, `rmdir:PATH`, `rm:PATH`, `rename:FROM=TO`,
//!   `size:PATH`
//! - `fill:PATH=N` appends N bytes of `x` in one `write` call
//!
//! Without operations it runs a demo on `DATA_DIR` (an emptyDir, default
//! `/data`) and `CONFIG_DIR` (a ConfigMap holding `greeting`, default
//! `/config`).
use std::fs;
use std::io::Write;

fn main() {
    let mut ops: Vec<String> = std::env::args().skip(1).collect();
    if ops.is_empty() {
        let data = std::env::var("DATA_DIR").unwrap_or_else(|_| "/data".into());
        let config = std::env::var("CONFIG_DIR").unwrap_or_else(|_| "/config".into());
        ops = [
            format!("write:{data}/notes.txt=hello"),
            format!("append:{data}/notes.txt= world"),
            format!("read:{data}/notes.txt"),
            format!("mkdir:{data}/sub"),
            format!("write:{data}/sub/inner.txt=inside"),
            format!("ls:{data}"),
            format!("ls:{data}/sub"),
            format!("rmdir:{data}/sub"),
            format!("rm:{data}/sub/inner.txt"),
            format!("rmdir:{data}/sub"),
            format!("ls:{data}"),
            format!("read:{config}/greeting"),
            format!("write:{config}/greeting=changed"),
            format!("read:{config}/greeting"),
        ]
        .into();
    }
    for op in &ops {
        let (name, arg) = op.split_once(':').expect("operation is NAME:ARGS");
        let (path, value) = arg.split_once('=').unwrap_or((arg, ""));
        let result = run(name, path, value);
        let result = result.unwrap_or_else(|e| {
            format!(
                "error {:?} (errno {})",
                e.kind(),
                e.raw_os_error().unwrap_or(-1)
            )
        });
        println!("{name} {path}: {result}");
    }
}

fn run(name: &str, path: &str, value: &str) -> std::io::Result<String> {
    let ok = |()| "ok".to_string();
    match name {
        "write" => fs::write(path, value).map(ok),
        "append" => fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map(ok),
        "fill" => {
            let n: usize = value.parse().expect("fill:PATH=N");
            let mut f = fs::OpenOptions::new().append(true).open(path)?;
            f.write(&vec![b'x'; n]).map(|n| format!("wrote {n}"))
        }
        "read" => fs::read_to_string(path),
        "ls" => {
            let mut names = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()?;
            names.sort();
            Ok(names.join(" "))
        }
        "mkdir" => fs::create_dir(path).map(ok),
        "rmdir" => fs::remove_dir(path).map(ok),
        "rm" => fs::remove_file(path).map(ok),
        "rename" => fs::rename(path, value).map(ok),
        "size" => fs::metadata(path).map(|m| m.len().to_string()),
        _ => panic!("unknown operation {name}"),
    }
}
