//! `capsule-operator run`, in order: settings, clients and context, election, the HTTP server, then
//! the controllers once this replica leads. `main.rs` only parses the flags and calls [`run`].

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use capsule_crds::{CapsulePool, CapsuleSession};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::context::{Context, WatchCaches};
use crate::health::Health;
use crate::leader;
use crate::metrics::Metrics;
use crate::{pool, relay, session, telemetry};

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
    let shutdown = CancellationToken::new();
    let started = context(&args, &mut registry, &shutdown).await?;
    let ctx = started.ctx;
    let (client, health) = (ctx.client.clone(), ctx.health.clone());
    let election = Election::start(&client, lease, args.election.pod_name.as_ref());
    tokio::spawn(leader::track_gauge(
        election.leadership.clone(),
        started.leader_gauge,
    ));
    let watches = started.watches;
    let ingest = servers::ingest_state(
        &ctx,
        ingest_limits,
        &mut registry,
        election.leadership.clone(),
    );
    let server =
        servers::serve_http(args.listen, registry, health.clone(), ingest, &shutdown).await?;
    servers::cancel_on_signal(shutdown.clone());

    health.set_running(true);
    if !election
        .wait_to_lead(&client, &watches.caches_synced, &health, &shutdown)
        .await
    {
        tracing::info!("stopped while following");
        health.set_running(false);
        election.release_lease();
        server.await??;
        return Ok(());
    }
    run_controllers(ctx, watches, &shutdown, &election).await;
    health.set_running(false);
    shutdown.cancel();
    election.release_lease();
    election.ended().await;
    server.await??;
    Ok(())
}

/// The context, complete with its watch caches, and what else start-up made with it.
struct Started {
    ctx: Arc<Context>,
    leader_gauge: Gauge,
    watches: Watches,
}

/// The watches the controllers run on.
struct Watches {
    namespace: Option<String>,
    /// The session cache's events, which the pool controller drives once this replica leads.
    session_events: BoxStream<'static, kube::runtime::watcher::Result<CapsuleSession>>,
    /// The pool cache's events, which the pool controller drives once this replica leads.
    pool_events: BoxStream<'static, kube::runtime::watcher::Result<CapsulePool>>,
    /// The NetworkPolicy cache's events, which the pool controller drives once this replica leads.
    policy_events: BoxStream<'static, kube::runtime::watcher::Result<NetworkPolicy>>,
    /// The relay's caches synced (they run from start-up on, leader or not).
    caches_synced: CachesSynced,
    /// The pod cache's changes, which wake the pool controller once this replica leads.
    pod_triggers: relay::caches::PodTriggers,
}

/// The controllers' shared context on a new API client, its watch caches started; its metrics
/// go into `registry`.
async fn context(
    args: &RunArgs,
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<Started> {
    let client = api_client().await?;
    capsule_telemetry::register(registry);
    let metrics = Arc::new(Metrics::register(registry));
    let leader_gauge = leader::register_gauge(registry);
    let health = Arc::new(Health::default());
    let namespace = args.namespace.clone();
    let caches = relay::caches::start(client.clone(), namespace.clone(), shutdown.clone());
    let (sessions, session_events) = pool::session_watch(client.clone(), namespace.as_deref());
    let (pools, pool_events) = pool::pool_watch(client.clone(), namespace.as_deref());
    let (policies, policy_events) =
        pool::network_policy_watch(client.clone(), namespace.as_deref());
    let ctx =
        Context::new(client, metrics, args.operator_config(), health).with_caches(WatchCaches {
            sessions,
            pools,
            directory: caches.directory,
            network_policies: policies,
        });
    relay::metrics::RelayMetrics::register(registry, ctx.index.clone());
    Ok(Started {
        ctx: Arc::new(ctx),
        leader_gauge,
        watches: Watches {
            namespace,
            session_events,
            pool_events,
            policy_events,
            caches_synced: caches.synced.shared(),
            pod_triggers: caches.pod_triggers,
        },
    })
}

/// The API client from the environment (in-cluster, else kubeconfig), naming the operator and its
/// version in every request's User-Agent, as API server audit logs show it.
async fn api_client() -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer().await?;
    let agent = concat!("capsule-operator/", env!("CARGO_PKG_VERSION"));
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(agent),
    ));
    Ok(kube::Client::try_from(config)?)
}

/// Runs both controllers until one of them stops; exits the process if the lease is lost.
async fn run_controllers(
    ctx: Arc<Context>,
    watches: Watches,
    shutdown: &CancellationToken,
    election: &Election,
) {
    let (stop_pools, stop_sessions) = (shutdown.clone(), shutdown.clone());
    let namespace = watches.namespace;
    let pools = pool::run(
        ctx.clone(),
        pool::Triggers {
            pools: watches.pool_events,
            sessions: watches.session_events,
            pods: watches.pod_triggers.subscribe().boxed(),
            network_policies: watches.policy_events,
        },
        watches.caches_synced,
        async move { stop_pools.cancelled().await },
    );
    let sessions = session::run(
        ctx,
        namespace,
        watches.pod_triggers.subscribe().boxed(),
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
