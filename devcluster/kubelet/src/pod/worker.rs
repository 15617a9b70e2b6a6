//! One pod's life on this node: address, images, volumes and env, init containers in order, then
//! the main containers, status kept current in the API; on a stop request every container gets
//! SIGTERM, the grace period, SIGKILL, and the pod object is removed for real.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, PodSpec, VolumeMount};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::launch::{restart_policy, termination_grace};
use super::status::{pod_status, ConditionClock, ContainerView, PodView, Stage};
use super::volumes::{
    implicit_token_volume, Materialised, IMPLICIT_TOKEN_VOLUME, SERVICE_ACCOUNT_MOUNT,
};
use crate::events::reference_to;
use crate::runtime::{
    ContainerHandle, ContainerLaunch, ContainerSnapshot, RestartPolicy, RunState,
};
use crate::Shared;

mod live;
mod prepare;

use prepare::volumes_link;

pub const HOST_IP: &str = "127.0.0.1";

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
