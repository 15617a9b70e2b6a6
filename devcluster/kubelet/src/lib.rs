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
pub mod image_root;
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
pub use image_root::{parse_image_root, ImageRoots};

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
}

/// Knobs beyond [`KubeletConfig`], all with working defaults; see [`run_with_options`].
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    /// URL of the API server as pods should reach it, written into each pod's kubeconfig
    /// (`KUBECONFIG`) together with its service-account token. None: taken from the kubeconfig the
    /// devcluster writes at `<state_dir>/kubeconfig`; without one, pods get no kubeconfig.
    pub api_server_url: Option<String>,
    /// PEM of the CA that signs the API server's certificate, for the pods' kubeconfig and the
    /// `ca.crt` of service-account token volumes. None with an `https` URL: TLS verification is
    /// skipped in the pods' kubeconfig.
    pub api_server_ca_pem: Option<String>,
    /// Crash-loop back-off, initial delay and cap (default 0.5 s doubling to 10 s).
    pub restart_backoff: runtime::Backoff,
    /// Bound of each container's current log file (default 16 MiB).
    pub max_log_bytes: u64,
    /// Longest grace period granted to pods when the kubelet itself shuts down (default 10 s).
    pub shutdown_grace: Duration,
    /// `(PATTERN, IMAGE)`: containers whose image matches run from IMAGE's root filesystem in the
    /// local buildah storage, in namespaces of their own ([`image_root`], [`runtime::sandbox`]).
    /// Tried before `image_map`.
    pub image_roots: Vec<(String, String)>,
    /// The buildah command that reaches that storage (default `buildah`; the project's is
    /// `scripts/buildah.sh`).
    pub buildah: Vec<String>,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        KubeletOptions {
            api_server_url: None,
            api_server_ca_pem: None,
            restart_backoff: runtime::Backoff::default(),
            max_log_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            image_roots: Vec::new(),
            buildah: vec!["buildah".into()],
        }
    }
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            node_name: "devcluster-node".into(),
            state_dir: PathBuf::from("devcluster-state"),
            image_map: Vec::new(),
        }
    }
}

/// What every pod worker shares.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub config: KubeletConfig,
    pub options: KubeletOptions,
    pub image_map: ImageMap,
    pub image_roots: ImageRoots,
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
    run_with_options(client, config, KubeletOptions::default(), shutdown).await
}

/// [`run`] with explicit [`KubeletOptions`].
pub async fn run_with_options(
    client: kube::Client,
    config: KubeletConfig,
    options: KubeletOptions,
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
    let options = with_api_server_from_kubeconfig(options, &config.state_dir);
    let started = jiff::Timestamp::now();
    node::register(&client, &config.node_name, started).await?;
    let shared = Arc::new(Shared {
        image_map: ImageMap::new(&config.image_map, &working_dir),
        image_roots: ImageRoots::new(
            options.image_roots.clone(),
            options.buildah.clone(),
            &config.state_dir,
        ),
        ips: pod::ip_pool::IpPool::new(),
        reaper: runtime::Reaper::start()?,
        events: events::EventRecorder::new(client.clone(), "kubelet", &config.node_name),
        client: client.clone(),
        config: config.clone(),
        options,
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
    let service_accounts = tokio::spawn(controllers::service_account::run(
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
    let _ = service_accounts.await;
    shared.reaper.shutdown().await;
    shared.image_roots.remove_all().await;
    Ok(())
}

/// Fills the API server URL and CA from `<state_dir>/kubeconfig` (current context) when unset.
fn with_api_server_from_kubeconfig(
    mut options: KubeletOptions,
    state_dir: &std::path::Path,
) -> KubeletOptions {
    if options.api_server_url.is_some() {
        return options;
    }
    let Ok(kubeconfig) = kube::config::Kubeconfig::read_from(state_dir.join("kubeconfig")) else {
        return options;
    };
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref())
        .or(kubeconfig.clusters.first())
        .and_then(|c| c.cluster.as_ref());
    if let Some(cluster) = cluster {
        options.api_server_url = cluster.server.clone();
        if options.api_server_ca_pem.is_none() {
            options.api_server_ca_pem =
                cluster
                    .certificate_authority_data
                    .as_deref()
                    .and_then(|data| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD
                            .decode(data)
                            .ok()
                            .and_then(|pem| String::from_utf8(pem).ok())
                    });
        }
    }
    options
}
