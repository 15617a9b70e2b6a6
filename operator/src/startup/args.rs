//! The flags of `capsule-operator run`, and the settings they turn into.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::OperatorConfig;
use crate::leader::LeaseSettings;
use crate::relay::limits::{self, IngestLimits};
use crate::telemetry::LogFormat;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Address of the HTTP server (metrics, health, heartbeats).
    #[arg(long, env = "CAPSULE_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub(super) listen: SocketAddr,
    /// URL workers send heartbeats to: the operator's Service.
    #[arg(
        long,
        env = "CAPSULE_HEARTBEAT_URL",
        default_value = "http://capsule-operator.capsule-system.svc:8080/v1/heartbeats"
    )]
    pub(super) heartbeat_url: String,
    /// Base URL of the session gateway (e.g. `https://capsule.example.com`): when set, a bound
    /// session's `status.gatewayUrl` is `<url>/v1/sessions/<namespace>/<name>`.
    #[arg(long, env = "CAPSULE_GATEWAY_URL")]
    pub(super) gateway_url: Option<String>,
    /// Sidecar image for pools that do not name one.
    #[arg(long, env = "CAPSULE_SIDECAR_IMAGE", default_value = concat!("capsule-sidecar:", env!("CARGO_PKG_VERSION")))]
    pub(super) sidecar_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CAPSULE_WATCH_NAMESPACE")]
    pub(super) namespace: Option<String>,
    /// Seconds between two status passes of each pool without a triggering event.
    #[arg(long, env = "CAPSULE_STATUS_INTERVAL_SECONDS", default_value_t = 10)]
    pub(super) status_interval_seconds: u64,
    /// Labels of the operator's own pods (`key=value,...`): each pool's NetworkPolicy admits
    /// these pods, in this replica's namespace (POD_NAMESPACE), to its workers.
    #[arg(long, env = "CAPSULE_OPERATOR_POD_SELECTOR", default_value = crate::config::DEFAULT_OPERATOR_POD_SELECTOR, value_parser = crate::config::parse_labels)]
    pub(super) operator_pod_selector: std::collections::BTreeMap<String, String>,
    /// Labels of the session gateway's pods (`key=value,...`), in this replica's namespace: each
    /// pool's NetworkPolicy admits them to the workers' execute port. Unset: none admitted.
    #[arg(long, env = "CAPSULE_GATEWAY_POD_SELECTOR", value_parser = crate::config::parse_labels)]
    pub(super) gateway_pod_selector: Option<std::collections::BTreeMap<String, String>>,
    /// Log format.
    #[arg(long, env = "CAPSULE_LOG_FORMAT", value_enum, default_value = "text")]
    pub(super) log_format: LogFormat,
    #[command(flatten)]
    pub(super) election: ElectionArgs,
    #[command(flatten)]
    pub(super) limits: LimitArgs,
}

#[derive(clap::Args)]
pub(super) struct ElectionArgs {
    /// Elect a leader among replicas on a Lease: only the leader reconciles, writes status and
    /// ingests heartbeats. Needed when more than one replica runs.
    #[arg(long, env = "CAPSULE_LEADER_ELECTION")]
    pub(super) leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "CAPSULE_LEASE_NAME", default_value = "capsule-operator")]
    pub(super) lease_name: String,
    /// Namespace of the Lease and of this replica's pod (the downward API's metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub(super) lease_namespace: Option<String>,
    /// This replica's pod (the downward API's metadata.name): its identity in the Lease and the pod
    /// that carries the leader label the heartbeat Service selects.
    #[arg(long, env = "POD_NAME")]
    pub(super) pod_name: Option<String>,
    /// How long a lease stays valid after its last renewal; a follower takes over at most this
    /// long (plus one retry period) after the leader died.
    #[arg(long, default_value_t = 10)]
    pub(super) lease_duration_seconds: u64,
    /// A leader that could not renew for this long stops at once (it exits; the kubelet restarts it
    /// as a follower).
    #[arg(long, default_value_t = 7)]
    pub(super) lease_renew_deadline_seconds: u64,
    /// Time between two attempts to take or renew the lease.
    #[arg(long, default_value_t = 2)]
    pub(super) lease_retry_period_seconds: u64,
}

