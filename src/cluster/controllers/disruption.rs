//! The disruption controller: the status of every PodDisruptionBudget, which `pods/eviction`
//! (`crate::cluster::api::eviction`) spends. As in Kubernetes:
//!
//! - the budget's pods are those of its namespace its selector selects (none without one);
//! - `expectedPods` is their number for an integer `minAvailable`, else (a percentage, or
//!   `maxUnavailable`) the scale of their controllers: the replicas of each Deployment,
//!   ReplicaSet, StatefulSet or ReplicationController owning one, counted once each;
//! - `desiredHealthy` is `minAvailable` (a percentage of the expected count rounded up), or
//!   the expected count less `maxUnavailable` (a percentage rounded up);
//! - `currentHealthy` counts the Ready pods not being deleted and not just evicted (in
//!   `disruptedPods`: an eviction took a disruption for them, and their deletion has not
//!   reached the cache yet; an entry lapses after two minutes if the pod never goes);
//! - `disruptionsAllowed` is `currentHealthy - desiredHealthy`, at least 0, and 0 while no
//!   pod is expected; the `DisruptionAllowed` condition says the same.
//!
//! A budget whose expected count cannot be known (a pod without a controller whose scale
//! berth can read) allows no disruption (`SyncFailed`), with a Warning Event saying why.
//! The status is written with the budget's resourceVersion, so it never overwrites a
//! disruption an eviction took meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::task::JoinSet;

use super::cache::{Change, key_of, split_key};
use super::client::{LocalApi, path, resource};
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};
use super::{Caches, controller_ref, is_deleting, name_of};
use crate::cluster::api::eviction::{DISRUPTION_ALLOWED, is_ready, set_disruption_condition};
use crate::cluster::api::selectors::LabelSelector;

/// How long an eviction's entry in `disruptedPods` keeps its pod from counting as healthy
/// when the pod is not seen going (Kubernetes' `DeletionTimeout`).
const DISRUPTION_TIMEOUT: Duration = Duration::from_secs(120);

pub struct DisruptionController {
    api: LocalApi,
    caches: Caches,
}

pub fn start(tasks: &mut JoinSet<()>, api: LocalApi, caches: &Caches) {
    let queue = WorkQueue::new();
    super::feed(
        tasks,
        &queue,
        &caches.budgets,
        vec![
            (caches.budgets.clone(), super::same_key as super::Mapper),
            (caches.pods.clone(), budgets_of_pod),
            (caches.replicasets.clone(), budgets_of_namespace),
            (caches.deployments.clone(), budgets_of_namespace),
        ],
        caches,
    );
    let controller = DisruptionController {
        api,
        caches: caches.clone(),
    };
    super::spawn_workers(tasks, controller, &queue, 2);
}

/// The pods a budget counts: those of its namespace its selector selects.
fn selects(budget: &Value, pod: &Value) -> bool {
    LabelSelector::from_api(&budget["spec"]["selector"]).is_some_and(|s| s.matches(pod))
}

/// The budgets that select the changed pod, before or after the change.
fn budgets_of_pod(change: &Change, caches: &Caches) -> Vec<String> {
    let pods: Vec<&Value> = [&change.old, &change.new]
        .into_iter()
        .flatten()
        .map(|p| p.as_ref())
        .collect();
    let Some(ns) = pods
        .first()
        .and_then(|p| p["metadata"]["namespace"].as_str())
    else {
        return Vec::new();
    };
    caches
        .budgets
        .list(Some(ns))
        .iter()
        .filter(|b| pods.iter().any(|p| selects(b, p)))
        .map(|b| key_of(b))
        .collect()
}

/// A workload's scale is some budgets' expected count: every budget of its namespace looks
/// again (there are few budgets, and a scale change is rare).
fn budgets_of_namespace(change: &Change, caches: &Caches) -> Vec<String> {
    let ns = [&change.old, &change.new]
        .into_iter()
        .flatten()
        .find_map(|o| o["metadata"]["namespace"].as_str().map(str::to_string));
    caches
        .budgets
        .list(ns.as_deref())
        .iter()
        .map(|b| key_of(b))
        .collect()
}

/// Whether the budget's expected count is its controllers' scale rather than its pods.
fn counts_by_scale(spec: &PodDisruptionBudgetSpec) -> bool {
    spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)))
}

