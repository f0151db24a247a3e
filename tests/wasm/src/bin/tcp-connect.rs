//! A TCP client (plain Rust std, `wasm32-wasip2`): connects to `ADDR`
//! (`host:port`, default 10.0.0.1:80), sends `MESSAGE` (default `hello`),
//! closes its sending side and prints what comes back. Names in `ADDR` are
//! resolved through the node. Exits 1 with the error if anything fails.
//!
//! With `REPEAT=n` it makes `n` such exchanges, each on a new connection
//! (as a client retrying through a Service would) and `PAUSE_MS` apart
//! (default 0), prints each as `attempt <i>: received: …` or
//! `attempt <i>: <error>`, and exits 1 only if none succeeded.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

fn exchange(addr: &str, message: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(message.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("receive: {e}"))?;
    Ok(reply)
}

fn main() {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "10.0.0.1:80".into());
    let message = std::env::var("MESSAGE").unwrap_or_else(|_| "hello".into());
    if let Ok(n) = std::env::var("REPEAT") {
        let n: usize = n.parse().expect("REPEAT");
        let pause: u64 = std::env::var("PAUSE_MS").map_or(0, |p| p.parse().expect("PAUSE_MS"));
        let mut ok = 0;
        for i in 0..n {
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(pause));
            }
            match exchange(&addr, &message) {
                Ok(reply) => {
                    ok += 1;
                    // One line per attempt: the reply's lines joined.
                    println!("attempt {i}: received: {}", reply.replace(['\r', '\n'], " "));
                }
                Err(e) => println!("attempt {i}: {e}"),
            }
        }
        println!("succeeded {ok} of {n}");
        std::process::exit(if ok > 0 { 0 } else { 1 });
    }
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
