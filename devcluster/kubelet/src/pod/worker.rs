//! One pod's life on this node: address, images, volumes and env, init containers in order, then
//! the main containers, status kept current in the API; on a stop request every container gets
//! SIGTERM, the grace period, SIGKILL, and the pod object is removed for real.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, PodSpec, VolumeMount};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::env::{container_env, EnvList, PodAddresses};
use super::image_launch::{bind_mounts, image_env, image_process};
use super::launch::{
    build_launch, finish_launch, restart_policy, termination_grace, LaunchSettings,
};
use super::mounts::MountTable;
use super::objects::PodObjects;
use super::status::{pod_status, ConditionClock, ContainerView, PodView, Stage};
use super::volumes::{
    implicit_token_volume, materialise, write_token, Materialised, TokenFile, VolumeContext,
    IMPLICIT_TOKEN_VOLUME, SERVICE_ACCOUNT_MOUNT,
};
use crate::error::{Error, Result};
use crate::events::{reference_to, EventRecorder};
use crate::runtime::{
    BindMount, ContainerEvent, ContainerHandle, ContainerLaunch, ContainerSnapshot, RestartPolicy,
    RunState,
};
use crate::Shared;

pub const HOST_IP: &str = "127.0.0.1";
/// How often a pod that cannot start yet (missing Secret, failing TokenRequest) tries again.
const PREPARE_RETRY: Duration = Duration::from_secs(2);
/// Container changes closer together than this go out in one status update.
const STATUS_COALESCE: Duration = Duration::from_millis(50);
/// Where a container run from its image finds the pod's kubeconfig (a read-only bind of
/// `<pod dir>/devcluster`); its token file is the in-container service-account path.
const IMAGE_KUBECONFIG_DIR: &str = "/var/run/devcluster";
/// Bound of each pod's container-event channel; events beyond it are dropped.
const EVENT_CAPACITY: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct StopRequest {
    pub grace: Duration,
    /// Remove the Pod object once its containers are stopped (a deletion), or leave it (kubelet
    /// shutdown).
    pub delete_object: bool,
}

pub struct PodWorkerHandle {
    stop: watch::Sender<Option<StopRequest>>,
    task: JoinHandle<()>,
}

impl PodWorkerHandle {
    pub fn start(shared: Arc<Shared>, pod: Pod, finished: mpsc::Sender<String>) -> Self {
        let (stop, stop_rx) = watch::channel(None);
        let uid = pod.uid().unwrap_or_default();
        let task = tokio::spawn(async move {
            run_pod(shared, pod, stop_rx).await;
            let _ = finished.send(uid).await;
        });
        PodWorkerHandle { stop, task }
    }

    /// Asks the worker to stop; a second request only shortens the grace period.
    pub fn request_stop(&self, request: StopRequest) {
        self.stop.send_modify(|current| {
            *current = Some(match current {
                Some(existing) => StopRequest {
                    grace: existing.grace.min(request.grace),
                    delete_object: existing.delete_object || request.delete_object,
                },
                None => request,
            })
        });
    }

    pub async fn join(self) {
        let _ = self.task.await;
    }
}

struct Containers {
    specs: Vec<Container>,
    handles: Vec<ContainerHandle>,
}

impl Containers {
    fn new(specs: Vec<Container>) -> Self {
        Containers {
            specs,
            handles: Vec::new(),
        }
    }

    fn views(&self, waiting_reason: &str) -> Vec<ContainerView<'_>> {
        self.specs
            .iter()
            .enumerate()
            .map(|(index, spec)| ContainerView {
                name: &spec.name,
                image: spec.image.as_deref().unwrap_or_default(),
                snapshot: match self.handles.get(index) {
                    Some(handle) => handle.snapshot(),
                    None => ContainerSnapshot {
                        state: RunState::Waiting {
                            reason: waiting_reason.into(),
                            message: None,
                        },
                        last_terminated: None,
                        ready: false,
                        started: false,
                        restart_count: 0,
                        pid: None,
                    },
                },
            })
            .collect()
    }

    async fn stop_all(&mut self, grace: Duration) {
        let stops = self.handles.drain(..).map(|handle| handle.stop(grace));
        futures::future::join_all(stops).await;
    }
}

struct PodWorker {
    shared: Arc<Shared>,
    pod: Pod,
    spec: PodSpec,
    reference: ObjectReference,
    pod_ip: String,
    pod_dir: PathBuf,
    start_time: Timestamp,
    restart_policy: RestartPolicy,
    stage: Stage,
    init: Containers,
    main: Containers,
    clock: ConditionClock,
    last_pushed: Option<serde_json::Value>,
}

