//! The scheduler: places pods that have no node on one, through `pods/binding`.
//!
//! One task owns the scheduling state (the nodes with what is bound to them, the queue of
//! pods to place, the pods that fit nowhere), fed by the pod and node caches' changes. A pod
//! is "assumed" on its node the moment it is picked, so the next pick already sees it, and
//! the bind runs concurrently: the pods picked in one turn are bound in a few batches, each
//! one store read and one group commit, with `pods/binding`'s result per pod. A pod that fits
//! nowhere gets `PodScheduled=False` and a `FailedScheduling` event (each later attempt bumps
//! the event's count), and waits until a node or a pod changes, then for its back-off (1 s
//! doubling to 10 s), so it is never retried in a tight loop.
//!
//! The process that runs the control plane starts it beside the controllers
//! (`crate::daemons::server`), over the controllers' pod and node caches ([`start`]).

pub mod filter;
pub mod info;
pub mod score;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::info::{NodeInfo, PodInfo};
use crate::cluster::api::SharedState;
use crate::cluster::api::binding::Binding;
use crate::cluster::controllers::cache::{Cache, Change};
use crate::cluster::controllers::client::{CallError, LocalApi, path, resource};

/// Binds in flight at most at once.
const BIND_CONCURRENCY: usize = 256;
/// Pods bound together in one call: large enough to share a read and a commit, small enough
/// that several batches overlap (one being read while another waits for its fsync).
const BIND_BATCH: usize = 64;
/// Pods placed per turn before looking at new changes again.
const BATCH: usize = 512;
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Pods that fit nowhere are looked at again at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Whether this scheduler places `pod` (unbound, not being deleted, not another scheduler's).
pub fn wants(pod: &Value) -> bool {
    let spec = &pod["spec"];
    let unbound = spec["nodeName"].as_str().is_none_or(str::is_empty);
    let ours = matches!(
        spec["schedulerName"].as_str(),
        None | Some("") | Some("default-scheduler") | Some("berth")
    );
    unbound && ours && pod.pointer("/metadata/deletionTimestamp").is_none() && !is_terminal(pod)
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn bound_node(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

struct Unschedulable {
    attempts: u32,
    message: String,
}

struct BindResult {
    key: String,
    node: String,
    result: Result<(), CallError>,
}

struct Scheduler {
    api: LocalApi,
    pods: Arc<Cache>,
    nodes_cache: Arc<Cache>,
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Pods counted on a node: bound (seen in the cache) or assumed (bind in flight).
    placed: HashMap<String, (String, PodInfo)>,
    active: VecDeque<String>,
    queued: HashSet<String>,
    unschedulable: HashMap<String, Unschedulable>,
    /// Pods waiting for their back-off to end before they are tried again.
    waiting: HashMap<String, Instant>,
    in_flight: usize,
    start: usize,
    binds: mpsc::UnboundedSender<BindResult>,
}

fn retry_delay(attempts: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1 << attempts.saturating_sub(1).min(8))
        .min(RETRY_MAX)
}

impl Scheduler {
    fn upsert_node(&mut self, node: &Value) {
        let mut fresh = NodeInfo::from_json(node);
        match self.index.get(&fresh.name) {
            Some(&i) => {
                fresh.carry_usage(&self.nodes[i]);
                self.nodes[i] = fresh;
            }
            None => {
                self.index.insert(fresh.name.clone(), self.nodes.len());
                self.nodes.push(fresh);
            }
        }
    }

    fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
    }

    fn unplace(&mut self, key: &str) {
        if let Some((node, info)) = self.placed.remove(key)
            && let Some(&i) = self.index.get(&node)
        {
            self.nodes[i].account(&info, -1);
        }
    }

    fn place(&mut self, key: &str, node: &str, info: PodInfo) {
        if let Some(&i) = self.index.get(node) {
            self.nodes[i].account(&info, 1);
        }
        self.placed
            .insert(key.to_string(), (node.to_string(), info));
    }

    fn enqueue(&mut self, key: &str) {
        if self.queued.insert(key.to_string()) {
            self.active.push_back(key.to_string());
        }
    }

    /// Something changed that may let waiting pods fit: they retry after their back-off.
    fn wake_unschedulable(&mut self) {
        let now = Instant::now();
        for (key, u) in &self.unschedulable {
            self.waiting
                .entry(key.clone())
                .or_insert(now + retry_delay(u.attempts));
        }
    }

    fn on_pod(&mut self, change: Change) {
        let key = change.key;
        match change.new.as_deref() {
            None => {
                self.forget(&key);
                self.unplace(&key);
                self.wake_unschedulable();
            }
            Some(pod) => match bound_node(pod) {
                Some(node) if !is_terminal(pod) => {
                    self.forget(&key);
                    let same = self.placed.get(&key).is_some_and(|(n, _)| n == node);
                    if !same {
                        self.unplace(&key);
                        self.place(&key, node, PodInfo::from_json(key.clone(), pod));
                    }
                }
                Some(_) => {
                    self.forget(&key);
                    if self.placed.contains_key(&key) {
                        self.unplace(&key);
                        self.wake_unschedulable();
                    }
                }
                None => {
                    if !wants(pod) {
                        self.forget(&key);
                    } else if !self.placed.contains_key(&key)
                        && !self.unschedulable.contains_key(&key)
                    {
                        self.enqueue(&key);
                    }
                }
            },
        }
    }

    fn forget(&mut self, key: &str) {
        self.unschedulable.remove(key);
        self.waiting.remove(key);
        if self.queued.remove(key) {
            self.active.retain(|k| k != key);
        }
    }

    fn on_node(&mut self, change: Change) {
        match change.new.as_deref() {
            Some(node) => self.upsert_node(node),
            None => self.remove_node(&change.key),
        }
        self.wake_unschedulable();
    }

    /// Rebuilds everything from the caches (at start, and after falling behind the changes).
    fn resync(&mut self) {
        let assumed: Vec<(String, String, PodInfo)> = self
            .placed
            .iter()
            .filter(|(k, _)| self.pods.get(k).is_some_and(|p| bound_node(&p).is_none()))
            .map(|(k, (n, i))| (k.clone(), n.clone(), i.clone()))
            .collect();
        self.nodes.clear();
        self.index.clear();
        self.placed.clear();
        self.active.clear();
        self.queued.clear();
        for node in self.nodes_cache.list(None) {
            self.upsert_node(&node);
        }
        for (k, n, i) in assumed {
            self.place(&k, &n, i);
        }
        for pod in self.pods.list(None) {
            let key = crate::cluster::controllers::cache::key_of(&pod);
            self.on_pod(Change {
                key,
                old: None,
                new: Some(pod),
            });
        }
        self.wake_unschedulable();
    }

    /// Picks a node for the pod and assumes it there; returns the binding to make, if any.
    fn schedule_one(&mut self, key: String) -> Option<(String, Binding)> {
        self.queued.remove(&key);
        let pod = self.pods.get(&key)?;
        if !wants(&pod) || self.placed.contains_key(&key) {
            return None;
        }
        let info = PodInfo::from_json(key.clone(), &pod);
        self.start = self.start.wrapping_add(1);
        let start = if self.nodes.is_empty() {
            0
        } else {
            self.start % self.nodes.len()
        };
        match score::pick(&info, &self.nodes, start) {
            Ok(i) => {
                let node = self.nodes[i].name.clone();
                self.unschedulable.remove(&key);
                self.place(&key, &node, info);
                self.in_flight += 1;
                let (ns, name) = crate::cluster::controllers::cache::split_key(&key);
                let binding = Binding {
                    namespace: ns.unwrap_or("default").to_string(),
                    pod: name.to_string(),
                    node,
                };
                Some((key, binding))
            }
            Err(fit) => {
                let message = fit.message();
                let entry = self
                    .unschedulable
                    .entry(key.clone())
                    .or_insert(Unschedulable {
                        attempts: 0,
                        message: String::new(),
                    });
                entry.attempts += 1;
                // Every attempt is an event (a repeat bumps its count), so a user, or a test,
                // sees that the scheduler keeps trying; the condition changes with the reason.
                let changed = entry.message != message;
                if changed {
                    entry.message = message.clone();
                }
                let api = self.api.clone();
                tokio::spawn(async move {
                    report_unschedulable(&api, &pod, &message, changed).await;
                });
                None
            }
        }
    }

    /// Binds the pods (keyed as in the cache) in the background; each result comes back
    /// through `binds`.
    fn spawn_binds(&self, pods: Vec<(String, Binding)>) {
        let api = self.api.clone();
        let tx = self.binds.clone();
        tokio::spawn(async move {
            let (keys, bindings): (Vec<String>, Vec<Binding>) = pods.into_iter().unzip();
            let results = api.bind_many(&bindings).await;
            for ((key, b), result) in keys.into_iter().zip(bindings).zip(results) {
                let _ = tx.send(BindResult {
                    key,
                    node: b.node,
                    result,
                });
            }
        });
    }

    fn on_bind(&mut self, done: BindResult) {
        self.in_flight -= 1;
        let Err(e) = done.result else {
            return;
        };
        if e.is_conflict() {
            // Bound meanwhile (by us or another): the pod's change sets the accounting right.
            return;
        }
        tracing::debug!(pod = %done.key, node = %done.node, error = %e, "bind failed");
        self.unplace(&done.key);
        if !e.is_not_found() {
            self.waiting.insert(done.key, Instant::now() + RETRY_MIN);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.waiting.values().min().copied()
    }

    fn move_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.waiting.remove(&key);
            if let Some(p) = self.pods.get(&key)
                && wants(&p)
            {
                // Keep the attempt count so the next failure waits longer.
                self.enqueue(&key);
            }
        }
    }
}

