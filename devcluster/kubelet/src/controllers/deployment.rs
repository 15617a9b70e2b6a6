//! Deployment → ReplicaSets. The ReplicaSet for the current template is named
//! `<deployment>-<pod-template-hash>` and carries the `pod-template-hash` label on itself, its
//! selector and its pods.
//!
//! Strategies, simplified: `Recreate` scales old ReplicaSets to zero, waits until their pods are
//! gone, then scales the new one up. `RollingUpdate` brings the new ReplicaSet up to the full
//! replica count at once (a 100 % surge, whatever `maxSurge` says), and scales the old ones to zero
//! once every new replica is available, so the service never dips below its available count.
//! `maxUnavailable` only decides the Available condition. `paused` stops scaling; status still
//! updates. Old ReplicaSets beyond `revisionHistoryLimit` are deleted once empty.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::replicaset::Context;
use super::selector::{controller_reference, controller_uid, with_label};
use crate::error::{Error, Result};
use crate::events::reference_to;

pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
const RESYNC: Duration = Duration::from_secs(30);

pub async fn run(context: Arc<Context>, shutdown: CancellationToken) {
    let deployments: Api<Deployment> = Api::all(context.client.clone());
    let replica_sets: Api<ReplicaSet> = Api::all(context.client.clone());
    Controller::new(deployments, watcher::Config::default())
        .owns(replica_sets, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<Deployment>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "deployment reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// A short stable hash of the pod template.
pub fn template_hash(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..5])
}

fn revision(replica_set: &ReplicaSet) -> u64 {
    replica_set
        .annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(replica_set: &ReplicaSet) -> i32 {
    replica_set
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(0)
}

fn status_field(
    replica_set: &ReplicaSet,
    field: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>,
) -> i32 {
    replica_set.status.as_ref().and_then(field).unwrap_or(0)
}

fn max_unavailable(deployment: &Deployment, desired: i32) -> i32 {
    let strategy = deployment.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return desired;
    }
    match strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
    {
        Some(IntOrString::Int(n)) => n,
        Some(IntOrString::String(percent)) => {
            let percent: i32 = percent.trim_end_matches('%').parse().unwrap_or(25);
            desired * percent / 100
        }
        None => desired * 25 / 100,
    }
}

/// One reconcile's view of a Deployment's rollout: its current template hash and targets.
struct Rollout<'a> {
    api: Api<ReplicaSet>,
    deployment: &'a Deployment,
    context: &'a Context,
    hash: String,
    desired: i32,
    /// What the current ReplicaSet is scaled to: 0 while a Recreate waits for old pods to go.
    new_target: i32,
    recreate: bool,
}

impl Rollout<'_> {
    fn is_current(&self, rs: &ReplicaSet) -> bool {
        rs.labels().get(TEMPLATE_HASH_LABEL) == Some(&self.hash)
    }

    /// Creates the ReplicaSet for the current template, as the next revision.
    async fn create_current(&self, owned: &[ReplicaSet]) -> Result<ReplicaSet> {
        let (api, deployment, hash, new_target) =
            (&self.api, self.deployment, &self.hash, self.new_target);
        let next_revision = owned.iter().map(revision).max().unwrap_or(0) + 1;
        let created = create_replica_set(api, deployment, hash, new_target, next_revision).await?;
        let message = format!(
            "Scaled up replica set {} to {new_target}",
            created.name_any()
        );
        self.record_scaling(&message).await;
        Ok(created)
    }

    /// The `ScalingReplicaSet` event a real controller records on the Deployment.
    async fn record_scaling(&self, message: &str) {
        let deployment = reference_to(self.deployment);
        (self.context.events)
            .record(&deployment, false, "ScalingReplicaSet", message)
            .await;
    }

    /// Scales the current ReplicaSet to its target and the old ones to zero (at once for
    /// Recreate, once the new one is fully available otherwise), then prunes the history.
    async fn scale_owned(&self, owned: &[ReplicaSet], history_limit: i32) -> Result<()> {
        let (api, desired, new_target, recreate) =
            (&self.api, self.desired, self.new_target, self.recreate);
        let is_current = |rs: &ReplicaSet| self.is_current(rs);
        let new_available = owned
            .iter()
            .find(|rs| is_current(rs))
            .map(|rs| status_field(rs, |s| s.available_replicas))
            .unwrap_or(0);
        for replica_set in owned {
            let target = if is_current(replica_set) {
                new_target
            } else if recreate || new_available >= desired {
                0
            } else {
                spec_replicas(replica_set)
            };
            if spec_replicas(replica_set) != target {
                scale(api, replica_set, target).await?;
                let message = format!("Scaled replica set {} to {target}", replica_set.name_any());
                self.record_scaling(&message).await;
            }
        }
        prune_history(api, owned, &self.hash, history_limit).await
    }
}

