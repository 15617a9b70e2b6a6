//! Which local image a container runs from, and that image's root filesystem (`--image-root`).
//!
//! A mapping is `PATTERN=IMAGE`: containers whose image matches PATTERN (as in [`crate::image_map`]:
//! whole reference or last path segment, trailing `*`) run from IMAGE, an image in the local
//! buildah storage (`scripts/buildah.sh`, so `.tools/containers`). Image-root mappings are tried
//! before `--image-map` entries.
//!
//! Each image is made into one working container the first time a pod needs it (`buildah from`,
//! then `buildah mount` gives its rootfs), cached for the kubelet's life and removed at its exit.
//! Containers never write it: a read-only root is a read-only bind of it, a writable one an overlay
//! with a per-container upper layer (see [`crate::runtime::sandbox`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::image_map::pattern_matches;

/// What the image itself declares (its OCI config), the defaults a runtime applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `uid[:gid]`, numeric; empty: root.
    pub user: String,
    pub env: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
}

/// A mounted image.
#[derive(Debug)]
pub struct ImageRootfs {
    pub image: String,
    pub rootfs: PathBuf,
    pub config: ImageConfig,
    container: String,
}

#[cfg(test)]
impl ImageRootfs {
    pub(crate) fn for_tests(image: &str, config: ImageConfig) -> Self {
        ImageRootfs {
            image: image.into(),
            rootfs: PathBuf::from("/nonexistent"),
            config,
            container: String::new(),
        }
    }
}

pub struct ImageRoots {
    entries: Vec<(String, String)>,
    /// The buildah command (`scripts/buildah.sh` for the project's storage).
    buildah: Vec<String>,
    /// Names this kubelet's working containers, so two kubelets (two state dirs) never share one.
    prefix: String,
    mounted: Mutex<HashMap<String, Arc<ImageRootfs>>>,
}

/// Parses `PATTERN=IMAGE`.
pub fn parse_image_root(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((pattern, image)) if !pattern.trim().is_empty() && !image.trim().is_empty() => {
            Ok((pattern.trim().to_owned(), image.trim().to_owned()))
        }
        _ => Err(Error::InvalidImageRoot(text.to_owned())),
    }
}

