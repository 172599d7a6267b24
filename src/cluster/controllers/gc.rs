//! Garbage collection through ownerReferences, for the kinds the controllers own
//! (Deployments own ReplicaSets, ReplicaSets own pods):
//! - background: a dependent whose owners are all gone is deleted;
//! - foreground: an owner being deleted with the `foregroundDeletion` finalizer goes once its
//!   dependents are gone;
//! - orphan: an owner being deleted with the `orphan` finalizer first drops itself from its
//!   dependents' ownerReferences.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::cache::{Cache, Change, key_of, split_key};
use super::client::{LocalApi, path};
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};
use super::{Caches, is_deleting, name_of, uid_of};

pub struct GarbageCollector {
    api: LocalApi,
    caches: Caches,
}

pub fn start(tasks: &mut JoinSet<()>, api: LocalApi, caches: &Caches) {
    let queue = WorkQueue::new();
    for (cache, mapper) in [
        (
            &caches.pods,
            dependent_pod as fn(&Change, &Caches) -> Vec<String>,
        ),
        (&caches.replicasets, replicaset_change),
        (&caches.deployments, deployment_change),
    ] {
        super::feed(tasks, &queue, cache, vec![(cache.clone(), mapper)], caches);
    }
    super::spawn_workers(
        tasks,
        GarbageCollector {
            api,
            caches: caches.clone(),
        },
        &queue,
        2,
    );
}

fn has_owners(v: &Value) -> bool {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn dependent_pod(change: &Change, _: &Caches) -> Vec<String> {
    match &change.new {
        Some(p) if has_owners(p) => vec![format!("pods:{}", change.key)],
        _ => Vec::new(),
    }
}

/// The keys of the objects in `cache` that name `uid` as an owner.
fn dependents_of(cache: &Cache, namespace: Option<&str>, uid: &str) -> Vec<Arc<Value>> {
    cache
        .list(namespace)
        .into_iter()
        .filter(|o| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
        })
        .collect()
}

/// An owner that changed: when it is gone, its dependents are looked at; while it is being
/// deleted with a finalizer, the owner itself.
fn owner_change(
    change: &Change,
    caches: &Caches,
    resource: &str,
    dependents: &Cache,
    dep: &str,
) -> Vec<String> {
    let mut keys = Vec::new();
    match (&change.old, &change.new) {
        (Some(old), None) => {
            let (ns, _) = split_key(&change.key);
            for d in dependents_of(dependents, ns, uid_of(old)) {
                keys.push(format!("{dep}:{}", key_of(&d)));
            }
        }
        (_, Some(new)) if is_deleting(new) => keys.push(format!("owner-{resource}:{}", change.key)),
        _ => {}
    }
    let _ = caches;
    keys
}

fn replicaset_change(change: &Change, caches: &Caches) -> Vec<String> {
    let mut keys = owner_change(change, caches, "replicasets", &caches.pods, "pods");
    if change.new.as_deref().is_some_and(has_owners) {
        keys.push(format!("replicasets:{}", change.key));
    }
    keys
}

fn deployment_change(change: &Change, caches: &Caches) -> Vec<String> {
    owner_change(
        change,
        caches,
        "deployments",
        &caches.replicasets,
        "replicasets",
    )
}

impl GarbageCollector {
    fn cache(&self, resource: &str) -> Option<&Arc<Cache>> {
        match resource {
            "pods" => Some(&self.caches.pods),
            "replicasets" => Some(&self.caches.replicasets),
            "deployments" => Some(&self.caches.deployments),
            _ => None,
        }
    }

    fn owner_cache(&self, kind: &str) -> Option<&Arc<Cache>> {
        match kind {
            "ReplicaSet" => Some(&self.caches.replicasets),
            "Deployment" => Some(&self.caches.deployments),
            _ => None,
        }
    }

