//! Node lifecycle: a node whose Lease has not been renewed within the grace period gets
//! `Ready=Unknown` and the `node.kubernetes.io/unreachable:NoExecute` taint; pods on a node
//! with a NoExecute taint they do not tolerate are evicted (deleted) once their
//! `tolerationSeconds` ran out (pods without a toleration of their own get the default),
//! so their controllers replace them elsewhere. A renewed Lease lifts both again.
//!
//! Like Kubernetes' disruption modes, the controller holds back when the fault is more
//! likely the master's than the nodes': while more than `unhealthy_threshold` of the nodes
//! are unreachable at once, or the API server refused work for lack of room (429s, connections
//! at a cap) within the grace period, no node is tainted and no pod evicted; a
//! `NodeEvictionPaused` Event and the `berth_node_eviction_paused` metric say so, and
//! eviction resumes once the condition clears. After a (re)start every node gets a full grace
//! period before its Lease is judged.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::cache::Change;
use super::client::{LocalApi, path, resource};
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};
use super::taints::{Taint, taints_of, tolerations_of};
use super::{Caches, ControlOptions, is_deleting, name_of, now_seconds, parse_time, uid_of};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Why the Ready condition is Unknown when this controller set it.
const STALE_REASON: &str = "NodeStatusUnknown";

pub struct NodeLifecycle {
    api: LocalApi,
    caches: Caches,
    options: ControlOptions,
    /// When the controller started (seconds): no Lease is judged before a grace period.
    started: f64,
    /// Why eviction is paused now, if it is (the last reason announced).
    paused: Mutex<Option<String>>,
}

pub fn start(tasks: &mut JoinSet<()>, api: LocalApi, caches: &Caches, options: ControlOptions) {
    let queue = WorkQueue::new();
    super::feed(
        tasks,
        &queue,
        &caches.nodes,
        vec![
            (caches.nodes.clone(), super::same_key as super::Mapper),
            (caches.leases.clone(), lease_to_node),
            (caches.pods.clone(), pod_to_tainted_node),
        ],
        caches,
    );
    let controller = NodeLifecycle {
        api,
        caches: caches.clone(),
        options,
        started: now_seconds(),
        paused: Mutex::new(None),
    };
    super::spawn_workers(tasks, controller, &queue, 2);
}

fn lease_to_node(change: &Change, _: &Caches) -> Vec<String> {
    match change.key.split_once('/') {
        Some(("kube-node-lease", name)) => vec![name.to_string()],
        _ => Vec::new(),
    }
}

/// Pods arriving on a node with a NoExecute taint start their eviction clock.
fn pod_to_tainted_node(change: &Change, caches: &Caches) -> Vec<String> {
    let Some(node) = change
        .new
        .as_ref()
        .and_then(|p| p.pointer("/spec/nodeName").and_then(Value::as_str))
        .filter(|n| !n.is_empty())
    else {
        return Vec::new();
    };
    let tainted = caches
        .nodes
        .get(node)
        .is_some_and(|n| taints_of(&n).iter().any(|t| t.effect == "NoExecute"));
    if tainted {
        vec![node.to_string()]
    } else {
        Vec::new()
    }
}

/// Seconds a pod may stay on a node with `taint` from when the taint was added: `None` for
/// ever, `Some(0)` not at all.
pub fn toleration_seconds(pod: &Value, taint: &Taint, default: f64) -> Option<f64> {
    let tolerations = tolerations_of(pod);
    let matching: Vec<_> = tolerations.iter().filter(|t| t.tolerates(taint)).collect();
    if matching.is_empty() {
        // Kubernetes adds a default toleration for these two taints to every pod.
        if taint.key == UNREACHABLE || taint.key == "node.kubernetes.io/not-ready" {
            return Some(default);
        }
        return Some(0.0);
    }
    if matching.iter().any(|t| t.seconds.is_none()) {
        return None;
    }
    matching
        .iter()
        .filter_map(|t| t.seconds)
        .min()
        .map(|s| s.max(0) as f64)
}

/// Why eviction should pause: more than `threshold` of `total` nodes unreachable at once,
/// or the master overloaded. `None`: evict as usual.
pub fn pause_reason(
    unreachable: usize,
    total: usize,
    threshold: f64,
    overloaded: bool,
) -> Option<String> {
    if overloaded {
        return Some(
            "the API server refused requests or connections for lack of room within the grace period, so lapsed Leases may be its fault".into(),
        );
    }
    if total > 0 && unreachable as f64 > threshold * total as f64 {
        return Some(format!(
            "{unreachable} of {total} nodes are unreachable at once (more than {:.0}%), which points at the master or the network rather than the nodes",
            threshold * 100.0
        ));
    }
    None
}