impl ImageRoots {
    pub fn new(
        entries: Vec<(String, String)>,
        buildah: Vec<String>,
        state_dir: &std::path::Path,
    ) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        state_dir.hash(&mut hasher);
        ImageRoots {
            entries,
            buildah,
            prefix: format!("capsule-kubelet-{:08x}", hasher.finish() as u32),
            mounted: Mutex::new(HashMap::new()),
        }
    }

    /// The local image a container image runs from, if an `--image-root` entry matches it.
    pub fn lookup(&self, image: &str) -> Option<&str> {
        let last_segment = image.rsplit('/').next().unwrap_or(image);
        self.entries
            .iter()
            .find(|(pattern, _)| {
                pattern_matches(pattern, image) || pattern_matches(pattern, last_segment)
            })
            .map(|(_, local)| local.as_str())
    }

    /// The mounted rootfs of `local` (an image from [`ImageRoots::lookup`]), mounting it on first
    /// use. Failures are not cached: a pod retries, and starts once the image has been built.
    pub async fn rootfs(&self, local: &str) -> Result<Arc<ImageRootfs>> {
        let mut mounted = self.mounted.lock().await;
        if let Some(found) = mounted.get(local) {
            return Ok(found.clone());
        }
        let started = Instant::now();
        let container = format!("{}-{}", self.prefix, mounted.len());
        // Left by a kubelet of this state dir that was killed before it could clean up.
        let _ = self.buildah(&["rm", &container]).await;
        self.buildah(&[
            "from",
            "--pull=never",
            "--quiet",
            "--name",
            &container,
            local,
        ])
        .await
        .map_err(|message| Error::ImageMissing {
            image: local.to_owned(),
            message,
        })?;
        let found = match self.inspect_and_mount(local, &container).await {
            Ok(found) => Arc::new(found),
            Err(error) => {
                let _ = self.buildah(&["rm", &container]).await;
                return Err(error);
            }
        };
        tracing::info!(image = local, rootfs = %found.rootfs.display(), elapsed_ms = started.elapsed().as_millis() as u64, "image rootfs mounted");
        mounted.insert(local.to_owned(), found.clone());
        Ok(found)
    }

    async fn inspect_and_mount(&self, local: &str, container: &str) -> Result<ImageRootfs> {
        let failed = |message| Error::ImageMissing {
            image: local.to_owned(),
            message,
        };
        let inspect = self
            .buildah(&["inspect", "--type", "container", container])
            .await
            .map_err(failed)?;
        let inspect: Value = serde_json::from_str(&inspect)?;
        let rootfs = self.buildah(&["mount", container]).await.map_err(failed)?;
        Ok(ImageRootfs {
            image: local.to_owned(),
            rootfs: PathBuf::from(rootfs.trim()),
            config: image_config(&inspect["OCIv1"]["config"]),
            container: container.to_owned(),
        })
    }

    /// Unmounts and removes every working container (the kubelet is exiting, its pods are gone).
    pub async fn remove_all(&self) {
        let mut mounted = self.mounted.lock().await;
        for (_, found) in mounted.drain() {
            let _ = self.buildah(&["umount", &found.container]).await;
            if let Err(error) = self.buildah(&["rm", &found.container]).await {
                tracing::warn!(image = %found.image, %error, "image working container not removed");
            }
        }
    }

    /// Runs buildah; its stdout, or its stderr as the error.
    async fn buildah(&self, args: &[&str]) -> std::result::Result<String, String> {
        let (program, first) = self.buildah.split_first().ok_or("no buildah command")?;
        let output = Command::new(program)
            .args(first)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("running {program}: {e}"))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Bounded: this ends up in an Event.
        Err(stderr.trim().chars().take(400).collect())
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn image_config(config: &Value) -> ImageConfig {
    ImageConfig {
        user: config["User"].as_str().unwrap_or_default().to_owned(),
        env: strings(&config["Env"])
            .into_iter()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect(),
        entrypoint: strings(&config["Entrypoint"]),
        cmd: strings(&config["Cmd"]),
        working_dir: config["WorkingDir"].as_str().unwrap_or_default().to_owned(),
    }
}

/// `uid[:gid]` of an image's `User` (empty: root; no gid: the uid's number, as the devcluster has
/// no `/etc/passwd` lookup). Names are refused with the fix.
pub fn image_user(image: &str, user: &str) -> Result<(u32, Option<u32>)> {
    if user.is_empty() {
        return Ok((0, None));
    }
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let number = |text: &str| {
        text.parse::<u32>().map_err(|_| Error::ImageUser {
            image: image.to_owned(),
            user: user.to_owned(),
        })
    };
    Ok((number(uid)?, gid.map(number).transpose()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_user_are_read() {
        let config = image_config(&serde_json::json!({
            "User": "65532:65532",
            "Env": ["PATH=/usr/bin", "HOME=/home/capsule"],
            "Entrypoint": ["/usr/local/bin/capsule-worker"],
            "WorkingDir": "/home/capsule"
        }));
        assert_eq!(config.entrypoint, ["/usr/local/bin/capsule-worker"]);
        assert!(config.cmd.is_empty());
        assert_eq!(config.env[1], ("HOME".into(), "/home/capsule".into()));
        assert_eq!(image_user("i", &config.user).unwrap(), (65532, Some(65532)));
        assert_eq!(image_user("i", "").unwrap(), (0, None));
        assert_eq!(image_user("i", "7").unwrap(), (7, None));
        assert!(matches!(
            image_user("i", "nonroot"),
            Err(Error::ImageUser { .. })
        ));
    }

    #[test]
    fn mappings_parse_and_match() {
        let roots = ImageRoots::new(
            vec![parse_image_root("capsule-worker:*=localhost/capsule-worker:0.1.0").unwrap()],
            vec!["buildah".into()],
            std::path::Path::new("/state"),
        );
        assert_eq!(
            roots.lookup("ghcr.io/x/capsule-worker:dev"),
            Some("localhost/capsule-worker:0.1.0")
        );
        assert_eq!(roots.lookup("busybox"), None);
        assert!(parse_image_root("no-image=").is_err());
    }
}
