//! `capsule-operator run`, in order: settings, clients and context, election, the HTTP server, then
//! the controllers once this replica leads. `main.rs` only parses the flags and calls [`run`].

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::health::Health;
use crate::leader;
use crate::metrics::Metrics;
use crate::{pool, session, telemetry};

mod args;
mod election;
mod servers;

pub use args::RunArgs;
use election::Election;
use servers::CachesSynced;

/// Runs the operator until it is stopped, one of its controllers ends, or it loses the lease.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(args.log_format)?;
    let ingest_limits = Arc::new(args.limits.limits()?);
    let lease = args.election.settings_if_enabled()?;
    let mut registry = Registry::default();
    let (ctx, leader_gauge) = context(&args, &mut registry).await?;
    let (client, health) = (ctx.client.clone(), ctx.health.clone());
    let shutdown = CancellationToken::new();
    let election = Election::start(&client, lease, args.election.pod_name.as_ref());
    tokio::spawn(leader::track_gauge(
        election.leadership.clone(),
        leader_gauge,
    ));
    let (ingest, caches_synced) = servers::start_ingest(
        &ctx,
        args.namespace.clone(),
        ingest_limits,
        &mut registry,
        election.leadership.clone(),
        &shutdown,
    );
    let server =
        servers::serve_http(args.listen, registry, health.clone(), ingest, &shutdown).await?;
    servers::cancel_on_signal(shutdown.clone());

    health.set_running(true);
    if !election
        .wait_to_lead(&client, &caches_synced, &health, &shutdown)
        .await
    {
        tracing::info!("stopped while following");
        health.set_running(false);
        election.release_lease();
        server.await??;
        return Ok(());
    }
    run_controllers(ctx, args.namespace, caches_synced, &shutdown, &election).await;
    health.set_running(false);
    shutdown.cancel();
    election.release_lease();
    election.ended().await;
    server.await??;
    Ok(())
}

/// The controllers' shared context on a new API client; its metrics go into `registry`.
async fn context(args: &RunArgs, registry: &mut Registry) -> anyhow::Result<(Arc<Context>, Gauge)> {
    let client = kube::Client::try_default().await?;
    capsule_telemetry::register(registry);
    let metrics = Arc::new(Metrics::register(registry));
    let leader_gauge = leader::register_gauge(registry);
    let health = Arc::new(Health::default());
    let ctx = Context::new(client, metrics, args.operator_config(), health);
    Ok((Arc::new(ctx), leader_gauge))
}

/// Runs both controllers until one of them stops; exits the process if the lease is lost.
async fn run_controllers(
    ctx: Arc<Context>,
    namespace: Option<String>,
    caches_synced: CachesSynced,
    shutdown: &CancellationToken,
    election: &Election,
) {
    let (stop_pools, stop_sessions) = (shutdown.clone(), shutdown.clone());
    let pools = pool::run(ctx.clone(), namespace.clone(), caches_synced, async move {
        stop_pools.cancelled().await
    });
    let sessions = session::run(
        ctx,
        namespace,
        async move { stop_sessions.cancelled().await },
    );
    // Either loop ending is the operator ending: liveness fails and the process exits.
    tokio::select! {
        _ = pools => tracing::warn!("pool controller stopped"),
        _ = sessions => tracing::warn!("session controller stopped"),
        _ = election.lost() => {
            // Another replica may lead from now on: stop writing at once, not after in-flight
            // reconciles finish. The kubelet restarts this process as a follower.
            tracing::error!("lost the lease: exiting");
            std::process::exit(1);
        }
    }
}
