//! `spec.networkPolicy`: the NetworkPolicy the operator keeps around a pool's worker pods.

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyPeer};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::default_true;

/// The `networking.k8s.io/v1` NetworkPolicy `<pool>-workers` the operator keeps for the pool's
/// worker pods (selected by `capsule.dev/pool=<pool>`), owned by the pool and deleted with it.
///
/// Ingress: only the operator's pods and the `clients` below reach the worker's execute port and
/// the sidecar's introspection port; nothing else reaches the pods. Egress: only the operator's
/// heartbeat endpoint, DNS (port 53, UDP and TCP) and the `egress` rules below. The policy is
/// enforced only where the cluster's network plugin enforces NetworkPolicies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolNetworkPolicySpec {
    /// Whether the operator keeps the NetworkPolicy. `false` deletes the one it made earlier and
    /// leaves the pods' traffic to the namespace's own policies.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Who besides the operator may reach the worker's execute port and the sidecar's
    /// introspection port: standard NetworkPolicy peers (`podSelector`, `namespaceSelector`,
    /// `ipBlock`), for example the pods of the application that runs sessions, or the namespace
    /// of the people and agents who introspect the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub clients: Vec<NetworkPolicyPeer>,

    /// More egress the worker pods need besides the heartbeat endpoint and DNS: standard
    /// NetworkPolicy egress rules (`to` peers and `ports`), for example the OTLP collector of
    /// `tracing.otlpEndpoint`, or the Kubernetes API server's addresses (an `ipBlock` on port 443
    /// or 6443) which the sidecar calls when `introspection.enabled` is true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub egress: Vec<NetworkPolicyEgressRule>,
}

// Written out so the schema's object-level default agrees with the field defaults.
impl Default for PoolNetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            clients: Vec::new(),
            egress: Vec::new(),
        }
    }
}
