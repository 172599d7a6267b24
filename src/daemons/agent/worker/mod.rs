//! One pod's worker: a level-triggered loop that makes the engine match the pod, writes
//! the pod's status when it changes, and on deletion stops the pod gracefully and lets the
//! pod object go. Wake-ups coalesce: whatever happened meanwhile, the next pass looks at the
//! whole pod and its containers afresh.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tokio::sync::watch;

use super::runtime::{ContainerInfo, ContainerRuntime, ContainerState, RuntimeError};
use crate::daemons::agent::net::attach;
use crate::daemons::agent::pod::backoff::{RestartPolicy, RestartTracker};
use crate::daemons::agent::pod::podspec::{
    ContainerPlan, PodContext, PodFields, PodIdentity, plan_pod,
};
use crate::daemons::agent::pod::status::{self, ContainerView, PodFacts, Waiting};
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::worker::context::AgentContext;
use crate::daemons::agent::worker::events::{EventType, PodRef};
use crate::daemons::agent::worker::metrics::DriftKind;

/// What a worker is told: the newest pod object, or that it is gone from the API.
#[derive(Debug, Clone)]
pub struct PodInput {
    pub pod: Arc<Pod>,
    pub gone: bool,
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
    exits_seen: HashSet<String>,
    backoff_reported: HashSet<String>,
    /// The newest container of each name last seen: (id, attempt); a vanished one is drift.
    known: HashMap<String, (String, u32)>,
    /// Containers the worker removed itself (not drift when they vanish).
    removed_ids: HashSet<String>,
    inspected: HashMap<String, ContainerInfo>,
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

fn label<'a>(c: &'a ContainerInfo, key: &str) -> &'a str {
    c.labels.get(key).map(String::as_str).unwrap_or("")
}

fn attempt(c: &ContainerInfo) -> u32 {
    label(c, labels::ATTEMPT).parse().unwrap_or(0)
}

