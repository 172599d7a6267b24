//! Unit tests of a pod worker's pass, the code the agent runs, on the recording fake
//! runtime: a pod started in order, adoption of what runs after a restart, drift repaired,
//! the crash back-off, a leftover container of the same name, a pod that cannot be
//! planned, deletion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};

use super::context::AgentContext;
use super::events::{EventQueue, EventRecorder};
use super::{Pass, PodInput, PodWorker};
use crate::daemons::agent::pod::backoff::BackoffConfig;
use crate::daemons::agent::pod::env::{ObjectResolver, StaticObjects};
use crate::daemons::agent::pod::podspec::{AgentPolicy, PodIdentity, container_name};
use crate::daemons::agent::runtime::fake::{Call, FakeRuntime};
use crate::daemons::agent::runtime::{ContainerSpec, ContainerState, NetworkMode};

type Ctx = Arc<AgentContext<FakeRuntime>>;

/// An agent's context on `fake`, and the events it records.
fn agent_with(fake: &FakeRuntime, objects: Arc<dyn ObjectResolver>) -> (Ctx, EventQueue) {
    let (events, queue) = EventRecorder::new("n1");
    let mut ctx = AgentContext::new(
        fake.clone(),
        "n1".into(),
        "192.0.2.1".into(),
        AgentPolicy::default(),
        BTreeMap::new(),
        events,
        objects,
    );
    ctx.backoff = BackoffConfig {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(10),
        reset_after: Duration::from_secs(600),
    };
    (Arc::new(ctx), queue)
}

fn agent(fake: &FakeRuntime) -> (Ctx, EventQueue) {
    agent_with(fake, Arc::new(StaticObjects::default()))
}

fn input(spec: serde_json::Value) -> PodInput {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
        "spec": spec
    }))
    .expect("a pod");
    PodInput {
        pod: Arc::new(pod),
        gone: false,
    }
}

fn identity() -> PodIdentity {
    PodIdentity {
        uid: "u-1".into(),
        namespace: "shop".into(),
        name: "web".into(),
    }
}

/// The engine name (and, in the fake, the id) of attempt `n` of a container of the pod.
fn named(container: &str, n: u32) -> String {
    container_name(&identity(), container, n)
}

