//! Init containers end to end on the real `berth agent` and Docker: they run one after the
//! other before the app, a failing one holds the app back with the status and back-off a user
//! reads in Kubernetes, and a restarted pod (its sandbox gone) runs them again.

pub mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde_json::json;
use support::api::{Server, stderr, stdout};
use support::cluster::*;
use support::docker::{TEST_IMAGE, TestScope, runtime, sh};
use support::{accept, eventually};

const MINUTE: Duration = Duration::from_secs(60);

fn init_statuses(p: &Pod) -> Vec<ContainerStatus> {
    p.status
        .as_ref()
        .and_then(|s| s.init_container_statuses.clone())
        .unwrap_or_default()
}

fn app_status(p: &Pod) -> Option<ContainerStatus> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "app").cloned())
}

fn condition(p: &Pod, kind: &str) -> Option<(String, Option<String>)> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn logs(server: &Server, container: &str) -> String {
    let out = server.kubectl(&["logs", "ordered", "-c", container]);
    assert!(out.status.success(), "kubectl logs: {}", stderr(&out));
    stdout(&out)
}

/// Two init containers append to a shared emptyDir; the second refuses to run unless the
/// first has; the app prints what they wrote. Killing the pod's sandbox restarts the pod: both
/// run again, in order, before the app starts again.
#[tokio::test]
async fn init_containers_run_in_order_before_the_app_and_again_when_the_pod_restarts() {
    runtime().await;
    let scope = TestScope::new("e2e-init");
    let server = Server::start();
    let agent = Agent::start(&server, "node-init", &scope, &[]);
    let client = admin(&server).await;
    let pod = create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "ordered"}, "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "work", "emptyDir": {}}],
            "initContainers": [
                {"name": "init-one", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                 "command": sh("echo one >> /work/order")},
                {"name": "init-two", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                 "command": sh("[ \"$(tail -n 1 /work/order)\" = one ] || exit 9; echo two >> /work/order")}],
            "containers": [
                {"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                 "command": sh("cat /work/order; exec sleep 3600")}]}}),
    )
    .await;
    let uid = pod.metadata.uid.expect("a uid");
    let running = wait_pod(&client, "ordered", MINUTE, "Running and ready", all_ready).await;
    let inits = init_statuses(&running);
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["init-one", "init-two"]
    );
    for init in &inits {
        let done = init
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .unwrap_or_else(|| panic!("{} terminated: {init:?}", init.name));
        assert_eq!(
            (done.exit_code, done.reason.as_deref()),
            (0, Some("Completed")),
            "{init:?}"
        );
        assert!(init.ready, "a completed init container is ready: {init:?}");
    }
    assert_eq!(
        condition(&running, "Initialized").map(|c| c.0),
        Some("True".into())
    );
    let app_log = eventually("the app's log", MINUTE, || async {
        accept(logs(&server, "app"), |l| !l.is_empty())
    })
    .await;
    assert_eq!(app_log, "one\ntwo\n", "the init containers ran in order");

    // The pod restarts: its sandbox is killed, as a reboot of the node would, and the agent
    // makes a new one and the pod's containers again.
    let sandbox = running_sandbox(&uid);
    assert!(!sandbox.is_empty(), "a running sandbox");
    let first_app = container_id(&running, "app");
    docker(&["kill", &sandbox]);
    let restarted = wait_pod(
        &client,
        "ordered",
        MINUTE,
        "running again after its sandbox died",
        |p| all_ready(p) && app_status(p).is_some() && container_id(p, "app") != first_app,
    )
    .await;
    assert_ne!(running_sandbox(&uid), sandbox, "a new sandbox");
    let again = eventually("the restarted app's log", MINUTE, || async {
        accept(logs(&server, "app"), |l| l.lines().count() >= 2)
    })
    .await;
    assert_eq!(
        again,
        "one\ntwo\none\ntwo\n",
        "the restarted pod ran both init containers again, in order, before the app: {:?}",
        init_statuses(&restarted)
    );
    drop(agent);
}

/// An init container that keeps failing: the app is never created, the pod stays Pending and
/// not Initialized, the init container waits in CrashLoopBackOff, and its restarts slow down
/// (the agent's back-off here: 1 s doubling to 4 s).
#[tokio::test]
async fn a_failing_init_container_holds_the_app_back_with_its_status_and_back_off() {
    runtime().await;
    let scope = TestScope::new("e2e-init-fail");
    let server = Server::start();
    let agent = Agent::start(&server, "node-init-fail", &scope, &[]);
    let client = admin(&server).await;
    let pod = create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "blocked"}, "spec": {
            "terminationGracePeriodSeconds": 1,
            "initContainers": [
                {"name": "init", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": sh("echo not yet; exit 1")}],
            "containers": [
                {"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": ["sleep", "3600"]}]}}),
    )
    .await;
    let uid = pod.metadata.uid.expect("a uid");
    let restarts = |p: &Pod| init_statuses(p).first().map_or(0, |c| c.restart_count);

    // The time from the first restart to the fourth: with back-off 1 + 2 + 4 s at least
    // (restarts at once or at a fixed second would take about 3 s).
    wait_pod(&client, "blocked", MINUTE, "a first restart", |p| {
        restarts(p) >= 1
    })
    .await;
    let first = Instant::now();
    let saw_back_off = std::cell::Cell::new(false);
    let blocked = wait_pod(&client, "blocked", MINUTE, "a fourth restart", |p| {
        let waiting = init_statuses(p)
            .first()
            .and_then(|c| c.state.clone())
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason);
        if waiting.as_deref() == Some("CrashLoopBackOff") {
            saw_back_off.set(true);
        }
        restarts(p) >= 4
    })
    .await;
    let slowed = first.elapsed();
    assert!(
        slowed >= Duration::from_secs(6),
        "restarts 1 to 4 took {slowed:?}: no back-off between them"
    );
    assert!(
        saw_back_off.get(),
        "the init container waited in CrashLoopBackOff between tries"
    );

    let status = blocked.status.clone().expect("a status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(
        condition(&blocked, "Initialized"),
        Some(("False".into(), Some("ContainersNotInitialized".into())))
    );
    let init = &init_statuses(&blocked)[0];
    let last = init
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("the last failed try");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    let app = app_status(&blocked).expect("the app's status");
    assert_eq!(
        app.state
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason)
            .as_deref(),
        Some("PodInitializing")
    );
    assert_eq!(app.restart_count, 0);
    assert!(
        pod_container_ids(&uid, Some("app")).is_empty(),
        "the app container was never created"
    );
    drop(agent);
}
