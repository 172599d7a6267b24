//! Unit tests of the drift detector on listings built from a pod's own plan.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;

use super::*;
use crate::daemons::agent::pod::env::StaticObjects;
use crate::daemons::agent::pod::podspec::{AgentPolicy, PodContext, plan_pod};
use crate::daemons::agent::runtime::ContainerSpec;

fn plan(command: &str) -> PodPlan {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                                 "command": ["sleep", command]}]}
    }))
    .unwrap();
    let objects = StaticObjects::default();
    plan_pod(
        &pod,
        &PodContext::default(),
        &objects,
        &AgentPolicy::default(),
    )
    .unwrap()
}

/// What the engine would list for a container made from `spec`, as attempt `attempt`.
fn made(spec: &ContainerSpec, attempt: u32, state: ContainerState) -> ContainerInfo {
    let mut labels = spec.labels.clone();
    labels.insert(labels::ATTEMPT.into(), attempt.to_string());
    ContainerInfo {
        id: format!("{}-{attempt}", spec.name),
        name: spec.name.clone(),
        image: spec.image.clone(),
        image_id: None,
        labels,
        state,
        started_at: None,
        finished_at: None,
        ip_address: None,
        pid: None,
    }
}

fn running_pod(plan: &PodPlan) -> Vec<ContainerInfo> {
    vec![
        made(&plan.sandbox, 0, ContainerState::Running),
        made(&plan.containers[0].spec, 0, ContainerState::Running),
    ]
}

fn never_lost(_: &ContainerInfo) -> Option<String> {
    None
}

fn nobody(_: &str) -> Option<String> {
    None
}

#[test]
fn a_pod_as_planned_has_no_drift() {
    let plan = plan("3600");
    let observed = running_pod(&plan);
    let seen = Seen::default();
    assert_eq!(
        sandbox(&plan, &observed, &seen, never_lost),
        SandboxStanding::Running(&observed[0])
    );
    let app = &plan.containers[0];
    let standing = container(
        app,
        Role::App,
        &observed,
        &seen,
        nobody,
        RestartPolicy::Always,
    );
    assert_eq!(standing, Standing::Running(&observed[1]));
}

#[test]
fn a_changed_spec_is_found_by_its_hash() {
    let observed = running_pod(&plan("3600"));
    let changed = plan("7200");
    let seen = Seen::default();
    let standing = container(
        &changed.containers[0],
        Role::App,
        &observed,
        &seen,
        nobody,
        RestartPolicy::Always,
    );
    let Standing::Changed { drift, current } = standing else {
        panic!("expected a changed container, got {standing:?}");
    };
    assert_eq!(current.id, observed[1].id);
    assert_eq!(drift.kind(), DriftKind::Changed);
    assert!(
        drift
            .to_string()
            .starts_with("container app no longer matches its spec (spec hash "),
        "{drift}"
    );
}

#[test]
fn a_container_gone_is_drift_only_when_the_agent_did_not_remove_it() {
    let plan = plan("3600");
    let listed = running_pod(&plan);
    let mut seen = Seen::default();
    seen.remember(&listed);
    let without_app = &listed[..1];
    let app = &plan.containers[0];
    let standing = container(
        app,
        Role::App,
        without_app,
        &seen,
        nobody,
        RestartPolicy::Always,
    );
    assert_eq!(
        standing,
        Standing::Removed {
            drift: Drift::Removed {
                container: "app".into()
            },
            attempt: 1
        }
    );
    seen.removing(&listed[1].id);
    let standing = container(
        app,
        Role::App,
        without_app,
        &seen,
        nobody,
        RestartPolicy::Always,
    );
    assert_eq!(
        standing,
        Standing::Absent { attempt: 1 },
        "the next attempt after the one the agent removed"
    );
}

#[test]
fn an_exit_is_a_stop_outside_berth_only_when_the_engine_says_so_and_it_is_news() {
    let plan = plan("3600");
    let mut observed = running_pod(&plan);
    let exited = ContainerState::Exited {
        exit_code: 137,
        oom_killed: false,
    };
    observed[1].state = exited.clone();
    let app = &plan.containers[0];
    let mut seen = Seen::default();
    let killed = |_: &str| Some("kill".to_string());
    let standing = container(
        app,
        Role::App,
        &observed,
        &seen,
        killed,
        RestartPolicy::Always,
    );
    let Standing::Stopped { drift, .. } = standing else {
        panic!("expected a stop outside berth, got {standing:?}");
    };
    assert_eq!(
        drift.to_string(),
        "container app was stopped outside berth (docker kill; exited with code 137)"
    );
    // A crash, a stop the policy would not undo, or one already acted on: the policy decides.
    let crash = container(
        app,
        Role::App,
        &observed,
        &seen,
        nobody,
        RestartPolicy::Always,
    );
    assert!(matches!(crash, Standing::Exited { exit_code: 137, .. }));
    let never = container(
        app,
        Role::App,
        &observed,
        &seen,
        killed,
        RestartPolicy::Never,
    );
    assert!(matches!(never, Standing::Exited { .. }));
    seen.first_exit(&observed[1].id);
    let again = container(
        app,
        Role::App,
        &observed,
        &seen,
        killed,
        RestartPolicy::Always,
    );
    assert!(matches!(again, Standing::Exited { .. }));
}

#[test]
fn a_sandbox_stopped_changed_lost_or_removed_is_made_again_as_the_next_attempt() {
    let plan = plan("3600");
    let mut observed = running_pod(&plan);
    let seen = {
        let mut seen = Seen::default();
        seen.remember(&observed);
        seen
    };
    let lost = |_: &ContainerInfo| Some("bp0123".to_string());
    let SandboxStanding::Make { attempt: 1, drift } = sandbox(&plan, &observed, &seen, lost) else {
        panic!("a sandbox without its interface is made again");
    };
    assert_eq!(
        drift.unwrap().to_string(),
        "the pod sandbox lost its network interface (the node's end, bp0123, is gone)"
    );

    observed[0].state = ContainerState::Exited {
        exit_code: 0,
        oom_killed: false,
    };
    let standing = sandbox(&plan, &observed, &seen, never_lost);
    let SandboxStanding::Make { attempt: 1, drift } = standing else {
        panic!("a stopped sandbox is made again, got {standing:?}");
    };
    assert_eq!(
        drift.unwrap().to_string(),
        "the pod sandbox was stopped outside berth (exited with code 0)"
    );

    let standing = sandbox(&plan, &observed[1..], &seen, never_lost);
    assert_eq!(
        standing,
        SandboxStanding::Make {
            attempt: 1,
            drift: Some(Drift::Removed {
                container: labels::SANDBOX_CONTAINER.into()
            })
        }
    );
    let fresh = sandbox(&plan, &[], &Seen::default(), never_lost);
    assert_eq!(
        fresh,
        SandboxStanding::Make {
            attempt: 0,
            drift: None
        },
        "a pod's first sandbox is no drift"
    );
}

#[test]
fn containers_of_pods_the_node_does_not_run_are_orphans_by_pod() {
    let plan = plan("3600");
    let observed = running_pod(&plan);
    let runs: HashSet<&str> = HashSet::from(["u-1"]);
    assert!(orphans(&observed, |uid| runs.contains(uid)).is_empty());
    let found = orphans(&observed, |_| false);
    assert_eq!(found.len(), 1);
    assert_eq!(found["u-1"].len(), 2, "the sandbox and the app");
}
