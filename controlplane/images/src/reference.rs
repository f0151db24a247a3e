//! Image references with Docker's normalisation (`hello` is
//! `docker.io/library/hello:latest`), parsed by oci-spec and checked for what
//! this service can verify (sha256 digests only).

use oci_client::Reference;

use crate::{PullError, PullFailure};

/// Parses `reference`; the error is an `InvalidImageName` naming it.
pub fn parse(reference: &str) -> Result<Reference, PullError> {
    let invalid = |why: String| PullError {
        reason: PullFailure::InvalidImageName,
        message: format!("invalid image name {reference:?}: {why}"),
    };
    if reference.is_empty() {
        return Err(invalid("empty".into()));
    }
    if reference.trim() != reference {
        return Err(invalid("contains whitespace".into()));
    }
    let parsed: Reference = reference.parse().map_err(|e| invalid(format!("{e}")))?;
    if let Some(digest) = parsed.digest() {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| invalid(format!("only sha256 digests are supported, got {digest}")))?;
        if !is_sha256_hex(hex) {
            return Err(invalid(format!("malformed digest {digest}")));
        }
    }
    Ok(parsed)
}

/// Kubernetes' rule for the default pull policy: a reference without a digest
/// whose tag is absent or `latest` is "floating".
pub fn is_latest(reference: &str) -> bool {
    match parse(reference) {
        Ok(r) => r.digest().is_none() && r.tag().is_none_or(|t| t == "latest"),
        Err(_) => false,
    }
}

/// `<registry>/<repository>`, the name part of an imageID.
pub fn repository_name(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(s: &str) -> String {
        parse(s).unwrap().whole()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(whole("hello"), "docker.io/library/hello:latest");
        assert_eq!(whole("hello:1.0"), "docker.io/library/hello:1.0");
        assert_eq!(whole("user/app"), "docker.io/user/app:latest");
        assert_eq!(whole("index.docker.io/user/app:2"), "docker.io/user/app:2");
        let r = parse("127.0.0.1:5000/hello:1.0").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "hello");
        assert_eq!(r.tag(), Some("1.0"));
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = parse(&format!("localhost:5000/ns/echo@{d}")).unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "ns/echo");
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(repository_name(&r), "localhost:5000/ns/echo");
        // A port-less first component with a dot is a registry.
        assert_eq!(parse("ghcr.io/a/b:c").unwrap().registry(), "ghcr.io");
    }

    #[test]
    fn invalid_names() {
        for bad in [
            "",
            " hello",
            "Hello",
            "hello:",
            "a//b",
            "hello@sha256:abc",
            "hello@md5:0123456789abcdef0123456789abcdef",
            "hello:bad tag",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.reason, PullFailure::InvalidImageName, "{bad}");
            assert!(e.message.contains("invalid image name"), "{}", e.message);
        }
    }

    #[test]
    fn latest() {
        assert!(is_latest("hello"));
        assert!(is_latest("r:5000/hello:latest"));
        assert!(!is_latest("hello:1.0"));
        assert!(!is_latest(&format!("hello@sha256:{}", "0".repeat(64))));
    }
}
