//! A hostile registry (a tiny HTTP server in the test) answering with
//! endless or oversize bodies: every response (manifest, token answer, error
//! body, blob) is cut at its limit with a typed error, the connection is
//! dropped, and only a bounded number of bytes is ever read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use skiff_images::{Config, ImageService, PullError, PullFailure, PullPolicy, PullRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server sends past the headers of an endless answer, at most:
/// more than any limit, less than would hurt the test machine if a client
/// held it all.
const ENDLESS_CAP: u64 = 64 << 20;
/// Loopback socket buffers hold a few MiB the client never asked for.
const SLACK: u64 = 16 << 20;

#[derive(Clone)]
enum Reply {
    Fixed {
        status: &'static str,
        headers: Vec<String>,
        body: Vec<u8>,
    },
    /// Chunked zeros until the client goes away (or `ENDLESS_CAP`).
    Endless {
        status: &'static str,
        headers: Vec<String>,
    },
    /// `Content-Length: 1 TiB`, then zeros as above.
    Huge { status: &'static str },
}

fn ok_json(body: &str) -> Reply {
    Reply::Fixed {
        status: "200 OK",
        headers: vec!["Content-Type: application/json".into()],
        body: body.as_bytes().to_vec(),
    }
}

struct Request {
    path: String,
    authorization: Option<String>,
}

type Handler = dyn Fn(&Request, &str) -> Reply + Send + Sync;

#[derive(Default)]
struct Counters {
    /// Body bytes written to clients.
    written: AtomicU64,
    /// A client closed a connection in the middle of an endless body.
    cut: AtomicBool,
    requests: AtomicU64,
}

struct Server {
    host: String,
    counters: Arc<Counters>,
}

impl Server {
    /// `handler(request, "127.0.0.1:port")` answers each request.
    async fn start(handler: impl Fn(&Request, &str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let counters = Arc::new(Counters::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let (h, c) = (host.clone(), counters.clone());
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (handler, h, c) = (handler.clone(), h.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, &*handler, &h, &c).await;
                });
            }
        });
        Server { host, counters }
    }

    fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Waits until a client dropped an endless body.
    async fn wait_cut(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.counters.cut.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "the client kept the connection");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(
    mut sock: TcpStream,
    handler: &Handler,
    host: &str,
    c: &Counters,
) -> std::io::Result<()> {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if sock.read(&mut byte).await? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let path = text.split(' ').nth(1).unwrap_or("").to_string();
        let authorization = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("authorization: ")
                    .or_else(|| l.strip_prefix("Authorization: "))
            })
            .map(str::to_string);
        c.requests.fetch_add(1, Ordering::Relaxed);
        let reply = handler(
            &Request {
                path,
                authorization,
            },
            host,
        );
        match reply {
            Reply::Fixed {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
                for h in headers {
                    out.push_str(&h);
                    out.push_str("\r\n");
                }
                out.push_str("\r\n");
                sock.write_all(out.as_bytes()).await?;
                sock.write_all(&body).await?;
                c.written.fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            Reply::Endless { status, headers } => {
                let mut out = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n");
                for h in headers {
                    out.push_str(&h);
                    out.push_str("\r\n");
                }
                out.push_str("\r\n");
                sock.write_all(out.as_bytes()).await?;
                return endless(sock, true, c).await;
            }
            Reply::Huge { status } => {
                let out = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                    1u64 << 40
                );
                sock.write_all(out.as_bytes()).await?;
                return endless(sock, false, c).await;
            }
        }
    }
}

async fn endless(mut sock: TcpStream, chunked: bool, c: &Counters) -> std::io::Result<()> {
    let data = vec![b'0'; 64 << 10];
    let mut sent = 0;
    while sent < ENDLESS_CAP {
        let r = if chunked {
            let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
            frame.extend_from_slice(&data);
            frame.extend_from_slice(b"\r\n");
            sock.write_all(&frame).await
        } else {
            sock.write_all(&data).await
        };
        if r.is_err() {
            c.cut.store(true, Ordering::Relaxed);
            return Ok(());
        }
        sent += data.len() as u64;
        c.written.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    // Then nothing more, keeping the connection: a client that holds
    // everything waits for its timeout.
    let mut buf = [0u8; 1];
    let _ = sock.read(&mut buf).await;
    c.cut.store(true, Ordering::Relaxed);
    Ok(())
}

fn service(dir: &std::path::Path, listed: &[&str]) -> ImageService {
    let mut cfg = Config::new(dir.to_path_buf());
    cfg.insecure_registries = listed.iter().map(|s| s.to_string()).collect();
    ImageService::new(cfg).unwrap()
}

async fn pull(svc: &ImageService, image: &str) -> Result<(), PullError> {
    svc.pull(&PullRequest {
        reference: image,
        policy: PullPolicy::Always,
        credentials: &[],
    })
    .await
    .map(|_| ())
}

/// Fails `what` with `TooLarge` quickly, the server saw the connection
/// dropped, and no more than a limit's worth (plus socket buffers) was sent.
async fn assert_cut(server: &Server, image: &str, limit: u64, what: &str) -> PullError {
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &[&server.host]);
    let t = Instant::now();
    let e = pull(&svc, image).await.expect_err(what);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "{what}: took {:?}",
        t.elapsed()
    );
    assert_eq!(e.reason, PullFailure::TooLarge, "{what}: {e}");
    assert_eq!(e.reason.as_str(), "ErrImagePull");
    server.wait_cut().await;
    let written = server.written();
    assert!(
        written < limit + SLACK,
        "{what}: the server sent {written} bytes for a {limit}-byte limit"
    );
    e
}

