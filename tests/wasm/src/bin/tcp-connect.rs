//! A TCP client (plain Rust std, `wasm32-wasip2`): connects to `ADDR`
//! (`host:port`, default 10.0.0.1:80), sends `MESSAGE` (default `hello`),
//! closes its sending side and prints what comes back. Names in `ADDR` are
//! resolved through the node. Exits 1 with the error if anything fails.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

fn main() {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "10.0.0.1:80".into());
    let message = std::env::var("MESSAGE").unwrap_or_else(|_| "hello".into());
    let mut stream = match TcpStream::connect(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect: {e}");
            std::process::exit(1);
        }
    };
    println!("connected");
    stream.write_all(message.as_bytes()).expect("send");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    println!("sent {} bytes", message.len());
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("receive");
    println!("received: {reply}");
}