fn one_app() -> PodInput {
    input(serde_json::json!({"containers": [
        {"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}))
}

/// A pod of one app container, running; its events so far taken.
struct Running {
    fake: FakeRuntime,
    ctx: Ctx,
    events: EventQueue,
    worker: PodWorker<FakeRuntime>,
    pod: PodInput,
}

async fn running_app() -> Running {
    let fake = FakeRuntime::default();
    let pod = one_app();
    let (ctx, mut events) = agent(&fake);
    let mut worker = PodWorker::new(ctx.clone());
    let status = settle(&mut worker, &pod).await;
    assert!(running_id(&status).is_some(), "{status:?}");
    events.take();
    Running {
        fake,
        ctx,
        events,
        worker,
        pod,
    }
}

/// One pass that must find a status.
async fn pass(
    worker: &mut PodWorker<FakeRuntime>,
    pod: &PodInput,
) -> (PodStatus, Option<Duration>) {
    match worker.pass(pod).await.expect("the pass succeeds") {
        Pass::Synced {
            status: Some(status),
            wake,
        } => (*status, wake),
        other => panic!("expected a status, got {other:?}"),
    }
}

/// Passes until one finds a status (the first makes the sandbox and comes back at once).
async fn settle(worker: &mut PodWorker<FakeRuntime>, pod: &PodInput) -> PodStatus {
    for _ in 0..10 {
        if let Pass::Synced {
            status: Some(status),
            ..
        } = worker.pass(pod).await.expect("the pass succeeds")
        {
            return *status;
        }
    }
    panic!("no status after 10 passes");
}

fn app_status(status: &PodStatus) -> &ContainerStatus {
    &status
        .container_statuses
        .as_ref()
        .expect("container statuses")[0]
}

fn running_id(status: &PodStatus) -> Option<String> {
    let app = app_status(status);
    app.state.as_ref()?.running.as_ref()?;
    app.container_id.clone()
}

fn waiting_reason(status: &PodStatus) -> Option<String> {
    let state = app_status(status).state.as_ref()?;
    state.waiting.as_ref()?.reason.clone()
}

/// `(reason, message)` of the events recorded since the last look.
fn recorded(queue: &mut EventQueue) -> Vec<(String, String)> {
    queue
        .take()
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

fn has(events: &[(String, String)], reason: &str, message: &str) -> bool {
    events
        .iter()
        .any(|(r, m)| r == reason && m.contains(message))
}

/// Calls that change containers: creates, starts, stops and removes.
fn changes(fake: &FakeRuntime) -> Vec<Call> {
    let calls = fake.calls().into_iter();
    calls
        .filter(|c| {
            matches!(
                c,
                Call::Create(_) | Call::Start(_) | Call::Stop(..) | Call::Remove(_)
            )
        })
        .collect()
}

#[tokio::test]
async fn a_new_pod_gets_its_volumes_and_sandbox_then_init_containers_in_order_then_apps() {
    let fake = FakeRuntime::default();
    let (ctx, _events) = agent(&fake);
    let mut worker = PodWorker::new(ctx);
    let pod = input(serde_json::json!({
        "volumes": [{"name": "work", "emptyDir": {}}],
        "initContainers": [
            {"name": "first", "image": "busybox:1.36"},
            {"name": "second", "image": "busybox:1.36"}],
        "containers": [{"name": "app", "image": "busybox:1.36"}]}));
    fake.exit_on_start(&named("first", 0), 0);
    fake.exit_on_start(&named("second", 0), 0);

    // The first pass makes the volume and the sandbox, and asks to come back at once.
    let first = worker.pass(&pod).await.unwrap();
    assert_eq!(
        first,
        Pass::Synced {
            status: None,
            wake: Some(Duration::ZERO)
        }
    );
    assert_eq!(fake.calls()[0], Call::EnsureVolume("berth-u-1-work".into()));

    let mut status = settle(&mut worker, &pod).await;
    for _ in 0..5 {
        if running_id(&status).is_some() {
            break;
        }
        status = settle(&mut worker, &pod).await;
    }
    assert_eq!(
        running_id(&status),
        Some(format!("docker://{}", named("app", 0)))
    );
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let starts: Vec<Call> = fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Start(_)))
        .collect();
    assert_eq!(
        starts,
        ["POD", "first", "second", "app"].map(|c| Call::Start(named(c, 0)))
    );
    // The app joins the sandbox's network namespace.
    let app = &fake.containers()[&named("app", 0)].0;
    assert_eq!(app.network, NetworkMode::Container(named("POD", 0)));
}

#[tokio::test]
async fn a_failing_init_container_keeps_the_apps_from_starting() {
    let fake = FakeRuntime::default();
    let (ctx, _events) = agent(&fake);
    let mut worker = PodWorker::new(ctx);
    let pod = input(serde_json::json!({
        "restartPolicy": "Never",
        "initContainers": [
            {"name": "first", "image": "busybox:1.36"},
            {"name": "second", "image": "busybox:1.36"}],
        "containers": [{"name": "app", "image": "busybox:1.36"}]}));
    fake.exit_on_start(&named("first", 0), 3);
    let mut status = settle(&mut worker, &pod).await;
    for _ in 0..3 {
        status = settle(&mut worker, &pod).await;
    }
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let init = &status.init_container_statuses.as_ref().unwrap()[0];
    let terminated = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(terminated.exit_code, 3);
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Create(n) if n.contains("second") || n.contains("app"))),
        "{:?}",
        fake.calls()
    );
}

#[tokio::test]
async fn a_restarted_agent_adopts_the_running_containers_and_changes_nothing() {
    let fake = FakeRuntime::default();
    let pod = one_app();
    let (ctx, _events) = agent(&fake);
    let mut before = PodWorker::new(ctx);
    let status = settle(&mut before, &pod).await;
    let id = running_id(&status).expect("the app runs");
    drop(before);

    // A new agent on the same engine: a new context, a new worker, nothing remembered.
    fake.clear_calls();
    let (ctx, mut events) = agent(&fake);
    let mut after = PodWorker::new(ctx.clone());
    let (status, _) = pass(&mut after, &pod).await;
    assert_eq!(running_id(&status), Some(id), "the same container");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(changes(&fake), [], "nothing made, started or removed");
    let seen = recorded(&mut events);
    assert!(!has(&seen, "DriftDetected", ""), "{seen:?}");
    assert!(!ctx.metrics.render().contains("} 1"), "no drift counted");
}

#[tokio::test]
async fn a_container_removed_behind_berths_back_comes_back_as_the_next_attempt() {
    let Running {
        fake,
        ctx,
        mut events,
        mut worker,
        pod,
    } = running_app().await;

    fake.remove_behind_back(&named("app", 0));
    let (status, _) = pass(&mut worker, &pod).await;
    let seen = recorded(&mut events);
    assert!(
        has(
            &seen,
            "DriftDetected",
            "container app was removed outside berth"
        ),
        "{seen:?}"
    );
    assert!(
        has(
            &seen,
            "DriftRepaired",
            "recreated container app (attempt 1)"
        ),
        "{seen:?}"
    );
    assert_eq!(
        running_id(&status),
        Some(format!("docker://{}", named("app", 1)))
    );
    assert_eq!(app_status(&status).restart_count, 1);
    let metrics = ctx.metrics.render();
    assert!(metrics.contains("berth_agent_drift_detected_total{kind=\"removed\"} 1"));
    assert!(metrics.contains("berth_agent_drift_repaired_total{kind=\"removed\"} 1"));
}

#[tokio::test]
async fn a_container_stopped_behind_berths_back_restarts_at_once_without_back_off() {
    let Running {
        fake,
        ctx,
        mut events,
        mut worker,
        pod,
    } = running_app().await;

    let app = named("app", 0);
    ctx.observe_engine_event(&app, "kill");
    fake.exit(&app, 137);
    let (status, _) = pass(&mut worker, &pod).await;
    let seen = recorded(&mut events);
    assert!(
        has(
            &seen,
            "DriftDetected",
            "container app was stopped outside berth (docker kill; exited with code 137)"
        ),
        "{seen:?}"
    );
    assert!(has(&seen, "DriftRepaired", "restarted container app"));
    assert!(!has(&seen, "BackOff", ""), "{seen:?}");
    assert_eq!(
        running_id(&status),
        Some(format!("docker://{}", named("app", 1)))
    );
}

#[tokio::test]
async fn a_changed_spec_replaces_the_container() {
    let Running {
        fake,
        mut events,
        mut worker,
        ..
    } = running_app().await;
    fake.clear_calls();

    let changed = input(serde_json::json!({"containers": [
        {"name": "app", "image": "busybox:1.36", "command": ["sleep", "7200"]}]}));
    let (status, _) = pass(&mut worker, &changed).await;
    let seen = recorded(&mut events);
    assert!(
        has(
            &seen,
            "DriftDetected",
            "container app no longer matches its spec"
        ),
        "{seen:?}"
    );
    assert!(has(
        &seen,
        "DriftRepaired",
        "recreated container app from its spec"
    ));
    let old = named("app", 0);
    let new = named("app", 1);
    assert_eq!(
        changes(&fake),
        [
            Call::Stop(old.clone(), Duration::from_secs(10)),
            Call::Remove(old),
            Call::Create(new.clone()),
            Call::Start(new.clone())
        ]
    );
    assert_eq!(running_id(&status), Some(format!("docker://{new}")));
}

#[tokio::test]
async fn a_sandbox_removed_behind_berths_back_takes_the_pod_with_it() {
    let Running {
        fake,
        mut events,
        mut worker,
        pod,
        ..
    } = running_app().await;

    fake.remove_behind_back(&named("POD", 0));
    let status = settle(&mut worker, &pod).await;
    let seen = recorded(&mut events);
    assert!(
        has(
            &seen,
            "DriftDetected",
            "the pod sandbox was removed outside berth"
        ),
        "{seen:?}"
    );
    assert!(has(
        &seen,
        "DriftRepaired",
        "recreated the pod sandbox and its containers after"
    ));
    // The app went with the old sandbox and comes back as its next attempt: a restart.
    assert_eq!(
        running_id(&status),
        Some(format!("docker://{}", named("app", 1)))
    );
    assert_eq!(app_status(&status).restart_count, 1);
    let app = &fake.containers()[&named("app", 1)].0;
    assert_eq!(app.network, NetworkMode::Container(named("POD", 1)));
}

#[tokio::test]
async fn restart_counts_go_on_when_the_sandbox_is_recreated() {
    let Running {
        fake,
        ctx,
        mut worker,
        pod,
        ..
    } = running_app().await;

    // A crash: after its back-off the app runs as attempt 1, restarted once.
    fake.exit(&named("app", 0), 1);
    let (_, wake) = pass(&mut worker, &pod).await;
    tokio::time::sleep(wake.expect("a back-off") + Duration::from_millis(50)).await;
    let (status, _) = pass(&mut worker, &pod).await;
    assert_eq!(
        running_id(&status),
        Some(format!("docker://{}", named("app", 1)))
    );
    assert_eq!(app_status(&status).restart_count, 1);

    // The sandbox stopped behind berth's back takes the app with it; the app comes back as
    // attempt 2, and its restart count goes on from 1 instead of starting again at 0.
    fake.exit(&named("POD", 0), 0);
    let status = settle(&mut worker, &pod).await;
    assert_eq!(
        running_id(&status),
        Some(format!("docker://{}", named("app", 2)))
    );
    assert_eq!(app_status(&status).restart_count, 2);

    // A restarted agent (a new worker) that finds the sandbox removed while it was away
    // learns the app's attempt from the containers it removes with it.
    fake.remove_behind_back(&named("POD", 1));
    let mut adopting = PodWorker::new(ctx);
    let status = settle(&mut adopting, &pod).await;
    assert_eq!(
        running_id(&status),
        Some(format!("docker://{}", named("app", 3)))
    );
    assert_eq!(app_status(&status).restart_count, 3);
}

#[tokio::test]
async fn a_crashing_container_waits_out_a_doubling_back_off() {
    let Running {
        fake,
        mut events,
        mut worker,
        pod,
        ..
    } = running_app().await;

    // First crash: 300 ms of CrashLoopBackOff, one BackOff event, no new container.
    fake.exit(&named("app", 0), 1);
    fake.clear_calls();
    let (status, wake) = pass(&mut worker, &pod).await;
    assert_eq!(waiting_reason(&status).as_deref(), Some("CrashLoopBackOff"));
    let first = wake.expect("a wake-up at the end of the back-off");
    assert!(
        first > Duration::from_millis(200) && first <= Duration::from_millis(300),
        "{first:?}"
    );
    assert!(has(
        &recorded(&mut events),
        "BackOff",
        "Back-off restarting failed container app"
    ));
    let (_, _) = pass(&mut worker, &pod).await;
    assert_eq!(changes(&fake), [], "nothing starts during the back-off");
    assert!(recorded(&mut events).is_empty(), "one BackOff per crash");

    // After it, attempt 1 starts; its crash waits twice as long.
    tokio::time::sleep(first + Duration::from_millis(50)).await;
    let (status, _) = pass(&mut worker, &pod).await;
    assert_eq!(
        running_id(&status),
        Some(format!("docker://{}", named("app", 1)))
    );
    fake.exit(&named("app", 1), 1);
    let (status, wake) = pass(&mut worker, &pod).await;
    assert_eq!(waiting_reason(&status).as_deref(), Some("CrashLoopBackOff"));
    let second = wake.expect("a wake-up at the end of the back-off");
    assert!(
        second > Duration::from_millis(500) && second <= Duration::from_millis(600),
        "{second:?}"
    );
}

#[tokio::test]
async fn a_leftover_container_of_the_same_name_is_replaced() {
    let fake = FakeRuntime::default();
    let pod = one_app();
    // A container named as the app's first attempt, which no listing of the pod finds (an
    // agent that died between create and start, or one renamed by hand).
    let leftover = named("app", 0);
    fake.insert(
        ContainerSpec {
            name: leftover.clone(),
            image: "busybox:1.36".into(),
            entrypoint: None,
            cmd: None,
            working_dir: None,
            env: Vec::new(),
            user: None,
            hostname: None,
            network: NetworkMode::None,
            dns: None,
            host_aliases: Vec::new(),
            ports: Vec::new(),
            ipv4_address: None,
            memory_bytes: None,
            nano_cpus: None,
            read_only_root: false,
            privileged: false,
            init: false,
            mounts: Vec::new(),
            labels: BTreeMap::new(),
        },
        ContainerState::Created,
    );
    let (ctx, _events) = agent(&fake);
    let mut worker = PodWorker::new(ctx);
    let status = settle(&mut worker, &pod).await;
    let app: Vec<Call> = changes(&fake)
        .into_iter()
        .filter(
            |c| matches!(c, Call::Create(n) | Call::Remove(n) | Call::Start(n) if *n == leftover),
        )
        .collect();
    assert_eq!(
        app,
        [
            Call::Create(leftover.clone()),
            Call::Remove(leftover.clone()),
            Call::Create(leftover.clone()),
            Call::Start(leftover.clone())
        ]
    );
    assert_eq!(running_id(&status), Some(format!("docker://{leftover}")));
    let labels = &fake.containers()[&leftover].0.labels;
    assert_eq!(
        labels["berth.dev/pod-uid"], "u-1",
        "the pod's own container now"
    );
}

#[tokio::test]
async fn a_pod_that_cannot_be_planned_waits_without_a_sandbox() {
    let fake = FakeRuntime::default();
    let (ctx, mut events) = agent(&fake);
    let mut worker = PodWorker::new(ctx);
    let pod = input(
        serde_json::json!({"containers": [{"name": "app", "image": "busybox:1.36",
        "envFrom": [{"configMapRef": {"name": "absent"}}]}]}),
    );
    let (status, _) = pass(&mut worker, &pod).await;
    assert_eq!(
        waiting_reason(&status).as_deref(),
        Some("CreateContainerConfigError")
    );
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(changes(&fake), [], "no sandbox for a pod that cannot run");
    assert!(has(
        &recorded(&mut events),
        "Failed",
        "ConfigMap \"absent\" not found"
    ));
}

/// ConfigMaps that count how often they are looked up.
#[derive(Default)]
struct CountingObjects(AtomicUsize);

impl ObjectResolver for CountingObjects {
    fn config_map(&self, _namespace: &str, _name: &str) -> Option<BTreeMap<String, String>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Some(BTreeMap::from([("MODE".into(), "fast".into())]))
    }

    fn secret(&self, _namespace: &str, _name: &str) -> Option<BTreeMap<String, String>> {
        None
    }
}

