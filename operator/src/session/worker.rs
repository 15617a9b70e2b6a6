//! How the operator reaches a worker pod: its admin endpoint and the credential it presents there.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::context::Context;

/// The credential the operator presents to the worker `pod` of `pool`.
pub(super) fn worker_token(ctx: &Context, ns: &str, pool: &str, pod: &Pod) -> Option<String> {
    let key = ctx.directory.as_ref()?.pool_key(ns, pool)?;
    Some(crate::relay::directory::credential_of(&key, pod))
}

/// The worker's admin URL, once the pod has an IP.
pub(super) fn endpoint(pod: &Pod, port: i32) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
    Some(format!("http://{ip}:{port}"))
}

/// How long a binding or release waits for heartbeat ingest's pod cache to show its write.
const VIEW_CATCH_UP: Duration = Duration::from_secs(2);

/// Waits, within [`VIEW_CATCH_UP`], until heartbeat ingest's view of `pod` is bound to the session
/// whose token hashes to `token_hash` (`None`: to no session). Heartbeat replies carry that view,
/// so a worker told of a change before the view shows it would be told the opposite by its next
/// heartbeat. True at once when this process runs no heartbeat ingest.
pub(super) async fn heartbeat_view_agrees(
    ctx: &Context,
    ns: &str,
    pod: &str,
    token_hash: Option<&str>,
) -> bool {
    let Some(directory) = ctx.directory.as_ref() else {
        return true;
    };
    let deadline = Instant::now() + VIEW_CATCH_UP;
    loop {
        let facts = directory.pod(ns, pod);
        let seen = facts.as_ref().and_then(|f| f.binding.as_ref());
        if seen.map(|b| b.token_sha256.as_str()) == token_hash {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use capsule_protocol::heartbeat::SessionBinding;

    use super::*;
    use crate::relay::directory::{Directory, PodFacts};

    /// A heartbeat view that shows `binding` once `shown_at` has passed.
    struct LaggingView {
        shown_at: Instant,
        binding: Option<SessionBinding>,
    }

    impl Directory for LaggingView {
        fn pool_key(&self, _: &str, _: &str) -> Option<String> {
            None
        }
        fn pod(&self, _: &str, _: &str) -> Option<PodFacts> {
            let binding = (Instant::now() >= self.shown_at)
                .then(|| self.binding.clone())
                .flatten();
            Some(PodFacts {
                pool: Some("p".into()),
                binding,
                credential: Default::default(),
                ready: true,
            })
        }
    }

    fn context_with(view: LaggingView) -> Context {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = kube::Client::new(service, "default");
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(crate::metrics::Metrics::register(&mut registry));
        let mut ctx = Context::new(client, metrics, Default::default(), Default::default());
        ctx.directory = Some(Arc::new(view));
        ctx
    }

    fn bound_to(token_hash: &str) -> Option<SessionBinding> {
        Some(SessionBinding {
            session: "s".into(),
            namespace: "default".into(),
            token_sha256: token_hash.into(),
            session_uid: None,
            checkpoint_key: None,
        })
    }

    #[tokio::test]
    async fn a_binding_waits_until_the_heartbeat_view_carries_it() {
        // One instant for both, so the time spent building the context cannot shorten the wait.
        let started = Instant::now();
        let ctx = context_with(LaggingView {
            shown_at: started + Duration::from_millis(100),
            binding: bound_to("h1"),
        });
        assert!(heartbeat_view_agrees(&ctx, "default", "p-a", Some("h1")).await);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(heartbeat_view_agrees(&ctx, "default", "p-a", Some("h1")).await);
    }

    #[tokio::test]
    async fn a_view_that_never_catches_up_is_reported_after_the_bound() {
        let ctx = context_with(LaggingView {
            shown_at: Instant::now(),
            binding: bound_to("old"),
        });
        let started = Instant::now();
        assert!(!heartbeat_view_agrees(&ctx, "default", "p-a", Some("new")).await);
        assert!(!heartbeat_view_agrees(&ctx, "default", "p-a", None).await);
        assert!(started.elapsed() >= VIEW_CATCH_UP * 2);
    }
}
