//! The delete path: preconditions, the finalizers a propagation policy adds, graceful pod
//! deletion, and what goes with an object once it is really removed.

use super::{DeleteOptions, Deleted, Propagation, State, FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use crate::error::{Error, Result};
use crate::resources::ResourceInfo;
use crate::store::EventType;
use serde_json::{json, Value};

/// Pods bound to a node are deleted gracefully by default, like the real server does.
const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

fn check_delete_preconditions(old: &Value, options: &DeleteOptions) -> Result<()> {
    if let Some(uid) = &options.precondition_uid {
        if old["metadata"]["uid"].as_str() != Some(uid.as_str()) {
            return Err(Error::conflict(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                old["metadata"]["uid"].as_str().unwrap_or_default()
            )));
        }
    }
    if let Some(rv) = &options.precondition_resource_version {
        if old["metadata"]["resourceVersion"].as_str() != Some(rv.as_str()) {
            return Err(Error::conflict(format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
                )));
        }
    }
    Ok(())
}

/// What a delete request means for one object, worked out before anything is written.
struct DeletePlan {
    /// The object's finalizers plus the one its propagation policy asks for.
    finalizers: Vec<Value>,
    grace: i64,
    /// A pod still running on a node waits `grace` seconds for its kubelet.
    graceful: bool,
    is_namespace: bool,
    already_deleting: bool,
}

impl DeletePlan {
    fn new(info: &ResourceInfo, new: &Value, options: &DeleteOptions) -> Self {
        let mut finalizers: Vec<Value> = new["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let extra = match options.propagation {
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
            Propagation::Background => None,
        };
        let already_deleting = new["metadata"].get("deletionTimestamp").is_some();
        if let Some(extra) = extra {
            if !already_deleting && !finalizers.iter().any(|f| f == extra) {
                finalizers.push(json!(extra));
            }
        }
        let is_pod = info.group.is_empty() && info.kind == "Pod";
        let grace = if is_pod {
            let spec_grace = new["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(DEFAULT_POD_GRACE_SECONDS);
            options.grace_period_seconds.unwrap_or(spec_grace).max(0)
        } else {
            0
        };
        let on_node = is_pod
            && new["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            && !matches!(
                new["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
        let graceful = on_node && grace > 0;
        let is_namespace = info.group.is_empty() && info.kind == "Namespace";
        DeletePlan {
            finalizers,
            grace,
            graceful,
            is_namespace,
            already_deleting,
        }
    }

    /// Nothing to wait for: no finalizers, no kubelet, and not a namespace (whose contents go
    /// first).
    fn removes_at_once(&self) -> bool {
        self.finalizers.is_empty() && !self.graceful && !self.is_namespace
    }

    /// A second delete of an object already being deleted only matters when it shortens a
    /// pod's grace period.
    fn shortens_grace(&self, object: &Value) -> bool {
        self.graceful
            && object["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .is_some_and(|g| self.grace < g)
    }
}

impl State {
    pub fn delete(
        &mut self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted> {
        let old = self.get(info, namespace, name)?;
        check_delete_preconditions(&old, options)?;
        let mut new = (*old).clone();
        let plan = DeletePlan::new(info, &new, options);
        if plan.removes_at_once() {
            if options.dry_run {
                return Ok(Deleted::Now(new));
            }
            let rv = self.store.next_resource_version();
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = crate::store::object_key(&new);
            self.store
                .remove(&info.storage_key(), &key, new.clone(), rv);
            self.after_removal(info, &new);
            return Ok(Deleted::Now(new));
        }
        if plan.already_deleting && !plan.shortens_grace(&new) {
            return Ok(Deleted::Pending(new));
        }
        if options.dry_run {
            return Ok(Deleted::Pending(new));
        }
        self.mark_deleting(info, &mut new, plan);
        Ok(Deleted::Pending(new))
    }

    /// Sets deletionTimestamp (in `grace` seconds for a graceful pod) and the finalizers, and
    /// stores the object; finalizers or the kubelet remove it later.
    fn mark_deleting(&mut self, info: &ResourceInfo, new: &mut Value, plan: DeletePlan) {
        let DeletePlan {
            finalizers,
            grace,
            graceful,
            is_namespace,
            ..
        } = plan;
        let deletion_time = jiff::Timestamp::now()
            + jiff::SignedDuration::from_secs(if graceful { grace } else { 0 });
        new["metadata"]["deletionTimestamp"] =
            json!(deletion_time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if !finalizers.is_empty() {
            new["metadata"]["finalizers"] = Value::Array(finalizers);
        }
        if is_namespace {
            new["status"]["phase"] = json!("Terminating");
        }
        let generation = new["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        new["metadata"]["generation"] = json!(generation);
        let rv = self.store.next_resource_version();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.store
            .put(&info.storage_key(), new.clone(), EventType::Modified, rv);
        if info.kind == "CustomResourceDefinition" && info.group == "apiextensions.k8s.io" {
            self.refresh_custom_resources();
        }
    }

    /// Clean-up the real server does when certain objects go: a CRD takes its objects with it.
    pub(super) fn after_removal(&mut self, info: &ResourceInfo, removed: &Value) {
        if info.kind == "CustomResourceDefinition" && info.group == "apiextensions.k8s.io" {
            let group = removed["spec"]["group"].as_str().unwrap_or_default();
            let plural = removed["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default();
            let storage_key = format!("{group}/{plural}");
            for object in self.store.list(&storage_key, None) {
                let rv = self.store.next_resource_version();
                let mut gone = (*object).clone();
                gone["metadata"]["resourceVersion"] = json!(rv.to_string());
                let key = crate::store::object_key(&gone);
                self.store.remove(&storage_key, &key, gone, rv);
            }
            self.refresh_custom_resources();
        }
    }

    /// Removes an object whose deletion is complete (used by the garbage collector and namespaces).
    pub fn remove_now(&mut self, info: &ResourceInfo, object: &Value) {
        let rv = self.store.next_resource_version();
        let mut gone = object.clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = crate::store::object_key(&gone);
        self.store
            .remove(&info.storage_key(), &key, gone.clone(), rv);
        self.after_removal(info, &gone);
    }
}
