//! The ReplicaSet controller: creates and deletes pods until as many active pods as
//! `replicas` carry the ReplicaSet as their controller; adopts matching orphans, releases
//! pods that no longer match, deletes unready and newer pods first, and reports status.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::cache::{Change, split_key};
use super::client::{LocalApi, path, resource};
use super::labels::selector_matches;
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};
use super::{
    Caches, Expectations, controller_ref, is_deleting, max_revision, name_of, now_seconds,
    owner_ref, pod_ready_since, uid_of,
};

pub struct ReplicaSetController {
    api: LocalApi,
    caches: Caches,
    expectations: Expectations,
}

pub fn start(tasks: &mut JoinSet<()>, api: LocalApi, caches: &Caches) {
    let queue = WorkQueue::new();
    super::feed(
        tasks,
        &queue,
        &caches.replicasets,
        vec![
            (caches.replicasets.clone(), super::same_key as super::Mapper),
            (caches.pods.clone(), pod_to_replicasets),
        ],
        caches,
    );
    let controller = ReplicaSetController {
        api,
        caches: caches.clone(),
        expectations: Expectations::default(),
    };
    super::spawn_workers(tasks, controller, &queue, 4);
}

/// A pod change wakes its controller, or, for an orphan, every ReplicaSet that selects it.
fn pod_to_replicasets(change: &Change, caches: &Caches) -> Vec<String> {
    let mut keys = super::controller_key(change, "ReplicaSet");
    if let Some(pod) = &change.new
        && controller_ref(pod).is_none()
    {
        let ns = pod["metadata"]["namespace"].as_str();
        for rs in caches.replicasets.list(ns) {
            if selector_matches(&rs["spec"]["selector"], &pod["metadata"]["labels"]) {
                keys.push(super::cache::key_of(&rs));
            }
        }
    }
    keys
}

