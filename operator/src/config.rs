//! Settings of one operator process, from its command line and environment.

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
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_url: "http://capsule-operator.capsule-system.svc:8080/v1/heartbeats".into(),
            default_sidecar_image: format!("capsule-sidecar:{}", env!("CARGO_PKG_VERSION")),
            worker_port: 8000,
            sidecar_port: 8001,
            status_interval: std::time::Duration::from_secs(10),
        }
    }
}
