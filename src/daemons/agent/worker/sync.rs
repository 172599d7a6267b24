//! The agent's sync loop: one worker per pod bound to this node, woken (coalesced) by the
//! pod watch, by ConfigMap/Secret changes, by Docker events and by a relist every couple of
//! seconds that also removes berth containers whose pod no longer exists (orphans) and
//! tracks whether Docker answers (the node's `Ready` condition).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::context::AgentContext;
use super::events::{EventType, PodRef};
use super::teardown;
use super::{PodInput, PodWorker};
use crate::daemons::agent::net::attach;
use crate::daemons::agent::node::Readiness;
use crate::daemons::agent::pod::drift::{self, DriftKind};
use crate::daemons::agent::pod::podspec::PodIdentity;
use crate::daemons::agent::runtime::labels;
use crate::daemons::agent::runtime::{ContainerInfo, ContainerRuntime, EventStream};

/// Timing of the loop.
#[derive(Debug, Clone, Copy)]
pub struct SyncTiming {
    /// How often all containers are listed.
    pub relist: Duration,
    /// How long Docker may be unreachable before the node turns NotReady.
    pub unhealthy_after: Duration,
}

struct WorkerHandle {
    tx: watch::Sender<PodInput>,
    task: JoinHandle<()>,
}

/// The loop's state.
pub struct PodSync<R> {
    ctx: Arc<AgentContext<R>>,
    /// Where the workers write pod status and let deleted pods go.
    client: kube::Client,
    pods: Store<Pod>,
    workers: HashMap<String, WorkerHandle>,
    fingerprints: HashMap<String, Vec<(String, String)>>,
    cleaning: Arc<Mutex<HashSet<String>>>,
    readiness: watch::Sender<Readiness>,
    timing: SyncTiming,
    last_docker_ok: Instant,
}

fn uid_of(c: &ContainerInfo) -> &str {
    c.labels
        .get(labels::POD_UID)
        .map(String::as_str)
        .unwrap_or("")
}

impl<R: ContainerRuntime + 'static> PodSync<R> {
    pub fn new(
        ctx: Arc<AgentContext<R>>,
        client: kube::Client,
        pods: Store<Pod>,
        readiness: watch::Sender<Readiness>,
        timing: SyncTiming,
    ) -> Self {
        PodSync {
            ctx,
            client,
            pods,
            workers: HashMap::new(),
            fingerprints: HashMap::new(),
            cleaning: Arc::default(),
            readiness,
            timing,
            last_docker_ok: Instant::now(),
        }
    }

    /// Runs forever. `pod_changes` and `object_changes` yield once per watch event (the
    /// caches are already updated); the pod cache must be synced before this starts.
    pub async fn run(
        mut self,
        pod_changes: impl Stream<Item = ()>,
        object_changes: impl Stream<Item = ()>,
    ) {
        let mut pod_changes = std::pin::pin!(pod_changes);
        let mut object_changes = std::pin::pin!(object_changes);
        let mut relist = tokio::time::interval(self.timing.relist);
        relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut engine_events: Option<EventStream> = None;
        let mut reconnect_at = tokio::time::Instant::now();
        let mut reconnect_backoff = Duration::from_millis(500);
        self.sync_workers();
        loop {
            if engine_events.is_none() && tokio::time::Instant::now() >= reconnect_at {
                engine_events = Some(self.ctx.runtime.events(&[(labels::NODE, &self.ctx.node)]));
            }
            tokio::select! {
                Some(()) = pod_changes.next() => self.sync_workers(),
                Some(()) = object_changes.next() => self.wake_all(),
                event = next_event(&mut engine_events) => match event {
                    Some(Ok(e)) => {
                        reconnect_backoff = Duration::from_millis(500);
                        self.ctx.observe_engine_event(&e.container_id, &e.action);
                        if let Some(uid) = e.labels.get(labels::POD_UID) {
                            self.wake(uid);
                        }
                    }
                    other => {
                        if let Some(Err(e)) = other {
                            tracing::warn!(error = %e, "Docker event stream failed; reconnecting");
                        }
                        engine_events = None;
                        reconnect_at = tokio::time::Instant::now() + reconnect_backoff;
                        reconnect_backoff = (reconnect_backoff * 2).min(Duration::from_secs(30));
                    }
                },
                _ = relist.tick() => self.relist().await,
            }
        }
    }

    fn spawn_worker(&mut self, uid: &str, pod: Arc<Pod>) {
        let (tx, rx) = watch::channel(PodInput { pod, gone: false });
        let worker = PodWorker::new(self.ctx.clone());
        let task = tokio::spawn(worker.run(self.client.clone(), rx));
        self.workers
            .insert(uid.to_string(), WorkerHandle { tx, task });
    }

    /// Gives every worker the newest pod object; starts and retires workers.
    fn sync_workers(&mut self) {
        let desired: HashMap<String, Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.ctx.node)
            })
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        self.workers
            .retain(|uid, h| !h.task.is_finished() || desired.contains_key(uid));
        for (uid, pod) in &desired {
            match self.workers.get(uid) {
                Some(h) if !h.task.is_finished() => {
                    let changed = h.tx.borrow().pod.metadata.resource_version
                        != pod.metadata.resource_version;
                    if changed {
                        h.tx.send_replace(PodInput {
                            pod: pod.clone(),
                            gone: false,
                        });
                    }
                }
                Some(_) if pod.metadata.deletion_timestamp.is_none() => {
                    // Finished although the pod still exists un-deleted: start afresh.
                    self.spawn_worker(uid, pod.clone());
                }
                Some(_) => {}
                None => self.spawn_worker(uid, pod.clone()),
            }
        }
        for (uid, h) in &self.workers {
            if !desired.contains_key(uid) && !h.tx.borrow().gone {
                h.tx.send_modify(|input| input.gone = true);
            }
        }
    }

    fn wake(&self, uid: &str) {
        if let Some(h) = self.workers.get(uid) {
            h.tx.send_modify(|_| {});
        }
    }

    fn wake_all(&self) {
        for h in self.workers.values() {
            h.tx.send_modify(|_| {});
        }
    }

    /// Lists this node's containers: wakes the workers whose containers changed, removes
    /// orphans, and updates the engine's health.
    async fn relist(&mut self) {
        let listed = match self
            .ctx
            .runtime
            .list_containers(&[(labels::NODE, &self.ctx.node)])
            .await
        {
            Ok(listed) => listed,
            Err(e) => {
                let down = self.last_docker_ok.elapsed();
                tracing::warn!(error = %e, down_secs = down.as_secs(), "cannot list containers");
                if down >= self.timing.unhealthy_after && self.readiness.borrow().ready {
                    self.readiness
                        .send_replace(Readiness::docker_down(down.as_secs()));
                }
                return;
            }
        };
        self.last_docker_ok = Instant::now();
        if !self.readiness.borrow().ready {
            self.readiness.send_replace(Readiness::ready());
            // The engine is back: every pod gets a full pass.
            self.wake_all();
        }
        let mut current: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for c in &listed {
            current
                .entry(uid_of(c).to_string())
                .or_default()
                .push((c.id.clone(), fingerprint(c)));
        }
        for list in current.values_mut() {
            list.sort();
        }
        let changed: Vec<String> = current
            .iter()
            .filter(|(uid, list)| self.fingerprints.get(*uid) != Some(*list))
            .map(|(uid, _)| uid.clone())
            .chain(
                self.fingerprints
                    .keys()
                    .filter(|u| !current.contains_key(*u))
                    .cloned(),
            )
            .collect();
        for uid in &changed {
            self.wake(uid);
        }
        self.fingerprints = current;
        self.ctx.metrics.relisted();
        let orphans = drift::orphans(&listed, |uid| self.workers.contains_key(uid));
        for (uid, containers) in orphans {
            let uid = uid.to_string();
            let containers: Vec<ContainerInfo> = containers.into_iter().cloned().collect();
            if self
                .cleaning
                .lock()
                .expect("cleaning set")
                .insert(uid.clone())
            {
                let ctx = self.ctx.clone();
                let cleaning = self.cleaning.clone();
                tokio::spawn(async move {
                    remove_orphans(&ctx, &uid, &containers).await;
                    cleaning.lock().expect("cleaning set").remove(&uid);
                });
            }
        }
    }
}

