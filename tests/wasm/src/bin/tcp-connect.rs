//! Opens a TCP connection to `ADDR` (default 10.0.0.1:80) with `std::net`.
//! Built for `wasm32-wasip2` it imports wasi:sockets, so a node that does
//! not serve sockets refuses it at compile time, naming the interface.
fn main() {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "10.0.0.1:80".into());
    match std::net::TcpStream::connect(&addr) {
        Ok(_) => println!("connected to {addr}"),
        Err(e) => {
            eprintln!("connect {addr}: {e}");
            std::process::exit(1);
        }
    }
}
