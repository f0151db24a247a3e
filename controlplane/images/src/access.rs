//! Who may use a cached image: kube's KEP-2535 (`KubeletEnsureSecretPulledImages`,
//! policy `NeverVerifyPreloadedImages`). The cache is shared by every pod of
//! every node, so an image is served from it only to a pull whose
//! credentials already pulled it, or to anyone once an anonymous pull of it
//! succeeded (the image is public). Any other pull must fetch the manifest
//! from the registry with its own credentials first ("pull-verify"), which
//! the registry refuses when they do not grant the image.
//!
//! Records are kept per image ID (`<registry>/<repository>@<manifest digest>`)
//! and hold sha256 hashes of the credentials, never the credentials, in
//! memory and under `<cache_dir>/access/` so a restart does not make private
//! images public. Images the plane never pulls (the runtimes' built-ins)
//! are the "preloaded" ones and are not verified.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::Credential;
use crate::auth::canonical_host;
use crate::cache::Cache;
use crate::fetch::sha256_digest;

/// Credential hashes remembered per image; past it the oldest must verify
/// again (a bound on what pods with ever-new secrets can make us hold).
const MAX_CREDENTIALS_PER_IMAGE: usize = 64;

/// Who is pulling: nobody, or the hash of the credential used for the
/// image's registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Puller {
    Anonymous,
    Credential(String),
}

impl Puller {
    /// `credential` is the one chosen for `registry` (None: anonymous).
    pub fn new(registry: &str, credential: Option<&Credential>) -> Self {
        match credential {
            None => Puller::Anonymous,
            Some(c) => {
                // Lengths first so no two (user, password) pairs collide.
                let host = canonical_host(registry).to_ascii_lowercase();
                let text = format!(
                    "skiff-image-credential\n{host}\n{}:{}\n{}:{}",
                    c.username.len(),
                    c.username,
                    c.password.len(),
                    c.password
                );
                Puller::Credential(sha256_digest(text.as_bytes()))
            }
        }
    }
}

/// What is known about one image's pulls.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Access {
    /// An anonymous pull succeeded: everyone may use it.
    pub public: bool,
    /// Hashes of credentials that pulled it, oldest first.
    pub credentials: Vec<String>,
}

/// The per-image access records (memory, backed by the cache directory).
pub struct Ledger {
    memory: Mutex<HashMap<String, Access>>,
}

impl Ledger {
    pub fn new() -> Self {
        Self {
            memory: Mutex::default(),
        }
    }

    fn get(&self, cache: &Cache, image_id: &str) -> Access {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = memory.get(image_id) {
            return a.clone();
        }
        // Missing or unreadable on disk: nothing verified (fail closed).
        let a = cache.load_access(image_id).unwrap_or_default();
        memory.insert(image_id.to_string(), a.clone());
        a
    }

    /// Whether `who` may be served `image_id` from the cache.
    pub fn may_use(&self, cache: &Cache, image_id: &str, who: &Puller) -> bool {
        let a = self.get(cache, image_id);
        match who {
            _ if a.public => true,
            Puller::Anonymous => false,
            Puller::Credential(h) => a.credentials.contains(h),
        }
    }

    /// `who` has just pulled `image_id` from the registry.
    pub fn record(&self, cache: &Cache, image_id: &str, who: &Puller) {
        let mut a = self.get(cache, image_id);
        let changed = match who {
            Puller::Anonymous => !std::mem::replace(&mut a.public, true),
            Puller::Credential(h) if a.credentials.contains(h) => false,
            Puller::Credential(h) => {
                if a.credentials.len() >= MAX_CREDENTIALS_PER_IMAGE {
                    a.credentials.remove(0);
                }
                a.credentials.push(h.clone());
                true
            }
        };
        if !changed {
            return;
        }
        if let Err(e) = cache.save_access(image_id, &a) {
            // Memory still has it; after a restart this puller verifies again.
            tracing::warn!(error = %e, image_id, "cannot record the image's pull credentials on disk");
        }
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(image_id.to_string(), a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(user: &str, pass: &str) -> Credential {
        Credential {
            registry: "http://r.example:5000/".into(),
            username: user.into(),
            password: pass.into(),
        }
    }

    #[test]
    fn credentials_hash_by_registry_user_and_password() {
        let a = Puller::new("r.example:5000", Some(&cred("a", "b:c")));
        assert_eq!(a, Puller::new("R.example:5000", Some(&cred("a", "b:c"))));
        assert_ne!(a, Puller::new("r.example:5000", Some(&cred("a:b", "c"))));
        assert_ne!(a, Puller::new("r.example:5000", Some(&cred("a", "b:d"))));
        assert_ne!(a, Puller::new("other:5000", Some(&cred("a", "b:c"))));
        assert_eq!(Puller::new("r", None), Puller::Anonymous);
        let Puller::Credential(h) = a else { panic!() };
        assert!(!h.contains("b:c"), "the hash must not carry the password");
    }

    #[test]
    fn records_grant_their_puller_and_anonymous_makes_public() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), "fp".into()).unwrap();
        let l = Ledger::new();
        let (a, b) = (
            Puller::Credential("sha256:a".into()),
            Puller::Credential("sha256:b".into()),
        );
        let id = "r/x@sha256:1";
        assert!(!l.may_use(&cache, id, &a));
        l.record(&cache, id, &a);
        assert!(l.may_use(&cache, id, &a));
        assert!(!l.may_use(&cache, id, &b));
        assert!(!l.may_use(&cache, id, &Puller::Anonymous));
        assert!(!l.may_use(&cache, "r/x@sha256:2", &a));
        // Survives a restart (a new ledger on the same directory).
        let l = Ledger::new();
        assert!(l.may_use(&cache, id, &a) && !l.may_use(&cache, id, &b));
        l.record(&cache, id, &Puller::Anonymous);
        assert!(Ledger::new().may_use(&cache, id, &b));
    }

    #[test]
    fn credentials_per_image_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), "fp".into()).unwrap();
        let l = Ledger::new();
        let p = |i: usize| Puller::Credential(format!("sha256:{i}"));
        for i in 0..=MAX_CREDENTIALS_PER_IMAGE {
            l.record(&cache, "img", &p(i));
        }
        assert!(!l.may_use(&cache, "img", &p(0)), "oldest forgotten");
        assert!(l.may_use(&cache, "img", &p(MAX_CREDENTIALS_PER_IMAGE)));
        assert_eq!(
            cache.load_access("img").unwrap().credentials.len(),
            MAX_CREDENTIALS_PER_IMAGE
        );
    }
}
