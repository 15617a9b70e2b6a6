//! Exact API calls of the pool controller for the pool's NetworkPolicy, against kube's tower-test
//! mock: created before the workers, left alone when unchanged, replaced when it drifted, deleted
//! when the pool disables it.

// This file builds its own Context (with the operator's namespace), so `fake_api::context` is unused.
#[allow(dead_code)]
mod fake_api;

use std::sync::{Arc, Mutex};

use capsule_crds::CapsulePool;
use capsule_operator::config::OperatorConfig;
use capsule_operator::context::Context;
use capsule_operator::pool::{self, network_policy};
use capsule_operator::watch_cache::reflect;
use fake_api::{list, not_found, Call};
use futures::StreamExt;
use http::{Method, StatusCode};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher;
use serde_json::{json, Value};

const NS: &str = "default";
const POOL_UID: &str = "6b0f3c1e-0000-4000-8000-000000000002";
const POLICY: &str = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";
const POLICY_P: &str = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/p-workers";

const GET_SECRET: &str = "GET /api/v1/namespaces/default/secrets/p-pool-token";
const LIST_PODS: &str = "GET /api/v1/namespaces/default/pods";
const WRITE_STATUS: &str =
    "PATCH /apis/capsule.dev/v1alpha1/namespaces/default/capsulepools/p/status";

/// A pool with `spec.networkPolicy` as given (null: the field left out).
fn pool(network_policy: Value) -> CapsulePool {
    // No warm worker, so the pass makes no pod and the calls stay short.
    let mut spec =
        json!({"replicas": 0, "maxWorkers": 1, "template": {"image": "capsule-worker:test"}});
    if !network_policy.is_null() {
        spec["networkPolicy"] = network_policy;
    }
    serde_json::from_value(json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
        "metadata": {"name": "p", "namespace": NS, "uid": POOL_UID, "generation": 1,
                     "resourceVersion": "41"},
        "spec": spec,
    }))
    .unwrap()
}

fn config() -> OperatorConfig {
    OperatorConfig {
        operator_namespace: Some("capsule-system".into()),
        ..OperatorConfig::default()
    }
}

struct Harness {
    ctx: Arc<Context>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// The NetworkPolicy the fake API server holds.
    stored: Arc<Mutex<Option<Value>>>,
}

fn harness(stored: Option<Value>) -> Harness {
    let stored = Arc::new(Mutex::new(stored));
    let held = stored.clone();
    let responder: fake_api::Responder = Arc::new(move |call: &Call| {
        let mut policy = held.lock().unwrap();
        match (&call.method, call.path.as_str()) {
            (&Method::GET, "/api/v1/namespaces/default/secrets/p-pool-token") => (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "p-pool-token", "namespace": NS},
                       "data": {"token": "dG9r"}}),
            ),
            (&Method::GET, POLICY_P) => match policy.as_ref() {
                Some(p) => (StatusCode::OK, p.clone()),
                None => not_found("networkpolicies.networking.k8s.io \"p-workers\""),
            },
            (&Method::POST, POLICY) => {
                let mut created = call.body.clone();
                created["metadata"]["uid"] = json!("policy-uid-1");
                created["metadata"]["resourceVersion"] = json!("50");
                *policy = Some(created.clone());
                (StatusCode::CREATED, created)
            }
            (&Method::PUT, POLICY_P) => {
                let mut replaced = call.body.clone();
                replaced["metadata"]["resourceVersion"] = json!("51");
                *policy = Some(replaced.clone());
                (StatusCode::OK, replaced)
            }
            (&Method::DELETE, POLICY_P) => {
                let gone = policy.take().expect("a policy to delete");
                (StatusCode::OK, gone)
            }
            (&Method::GET, "/api/v1/namespaces/default/pods") => list("PodList", vec![]),
            (&Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events") => {
                (StatusCode::CREATED, call.body.clone())
            }
            (
                &Method::PATCH,
                "/apis/capsule.dev/v1alpha1/namespaces/default/capsulepools/p/status",
            ) => {
                let mut obj = call.body.clone();
                obj["metadata"] = json!({"name": "p", "namespace": NS, "uid": POOL_UID});
                obj["spec"] = json!({});
                (StatusCode::OK, obj)
            }
            _ => fake_api::unexpected(call),
        }
    });
    let (client, calls) = fake_api::start(responder);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(capsule_operator::metrics::Metrics::register(&mut registry));
    let ctx = Arc::new(Context::new(
        client,
        metrics,
        config(),
        Arc::new(capsule_operator::health::Health::default()),
    ));
    Harness { ctx, calls, stored }
}

