//! What runs from start-up on, leader or not: the caches heartbeats are checked against, the HTTP
//! server (metrics, health, heartbeats) and the stop signal.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::health::Health;
use crate::http;
use crate::leader::Leadership;
use crate::relay::{ingest, ingest::IngestMetrics, ingest::IngestState, limits::IngestLimits};

/// Completes once the relay's caches have synced; awaited by the pool controller and readiness.
pub(super) type CachesSynced = Shared<BoxFuture<'static, ()>>;

/// The heartbeat relay's state over the context's caches. Followers keep those caches warm too,
/// so a takeover can ingest at once.
pub(super) fn ingest_state(
    ctx: &Context,
    limits: Arc<IngestLimits>,
    registry: &mut Registry,
    leadership: Leadership,
) -> IngestState {
    IngestState {
        index: ctx.index.clone(),
        directory: ctx
            .directory
            .clone()
            .expect("start-up builds the context with its caches"),
        metrics: IngestMetrics::register(registry),
        limits,
        leadership,
        wakeups: ctx.wakeups.clone(),
    }
}

/// Binds the listen address and serves until `shutdown`.
pub(super) async fn serve_http(
    listen: SocketAddr,
    registry: Registry,
    health: Arc<Health>,
    ingest: IngestState,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let listener = http::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics, health and heartbeats");
    let state = http::HttpState {
        registry: Arc::new(registry),
        health,
    };
    let app = http::router(state).merge(ingest::router(ingest));
    Ok(tokio::spawn(http::serve_router(
        listener,
        app,
        shutdown.clone(),
    )))
}

/// SIGTERM or Ctrl-C cancels `shutdown`.
pub(super) fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
