use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capsule_operator::config::OperatorConfig;
use capsule_operator::context::Context;
use capsule_operator::health::Health;
use capsule_operator::leader::{self, Leadership, LeaseSettings};
use capsule_operator::metrics::Metrics;
use capsule_operator::relay::ingest::{self, IngestMetrics, IngestState};
use capsule_operator::relay::limits::{self, IngestLimits};
use capsule_operator::telemetry::{self, LogFormat};
use capsule_operator::{http, pool, relay, session};
use clap::{Parser, Subcommand};
use futures::FutureExt;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "capsule-operator",
    version,
    about = "Runs pools of pre-warmed Python workers on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers and the HTTP server.
    Run(Box<RunArgs>),
    /// Print the CRDs as YAML.
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the HTTP server (metrics, health, heartbeats).
    #[arg(long, env = "CAPSULE_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// URL workers send heartbeats to: the operator's Service.
    #[arg(
        long,
        env = "CAPSULE_HEARTBEAT_URL",
        default_value = "http://capsule-operator.capsule-system.svc:8080/v1/heartbeats"
    )]
    heartbeat_url: String,
    /// Base URL of the session gateway (e.g. `https://capsule.example.com`): when set, a bound
    /// session's `status.gatewayUrl` is `<url>/v1/sessions/<namespace>/<name>`.
    #[arg(long, env = "CAPSULE_GATEWAY_URL")]
    gateway_url: Option<String>,
    /// Sidecar image for pools that do not name one.
    #[arg(long, env = "CAPSULE_SIDECAR_IMAGE", default_value = concat!("capsule-sidecar:", env!("CARGO_PKG_VERSION")))]
    sidecar_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CAPSULE_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Seconds between two status passes of each pool without a triggering event.
    #[arg(long, env = "CAPSULE_STATUS_INTERVAL_SECONDS", default_value_t = 10)]
    status_interval_seconds: u64,
    /// Labels of the operator's own pods (`key=value,...`): each pool's NetworkPolicy admits
    /// these pods, in this replica's namespace (POD_NAMESPACE), to its workers.
    #[arg(long, env = "CAPSULE_OPERATOR_POD_SELECTOR", default_value = capsule_operator::config::DEFAULT_OPERATOR_POD_SELECTOR, value_parser = capsule_operator::config::parse_labels)]
    operator_pod_selector: std::collections::BTreeMap<String, String>,
    /// Labels of the session gateway's pods (`key=value,...`), in this replica's namespace: each
    /// pool's NetworkPolicy admits them to the workers' execute port. Unset: none admitted.
    #[arg(long, env = "CAPSULE_GATEWAY_POD_SELECTOR", value_parser = capsule_operator::config::parse_labels)]
    gateway_pod_selector: Option<std::collections::BTreeMap<String, String>>,
    /// Log format.
    #[arg(long, env = "CAPSULE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    election: ElectionArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(clap::Args)]
struct ElectionArgs {
    /// Elect a leader among replicas on a Lease: only the leader reconciles, writes status and
    /// ingests heartbeats. Needed when more than one replica runs.
    #[arg(long, env = "CAPSULE_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "CAPSULE_LEASE_NAME", default_value = "capsule-operator")]
    lease_name: String,
    /// Namespace of the Lease and of this replica's pod (the downward API's metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's pod (the downward API's metadata.name): its identity in the Lease and the pod
    /// that carries the leader label the heartbeat Service selects.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// How long a lease stays valid after its last renewal; a follower takes over at most this
    /// long (plus one retry period) after the leader died.
    #[arg(long, default_value_t = 10)]
    lease_duration_seconds: u64,
    /// A leader that could not renew for this long stops at once (it exits; the kubelet restarts it
    /// as a follower).
    #[arg(long, default_value_t = 7)]
    lease_renew_deadline_seconds: u64,
    /// Time between two attempts to take or renew the lease.
    #[arg(long, default_value_t = 2)]
    lease_retry_period_seconds: u64,
}

#[derive(clap::Args)]
struct LimitArgs {
    /// Heartbeats per second one worker pod may send (it sends one per heartbeat interval).
    #[arg(long, env = "CAPSULE_HEARTBEAT_RATE_PER_POD", default_value_t = limits::DEFAULT_PER_POD.per_second.get())]
    heartbeat_rate_per_pod: u32,
    /// Heartbeats one worker pod may send at once above its rate.
    #[arg(long, env = "CAPSULE_HEARTBEAT_BURST_PER_POD", default_value_t = limits::DEFAULT_PER_POD.burst.get())]
    heartbeat_burst_per_pod: u32,
    /// Heartbeats per second the operator accepts from all workers together.
    #[arg(long, env = "CAPSULE_HEARTBEAT_RATE_OVERALL", default_value_t = limits::DEFAULT_OVERALL.per_second.get())]
    heartbeat_rate_overall: u32,
    /// Heartbeats all workers together may send at once above the overall rate.
    #[arg(long, env = "CAPSULE_HEARTBEAT_BURST_OVERALL", default_value_t = limits::DEFAULT_OVERALL.burst.get())]
    heartbeat_burst_overall: u32,
}

