//! UDP both ways (plain Rust std, `wasm32-wasip2`). With `ADDR` set it is a
//! client: sends `MESSAGE` (default `ping`) to `ADDR` and prints the reply
//! (retrying a few times: UDP may drop). Otherwise it is an echo server on
//! `PORT` (default 7001; a UDP containerPort of its pod) that answers `COUNT`
//! datagrams (default: forever).
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() {
    match std::env::var("ADDR") {
        Ok(addr) => client(&addr),
        Err(_) => server(),
    }
}

fn client(addr: &str) {
    let message = std::env::var("MESSAGE").unwrap_or_else(|_| "ping".into());
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket.connect(addr).expect("connect");
    // Read timeouts are not a WASI 0.2 socket option: poll instead.
    socket.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        socket.send(message.as_bytes()).expect("send");
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_secs(2) {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    println!("reply: {}", String::from_utf8_lossy(&buf[..n]));
                    return;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    eprintln!("receive: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    eprintln!("no reply from {addr}");
    std::process::exit(1);
}

fn server() {
    let port: u16 = std::env::var("PORT").map_or(7001, |p| p.parse().expect("PORT"));
    let count: Option<usize> = std::env::var("COUNT").ok().map(|c| c.parse().expect("COUNT"));
    let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    println!("udp echo on {port}");
    let mut buf = [0u8; 1500];
    let mut served = 0;
    while count.is_none_or(|c| served < c) {
        let (n, from) = socket.recv_from(&mut buf).expect("receive");
        socket.send_to(&buf[..n], from).expect("send");
        served += 1;
        println!("echoed {n} bytes");
    }
}
