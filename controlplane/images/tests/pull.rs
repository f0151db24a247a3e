//! The image service against a real registry (Debian's docker-registry) with
//! images pushed by the real oras-py client; guests from `tests/wasm`.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use skiff_e2e::registry::{Registry, file_digest};
use skiff_images::{
    Config, Credential, ImageService, PullError, PullFailure, PullPolicy, PullRequest, Pulled,
};

/// The service with `reg` listed as a plain-HTTP registry.
fn service(dir: &Path, reg: &Registry) -> ImageService {
    let mut cfg = Config::new(dir.to_path_buf());
    cfg.insecure_registries = vec![reg.host()];
    ImageService::new(cfg).expect("image service")
}

async fn pull(
    svc: &ImageService,
    reference: &str,
    policy: PullPolicy,
) -> Result<Arc<Pulled>, PullError> {
    pull_as(svc, reference, policy, &[]).await
}

async fn pull_as(
    svc: &ImageService,
    reference: &str,
    policy: PullPolicy,
    credentials: &[Credential],
) -> Result<Arc<Pulled>, PullError> {
    svc.pull(&PullRequest {
        reference,
        policy,
        credentials,
    })
    .await
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The artifact is served, matches its digest and is an x86-64 ELF object
/// (a `.cwasm`) that a host-target engine refuses (it is for the kernel).
fn check_artifact(svc: &ImageService, p: &Pulled) {
    let artifact = svc.artifact(&p.artifact_digest).expect("artifact served");
    assert_eq!(sha256(&artifact), p.artifact_digest);
    assert_eq!(artifact.len() as u64, p.artifact_size);
    assert_eq!(&artifact[..4], b"\x7fELF", "not an ELF artifact");
    assert_eq!(artifact[4], 2, "not ELF64");
    assert_eq!(
        u16::from_le_bytes([artifact[18], artifact[19]]),
        0x3e,
        "not x86-64"
    );
    let host =
        skiff_wasm::Runtime::new(&skiff_wasm::engine_config(skiff_wasm::Target::Host)).unwrap();
    assert!(
        host.load(&artifact).is_err(),
        "a kernel artifact must not load on the host engine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_for_listed_registries() {
    let hello = skiff_e2e::guests::path("hello");
    let reg = Registry::start();
    reg.push_wasm("demo/hello:1.0", &hello);
    let image = format!("{}/demo/hello:1.0", reg.host());
    let cache = tempfile::tempdir().unwrap();
    // Not listed: HTTPS only, even on loopback, so the pull fails.
    let strict = ImageService::new(Config::new(cache.path().join("strict"))).unwrap();
    let e = pull(&strict, &image, PullPolicy::Always)
        .await
        .expect_err("plain HTTP to an unlisted registry");
    assert_eq!(e.reason, PullFailure::ErrImagePull, "{e}");
    assert_eq!(strict.stats().downloads, 0);
    // Listed: plain HTTP.
    let svc = service(cache.path(), &reg);
    pull(&svc, &image, PullPolicy::Always)
        .await
        .expect("listed registry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiles_run_at_most_max_concurrent_compiles_at_once() {
    let reg = Registry::start();
    let guests = ["hello", "echo-server", "cpu-burner", "trap"];
    for g in guests {
        reg.push_wasm(&format!("demo/{g}:1"), &skiff_e2e::guests::path(g));
    }
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(cache.path().to_path_buf());
    cfg.insecure_registries = vec![reg.host()];
    cfg.max_concurrent_compiles = 1;
    let svc = ImageService::new(cfg).unwrap();
    let images: Vec<String> = guests
        .iter()
        .map(|g| format!("{}/demo/{g}:1", reg.host()))
        .collect();
    let pulls = images.iter().map(|i| pull(&svc, i, PullPolicy::Always));
    for r in futures_util::future::join_all(pulls).await {
        r.expect("pull");
    }
    let s = svc.stats();
    assert_eq!((s.compiles, s.peak_compiling), (4, 1), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_and_digest_compiles_once() {
    let hello = skiff_e2e::guests::path("hello");
    let reg = Registry::start();
    let manifest = reg.push_wasm("demo/hello:1.0", &hello);
    reg.push_wasm("demo/hello:copy", &hello);
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &reg);
    let host = reg.host();

    // Two tags of the same module at once: one download, one compile.
    let by_tag = format!("{host}/demo/hello:1.0");
    let copy = format!("{host}/demo/hello:copy");
    let (a, b) = tokio::join!(
        pull(&svc, &by_tag, PullPolicy::IfNotPresent),
        pull(&svc, &copy, PullPolicy::IfNotPresent)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.reference, by_tag);
    assert_eq!(a.image_id, format!("{host}/demo/hello@{manifest}"));
    assert_eq!(a.module_digest, file_digest(&hello));
    assert_eq!(a.artifact_digest, b.artifact_digest);
    check_artifact(&svc, &a);
    let s = svc.stats();
    assert_eq!((s.compiles, s.downloads, s.cache_hits), (1, 1, 1), "{s:?}");

    // By digest: resolved, not recompiled.
    let by_digest = format!("{host}/demo/hello@{manifest}");
    let d = pull(&svc, &by_digest, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(d.image_id, a.image_id);
    assert_eq!(d.artifact_digest, a.artifact_digest);
    // IfNotPresent again: no registry round trip at all.
    let resolves = svc.stats().resolves;
    pull(&svc, &by_tag, PullPolicy::IfNotPresent).await.unwrap();
    assert_eq!(svc.stats().resolves, resolves);
    // Always re-resolves the tag but reuses the compiled module.
    let again = pull(&svc, &by_tag, PullPolicy::Always).await.unwrap();
    assert_eq!(again.artifact_digest, a.artifact_digest);
    let s = svc.stats();
    assert_eq!(s.resolves, resolves + 1, "{s:?}");
    assert_eq!((s.compiles, s.downloads), (1, 1), "{s:?}");

    // A tag moved to another module: Always sees it.
    reg.push_wasm("demo/hello:1.0", &skiff_e2e::guests::path("trap"));
    let moved = pull(&svc, &by_tag, PullPolicy::Always).await.unwrap();
    assert_ne!(moved.artifact_digest, a.artifact_digest);
    assert_eq!(
        moved.module_digest,
        file_digest(&skiff_e2e::guests::path("trap"))
    );
    assert_eq!(svc.stats().compiles, 2);

    // Unknown digests are not served.
    assert!(
        svc.artifact(&format!("sha256:{}", "0".repeat(64)))
            .is_none()
    );
    assert!(svc.artifact("sha256:../../etc/passwd").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_layer_type_and_image_index() {
    let hello = skiff_e2e::guests::path("hello");
    let reg = Registry::start();
    let host = reg.host();
    let old = reg.push_wasm_old_layer_type("old:1", &hello);
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &reg);
    let p = pull(&svc, &format!("{host}/old:1"), PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(p.image_id, format!("{host}/old@{old}"));
    check_artifact(&svc, &p);

    // An index whose wasm entry is the manifest above.
    let size = std::fs::metadata(reg.blob_path(&old)).unwrap().len();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{old}","size":{size},
            "platform":{{"os":"wasip1","architecture":"wasm"}}}}]}}"#
    );
    let index_digest = reg.put_manifest(
        "old",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );
    let i = pull(&svc, &format!("{host}/old:multi"), PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(i.image_id, format!("{host}/old@{index_digest}"));
    assert_eq!(i.artifact_digest, p.artifact_digest);
    assert_eq!(svc.stats().compiles, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_failures_are_clear() {
    let hello = skiff_e2e::guests::path("hello");
    let reg = Registry::start();
    let host = reg.host();
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &reg);

    for missing in [format!("{host}/nothing:1"), format!("{host}/nothing")] {
        let e = pull(&svc, &missing, PullPolicy::Always).await.unwrap_err();
        assert_eq!(e.reason, PullFailure::ErrImagePull, "{e}");
        assert!(e.message.contains("not found"), "{e}");
    }
    reg.push_wasm("app:1", &hello);
    let e = pull(&svc, &format!("{host}/app:2"), PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(e.message.contains("not found"), "{e}");

    // Corrupt the stored module blob: the digest check names both digests.
    let module = file_digest(&hello);
    reg.corrupt_blob(&module);
    let e = pull(&svc, &format!("{host}/app:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::ErrImagePull, "{e}");
    assert!(e.message.contains("digest mismatch"), "{e}");
    assert!(e.message.contains(&format!("expected {module}")), "{e}");
    assert_eq!(svc.stats().compiles, 0);

    // Nothing listens: a connection error, not a hang.
    let port = free_port();
    let e = pull(&svc, &format!("127.0.0.1:{port}/x:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::ErrImagePull, "{e}");
    assert!(e.message.contains("cannot reach"), "{e}");

    let e = pull(&svc, "Bad/Name", PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::InvalidImageName, "{e}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_that_are_not_wasm_modules() {
    let hello = skiff_e2e::guests::path("hello");
    let reg = Registry::start();
    let host = reg.host();
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &reg);
    let files = tempfile::tempdir().unwrap();

    let text = files.path().join("notes.txt");
    std::fs::write(&text, "Hello, this is not wasm\n").unwrap();
    reg.push_wasm("text:1", &text);
    let e = pull(&svc, &format!("{host}/text:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::InvalidImage, "{e}");
    assert!(e.message.contains("not a WebAssembly module"), "{e}");
    assert!(e.message.contains("Hello, this is"), "{e}");

    // An empty component (preview 2 header only): nothing to run.
    let component = files.path().join("component.wasm");
    std::fs::write(&component, b"\0asm\x0d\x00\x01\x00").unwrap();
    reg.push_wasm("component:1", &component);
    let e = pull(&svc, &format!("{host}/component:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::InvalidImage, "{e}");
    assert!(e.message.contains("exports neither wasi:cli/run"), "{e}");

    // Valid magic, broken body: wasmtime's validation error.
    let broken = files.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\x00\x00\x00\x01\xff").unwrap();
    reg.push_wasm("broken:1", &broken);
    let e = pull(&svc, &format!("{host}/broken:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::InvalidImage, "{e}");
    assert!(e.message.contains("invalid WebAssembly module"), "{e}");

    // An OCI container image config: not a wasm artifact.
    reg.push_artifact(
        "oci:1",
        "application/vnd.oci.image.config.v1+json",
        &[(&hello, "application/vnd.oci.image.layer.v1.tar")],
    );
    let e = pull(&svc, &format!("{host}/oci:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::InvalidImage, "{e}");
    assert!(
        e.message
            .contains("config media type is \"application/vnd.oci.image.config.v1+json\""),
        "{e}"
    );

    // Right config, no wasm layer; and two wasm layers.
    reg.push_artifact(
        "nolayer:1",
        skiff_images::WASM_CONFIG,
        &[(&text, "text/plain")],
    );
    let e = pull(&svc, &format!("{host}/nolayer:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("no wasm layer") && e.message.contains("text/plain"),
        "{e}"
    );
    let trap = skiff_e2e::guests::path("trap");
    reg.push_artifact(
        "two:1",
        skiff_images::WASM_CONFIG,
        &[(&hello, "application/wasm"), (&trap, "application/wasm")],
    );
    let e = pull(&svc, &format!("{host}/two:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(e.message.contains("2 wasm layers"), "{e}");

    // Over the size limit: refused before download.
    let mut cfg = Config::new(cache.path().join("small"));
    cfg.insecure_registries = vec![reg.host()];
    cfg.max_module_bytes = 1000;
    let small = ImageService::new(cfg).unwrap();
    reg.push_wasm("big:1", &hello);
    let e = pull(&small, &format!("{host}/big:1"), PullPolicy::Always)
        .await
        .unwrap_err();
    assert_eq!(e.reason, PullFailure::InvalidImage, "{e}");
    assert!(e.message.contains("more than the 1000 allowed"), "{e}");
    assert_eq!(small.stats().downloads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry() {
    let hello = skiff_e2e::guests::path("hello");
    let reg = Registry::start_with_htpasswd("alice", "wonderland");
    let host = reg.host();
    reg.push_wasm("private/app:1", &hello);
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &reg);
    let image = format!("{host}/private/app:1");

    let e = pull(&svc, &image, PullPolicy::Always).await.unwrap_err();
    assert_eq!(e.reason, PullFailure::ErrImagePull, "{e}");
    assert!(e.message.contains("unauthorized"), "{e}");

    let wrong = [Credential {
        registry: host.clone(),
        username: "alice".into(),
        password: "nope".into(),
    }];
    let e = pull_as(&svc, &image, PullPolicy::Always, &wrong)
        .await
        .unwrap_err();
    assert!(e.message.contains("unauthorized"), "{e}");

    // Credentials from a pull secret, matched by registry host among others.
    let secret = format!(
        r#"{{"auths":{{"other.example":{{"username":"x","password":"y"}},
            "http://{host}":{{"auth":"{}"}}}}}}"#,
        base64_encode("alice:wonderland")
    );
    let creds = skiff_images::credentials_from_docker_config(secret.as_bytes()).unwrap();
    let p = pull_as(&svc, &image, PullPolicy::Always, &creds)
        .await
        .unwrap();
    check_artifact(&svc, &p);
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_survives_restart_and_corrupt_artifacts_are_recompiled() {
    let hello = skiff_e2e::guests::path("hello");
    let reg = Registry::start();
    let image = format!("{}/hello:1", reg.host());
    reg.push_wasm("hello:1", &hello);
    let cache = tempfile::tempdir().unwrap();

    // Never before anything was pulled.
    let first = service(cache.path(), &reg);
    let e = pull(&first, &image, PullPolicy::Never).await.unwrap_err();
    assert_eq!(e.reason, PullFailure::ErrImageNeverPull, "{e}");
    assert_eq!(e.reason.as_str(), "ErrImageNeverPull");
    assert!(
        e.message.contains("not present with pull policy of Never"),
        "{e}"
    );
    let p = pull(&first, &image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(first.stats().compiles, 1);
    drop(first);

    // A new service on the same directory: present for Never/IfNotPresent
    // without touching the registry, and Always reuses the artifact.
    let second = service(cache.path(), &reg);
    let n = pull(&second, &image, PullPolicy::Never).await.unwrap();
    assert_eq!(n.artifact_digest, p.artifact_digest);
    pull(&second, &image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(second.stats().resolves, 0);
    let a = pull(&second, &image, PullPolicy::Always).await.unwrap();
    assert_eq!(a.artifact_digest, p.artifact_digest);
    let s = second.stats();
    assert_eq!(
        (s.resolves, s.downloads, s.compiles, s.cache_hits),
        (1, 0, 0, 1),
        "{s:?}"
    );
    check_artifact(&second, &a);
    drop(second);

    // Corrupt the artifact on disk: never served, deleted, recompiled.
    let file = cache
        .path()
        .join("artifacts")
        .join(format!("{}.cwasm", &p.artifact_digest["sha256:".len()..]));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let third = service(cache.path(), &reg);
    assert!(third.artifact(&p.artifact_digest).is_none());
    assert!(!file.exists(), "corrupt artifact left on disk");
    let e = pull(&third, &image, PullPolicy::Never).await.unwrap_err();
    assert_eq!(e.reason, PullFailure::ErrImageNeverPull, "{e}");
    let r = pull(&third, &image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(third.stats().compiles, 1);
    check_artifact(&third, &r);
    // Compilation is deterministic: the same artifact, back on disk.
    assert_eq!(r.artifact_digest, p.artifact_digest);
    assert!(file.exists());
}

/// Kube's KEP-2535: the cache serves a private image only to pulls whose
/// credentials pulled it (or anyone, once an anonymous pull succeeded);
/// every other pull asks the registry with its own credentials first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_private_images_are_served_only_to_credentials_that_pulled_them() {
    let hello = skiff_e2e::guests::path("hello");
    let reg = Registry::start_with_htpasswd("alice", "wonderland");
    let host = reg.host();
    reg.push_wasm("private/app:1", &hello);
    let cache = tempfile::tempdir().unwrap();
    let svc = service(cache.path(), &reg);
    let image = format!("{host}/private/app:1");
    let cred = |user: &str, pass: &str| {
        [Credential {
            registry: host.clone(),
            username: user.into(),
            password: pass.into(),
        }]
    };
    let alice = cred("alice", "wonderland");
    let p = pull_as(&svc, &image, PullPolicy::IfNotPresent, &alice)
        .await
        .unwrap();

    // Cached, but neither no credentials nor wrong ones get it: the
    // registry is asked and refuses.
    for (who, creds) in [
        ("anonymous", &[][..]),
        ("wrong", &cred("alice", "nope")[..]),
    ] {
        assert!(
            svc.present_for(&image, PullPolicy::IfNotPresent, creds)
                .is_none(),
            "{who}: present_for served a private image"
        );
        let resolves = svc.stats().resolves;
        let e = pull_as(&svc, &image, PullPolicy::IfNotPresent, creds)
            .await
            .expect_err(who);
        assert_eq!(e.reason, PullFailure::ErrImagePull, "{who}: {e}");
        assert!(e.message.contains("unauthorized"), "{who}: {e}");
        assert_eq!(svc.stats().resolves, resolves + 1, "{who}: not verified");
        let e = pull_as(&svc, &image, PullPolicy::Never, creds)
            .await
            .expect_err(who);
        assert_eq!(e.reason, PullFailure::ErrImageNeverPull, "{who}: {e}");
        assert!(e.message.contains("proper auth"), "{who}: {e}");
    }
    // Nor by digest or another spelling of the same image.
    let by_digest = format!(
        "{host}/private/app@{}",
        p.image_id.rsplit('@').next().unwrap()
    );
    let e = pull(&svc, &by_digest, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(e.message.contains("unauthorized"), "{e}");

    // The credentials that pulled it: from the cache, no registry traffic,
    // even after a restart.
    drop(svc);
    let svc = service(cache.path(), &reg);
    assert!(
        svc.present_for(&image, PullPolicy::IfNotPresent, &[])
            .is_none()
    );
    let again = svc
        .present_for(&image, PullPolicy::IfNotPresent, &alice)
        .expect("present for alice");
    assert_eq!(again.artifact_digest, p.artifact_digest);
    pull_as(&svc, &image, PullPolicy::Never, &alice)
        .await
        .unwrap();
    assert_eq!(svc.stats().resolves, 0);
    // The same password in another pull secret (other key spelling): the
    // same credential.
    let other = [Credential {
        registry: format!("http://{host}/v2/"),
        username: "alice".into(),
        password: "wonderland".into(),
    }];
    assert!(
        svc.present_for(&image, PullPolicy::IfNotPresent, &other)
            .is_some()
    );

    // A public image: an anonymous pull makes it everyone's.
    let open = Registry::start();
    open.push_wasm("public/app:1", &hello);
    let public = format!("{}/public/app:1", open.host());
    let mut cfg = Config::new(cache.path().join("public"));
    cfg.insecure_registries = vec![open.host()];
    let svc = ImageService::new(cfg).unwrap();
    // Pulled with (unneeded) credentials first: not yet public.
    let bob = [Credential {
        registry: open.host(),
        username: "bob".into(),
        password: "pw".into(),
    }];
    pull_as(&svc, &public, PullPolicy::IfNotPresent, &bob)
        .await
        .unwrap();
    assert!(
        svc.present_for(&public, PullPolicy::IfNotPresent, &[])
            .is_none()
    );
    pull(&svc, &public, PullPolicy::IfNotPresent).await.unwrap();
    let resolves = svc.stats().resolves;
    let carol = [Credential {
        registry: open.host(),
        username: "carol".into(),
        password: "x".into(),
    }];
    for creds in [&[][..], &carol[..]] {
        assert!(
            svc.present_for(&public, PullPolicy::IfNotPresent, creds)
                .is_some()
        );
        pull_as(&svc, &public, PullPolicy::Never, creds)
            .await
            .unwrap();
    }
    assert_eq!(svc.stats().resolves, resolves);
    assert_eq!(svc.stats().compiles, 1, "verification reuses the artifact");
}