async fn run_pod(shared: Arc<Shared>, pod: Pod, mut stop: watch::Receiver<Option<StopRequest>>) {
    let ip = match shared.ips.allocate() {
        Ok(ip) => ip,
        Err(error) => {
            tracing::error!(%error, pod = %crate::events::name_of(&pod), "pod not started");
            wait_for_stop(&mut stop, &pod).await;
            return;
        }
    };
    let mut worker = PodWorker::new(shared.clone(), pod, ip);
    let request = worker.live(&mut stop).await;
    worker.main.stop_all(request.grace).await;
    worker.init.stop_all(request.grace).await;
    if request.delete_object {
        worker.remove_object().await;
    }
    shared.ips.release(ip);
}

async fn wait_for_stop(stop: &mut watch::Receiver<Option<StopRequest>>, pod: &Pod) -> StopRequest {
    let fallback = StopRequest {
        grace: pod.spec.as_ref().map(termination_grace).unwrap_or_default(),
        delete_object: false,
    };
    match stop.wait_for(Option::is_some).await {
        Ok(request) => request.unwrap_or(fallback),
        Err(_) => fallback,
    }
}

/// The spec as the kubelet runs it: with the service-account token volume a real API server's
/// admission would have added.
fn effective_spec(pod: &Pod) -> PodSpec {
    let mut spec = pod.spec.clone().unwrap_or_default();
    let mounted_already = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT);
    if spec.automount_service_account_token != Some(false) && !mounted_already {
        spec.volumes
            .get_or_insert_with(Vec::new)
            .push(implicit_token_volume());
        let containers = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for container in containers {
            container
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: IMPLICIT_TOKEN_VOLUME.into(),
                    mount_path: SERVICE_ACCOUNT_MOUNT.into(),
                    read_only: Some(true),
                    ..Default::default()
                });
        }
    }
    spec
}

struct Prepared {
    volumes: Materialised,
    init: Vec<ContainerLaunch>,
    main: Vec<ContainerLaunch>,
}

impl PodWorker {
    fn new(shared: Arc<Shared>, pod: Pod, ip: Ipv4Addr) -> Self {
        let spec = effective_spec(&pod);
        let pod_dir = shared.config.state_dir.join("pods").join(format!(
            "{}_{}_{}",
            pod.namespace().unwrap_or_default(),
            pod.name_any(),
            pod.uid().unwrap_or_default()
        ));
        let init = Containers::new(spec.init_containers.clone().unwrap_or_default());
        let main = Containers::new(spec.containers.clone());
        PodWorker {
            reference: reference_to(&pod),
            restart_policy: restart_policy(&spec),
            shared,
            spec,
            pod,
            pod_ip: ip.to_string(),
            pod_dir,
            start_time: Timestamp::now(),
            stage: Stage::Preparing {
                reason: "ContainerCreating".into(),
                message: None,
            },
            init,
            main,
            clock: ConditionClock::default(),
            last_pushed: None,
        }
    }

    fn pod_api(&self) -> Api<Pod> {
        Api::namespaced(
            self.shared.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        )
    }

    async fn event(&self, warning: bool, reason: &str, message: &str) {
        self.shared
            .events
            .record(&self.reference, warning, reason, message)
            .await;
    }

    async fn push_status(&mut self) {
        let init_waiting = if matches!(self.stage, Stage::Preparing { .. }) {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let view = PodView {
            stage: match &self.stage {
                Stage::Preparing { reason, message } => Stage::Preparing {
                    reason: reason.clone(),
                    message: message.clone(),
                },
                Stage::Initializing => Stage::Initializing,
                Stage::Running => Stage::Running,
                Stage::InitFailed => Stage::InitFailed,
            },
            init: self.init.views(init_waiting),
            main: self.main.views(init_waiting),
            restart_policy: self.restart_policy,
            pod_ip: &self.pod_ip,
            host_ip: HOST_IP,
            start_time: self.start_time,
        };
        let status = pod_status(&view, &mut self.clock);
        let Ok(status) = serde_json::to_value(&status) else {
            return;
        };
        if self.last_pushed.as_ref() == Some(&status) {
            return;
        }
        let patch = serde_json::json!({ "status": status });
        match self
            .pod_api()
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => self.last_pushed = Some(status),
            Err(error) => {
                tracing::warn!(%error, pod = %crate::events::name_of(&self.pod), "pod status update failed")
            }
        }
    }

