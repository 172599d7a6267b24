//! The controllers that make the cluster converge, in kube-runtime's shape: reflector caches
//! fed by the store's watch ([`cache`]), de-duplicating work queues and level-triggered
//! reconcilers ([`runtime`]), writing through the API in the same process ([`client`]).
//!
//! - [`replicaset`]: pods to match `replicas`; adoption and orphaning.
//! - [`deployment`]: ReplicaSets per template, rolling updates and Recreate ([`rollout`]).
//! - [`nodes`]: node leases, the unreachable taint, and evictions.
//! - [`gc`]: ownerReferences with background, foreground and orphan propagation.
//! - [`namespace`]: a deleted namespace is emptied, then goes.
//! - [`endpoints`]: the Endpoints of every Service with a selector.
//! - [`disruption`]: the status of every PodDisruptionBudget, which evictions spend.
//! - [`loadbalancer`]: LoadBalancer Services get every Ready node as ingress.
//! - [`gitsource`]: git sync, the manifests of each GitSource kept applied (started apart).
//! - [`leader`]: with several masters, the Lease election that decides which one runs all
//!   of the above and the scheduler.
//! - [`apiservers`]: with several masters, every one of them (leader or not) in the
//!   `default/kubernetes` Endpoints, each kept there by a Lease of its own.
//!
//! [`labels`] and [`taints`] are how selectors, taints and tolerations match, for these
//! controllers and the scheduler alike. The scheduler is started beside the controllers, over
//! their caches, by the process that runs them (`crate::daemons::server`).

pub mod apiservers;
pub mod cache;
pub mod client;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod gc;
pub mod gitsource;
pub mod labels;
pub mod leader;
pub mod loadbalancer;
pub mod namespace;
pub mod nodes;
pub mod replicaset;
pub mod rollout;
pub mod runtime;
pub mod taints;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use self::cache::{Cache, Change};
use self::client::{LocalApi, resource};
use self::runtime::{Reconciler, WorkQueue};
use crate::cluster::api::SharedState;
use crate::cluster::store::Revision;

/// Settings of the control plane (`berth server` flags).
#[derive(Debug, Clone, Copy)]
pub struct ControlOptions {
    /// A node whose Lease is older than this is unreachable (Kubernetes: 40–50 s).
    pub node_grace: Duration,
    /// How long pods without their own toleration stay on an unreachable node
    /// (Kubernetes: 300 s).
    pub default_toleration: Duration,
    /// When more than this share of the nodes is unreachable at once, the master is more
    /// likely the problem than the nodes: no node is tainted for eviction (Kubernetes'
    /// `--unhealthy-zone-threshold`, 0.55).
    pub unhealthy_threshold: f64,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            node_grace: Duration::from_secs(10),
            default_toleration: Duration::from_secs(10),
            unhealthy_threshold: 0.55,
        }
    }
}

/// Every cache the controllers share.
#[derive(Clone)]
pub struct Caches {
    pub pods: Arc<Cache>,
    pub nodes: Arc<Cache>,
    pub leases: Arc<Cache>,
    pub replicasets: Arc<Cache>,
    pub deployments: Arc<Cache>,
    pub namespaces: Arc<Cache>,
    pub services: Arc<Cache>,
    pub endpoints: Arc<Cache>,
    pub endpointslices: Arc<Cache>,
    pub budgets: Arc<Cache>,
}

impl Caches {
    fn new() -> Caches {
        Caches {
            pods: Cache::new(resource("v1", "Pod")),
            nodes: Cache::new(resource("v1", "Node")),
            leases: Cache::new(resource("coordination.k8s.io/v1", "Lease")),
            replicasets: Cache::new(resource("apps/v1", "ReplicaSet")),
            deployments: Cache::new(resource("apps/v1", "Deployment")),
            namespaces: Cache::new(resource("v1", "Namespace")),
            services: Cache::new(resource("v1", "Service")),
            endpoints: Cache::new(resource("v1", "Endpoints")),
            endpointslices: Cache::new(resource("discovery.k8s.io/v1", "EndpointSlice")),
            budgets: Cache::new(resource("policy/v1", "PodDisruptionBudget")),
        }
    }

