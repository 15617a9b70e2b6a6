//! Settings of one operator process, from its command line and environment.

use std::collections::BTreeMap;

/// Labels of the operator's own pods when nothing says otherwise: the Helm chart's
/// `app.kubernetes.io/name` and `app.kubernetes.io/component` (the chart passes its full selector).
pub const DEFAULT_OPERATOR_POD_SELECTOR: &str =
    "app.kubernetes.io/name=capsule-operator,app.kubernetes.io/component=operator";

/// What every reconcile needs to know about the operator itself.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// URL workers POST heartbeats to (the operator's Service), e.g.
    /// `http://capsule-operator.capsule-system:8080/v1/heartbeats`.
    pub heartbeat_url: String,
    /// Image of the sidecar container when a pool does not name one.
    pub default_sidecar_image: String,
    /// Port of the worker's execute API.
    pub worker_port: i32,
    /// Port of the sidecar's introspection API.
    pub sidecar_port: i32,
    /// How often each pool is reconciled (and its status rewritten when it changed) without a
    /// triggering event: the relay's status interval.
    pub status_interval: std::time::Duration,
    /// Namespace the operator's pods run in (the downward API's `POD_NAMESPACE`). The pools'
    /// NetworkPolicies admit the operator from there; unknown (the operator runs outside the
    /// cluster): from pods with `operator_pod_labels` in any namespace.
    pub operator_namespace: Option<String>,
    /// Labels every operator pod carries; the pools' NetworkPolicies select the operator by them.
    pub operator_pod_labels: BTreeMap<String, String>,
    /// Base URL of the session gateway, if one runs: bound sessions get `status.gatewayUrl`.
    pub gateway_url: Option<String>,
    /// Labels of the session gateway's pods, in the operator's namespace: each pool's
    /// NetworkPolicy admits them to the workers' execute port. None: no gateway to admit.
    pub gateway_pod_labels: Option<BTreeMap<String, String>>,
}

impl OperatorConfig {
    /// Where a client reaches session `namespace/name` through the gateway, if one runs.
    pub fn session_gateway_url(&self, namespace: &str, name: &str) -> Option<String> {
        let base = self.gateway_url.as_deref()?.trim_end_matches('/');
        Some(format!("{base}/v1/sessions/{namespace}/{name}"))
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_url: "http://capsule-operator.capsule-system.svc:8080/v1/heartbeats".into(),
            default_sidecar_image: format!("capsule-sidecar:{}", env!("CARGO_PKG_VERSION")),
            worker_port: 8000,
            sidecar_port: 8001,
            status_interval: std::time::Duration::from_secs(10),
            operator_namespace: None,
            operator_pod_labels: parse_labels(DEFAULT_OPERATOR_POD_SELECTOR)
                .expect("the default selector parses"),
            gateway_url: None,
            gateway_pod_labels: None,
        }
    }
}

/// Parses an equality-based label selector, `key=value[,key=value...]` (as `kubectl -l` takes it,
/// without set operators), into labels. Empty text gives no labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (key, value) = term
            .split_once('=')
            .ok_or_else(|| format!("{term:?} is not key=value"))?;
        let (key, value) = (key.trim(), value.trim().trim_start_matches('='));
        if key.is_empty() || key.contains(['!', '=', ' ']) || value.contains(['=', ' ']) {
            return Err(format!("{term:?} is not key=value"));
        }
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_gateway_url_joins_the_base_and_the_session() {
        let mut config = OperatorConfig::default();
        assert_eq!(config.session_gateway_url("ns", "s"), None);
        config.gateway_url = Some("http://gw.capsule-system/".into());
        assert_eq!(
            config.session_gateway_url("ns", "s").as_deref(),
            Some("http://gw.capsule-system/v1/sessions/ns/s")
        );
    }

    #[test]
    fn a_selector_parses_into_labels() {
        let labels = parse_labels("a=1, b.io/c==x,").unwrap();
        assert_eq!(
            labels,
            BTreeMap::from([("a".into(), "1".into()), ("b.io/c".into(), "x".into())])
        );
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn a_selector_with_set_operators_is_refused() {
        for bad in ["a", "a!=1", "=1", "a in (1)"] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
    }
}