impl Harness {
    /// Gives the pool controller a NetworkPolicy cache that has listed `shown`, as its watch would.
    async fn policy_cache(&mut self, shown: Option<Value>) {
        let (events, rx) = futures::channel::mpsc::unbounded();
        let (cache, touched) = reflect::<NetworkPolicy>(rx);
        tokio::spawn(touched.for_each(|_| async {}));
        let listed = shown.map(|p| serde_json::from_value(p).unwrap());
        let init = std::iter::once(watcher::Event::Init)
            .chain(listed.map(watcher::Event::InitApply))
            .chain(std::iter::once(watcher::Event::InitDone));
        for event in init {
            events.unbounded_send(Ok(event)).unwrap();
        }
        assert!(cache.listed().await);
        std::mem::forget(events);
        let ctx = Arc::get_mut(&mut self.ctx).expect("no pass has started yet");
        ctx.network_policies = Some(cache);
    }

    async fn reconcile(&self, pool: CapsulePool) {
        pool::reconcile(Arc::new(pool), self.ctx.clone())
            .await
            .expect("the pass succeeds");
    }

    fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.path.contains("/events"))
            .cloned()
            .collect()
    }

    fn lines(&self) -> Vec<String> {
        self.calls().iter().map(Call::line).collect()
    }
}

/// The policy as the fake API server would hold it after the operator created it.
fn stored(pool: &CapsulePool) -> Value {
    let mut policy = serde_json::to_value(network_policy::build(pool, &config())).unwrap();
    policy["apiVersion"] = json!("networking.k8s.io/v1");
    policy["kind"] = json!("NetworkPolicy");
    policy["metadata"]["uid"] = json!("policy-uid-1");
    policy["metadata"]["resourceVersion"] = json!("50");
    policy
}

#[tokio::test]
async fn a_new_pool_creates_its_network_policy_before_any_worker() {
    let h = harness(None);
    h.reconcile(pool(json!(null))).await;
    let get = format!("GET {POLICY_P}");
    let create = format!("POST {POLICY}");
    assert_eq!(
        h.lines(),
        [GET_SECRET, &get, &create, LIST_PODS, WRITE_STATUS]
    );
    let body = &h.calls()[2].body;
    assert_eq!(
        body,
        &json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": "p-workers",
                "namespace": "default",
                "labels": {"capsule.dev/pool": "p",
                           "app.kubernetes.io/managed-by": "capsule-operator"},
                "ownerReferences": [{
                    "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool", "name": "p",
                    "uid": POOL_UID, "controller": true,
                }],
            },
            "spec": {
                "podSelector": {"matchLabels": {"capsule.dev/pool": "p",
                                                "app.kubernetes.io/managed-by": "capsule-operator"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{
                    "from": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "capsule-system"}},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "capsule-operator",
                                                        "app.kubernetes.io/component": "operator"}},
                    }],
                    "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 8001}],
                }],
                "egress": [
                    {
                        "to": [{
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "capsule-system"}},
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "capsule-operator",
                                                            "app.kubernetes.io/component": "operator"}},
                        }],
                        "ports": [{"protocol": "TCP", "port": 8080}],
                    },
                    {
                        "to": [{"namespaceSelector": {},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                ],
            },
        })
    );
}

#[tokio::test]
async fn an_unchanged_policy_is_not_written_again() {
    let p = pool(json!(null));
    let h = harness(Some(stored(&p)));
    h.reconcile(p).await;
    let get = format!("GET {POLICY_P}");
    assert_eq!(h.lines(), [GET_SECRET, &get, LIST_PODS, WRITE_STATUS]);
}

