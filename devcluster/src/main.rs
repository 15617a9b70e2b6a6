//! `capsule-devcluster serve`: the API server plus (unless `--no-kubelet`) the process kubelet.

use capsule_devcluster::{DevCluster, DevClusterConfig, Error, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "capsule-devcluster",
    about = "A development stand-in for a Kubernetes control plane (never for production)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (and run the kubelet) until SIGTERM / SIGINT.
    Serve {
        /// Loopback address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Directory for the kubeconfig and pod state (logs, volumes).
        #[arg(long)]
        state_dir: PathBuf,
        /// Load objects from this file at start and save them to it while running.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// `PATTERN=COMMAND`: run COMMAND for containers whose image matches PATTERN (`*` wildcard).
        #[arg(long = "image-map", value_name = "PATTERN=COMMAND")]
        image_map: Vec<String>,
        /// `PATTERN=IMAGE`: run containers whose image matches PATTERN from IMAGE, an image in the
        /// local buildah storage, in their own mount and PID namespaces (tried before --image-map).
        #[arg(long = "image-root", value_name = "PATTERN=IMAGE")]
        image_root: Vec<String>,
        /// The buildah command for --image-root (whitespace-separated words), e.g.
        /// `scripts/buildah.sh` for the project's storage under .tools/containers.
        #[arg(long, default_value = "buildah")]
        buildah: String,
        /// Do not start the in-process kubelet.
        #[arg(long)]
        no_kubelet: bool,
        /// Watch history length (events) before old resourceVersions get 410 Gone.
        #[arg(long, default_value_t = capsule_devcluster::store::DEFAULT_HISTORY_CAPACITY)]
        watch_history: usize,
    },
}

fn parse_image_map(entries: &[String]) -> Result<Vec<(String, Vec<String>)>> {
    entries
        .iter()
        .map(|entry| {
            let (pattern, command) = entry.split_once('=').ok_or_else(|| {
                Error::Config(format!("--image-map wants PATTERN=COMMAND, got {entry:?}"))
            })?;
            let command: Vec<String> = command.split_whitespace().map(str::to_string).collect();
            if pattern.is_empty() || command.is_empty() {
                return Err(Error::Config(format!(
                    "--image-map wants PATTERN=COMMAND, got {entry:?}"
                )));
            }
            Ok((pattern.to_string(), command))
        })
        .collect()
}

/// The owner of `/proc/self` is this process's effective uid.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Command::Serve {
        listen,
        state_dir,
        snapshot,
        image_map,
        image_root,
        buildah,
        no_kubelet,
        watch_history,
    } = Cli::parse().command;
    let image_map = parse_image_map(&image_map)?;
    let image_roots = image_root
        .iter()
        .map(|entry| capsule_kubelet::parse_image_root(entry))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("--image-root: {e}")))?;
    if !image_roots.is_empty() && !running_as_root() {
        return Err(Error::Config(
            "--image-root needs root (mount and PID namespaces, chroot, uid switch): run the devcluster as root or use --image-map".into(),
        ));
    }
    let mut config = DevClusterConfig::new(state_dir);
    config.listen = listen;
    config.snapshot = snapshot;
    config.history_capacity = watch_history;
    let cluster = DevCluster::start(config).await?;
    let kubelet_stop = tokio_util::sync::CancellationToken::new();
    let kubelet = if no_kubelet {
        None
    } else {
        let client = cluster.client().await?;
        let kubelet_config = capsule_kubelet::KubeletConfig {
            node_name: "devcluster".into(),
            state_dir: cluster.state_dir().to_path_buf(),
            image_map,
        };
        let options = capsule_kubelet::KubeletOptions {
            image_roots,
            buildah: buildah.split_whitespace().map(str::to_string).collect(),
            ..Default::default()
        };
        Some(tokio::spawn(capsule_kubelet::run_with_options(
            client,
            kubelet_config,
            options,
            kubelet_stop.clone(),
        )))
    };
    println!(
        "ready kubeconfig={} url={}",
        cluster.kubeconfig.display(),
        cluster.url
    );
    terminated().await;
    tracing::info!("shutting down");
    kubelet_stop.cancel();
    if let Some(kubelet) = kubelet {
        match kubelet.await {
            Ok(Err(error)) => tracing::error!(%error, "kubelet stopped with an error"),
            Err(error) => tracing::error!(%error, "kubelet task failed"),
            Ok(Ok(())) => {}
        }
    }
    cluster.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_map_entries_split_pattern_and_command() {
        let parsed = parse_image_map(&["capsule-worker:*=/bin/worker --flag x".into()]).unwrap();
        assert_eq!(
            parsed,
            vec![(
                "capsule-worker:*".into(),
                vec!["/bin/worker".into(), "--flag".into(), "x".into()]
            )]
        );
        assert!(parse_image_map(&["nocommand".into()]).is_err());
    }
}
