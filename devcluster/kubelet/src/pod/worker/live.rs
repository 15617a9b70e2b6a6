//! A prepared pod's run: retrying preparation until it succeeds, init containers one after
//! another, then the main containers with status pushes and token refreshes until a stop
//! request arrives.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::super::status::Stage;
use super::super::volumes::{write_token, TokenFile};
use super::{wait_for_stop, PodWorker, Prepared, StopRequest};
use crate::error::Error;
use crate::events::EventRecorder;
use crate::runtime::{ContainerEvent, ContainerHandle, ContainerLaunch, RunState};

/// How often a pod that cannot start yet (missing Secret, failing TokenRequest) tries again.
const PREPARE_RETRY: Duration = Duration::from_secs(2);
/// Container changes closer together than this go out in one status update.
const STATUS_COALESCE: Duration = Duration::from_millis(50);
/// Bound of each pod's container-event channel; events beyond it are dropped.
const EVENT_CAPACITY: usize = 64;

type StopReceiver = watch::Receiver<Option<StopRequest>>;

/// When projected tokens are next due: at 80% of the shortest lifetime, like the real kubelet.
fn refresh_due(lifetime: Duration) -> Instant {
    Instant::now() + lifetime.mul_f64(0.8)
}

impl PodWorker {
    /// Runs the pod until a stop request arrives, and returns it.
    pub(super) async fn live(&mut self, stop: &mut StopReceiver) -> StopRequest {
        self.push_status().await;
        if let Some(image) = self.unmapped_image() {
            return self.refuse_unmapped_image(&image, stop).await;
        }
        let prepared = match self.prepare_until_ready(stop).await {
            Ok(prepared) => prepared,
            Err(request) => return request,
        };
        for warning in &prepared.volumes.warnings {
            self.event(true, "FailedMount", warning).await;
        }
        let token_files = prepared.volumes.token_files.clone();
        let token_refresh = prepared.volumes.shortest_token_lifetime.map(refresh_due);

        let changed = Arc::new(Notify::new());
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let forwarder = tokio::spawn(forward_events(
            self.shared.events.clone(),
            self.reference.clone(),
            events_rx,
        ));

        self.stage = Stage::Initializing;
        self.push_status().await;
        if let Some(request) = self
            .run_init_containers(prepared.init, &changed, &events_tx, stop)
            .await
        {
            forwarder.abort();
            return request;
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
        let request = self
            .run_main_containers(&changed, &token_files, token_refresh, stop)
            .await;
        // Events about the shutdown itself (Killing) still go out; the forwarder ends with the handles.
        drop(forwarder);
        request
    }

    /// A pod naming an image the node cannot run waits, with a warning, for its stop request.
    async fn refuse_unmapped_image(&mut self, image: &str, stop: &mut StopReceiver) -> StopRequest {
        let message = format!(
            "no local command is mapped for image \"{image}\": add an entry for it to the devcluster's image map"
        );
        self.event(true, "ImageNotMapped", &message).await;
        self.stage = Stage::Preparing {
            reason: "ImageNotMapped".into(),
            message: Some(message),
        };
        self.push_status().await;
        wait_for_stop(stop, &self.pod).await
    }

    /// Prepares the pod, retrying every `PREPARE_RETRY` with the problem in the status (and an
    /// event when the problem changes); a stop request ends the retries.
    async fn prepare_until_ready(
        &mut self,
        stop: &mut StopReceiver,
    ) -> std::result::Result<Prepared, StopRequest> {
        let mut last_problem = String::new();
        loop {
            let error = match self.prepare().await {
                Ok(prepared) => return Ok(prepared),
                Err(error) => error,
            };
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
                request = wait_for_stop(stop, &self.pod) => return Err(request),
            }
        }
    }

    /// Runs the init containers one at a time, each to success; returns the stop request when
    /// one fails for good (after waiting for the stop) or a stop comes first.
    async fn run_init_containers(
        &mut self,
        launches: Vec<ContainerLaunch>,
        changed: &Arc<Notify>,
        events_tx: &mpsc::Sender<ContainerEvent>,
        stop: &mut StopReceiver,
    ) -> Option<StopRequest> {
        for launch in launches {
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
                        return Some(wait_for_stop(stop, &self.pod).await);
                    }
                    _ => {}
                }
                self.push_status().await;
                tokio::select! {
                    _ = changed.notified() => tokio::time::sleep(STATUS_COALESCE).await,
                    request = wait_for_stop(stop, &self.pod) => return Some(request),
                }
            }
        }
        None
    }

    /// Keeps the status current and the projected tokens fresh while the main containers run,
    /// until a stop request arrives.
    async fn run_main_containers(
        &mut self,
        changed: &Notify,
        token_files: &[TokenFile],
        mut token_refresh: Option<Instant>,
        stop: &mut StopReceiver,
    ) -> StopRequest {
        loop {
            self.push_status().await;
            let refresh_at = token_refresh;
            tokio::select! {
                _ = changed.notified() => tokio::time::sleep(STATUS_COALESCE).await,
                _ = async { tokio::time::sleep_until(refresh_at.unwrap_or_else(Instant::now)).await }, if refresh_at.is_some() => {
                    token_refresh = self.refresh_tokens(token_files).await
                        .map(refresh_due)
                        .or(Some(Instant::now() + PREPARE_RETRY));
                }
                request = wait_for_stop(stop, &self.pod) => break request,
            }
        }
    }

    async fn refresh_tokens(&self, files: &[TokenFile]) -> Option<Duration> {
        // Token refresh writes no claim.
        let context = self.volume_context(std::path::Path::new(""));
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