/// `value` of `total`: an integer as is, a percentage rounded up (Kubernetes'
/// `GetScaledValueFromIntOrPercent` with rounding up).
fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    format!("invalid value for IntOrString: {s:?} is not a percentage")
                })?;
            // Rounded up; both are at least 0.
            Ok(((percent * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// `(expectedPods, desiredHealthy)` of a budget matching `matched` pods whose controllers'
/// scale is `scale` (read only when [`counts_by_scale`]).
fn expectation(
    spec: &PodDisruptionBudgetSpec,
    matched: i32,
    scale: Option<i32>,
) -> Result<(i32, i32), String> {
    let scale = || scale.ok_or_else(|| "the controllers' scale is unknown".to_string());
    match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => {
            let expected = scale()?;
            Ok((expected, (expected - scaled(max, expected)?).max(0)))
        }
        (None, Some(IntOrString::Int(min))) => Ok((matched, *min)),
        (None, Some(min)) => {
            let expected = scale()?;
            Ok((expected, scaled(min, expected)?))
        }
        (None, None) => Ok((0, 0)),
    }
}

fn seconds(t: &Time) -> i64 {
    t.0.as_second()
}

/// The entries of `disruptedPods` still in force: pods evicted less than
/// [`DISRUPTION_TIMEOUT`] ago that the budget still selects and that are not seen going;
/// and when the soonest of them lapses.
fn still_disrupted(
    old: Option<&BTreeMap<String, Time>>,
    pods: &[Arc<Value>],
    now: i64,
) -> (BTreeMap<String, Time>, Option<i64>) {
    let mut kept = BTreeMap::new();
    let mut lapses = None::<i64>;
    let timeout = DISRUPTION_TIMEOUT.as_secs() as i64;
    for pod in pods.iter().filter(|p| !is_deleting(p)) {
        let Some(at) = old.and_then(|o| o.get(name_of(pod))) else {
            continue;
        };
        let ends = seconds(at) + timeout;
        if ends <= now {
            tracing::warn!(pod = name_of(pod), "an evicted pod was not deleted in time");
            continue;
        }
        lapses = Some(lapses.map_or(ends, |l| l.min(ends)));
        kept.insert(name_of(pod).to_string(), at.clone());
    }
    (kept, lapses)
}

/// Ready pods not being deleted and not just evicted.
fn healthy(pods: &[Arc<Value>], disrupted: &BTreeMap<String, Time>) -> i32 {
    pods.iter()
        .filter(|p| !is_deleting(p) && !disrupted.contains_key(name_of(p)) && is_ready(p))
        .count() as i32
}

impl DisruptionController {
    /// The replicas of the workloads controlling `pods`, each counted once, or why a pod has
    /// no controller whose scale is known.
    async fn scale_of(&self, ns: &str, pods: &[Arc<Value>]) -> Result<i32, String> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        for pod in pods {
            let owner = controller_ref(pod)
                .ok_or_else(|| format!("found no controller ref for pod {:?}", name_of(pod)))?;
            let uid = owner["uid"].as_str().unwrap_or("").to_string();
            if scales.contains_key(&uid) {
                continue;
            }
            let (uid, replicas) = self
                .workload_scale(ns, owner)
                .await
                .ok_or_else(|| format!("found no controllers for pod {:?}", name_of(pod)))?;
            scales.insert(uid, replicas);
        }
        Ok(scales.values().sum())
    }

    /// The uid and replicas of the workload an ownerReference names: a ReplicaSet a
    /// Deployment controls counts as that Deployment.
    async fn workload_scale(&self, ns: &str, owner: &Value) -> Option<(String, i32)> {
        let name = owner["name"].as_str()?;
        let uid = owner["uid"].as_str()?;
        let object = match owner["kind"].as_str()? {
            "ReplicaSet" => self.caches.replicasets.get(&format!("{ns}/{name}"))?,
            "Deployment" => self.caches.deployments.get(&format!("{ns}/{name}"))?,
            kind @ ("StatefulSet" | "ReplicationController") => {
                let api_version = owner["apiVersion"].as_str()?;
                let r = crate::cluster::api::resources::by_kind(api_version, kind)?;
                Arc::new(
                    self.api
                        .get(&path(r, Some(ns), Some(name), None))
                        .await
                        .ok()?,
                )
            }
            _ => return None,
        };
        if object["metadata"]["uid"] != uid {
            return None;
        }
        if object["kind"] == "ReplicaSet"
            && let Some(deployment) = controller_ref(&object).filter(|o| o["kind"] == "Deployment")
        {
            return Box::pin(self.workload_scale(ns, deployment)).await;
        }
        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
        Some((uid.to_string(), replicas))
    }
}

#[async_trait::async_trait]
impl Reconciler for DisruptionController {
    fn name(&self) -> &'static str {
        "disruption"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(budget) = self.caches.budgets.get(key) else {
            return Ok(Action::await_change());
        };
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let spec: PodDisruptionBudgetSpec =
            serde_json::from_value(budget["spec"].clone()).unwrap_or_default();
        let old: PodDisruptionBudgetStatus =
            serde_json::from_value(budget["status"].clone()).unwrap_or_default();
        let pods: Vec<Arc<Value>> = self
            .caches
            .pods
            .list(Some(ns))
            .into_iter()
            .filter(|p| selects(&budget, p))
            .collect();
        let now = Timestamp::now();
        let (disrupted, lapses) =
            still_disrupted(old.disrupted_pods.as_ref(), &pods, now.as_second());
        let scale = if counts_by_scale(&spec) {
            Some(self.scale_of(ns, &pods).await)
        } else {
            None
        };
        let counted = scale
            .transpose()
            .and_then(|scale| expectation(&spec, pods.len() as i32, scale));
        let mut status = PodDisruptionBudgetStatus {
            observed_generation: budget["metadata"]["generation"].as_i64(),
            disrupted_pods: (!disrupted.is_empty()).then(|| disrupted.clone()),
            conditions: old.conditions.clone(),
            current_healthy: Some(healthy(&pods, &disrupted)),
            ..PodDisruptionBudgetStatus::default()
        };
        let time = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
        match counted {
            Ok((expected, desired)) => {
                let current = status.current_healthy.unwrap_or(0);
                status.expected_pods = Some(expected);
                status.desired_healthy = Some(desired);
                status.disruptions_allowed = Some(if expected <= 0 {
                    0
                } else {
                    (current - desired).max(0)
                });
                set_disruption_condition(&mut status, "InsufficientPods", "", time);
            }
            Err(why) => {
                status.disruptions_allowed = Some(0);
                set_disruption_condition(&mut status, "SyncFailed", &why, time);
                let told = old
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == DISRUPTION_ALLOWED && c.message == why);
                if !told {
                    self.api
                        .event(&budget, "Warning", "CalculateExpectedPodCountFailed", &why)
                        .await;
                }
            }
        }
        if status != old {
            let mut new = (*budget).clone();
            new["status"] = serde_json::to_value(&status)
                .map_err(|e| ReconcileError::Invalid(e.to_string()))?;
            let status_path = path(
                resource("policy/v1", "PodDisruptionBudget"),
                Some(ns),
                Some(name),
                Some("status"),
            );
            match self.api.replace(&status_path, &new).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(match lapses {
            Some(at) => Action::requeue(Duration::from_secs((at - now.as_second()).max(1) as u64)),
            None => Action::await_change(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> PodDisruptionBudgetSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expected_and_desired_as_kubernetes_counts_them() {
        // An integer minAvailable counts the pods; the rest count the controllers' scale.
        let min = spec(json!({"minAvailable": 2}));
        assert!(!counts_by_scale(&min));
        assert_eq!(expectation(&min, 3, None), Ok((3, 2)));
        let max = spec(json!({"maxUnavailable": 1}));
        assert!(counts_by_scale(&max));
        assert_eq!(expectation(&max, 3, Some(4)), Ok((4, 3)));
        assert_eq!(expectation(&max, 0, Some(0)), Ok((0, 0)));
        let half = spec(json!({"minAvailable": "50%"}));
        assert_eq!(expectation(&half, 3, Some(3)), Ok((3, 2)), "1.5 rounds up");
        let quarter_off = spec(json!({"maxUnavailable": "25%"}));
        assert_eq!(
            expectation(&quarter_off, 5, Some(5)),
            Ok((5, 3)),
            "1.25 rounds up to 2"
        );
        assert!(expectation(&spec(json!({"minAvailable": "half"})), 1, Some(1)).is_err());
        assert!(expectation(&max, 2, None).is_err());
    }

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Value> {
        let mut p = json!({"metadata": {"name": name}, "status": {"conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(p)
    }

    #[test]
    fn just_evicted_pods_are_not_healthy_until_they_go_or_the_entry_lapses() {
        let pods = vec![
            pod("a", true, false),
            pod("b", true, false),
            pod("c", true, true),
        ];
        let at = |s: i64| Time(Timestamp::from_second(s).unwrap());
        let old: BTreeMap<String, Time> = [
            ("a".to_string(), at(1000)),
            ("c".to_string(), at(1000)),
            ("gone".to_string(), at(1000)),
        ]
        .into();
        let (kept, lapses) = still_disrupted(Some(&old), &pods, 1010);
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            ["a"],
            "c is going, gone is gone"
        );
        assert_eq!(lapses, Some(1120));
        assert_eq!(healthy(&pods, &kept), 1);
        let (kept, _) = still_disrupted(Some(&old), &pods, 1200);
        assert!(kept.is_empty());
        assert_eq!(healthy(&pods, &kept), 2);
        assert_eq!(healthy(&[pod("d", false, false)], &kept), 0);
    }
}
