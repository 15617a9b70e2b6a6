//! The per-pool NetworkPolicy: the pool's worker pods take connections only from the operator and
//! the pool's declared clients, and reach only the operator's heartbeat endpoint, DNS and the
//! pool's declared egress.
//!
//! `build` is pure (unit-tested here); `ensure` creates, replaces or deletes the one object.

use std::collections::BTreeMap;

use capsule_crds::CapsulePool;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use crate::config::OperatorConfig;
use crate::error::Result;
use crate::labels;
use crate::watch_cache::WatchCache;

/// The label every namespace carries with its own name (set by the API server since 1.21).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The label of the cluster DNS pods (CoreDNS or kube-dns) on kubeadm, GKE, EKS and AKS.
const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
const DNS_PORT: i32 = 53;

/// Equality on `labels`; none selects everything (written `{}`, as the API server keeps it).
fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: None,
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

/// The labels the policy selects the pool's worker pods by (a subset of `worker_pod::worker_labels`).
pub fn worker_selector(pool: &CapsulePool) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::POOL.to_string(), pool.name_any()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
    ])
}

/// The operator's pods: its labels in its namespace, or in any namespace when it does not know
/// its own (it runs outside the cluster).
fn operator_peer(config: &OperatorConfig) -> NetworkPolicyPeer {
    peer_in_operator_namespace(config, config.operator_pod_labels.clone())
}

/// Pods with `labels` in the operator's namespace (any namespace when it does not know its own).
fn peer_in_operator_namespace(
    config: &OperatorConfig,
    labels: BTreeMap<String, String>,
) -> NetworkPolicyPeer {
    let namespaces = match &config.operator_namespace {
        Some(ns) => selector(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_string(),
            ns.clone(),
        )])),
        None => selector(BTreeMap::new()),
    };
    NetworkPolicyPeer {
        namespace_selector: Some(namespaces),
        pod_selector: Some(selector(labels)),
        ip_block: None,
    }
}

/// The port heartbeats go to: the heartbeat URL's, else its scheme's default. The chart's Service
/// forwards its port to the same container port, which is what a NetworkPolicy sees.
fn heartbeat_port(config: &OperatorConfig) -> i32 {
    reqwest::Url::parse(&config.heartbeat_url)
        .ok()
        .and_then(|url| url.port_or_known_default())
        .map(i32::from)
        .unwrap_or(8080)
}

/// A port without a protocol is TCP: written out as the API server would default it, so the
/// stored policy equals the built one and is not rewritten on every pass.
fn defaulted(mut rule: NetworkPolicyEgressRule) -> NetworkPolicyEgressRule {
    for port in rule.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
    }
    rule
}

/// The pool's NetworkPolicy, owned by the pool (a controller reference, so it goes with it).
pub fn build(pool: &CapsulePool, config: &OperatorConfig) -> NetworkPolicy {
    let spec = &pool.spec.network_policy;
    let operator = operator_peer(config);

    let mut from = vec![operator.clone()];
    from.extend(spec.clients.iter().cloned());
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(vec![
            port("TCP", config.worker_port),
            port("TCP", config.sidecar_port),
        ]),
    }];
    // The session gateway proxies the execute API only: not the sidecar's introspection.
    if let Some(gateway) = &config.gateway_pod_labels {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![peer_in_operator_namespace(config, gateway.clone())]),
            ports: Some(vec![port("TCP", config.worker_port)]),
        });
    }

    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![operator]),
            ports: Some(vec![port("TCP", heartbeat_port(config))]),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(selector(BTreeMap::new())),
                pod_selector: Some(selector(BTreeMap::from([(
                    DNS_POD_LABEL.0.to_string(),
                    DNS_POD_LABEL.1.to_string(),
                )]))),
                ip_block: None,
            }]),
            ports: Some(vec![port("UDP", DNS_PORT), port("TCP", DNS_PORT)]),
        },
    ];
    egress.extend(spec.egress.iter().cloned().map(defaulted));

    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(labels::pool_network_policy(&pool.name_any())),
            namespace: pool.namespace(),
            labels: Some(worker_selector(pool)),
            owner_references: Some(vec![pool
                .controller_owner_ref(&())
                .expect("a stored pool has a uid")]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(worker_selector(pool))),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