#[tokio::test]
async fn a_new_client_replaces_the_policy_keeping_the_users_labels() {
    let before = pool(json!(null));
    let mut policy = stored(&before);
    policy["metadata"]["labels"]["team"] = json!("a");
    let h = harness(Some(policy));
    let client = json!({"podSelector": {"matchLabels": {"app": "agent"}}});
    h.reconcile(pool(json!({"clients": [client]}))).await;
    let get = format!("GET {POLICY_P}");
    let replace = format!("PUT {POLICY_P}");
    assert_eq!(
        h.lines(),
        [GET_SECRET, &get, &replace, LIST_PODS, WRITE_STATUS]
    );
    let body = &h.calls()[2].body;
    assert_eq!(
        body["metadata"]["resourceVersion"], "50",
        "a compare-and-swap"
    );
    assert_eq!(body["metadata"]["labels"]["team"], "a");
    assert_eq!(body["spec"]["ingress"][0]["from"][1], client);
}

#[tokio::test]
async fn disabling_the_policy_deletes_the_one_the_operator_made() {
    let p = pool(json!(null));
    let h = harness(Some(stored(&p)));
    h.reconcile(pool(json!({"enabled": false}))).await;
    let get = format!("GET {POLICY_P}");
    let delete = format!("DELETE {POLICY_P}");
    assert_eq!(
        h.lines(),
        [GET_SECRET, &get, &delete, LIST_PODS, WRITE_STATUS]
    );
    assert_eq!(
        h.calls()[2].body["preconditions"]["uid"],
        "policy-uid-1",
        "only the policy that was read"
    );
    assert!(h.stored.lock().unwrap().is_none());

    // The next pass finds nothing to do (and, nothing having changed, writes no status).
    h.calls.lock().unwrap().clear();
    h.reconcile(pool(json!({"enabled": false}))).await;
    assert_eq!(h.lines(), [GET_SECRET, &get, LIST_PODS]);
}

#[tokio::test]
async fn disabling_leaves_a_policy_of_the_same_name_the_operator_did_not_make() {
    let mut theirs = stored(&pool(json!(null)));
    theirs["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let h = harness(Some(theirs));
    h.reconcile(pool(json!({"enabled": false}))).await;
    let get = format!("GET {POLICY_P}");
    assert_eq!(h.lines(), [GET_SECRET, &get, LIST_PODS, WRITE_STATUS]);
    assert!(h.stored.lock().unwrap().is_some());
}

#[tokio::test]
async fn a_policy_the_cache_shows_as_it_should_be_costs_no_read() {
    let p = pool(json!(null));
    let mut h = harness(Some(stored(&p)));
    h.policy_cache(Some(stored(&p))).await;
    h.reconcile(p).await;
    assert_eq!(h.lines(), [GET_SECRET, LIST_PODS, WRITE_STATUS]);
}

#[tokio::test]
async fn a_policy_the_cache_lacks_or_shows_drifted_is_read_fresh() {
    let p = pool(json!(null));
    let mut h = harness(Some(stored(&p)));
    h.policy_cache(None).await;
    h.reconcile(p.clone()).await;
    let get = format!("GET {POLICY_P}");
    assert_eq!(
        h.lines(),
        [GET_SECRET, &get, LIST_PODS, WRITE_STATUS],
        "the cache may lag a create: read before creating"
    );

    let mut drifted = stored(&p);
    drifted["spec"]["ingress"] = json!([]);
    let mut h = harness(Some(drifted.clone()));
    h.policy_cache(Some(drifted)).await;
    h.reconcile(p).await;
    let replace = format!("PUT {POLICY_P}");
    assert_eq!(
        h.lines(),
        [GET_SECRET, &get, &replace, LIST_PODS, WRITE_STATUS]
    );
}

#[tokio::test]
async fn a_disabled_policy_the_cache_shows_absent_costs_no_read() {
    let mut h = harness(None);
    h.policy_cache(None).await;
    h.reconcile(pool(json!({"enabled": false}))).await;
    assert_eq!(h.lines(), [GET_SECRET, LIST_PODS, WRITE_STATUS]);
}
