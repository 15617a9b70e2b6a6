//! ReplicaSet → Pods: keeps `spec.replicas` active pods (owned, not deleting, not finished), creating
//! them from the template and deleting the surplus (unscheduled, then not ready, then newest first),
//! and reports replica counts. Orphaned matching pods are not adopted.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::selector::{controller_reference, controller_uid, random_suffix, selector_query};
use crate::error::{Error, Result};
use crate::events::{reference_to, EventRecorder};

const RESYNC: Duration = Duration::from_secs(30);

pub struct Context {
    pub client: kube::Client,
    pub events: EventRecorder,
}

pub async fn run(context: Arc<Context>, shutdown: CancellationToken) {
    let replica_sets: Api<ReplicaSet> = Api::all(context.client.clone());
    let pods: Api<Pod> = Api::all(context.client.clone());
    Controller::new(replica_sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<ReplicaSet>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "replicaset reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(Timestamp::now)
        })
}

fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        )
}

/// Surplus pods go in this order: unscheduled, not ready, newest.
fn deletion_rank(pod: &Pod) -> (bool, bool, std::cmp::Reverse<Option<Timestamp>>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some_and(|n| !n.is_empty());
    (
        scheduled,
        pod_ready_since(pod).is_some(),
        std::cmp::Reverse(pod.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

async fn reconcile(replica_set: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action> {
    if replica_set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = replica_set.namespace().unwrap_or_default();
    let uid = replica_set.uid().unwrap_or_default();
    let spec = replica_set
        .spec
        .as_ref()
        .ok_or_else(|| Error::MissingField(crate::events::name_of(replica_set.as_ref()), "spec"))?;
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let listed = pods_api
        .list(&ListParams::default().labels(&selector_query(&spec.selector)))
        .await?;
    let mut active: Vec<Pod> = listed
        .items
        .into_iter()
        .filter(|pod| controller_uid(pod) == Some(uid.as_str()) && is_active(pod))
        .collect();
    let wanted = spec.replicas.unwrap_or(1).max(0) as usize;
    let reference = reference_to(replica_set.as_ref());

    if active.len() < wanted {
        create_pods(
            &replica_set,
            spec,
            wanted - active.len(),
            &pods_api,
            &context,
            &reference,
        )
        .await?;
    } else if active.len() > wanted {
        delete_surplus(&mut active, wanted, &pods_api, &context, &reference).await?;
    }
    let requeue = update_status(&replica_set, spec, &active, &namespace, &context).await?;
    Ok(Action::requeue(requeue))
}

/// Creates `count` pods from the template, owned by the ReplicaSet.
async fn create_pods(
    replica_set: &ReplicaSet,
    spec: &ReplicaSetSpec,
    count: usize,
    pods_api: &Api<Pod>,
    context: &Context,
    reference: &ObjectReference,
) -> Result<()> {
    let namespace = replica_set.namespace().unwrap_or_default();
    let template = spec.template.clone().unwrap_or_default();
    for _ in 0..count {
        let template_meta = template.metadata.clone().unwrap_or_default();
        let name = format!("{}-{}", replica_set.name_any(), random_suffix(5));
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: template_meta.labels,
                annotations: template_meta.annotations,
                owner_references: Some(vec![controller_reference(replica_set)]),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        pods_api.create(&PostParams::default(), &pod).await?;
        context
            .events
            .record(
                reference,
                false,
                "SuccessfulCreate",
                &format!("Created pod: {name}"),
            )
            .await;
    }
    Ok(())
}

/// Deletes the active pods beyond `wanted`, in `deletion_rank` order.
async fn delete_surplus(
    active: &mut [Pod],
    wanted: usize,
    pods_api: &Api<Pod>,
    context: &Context,
    reference: &ObjectReference,
) -> Result<()> {
    active.sort_by_key(deletion_rank);
    for pod in active.iter().take(active.len() - wanted) {
        match pods_api
            .delete(&pod.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(error) => return Err(error.into()),
        }
        context
            .events
            .record(
                reference,
                false,
                "SuccessfulDelete",
                &format!("Deleted pod: {}", pod.name_any()),
            )
            .await;
    }
    Ok(())
}

/// Writes the replica counts when they changed; returns when to look again (sooner while
/// ready pods wait out minReadySeconds).
async fn update_status(
    replica_set: &ReplicaSet,
    spec: &ReplicaSetSpec,
    active: &[Pod],
    namespace: &str,
    context: &Context,
) -> Result<Duration> {
    let min_ready = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64);
    let now = Timestamp::now();
    let ready_since: Vec<Timestamp> = active.iter().filter_map(pod_ready_since).collect();
    let available = ready_since
        .iter()
        .filter(|since| now.duration_since(**since).unsigned_abs() >= min_ready)
        .count();
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(active.len() as i32),
        ready_replicas: Some(ready_since.len() as i32),
        available_replicas: Some(available as i32),
        observed_generation: replica_set.metadata.generation,
        ..Default::default()
    };
    if replica_set.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({ "status": status });
        Api::<ReplicaSet>::namespaced(context.client.clone(), namespace)
            .patch_status(
                &replica_set.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    let waiting_for_availability = available < ready_since.len();
    Ok(if waiting_for_availability {
        min_ready.max(Duration::from_secs(1))
    } else {
        RESYNC
    })
}
