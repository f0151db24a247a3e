//! A `wasi:http/outgoing-handler` client (built for `wasm32-wasip2`): sends
//! a request to `URL` (`http://host[:port]/path`; `https://` is passed on
//! as such) — a `POST` of `BODY` if set, else a `GET` — and prints the
//! status and the body, or the error code (exit 1).
use std::io::{Read as _, Write as _};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

fn main() {
    let url = std::env::var("URL").expect("URL");
    let body = std::env::var("BODY").ok();
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((_, rest)) => (Scheme::Http, rest),
        None => (Scheme::Http, url.as_str()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut headers = Vec::new();
    if let Some(body) = &body {
        headers.push((
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ));
    }
    let request = OutgoingRequest::new(Fields::from_list(&headers).expect("headers"));
    request.set_scheme(Some(&scheme)).expect("scheme");
    request.set_authority(Some(authority)).expect("authority");
    request.set_path_with_query(Some(path)).expect("path");
    let outgoing = body.as_ref().map(|_| {
        request.set_method(&Method::Post).expect("method");
        request.body().expect("request body")
    });
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => fail(code),
    };
    if let (Some(outgoing), Some(body)) = (outgoing, &body) {
        let mut stream = outgoing.write().expect("body stream");
        stream.write_all(body.as_bytes()).expect("writing the body");
        stream.flush().expect("flushing the body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("finishing the body");
    }
    future.subscribe().block();
    let response = match future.get().expect("ready").expect("once") {
        Ok(response) => response,
        Err(code) => fail(code),
    };
    println!("status: {}", response.status());
    let incoming = response.consume().expect("response body");
    let mut text = Vec::new();
    incoming
        .stream()
        .expect("body stream")
        .read_to_end(&mut text)
        .expect("reading the body");
    print!("{}", String::from_utf8_lossy(&text));
}

fn fail(code: wasip2::http::types::ErrorCode) -> ! {
    println!("error: {code:?}");
    std::process::exit(1);
}