    fn all(&self) -> [&Arc<Cache>; 10] {
        [
            &self.pods,
            &self.nodes,
            &self.leases,
            &self.replicasets,
            &self.deployments,
            &self.namespaces,
            &self.services,
            &self.endpoints,
            &self.endpointslices,
            &self.budgets,
        ]
    }

    pub async fn wait_synced(&self) {
        for c in self.all() {
            c.wait_synced().await;
        }
    }
}

/// The running controllers; dropping it stops them.
pub struct ControlPlane {
    _tasks: JoinSet<()>,
    pub caches: Caches,
    /// The endpoint controller's queue: which Services it has reconciled since when (a test
    /// that a change wrote nothing waits on it first).
    pub endpoints: Arc<runtime::WorkQueue>,
}

/// Starts every controller over `state`, with the caches they share.
pub fn start(state: SharedState, options: ControlOptions) -> ControlPlane {
    let caches = Caches::new();
    let mut tasks = JoinSet::new();
    for c in caches.all() {
        tasks.spawn(c.clone().run(state.storage.clone()));
    }
    let api = |manager| LocalApi::new(state.clone(), manager);
    replicaset::start(&mut tasks, api("replicaset-controller"), &caches);
    deployment::start(&mut tasks, api("deployment-controller"), &caches);
    nodes::start(
        &mut tasks,
        api("node-lifecycle-controller"),
        &caches,
        options,
    );
    gc::start(&mut tasks, api("garbage-collector"), &caches);
    namespace::start(&mut tasks, api("namespace-controller"), &caches);
    let endpoints = endpoints::start(&mut tasks, api("endpoint-controller"), &caches);
    loadbalancer::start(&mut tasks, api("service-lb-controller"), &caches);
    disruption::start(&mut tasks, api("disruption-controller"), &caches);
    tasks.spawn(repair_claims(state.clone()));
    ControlPlane {
        _tasks: tasks,
        caches,
        endpoints,
    }
}

/// How often the address claims are checked against the Services and Nodes.
const CLAIM_REPAIR: Duration = Duration::from_secs(30);

