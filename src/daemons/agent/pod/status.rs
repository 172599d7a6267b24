//! Pod status from what the runtime reports, as the kubelet computes it: phase, the four
//! conditions, and per-container state/lastState. Pure, so every rule is tested without
//! Docker; the pod worker feeds it inspected containers and writes the result.

use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::backoff::RestartPolicy;
use crate::daemons::agent::runtime::{ContainerInfo, ContainerState};

/// A waiting reason the worker decided (CrashLoopBackOff, ErrImagePull…), overriding
/// what the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: Option<String>,
}

/// One container of the pod as the worker sees it.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    /// The name in the pod spec.
    pub name: String,
    /// The image in the pod spec.
    pub image: String,
    /// The newest container of this name (inspected), if any.
    pub latest: Option<ContainerInfo>,
    /// The one before it, kept for `lastState` and `logs --previous`.
    pub previous: Option<ContainerInfo>,
    /// Kubernetes' `restartCount`.
    pub restart_count: i32,
    /// A waiting reason that overrides the engine's state.
    pub waiting: Option<Waiting>,
    /// Whether it counts as ready (running and passing its readiness probe).
    pub ready: bool,
    /// Whether a running container's startup probe (if any) has not passed yet.
    pub starting: bool,
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct PodFacts<'a> {
    pub init: &'a [ContainerView],
    pub containers: &'a [ContainerView],
    pub restart_policy: RestartPolicy,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub start_time: Option<Time>,
    /// An init container failed and the policy does not retry it.
    pub init_failed: bool,
}

/// Docker's RFC 3339 time (nanoseconds) as a Kubernetes `Time` (seconds).
pub fn time(rfc3339: Option<&str>) -> Option<Time> {
    let ts: Timestamp = rfc3339?.parse().ok()?;
    Timestamp::from_second(ts.as_second()).ok().map(Time)
}

/// Now, at Kubernetes' one-second precision.
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn exited(c: &ContainerInfo) -> Option<(i64, bool)> {
    match c.state {
        ContainerState::Exited {
            exit_code,
            oom_killed,
        } => Some((exit_code, oom_killed)),
        _ => None,
    }
}

fn terminated(c: &ContainerInfo) -> Option<ContainerStateTerminated> {
    let (exit_code, oom) = exited(c)?;
    let reason = if oom {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Some(ContainerStateTerminated {
        exit_code: exit_code as i32,
        reason: Some(reason.into()),
        started_at: time(c.started_at.as_deref()),
        finished_at: time(c.finished_at.as_deref()),
        container_id: Some(format!("docker://{}", c.id)),
        ..Default::default()
    })
}

fn waiting(reason: &str, message: Option<String>) -> K8sState {
    K8sState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

fn container_status(view: &ContainerView, default_waiting: &str) -> ContainerStatus {
    let latest = view.latest.as_ref();
    let state = match (&view.waiting, latest.map(|c| &c.state)) {
        (Some(w), _) => waiting(&w.reason, w.message.clone()),
        (None, Some(ContainerState::Running)) => K8sState {
            running: Some(ContainerStateRunning {
                started_at: time(latest.and_then(|c| c.started_at.as_deref())),
            }),
            ..Default::default()
        },
        (None, Some(ContainerState::Exited { .. })) => K8sState {
            terminated: latest.and_then(terminated),
            ..Default::default()
        },
        _ => waiting(default_waiting, None),
    };
    // While waiting to restart, the last run is the latest container itself.
    let last = if view.waiting.is_some() && latest.and_then(exited).is_some() {
        latest.and_then(terminated)
    } else {
        view.previous.as_ref().and_then(terminated)
    };
    let running = state.running.is_some();
    ContainerStatus {
        name: view.name.clone(),
        image: view.image.clone(),
        image_id: latest
            .and_then(|c| c.image_id.clone())
            .map(|id| format!("docker://{id}"))
            .unwrap_or_default(),
        container_id: latest.map(|c| format!("docker://{}", c.id)),
        ready: view.ready,
        started: Some(running && !view.starting),
        restart_count: view.restart_count,
        state: Some(state),
        last_state: Some(K8sState {
            terminated: last,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether an app container finished for good under `policy`.
fn finished(view: &ContainerView, policy: RestartPolicy) -> Option<i64> {
    let (code, _) = exited(view.latest.as_ref()?)?;
    (view.waiting.is_none() && !policy.restarts(code)).then_some(code)
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    previous: Option<&PodStatus>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let before = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind));
    let since = match before {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now()),
    };
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        last_transition_time: since,
        reason: if ok { None } else { reason.map(str::to_string) },
        message: if ok { None } else { message },
        ..Default::default()
    }
}

/// The pod's status. `previous` keeps condition transition times stable.
pub fn pod_status(facts: &PodFacts<'_>, previous: Option<&PodStatus>) -> PodStatus {
    let initialized = facts.init.iter().all(|v| {
        v.latest
            .as_ref()
            .and_then(exited)
            .is_some_and(|(c, _)| c == 0)
    });
    let outcomes: Vec<Option<i64>> = facts
        .containers
        .iter()
        .map(|v| finished(v, facts.restart_policy))
        .collect();
    let all_created = facts.containers.iter().all(|v| {
        v.latest
            .as_ref()
            .is_some_and(|c| c.state != ContainerState::Created)
    });
    let phase = if facts.init_failed {
        "Failed"
    } else if !initialized || !all_created {
        "Pending"
    } else if outcomes.iter().all(Option::is_some) {
        if outcomes.iter().all(|o| *o == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Running"
    };
    let unready: Vec<&str> = facts
        .containers
        .iter()
        .filter(|v| !v.ready)
        .map(|v| v.name.as_str())
        .collect();
    let unready_msg = format!("containers with unready status: [{}]", unready.join(" "));
    let completed = matches!(phase, "Succeeded" | "Failed") && !facts.init_failed;
    let not_ready_reason = if completed {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let ready = unready.is_empty() && initialized;
    let conditions = vec![
        condition("PodScheduled", true, None, None, previous),
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            Some("containers with incomplete status: init containers".into()),
            previous,
        ),
        condition(
            "ContainersReady",
            ready,
            Some(not_ready_reason),
            (!completed).then(|| unready_msg.clone()),
            previous,
        ),
        condition(
            "Ready",
            ready,
            Some(not_ready_reason),
            (!completed).then_some(unready_msg),
            previous,
        ),
    ];
    let init_statuses: Vec<ContainerStatus> = facts
        .init
        .iter()
        .map(|v| {
            let mut s = container_status(v, "PodInitializing");
            s.ready = v
                .latest
                .as_ref()
                .and_then(exited)
                .is_some_and(|(c, _)| c == 0);
            s
        })
        .collect();
    let default_waiting = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: facts.host_ip.clone(),
        host_ips: facts
            .host_ip
            .clone()
            .map(|ip| vec![k8s_openapi::api::core::v1::HostIP { ip }]),
        pod_ip: facts.pod_ip.clone(),
        pod_ips: facts.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: facts.start_time.clone(),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(
            facts
                .containers
                .iter()
                .map(|v| container_status(v, default_waiting))
                .collect(),
        ),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
