//! Getting a pod ready to start: its volumes (behind a short link), the kubeconfig its
//! containers use for the API, and one launch per container with env, mounts and restart
//! counts carried over from an earlier kubelet run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::core::v1::Container;
use kube::ResourceExt;

use super::super::env::{container_env, EnvList, PodAddresses};
use super::super::image_launch::{bind_mounts, image_env, image_process};
use super::super::launch::{build_launch, finish_launch, termination_grace, LaunchSettings};
use super::super::mounts::MountTable;
use super::super::objects::PodObjects;
use super::super::volumes::{materialise, Materialised, VolumeContext, SERVICE_ACCOUNT_MOUNT};
use super::{PodWorker, Prepared, HOST_IP};
use crate::error::{Error, Result};
use crate::image_root::ImageRootfs;
use crate::runtime::{BindMount, ContainerLaunch, RestartPolicy};

/// Where a container run from its image finds the pod's kubeconfig (a read-only bind of
/// `<pod dir>/devcluster`); its token file is the in-container service-account path.
const IMAGE_KUBECONFIG_DIR: &str = "/var/run/devcluster";

/// What every container of the pod is launched from, worked out once per preparation.
struct PodInputs<'a> {
    volumes: &'a Materialised,
    volumes_dir: &'a Path,
    /// The kubeconfig as a container run from a local command sees it.
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig as a container run from an image sees it.
    image_kubeconfig: Option<PathBuf>,
    settings: LaunchSettings<'a>,
}

