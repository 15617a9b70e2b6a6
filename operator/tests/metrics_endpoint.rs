//! The operator's HTTP server over real TCP: /metrics passes `promtool check metrics`, and the health
//! endpoints follow the controller's real state.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use capsule_crds::WorkerPhase;
use capsule_operator::error::ErrorKind;
use capsule_operator::health::Health;
use capsule_operator::http::{self, HttpState};
use capsule_operator::metrics::{
    ControllerLabels, ControllerName, Metrics, PoolLabels, TraceLabels,
};
use capsule_operator::pool::plan::RemovalReason;
use capsule_operator::relay::index::{Counters, PoolTotals, WorkerIndex};
use capsule_operator::relay::metrics::RelayMetrics;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("CAPSULE_TOOLS_DIR")
        .unwrap_or_else(|_| format!("{}/../.tools", env!("CARGO_MANIFEST_DIR")));
    let path = PathBuf::from(dir).join("bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed at {}: run `scripts/install-tools.sh {name}` (or `make tools`)",
        path.display()
    );
    path
}

/// The operator's metrics and the relay index they read, served on a free port.
struct Served {
    url: String,
    metrics: Arc<Metrics>,
    index: Arc<WorkerIndex>,
    stop: CancellationToken,
}

async fn serve(health: Arc<Health>) -> Served {
    let mut registry = Registry::default();
    capsule_telemetry::register(&mut registry);
    let metrics = Arc::new(Metrics::register(&mut registry));
    let index = Arc::new(WorkerIndex::default());
    RelayMetrics::register(&mut registry, index.clone());
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let state = HttpState {
        registry: Arc::new(registry),
        health,
    };
    tokio::spawn(http::serve(listener, state, stop.clone()));
    Served {
        url,
        metrics,
        index,
        stop,
    }
}

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let Served {
        url,
        metrics,
        index,
        stop,
    } = serve(Arc::new(Health::default())).await;
    // Populate every family so promtool sees each series type.
    let pool = PoolLabels {
        namespace: "default".into(),
        pool: "p".into(),
    };
    let controller = ControllerLabels {
        controller: ControllerName::pool,
    };
    metrics.reconcile_runs.get_or_create(&controller).inc();
    metrics.reconcile_failed(ControllerName::pool, ErrorKind::Conflict);
    metrics
        .reconcile_duration
        .get_or_create(&controller)
        .observe(
            0.012,
            Some(TraceLabels {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            }),
            None,
        );
    metrics.set_phases(&pool, &[(WorkerPhase::Idle, 2), (WorkerPhase::Bound, 1)]);
    metrics.warm_target.get_or_create(&pool).set(2);
    metrics.max_workers.get_or_create(&pool).set(5);
    metrics.pool_ready.get_or_create(&pool).set(1);
    metrics.workers_created.get_or_create(&pool).inc_by(3);
    metrics.removed(&pool, RemovalReason::ScaleDown);
    metrics.status_writes.get_or_create(&pool).inc();
    let cpu = Counters {
        cpu_millis: 1500,
        ..Default::default()
    };
    let totals = PoolTotals {
        counters: cpu,
        ..Default::default()
    };
    index.publish("default", "p", &totals, false);

    // A scraper that asks for OpenMetrics gets the exemplars.
    let response = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let openmetrics = response.text().await.unwrap();
    assert!(
        openmetrics.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.012"),
        "reconcile histogram carries its trace-id exemplar:\n{openmetrics}"
    );

    // Anything else gets the classic text format, which promtool lints.
    let response = reqwest::get(format!("{url}/metrics")).await.unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    for series in [
        "capsule_reconcile_runs_total{controller=\"pool\"} 1",
        "capsule_reconcile_failures_total{controller=\"pool\",error_kind=\"conflict\"} 1",
        "capsule_pool_workers{namespace=\"default\",pool=\"p\",phase=\"Idle\"} 2",
        "capsule_pool_workers_created_total{namespace=\"default\",pool=\"p\"} 3",
        // Published with the pool, before any miss: increase() sees the first one.
        "capsule_pool_misses_total{namespace=\"default\",pool=\"p\"} 0",
        "capsule_pool_acquisition_timeouts_total{namespace=\"default\",pool=\"p\"} 0",
        "# TYPE capsule_pool_cpu_seconds_total counter",
        "capsule_pool_cpu_seconds_total{namespace=\"default\",pool=\"p\"} 1.5",
        "capsule_build_info{version=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_max_fds ",
    ] {
        assert!(body.contains(series), "missing {series} in:\n{body}");
    }

    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Deleting a pool removes its series, so label sets stay bounded by live pools.
    metrics.forget_pool(&pool);
    index.forget_pool("default", "p");
    let body = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !body.contains("pool=\"p\""),
        "series of a deleted pool remain:\n{body}"
    );
    stop.cancel();
}

#[tokio::test]
async fn health_follows_the_controller() {
    let health = Arc::new(Health::default());
    let Served { url, stop, .. } = serve(health.clone()).await;
    let status = |path: &'static str| {
        let url = url.clone();
        async move {
            reqwest::get(format!("{url}{path}"))
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status("/healthz").await,
        503,
        "not healthy before the controller runs"
    );
    health.set_running(true);
    assert_eq!(status("/healthz").await, 200);
    assert_eq!(
        status("/readyz").await,
        503,
        "not ready before the watches synced"
    );
    health.set_synced(true);
    assert_eq!(status("/readyz").await, 200);
    health.set_running(false);
    assert_eq!(
        status("/healthz").await,
        503,
        "a stopped controller loop fails liveness"
    );
    assert_eq!(status("/readyz").await, 503);
    stop.cancel();
}
