//! A TCP echo server (plain Rust std, `wasm32-wasip2`): listens on `PORT`
//! (default 7000; a containerPort of its pod), sends back what each client
//! sends until the client closes, one client at a time. With `COUNT` set it
//! exits after that many clients.
use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    let port: u16 = std::env::var("PORT").map_or(7000, |p| p.parse().expect("PORT"));
    let count: Option<usize> = std::env::var("COUNT").ok().map(|c| c.parse().expect("COUNT"));
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("listen on {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {port}");
    let mut served = 0;
    while count.is_none_or(|c| served < c) {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        let mut echoed = 0;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    conn.write_all(&buf[..n]).expect("echo");
                    echoed += n;
                }
                Err(e) => {
                    eprintln!("read: {e}");
                    break;
                }
            }
        }
        served += 1;
        println!("client {served}: echoed {echoed} bytes");
    }
}
