//! The Deployment controller: one ReplicaSet per pod template, named `<deployment>-<hash>`
//! and labelled `pod-template-hash`; RollingUpdate and Recreate; `minReadySeconds` (through
//! the ReplicaSets' available counts), `progressDeadlineSeconds`, `revisionHistoryLimit`,
//! `paused`; status and conditions, and the `deployment.kubernetes.io/revision` annotations
//! that `kubectl rollout status|history|undo` read.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::cache::split_key;
use super::client::{LocalApi, path, resource};
use super::labels::selector_matches;
use super::rollout::{self, Scale};
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};
use super::{
    Caches, Expectations, controller_ref, is_deleting, name_of, now_seconds, owner_ref, parse_time,
    uid_of,
};

pub const REVISION: &str = "deployment.kubernetes.io/revision";

pub struct DeploymentController {
    api: LocalApi,
    caches: Caches,
    expectations: Expectations,
}

pub fn start(tasks: &mut JoinSet<()>, api: LocalApi, caches: &Caches) {
    let queue = WorkQueue::new();
    super::feed(
        tasks,
        &queue,
        &caches.deployments,
        vec![
            (caches.deployments.clone(), super::same_key as super::Mapper),
            (caches.replicasets.clone(), replicaset_to_deployment),
        ],
        caches,
    );
    let controller = DeploymentController {
        api,
        caches: caches.clone(),
        expectations: Expectations::default(),
    };
    super::spawn_workers(tasks, controller, &queue, 2);
}

fn replicaset_to_deployment(change: &super::cache::Change, _: &Caches) -> Vec<String> {
    super::controller_key(change, "Deployment")
}

pub fn revision_of(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn scale_of(rs: &Value) -> Scale {
    Scale {
        replicas: rs["spec"]["replicas"].as_i64().unwrap_or(0),
        available: rs["status"]["availableReplicas"].as_i64().unwrap_or(0),
    }
}

fn status_count(rs: &Value, field: &str) -> i64 {
    rs["status"][field].as_i64().unwrap_or(0)
}

fn condition<'a>(d: &'a Value, kind: &str) -> Option<&'a Value> {
    d.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind)
}

impl DeploymentController {
    fn rs_path(&self, ns: Option<&str>, name: Option<&str>) -> String {
        path(resource("apps/v1", "ReplicaSet"), ns, name, None)
    }