/// The Deployment's status summed over its ReplicaSets, and whether the rollout is complete.
fn deployment_status(
    deployment: &Deployment,
    owned: &[ReplicaSet],
    current: Option<&ReplicaSet>,
    desired: i32,
) -> (DeploymentStatus, bool) {
    let sum = |field: &dyn Fn(&ReplicaSet) -> i32| owned.iter().map(field).sum::<i32>();
    let replicas = sum(&|rs| status_field(rs, |s| Some(s.replicas)));
    let available = sum(&|rs| status_field(rs, |s| s.available_replicas));
    let updated = current
        .map(|rs| status_field(rs, |s| Some(s.replicas)))
        .unwrap_or(0);
    let complete = current.is_some_and(|rs| status_field(rs, |s| s.available_replicas) >= desired)
        && replicas == updated;
    let previous = deployment.status.clone().unwrap_or_default();
    let conditions = vec![
        condition(
            &previous,
            "Available",
            available >= desired - max_unavailable(deployment, desired),
            if available >= desired - max_unavailable(deployment, desired) {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
        ),
        condition(
            &previous,
            "Progressing",
            true,
            if complete {
                "NewReplicaSetAvailable"
            } else {
                "ReplicaSetUpdated"
            },
        ),
    ];
    let status = DeploymentStatus {
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(sum(&|rs| status_field(rs, |s| s.ready_replicas))),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        observed_generation: deployment.metadata.generation,
        conditions: Some(conditions),
        collision_count: previous.collision_count,
        ..Default::default()
    };
    (status, complete)
}

async fn reconcile(deployment: Arc<Deployment>, context: Arc<Context>) -> Result<Action> {
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = deployment.namespace().unwrap_or_default();
    let uid = deployment.uid().unwrap_or_default();
    let spec = deployment
        .spec
        .as_ref()
        .ok_or_else(|| Error::MissingField(crate::events::name_of(deployment.as_ref()), "spec"))?;
    let desired = spec.replicas.unwrap_or(1).max(0);
    let api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let mut owned: Vec<ReplicaSet> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| controller_uid(rs) == Some(uid.as_str()))
        .collect();
    let hash = template_hash(&spec.template);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let paused = spec.paused == Some(true);
    let mut rollout = Rollout {
        api,
        deployment: &deployment,
        context: &context,
        hash,
        desired,
        new_target: desired,
        recreate,
    };
    let old_pods_remain = owned
        .iter()
        .filter(|rs| !rollout.is_current(rs))
        .any(|rs| spec_replicas(rs) > 0 || status_field(rs, |s| Some(s.replicas)) > 0);
    if recreate && old_pods_remain {
        rollout.new_target = 0;
    }

    if !paused && !owned.iter().any(|rs| rollout.is_current(rs)) {
        let created = rollout.create_current(&owned).await?;
        owned.push(created);
    }
    if !paused {
        rollout
            .scale_owned(&owned, spec.revision_history_limit.unwrap_or(10))
            .await?;
    }

    let current = owned.iter().find(|rs| rollout.is_current(rs));
    let (status, complete) = deployment_status(&deployment, &owned, current, desired);
    if deployment.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({ "status": status });
        Api::<Deployment>::namespaced(context.client.clone(), &namespace)
            .patch_status(
                &deployment.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(Action::requeue(if complete {
        RESYNC
    } else {
        Duration::from_secs(2)
    }))
}

/// Keeps lastTransitionTime (and lastUpdateTime) while the condition's status and reason hold.
fn condition(
    previous: &DeploymentStatus,
    kind: &str,
    status: bool,
    reason: &str,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" };
    let earlier = previous
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind && c.status == status && c.reason.as_deref() == Some(reason));
    let now = Time(Timestamp::now());
    DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(match (kind, reason) {
            ("Available", "MinimumReplicasAvailable") => {
                "Deployment has minimum availability.".into()
            }
            ("Available", _) => "Deployment does not have minimum availability.".into(),
            (_, "NewReplicaSetAvailable") => "ReplicaSet has successfully progressed.".into(),
            _ => "ReplicaSet is progressing.".into(),
        }),
        last_transition_time: Some(
            earlier
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(now.clone()),
        ),
        last_update_time: Some(
            earlier
                .and_then(|c| c.last_update_time.clone())
                .unwrap_or(now),
        ),
    }
}

async fn create_replica_set(
    api: &Api<ReplicaSet>,
    deployment: &Deployment,
    hash: &str,
    replicas: i32,
    revision: u64,
) -> Result<ReplicaSet> {
    let spec = deployment.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let template_meta = template.metadata.get_or_insert_with(Default::default);
    template_meta.labels = Some(with_label(
        template_meta.labels.as_ref(),
        TEMPLATE_HASH_LABEL,
        hash,
    ));
    let selector = LabelSelector {
        match_labels: Some(with_label(
            spec.selector.match_labels.as_ref(),
            TEMPLATE_HASH_LABEL,
            hash,
        )),
        match_expressions: spec.selector.match_expressions.clone(),
    };
    let replica_set = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", deployment.name_any())),
            namespace: deployment.namespace(),
            labels: template_meta.labels.clone(),
            annotations: Some([(REVISION_ANNOTATION.to_owned(), revision.to_string())].into()),
            owner_references: Some(vec![controller_reference(deployment)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &replica_set).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Ok(api.get(&replica_set.name_any()).await?)
        }
        Err(error) => Err(error.into()),
    }
}

async fn scale(api: &Api<ReplicaSet>, replica_set: &ReplicaSet, replicas: i32) -> Result<()> {
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    api.patch(
        &replica_set.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn prune_history(
    api: &Api<ReplicaSet>,
    owned: &[ReplicaSet],
    current_hash: &str,
    limit: i32,
) -> Result<()> {
    let mut empty_old: Vec<&ReplicaSet> = owned
        .iter()
        .filter(|rs| rs.labels().get(TEMPLATE_HASH_LABEL).map(String::as_str) != Some(current_hash))
        .filter(|rs| spec_replicas(rs) == 0 && status_field(rs, |s| Some(s.replicas)) == 0)
        .collect();
    empty_old.sort_by_key(|rs| revision(rs));
    let surplus = empty_old.len().saturating_sub(limit.max(0) as usize);
    for replica_set in empty_old.into_iter().take(surplus) {
        match api
            .delete(&replica_set.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