impl NodeLifecycle {
    /// When the node's Lease was last renewed, but never before the controller started.
    fn renewed_at(&self, node: &Value) -> f64 {
        let lease = self
            .caches
            .leases
            .get(&format!("kube-node-lease/{}", name_of(node)));
        lease
            .and_then(|l| parse_time(&l["spec"]["renewTime"]))
            .or_else(|| parse_time(&node["metadata"]["creationTimestamp"]))
            .unwrap_or(0.0)
            .max(self.started)
    }

    /// Whether eviction is paused now; announces a change with an Event on `node`, a log
    /// line and the metric.
    async fn eviction_paused(&self, node: &Value) -> bool {
        let grace = self.options.node_grace.as_secs_f64();
        let now = now_seconds();
        let nodes = self.caches.nodes.list(None);
        let unreachable = nodes
            .iter()
            .filter(|n| self.renewed_at(n) + grace <= now)
            .count();
        let state = self.api.state();
        let overloaded = state.inflight.overload.within(self.options.node_grace);
        let reason = pause_reason(
            unreachable,
            nodes.len(),
            self.options.unhealthy_threshold,
            overloaded,
        );
        state
            .metrics
            .eviction_paused
            .store(i64::from(reason.is_some()), Ordering::Relaxed);
        let changed = {
            let mut paused = self.paused.lock().expect("pause lock");
            let changed = *paused != reason;
            paused.clone_from(&reason);
            changed
        };
        match (&reason, changed) {
            (Some(why), true) => {
                tracing::warn!(reason = %why, "node eviction paused");
                self.api
                    .event(
                        node,
                        "Warning",
                        "NodeEvictionPaused",
                        &format!("Not tainting or evicting: {why}"),
                    )
                    .await;
            }
            (None, true) => tracing::info!("node eviction resumed"),
            _ => {}
        }
        reason.is_some()
    }

