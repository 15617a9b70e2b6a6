//! Starting and stopping the devcluster: the listener, the kubeconfig it writes, the background
//! garbage collector, and the optional snapshot file that keeps objects across restarts.

use crate::api::{self, Shared, MAX_BODY_BYTES};
use crate::cluster::{State, WriteOptions};
use crate::error::{Error, Result};
use crate::store::{StoreSnapshot, DEFAULT_HISTORY_CAPACITY};
use crate::tokens::{random_token, IssuedToken, Tokens};
use axum::extract::DefaultBodyLimit;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a changed state is written to the snapshot file.
const SNAPSHOT_PERIOD: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct DevClusterConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Holds `kubeconfig` and the kubelet's `pods/` tree.
    pub state_dir: PathBuf,
    /// Objects are loaded from and saved to this file when set.
    pub snapshot: Option<PathBuf>,
    /// Watch history length (events); older resourceVersions get 410 Gone.
    pub history_capacity: usize,
}

impl DevClusterConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        DevClusterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: state_dir.into(),
            snapshot: None,
            history_capacity: DEFAULT_HISTORY_CAPACITY,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    store: StoreSnapshot,
    tokens: Tokens,
}

/// A running devcluster API server.
pub struct DevCluster {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// PEM of the CA that signed the serving certificate (also in `<state_dir>/ca.crt`).
    pub ca_pem: String,
    pub kubeconfig: PathBuf,
    pub admin_token: String,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    snapshot: Option<PathBuf>,
}

/// Namespaces every cluster starts with.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn write_kubeconfig(path: &Path, url: &str, token: &str, ca_pem: &str) -> Result<()> {
    use base64::Engine;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": {"server": url, "certificate-authority-data": ca_data}}],
        "users": [{"name": "devcluster-admin", "user": {"token": token}}],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": "devcluster-admin", "namespace": "default"}}],
        "current-context": "devcluster",
        "preferences": {},
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&config)?)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// The user-facing ClusterRoles every cluster has, as aggregations only: `admin` gathers roles
/// labelled `aggregate-to-admin` (which `edit` is), `edit` those labelled `aggregate-to-edit`
/// (which `view` is), `view` those labelled `aggregate-to-view`. A real cluster's also carry rules
/// for the built-in resources; these carry only what other roles aggregate into them.
fn bootstrap_user_roles(state: &mut State) -> Result<()> {
    let roles = state
        .resolve("rbac.authorization.k8s.io", "v1", "clusterroles")
        .expect("built in");
    for (name, aggregated_into) in [
        ("admin", None),
        ("edit", Some("admin")),
        ("view", Some("edit")),
    ] {
        if state.get(&roles, "", name).is_ok() {
            continue;
        }
        let label = |role: &str| format!("rbac.authorization.k8s.io/aggregate-to-{role}");
        let mut labels = serde_json::Map::new();
        if let Some(parent) = aggregated_into {
            labels.insert(label(parent), json!("true"));
        }
        let role = json!({
            "metadata": {"name": name, "labels": labels},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {label(name): "true"}}]},
            "rules": [],
        });
        let options = WriteOptions {
            manager: "devcluster".into(),
            ..WriteOptions::default()
        };
        state.create(&roles, "", role, &options, &mut Vec::new())?;
    }
    Ok(())
}

fn save_snapshot(shared: &Shared, path: &Path) -> Result<()> {
    let snapshot = {
        let state = shared.lock();
        Snapshot {
            store: state.store.snapshot(),
            tokens: state.tokens.clone(),
        }
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&snapshot)?)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// The state the server starts with: the snapshot if there is one, the admin token, the initial
/// namespaces and the user-facing roles.
fn initial_state(config: &DevClusterConfig, admin_token: &str) -> Result<State> {
    let mut tokens = Tokens::default();
    let mut state = State::new(config.history_capacity, Tokens::default());
    if let Some(path) = config.snapshot.as_ref().filter(|p| p.exists()) {
        let snapshot: Snapshot = serde_json::from_slice(&std::fs::read(path)?)?;
        state.store.restore(snapshot.store);
        tokens = snapshot.tokens;
        state.refresh_custom_resources();
        tracing::info!(path = %path.display(), "restored snapshot");
    }
    tokens.insert(
        admin_token.to_string(),
        IssuedToken {
            user: Tokens::admin_user(),
            expires_at: None,
            audiences: Vec::new(),
            bound_object: None,
        },
    );
    state.tokens = tokens;
    let namespaces = state.resolve("", "v1", "namespaces").expect("built in");
    for name in INITIAL_NAMESPACES {
        if state.get(&namespaces, "", name).is_err() {
            let options = WriteOptions {
                manager: "devcluster".into(),
                ..WriteOptions::default()
            };
            state.create(
                &namespaces,
                "",
                json!({"metadata": {"name": name}}),
                &options,
                &mut Vec::new(),
            )?;
        }
    }
    bootstrap_user_roles(&mut state)?;
    Ok(state)
}

/// Saves a snapshot every `SNAPSHOT_PERIOD` in which something changed, until shutdown.
async fn save_snapshots(shared: Arc<Shared>, path: PathBuf) {
    let mut saved_at = 0;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(SNAPSHOT_PERIOD) => {}
        }
        let rv = shared.lock().store.resource_version();
        if rv != saved_at {
            match save_snapshot(&shared, &path) {
                Ok(()) => saved_at = rv,
                Err(error) => tracing::warn!(%error, "snapshot not saved"),
            }
        }
    }
}

impl DevCluster {
    pub async fn start(config: DevClusterConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.state_dir)?;
        let state_dir = std::fs::canonicalize(&config.state_dir)?;
        let admin_token = random_token();
        let state = initial_state(&config, &admin_token)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            state_dir: state_dir.clone(),
            gc_wake: Notify::new(),
            shutdown: CancellationToken::new(),
            counters: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let address = listener.local_addr()?;
        let identity = crate::tls::serving_identity(&state_dir, address)?;
        let url = format!("https://{address}");
        let kubeconfig = state_dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &url, &admin_token, &identity.ca_pem)?;
        let listener =
            crate::tls::TlsListener::new(listener, identity.config, shared.shutdown.clone())?;

        let router = axum::Router::new()
            .fallback(api::serve)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(shared.clone());
        let shutdown = shared.shutdown.clone();
        let mut tasks = vec![tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "devcluster server stopped");
            }
        })];
        tasks.push(tokio::spawn(crate::gc::run(shared.clone())));
        if let Some(path) = config.snapshot.clone() {
            tasks.push(tokio::spawn(save_snapshots(shared.clone(), path)));
        }
        tracing::info!(%url, "devcluster serving");
        Ok(DevCluster {
            url,
            ca_pem: identity.ca_pem.clone(),
            kubeconfig,
            admin_token,
            shared,
            tasks,
            snapshot: config.snapshot,
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.shared.state_dir
    }

    /// Cancelled when the server shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// `(lists, watches, writes)` served so far, across all resources.
    pub fn request_counts(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.shared.counters;
        (
            c.lists.load(Relaxed),
            c.watches.load(Relaxed),
            c.writes.load(Relaxed),
        )
    }

    /// A kube client for the admin user, configured from the written kubeconfig.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Stops serving (open watches end), and saves the snapshot if one is configured.
    pub async fn shutdown(self) -> Result<()> {
        self.shared.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if let Some(path) = &self.snapshot {
            save_snapshot(&self.shared, path)?;
        }
        Ok(())
    }
}

pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Config(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| Error::Config(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}
