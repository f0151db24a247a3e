//! Opens UDP sockets (plain Rust std, `wasm32-wasip2`) and keeps them all
//! until the node refuses one, then prints how many it got and why it was
//! refused: a pod's sockets are capped.
use std::net::UdpSocket;

fn main() {
    let mut held = Vec::new();
    loop {
        match UdpSocket::bind("0.0.0.0:0") {
            Ok(s) => held.push(s),
            Err(e) => {
                println!("opened {} sockets, then: {e}", held.len());
                return;
            }
        }
        if held.len() > 100_000 {
            println!("never refused");
            std::process::exit(1);
        }
    }
}
