//! The garbage collector and the other background finishers of deletion: ownerReference GC
//! (background, foreground, orphan), namespace termination, and revocation of tokens whose service
//! account or bound object is gone. It runs after each delete and once a second.

use crate::api::Shared;
use crate::cluster::{DeleteOptions, Propagation, State, FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const GC_PERIOD: Duration = Duration::from_secs(1);
/// A terminating pod no kubelet confirmed is removed this long after its grace period ended.
const ORPHANED_POD_REMOVAL_SECONDS: i64 = 30;

pub async fn run(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.gc_wake.notified() => {}
            _ = tokio::time::sleep(GC_PERIOD) => {}
        }
        // Several passes settle chains (owner → dependent → its dependents) quickly.
        for _ in 0..4 {
            if !collect(&mut shared.lock()) {
                break;
            }
        }
    }
}

struct Entry {
    storage_key: String,
    object: Arc<Value>,
}

fn has_finalizer(object: &Value, name: &str) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == name))
}

fn deleting(object: &Value) -> bool {
    object["metadata"].get("deletionTimestamp").is_some()
}

/// What one pass found to do, worked out over a snapshot of the store before anything is written.
#[derive(Default)]
struct Plan {
    deletes: Vec<(String, Arc<Value>, Propagation)>,
    orphan_updates: Vec<(String, Value)>,
    finishes: Vec<(String, Value)>,
    namespace_content: Vec<(String, Arc<Value>)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.deletes.is_empty()
            && self.orphan_updates.is_empty()
            && self.finishes.is_empty()
            && self.namespace_content.is_empty()
    }
}

fn snapshot(state: &State) -> Vec<Entry> {
    let mut entries = Vec::new();
    for key in state.store.all_keys() {
        for object in state.store.list(&key, None) {
            entries.push(Entry {
                storage_key: key.clone(),
                object,
            });
        }
    }
    entries
}

/// Dependents whose owners are all gone are deleted (foreground when an owner is being deleted
/// in the foreground); an owner being deleted with orphan propagation loses its references.
/// Returns how many dependents each existing owner still has.
fn plan_owner_references(
    entries: &[Entry],
    by_uid: &HashMap<String, &Entry>,
    plan: &mut Plan,
) -> HashMap<String, usize> {
    let mut dependents_of: HashMap<String, usize> = HashMap::new();
    let Plan {
        deletes,
        orphan_updates,
        ..
    } = plan;
    for entry in entries {
        let Some(refs) = entry.object["metadata"]["ownerReferences"].as_array() else {
            continue;
        };
        if refs.is_empty() {
            continue;
        }
        let mut live_owner = false;
        let mut remove_refs = Vec::new();
        let mut delete_with = None;
        for owner_ref in refs {
            let uid = owner_ref["uid"].as_str().unwrap_or_default();
            let Some(owner) = by_uid.get(uid) else {
                continue;
            };
            *dependents_of.entry(uid.to_string()).or_default() += 1;
            if deleting(&owner.object) && has_finalizer(&owner.object, ORPHAN_FINALIZER) {
                remove_refs.push(uid.to_string());
                continue;
            }
            if deleting(&owner.object) && has_finalizer(&owner.object, FOREGROUND_FINALIZER) {
                delete_with = Some(Propagation::Foreground);
                continue;
            }
            live_owner = true;
        }
        if !remove_refs.is_empty() {
            let mut updated = (*entry.object).clone();
            if let Some(list) = updated["metadata"]["ownerReferences"].as_array_mut() {
                list.retain(|r| !remove_refs.iter().any(|u| r["uid"] == json!(u)));
            }
            orphan_updates.push((entry.storage_key.clone(), updated));
        } else if !live_owner && !deleting(&entry.object) {
            deletes.push((
                entry.storage_key.clone(),
                entry.object.clone(),
                delete_with.unwrap_or(Propagation::Background),
            ));
        }
    }
    dependents_of
}