#[tokio::test]
async fn each_pass_plans_the_pod_once() {
    let fake = FakeRuntime::default();
    let objects = Arc::new(CountingObjects::default());
    let (ctx, _events) = agent_with(&fake, objects.clone());
    let mut worker = PodWorker::new(ctx);
    let pod = input(
        serde_json::json!({"containers": [{"name": "app", "image": "busybox:1.36",
        "envFrom": [{"configMapRef": {"name": "settings"}}]}]}),
    );
    settle(&mut worker, &pod).await;
    for _ in 0..3 {
        let before = objects.0.load(Ordering::SeqCst);
        pass(&mut worker, &pod).await;
        assert_eq!(objects.0.load(Ordering::SeqCst) - before, 1);
    }
}

#[tokio::test]
async fn a_deleted_pod_is_stopped_and_removed_with_its_volumes() {
    let fake = FakeRuntime::default();
    let (ctx, _events) = agent(&fake);
    let mut worker = PodWorker::new(ctx);
    let mut pod = input(serde_json::json!({
        "volumes": [{"name": "work", "emptyDir": {}}],
        "containers": [{"name": "app", "image": "busybox:1.36"}]}));
    settle(&mut worker, &pod).await;
    pod.gone = true;
    assert_eq!(worker.pass(&pod).await.unwrap(), Pass::Removed);
    assert!(fake.containers().is_empty());
    assert!(
        fake.calls()
            .contains(&Call::RemoveVolume("berth-u-1-work".into()))
    );
}