#[derive(clap::Args)]
pub(super) struct LimitArgs {
    /// Heartbeats per second one worker pod may send (it sends one per heartbeat interval).
    #[arg(long, env = "CAPSULE_HEARTBEAT_RATE_PER_POD", default_value_t = limits::DEFAULT_PER_POD.per_second.get())]
    pub(super) heartbeat_rate_per_pod: u32,
    /// Heartbeats one worker pod may send at once above its rate.
    #[arg(long, env = "CAPSULE_HEARTBEAT_BURST_PER_POD", default_value_t = limits::DEFAULT_PER_POD.burst.get())]
    pub(super) heartbeat_burst_per_pod: u32,
    /// Heartbeats per second the operator accepts from all workers together.
    #[arg(long, env = "CAPSULE_HEARTBEAT_RATE_OVERALL", default_value_t = limits::DEFAULT_OVERALL.per_second.get())]
    pub(super) heartbeat_rate_overall: u32,
    /// Heartbeats all workers together may send at once above the overall rate.
    #[arg(long, env = "CAPSULE_HEARTBEAT_BURST_OVERALL", default_value_t = limits::DEFAULT_OVERALL.burst.get())]
    pub(super) heartbeat_burst_overall: u32,
}

impl LimitArgs {
    pub(super) fn limits(&self) -> anyhow::Result<IngestLimits> {
        let per_pod = limits::Rate::new(self.heartbeat_rate_per_pod, self.heartbeat_burst_per_pod)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--heartbeat-rate-per-pod and --heartbeat-burst-per-pod must be at least 1"
                )
            })?;
        let overall = limits::Rate::new(self.heartbeat_rate_overall, self.heartbeat_burst_overall)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--heartbeat-rate-overall and --heartbeat-burst-overall must be at least 1"
                )
            })?;
        Ok(IngestLimits::new(overall, per_pod))
    }
}

impl ElectionArgs {
    /// The lease settings when leader election is on.
    pub(super) fn settings_if_enabled(&self) -> anyhow::Result<Option<LeaseSettings>> {
        self.leader_election.then(|| self.settings()).transpose()
    }

    fn settings(&self) -> anyhow::Result<LeaseSettings> {
        let namespace = self.lease_namespace.clone().ok_or_else(|| {
            anyhow::anyhow!("--leader-election needs --lease-namespace (or POD_NAMESPACE from the downward API)")
        })?;
        let identity = match &self.pod_name {
            Some(pod) => pod.clone(),
            None => format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "capsule-operator".into()),
                std::process::id()
            ),
        };
        let settings = LeaseSettings {
            lease_name: self.lease_name.clone(),
            namespace,
            identity,
            lease_duration: Duration::from_secs(self.lease_duration_seconds),
            renew_deadline: Duration::from_secs(self.lease_renew_deadline_seconds),
            retry_period: Duration::from_secs(self.lease_retry_period_seconds),
        };
        settings.validate().map_err(anyhow::Error::msg)?;
        Ok(settings)
    }
}

impl RunArgs {
    pub(super) fn operator_config(&self) -> OperatorConfig {
        OperatorConfig {
            heartbeat_url: self.heartbeat_url.clone(),
            default_sidecar_image: self.sidecar_image.clone(),
            status_interval: Duration::from_secs(self.status_interval_seconds.max(1)),
            operator_namespace: self.election.lease_namespace.clone(),
            operator_pod_labels: self.operator_pod_selector.clone(),
            gateway_url: self.gateway_url.clone(),
            gateway_pod_labels: self.gateway_pod_selector.clone(),
            ..OperatorConfig::default()
        }
    }
}
