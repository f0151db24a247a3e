//! Resolves each argument as a host name through the node (plain Rust std,
//! `wasm32-wasip2`) and prints its IPv4 addresses, sorted, or the error.
//! Exits 1 if any name failed.
use std::net::{IpAddr, ToSocketAddrs};

fn main() {
    let mut failed = false;
    for name in std::env::args().skip(1) {
        match (name.as_str(), 0).to_socket_addrs() {
            Ok(addrs) => {
                let mut v4: Vec<IpAddr> = addrs
                    .map(|a| a.ip())
                    .filter(IpAddr::is_ipv4)
                    .collect();
                v4.sort();
                v4.dedup();
                let list: Vec<String> = v4.iter().map(ToString::to_string).collect();
                println!("{name}: {}", list.join(" "));
            }
            Err(e) => {
                println!("{name}: error: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