/// Releases address claims nothing holds any more (deleted Services and Nodes, writes that
/// failed after claiming), claims stored addresses without one, and reports addresses two
/// objects hold (`crate::cluster::api::allocate::claims::repair`).
async fn repair_claims(state: SharedState) {
    use crate::cluster::api::allocate::claims;
    let mut suspects = HashMap::new();
    loop {
        tokio::time::sleep(CLAIM_REPAIR).await;
        if !state.leadership.holds() {
            continue;
        }
        match claims::repair(&state.storage, &state.config.network, &mut suspects).await {
            Ok(done) => {
                if done.released + done.claimed > 0 {
                    tracing::info!(
                        released = done.released,
                        claimed = done.claimed,
                        "repaired address claims"
                    );
                }
                for duplicate in done.duplicates {
                    tracing::warn!(%duplicate, "one address is held by two objects");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot repair the address claims"),
        }
    }
}

/// Turns a cache change into the keys to reconcile.
pub(crate) type Mapper = fn(&Change, &Caches) -> Vec<String>;

/// How often every object is reconciled even if nothing changed.
const RESYNC: Duration = Duration::from_secs(60);

/// Feeds `queue` from cache changes (`map` turns a change into keys), reconciles everything
/// of `primary` once synced, after a lag, and every [`RESYNC`].
pub(crate) fn feed(
    tasks: &mut JoinSet<()>,
    queue: &Arc<WorkQueue>,
    primary: &Arc<Cache>,
    sources: Vec<(Arc<Cache>, Mapper)>,
    caches: &Caches,
) {
    let enqueue_all = |queue: &WorkQueue, primary: &Cache| {
        for o in primary.list(None) {
            queue.add(cache::key_of(&o));
        }
    };
    for (source, map) in sources {
        let mut rx = source.subscribe();
        let (queue, primary, caches) = (queue.clone(), primary.clone(), caches.clone());
        tasks.spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(change) => {
                        for key in map(&change, &caches) {
                            queue.add(key);
                        }
                    }
                    Err(RecvError::Lagged(_)) => enqueue_all(&queue, &primary),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
    let (queue, primary, caches) = (queue.clone(), primary.clone(), caches.clone());
    tasks.spawn(async move {
        caches.wait_synced().await;
        loop {
            enqueue_all(&queue, &primary);
            tokio::time::sleep(RESYNC).await;
        }
    });
}

/// Spawns `workers` reconcile loops.
pub(crate) fn spawn_workers<R: Reconciler>(
    tasks: &mut JoinSet<()>,
    reconciler: R,
    queue: &Arc<WorkQueue>,
    workers: usize,
) {
    tasks.spawn(runtime::run(Arc::new(reconciler), queue.clone(), workers));
}

/// The change's own key.
pub(crate) fn same_key(change: &Change, _: &Caches) -> Vec<String> {
    vec![change.key.clone()]
}

/// The `namespace/name` key of the controller of the changed object, if it is a `kind`.
pub(crate) fn controller_key(change: &Change, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in [&change.old, &change.new].into_iter().flatten() {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("");
        if let Some(o) = controller_ref(v).filter(|o| o["kind"] == kind) {
            let key = format!("{ns}/{}", o["name"].as_str().unwrap_or(""));
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    out
}

/// The ownerReference with `controller: true`.
pub fn controller_ref(object: &Value) -> Option<&Value> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))
}

/// An ownerReference naming `owner` as the controller.
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}

pub fn uid_of(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or("")
}

pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

pub fn is_deleting(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// An RFC 3339 timestamp as Unix seconds (fractions kept).
pub fn parse_time(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6)
}

/// Now as Unix seconds.
pub fn now_seconds() -> f64 {
    let t = chrono::Utc::now();
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6
}

/// A pod's Ready condition: whether it is True, and since when.
pub fn pod_ready_since(pod: &Value) -> Option<f64> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .map(|c| parse_time(&c["lastTransitionTime"]).unwrap_or(0.0))
}

/// Writes that the cache has not shown yet: a controller waits for them before deciding
/// again, so it never creates or deletes twice for one need (Kubernetes' expectations).
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expected>>,
}

struct Expected {
    /// The cache must have reached this revision (the last create).
    revision: Revision,
    /// These keys must be gone from the cache (the deletes).
    gone: Vec<String>,
    until: std::time::Instant,
}

/// How long to wait for the cache to show a write before deciding anyway.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(15);

impl Expectations {
    pub fn expect(&self, key: &str, revision: Revision, gone: Vec<String>) {
        self.inner.lock().expect("expectations lock").insert(
            key.to_string(),
            Expected {
                revision,
                gone,
                until: std::time::Instant::now() + EXPECTATION_TIMEOUT,
            },
        );
    }

    /// Whether the cache shows every write made for `key`.
    pub fn satisfied(&self, key: &str, cache: &Cache) -> bool {
        let mut inner = self.inner.lock().expect("expectations lock");
        let Some(e) = inner.get(key) else {
            return true;
        };
        let done = cache.revision() >= e.revision && e.gone.iter().all(|k| cache.get(k).is_none());
        if done || std::time::Instant::now() > e.until {
            inner.remove(key);
            return true;
        }
        false
    }
}

/// The largest resourceVersion among written objects.
pub fn max_revision<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Revision {
    objects
        .into_iter()
        .filter_map(|o| o["metadata"]["resourceVersion"].as_str()?.parse().ok())
        .max()
        .unwrap_or(0)
}
