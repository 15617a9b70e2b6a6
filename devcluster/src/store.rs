//! The object store: every object as JSON keyed by resource, one global resourceVersion counter, and a
//! bounded history of changes that watches replay from. A watch asking for a version older than the
//! history holds gets 410 Gone, as from a compacted etcd.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events kept for watch replay. A watcher further behind than this relists (410 Gone).
pub const DEFAULT_HISTORY_CAPACITY: usize = 20_000;
/// Events buffered per live watcher before it is cut off (it then resumes from its last version).
pub const WATCH_CHANNEL_CAPACITY: usize = 16_384;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "ADDED")]
    Added,
    #[serde(rename = "MODIFIED")]
    Modified,
    #[serde(rename = "DELETED")]
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct StoredEvent {
    pub resource_version: u64,
    pub storage_key: String,
    pub event_type: EventType,
    pub object: Arc<Value>,
    /// The object as JSON, encoded once for every watcher of its stored version.
    pub encoded: std::sync::OnceLock<bytes::Bytes>,
}

impl StoredEvent {
    pub fn encoded_object(&self) -> &bytes::Bytes {
        self.encoded.get_or_init(|| {
            bytes::Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default())
        })
    }
}

/// `(namespace or "", name)`.
pub type ObjectKey = (String, String);

pub struct Store {
    resource_version: u64,
    objects: HashMap<String, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<StoredEvent>>,
    history_capacity: usize,
    /// Watches may start from this version or later; older ones get 410 Gone.
    oldest_watchable: u64,
    sender: broadcast::Sender<Arc<StoredEvent>>,
}

#[derive(Serialize, Deserialize)]
pub struct StoreSnapshot {
    pub resource_version: u64,
    pub objects: BTreeMap<String, Vec<Value>>,
}

pub fn object_key(object: &Value) -> ObjectKey {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl Store {
    pub fn new(history_capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(WATCH_CHANNEL_CAPACITY);
        Store {
            resource_version: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_capacity: history_capacity.max(1),
            oldest_watchable: 1,
            sender,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn next_resource_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    pub fn get(&self, storage_key: &str, key: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.get(storage_key)?.get(key).cloned()
    }

    /// Objects of one resource, optionally in one namespace, in name order.
    pub fn list(&self, storage_key: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(objects) = self.objects.get(storage_key) else {
            return Vec::new();
        };
        match namespace {
            Some(ns) => objects
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => objects.values().cloned().collect(),
        }
    }

    pub fn all_keys(&self) -> Vec<String> {
        self.objects.keys().cloned().collect()
    }

    /// Stores `object` (its resourceVersion already set to `rv`) and publishes the change.
    pub fn put(
        &mut self,
        storage_key: &str,
        object: Value,
        event_type: EventType,
        rv: u64,
    ) -> Arc<Value> {
        let object = Arc::new(object);
        self.objects
            .entry(storage_key.to_string())
            .or_default()
            .insert(object_key(&object), object.clone());
        self.publish(storage_key, event_type, object.clone(), rv);
        object
    }

    /// Removes an object; `final_state` is what the DELETED event carries (with a new resourceVersion).
    pub fn remove(&mut self, storage_key: &str, key: &ObjectKey, final_state: Value, rv: u64) {
        if let Some(objects) = self.objects.get_mut(storage_key) {
            objects.remove(key);
        }
        self.publish(storage_key, EventType::Deleted, Arc::new(final_state), rv);
    }

    fn publish(&mut self, storage_key: &str, event_type: EventType, object: Arc<Value>, rv: u64) {
        let event = Arc::new(StoredEvent {
            resource_version: rv,
            storage_key: storage_key.to_string(),
            event_type,
            object,
            encoded: std::sync::OnceLock::new(),
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_capacity {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_watchable = dropped.resource_version;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(event);
    }

    /// Events after `since` for a watch, or `None` when `since` is older than the history (410).
    pub fn events_since(&self, since: u64) -> Option<Vec<Arc<StoredEvent>>> {
        if since < self.oldest_watchable {
            return None;
        }
        let start = self
            .history
            .partition_point(|e| e.resource_version <= since);
        Some(self.history.range(start..).cloned().collect())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.sender.subscribe()
    }

    pub fn snapshot(&self) -> StoreSnapshot {
        StoreSnapshot {
            resource_version: self.resource_version,
            objects: self
                .objects
                .iter()
                .map(|(k, objects)| (k.clone(), objects.values().map(|o| (**o).clone()).collect()))
                .collect(),
        }
    }

    /// Loads a snapshot into an empty store; watches start after its version.
    pub fn restore(&mut self, snapshot: StoreSnapshot) {
        self.resource_version = snapshot.resource_version;
        self.oldest_watchable = snapshot.resource_version;
        for (storage_key, objects) in snapshot.objects {
            let map = self.objects.entry(storage_key).or_default();
            for object in objects {
                map.insert(object_key(&object), Arc::new(object));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_is_bounded_and_old_versions_are_gone() {
        let mut store = Store::new(3);
        for i in 0..5 {
            let rv = store.next_resource_version();
            store.put(
                "/pods",
                json!({"metadata": {"name": format!("p{i}"), "namespace": "a"}}),
                EventType::Added,
                rv,
            );
        }
        assert!(store.events_since(1).is_none());
        let events = store.events_since(4).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(store.list("/pods", Some("a")).len(), 5);
        assert!(store.list("/pods", Some("b")).is_empty());
    }
}
