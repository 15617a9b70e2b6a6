//! The introspection gate: a bearer token checked with a TokenReview, then a
//! LocalSubjectAccessReview in the pool's namespace for verb `get` on `capsulepools/introspection`
//! (group `capsule.dev`, the pool's name), so cluster RBAC decides who may look. The local form is
//! granted per namespace, so the sidecar's account cannot ask about other namespaces.
//!
//! Answers are cached by the token's SHA-256 for [`CACHE_TTL`] (a revoked token or binding takes
//! at most that long to take effect), in a cache of at most [`CACHE_ENTRIES`] entries (expired
//! entries go first, then the oldest). A review the API server fails to answer is not cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, ResourceAttributes, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

/// How long a review's answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most cached answers.
pub const CACHE_ENTRIES: usize = 1024;

/// Who asked, as the TokenReview said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// The gate's verdict on a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No token, or the API server does not know it.
    Unauthenticated,
    /// Known caller without `get capsulepools/introspection` on this pool.
    Forbidden(Caller),
    Allowed(Caller),
}

/// Verdicts by the SHA-256 of the token, with when they were reviewed.
type ReviewCache = HashMap<[u8; 32], (Instant, Verdict)>;

/// What the gate needs to ask.
#[derive(Clone)]
pub struct Gate {
    client: Option<kube::Client>,
    pool: String,
    namespace: String,
    cache: std::sync::Arc<Mutex<ReviewCache>>,
}

impl Gate {
    /// `client` is `None` when no Kubernetes credentials were found: every review is unavailable.
    pub fn new(client: Option<kube::Client>, pool: &str, namespace: &str) -> Self {
        Gate {
            client,
            pool: pool.to_owned(),
            namespace: namespace.to_owned(),
            cache: Default::default(),
        }
    }

    /// Reviews `token`; `Err` when the API server could not answer.
    pub async fn review(&self, token: Option<&str>) -> Result<Verdict, kube::Error> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(Verdict::Unauthenticated);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(verdict) = self.cached(&key) {
            return Ok(verdict);
        }
        let verdict = self.ask(token).await?;
        self.remember(key, verdict.clone());
        Ok(verdict)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, verdict)| verdict.clone())
    }

    fn remember(&self, key: [u8; 32], verdict: Verdict) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        if cache.len() >= CACHE_ENTRIES {
            if let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (Instant::now(), verdict));
    }

    async fn ask(&self, token: &str) -> Result<Verdict, kube::Error> {
        let client = self.client.clone().ok_or_else(|| {
            kube::Error::Service("no Kubernetes credentials for TokenReview".into())
        })?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        if status.authenticated != Some(true) || user.username.as_deref().unwrap_or("").is_empty() {
            return Ok(Verdict::Unauthenticated);
        }
        let caller = Caller {
            username: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
        };
        let access = LocalSubjectAccessReview {
            metadata: kube::api::ObjectMeta {
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: SubjectAccessReviewSpec {
                user: Some(caller.username.clone()),
                uid: Some(caller.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(caller.groups.clone()),
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    group: Some("capsule.dev".into()),
                    resource: Some("capsulepools".into()),
                    subresource: Some("introspection".into()),
                    verb: Some("get".into()),
                    name: Some(self.pool.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let decided = Api::<LocalSubjectAccessReview>::namespaced(client, &self.namespace)
            .create(&PostParams::default(), &access)
            .await?;
        let allowed = decided.status.is_some_and(|s| s.allowed);
        Ok(if allowed {
            Verdict::Allowed(caller)
        } else {
            Verdict::Forbidden(caller)
        })
    }
}