    /// Runs the pod until a stop request arrives, and returns it.
    async fn live(&mut self, stop: &mut watch::Receiver<Option<StopRequest>>) -> StopRequest {
        self.push_status().await;
        if let Some(image) = self.unmapped_image() {
            let message = format!(
                "no local command is mapped for image \"{image}\": add an entry for it to the devcluster's image map"
            );
            self.event(true, "ImageNotMapped", &message).await;
            self.stage = Stage::Preparing {
                reason: "ImageNotMapped".into(),
                message: Some(message),
            };
            self.push_status().await;
            return wait_for_stop(stop, &self.pod).await;
        }

        let mut last_problem = String::new();
        let prepared = loop {
            match self.prepare().await {
                Ok(prepared) => break prepared,
                Err(error) => {
                    let (reason, event_reason) = match error {
                        Error::Env { .. } | Error::ImageUser { .. } | Error::RunAsRoot { .. } => {
                            ("CreateContainerConfigError", "Failed")
                        }
                        Error::ImageMissing { .. } => ("ErrImageNeverPull", "Failed"),
                        _ => ("ContainerCreating", "FailedMount"),
                    };
                    let message = error.to_string();
                    if message != last_problem {
                        self.event(true, event_reason, &message).await;
                        last_problem = message.clone();
                    }
                    self.stage = Stage::Preparing {
                        reason: reason.into(),
                        message: Some(message),
                    };
                    self.push_status().await;
                    tokio::select! {
                        _ = tokio::time::sleep(PREPARE_RETRY) => continue,
                        request = wait_for_stop(stop, &self.pod) => return request,
                    }
                }
            }
        };
        for warning in &prepared.volumes.warnings {
            self.event(true, "FailedMount", warning).await;
        }
        let token_files = prepared.volumes.token_files.clone();
        let mut token_refresh = prepared
            .volumes
            .shortest_token_lifetime
            .map(|lifetime| tokio::time::Instant::now() + lifetime.mul_f64(0.8));

        let changed = Arc::new(Notify::new());
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let forwarder = tokio::spawn(forward_events(
            self.shared.events.clone(),
            self.reference.clone(),
            events_rx,
        ));

        self.stage = Stage::Initializing;
        self.push_status().await;
        for launch in prepared.init {
            let policy = launch.restart_policy;
            self.init.handles.push(ContainerHandle::start(
                launch,
                self.shared.reaper.clone(),
                changed.clone(),
                Some(events_tx.clone()),
            ));
            loop {
                let snapshot = self.init.handles.last().map(|h| h.snapshot());
                match snapshot {
                    Some(s) if s.is_finished(policy) => {
                        if matches!(&s.state, RunState::Terminated(t) if t.exit_code == 0) {
                            break;
                        }
                        self.stage = Stage::InitFailed;
                        self.push_status().await;
                        let request = wait_for_stop(stop, &self.pod).await;
                        forwarder.abort();
                        return request;
                    }
                    _ => {}
                }
                self.push_status().await;
                tokio::select! {
                    _ = changed.notified() => tokio::time::sleep(STATUS_COALESCE).await,
                    request = wait_for_stop(stop, &self.pod) => {
                        forwarder.abort();
                        return request;
                    }
                }
            }
        }

        self.stage = Stage::Running;
        for launch in prepared.main {
            self.main.handles.push(ContainerHandle::start(
                launch,
                self.shared.reaper.clone(),
                changed.clone(),
                Some(events_tx.clone()),
            ));
        }
        drop(events_tx);
        let request = loop {
            self.push_status().await;
            let refresh_at = token_refresh;
            tokio::select! {
                _ = changed.notified() => tokio::time::sleep(STATUS_COALESCE).await,
                _ = async { tokio::time::sleep_until(refresh_at.unwrap_or_else(tokio::time::Instant::now)).await }, if refresh_at.is_some() => {
                    token_refresh = self.refresh_tokens(&token_files).await
                        .map(|lifetime| tokio::time::Instant::now() + lifetime.mul_f64(0.8))
                        .or(Some(tokio::time::Instant::now() + PREPARE_RETRY));
                }
                request = wait_for_stop(stop, &self.pod) => break request,
            }
        };
        // Events about the shutdown itself (Killing) still go out; the forwarder ends with the handles.
        drop(forwarder);
        request
    }

    fn unmapped_image(&self) -> Option<String> {
        self.spec
            .containers
            .iter()
            .chain(self.spec.init_containers.iter().flatten())
            .map(|c| c.image.clone().unwrap_or_default())
            .find(|image| {
                self.shared.image_roots.lookup(image).is_none()
                    && self.shared.image_map.lookup(image).is_none()
            })
    }