const WASM_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_manifest_is_cut_at_its_limit() {
    let server = Server::start(|_, _| Reply::Endless {
        status: "200 OK",
        headers: vec!["Content-Type: application/vnd.oci.image.manifest.v1+json".into()],
    })
    .await;
    let e = assert_cut(
        &server,
        &format!("{}/x:1", server.host),
        4 << 20,
        "manifest",
    )
    .await;
    assert!(e.message.contains("manifest"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_content_length_is_refused_before_reading() {
    let server = Server::start(|_, _| Reply::Huge { status: "200 OK" }).await;
    let e = assert_cut(&server, &format!("{}/x:1", server.host), 0, "manifest").await;
    assert!(e.message.contains("Content-Length"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_token_answer_is_cut() {
    let server = Server::start(|r, host| {
        if r.path.starts_with("/token") {
            Reply::Endless {
                status: "200 OK",
                headers: vec![],
            }
        } else {
            Reply::Fixed {
                status: "401 Unauthorized",
                headers: vec![format!(
                    r#"WWW-Authenticate: Bearer realm="http://{host}/token",service="hostile""#
                )],
                body: Vec::new(),
            }
        }
    })
    .await;
    let e = assert_cut(&server, &format!("{}/x:1", server.host), 64 << 10, "token").await;
    assert!(e.message.contains("token answer"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_is_read_in_part() {
    let server = Server::start(|_, _| Reply::Endless {
        status: "404 Not Found",
        headers: vec![],
    })
    .await;
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &[&server.host]);
    let e = pull(&svc, &format!("{}/x:1", server.host))
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::ErrImagePull, "{e}");
    assert!(e.message.contains("not found"), "{e}");
    server.wait_cut().await;
    assert!(server.written() < (64 << 10) + SLACK);
}

/// A registry behind bearer tokens (exercising that path) whose manifest
/// declares a 100-byte module and whose blob never ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_blob_is_cut_at_its_declared_size() {
    let module = format!("sha256:{}", "a".repeat(64));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{{"mediaType":"application/vnd.wasm.config.v0+json","digest":"{WASM_CONFIG_DIGEST}","size":2}},
        "layers":[{{"mediaType":"application/wasm","digest":"{module}","size":100}}]}}"#
    );
    let server = Server::start(move |r, host| {
        if r.path.starts_with("/token") {
            return ok_json(r#"{"token":"t0k3n","expires_in":300}"#);
        }
        if r.authorization.as_deref() != Some("Bearer t0k3n") {
            return Reply::Fixed {
                status: "401 Unauthorized",
                headers: vec![format!(
                    r#"WWW-Authenticate: Bearer realm="http://{host}/token",service="hostile",scope="repository:x:pull""#
                )],
                body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}"#.to_vec(),
            };
        }
        if r.path.contains("/manifests/") {
            return ok_json(&manifest);
        }
        Reply::Endless {
            status: "200 OK",
            headers: vec![],
        }
    })
    .await;
    let e = assert_cut(&server, &format!("{}/x:1", server.host), 100, "blob").await;
    assert!(e.message.contains(&module), "{e}");
}

/// A redirect may not lead to plain HTTP on a host the operator did not
/// list (e.g. the plane's own ports on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_unlisted_plain_http_are_refused() {
    let target = Server::start(|_, _| ok_json("{}")).await;
    let to = target.host.clone();
    let server = Server::start(move |_, _| Reply::Fixed {
        status: "307 Temporary Redirect",
        headers: vec![format!("Location: http://{to}/v2/x/manifests/1")],
        body: Vec::new(),
    })
    .await;
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &[&server.host]);
    let e = pull(&svc, &format!("{}/x:1", server.host))
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::ErrImagePull, "{e}");
    assert!(e.message.contains("plain HTTP"), "{e}");
    assert_eq!(target.counters.requests.load(Ordering::Relaxed), 0);
}