fn controller_uid(policy: &NetworkPolicy) -> Option<&str> {
    policy
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether the stored policy already says what the built one says (labels the operator sets,
/// owner and spec; other labels and annotations are the user's).
fn up_to_date(stored: &NetworkPolicy, built: &NetworkPolicy) -> bool {
    let labels_kept = built
        .labels()
        .iter()
        .all(|(k, v)| stored.labels().get(k) == Some(v));
    labels_kept
        && stored.spec == built.spec
        && stored.metadata.owner_references == built.metadata.owner_references
}

/// Whether a copy of the pool's policy (`None`: there is none) needs nothing done: the pool's own
/// and up to date, or absent while the pool disables it.
fn settled(stored: Option<&NetworkPolicy>, pool: &CapsulePool, config: &OperatorConfig) -> bool {
    let enabled = pool.spec.network_policy.enabled;
    match stored {
        None => !enabled,
        Some(stored) => {
            enabled
                && controller_uid(stored) == pool.uid().as_deref()
                && up_to_date(stored, &build(pool, config))
        }
    }
}

/// Keeps the pool's NetworkPolicy as `spec.networkPolicy` says: created when missing, replaced
/// when it drifted (a policy of that name that no one controls is adopted), deleted when the pool
/// disables it. A policy controlled by another object (an older pool of the same name, until the
/// garbage collector removes it) is left alone.
///
/// `cached` is the operator's watch cache of its NetworkPolicies: when it shows the policy as it
/// should be (or rightly absent) nothing is read; otherwise the policy is read fresh.
pub async fn ensure(
    api: &Api<NetworkPolicy>,
    pool: &CapsulePool,
    config: &OperatorConfig,
    cached: Option<&WatchCache<NetworkPolicy>>,
) -> Result<()> {
    let name = labels::pool_network_policy(&pool.name_any());
    if let Some(cache) = cached.filter(|cache| cache.is_listed()) {
        let key = ObjectRef::new(&name).within(&pool.namespace().unwrap_or_default());
        if settled(cache.store().get(&key).as_deref(), pool, config) {
            return Ok(());
        }
    }
    let uid = pool.uid().unwrap_or_default();
    let Some(stored) = api.get_opt(&name).await? else {
        if !pool.spec.network_policy.enabled {
            return Ok(());
        }
        return written(
            api.create(&PostParams::default(), &build(pool, config))
                .await,
        );
    };
    match controller_uid(&stored) {
        Some(owner) if owner != uid => {
            if pool.spec.network_policy.enabled {
                warn!(policy = %name, "a NetworkPolicy of this name belongs to another object; left alone");
            }
            Ok(())
        }
        Some(_) if !pool.spec.network_policy.enabled => {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: stored.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {
                    info!(policy = %name, "deleted the pool's NetworkPolicy (disabled)");
                    Ok(())
                }
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        // Disabled, and not the pool's: someone else's policy.
        None if !pool.spec.network_policy.enabled => Ok(()),
        owner => {
            let mut built = build(pool, config);
            if up_to_date(&stored, &built) {
                return Ok(());
            }
            if owner.is_none() {
                info!(policy = %name, "adopting a NetworkPolicy no one controls");
            }
            // Keeps the user's own labels and annotations; the resourceVersion makes the write a
            // compare-and-swap.
            let mut merged = stored.labels().clone();
            merged.extend(built.labels().clone());
            built.metadata.labels = Some(merged);
            built.metadata.annotations = stored.metadata.annotations.clone();
            built.metadata.resource_version = stored.resource_version();
            written(api.replace(&name, &PostParams::default(), &built).await)
        }
    }
}

/// A create or replace: a 409 (another pass wrote it between our read and our write) waits for
/// the next pass, which compares again.
fn written(result: kube::Result<NetworkPolicy>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A pool with `spec.networkPolicy` as given (null: the field left out).
    fn pool(network_policy: Value) -> CapsulePool {
        let mut spec = json!({"template": {"image": "capsule-worker:test"}});
        if !network_policy.is_null() {
            spec["networkPolicy"] = network_policy;
        }
        serde_json::from_value(json!({
            "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
            "metadata": {"name": "p", "namespace": "team-a", "uid": "uid-p"},
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

    fn as_json(policy: &NetworkPolicy) -> Value {
        serde_json::to_value(policy).unwrap()
    }

    #[test]
    fn a_cached_copy_settles_the_pass_only_when_it_is_the_pools_own_and_up_to_date() {
        let (on, off) = (pool(Value::Null), pool(json!({"enabled": false})));
        let built = build(&on, &config());
        assert!(settled(Some(&built), &on, &config()));
        assert!(!settled(None, &on, &config()), "missing: create it");
        assert!(settled(None, &off, &config()), "rightly absent");
        assert!(
            !settled(Some(&built), &off, &config()),
            "disabled: delete it"
        );
        let mut drifted = built.clone();
        drifted.spec.as_mut().unwrap().ingress = None;
        assert!(!settled(Some(&drifted), &on, &config()));
        let mut unowned = built;
        unowned.metadata.owner_references = None;
        assert!(!settled(Some(&unowned), &on, &config()), "adopt it");
    }

    #[test]
    fn a_pool_is_on_by_default() {
        let p = pool(json!(null));
        assert!(p.spec.network_policy.enabled);
        let p: CapsulePool = serde_json::from_value(json!({
            "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
            "metadata": {"name": "p", "namespace": "team-a", "uid": "uid-p"},
            "spec": {"networkPolicy": {"clients": []}},
        }))
        .unwrap();
        assert!(p.spec.network_policy.enabled);
    }

    #[test]
    fn the_policy_selects_the_pools_workers_and_is_owned_by_the_pool() {
        let p = pool(json!({}));
        let policy = as_json(&build(&p, &config()));
        assert_eq!(policy["metadata"]["name"], "p-workers");
        assert_eq!(policy["metadata"]["namespace"], "team-a");
        assert_eq!(
            policy["spec"]["podSelector"],
            json!({"matchLabels": {"capsule.dev/pool": "p",
                                   "app.kubernetes.io/managed-by": "capsule-operator"}})
        );
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let owner = &policy["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], "uid-p");
        assert_eq!(owner["kind"], "CapsulePool");
        assert_eq!(owner["controller"], true);
        // Every worker pod carries the labels the policy selects by.
        let pod_labels = crate::pool::worker_pod::worker_labels(&p, "hash");
        for (key, value) in worker_selector(&p) {
            assert_eq!(pod_labels.get(&key), Some(&value), "{key}");
        }
    }

    #[test]
    fn only_the_operator_reaches_the_worker_and_sidecar_ports_by_default() {
        let policy = as_json(&build(&pool(json!({})), &config()));
        assert_eq!(
            policy["spec"]["ingress"],
            json!([{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "capsule-system"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "capsule-operator",
                                                    "app.kubernetes.io/component": "operator"}},
                }],
                "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 8001}],
            }])
        );
    }

    #[test]
    fn a_gateway_reaches_the_execute_port_only_from_the_operators_namespace() {
        let mut config = config();
        config.gateway_pod_labels = Some(BTreeMap::from([(
            "app.kubernetes.io/component".to_string(),
            "gateway".to_string(),
        )]));
        let policy = as_json(&build(&pool(json!({})), &config));
        assert_eq!(
            policy["spec"]["ingress"][1],
            json!({
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "capsule-system"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}},
                }],
                "ports": [{"protocol": "TCP", "port": 8000}],
            })
        );
    }

    #[test]
    fn declared_clients_join_the_operator() {
        let client = json!({"namespaceSelector": {"matchLabels": {"team": "a"}},
                            "podSelector": {"matchLabels": {"app": "agent"}}});
        let policy = as_json(&build(&pool(json!({"clients": [client]})), &config()));
        let from = policy["spec"]["ingress"][0]["from"].as_array().unwrap();
        assert_eq!(from.len(), 2);
        assert_eq!(from[1], client);
    }

    #[test]
    fn egress_reaches_the_heartbeat_port_of_the_operator_and_dns_only() {
        let config = OperatorConfig {
            heartbeat_url: "http://capsule-operator.capsule-system.svc:9090/v1/heartbeats".into(),
            ..config()
        };
        let policy = as_json(&build(&pool(json!({})), &config));
        let egress = policy["spec"]["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 2);
        assert_eq!(
            egress[0]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "operator"
        );
        assert_eq!(
            egress[0]["ports"],
            json!([{"protocol": "TCP", "port": 9090}])
        );
        assert_eq!(
            egress[1],
            json!({"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                   "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]})
        );
    }

    #[test]
    fn the_heartbeat_port_defaults_to_the_schemes() {
        let config = OperatorConfig {
            heartbeat_url: "https://operator.example/v1/heartbeats".into(),
            ..config()
        };
        assert_eq!(heartbeat_port(&config), 443);
    }

    #[test]
    fn declared_egress_rules_follow_with_tcp_written_out() {
        let rule = json!({"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 4318}]});
        let policy = as_json(&build(&pool(json!({"egress": [rule]})), &config()));
        assert_eq!(
            policy["spec"]["egress"][2],
            json!({"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
                   "ports": [{"port": 4318, "protocol": "TCP"}]})
        );
    }

    #[test]
    fn an_operator_outside_the_cluster_is_admitted_from_any_namespace() {
        let policy = as_json(&build(&pool(json!({})), &OperatorConfig::default()));
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"],
            json!({})
        );
    }

    #[test]
    fn a_stored_policy_with_extra_user_labels_is_up_to_date() {
        let p = pool(json!({}));
        let built = build(&p, &config());
        let mut stored = built.clone();
        stored
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "a".into());
        stored.metadata.resource_version = Some("7".into());
        assert!(up_to_date(&stored, &built));
        let changed = build(
            &pool(json!({"clients": [{"podSelector": {"matchLabels": {"app": "x"}}}]})),
            &config(),
        );
        assert!(!up_to_date(&stored, &changed));
    }
}