    async fn prepare(&self) -> Result<Prepared> {
        let mut objects = PodObjects::new(
            &self.shared.client,
            &self.pod.namespace().unwrap_or_default(),
        );
        let claims_dir = self
            .shared
            .config
            .state_dir
            .join("claims")
            .join(self.pod.namespace().unwrap_or_default());
        let context = VolumeContext {
            client: &self.shared.client,
            pod: &self.pod,
            pod_ip: &self.pod_ip,
            host_ip: HOST_IP,
            api_server_ca_pem: self.shared.options.api_server_ca_pem.as_deref(),
            claims_dir: &claims_dir,
        };
        let volumes_dir = short_volumes_dir(&self.pod_dir)
            .map_err(|e| crate::error::Error::io(self.pod_dir.join("volumes"), e))?;
        let volumes = materialise(
            &context,
            &mut objects,
            self.spec.volumes.as_deref().unwrap_or_default(),
            &volumes_dir,
        )
        .await?;
        let kubeconfig = self.write_kubeconfig(&volumes, false).await?;
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
            true => self.write_kubeconfig(&volumes, true).await?,
            false => None,
        };

        let settings = LaunchSettings {
            image_map: &self.shared.image_map,
            pod_security: self.spec.security_context.as_ref(),
            pod_dir: &self.pod_dir,
            pod_ip: &self.pod_ip,
            restart_policy: self.restart_policy,
            termination_grace: termination_grace(&self.spec),
            backoff: self.shared.options.restart_backoff,
            max_log_bytes: self.shared.options.max_log_bytes,
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
            let image = container.image.clone().unwrap_or_default();
            let rootfs = match self.shared.image_roots.lookup(&image) {
                Some(local) => Some(self.shared.image_roots.rootfs(local).await?),
                None => None,
            };
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
            // Only a container that mounts the token gets the API, as in a real pod.
            let mounts_token = container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT);
            let kubeconfig = match rootfs {
                Some(_) => image_kubeconfig.as_ref(),
                None => kubeconfig.as_ref(),
            };
            let kubeconfig = kubeconfig.filter(|_| mounts_token);
            if let Some(kubeconfig) = kubeconfig {
                base.set("KUBECONFIG", kubeconfig.to_string_lossy().into_owned());
            }
            if let Some(rootfs) = &rootfs {
                base = image_env(rootfs, base);
            }
            let addresses = PodAddresses {
                pod_ip: &self.pod_ip,
                host_ip: HOST_IP,
            };
            let env = container_env(&mut objects, &self.pod, container, &addresses, base).await?;
            let restarts = previous_restart_counts
                .iter()
                .find(|(name, _)| *name == container.name)
                .map(|(_, count)| *count)
                .unwrap_or(0);
            let mut launch = match &rootfs {
                Some(rootfs) => {
                    let mut binds = bind_mounts(container, &volumes.paths)?;
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
                        &settings,
                        restarts,
                    )?
                }
                None => {
                    let mounts = self.mount_table(container, &volumes)?;
                    build_launch(container, env, &mounts, &settings, restarts)?
                }
            };
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

    async fn refresh_tokens(&self, files: &[TokenFile]) -> Option<Duration> {
        let context = VolumeContext {
            client: &self.shared.client,
            pod: &self.pod,
            pod_ip: &self.pod_ip,
            host_ip: HOST_IP,
            api_server_ca_pem: self.shared.options.api_server_ca_pem.as_deref(),
            // Token refresh writes no claim.
            claims_dir: std::path::Path::new(""),
        };
        let mut shortest: Option<Duration> = None;
        for file in files {
            match write_token(&context, &file.path, &file.projection, file.default_mode).await {
                Ok(lifetime) => shortest = Some(shortest.map_or(lifetime, |s| s.min(lifetime))),
                Err(error) => {
                    tracing::warn!(%error, pod = %crate::events::name_of(&self.pod), "token refresh failed");
                    return None;
                }
            }
        }
        shortest
    }

    /// A real kubelet deletes the pod with grace 0 once its containers are gone.
    async fn remove_object(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pod_api().delete(&self.pod.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => {
                tracing::warn!(%error, pod = %crate::events::name_of(&self.pod), "removing deleted pod failed")
            }
        }
        let _ = tokio::fs::remove_file(volumes_link(&self.pod_dir)).await;
        if let Err(error) = tokio::fs::remove_dir_all(&self.pod_dir).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, dir = %self.pod_dir.display(), "pod directory not removed");
            }
        }
    }
}

async fn forward_events(
    recorder: EventRecorder,
    reference: ObjectReference,
    mut events: mpsc::Receiver<ContainerEvent>,
) {
    while let Some(event) = events.recv().await {
        let mut regarding = reference.clone();
        regarding.field_path = Some(format!("spec.containers{{{}}}", event.container));
        recorder
            .record(&regarding, event.warning, event.reason, &event.message)
            .await;
    }
}

/// The short link through which a pod's volumes are reached.
fn volumes_link(pod_dir: &std::path::Path) -> PathBuf {
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
