use std::net::SocketAddr;
use std::sync::Arc;

use capsule_gateway::{index::Index, AppState};
use clap::Parser;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "capsule-gateway",
    version,
    about = "Proxies /v1/sessions/{namespace}/{name}/... to each CapsuleSession's bound worker"
)]
struct Args {
    /// Address to serve the proxy, probes and /metrics on.
    #[arg(long, env = "CAPSULE_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Watch sessions of this namespace only (default: all namespaces).
    #[arg(long, env = "CAPSULE_GATEWAY_NAMESPACE")]
    namespace: Option<String>,
    /// Largest request body forwarded, in bytes; larger ones get 413 bodyTooLarge.
    #[arg(long, env = "CAPSULE_GATEWAY_MAX_BODY_BYTES", default_value_t = capsule_gateway::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Logs as JSON lines instead of text.
    #[arg(long, env = "CAPSULE_GATEWAY_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let client = kube::Client::try_default().await?;
    let index = Arc::new(Index::default());
    tokio::spawn(capsule_gateway::watch::run(
        client,
        args.namespace.clone(),
        index.clone(),
    ));
    let state = Arc::new(AppState::new(index, args.max_body_bytes)?);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    info!(addr = %listener.local_addr()?, namespace = ?args.namespace, "capsule-gateway serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    capsule_gateway::serve(listener, capsule_gateway::router(state), shutdown).await?;
    Ok(())
}
