//! Reflectors: an in-memory copy of one resource, fed by a list and then the store's watch,
//! with a reader half controllers query and a stream of changes that wakes them.
//!
//! The loop is an explicit state machine (list, then watch; after an error, wait and list
//! again) with a bounded exponential back-off, as kube-runtime's `watcher` is. A relist
//! emits the difference against what was held, so no change is lost across a gap.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::cluster::api::resources::Resource;
use crate::cluster::api::storage::Storage;
use crate::cluster::store::{EventKind, Revision};

/// One change the cache applied: the object before and after (`None`: absent).
#[derive(Debug, Clone)]
pub struct Change {
    pub key: String,
    pub old: Option<Arc<Value>>,
    pub new: Option<Arc<Value>>,
}

/// The objects of one resource, keyed `namespace/name` (cluster-scoped: `name`).
pub struct Cache {
    pub resource: &'static Resource,
    objects: RwLock<BTreeMap<String, Arc<Value>>>,
    /// The store revision the cache reflects (every change up to it is applied).
    revision: watch::Sender<Revision>,
    synced: watch::Sender<bool>,
    changes: broadcast::Sender<Change>,
}

/// The key of an object in a cache.
pub fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    match meta["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// `(namespace, name)` of a cache key.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

enum State {
    /// List everything, then watch from the list's revision.
    Relist,
    Watch(Revision),
    /// Wait before relisting; the delay doubles up to a cap and resets after a good list.
    Backoff,
}

/// Changes a slow subscriber may fall behind by before it is told it lagged (and resyncs from
/// the cache). Every slot is allocated up front, so this is memory held per cache.
const CHANGES_CAPACITY: usize = 4096;

/// What the cache keeps of a stored object: all of it but `metadata.managedFields`, which no
/// controller reads (server-side apply works on the stored object) and which is often the
/// larger half of a pod. client-go's informers drop it for the same reason.
fn cached(mut object: Value) -> Arc<Value> {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("managedFields");
    }
    compact(&mut object);
    Arc::new(object)
}

/// Gives every map and list of `value` exactly the room it uses. Decoding grows them by
/// doubling, and a cache holds its objects for the server's lifetime: with 10,000 pods the
/// unused capacity is tens of MiB.
fn compact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let mut exact = serde_json::Map::with_capacity(map.len());
            for (key, mut item) in std::mem::take(map) {
                compact(&mut item);
                exact.insert(key, item);
            }
            *map = exact;
        }
        Value::Array(items) => {
            items.iter_mut().for_each(compact);
            items.shrink_to_fit();
        }
        _ => {}
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Cache {
    pub fn new(resource: &'static Resource) -> Arc<Cache> {
        Arc::new(Cache {
            resource,
            objects: RwLock::new(BTreeMap::new()),
            revision: watch::Sender::new(0),
            synced: watch::Sender::new(false),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        })
    }

    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.objects.read().expect("cache lock").get(key).cloned()
    }

    /// Every object, or those of one namespace.
    pub fn list(&self, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let objects = self.objects.read().expect("cache lock");
        match namespace {
            None => objects.values().cloned().collect(),
            Some(ns) => {
                let start = format!("{ns}/");
                objects
                    .range(start.clone()..)
                    .take_while(|(k, _)| k.starts_with(&start))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
        }
    }

    pub fn len(&self) -> usize {
        self.objects.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store revision reflected so far.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Resolves once the first list is in.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Resolves once the cache reflects `revision` (a read-your-writes barrier).
    pub async fn wait_for_revision(&self, revision: Revision) {
        let mut rx = self.revision.subscribe();
        let _ = rx.wait_for(|r| *r >= revision).await;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn apply(&self, key: String, new: Option<Arc<Value>>) {
        let old = {
            let mut objects = self.objects.write().expect("cache lock");
            match &new {
                Some(v) => objects.insert(key.clone(), v.clone()),
                None => objects.remove(&key),
            }
        };
        if old.is_none() && new.is_none() {
            return;
        }
        // No receiver is fine: nothing is interested yet.
        let _ = self.changes.send(Change { key, old, new });
    }

    fn key_from_store(&self, store_key: &str) -> String {
        store_key
            .strip_prefix(&self.resource.prefix(None))
            .unwrap_or(store_key)
            .to_string()
    }

    /// Keeps the cache in step with the store until the task is dropped.
    pub async fn run(self: Arc<Self>, storage: Storage) {
        let r = self.resource;
        let mut state = State::Relist;
        let mut stream = None;
        let mut delay = BACKOFF_MIN;
        loop {
            state = match state {
                State::Relist => match storage.list(r, None, 0, None, None).await {
                    Ok(page) => {
                        let mut fresh = BTreeMap::new();
                        let mut undecodable = None;
                        for stored in page.items {
                            match stored.decode() {
                                Ok(item) => {
                                    fresh.insert(key_of(&item), cached(item));
                                }
                                Err(e) => undecodable = Some(e),
                            }
                        }
                        if let Some(e) = undecodable {
                            tracing::error!(resource = r.plural, error = %e, "cannot decode a stored object");
                        }
                        let gone: Vec<String> = {
                            let objects = self.objects.read().expect("cache lock");
                            objects
                                .keys()
                                .filter(|k| !fresh.contains_key(*k))
                                .cloned()
                                .collect()
                        };
                        for key in gone {
                            self.apply(key, None);
                        }
                        for (key, v) in fresh {
                            let same = self.get(&key).is_some_and(|old| *old == *v);
                            if !same {
                                self.apply(key, Some(v));
                            }
                        }
                        self.revision.send_replace(page.revision);
                        self.synced.send_replace(true);
                        stream = None;
                        delay = BACKOFF_MIN;
                        State::Watch(page.revision)
                    }
                    Err(e) => {
                        tracing::warn!(resource = r.plural, error = %e, "cache: list failed");
                        State::Backoff
                    }
                },
                State::Watch(from) => {
                    if stream.is_none() {
                        match storage.store.watch(&r.prefix(None), from).await {
                            Ok(s) => stream = Some(s),
                            Err(e) => {
                                tracing::warn!(resource = r.plural, error = %e, "cache: watch failed");
                                state = State::Backoff;
                                continue;
                            }
                        }
                    }
                    let s = stream.as_mut().expect("watch stream");
                    match s.next().await {
                        Some(Ok(event)) => {
                            let key = self.key_from_store(&event.kv.key);
                            let rev = event.revision();
                            match event.kind {
                                EventKind::Put => match storage.decode(r, &event.kv) {
                                    Ok(v) => self.apply(key, Some(cached(v))),
                                    Err(e) => {
                                        tracing::warn!(key = %key, error = %e, "cache: undecodable object")
                                    }
                                },
                                EventKind::Delete => self.apply(key, None),
                            }
                            self.revision.send_replace(rev);
                            State::Watch(rev)
                        }
                        Some(Err(e)) => {
                            tracing::warn!(resource = r.plural, error = %e, "cache: watch ended");
                            stream = None;
                            State::Relist
                        }
                        None => {
                            stream = None;
                            State::Backoff
                        }
                    }
                }
                State::Backoff => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                    State::Relist
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cached_objects_leave_out_managed_fields_and_keep_the_rest() {
        let stored = json!({"metadata": {"name": "a", "labels": {"app": "web"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n1"}});
        let kept = cached(stored);
        assert_eq!(
            *kept,
            json!({"metadata": {"name": "a", "labels": {"app": "web"}}, "spec": {"nodeName": "n1"}})
        );
    }
}
