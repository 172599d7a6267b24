//! Pods run by the agent's own pod worker on the real Docker engine, with no API server: a
//! pass is what the agent runs, and its status what the agent would write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::daemons::agent::DockerRuntime;
use berth::daemons::agent::pod::env::StaticObjects;
use berth::daemons::agent::pod::podspec::{AgentPolicy, PodContext};
use berth::daemons::agent::worker::context::AgentContext;
use berth::daemons::agent::worker::events::{EventQueue, EventRecorder};
use berth::daemons::agent::worker::{Pass, PodInput, PodWorker};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod, PodStatus};

/// One pod's worker, as the agent runs it, on a context of its own.
pub struct PodAgent {
    pub ctx: Arc<AgentContext<DockerRuntime>>,
    pub events: EventQueue,
    pub input: PodInput,
    worker: PodWorker<DockerRuntime>,
}

impl PodAgent {
    /// A worker for `pod`, on the node and with the labels of `context` (a test scope's,
    /// so the scope removes what it makes).
    pub fn new(runtime: &DockerRuntime, context: &PodContext, pod: &Pod) -> PodAgent {
        let (recorder, events) = EventRecorder::new(&context.fields.node_name);
        let ctx = Arc::new(AgentContext::new(
            runtime.clone(),
            context.fields.node_name.clone(),
            "127.0.0.1".into(),
            AgentPolicy::default(),
            context.extra_labels.clone(),
            recorder,
            Arc::new(StaticObjects::default()),
        ));
        PodAgent {
            worker: PodWorker::new(ctx.clone()),
            ctx,
            events,
            input: PodInput {
                pod: Arc::new(pod.clone()),
                gone: false,
            },
        }
    }

    /// One pass; `None` when it found no status (it made the sandbox).
    pub async fn pass(&mut self) -> Option<PodStatus> {
        match self
            .worker
            .pass(&self.input)
            .await
            .expect("the pass succeeds")
        {
            Pass::Synced { status, .. } => status.map(|s| *s),
            Pass::Removed => None,
        }
    }

    /// Passes every 100 ms until the status satisfies `done`, for at most `timeout`;
    /// returns the last status.
    pub async fn until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&PodStatus) -> bool,
    ) -> PodStatus {
        let deadline = Instant::now() + timeout;
        let mut last = PodStatus::default();
        loop {
            if let Some(status) = self.pass().await {
                if done(&status) {
                    return status;
                }
                last = status;
            }
            if Instant::now() > deadline {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Passes until every init container completed and every app container started (it
    /// runs or ran), or the pod cannot go on (it failed, or a container waits on an error).
    pub async fn start(&mut self) -> PodStatus {
        self.until(Duration::from_secs(30), settled).await
    }

    /// The reasons and messages of the events recorded since the last look.
    pub fn events(&mut self) -> Vec<(String, String)> {
        self.events
            .take()
            .into_iter()
            .map(|e: Event| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }
}

fn waiting_on_error(c: &ContainerStatus) -> bool {
    let reason = c
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref()?.reason.clone());
    reason.is_some_and(|r| r != "ContainerCreating" && r != "PodInitializing")
}

fn started(c: &ContainerStatus) -> bool {
    let state = c.state.as_ref();
    state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
}

fn completed(c: &ContainerStatus) -> bool {
    let terminated = c.state.as_ref().and_then(|s| s.terminated.as_ref());
    terminated.is_some_and(|t| t.exit_code == 0)
}

/// Whether the pod got as far as it will: every container started, or it cannot go on.
pub fn settled(status: &PodStatus) -> bool {
    let init = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    let apps = status.container_statuses.as_deref().unwrap_or_default();
    let all = init.iter().chain(apps);
    status.phase.as_deref() == Some("Failed")
        || all.clone().any(waiting_on_error)
        || (!apps.is_empty() && init.iter().all(completed) && apps.iter().all(started))
}

/// The engine id of the container `name` in `status` (app or init), once it was made.
pub fn container_id(status: &PodStatus, name: &str) -> Option<String> {
    let init = status.init_container_statuses.iter().flatten();
    let all = init.chain(status.container_statuses.iter().flatten());
    let found = all.into_iter().find(|c| c.name == name)?;
    let id = found.container_id.as_deref()?;
    Some(id.strip_prefix("docker://").unwrap_or(id).to_string())
}

/// The waiting reason of the container `name` in `status`.
pub fn waiting_reason(status: &PodStatus, name: &str) -> Option<String> {
    let init = status.init_container_statuses.iter().flatten();
    let all = init.chain(status.container_statuses.iter().flatten());
    let found = all.into_iter().find(|c| c.name == name)?;
    found.state.as_ref()?.waiting.as_ref()?.reason.clone()
}