/// Records a FailedScheduling event (one per attempt: a repeat bumps the event's count) and,
/// when the reason is new, sets `PodScheduled=False` with it first.
async fn report_unschedulable(api: &LocalApi, pod: &Value, message: &str, changed: bool) {
    if changed {
        set_unschedulable(api, pod, message).await;
    }
    api.event(pod, "Warning", "FailedScheduling", message).await;
}

/// Sets `PodScheduled=False` with the reason.
async fn set_unschedulable(api: &LocalApi, pod: &Value, message: &str) {
    let meta = &pod["metadata"];
    let (ns, name) = (
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().unwrap_or(""),
    );
    let mut conditions: Vec<Value> = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c["type"] != "PodScheduled");
    conditions.push(
        json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastTransitionTime": crate::cluster::api::write_now()}),
    );
    let patch = json!({"status": {"conditions": conditions}});
    let pods = resource("v1", "Pod");
    if let Err(e) = api
        .merge_patch(&path(pods, Some(ns), Some(name), Some("status")), &patch)
        .await
    {
        tracing::debug!(pod = name, error = %e, "cannot record PodScheduled=False");
    }
}

/// The field manager the scheduler binds as.
const FIELD_MANAGER: &str = "berth-scheduler";

/// The running scheduler; dropping it stops it.
pub struct RunningScheduler {
    _tasks: JoinSet<()>,
}

