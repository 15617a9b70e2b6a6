//! Names of cached objects grouped by namespace and one key of theirs (a pod's pool label, a
//! session's pool), so a pass reads its own pool's objects without scanning every cached one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use kube::{Resource, ResourceExt};

/// The key an object is grouped under; `None` leaves it out of every group.
pub type GroupKey<K> = fn(&K) -> Option<String>;

/// (namespace, key) → names, and name → key to move or drop an object whose key changed.
#[derive(Default)]
pub(super) struct Groups {
    members: HashMap<(String, String), BTreeSet<String>>,
    key_of: HashMap<(String, String), String>,
}

impl Groups {
    pub(super) fn apply<K: Resource>(&mut self, object: &K, key: GroupKey<K>) {
        let id = id_of(object);
        self.forget(&id);
        if let Some(key) = key(object) {
            let group = (id.0.clone(), key.clone());
            self.members.entry(group).or_default().insert(id.1.clone());
            self.key_of.insert(id, key);
        }
    }

    pub(super) fn delete<K: Resource>(&mut self, object: &K) {
        self.forget(&id_of(object));
    }

    fn forget(&mut self, id: &(String, String)) {
        let Some(key) = self.key_of.remove(id) else {
            return;
        };
        let group = (id.0.clone(), key);
        if let Some(names) = self.members.get_mut(&group) {
            names.remove(&id.1);
            if names.is_empty() {
                self.members.remove(&group);
            }
        }
    }

    fn names(&self, namespace: &str, key: &str) -> Vec<String> {
        let group = (namespace.to_string(), key.to_string());
        let names = self.members.get(&group);
        names
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn id_of<K: Resource>(object: &K) -> (String, String) {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// The groups of one cache, shared by its watch (which writes) and the passes (which read).
pub struct GroupIndex<K> {
    pub(super) key: GroupKey<K>,
    pub(super) groups: Arc<RwLock<Groups>>,
}

impl<K> Clone for GroupIndex<K> {
    fn clone(&self) -> Self {
        Self {
            key: self.key,
            groups: self.groups.clone(),
        }
    }
}

impl<K> GroupIndex<K> {
    pub(super) fn new(key: GroupKey<K>) -> Self {
        Self {
            key,
            groups: Arc::default(),
        }
    }

    /// The names in one group; the store may already lack one (a delete is stored first).
    pub(super) fn names(&self, namespace: &str, key: &str) -> Vec<String> {
        self.groups
            .read()
            .expect("group index")
            .names(namespace, key)
    }

    /// Puts a complete list in place at once, as the store does.
    pub(super) fn replace(&self, listed: Groups) {
        *self.groups.write().expect("group index") = listed;
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut Groups)) {
        change(&mut self.groups.write().expect("group index"));
    }
}
