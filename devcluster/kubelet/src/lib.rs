//! The devcluster's process kubelet: it registers a Node, runs the containers of the pods bound to
//! it as local processes, and runs the workload controllers (Deployment → ReplicaSet → Pod) that the
//! Helm chart relies on. It talks to the devcluster's API server only through a `kube::Client`, the
//! way a real kubelet talks to a real API server.
//!
//! [`runtime`] is the part that runs processes (spawn, probes, restarts, grace-period stop, logs)
//! and knows nothing of the API; the rest turns Pod objects into runtime launches and back into
//! Pod status.

pub mod controllers;
pub mod error;
pub mod events;
pub mod image_map;
pub(crate) mod kubelet;
pub mod node;
pub mod pod;
pub mod runtime;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};
pub use image_map::{parse_image_mapping, ImageMap};

/// How the kubelet maps images to local commands and where it keeps pod state.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The Node name it registers and serves.
    pub node_name: String,
    /// Root of per-pod state: `<state_dir>/pods/<namespace>_<pod>_<uid>/` holds volumes and
    /// `<container>.log` (the API server serves `pods/log` from these files).
    pub state_dir: PathBuf,
    /// Image patterns (`capsule-worker:*`, `busybox`, `*`) to the command that stands in for them.
    /// See [`image_map`] for matching and the `{args}` placeholder.
    pub image_map: Vec<(String, Vec<String>)>,
    /// URL of the API server as pods should reach it, written into each pod's kubeconfig
    /// (`KUBECONFIG`) together with its service-account token. None: pods get no kubeconfig.
    pub api_server_url: Option<String>,
    /// PEM of the CA that signs the API server's certificate, for the pods' kubeconfig and the
    /// `ca.crt` of service-account token volumes. None with an `https` URL: TLS verification is
    /// skipped in the pods' kubeconfig.
    pub api_server_ca_pem: Option<String>,
    /// Crash-loop back-off, initial delay and cap.
    pub restart_backoff: runtime::Backoff,
    /// Bound of each container's current log file.
    pub max_log_bytes: u64,
    /// Longest grace period granted to pods when the kubelet itself shuts down.
    pub shutdown_grace: Duration,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            node_name: "devcluster-node".into(),
            state_dir: PathBuf::from("devcluster-state"),
            image_map: Vec::new(),
            api_server_url: None,
            api_server_ca_pem: None,
            restart_backoff: runtime::Backoff::default(),
            max_log_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What every pod worker shares.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub config: KubeletConfig,
    pub image_map: ImageMap,
    pub ips: pod::ip_pool::IpPool,
    pub reaper: runtime::Reaper,
    pub events: events::EventRecorder,
}

/// Runs the kubelet and the workload controllers until `shutdown` is cancelled, then stops every
/// pod process (SIGTERM, grace period capped by `shutdown_grace`, SIGKILL) before returning.
pub async fn run(
    client: kube::Client,
    config: KubeletConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let working_dir = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let state_dir = working_dir.join(&config.state_dir);
    tokio::fs::create_dir_all(state_dir.join("pods"))
        .await
        .map_err(|e| Error::io(&state_dir, e))?;
    let config = KubeletConfig {
        state_dir,
        ..config
    };
    let started = jiff::Timestamp::now();
    node::register(&client, &config.node_name, started).await?;
    let shared = Arc::new(Shared {
        image_map: ImageMap::new(&config.image_map, &working_dir),
        ips: pod::ip_pool::IpPool::new(),
        reaper: runtime::Reaper::start()?,
        events: events::EventRecorder::new(client.clone(), "kubelet", &config.node_name),
        client: client.clone(),
        config: config.clone(),
    });
    let controller_context = Arc::new(controllers::replicaset::Context {
        client: client.clone(),
        events: events::EventRecorder::new(client.clone(), "controller-manager", &config.node_name),
    });
    let heartbeat = tokio::spawn(node::heartbeat_loop(
        client.clone(),
        config.node_name.clone(),
        started,
    ));
    let replica_sets = tokio::spawn(controllers::replicaset::run(
        controller_context.clone(),
        shutdown.clone(),
    ));
    let deployments = tokio::spawn(controllers::deployment::run(
        controller_context,
        shutdown.clone(),
    ));
    tracing::info!(node = %config.node_name, "kubelet running");
    kubelet::PodLoop::new(shared.clone())
        .run(shutdown.clone())
        .await;
    heartbeat.abort();
    let _ = replica_sets.await;
    let _ = deployments.await;
    shared.reaper.shutdown().await;
    Ok(())
}
