use std::net::SocketAddr;
use std::sync::Arc;

use capsule_operator::config::OperatorConfig;
use capsule_operator::context::Context;
use capsule_operator::health::Health;
use capsule_operator::metrics::Metrics;
use capsule_operator::telemetry::{self, LogFormat};
use capsule_operator::{http, pool};
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
        ..OperatorConfig::default()
    };
    let ctx = Arc::new(Context::new(client, metrics, config, health.clone()));
    let shutdown = CancellationToken::new();

    let listener = http::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics and health");
    let state = http::HttpState {
        registry: Arc::new(registry),
        health: health.clone(),
    };
    let server = tokio::spawn(http::serve(listener, state, shutdown.clone()));

    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });

    health.set_running(true);
    let stop = shutdown.clone();
    pool::run(ctx, args.namespace, async move { stop.cancelled().await }).await;
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