impl PodWorker {
    pub(super) async fn prepare(&self) -> Result<Prepared> {
        let mut objects = PodObjects::new(
            &self.shared.client,
            &self.pod.namespace().unwrap_or_default(),
        );
        let volumes_dir = short_volumes_dir(&self.pod_dir)
            .map_err(|e| crate::error::Error::io(self.pod_dir.join("volumes"), e))?;
        let volumes = self.materialise_volumes(&mut objects, &volumes_dir).await?;
        let (kubeconfig, image_kubeconfig) = self.write_kubeconfigs(&volumes).await?;
        let inputs = PodInputs {
            volumes: &volumes,
            volumes_dir: &volumes_dir,
            kubeconfig,
            image_kubeconfig,
            settings: self.launch_settings(),
        };
        let previous_restart_counts = self.previous_restart_counts();
        let init_containers = self
            .spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c, true));
        let all = init_containers.chain(self.spec.containers.iter().map(|c| (c, false)));
        let mut prepared = Prepared {
            volumes: Materialised::default(),
            init: Vec::new(),
            main: Vec::new(),
        };
        for (container, init) in all {
            let restarts = previous_restart_counts
                .iter()
                .find(|(name, _)| *name == container.name)
                .map(|(_, count)| *count)
                .unwrap_or(0);
            let mut launch = self
                .container_launch(&mut objects, container, &inputs, restarts)
                .await?;
            if init {
                // Init containers run to completion: they are retried on failure, never restarted
                // after success.
                launch.restart_policy = match self.restart_policy {
                    RestartPolicy::Never => RestartPolicy::Never,
                    _ => RestartPolicy::OnFailure,
                };
                prepared.init.push(launch);
            } else {
                prepared.main.push(launch);
            }
        }
        prepared.volumes = volumes;
        Ok(prepared)
    }

    async fn materialise_volumes(
        &self,
        objects: &mut PodObjects,
        volumes_dir: &Path,
    ) -> Result<Materialised> {
        let claims_dir = self
            .shared
            .config
            .state_dir
            .join("claims")
            .join(self.pod.namespace().unwrap_or_default());
        materialise(
            &self.volume_context(&claims_dir),
            objects,
            self.spec.volumes.as_deref().unwrap_or_default(),
            volumes_dir,
        )
        .await
    }

    /// What volumes are filled from: the pod, its address, the API server, and where the pod's
    /// namespace keeps its claims.
    pub(super) fn volume_context<'a>(&'a self, claims_dir: &'a Path) -> VolumeContext<'a> {
        VolumeContext {
            client: &self.shared.client,
            pod: &self.pod,
            pod_ip: &self.pod_ip,
            host_ip: HOST_IP,
            api_server_ca_pem: self.shared.options.api_server_ca_pem.as_deref(),
            claims_dir,
        }
    }

    /// The kubeconfig for containers run from local commands, and, when any container runs
    /// from an image, the one such containers see.
    async fn write_kubeconfigs(
        &self,
        volumes: &Materialised,
    ) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
        let kubeconfig = self.write_kubeconfig(volumes, false).await?;
        let any_image = self
            .spec
            .containers
            .iter()
            .chain(self.spec.init_containers.iter().flatten())
            .any(|c| {
                let image = c.image.as_deref().unwrap_or_default();
                self.shared.image_roots.lookup(image).is_some()
            });
        let image_kubeconfig = match any_image {
            true => self.write_kubeconfig(volumes, true).await?,
            false => None,
        };
        Ok((kubeconfig, image_kubeconfig))
    }

    fn launch_settings(&self) -> LaunchSettings<'_> {
        LaunchSettings {
            image_map: &self.shared.image_map,
            pod_security: self.spec.security_context.as_ref(),
            pod_dir: &self.pod_dir,
            pod_ip: &self.pod_ip,
            restart_policy: self.restart_policy,
            termination_grace: termination_grace(&self.spec),
            backoff: self.shared.options.restart_backoff,
            max_log_bytes: self.shared.options.max_log_bytes,
        }
    }

    /// One container's launch: run from its image's rootfs when the image is local, else
    /// from the command the image map names.
    async fn container_launch(
        &self,
        objects: &mut PodObjects,
        container: &Container,
        inputs: &PodInputs<'_>,
        restarts: i32,
    ) -> Result<ContainerLaunch> {
        let image = container.image.clone().unwrap_or_default();
        let rootfs = match self.shared.image_roots.lookup(&image) {
            Some(local) => Some(self.shared.image_roots.rootfs(local).await?),
            None => None,
        };
        // Only a container that mounts the token gets the API, as in a real pod.
        let mounts_token = container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT);
        let kubeconfig = match rootfs {
            Some(_) => inputs.image_kubeconfig.as_ref(),
            None => inputs.kubeconfig.as_ref(),
        };
        let kubeconfig = kubeconfig.filter(|_| mounts_token);
        let base = self.base_env(rootfs.as_ref(), inputs.volumes_dir, kubeconfig);
        let addresses = PodAddresses {
            pod_ip: &self.pod_ip,
            host_ip: HOST_IP,
        };
        let env = container_env(objects, &self.pod, container, &addresses, base).await?;
        let settings = &inputs.settings;
        match &rootfs {
            Some(rootfs) => {
                let mut binds = bind_mounts(container, &inputs.volumes.paths)?;
                if kubeconfig.is_some() {
                    binds.push(BindMount {
                        source: self.pod_dir.join("devcluster"),
                        target: IMAGE_KUBECONFIG_DIR.into(),
                        read_only: true,
                    });
                }
                let process = image_process(
                    container,
                    env,
                    rootfs,
                    binds,
                    settings.pod_security,
                    &self.pod_dir,
                )?;
                finish_launch(
                    container,
                    process,
                    &MountTable::default(),
                    settings,
                    restarts,
                )
            }
            None => {
                let mounts = self.mount_table(container, inputs.volumes)?;
                build_launch(container, env, &mounts, settings, restarts)
            }
        }
    }

    /// The env the kubelet sets before the container's own: hostname, pod IP, the pod and
    /// volume dirs for local commands, the kubeconfig, and an image's own env.
    fn base_env(
        &self,
        rootfs: Option<&Arc<ImageRootfs>>,
        volumes_dir: &Path,
        kubeconfig: Option<&PathBuf>,
    ) -> EnvList {
        let mut base = EnvList::default();
        base.set("HOSTNAME", self.pod.name_any());
        base.set("DEVCLUSTER_POD_IP", self.pod_ip.clone());
        if rootfs.is_none() {
            base.set(
                "DEVCLUSTER_POD_DIR",
                self.pod_dir.to_string_lossy().into_owned(),
            );
            base.set(
                "DEVCLUSTER_MOUNT_ROOT",
                volumes_dir.to_string_lossy().into_owned(),
            );
        }
        if let Some(kubeconfig) = kubeconfig {
            base.set("KUBECONFIG", kubeconfig.to_string_lossy().into_owned());
        }
        if let Some(rootfs) = rootfs {
            base = image_env(rootfs, base);
        }
        base
    }

    /// Restart counts a previous kubelet run left in the status, so they keep rising.
    fn previous_restart_counts(&self) -> Vec<(String, i32)> {
        let status = self.pod.status.as_ref();
        status
            .and_then(|s| s.container_statuses.clone())
            .into_iter()
            .flatten()
            .chain(
                status
                    .and_then(|s| s.init_container_statuses.clone())
                    .into_iter()
                    .flatten(),
            )
            .map(|s| (s.name, s.restart_count))
            .collect()
    }

    fn mount_table(&self, container: &Container, volumes: &Materialised) -> Result<MountTable> {
        let mut entries = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let base = volumes
                .paths
                .get(&mount.name)
                .ok_or_else(|| Error::Volume {
                    volume: mount.name.clone(),
                    message: format!(
                        "container {} mounts a volume the pod does not define",
                        container.name
                    ),
                })?;
            let path = match mount.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => base.join(sub),
                _ => base.clone(),
            };
            entries.push((mount.mount_path.clone(), path));
        }
        Ok(MountTable::new(entries))
    }

    /// A kubeconfig for the pod's own API calls (kube clients read `KUBECONFIG` before trying
    /// in-cluster config): the API server URL, its CA, and the service-account token file. For
    /// containers run from images (`in_image`) it names the token by its in-container path and
    /// is returned as they see it.
    async fn write_kubeconfig(
        &self,
        volumes: &Materialised,
        in_image: bool,
    ) -> Result<Option<PathBuf>> {
        let Some(server) = self.shared.options.api_server_url.as_deref() else {
            return Ok(None);
        };
        let token_volume = self
            .spec
            .containers
            .iter()
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .find(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT)
            .and_then(|m| volumes.paths.get(&m.name));
        let Some(token_file) = token_volume
            .map(|dir| dir.join("token"))
            .filter(|f| f.exists())
        else {
            return Ok(None);
        };
        let (token_file, path, visible) = if in_image {
            let dir = self.pod_dir.join("devcluster");
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| Error::io(&dir, e))?;
            let inside = PathBuf::from(IMAGE_KUBECONFIG_DIR).join("kubeconfig");
            let token = PathBuf::from(SERVICE_ACCOUNT_MOUNT).join("token");
            (token, dir.join("kubeconfig"), inside)
        } else {
            let path = self.pod_dir.join("kubeconfig");
            (token_file, path.clone(), path)
        };
        let mut cluster = serde_json::json!({ "server": server });
        match &self.shared.options.api_server_ca_pem {
            Some(pem) => {
                cluster["certificate-authority-data"] = base64::engine::general_purpose::STANDARD
                    .encode(pem.as_bytes())
                    .into()
            }
            None if server.starts_with("https") => {
                cluster["insecure-skip-tls-verify"] = true.into()
            }
            None => {}
        }
        let namespace = self.pod.namespace().unwrap_or_default();
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "devcluster", "cluster": cluster }],
            "users": [{ "name": "pod", "user": { "tokenFile": token_file } }],
            "contexts": [{ "name": "pod", "context": { "cluster": "devcluster", "user": "pod", "namespace": namespace } }],
            "current-context": "pod",
        });
        tokio::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig)?)
            .await
            .map_err(|e| Error::io(&path, e))?;
        Ok(Some(visible))
    }
}

/// The short link through which a pod's volumes are reached.
pub(super) fn volumes_link(pod_dir: &std::path::Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    pod_dir.hash(&mut hasher);
    std::env::temp_dir().join(format!("cdv-{:016x}", hasher.finish()))
}

/// A pod's volumes live in `<pod dir>/volumes` but are handed to containers through a short link in
/// the temp dir: a Unix socket in a volume (the worker's trace socket) must stay under the 108-byte
/// `sun_path` limit wherever the devcluster's state dir is.
fn short_volumes_dir(pod_dir: &std::path::Path) -> std::io::Result<PathBuf> {
    let real = pod_dir.join("volumes");
    std::fs::create_dir_all(&real)?;
    let link = volumes_link(pod_dir);
    match std::fs::read_link(&link) {
        Ok(target) if target == real => return Ok(link),
        Ok(_) => std::fs::remove_file(&link)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&real, &link)?;
    Ok(link)
}