/// Starts the scheduler over `state`, reading pods and nodes from caches someone else keeps
/// fed (the control plane's, `crate::cluster::controllers::Caches`).
pub fn start(state: SharedState, pods: Arc<Cache>, nodes: Arc<Cache>) -> RunningScheduler {
    let mut tasks = JoinSet::new();
    tasks.spawn(run(LocalApi::new(state, FIELD_MANAGER), pods, nodes));
    RunningScheduler { _tasks: tasks }
}

/// Starts the scheduler with pod and node caches of its own and nothing else (for the
/// scheduler's benchmark); returns the pod cache, to watch the bindings land.
pub fn start_alone(state: SharedState) -> (RunningScheduler, Arc<Cache>) {
    let (pods, nodes) = (
        Cache::new(resource("v1", "Pod")),
        Cache::new(resource("v1", "Node")),
    );
    let mut tasks = JoinSet::new();
    for c in [&pods, &nodes] {
        tasks.spawn(c.clone().run(state.storage.clone()));
    }
    tasks.spawn(run(
        LocalApi::new(state, FIELD_MANAGER),
        pods.clone(),
        nodes,
    ));
    (RunningScheduler { _tasks: tasks }, pods)
}

/// Runs the scheduler until the task is dropped.
async fn run(api: LocalApi, pods: Arc<Cache>, nodes: Arc<Cache>) {
    let mut pod_rx = pods.subscribe();
    let mut node_rx = nodes.subscribe();
    pods.wait_synced().await;
    nodes.wait_synced().await;
    let (binds, mut bind_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        api,
        pods,
        nodes_cache: nodes,
        nodes: Vec::new(),
        index: HashMap::new(),
        placed: HashMap::new(),
        active: VecDeque::new(),
        queued: HashSet::new(),
        unschedulable: HashMap::new(),
        waiting: HashMap::new(),
        in_flight: 0,
        start: 0,
        binds,
    };
    s.resync();
    let mut next_flush = Instant::now() + FLUSH_EVERY;
    loop {
        // Take in every change already there, so picks see the latest state.
        let mut lagged = false;
        loop {
            match node_rx.try_recv() {
                Ok(c) => s.on_node(c),
                Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        loop {
            match pod_rx.try_recv() {
                Ok(c) => s.on_pod(c),
                Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        while let Ok(done) = bind_rx.try_recv() {
            s.on_bind(done);
        }
        if lagged {
            s.resync();
        }
        if Instant::now() >= next_flush {
            s.wake_unschedulable();
            next_flush = Instant::now() + FLUSH_EVERY;
        }
        s.move_due();
        let mut placed = 0;
        let mut bindings = Vec::new();
        while s.in_flight < BIND_CONCURRENCY && placed < BATCH {
            let Some(key) = s.active.pop_front() else {
                break;
            };
            bindings.extend(s.schedule_one(key));
            placed += 1;
            if bindings.len() == BIND_BATCH {
                s.spawn_binds(std::mem::take(&mut bindings));
            }
        }
        if !bindings.is_empty() {
            s.spawn_binds(bindings);
        }
        if placed > 0 {
            tokio::task::yield_now().await;
            continue;
        }
        let due = s.next_due().unwrap_or(next_flush).min(next_flush);
        tokio::select! {
            c = pod_rx.recv() => match c {
                Ok(c) => s.on_pod(c),
                Err(broadcast::error::RecvError::Lagged(_)) => s.resync(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            c = node_rx.recv() => match c {
                Ok(c) => s.on_node(c),
                Err(broadcast::error::RecvError::Lagged(_)) => s.resync(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(done) = bind_rx.recv() => s.on_bind(done),
            () = tokio::time::sleep_until(due) => {}
        }
    }
}