    /// Whether the owner named by `r` still exists: the cache first, then (before deleting
    /// anything on the cache's word) a live read.
    async fn owner_exists(&self, ns: Option<&str>, r: &Value) -> Result<bool, ReconcileError> {
        let kind = r["kind"].as_str().unwrap_or("");
        let Some(cache) = self.owner_cache(kind) else {
            return Ok(true);
        };
        let name = r["name"].as_str().unwrap_or("");
        let key = match ns {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        if cache
            .get(&key)
            .is_some_and(|o| o["metadata"]["uid"] == r["uid"])
        {
            return Ok(true);
        }
        match self
            .api
            .get(&path(cache.resource, ns, Some(name), None))
            .await
        {
            Ok(live) => Ok(live["metadata"]["uid"] == r["uid"]),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn collect_dependent(&self, resource: &str, key: &str) -> Result<Action, ReconcileError> {
        let Some(cache) = self.cache(resource) else {
            return Ok(Action::await_change());
        };
        let Some(obj) = cache.get(key) else {
            return Ok(Action::await_change());
        };
        let (ns, name) = split_key(key);
        let refs: Vec<Value> = obj["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if refs.is_empty() {
            return Ok(Action::await_change());
        }
        let mut alive = Vec::new();
        for r in &refs {
            if self.owner_exists(ns, r).await? {
                alive.push(r.clone());
            }
        }
        let p = path(cache.resource, ns, Some(name), None);
        if alive.is_empty() {
            tracing::debug!(resource, key, "garbage: every owner is gone");
            self.api.delete_uid(&p, uid_of(&obj)).await?;
        } else if alive.len() < refs.len() {
            let patch = json!({"metadata": {"ownerReferences": alive, "resourceVersion": obj["metadata"]["resourceVersion"]}});
            self.api.merge_patch(&p, &patch).await?;
        }
        Ok(Action::await_change())
    }

    async fn finalize_owner(&self, resource: &str, key: &str) -> Result<Action, ReconcileError> {
        let Some(cache) = self.cache(resource) else {
            return Ok(Action::await_change());
        };
        let Some(owner) = cache.get(key) else {
            return Ok(Action::await_change());
        };
        if !is_deleting(&owner) {
            return Ok(Action::await_change());
        }
        let (ns, name) = split_key(key);
        let finalizers: Vec<String> = owner["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        let uid = uid_of(&owner);
        let dependents = match resource {
            "deployments" => dependents_of(&self.caches.replicasets, ns, uid),
            "replicasets" => dependents_of(&self.caches.pods, ns, uid),
            _ => Vec::new(),
        };
        let dep_resource = if resource == "deployments" {
            "replicasets"
        } else {
            "pods"
        };
        let dep_cache = self.cache(dep_resource).expect("dependent cache");
        let done = if finalizers.iter().any(|f| f == "orphan") {
            for d in &dependents {
                let refs: Vec<&Value> = d["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["uid"] != uid)
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": refs}});
                match self
                    .api
                    .merge_patch(
                        &path(dep_cache.resource, ns, Some(name_of(d)), None),
                        &patch,
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            "orphan"
        } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
            if !dependents.is_empty() {
                // Pods own nothing here: they go at once; ReplicaSets wait for their pods.
                let policy = if dep_resource == "pods" {
                    "Background"
                } else {
                    "Foreground"
                };
                for d in dependents.iter().filter(|d| !is_deleting(d)) {
                    let p = path(dep_cache.resource, ns, Some(name_of(d)), None);
                    self.api.delete(&p, policy).await?;
                }
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            "foregroundDeletion"
        } else {
            return Ok(Action::await_change());
        };
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != done).collect();
        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": owner["metadata"]["resourceVersion"]}});
        match self
            .api
            .merge_patch(&path(cache.resource, ns, Some(name), None), &patch)
            .await
        {
            Ok(_) => Ok(Action::await_change()),
            Err(e) if e.is_not_found() => Ok(Action::await_change()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some((kind, object)) = key.split_once(':') else {
            return Ok(Action::await_change());
        };
        match kind.strip_prefix("owner-") {
            Some(resource) => self.finalize_owner(resource, object).await,
            None => self.collect_dependent(kind, object).await,
        }
    }
}
