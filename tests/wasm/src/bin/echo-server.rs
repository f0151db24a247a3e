//! An HTTP/1.1 echo server like Kubernetes' echoserver: answers every request
//! with the pod name (`POD_NAME`), the request line and the headers. Serves
//! the listening socket the runtime preopened (fd 3, or `LISTEN_FD`), one
//! connection at a time; exits after `MAX_REQUESTS` requests if set.
//! `GET /unready` makes later requests for `/ready` answer 503 (a
//! readiness probe there then fails), `GET /ready-again` undoes it.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::wasi::io::FromRawFd;

fn main() {
    let fd: i32 = std::env::var("LISTEN_FD").map_or(3, |v| v.parse().expect("LISTEN_FD"));
    // SAFETY: the runtime preopens a listening socket at this fd for the
    // container port; nothing else in this program owns it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
    let max: Option<u64> = std::env::var("MAX_REQUESTS").ok().map(|v| v.parse().expect("MAX_REQUESTS"));
    println!("echo-server {pod} listening on fd {fd}");
    let mut served = 0u64;
    let mut ready = true;
    while max.is_none_or(|m| served < m) {
        let (stream, _) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        match serve(stream, &pod, &mut ready) {
            Ok(line) => println!("served {line}"),
            Err(e) => eprintln!("connection: {e}"),
        }
        served += 1;
    }
}

fn serve(stream: TcpStream, pod: &str, ready: &mut bool) -> std::io::Result<String> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let request_line = request_line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, uri, version) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    match uri.as_str() {
        "/unready" => *ready = false,
        "/ready-again" => *ready = true,
        _ => {}
    }
    let status = if uri == "/ready" && !*ready {
        "503 Service Unavailable"
    } else {
        "200 OK"
    };
    let mut body = format!(
        "\n\nHostname: {pod}\n\nRequest Information:\n\tmethod={method}\n\trequest_uri={uri}\n\trequest_version={version}\n\nRequest Headers:\n"
    );
    for (name, value) in &headers {
        body.push_str(&format!("\t{name}={value}\n"));
    }
    body.push_str("\nRequest Body:\n\t-no body in request-\n\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both).ok();
    Ok(request_line)
}