impl LimitArgs {
    fn limits(&self) -> anyhow::Result<IngestLimits> {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", capsule_crds::crds_yaml());
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(args.log_format)?;
    let ingest_limits = Arc::new(args.limits.limits()?);
    let election = args
        .election
        .leader_election
        .then(|| args.election.settings())
        .transpose()?;
    let client = kube::Client::try_default().await?;
    let mut registry = Registry::default();
    capsule_telemetry::register(&mut registry);
    let metrics = Arc::new(Metrics::register(&mut registry));
    let leader_gauge = leader::register_gauge(&mut registry);
    let health = Arc::new(Health::default());
    let config = OperatorConfig {
        heartbeat_url: args.heartbeat_url,
        default_sidecar_image: args.sidecar_image,
        status_interval: std::time::Duration::from_secs(args.status_interval_seconds.max(1)),
        operator_namespace: args.election.lease_namespace.clone(),
        operator_pod_labels: args.operator_pod_selector.clone(),
        gateway_url: args.gateway_url.clone(),
        gateway_pod_labels: args.gateway_pod_selector.clone(),
        ..OperatorConfig::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        config,
        health.clone(),
    ));
    let shutdown = CancellationToken::new();

    // The lease is handed back only after the controllers stopped writing.
    let release_lease = CancellationToken::new();
    let (leadership, election_task) = match &election {
        Some(settings) => {
            let (leadership, task) =
                leader::start(client.clone(), settings.clone(), release_lease.clone());
            (leadership, Some(task))
        }
        None => (Leadership::always(), None),
    };
    tokio::spawn(leader::track_gauge(leadership.clone(), leader_gauge));

    let ingest_metrics = IngestMetrics::register(&mut registry);
    // Followers keep the caches warm too, so a takeover can ingest at once.
    let (directory, caches_synced) =
        relay::caches::start(ctx.client.clone(), args.namespace.clone(), shutdown.clone());
    let caches_synced = caches_synced.shared();
    let _ = ctx.directory.set(directory.clone());
    let ingest = IngestState {
        index: ctx.index.clone(),
        directory,
        metrics: ingest_metrics,
        limits: ingest_limits,
        leadership: leadership.clone(),
    };

    let listener = http::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics, health and heartbeats");
    let state = http::HttpState {
        registry: Arc::new(registry),
        health: health.clone(),
    };
    let app = http::router(state).merge(ingest::router(ingest));
    let server = tokio::spawn(http::serve_router(listener, app, shutdown.clone()));

    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });

    health.set_running(true);
    let own_pod = match (&election, &args.election.pod_name) {
        (Some(settings), Some(pod)) => Some((settings.namespace.clone(), pod.clone())),
        _ => None,
    };
    if election.is_some() {
        if let Some((namespace, pod)) = &own_pod {
            // A label left by this pod's previous run would route heartbeats to a follower.
            leader::mark_own_pod(client.clone(), namespace, pod, false).await;
        }
        // A follower is ready once its caches are: it can take over at once.
        let (synced, ready) = (caches_synced.clone(), health.clone());
        tokio::spawn(async move {
            synced.await;
            ready.set_synced(true);
        });
        let mut waiting = leadership.clone();
        tokio::select! {
            _ = waiting.acquired() => {}
            _ = shutdown.cancelled() => {
                tracing::info!("stopped while following");
                health.set_running(false);
                release_lease.cancel();
                server.await??;
                return Ok(());
            }
        }
        if let Some((namespace, pod)) = &own_pod {
            leader::mark_own_pod(client.clone(), namespace, pod, true).await;
        }
    }

    let (stop_pools, stop_sessions) = (shutdown.clone(), shutdown.clone());
    let pools = pool::run(
        ctx.clone(),
        args.namespace.clone(),
        caches_synced,
        async move { stop_pools.cancelled().await },
    );
    let sessions = session::run(ctx, args.namespace, async move {
        stop_sessions.cancelled().await
    });
    let mut losing = leadership.clone();
    // Either loop ending is the operator ending: liveness fails and the process exits.
    tokio::select! {
        _ = pools => tracing::warn!("pool controller stopped"),
        _ = sessions => tracing::warn!("session controller stopped"),
        _ = losing.lost(), if election.is_some() => {
            // Another replica may lead from now on: stop writing at once, not after in-flight
            // reconciles finish. The kubelet restarts this process as a follower.
            tracing::error!("lost the lease: exiting");
            std::process::exit(1);
        }
    }
    health.set_running(false);
    shutdown.cancel();
    release_lease.cancel();
    if let Some(task) = election_task {
        let _ = task.await;
    }
    server.await??;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