pub fn is_active(pod: &Value) -> bool {
    !is_deleting(pod)
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn is_available(pod: &Value, min_ready: f64, now: f64) -> bool {
    pod_ready_since(pod).is_some_and(|since| min_ready <= 0.0 || since + min_ready <= now)
}

/// Which pod to delete first: unbound, then pending, then unready, then the newest.
pub fn deletion_order(a: &Value, b: &Value) -> Ordering {
    let bound = |p: &Value| {
        p.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
    };
    let phase = |p: &Value| match p.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready = |p: &Value| pod_ready_since(p).is_some();
    let created = |p: &Value| {
        p.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    bound(a)
        .cmp(&bound(b))
        .then(phase(a).cmp(&phase(b)))
        .then(ready(a).cmp(&ready(b)))
        .then(created(b).cmp(&created(a)))
}

impl ReplicaSetController {
    async fn claim(
        &self,
        rs: &Value,
        pods: Vec<Arc<Value>>,
    ) -> Result<Vec<Arc<Value>>, ReconcileError> {
        let uid = uid_of(rs);
        let selector = &rs["spec"]["selector"];
        let pod_res = resource("v1", "Pod");
        let mut owned = Vec::new();
        for pod in pods {
            let matches = selector_matches(selector, &pod["metadata"]["labels"]);
            let ns = pod["metadata"]["namespace"].as_str();
            let pod_path = path(pod_res, ns, Some(name_of(&pod)), None);
            match controller_ref(&pod) {
                Some(o) if o["uid"] == uid => {
                    if matches {
                        owned.push(pod);
                    } else if !is_deleting(&pod) {
                        // Released: the pod no longer matches the selector.
                        let refs: Vec<&Value> = pod["metadata"]["ownerReferences"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|o| o["uid"] != uid)
                            .collect();
                        let patch = json!({"metadata": {"ownerReferences": refs,
                            "resourceVersion": pod["metadata"]["resourceVersion"]}});
                        self.api.merge_patch(&pod_path, &patch).await?;
                    }
                }
                None if matches && is_active(&pod) && !is_deleting(rs) => {
                    let mut refs: Vec<Value> = pod["metadata"]["ownerReferences"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    refs.push(owner_ref(rs));
                    let patch = json!({"metadata": {"ownerReferences": refs,
                        "resourceVersion": pod["metadata"]["resourceVersion"]}});
                    match self.api.merge_patch(&pod_path, &patch).await {
                        Ok(adopted) => owned.push(Arc::new(adopted)),
                        Err(e) if e.is_not_found() || e.is_conflict() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => {}
            }
        }
        Ok(owned)
    }

    async fn create_pods(&self, rs: &Value, n: usize) -> Result<Vec<Value>, ReconcileError> {
        let ns = rs["metadata"]["namespace"].as_str().unwrap_or("default");
        let template = &rs["spec"]["template"];
        let mut meta = template["metadata"].clone();
        if !meta.is_object() {
            meta = json!({});
        }
        meta["generateName"] = json!(format!("{}-", name_of(rs)));
        meta["namespace"] = json!(ns);
        meta["ownerReferences"] = json!([owner_ref(rs)]);
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]});
        let collection = path(resource("v1", "Pod"), Some(ns), None, None);
        let mut created = Vec::new();
        // Slow start, as Kubernetes does: a template the API refuses fails after one pod.
        let mut batch = 1;
        let mut left = n;
        while left > 0 {
            let this = batch.min(left);
            let results =
                futures::future::join_all((0..this).map(|_| self.api.create(&collection, &pod)))
                    .await;
            for r in results {
                match r {
                    Ok(p) => created.push(p),
                    Err(e) => {
                        let message = format!("Error creating: {}", e.message);
                        self.api
                            .event(rs, "Warning", "FailedCreate", &message)
                            .await;
                        return Err(e.into());
                    }
                }
            }
            left -= this;
            batch *= 2;
        }
        if let Some(p) = created.first() {
            let message = format!("Created pod: {}", name_of(p));
            self.api
                .event(rs, "Normal", "SuccessfulCreate", &message)
                .await;
        }
        Ok(created)
    }
}

#[async_trait::async_trait]
impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(rs) = self.caches.replicasets.get(key) else {
            return Ok(Action::await_change());
        };
        if !self.expectations.satisfied(key, &self.caches.pods) {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        let (ns, name) = split_key(key);
        let pods = self.caches.pods.list(ns);
        let owned = self.claim(&rs, pods).await?;
        let mut active: Vec<Arc<Value>> = owned.iter().filter(|p| is_active(p)).cloned().collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        if !is_deleting(&rs) {
            if active.len() < want {
                let created = self.create_pods(&rs, want - active.len()).await?;
                self.expectations
                    .expect(key, max_revision(&created), Vec::new());
            } else if active.len() > want {
                active.sort_by(|a, b| deletion_order(a, b));
                let doomed: Vec<Arc<Value>> = active.drain(..active.len() - want).collect();
                let pod_res = resource("v1", "Pod");
                let results = futures::future::join_all(doomed.iter().map(|p| async move {
                    let pod_path = path(pod_res, ns, Some(name_of(p)), None);
                    self.api.delete_uid(&pod_path, uid_of(p)).await
                }))
                .await;
                let gone = doomed.iter().map(|p| super::cache::key_of(p)).collect();
                self.expectations.expect(key, 0, gone);
                for r in results {
                    r?;
                }
                if let Some(p) = doomed.first() {
                    let message = format!("Deleted pod: {}", name_of(p));
                    self.api
                        .event(&rs, "Normal", "SuccessfulDelete", &message)
                        .await;
                }
            }
        }
        // Status, from the pods as they are now in the cache.
        let min_ready = rs["spec"]["minReadySeconds"].as_f64().unwrap_or(0.0);
        let now = now_seconds();
        let live: Vec<Arc<Value>> = owned.iter().filter(|p| is_active(p)).cloned().collect();
        let ready = live.iter().filter(|p| pod_ready_since(p).is_some()).count();
        let available = live
            .iter()
            .filter(|p| is_available(p, min_ready, now))
            .count();
        let labelled = live.iter().filter(|p| {
            rs.pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
                .is_none_or(|l| l.iter().all(|(k, v)| p["metadata"]["labels"][k] == *v))
        });
        let status = json!({
            "replicas": live.len(),
            "fullyLabeledReplicas": labelled.count(),
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs["metadata"]["generation"],
        });
        let current = &rs["status"];
        let differs = [
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ]
        .iter()
        .any(|k| current[*k].as_i64().unwrap_or(0) != status[*k].as_i64().unwrap_or(0));
        if differs {
            let rs_path = path(
                resource("apps/v1", "ReplicaSet"),
                ns,
                Some(name),
                Some("status"),
            );
            match self
                .api
                .merge_patch(&rs_path, &json!({"status": status}))
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
        }
        // Pods ready but not yet for minReadySeconds become available later.
        let pending = live
            .iter()
            .filter_map(|p| pod_ready_since(p))
            .map(|since| since + min_ready - now)
            .filter(|left| *left > 0.0)
            .fold(f64::INFINITY, f64::min);
        if pending.is_finite() {
            return Ok(Action::requeue(Duration::from_secs_f64(pending + 0.05)));
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: Option<&str>, phase: &str, ready: bool, created: &str) -> Value {
        let conditions = if ready {
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        } else {
            json!([])
        };
        json!({"metadata": {"creationTimestamp": created}, "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": conditions}})
    }

    #[test]
    fn unbound_pending_unready_and_newer_pods_go_first() {
        let mut pods = [
            pod(Some("n"), "Running", true, "2026-01-01T00:00:01Z"),
            pod(Some("n"), "Running", true, "2026-01-01T00:00:05Z"),
            pod(Some("n"), "Running", false, "2026-01-01T00:00:00Z"),
            pod(Some("n"), "Pending", false, "2026-01-01T00:00:00Z"),
            pod(None, "Pending", false, "2026-01-01T00:00:00Z"),
        ];
        pods.sort_by(deletion_order);
        let order: Vec<(Value, Value)> = pods
            .iter()
            .map(|p| {
                (
                    p["spec"]["nodeName"].clone(),
                    p["metadata"]["creationTimestamp"].clone(),
                )
            })
            .collect();
        assert_eq!(order[0].0, Value::Null);
        assert_eq!(pods[1]["status"]["phase"], "Pending");
        assert!(pod_ready_since(&pods[2]).is_none());
        assert_eq!(
            order[3].1, "2026-01-01T00:00:05Z",
            "the newer ready pod before the older"
        );
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod(Some("n"), "Running", true, "");
        let since = pod_ready_since(&p).unwrap();
        assert!(is_available(&p, 0.0, since));
        assert!(!is_available(&p, 10.0, since + 5.0));
        assert!(is_available(&p, 10.0, since + 10.0));
    }
}
