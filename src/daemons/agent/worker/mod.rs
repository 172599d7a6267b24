//! One pod's worker: a level-triggered loop that makes the engine match the pod, writes
//! the pod's status when it changes, and on deletion stops the pod gracefully and lets the
//! pod object go. Wake-ups coalesce: whatever happened meanwhile, the next pass looks at the
//! whole pod and its containers afresh.
//!
//! A [`PodWorker::pass`] talks only to the container runtime and reports what it found (the
//! pod's status, or that its containers are gone); [`PodWorker::run`] takes that to the API
//! server ([`api`]). So the pass runs as it is in unit tests against the recording fake and
//! in `tests/agent_runtime*.rs` against Docker, with no API server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::watch;

use crate::daemons::agent::net::attach;
use crate::daemons::agent::pod::backoff::{RestartPolicy, RestartTracker};
use crate::daemons::agent::pod::drift::{Drift, DriftKind, Seen, attempt, latest_two};
use crate::daemons::agent::pod::podspec::{ContainerPlan, PodContext, PodFields, plan_pod};
use crate::daemons::agent::pod::status::{self, ContainerView, PodFacts, Waiting};
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{
    ContainerInfo, ContainerRuntime, ContainerState, RuntimeError,
};
use context::AgentContext;
use events::{EventType, PodRef};

mod api;
mod containers;
pub mod context;
pub mod events;
pub mod metrics;
pub mod objects;
mod probes;
mod sandbox;
mod start;
pub mod sync;
pub mod teardown;
#[cfg(test)]
mod tests;

/// What a worker is told: the newest pod object, or that it is gone from the API.
#[derive(Debug, Clone)]
pub struct PodInput {
    pub pod: Arc<Pod>,
    pub gone: bool,
}

/// What a pass leaves to do on the API server.
#[derive(Debug, Clone, PartialEq)]
pub enum Pass {
    /// The pod's status as the pass found it (none when the pass only made the pod's
    /// sandbox), and when to look again unless woken before (`None`: when woken).
    Synced {
        status: Option<Box<PodStatus>>,
        wake: Option<Duration>,
    },
    /// The pod is being deleted and its containers and volumes are gone.
    Removed,
}

/// When the worker wants to run again, besides being woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Idle,
    After(Duration),
    Done,
}