    /// The ReplicaSets this Deployment controls, adopting matching orphans.
    async fn claim(&self, d: &Value, ns: Option<&str>) -> Result<Vec<Arc<Value>>, ReconcileError> {
        let uid = uid_of(d);
        let mut owned = Vec::new();
        for rs in self.caches.replicasets.list(ns) {
            let matches = selector_matches(&d["spec"]["selector"], &rs["metadata"]["labels"]);
            match controller_ref(&rs) {
                Some(o) if o["uid"] == uid => owned.push(rs),
                None if matches && !is_deleting(&rs) => {
                    let mut refs: Vec<Value> = rs["metadata"]["ownerReferences"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    refs.push(owner_ref(d));
                    let patch = json!({"metadata": {"ownerReferences": refs,
                        "resourceVersion": rs["metadata"]["resourceVersion"]}});
                    match self
                        .api
                        .merge_patch(&self.rs_path(ns, Some(name_of(&rs))), &patch)
                        .await
                    {
                        Ok(adopted) => owned.push(Arc::new(adopted)),
                        Err(e) if e.is_not_found() || e.is_conflict() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => {}
            }
        }
        owned.sort_by_key(|rs| {
            (
                revision_of(rs),
                rs["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        });
        Ok(owned)
    }

    async fn create_rs(
        &self,
        d: &Value,
        ns: Option<&str>,
        revision: i64,
        replicas: i64,
    ) -> Result<Value, ReconcileError> {
        let template = &d["spec"]["template"];
        let hash = rollout::template_hash(template);
        let mut t = template.clone();
        t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let mut labels = t["metadata"]["labels"].clone();
        labels["pod-template-hash"] = json!(hash);
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{}-{hash}", name_of(d)),
                "namespace": ns,
                "labels": labels,
                "annotations": {
                    REVISION: revision.to_string(),
                    "deployment.kubernetes.io/desired-replicas": d["spec"]["replicas"].as_i64().unwrap_or(1).to_string(),
                },
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {"replicas": replicas, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                "selector": selector, "template": t},
        });
        let created = self.api.create(&self.rs_path(ns, None), &rs).await?;
        let message = format!("Scaled up replica set {} to {replicas}", name_of(&created));
        self.api
            .event(d, "Normal", "ScalingReplicaSet", &message)
            .await;
        Ok(created)
    }

    async fn scale(&self, d: &Value, rs: &Value, replicas: i64) -> Result<(), ReconcileError> {
        let ns = rs["metadata"]["namespace"].as_str();
        let patch = json!({"metadata": {"resourceVersion": rs["metadata"]["resourceVersion"],
                "annotations": {"deployment.kubernetes.io/desired-replicas": d["spec"]["replicas"].as_i64().unwrap_or(1).to_string()}},
            "spec": {"replicas": replicas, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0)}});
        self.api
            .merge_patch(&self.rs_path(ns, Some(name_of(rs))), &patch)
            .await?;
        let old = rs["spec"]["replicas"].as_i64().unwrap_or(0);
        let verb = if replicas > old { "up" } else { "down" };
        let message = format!(
            "Scaled {verb} replica set {} from {old} to {replicas}",
            name_of(rs)
        );
        self.api
            .event(d, "Normal", "ScalingReplicaSet", &message)
            .await;
        Ok(())
    }

    /// One step of the rollout; returns whether anything was written.
    async fn roll(
        &self,
        d: &Value,
        new: &Value,
        olds: &[Arc<Value>],
    ) -> Result<bool, ReconcileError> {
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let strategy = &d["spec"]["strategy"];
        let old_scales: Vec<Scale> = olds.iter().map(|rs| scale_of(rs)).collect();
        let new_scale = scale_of(new);
        let min_ready_changed = new["spec"]["minReadySeconds"].as_i64().unwrap_or(0)
            != d["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
        if strategy["type"] == "Recreate" {
            let mut wrote = false;
            for rs in olds.iter().filter(|rs| scale_of(rs).replicas > 0) {
                self.scale(d, rs, 0).await?;
                wrote = true;
            }
            if wrote || olds.iter().any(|rs| status_count(rs, "replicas") > 0) {
                return Ok(wrote);
            }
            if new_scale.replicas != replicas || min_ready_changed {
                self.scale(d, new, replicas).await?;
                return Ok(true);
            }
            return Ok(false);
        }
        let (surge, unavailable) = rollout::surge_and_unavailable(strategy, replicas)
            .map_err(|e| ReconcileError::Invalid(format!("spec.strategy.rollingUpdate.{e}")))?;
        let target = rollout::new_replicas(replicas, surge, new_scale, &old_scales);
        if target != new_scale.replicas || min_ready_changed {
            self.scale(d, new, target).await?;
            return Ok(true);
        }
        let targets = rollout::old_replicas(replicas, unavailable, new_scale, &old_scales);
        let mut wrote = false;
        for (rs, t) in olds.iter().zip(targets) {
            if t != scale_of(rs).replicas {
                self.scale(d, rs, t).await?;
                wrote = true;
            }
        }
        Ok(wrote)
    }

    /// Deletes the oldest empty ReplicaSets beyond `revisionHistoryLimit`.
    async fn clean_history(&self, d: &Value, olds: &[Arc<Value>]) -> Result<(), ReconcileError> {
        let limit = d["spec"]["revisionHistoryLimit"]
            .as_i64()
            .unwrap_or(10)
            .max(0) as usize;
        let empty: Vec<&Arc<Value>> = olds
            .iter()
            .filter(|rs| {
                scale_of(rs).replicas == 0 && status_count(rs, "replicas") == 0 && !is_deleting(rs)
            })
            .collect();
        if empty.len() > limit {
            for rs in &empty[..empty.len() - limit] {
                let ns = rs["metadata"]["namespace"].as_str();
                self.api
                    .delete(&self.rs_path(ns, Some(name_of(rs))), "Background")
                    .await?;
            }
        }
        Ok(())
    }

    async fn write_status(
        &self,
        d: &Value,
        new: Option<&Value>,
        owned: &[Arc<Value>],
        progressed: bool,
    ) -> Result<Action, ReconcileError> {
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let sum = |f: &str| owned.iter().map(|rs| status_count(rs, f)).sum::<i64>();
        let total = sum("replicas");
        let available = sum("availableReplicas");
        let updated = new.map(|rs| status_count(rs, "replicas")).unwrap_or(0);
        let (_, max_unavailable) = if d["spec"]["strategy"]["type"] == "Recreate" {
            (0, 0)
        } else {
            rollout::surge_and_unavailable(&d["spec"]["strategy"], replicas).unwrap_or((0, 0))
        };
        let now = crate::cluster::api::write_now();
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": total, "updatedReplicas": updated,
            "readyReplicas": sum("readyReplicas"), "availableReplicas": available,
            "unavailableReplicas": (total - available).max(0),
        });
        let keep = |kind: &str, state: &str, reason: &str, message: String, touch: bool| {
            let old = condition(d, kind);
            let same = old.is_some_and(|c| c["status"] == state && c["reason"] == reason);
            let transition = if same {
                old.map(|c| c["lastTransitionTime"].clone())
                    .unwrap_or(json!(now))
            } else {
                json!(now)
            };
            let update = if same && !touch {
                old.map(|c| c["lastUpdateTime"].clone())
                    .unwrap_or(json!(now))
            } else {
                json!(now)
            };
            json!({"type": kind, "status": state, "reason": reason, "message": message,
                "lastUpdateTime": update, "lastTransitionTime": transition})
        };
        let available_cond = if available >= replicas - max_unavailable {
            keep(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                false,
            )
        } else {
            keep(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                false,
            )
        };
        let rs_name = new.map(name_of).unwrap_or("");
        let complete = new.is_some()
            && updated == replicas
            && available >= replicas
            && total == replicas
            && new.is_some_and(|rs| scale_of(rs).replicas == replicas);
        let deadline = d["spec"]["progressDeadlineSeconds"]
            .as_f64()
            .unwrap_or(600.0);
        let old_progress = condition(d, "Progressing");
        let counts_changed = [
            "replicas",
            "updatedReplicas",
            "availableReplicas",
            "readyReplicas",
        ]
        .iter()
        .any(|k| d["status"][*k].as_i64().unwrap_or(0) != status[*k].as_i64().unwrap_or(0));
        let paused = d["spec"]["paused"].as_bool() == Some(true);
        let mut requeue = Action::await_change();
        let progressing = if paused {
            keep(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                false,
            )
        } else if complete {
            keep(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                false,
            )
        } else if progressed
            || counts_changed
            || old_progress.is_none()
            || old_progress.is_some_and(|c| {
                c["reason"] == "DeploymentPaused" || c["reason"] == "NewReplicaSetAvailable"
            })
        {
            requeue = Action::requeue(Duration::from_secs_f64(deadline + 0.5));
            keep(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
                true,
            )
        } else {
            let since = old_progress
                .and_then(|c| parse_time(&c["lastUpdateTime"]))
                .unwrap_or_else(now_seconds);
            let left = since + deadline - now_seconds();
            if left <= 0.0
                || old_progress.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded")
            {
                keep(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                    false,
                )
            } else {
                requeue = Action::requeue(Duration::from_secs_f64(left + 0.5));
                old_progress.cloned().unwrap_or(json!(null))
            }
        };
        status["conditions"] = json!([available_cond, progressing.clone()]);
        let differs = |k: &str| d["status"][k] != status[k];
        let changed = [
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ]
        .iter()
        .any(|k| differs(k))
            || strip_times(&d["status"]["conditions"]) != strip_times(&status["conditions"])
            || progressing["lastUpdateTime"]
                != old_progress
                    .map(|c| c["lastUpdateTime"].clone())
                    .unwrap_or(Value::Null);
        if changed {
            let ns = d["metadata"]["namespace"].as_str();
            let p = path(
                resource("apps/v1", "Deployment"),
                ns,
                Some(name_of(d)),
                Some("status"),
            );
            match self.api.merge_patch(&p, &json!({"status": status})).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(requeue)
    }
}

fn strip_times(conditions: &Value) -> Value {
    let mut c = conditions.clone();
    for x in c.as_array_mut().into_iter().flatten() {
        if let Some(m) = x.as_object_mut() {
            m.remove("lastUpdateTime");
            m.remove("lastTransitionTime");
        }
    }
    c
}

#[async_trait::async_trait]
impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(d) = self.caches.deployments.get(key) else {
            return Ok(Action::await_change());
        };
        if is_deleting(&d) {
            return Ok(Action::await_change());
        }
        if !self.expectations.satisfied(key, &self.caches.replicasets) {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        let (ns, _) = split_key(key);
        let owned = self.claim(&d, ns).await?;
        let template = &d["spec"]["template"];
        let new = owned
            .iter()
            .find(|rs| rollout::same_template(&rs["spec"]["template"], template))
            .cloned();
        let olds: Vec<Arc<Value>> = owned
            .iter()
            .filter(|rs| new.as_ref().is_none_or(|n| uid_of(n) != uid_of(rs)))
            .cloned()
            .collect();
        let max_old = olds.iter().map(|rs| revision_of(rs)).max().unwrap_or(0);
        let paused = d["spec"]["paused"].as_bool() == Some(true);
        let mut progressed = false;
        let mut new = new;
        if !paused {
            match &new {
                None => {
                    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                    let initial = if d["spec"]["strategy"]["type"] == "Recreate" {
                        0
                    } else {
                        let (surge, _) =
                            rollout::surge_and_unavailable(&d["spec"]["strategy"], replicas)
                                .map_err(|e| {
                                    ReconcileError::Invalid(format!(
                                        "spec.strategy.rollingUpdate.{e}"
                                    ))
                                })?;
                        let olds: Vec<Scale> = olds.iter().map(|rs| scale_of(rs)).collect();
                        rollout::new_replicas(
                            replicas,
                            surge,
                            Scale {
                                replicas: 0,
                                available: 0,
                            },
                            &olds,
                        )
                    };
                    let created = self.create_rs(&d, ns, max_old + 1, initial).await?;
                    self.expectations
                        .expect(key, super::max_revision([&created]), Vec::new());
                    new = Some(Arc::new(created));
                    progressed = true;
                }
                Some(rs) if revision_of(rs) <= max_old => {
                    // A rollback to an older template: it becomes the newest revision.
                    let mut annotations = json!({REVISION: (max_old + 1).to_string()});
                    let history: Vec<String> =
                        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"]
                            .as_str()
                            .map(|s| vec![s.to_string()])
                            .unwrap_or_default();
                    let mut h = history;
                    h.push(revision_of(rs).to_string());
                    annotations["deployment.kubernetes.io/revision-history"] = json!(h.join(","));
                    let patch = json!({"metadata": {"annotations": annotations, "resourceVersion": rs["metadata"]["resourceVersion"]}});
                    let updated = self
                        .api
                        .merge_patch(&self.rs_path(ns, Some(name_of(rs))), &patch)
                        .await?;
                    new = Some(Arc::new(updated));
                    progressed = true;
                }
                Some(rs) => {
                    progressed = self.roll(&d, rs, &olds).await?;
                }
            }
            let revision = new.as_ref().map(|rs| revision_of(rs)).unwrap_or(0);
            let current = d
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(REVISION))
                .and_then(Value::as_str);
            if revision > 0 && current != Some(revision.to_string().as_str()) {
                let p = path(
                    resource("apps/v1", "Deployment"),
                    ns,
                    Some(name_of(&d)),
                    None,
                );
                let patch = json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
                self.api.merge_patch(&p, &patch).await?;
            }
            self.clean_history(&d, &olds).await?;
        }
        let all: Vec<Arc<Value>> = self
            .caches
            .replicasets
            .list(ns)
            .into_iter()
            .filter(|rs| controller_ref(rs).is_some_and(|o| o["uid"] == uid_of(&d)))
            .collect();
        let new_now = new.as_ref().and_then(|n| {
            all.iter()
                .find(|rs| uid_of(rs) == uid_of(n))
                .map(|rs| (**rs).clone())
        });
        self.write_status(&d, new_now.as_ref().or(new.as_deref()), &all, progressed)
            .await
    }
}
