//! `capsule-sidecar`: the worker pod's second container.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use capsule_protocol::admin::WorkerClient;
use capsule_sidecar::buffer::{Bounds, TraceBuffer};
use capsule_sidecar::config::{Config, LogFormat, View};
use capsule_sidecar::export::{SpanAssembler, SpanIdentity};
use capsule_sidecar::gate::Gate;
use capsule_sidecar::metrics::Metrics;
use capsule_sidecar::rate_limit::RateLimiter;
use capsule_sidecar::receiver::{self, Ingest};
use capsule_sidecar::redaction::Redactor;
use capsule_sidecar::server::{self, AppState};
use capsule_sidecar::views::Sources;
use capsule_sidecar::{Error, Result};

/// How often age-expired events are evicted when no new events arrive.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(5);

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    if let Err(error) = capsule_protocol::auth::keep_credentials_from_same_uid() {
        tracing::warn!(%error, "could not make the sidecar non-dumpable");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("capsule-sidecar: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error @ Error::Config(_)) => {
            eprintln!("capsule-sidecar: {error}");
            std::process::ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("capsule-sidecar: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal: container logs (`kubectl logs`) stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(config: Config) -> Result<()> {
    let views = config.enabled_views()?;
    let key = hash_key(&config);
    let metrics = Arc::new(Metrics::default());
    let ingest = start_ingest(&config, &key, metrics.clone())?;
    let state = app_state(&config, views, &key, ingest, metrics).await?;
    serve_http(&config, state).await?;
    let _ = std::fs::remove_file(&config.trace_socket);
    Ok(())
}

/// The key hashed ids are keyed with: the pool's worker token, so they stay stable across restarts.
fn hash_key(config: &Config) -> Vec<u8> {
    if config.worker_token.is_empty() {
        // Without the pool's key hashes are still keyed, just not stable across restarts.
        tracing::warn!(
            "CAPSULE_WORKER_TOKEN is not set: hashed ids change when the sidecar restarts"
        );
        rand::random::<[u8; 32]>().to_vec()
    } else {
        config.worker_token.as_bytes().to_vec()
    }
}

/// The trace buffer and its span export, fed from the worker's socket and expired on a timer.
fn start_ingest(config: &Config, key: &[u8], metrics: Arc<Metrics>) -> Result<Arc<Ingest>> {
    let otlp = capsule_telemetry::otlp::settings_from_env()
        .map_err(|e| capsule_sidecar::Error::Config(e.to_string()))?;
    let spans = match otlp {
        Some(settings) => Some(SpanAssembler::start(
            settings,
            SpanIdentity {
                pool: config.pool.clone(),
                namespace: config.pod_namespace.clone(),
                pod: config.pod_name.clone(),
            },
            metrics.clone(),
        )?),
        None => None,
    };
    let ingest = Arc::new(Ingest {
        buffer: Mutex::new(TraceBuffer::new(Bounds {
            max_events: config.trace_max_events as usize,
            max_age: config.max_age(),
            max_bytes: config.trace_max_bytes as usize,
        })),
        redactor: Redactor::new(config.trace_redaction, key),
        metrics,
        spans,
    });
    let listener = receiver::bind(&config.trace_socket)?;
    tokio::spawn(receiver::serve(listener, ingest.clone()));
    tokio::spawn(expire_periodically(ingest.clone()));
    Ok(ingest)
}

/// What the HTTP handlers share: the gate, the rate limiter and the views' sources.
async fn app_state(
    config: &Config,
    views: Vec<View>,
    key: &[u8],
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
) -> Result<Arc<AppState>> {
    let kube = match kube::Client::try_default().await {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::warn!(%error, "no Kubernetes credentials: introspection reviews and the Pool view are unavailable");
            None
        }
    };
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| Error::Worker(e.to_string()))?;
    let (client_rate, global_rate) = config.introspection_rates();
    Ok(Arc::new(AppState {
        registry: metrics.registry(),
        metrics,
        gate: Gate::new(kube.clone(), &config.pool, &config.pod_namespace),
        views,
        audit: config.audit,
        limiter: RateLimiter::new(client_rate, global_rate),
        sources: Sources {
            ingest,
            redactor: Redactor::new(config.introspection_redaction, key),
            worker: WorkerClient::new(http, config.worker_base_url(), config.worker_token.clone()),
            kube,
            pool: config.pool.clone(),
            namespace: config.pod_namespace.clone(),
        },
    }))
}

/// Serves the HTTP routes until SIGTERM or Ctrl-C.
async fn serve_http(config: &Config, state: Arc<AppState>) -> Result<()> {
    let addr = config.listen();
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io_error(format!("binding {addr}")))?;
    let local = tcp
        .local_addr()
        .map_err(io_error("reading the listen address"))?;
    println!("capsule-sidecar listening on {local}");
    tracing::info!(%local, socket = %config.trace_socket.display(), "capsule-sidecar serving");
    axum::serve(
        tcp,
        server::router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(io_error("serving HTTP"))
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

async fn expire_periodically(ingest: Arc<Ingest>) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tick.tick().await;
        let mut buffer = ingest.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.expire(std::time::Instant::now());
        ingest.metrics.buffer_events.set(buffer.len() as i64);
        ingest.metrics.buffer_bytes.set(buffer.bytes() as i64);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
