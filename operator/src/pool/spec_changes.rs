//! Which pool events start a pass: a pool seen for the first time, a spec change (its
//! `generation`), the start of its deletion, or its removal. A pass's own status write changes none
//! of these, so it does not start another pass: at rest a pool is reconciled once per status
//! interval, not twice.

use std::collections::HashMap;

use capsule_crds::CapsulePool;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// What of a pool decides whether its event starts a pass.
type Mark = (Option<i64>, bool);

fn mark(pool: &CapsulePool) -> Mark {
    (
        pool.metadata.generation,
        pool.metadata.deletion_timestamp.is_some(),
    )
}

/// `events` without the ones that change nothing a pass decides from. `store` is the cache the
/// events come from: a pool no longer in it was removed, which always passes. One entry per pool
/// in the cache is remembered.
pub(super) fn spec_changes(
    events: impl Stream<Item = watcher::Result<CapsulePool>> + Send + 'static,
    store: Store<CapsulePool>,
) -> impl Stream<Item = watcher::Result<CapsulePool>> + Send + 'static {
    let mut seen: HashMap<ObjectRef<CapsulePool>, Mark> = HashMap::new();
    events.filter(move |event| {
        let passes = match event {
            Err(_) => true,
            Ok(pool) => {
                let key = ObjectRef::from_obj(pool);
                if store.get(&key).is_none() {
                    seen.remove(&key);
                    true
                } else {
                    seen.insert(key, mark(pool)) != Some(mark(pool))
                }
            }
        };
        futures::future::ready(passes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::FutureExt;
    use kube::runtime::reflector;
    use serde_json::json;

    fn pool(generation: i64, status_writes: i64, deleting: bool) -> CapsulePool {
        let mut pool = json!({
            "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
            "metadata": {"name": "p", "namespace": "ns", "generation": generation,
                         "resourceVersion": (generation * 100 + status_writes).to_string()},
            "spec": {"template": {"image": "capsule-worker:test"}},
        });
        if deleting {
            pool["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        }
        serde_json::from_value(pool).unwrap()
    }

    #[tokio::test]
    async fn a_status_write_starts_no_pass_but_a_spec_change_a_deletion_and_a_removal_do() {
        let (store, mut writer) = reflector::store::<CapsulePool>();
        let (tx, rx) = mpsc::unbounded();
        let mut passes = Box::pin(spec_changes(rx, store));
        let mut passed = Vec::new();
        // As the reflector does: each object is in the store (or gone) before it is yielded.
        for (pool, present) in [
            (pool(1, 0, false), true),
            (pool(1, 1, false), true),
            (pool(1, 2, false), true),
            (pool(2, 0, false), true),
            (pool(2, 1, true), true),
            (pool(2, 2, true), false),
        ] {
            let event = if present {
                watcher::Event::Apply(pool.clone())
            } else {
                watcher::Event::Delete(pool.clone())
            };
            writer.apply_watcher_event(&event);
            tx.unbounded_send(Ok(pool)).unwrap();
            if let Some(Some(Ok(pool))) = passes.next().now_or_never() {
                passed.push(pool.metadata.resource_version.unwrap());
            }
        }
        assert_eq!(passed, ["100", "200", "201", "202"]);
    }
}
