//! Prints its arguments, its environment and the files of a mounted
//! directory (`CONFIG_DIR`, default `/config`), then tries to write there and
//! reports the OS error. With `DATA_DIR` set, writes and reads back a file in
//! that (writable) directory.
use std::fs;
use std::io::Write;

fn main() {
    for (i, arg) in std::env::args().enumerate() {
        println!("arg[{i}]={arg}");
    }
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (k, v) in &env {
        println!("env {k}={v}");
    }
    let dir = std::env::var("CONFIG_DIR").unwrap_or_else(|_| "/config".into());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read_dir {dir}: {e}"))
        .map(|entry| entry.expect("dir entry").file_name().into_string().expect("utf-8 name"))
        .collect();
    names.sort();
    for name in &names {
        let content = fs::read_to_string(format!("{dir}/{name}")).expect("read file");
        println!("file {name}={content}");
    }
    match fs::File::create(format!("{dir}/written-by-guest")) {
        Ok(_) => println!("write {dir}: ok"),
        Err(e) => println!("write {dir}: errno {}", e.raw_os_error().unwrap_or(-1)),
    }
    if let Ok(data) = std::env::var("DATA_DIR") {
        let path = format!("{data}/note.txt");
        let mut f = fs::File::create(&path).expect("create in data dir");
        f.write_all(b"written by env-reader").expect("write");
        drop(f);
        println!("data {}", fs::read_to_string(&path).expect("read back"));
    }
}