/// The newest and the previous container of `name` in `role`.
fn latest_two<'a>(
    observed: &'a [ContainerInfo],
    name: &str,
    role: Role,
) -> (Option<&'a ContainerInfo>, Option<&'a ContainerInfo>) {
    let mut mine: Vec<&ContainerInfo> = observed
        .iter()
        .filter(|c| label(c, labels::CONTAINER_NAME) == name)
        .filter(|c| Role::parse(label(c, labels::ROLE)) == Some(role))
        .collect();
    mine.sort_by_key(|c| std::cmp::Reverse(attempt(c)));
    (mine.first().copied(), mine.get(1).copied())
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

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// A worker for a pod; it adopts whatever containers of the pod already run.
    pub fn new(ctx: Arc<AgentContext<R>>) -> Self {
        PodWorker {
            ctx,
            trackers: HashMap::new(),
            exits_seen: HashSet::new(),
            backoff_reported: HashSet::new(),
            known: HashMap::new(),
            removed_ids: HashSet::new(),
            inspected: HashMap::new(),
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

    /// Runs passes until the pod is gone and cleaned up, or the sender is dropped.
    pub async fn run(mut self, mut input: watch::Receiver<PodInput>) {
        let mut error_backoff = Duration::from_millis(500);
        loop {
            let current = input.borrow_and_update().clone();
            // Boxed: a pass's future (engine and API calls nested deep) lives only while it
            // runs, instead of sizing every idle worker's task.
            let next = match Box::pin(self.pass(&current)).await {
                Ok(next) => {
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

    /// Just after a new sandbox was made, the others having gone with the old one: one
    /// inspect instead of a list, which the engine answers more slowly the more containers
    /// it has, while many pods start.
    async fn observe_new_sandbox(
        &mut self,
        uid: &str,
        id: &str,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let Some(info) = self.ctx.runtime.inspect_container(id).await? else {
            return self.observe(uid).await;
        };
        self.inspected.clear();
        self.inspected.insert(id.to_string(), info.clone());
        Ok(vec![info])
    }

    async fn pass(&mut self, input: &PodInput) -> Result<Next, SyncError> {
        let pod = &*input.pod;
        let pref = pod_ref(pod);
        if input.gone || pod.metadata.deletion_timestamp.is_some() {
            self.terminate(pod, &pref, input.gone).await?;
            return Ok(Next::Done);
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
        let plan = match plan_pod(
            pod,
            &self.pod_context(None),
            &*self.ctx.objects,
            &self.ctx.policy,
        ) {
            Ok(plan) => plan,
            Err(e) => return self.config_error(pod, &pref, e.to_string()).await,
        };
        if !self.volumes_ready {
            for volume in &plan.volumes {
                self.ctx.runtime.ensure_volume(volume).await?;
            }
            self.volumes_ready = true;
        }
        let mut observed = self.observe(&pref.uid).await?;
        if let Some(sandbox) = self.ensure_sandbox(&pref, &plan, &observed).await? {
            observed = self.observe_new_sandbox(&pref.uid, &sandbox).await?;
        }
        let (sandbox, _) = latest_two(&observed, labels::SANDBOX_CONTAINER, Role::Sandbox);
        // A pod in the node's network namespace has the node's address.
        let pod_ip = match plan.host_network {
            true => sandbox.map(|_| self.ctx.host_ip.clone()),
            false => sandbox.and_then(|s| s.ip_address.clone()),
        };
        if let Some(sandbox) = sandbox {
            self.write_files(&pref, &plan, &sandbox.id).await?;
        }
        let mut plan = match plan_pod(
            pod,
            &self.pod_context(pod_ip.clone()),
            &*self.ctx.objects,
            &self.ctx.policy,
        ) {
            Ok(plan) => plan,
            Err(e) => return self.config_error(pod, &pref, e.to_string()).await,
        };
        if let Some(sandbox) = sandbox {
            let files = match (plan.plugged, self.ctx.pod_files_dir(&pref.uid)) {
                (true, Some(dir)) => attach::pod_file_mounts(&dir),
                _ => Vec::new(),
            };
            plan.join_sandbox(&sandbox.id, &files);
        }
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
            if let Some(ContainerState::Exited { exit_code, .. }) = latest.map(|c| &c.state) {
                if !init_restart.restarts(*exit_code) {
                    init_failed = true;
                    break;
                }
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
        self.remember(&observed);
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
        let new_status = status::pod_status(&facts, self.last_status.as_ref());
        self.write_status(&pref, new_status).await?;
        Ok(wake.map_or(Next::Idle, Next::After))
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

    fn remember(&mut self, observed: &[ContainerInfo]) {
        for c in observed {
            let name = label(c, labels::CONTAINER_NAME).to_string();
            let n = attempt(c);
            if self.known.get(&name).is_none_or(|(_, a)| *a <= n) {
                self.known.insert(name, (c.id.clone(), n));
            }
        }
    }

    async fn write_status(&mut self, pref: &PodRef, new: PodStatus) -> Result<(), SyncError> {
        if self.last_status.as_ref() == Some(&new) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pref.namespace);
        let body = json!({"status": new});
        match api
            .patch_status(&pref.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {}
            // Deleted meanwhile: the watch brings the news.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(SyncError::Api {
                    pod: format!("{}/{}", pref.namespace, pref.name),
                    what: "status update",
                    source,
                });
            }
        }
        self.last_status = Some(new);
        Ok(())
    }

    /// The pod cannot be planned (a missing ConfigMap, a forbidden hostPath…): every
    /// container waits with `CreateContainerConfigError`, as in Kubernetes.
    async fn config_error(
        &mut self,
        pod: &Pod,
        pref: &PodRef,
        message: String,
    ) -> Result<Next, SyncError> {
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
        self.write_status(pref, new_status).await?;
        Ok(Next::After(RETRY_START))
    }

    fn detected(&self, pref: &PodRef, kind: DriftKind, container: Option<&str>, message: String) {
        self.ctx.metrics.detected(kind);
        self.ctx.events.pod(
            pref,
            EventType::Warning,
            "DriftDetected",
            container,
            message,
        );
    }

    fn repaired(&self, pref: &PodRef, kind: DriftKind, container: Option<&str>, message: String) {
        self.ctx.metrics.repaired(kind);
        self.ctx
            .events
            .pod(pref, EventType::Normal, "DriftRepaired", container, message);
    }

    /// Stops the pod with its grace period, removes its containers and pod-scoped volumes,
    /// then lets the pod object go.
    async fn terminate(&mut self, pod: &Pod, pref: &PodRef, gone: bool) -> Result<(), SyncError> {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        if !gone {
            self.leave_services(pod, Duration::from_secs(grace)).await;
        }
        let observed = teardown::pod_containers(&self.ctx.runtime, &pref.uid).await?;
        for c in &observed {
            self.ctx.stopping(&c.id);
            let name = label(c, labels::CONTAINER_NAME);
            if c.state == ContainerState::Running && name != labels::SANDBOX_CONTAINER {
                self.ctx.events.pod(
                    pref,
                    EventType::Normal,
                    "Killing",
                    Some(name),
                    format!("Stopping container {name}"),
                );
            }
        }
        let identity = PodIdentity {
            uid: pref.uid.clone(),
            namespace: pref.namespace.clone(),
            name: pref.name.clone(),
        };
        teardown::remove_pod(&self.ctx.runtime, &identity, Duration::from_secs(grace)).await?;
        self.ctx.pod_removed(&pref.uid);
        if gone {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pref.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(pref.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pref.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(source) => Err(SyncError::Api {
                pod: format!("{}/{}", pref.namespace, pref.name),
                what: "deletion",
                source,
            }),
        }
    }
}

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// Before SIGTERM, waits until this node's Service rules no longer send to the pod (the
    /// Endpoints controller drops a pod being deleted at once), so no new connection reaches
    /// a stopping pod. Bounded by the grace period and [`LEAVE_SERVICES_MAX`].
    async fn leave_services(&self, pod: &Pod, grace: Duration) {
        let Some(mut targets) = self.ctx.service_targets.clone() else {
            return;
        };
        // A hostNetwork pod's address is the node's, which other pods' rules may keep
        // naming; there is nothing of its own to wait for.
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            return;
        }
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        else {
            return;
        };
        if !targets.borrow().contains(&ip) {
            return;
        }
        let bound = grace.min(LEAVE_SERVICES_MAX);
        let left = tokio::time::timeout(bound, async {
            targets.wait_for(|t| !t.contains(&ip)).await.is_ok()
        })
        .await;
        if left == Ok(true) {
            // Other nodes apply the same Endpoints change at about the same moment.
            tokio::time::sleep(PEER_SETTLE.min(grace)).await;
        }
    }
}

/// The longest a deleted pod waits to leave the Service rules before SIGTERM.
const LEAVE_SERVICES_MAX: Duration = Duration::from_secs(5);

/// Time given to other nodes to apply the Endpoints change this node has applied.
const PEER_SETTLE: Duration = Duration::from_millis(250);

fn min_wake(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// A container state for messages.
pub fn describe_state(state: &ContainerState) -> String {
    match state {
        ContainerState::Exited {
            exit_code,
            oom_killed: true,
        } => format!("OOM-killed, exit code {exit_code}"),
        ContainerState::Exited { exit_code, .. } => format!("exited with code {exit_code}"),
        ContainerState::Created => "created, not started".into(),
        ContainerState::Running => "running".into(),
        ContainerState::Restarting => "restarting".into(),
        ContainerState::Other(s) => s.clone(),
    }
}

mod containers;
pub mod context;
pub mod events;
pub mod metrics;
pub mod objects;
mod probes;
mod sandbox;
pub mod sync;
pub mod teardown;