/// What the relist compares between two lists of one container: its state, and for a
/// plugged-in sandbox whether it still has its network interface (no engine event tells).
fn fingerprint(c: &ContainerInfo) -> String {
    match attach::lost_interface(c) {
        Some(veth) => format!("{:?} without {veth}", c.state),
        None => format!("{:?}", c.state),
    }
}

async fn next_event(
    stream: &mut Option<EventStream>,
) -> Option<
    Result<
        crate::daemons::agent::runtime::RuntimeEvent,
        crate::daemons::agent::runtime::RuntimeError,
    >,
> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Removes the containers and pod-scoped volumes of a pod this node no longer runs.
async fn remove_orphans<R: ContainerRuntime>(
    ctx: &AgentContext<R>,
    uid: &str,
    containers: &[ContainerInfo],
) {
    let Some(first) = containers.first() else {
        return;
    };
    let get = |k: &str| first.labels.get(k).cloned().unwrap_or_default();
    let pref = PodRef {
        namespace: get(labels::POD_NAMESPACE),
        name: get(labels::POD_NAME),
        uid: uid.to_string(),
    };
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c.labels.get(labels::CONTAINER_NAME).map(String::as_str))
        .collect();
    let message = format!(
        "found containers [{}] of pod {}/{}, which no longer exists on this node",
        names.join(" "),
        pref.namespace,
        pref.name
    );
    ctx.metrics.detected(DriftKind::Orphan);
    ctx.events
        .pod(&pref, EventType::Warning, "DriftDetected", None, message);
    for c in containers {
        ctx.stopping(&c.id);
    }
    let identity = PodIdentity {
        uid: uid.to_string(),
        namespace: pref.namespace.clone(),
        name: pref.name.clone(),
    };
    match teardown::remove_pod(&ctx.runtime, &identity, Duration::from_secs(2)).await {
        Ok(()) => {
            ctx.metrics.repaired(DriftKind::Orphan);
            ctx.events.pod(
                &pref,
                EventType::Normal,
                "DriftRepaired",
                None,
                format!(
                    "removed the {} orphaned containers of pod {}/{}",
                    containers.len(),
                    pref.namespace,
                    pref.name
                ),
            );
            ctx.pod_removed(uid);
        }
        Err(e) => tracing::warn!(error = %e, pod = %pref.name, "cannot remove orphaned containers"),
    }
}