    async fn mark_unreachable(&self, node: &Value) -> Result<(), ReconcileError> {
        let nodes = resource("v1", "Node");
        let name = name_of(node);
        let now = crate::cluster::api::write_now();
        if !taints_of(node).iter().any(|t| t.key == UNREACHABLE) {
            let mut taints: Vec<Value> = node["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            taints.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now}));
            let patch = json!({"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"taints": taints}});
            self.api
                .merge_patch(&path(nodes, None, Some(name), None), &patch)
                .await?;
            tracing::info!(
                node = name,
                "node unreachable: its Lease was not renewed in time"
            );
            self.api
                .event(
                    node,
                    "Normal",
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
        }
        let ready_unknown = ready_condition(node).is_some_and(|c| c["status"] == "Unknown");
        if !ready_unknown {
            let conditions = with_ready(
                node,
                json!({"type": "Ready", "status": "Unknown", "reason": STALE_REASON,
                "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": now, "lastTransitionTime": now}),
            );
            let patch = json!({"status": {"conditions": conditions}});
            self.api
                .merge_patch(&path(nodes, None, Some(name), Some("status")), &patch)
                .await?;
        }
        Ok(())
    }

    async fn mark_reachable(&self, node: &Value) -> Result<(), ReconcileError> {
        let nodes = resource("v1", "Node");
        let name = name_of(node);
        if taints_of(node).iter().any(|t| t.key == UNREACHABLE) {
            let taints: Vec<Value> = node["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["key"] != UNREACHABLE)
                .cloned()
                .collect();
            let patch = json!({"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"taints": taints}});
            self.api
                .merge_patch(&path(nodes, None, Some(name), None), &patch)
                .await?;
            tracing::info!(node = name, "node reachable again: its Lease is renewed");
        }
        // Only undo what this controller did; the agent owns Ready otherwise.
        if ready_condition(node).is_some_and(|c| c["reason"] == STALE_REASON) {
            let now = crate::cluster::api::write_now();
            let conditions = with_ready(
                node,
                json!({"type": "Ready", "status": "True", "reason": "NodeLeaseRenewed",
                "message": "The node's agent renews its Lease again.", "lastHeartbeatTime": now, "lastTransitionTime": now}),
            );
            let patch = json!({"status": {"conditions": conditions}});
            self.api
                .merge_patch(&path(nodes, None, Some(name), Some("status")), &patch)
                .await?;
        }
        Ok(())
    }

    /// Deletes pods whose time on the node's NoExecute taints ran out; returns when the next
    /// one will.
    async fn evict(&self, node: &Value) -> Result<Action, ReconcileError> {
        let taints: Vec<(Taint, f64)> = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["effect"] == "NoExecute")
            .map(|t| {
                let taint = Taint {
                    key: t["key"].as_str().unwrap_or("").into(),
                    value: t["value"].as_str().unwrap_or("").into(),
                    effect: "NoExecute".into(),
                };
                (
                    taint,
                    parse_time(&t["timeAdded"]).unwrap_or_else(now_seconds),
                )
            })
            .collect();
        if taints.is_empty() {
            return Ok(Action::await_change());
        }
        let name = name_of(node);
        let now = now_seconds();
        let default = self.options.default_toleration.as_secs_f64();
        let mut next = Action::await_change();
        let pods = resource("v1", "Pod");
        // No agent answers for an unreachable node, so nothing would finish a graceful
        // deletion: its pods go at once, and the agent removes their containers if it returns.
        let grace = node_unreachable(node).then_some(0);
        for pod in self.caches.pods.list(None) {
            if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(name)
                || is_deleting(&pod)
            {
                continue;
            }
            let deadline = taints
                .iter()
                .filter_map(|(t, added)| toleration_seconds(&pod, t, default).map(|s| added + s))
                .fold(f64::INFINITY, f64::min);
            if deadline <= now {
                let ns = pod["metadata"]["namespace"].as_str();
                self.api
                    .delete_uid_with_grace(
                        &path(pods, ns, Some(name_of(&pod)), None),
                        uid_of(&pod),
                        grace,
                    )
                    .await?;
                tracing::info!(
                    node = name,
                    pod = name_of(&pod),
                    "evicted: the node is unreachable"
                );
                self.api
                    .event(
                        &pod,
                        "Normal",
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {}", name_of(&pod)),
                    )
                    .await;
            } else if deadline.is_finite() {
                next = next.min(Action::requeue(Duration::from_secs_f64(
                    deadline - now + 0.05,
                )));
            }
        }
        Ok(next)
    }
}

fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready")
}

fn with_ready(node: &Value, ready: Value) -> Vec<Value> {
    let mut conditions: Vec<Value> = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c["type"] != "Ready");
    conditions.push(ready);
    conditions
}

#[async_trait::async_trait]
impl Reconciler for NodeLifecycle {
    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(node) = self.caches.nodes.get(key) else {
            return Ok(Action::await_change());
        };
        let grace = self.options.node_grace.as_secs_f64();
        let stale_in = self.renewed_at(&node) + grace - now_seconds();
        let stale = stale_in <= 0.0;
        let tainted = taints_of(&node).iter().any(|t| t.key == UNREACHABLE);
        let was_paused = self.paused.lock().expect("pause lock").is_some();
        let paused = (stale || tainted || was_paused) && self.eviction_paused(&node).await;
        // While paused, look again soon: the pause ends when the nodes return or the load
        // passes.
        let soon = Action::requeue(Duration::from_secs(1));
        if stale && paused {
            return Ok(soon);
        }
        let action = if stale {
            self.mark_unreachable(&node).await?;
            Action::await_change()
        } else {
            self.mark_reachable(&node).await?;
            Action::requeue(Duration::from_secs_f64(stale_in + 0.05))
        };
        if paused {
            return Ok(action.min(soon));
        }
        Ok(action.min(self.evict(&node).await?))
    }
}

/// Whether the node's Ready condition is anything but True (its agent is not reporting).
fn node_unreachable(node: &Value) -> bool {
    ready_condition(node).is_none_or(|c| c["status"] != "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Taint {
        Taint {
            key: UNREACHABLE.into(),
            value: String::new(),
            effect: "NoExecute".into(),
        }
    }

    #[test]
    fn pods_without_a_toleration_get_the_default_time() {
        let pod = json!({"spec": {}});
        assert_eq!(toleration_seconds(&pod, &unreachable(), 10.0), Some(10.0));
        let other = Taint {
            key: "dedicated".into(),
            ..unreachable()
        };
        assert_eq!(toleration_seconds(&pod, &other, 10.0), Some(0.0));
    }

    #[test]
    fn eviction_pauses_when_most_nodes_are_unreachable_or_the_master_is_overloaded() {
        assert_eq!(pause_reason(1, 3, 0.55, false), None);
        assert_eq!(pause_reason(0, 0, 0.55, false), None);
        let most = pause_reason(2, 3, 0.55, false).expect("2 of 3 is over 55%");
        assert!(most.contains("2 of 3 nodes"), "{most}");
        assert!(
            pause_reason(1, 1, 0.55, false).is_some(),
            "a lone node: the master may be cut off"
        );
        let busy = pause_reason(0, 3, 0.55, true).expect("overloaded");
        assert!(busy.contains("refused"), "{busy}");
    }

    #[test]
    fn tolerations_set_their_own_time_or_forever() {
        let pod = json!({"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3}]}});
        assert_eq!(toleration_seconds(&pod, &unreachable(), 10.0), Some(3.0));
        let pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(toleration_seconds(&pod, &unreachable(), 10.0), None);
    }
}