/// Finishes deletions that wait on nothing any more: foreground/orphan finalizers with no
/// dependents left, and pods whose kubelet never confirmed. Collects the content of terminating
/// namespaces; returns the terminating namespaces that still hold objects.
fn plan_finishes(
    entries: &[Entry],
    dependents_of: &HashMap<String, usize>,
    terminating_namespaces: &HashSet<String>,
    plan: &mut Plan,
) -> HashSet<String> {
    let Plan {
        finishes,
        namespace_content,
        ..
    } = plan;
    let now = jiff::Timestamp::now().as_second();
    let mut namespace_populated: HashSet<String> = HashSet::new();
    for entry in entries {
        let uid = entry.object["metadata"]["uid"].as_str().unwrap_or_default();
        let waiting_on_dependents = dependents_of.get(uid).copied().unwrap_or(0) > 0;
        for finalizer in [FOREGROUND_FINALIZER, ORPHAN_FINALIZER] {
            if deleting(&entry.object)
                && has_finalizer(&entry.object, finalizer)
                && !waiting_on_dependents
            {
                let mut updated = (*entry.object).clone();
                if let Some(list) = updated["metadata"]["finalizers"].as_array_mut() {
                    list.retain(|f| f != finalizer);
                }
                finishes.push((entry.storage_key.clone(), updated));
            }
        }
        let namespace = entry.object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        if terminating_namespaces.contains(namespace) {
            namespace_populated.insert(namespace.to_string());
            if !deleting(&entry.object) {
                namespace_content.push((entry.storage_key.clone(), entry.object.clone()));
            }
        }
        let deletion_time = entry.object["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if entry.storage_key == "/pods"
            && deletion_time.is_some_and(|t| now - t.as_second() > ORPHANED_POD_REMOVAL_SECONDS)
        {
            let mut updated = (*entry.object).clone();
            updated["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            finishes.push((entry.storage_key.clone(), updated));
        }
    }
    namespace_populated
}

/// A terminating namespace with nothing left in it loses its `kubernetes` finalizer.
fn plan_empty_namespaces(
    state: &State,
    terminating_namespaces: &HashSet<String>,
    namespace_populated: &HashSet<String>,
    plan: &mut Plan,
) {
    let finishes = &mut plan.finishes;
    for name in terminating_namespaces {
        if !namespace_populated.contains(name) {
            if let Some(ns) = state
                .store
                .get("/namespaces", &(String::new(), name.clone()))
            {
                let mut updated = (*ns).clone();
                updated["spec"]["finalizers"] = json!([]);
                finishes.push(("/namespaces".into(), updated));
            }
        }
    }
}

fn apply(state: &mut State, plan: Plan) {
    let Plan {
        deletes,
        orphan_updates,
        finishes,
        namespace_content,
    } = plan;
    for (storage_key, object, propagation) in deletes.into_iter().chain(
        namespace_content
            .into_iter()
            .map(|(k, o)| (k, o, Propagation::Background)),
    ) {
        let Some(info) = state.info_for_storage_key(&storage_key) else {
            continue;
        };
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let options = DeleteOptions {
            propagation,
            ..DeleteOptions::default()
        };
        if let Err(error) = state.delete(&info, ns, name, &options) {
            tracing::debug!(%error, "garbage collection delete skipped");
        }
    }
    for (storage_key, object) in orphan_updates {
        if let Some(info) = state.info_for_storage_key(&storage_key) {
            state.put_internal(&info, object);
        }
    }
    for (storage_key, object) in finishes {
        let Some(info) = state.info_for_storage_key(&storage_key) else {
            continue;
        };
        let finalizers_left = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let is_namespace = storage_key == "/namespaces";
        let namespace_waiting = is_namespace
            && object["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
        let pod_waiting = storage_key == "/pods"
            && object["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                > 0;
        if finalizers_left || namespace_waiting || pod_waiting {
            state.put_internal(&info, object);
        } else {
            state.remove_now(&info, &object);
        }
    }
}

/// One pass; returns whether anything changed.
pub fn collect(state: &mut State) -> bool {
    let entries = snapshot(state);
    let by_uid: HashMap<String, &Entry> = entries
        .iter()
        .filter_map(|e| {
            e.object["metadata"]["uid"]
                .as_str()
                .map(|u| (u.to_string(), e))
        })
        .collect();
    let mut plan = Plan::default();
    let dependents_of = plan_owner_references(&entries, &by_uid, &mut plan);
    let terminating_namespaces: HashSet<String> = entries
        .iter()
        .filter(|e| e.storage_key == "/namespaces" && deleting(&e.object))
        .filter_map(|e| e.object["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let namespace_populated =
        plan_finishes(&entries, &dependents_of, &terminating_namespaces, &mut plan);
    plan_empty_namespaces(
        state,
        &terminating_namespaces,
        &namespace_populated,
        &mut plan,
    );
    let live_uids: HashSet<String> = by_uid.keys().cloned().collect();
    let changed = !plan.is_empty();
    drop(by_uid);
    state.tokens.retain_live(&live_uids);
    apply(state, plan);
    changed
}
