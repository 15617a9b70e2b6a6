use std::net::SocketAddr;
use std::sync::Arc;

use capsule_operator::config::OperatorConfig;
use capsule_operator::context::Context;
use capsule_operator::health::Health;
use capsule_operator::metrics::Metrics;
use capsule_operator::relay::ingest::{self, IngestMetrics, IngestState};
use capsule_operator::telemetry::{self, LogFormat};
use capsule_operator::{http, pool, relay, session};
use clap::{Parser, Subcommand};
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
    Run(RunArgs),
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
    /// Sidecar image for pools that do not name one.
    #[arg(long, env = "CAPSULE_SIDECAR_IMAGE", default_value = concat!("capsule-sidecar:", env!("CARGO_PKG_VERSION")))]
    sidecar_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CAPSULE_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Seconds between two status passes of each pool without a triggering event.
    #[arg(long, env = "CAPSULE_STATUS_INTERVAL_SECONDS", default_value_t = 10)]
    status_interval_seconds: u64,
    /// Log format.
    #[arg(long, env = "CAPSULE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", capsule_crds::crds_yaml());
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(args.log_format)?;
    let client = kube::Client::try_default().await?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let health = Arc::new(Health::default());
    let config = OperatorConfig {
        heartbeat_url: args.heartbeat_url,
        default_sidecar_image: args.sidecar_image,
        status_interval: std::time::Duration::from_secs(args.status_interval_seconds.max(1)),
        ..OperatorConfig::default()
    };
    let ctx = Arc::new(Context::new(client, metrics, config, health.clone()));
    let shutdown = CancellationToken::new();

    let ingest_metrics = IngestMetrics::register(&mut registry);
    let (directory, caches_synced) =
        relay::caches::start(ctx.client.clone(), args.namespace.clone(), shutdown.clone());
    let _ = ctx.directory.set(directory.clone());
    let ingest = IngestState {
        index: ctx.index.clone(),
        directory,
        metrics: ingest_metrics,
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
    // Either loop ending is the operator ending: liveness fails and the process exits.
    tokio::select! {
        _ = pools => tracing::warn!("pool controller stopped"),
        _ = sessions => tracing::warn!("session controller stopped"),
    }
    health.set_running(false);
    shutdown.cancel();
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