/// Why a pass failed; the worker retries with back-off.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("volume {volume:?} could not be filled: {message}")]
    Mount { volume: String, message: String },
    #[error("the pod sandbox could not be made: {message}")]
    Sandbox { message: String },
    #[error("pod {pod}: the API server refused the {what}")]
    Api {
        pod: String,
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

const RETRY_START: Duration = Duration::from_secs(10);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The state one pod's worker keeps between passes.
pub struct PodWorker<R> {
    ctx: Arc<AgentContext<R>>,
    trackers: HashMap<String, RestartTracker>,
    backoff_reported: HashSet<String>,
    /// The pod's containers as last seen, and which the worker removed itself.
    seen: Seen,
    inspected: HashMap<String, ContainerInfo>,
    /// The pod's containers right after this worker made a new sandbox (the sandbox alone),
    /// for the next pass instead of a listing.
    fresh: Option<Vec<ContainerInfo>>,
    waiting: HashMap<String, (Waiting, Instant)>,
    /// Consecutive failed starts (pulls, creates) of each container, for their back-off,
    /// with the spec hash they failed with: a changed spec is tried at once.
    failed_starts: HashMap<String, (String, u32)>,
    last_status: Option<PodStatus>,
    last_config_error: Option<String>,
    start_time: Option<Time>,
    volumes_ready: bool,
    /// Probe state by container name and kind.
    probes: HashMap<(String, probes::ProbeKind), probes::ProbeState>,
    /// Running containers whose readiness probe passes.
    ready: HashSet<String>,
    /// Running containers whose startup probe passed.
    started_ok: HashSet<String>,
    /// The sandbox and digest of the configMap/secret files last written.
    written_files: Option<(String, String)>,
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

fn same_state(a: &ContainerState, b: &ContainerState) -> bool {
    match (a, b) {
        (
            ContainerState::Exited { exit_code: x, .. },
            ContainerState::Exited { exit_code: y, .. },
        ) => x == y,
        _ => a == b,
    }
}

fn min_wake(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// A worker for a pod; it adopts whatever containers of the pod already run.
    pub fn new(ctx: Arc<AgentContext<R>>) -> Self {
        PodWorker {
            ctx,
            trackers: HashMap::new(),
            backoff_reported: HashSet::new(),
            seen: Seen::default(),
            inspected: HashMap::new(),
            fresh: None,
            waiting: HashMap::new(),
            failed_starts: HashMap::new(),
            last_status: None,
            last_config_error: None,
            start_time: None,
            volumes_ready: false,
            written_files: None,
            probes: HashMap::new(),
            ready: HashSet::new(),
            started_ok: HashSet::new(),
        }
    }

    /// Runs passes, writing what they find through `client`, until the pod is gone and
    /// cleaned up, or the sender is dropped.
    pub async fn run(mut self, client: kube::Client, mut input: watch::Receiver<PodInput>) {
        let mut error_backoff = Duration::from_millis(500);
        let mut first = true;
        loop {
            let current = input.borrow_and_update().clone();
            // Boxed: a pass's future (engine and API calls nested deep) lives only while it
            // runs, instead of sizing every idle worker's task.
            let next = match Box::pin(self.step(&client, &current)).await {
                Ok(next) => {
                    self.ctx.metrics.pod_synced(std::mem::take(&mut first));
                    error_backoff = Duration::from_millis(500);
                    next
                }
                Err(e) => {
                    let pod = pod_ref(&current.pod);
                    tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name),
                        error = %anyhow::Error::from(e), "pod sync failed; retrying");
                    error_backoff = (error_backoff * 2).min(ERROR_BACKOFF_MAX);
                    Next::After(error_backoff)
                }
            };
            let woken = match next {
                Next::Done => return,
                Next::Idle => input.changed().await,
                Next::After(delay) => tokio::select! {
                    changed = input.changed() => changed,
                    () = tokio::time::sleep(delay) => Ok(()),
                },
            };
            if woken.is_err() {
                return;
            }
        }
    }

    fn pod_context(&self, pod_ip: Option<String>) -> PodContext {
        PodContext {
            fields: PodFields {
                pod_ip,
                host_ip: Some(self.ctx.host_ip.clone()),
                node_name: self.ctx.node.clone(),
            },
            extra_labels: self.ctx.extra_labels.clone(),
        }
    }

    /// Lists the pod's containers, inspecting only those whose state changed.
    async fn observe(&mut self, uid: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        // Just after a new sandbox was made, the others having gone with the old one: its
        // inspection instead of a list, which the engine answers more slowly the more
        // containers it has, while many pods start.
        if let Some(fresh) = self.fresh.take() {
            return Ok(fresh);
        }
        let listed = teardown::pod_containers(&self.ctx.runtime, uid).await?;
        let mut out = Vec::with_capacity(listed.len());
        let mut seen = HashSet::new();
        for summary in listed {
            seen.insert(summary.id.clone());
            let fresh = self
                .inspected
                .get(&summary.id)
                .is_some_and(|c| same_state(&c.state, &summary.state));
            if !fresh {
                match self.ctx.runtime.inspect_container(&summary.id).await? {
                    Some(info) => {
                        self.inspected.insert(summary.id.clone(), info);
                    }
                    None => continue,
                }
            }
            out.push(self.inspected[&summary.id].clone());
        }
        self.inspected.retain(|id, _| seen.contains(id));
        Ok(out)
    }

    /// The pod's address: the node's for a pod in the node's network namespace, else its
    /// sandbox's, once the sandbox exists.
    fn pod_ip(&self, pod: &Pod, observed: &[ContainerInfo]) -> Option<String> {
        let (sandbox, _) = latest_two(observed, labels::SANDBOX_CONTAINER, Role::Sandbox);
        match pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            true => sandbox.map(|_| self.ctx.host_ip.clone()),
            false => sandbox.and_then(|s| s.ip_address.clone()),
        }
    }

    /// One look at the pod and its containers: plans the pod (once), makes the sandbox
    /// run, writes the pod's files, creates, restarts and repairs containers, runs the
    /// probes that are due, and computes the status. On deletion it removes everything.
    pub async fn pass(&mut self, input: &PodInput) -> Result<Pass, SyncError> {
        let pod = &*input.pod;
        let pref = pod_ref(pod);
        if input.gone || pod.metadata.deletion_timestamp.is_some() {
            self.terminate(pod, &pref, input.gone).await?;
            return Ok(Pass::Removed);
        }
        if self.last_status.is_none() {
            self.last_status = pod.status.clone();
            self.start_time = pod.status.as_ref().and_then(|s| s.start_time.clone());
        }
        if self.start_time.is_none() {
            self.start_time = Some(status::now());
        }
        let restart =
            RestartPolicy::from_pod(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()));
        let mut observed = self.observe(&pref.uid).await?;
        // The address is known before planning unless the sandbox is yet to be made; then
        // this pass makes it and the next, at once, plans the containers with its address.
        let pod_ip = self.pod_ip(pod, &observed);
        let context = self.pod_context(pod_ip.clone());
        let mut plan = match plan_pod(pod, &context, &*self.ctx.objects, &self.ctx.policy) {
            Ok(plan) => plan,
            Err(e) => return Ok(self.config_error(pod, &pref, e.to_string())),
        };
        if !self.volumes_ready {
            for volume in &plan.volumes {
                self.ctx.runtime.ensure_volume(volume).await?;
            }
            self.volumes_ready = true;
        }
        let sandbox = match self.ensure_sandbox(&pref, &plan, &observed).await? {
            Some(running) => running,
            None => {
                return Ok(Pass::Synced {
                    status: None,
                    wake: Some(Duration::ZERO),
                });
            }
        };
        self.write_files(&pref, &plan, &sandbox.id).await?;
        let files = match (plan.plugged, self.ctx.pod_files_dir(&pref.uid)) {
            (true, Some(dir)) => attach::pod_file_mounts(&dir),
            _ => Vec::new(),
        };
        plan.join_sandbox(&sandbox.id, &files);
        self.last_config_error = None;

        let mut wake: Option<Duration> = None;
        let mut acted = false;
        let mut initialized = true;
        let mut init_failed = false;
        // Init containers are retried after failure unless the pod never restarts anything.
        let init_restart = match restart {
            RestartPolicy::Never => RestartPolicy::Never,
            _ => RestartPolicy::OnFailure,
        };
        for init in &plan.init_containers {
            let (latest, _) = latest_two(&observed, &init.name, Role::Init);
            if let Some(ContainerState::Exited { exit_code: 0, .. }) = latest.map(|c| &c.state) {
                continue;
            }
            initialized = false;
            if let Some(ContainerState::Exited { exit_code, .. }) = latest.map(|c| &c.state)
                && !init_restart.restarts(*exit_code)
            {
                init_failed = true;
                break;
            }
            let step = self
                .sync_container(&pref, &plan, init, Role::Init, &observed, init_restart)
                .await?;
            acted |= step.acted;
            wake = min_wake(wake, step.wake);
            break;
        }
        if initialized {
            for app in &plan.containers {
                let step = self
                    .sync_container(&pref, &plan, app, Role::App, &observed, restart)
                    .await?;
                acted |= step.acted;
                wake = min_wake(wake, step.wake);
            }
        }
        if acted {
            observed = self.observe(&pref.uid).await?;
        }
        if initialized {
            let due = self
                .run_probes(pod, &pref, &observed, pod_ip.as_deref())
                .await?;
            wake = min_wake(wake, due);
            if due == Some(Duration::ZERO) {
                // A liveness failure stopped a container: look again now.
                observed = self.observe(&pref.uid).await?;
            }
        }
        self.seen.remember(&observed);
        let views = |list: &[ContainerPlan], role: Role| -> Vec<ContainerView> {
            list.iter()
                .map(|c| self.view(pod, c, role, &observed))
                .collect()
        };
        let init_views = views(&plan.init_containers, Role::Init);
        let app_views = views(&plan.containers, Role::App);
        let facts = PodFacts {
            init: &init_views,
            containers: &app_views,
            restart_policy: restart,
            pod_ip,
            host_ip: Some(self.ctx.host_ip.clone()),
            start_time: self.start_time.clone(),
            init_failed,
        };
        let status = status::pod_status(&facts, self.last_status.as_ref());
        Ok(Pass::Synced {
            status: Some(Box::new(status)),
            wake,
        })
    }

    fn view(
        &self,
        pod: &Pod,
        plan: &ContainerPlan,
        role: Role,
        observed: &[ContainerInfo],
    ) -> ContainerView {
        let (latest, previous) = latest_two(observed, &plan.name, role);
        let waiting = self.waiting.get(&plan.name).map(|(w, _)| w.clone());
        let declared = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|c| role == Role::App && c.name == plan.name);
        let has_readiness = declared.is_some_and(|c| c.readiness_probe.is_some());
        let starting = declared.is_some_and(|c| c.startup_probe.is_some())
            && latest.is_some_and(|c| !self.started_ok.contains(&c.id));
        let running = !starting
            && latest.is_some_and(|c| {
                c.state == ContainerState::Running && (!has_readiness || self.ready.contains(&c.id))
            });
        ContainerView {
            name: plan.name.clone(),
            image: plan.spec.image.clone(),
            latest: latest.cloned(),
            previous: previous.cloned(),
            restart_count: latest.map_or(0, |c| attempt(c) as i32),
            ready: running && waiting.is_none(),
            starting,
            waiting,
        }
    }

    /// The pod cannot be planned (a missing ConfigMap, a forbidden hostPath…): every
    /// container waits with `CreateContainerConfigError`, as in Kubernetes.
    fn config_error(&mut self, pod: &Pod, pref: &PodRef, message: String) -> Pass {
        if self.last_config_error.as_deref() != Some(&message) {
            self.ctx.events.pod(
                pref,
                EventType::Warning,
                "Failed",
                None,
                format!("Error: {message}"),
            );
            self.last_config_error = Some(message.clone());
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let view = |c: &k8s_openapi::api::core::v1::Container| ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            waiting: Some(Waiting {
                reason: "CreateContainerConfigError".into(),
                message: Some(message.clone()),
            }),
            ..Default::default()
        };
        let apps: Vec<ContainerView> = spec.containers.iter().map(view).collect();
        let facts = PodFacts {
            init: &[],
            containers: &apps,
            restart_policy: RestartPolicy::Always,
            pod_ip: None,
            host_ip: Some(self.ctx.host_ip.clone()),
            start_time: self.start_time.clone(),
            init_failed: false,
        };
        let mut new_status = status::pod_status(&facts, self.last_status.as_ref());
        new_status.phase = Some("Pending".into());
        Pass::Synced {
            status: Some(Box::new(new_status)),
            wake: Some(RETRY_START),
        }
    }

    /// Reports drift found (a `DriftDetected` event and its counter).
    fn detected(&self, pref: &PodRef, drift: &Drift, container: Option<&str>) {
        self.ctx.metrics.detected(drift.kind());
        self.ctx.events.pod(
            pref,
            EventType::Warning,
            "DriftDetected",
            container,
            drift.to_string(),
        );
    }

    /// Reports drift repaired (a `DriftRepaired` event and its counter).
    fn repaired(&self, pref: &PodRef, kind: DriftKind, container: Option<&str>, message: String) {
        self.ctx.metrics.repaired(kind);
        self.ctx
            .events
            .pod(pref, EventType::Normal, "DriftRepaired", container, message);
    }

    /// The restart tracker of container `name`, made when first needed.
    fn tracker(&mut self, name: &str, restart: RestartPolicy, now: Instant) -> &mut RestartTracker {
        let backoff = self.ctx.backoff;
        self.trackers
            .entry(name.to_string())
            .or_insert_with(|| RestartTracker::started(restart, backoff, now))
    }
}
