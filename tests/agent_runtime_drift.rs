//! Adoption and drift against the real Docker engine, through the agent's pod worker: a new
//! worker (as after an agent restart) adopts the running containers, and containers
//! changed, stopped or removed outside berth are found and put back; the containers of a
//! pod the node no longer runs are orphans.

pub mod support;

use std::process::Command;
use std::time::Duration;

use berth::daemons::agent::pod::drift::orphans;
use berth::daemons::agent::runtime::ContainerRuntime;
use berth::daemons::agent::runtime::labels;
use berth::daemons::agent::worker::teardown::pod_containers;
use futures_util::StreamExt;
use support::docker::{TEST_IMAGE, TestScope, runtime};
use support::worker::{PodAgent, container_id};

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {out:?}");
}

fn has(events: &[(String, String)], reason: &str, message: &str) -> bool {
    events
        .iter()
        .any(|(r, m)| r == reason && m.contains(message))
}

#[tokio::test]
async fn containers_changed_stopped_or_removed_outside_berth_are_found_and_put_back() {
    let rt = runtime().await;
    let scope = TestScope::new("drift");
    let spec = |arg: &str| {
        serde_json::json!({
            "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", arg]}]
        })
    };
    let pod = scope.pod("drifty", spec("3600"));
    let uid = pod.metadata.uid.clone().unwrap();
    let mut agent = PodAgent::new(&rt, &scope.context(), &pod);
    let status = agent.start().await;
    let app = container_id(&status, "app").expect("the app runs");
    let listed = pod_containers(&rt, &uid).await.unwrap();

    // Adoption: a new worker finds the pod in sync, ids unchanged, nothing made.
    let mut adopter = PodAgent::new(&rt, &scope.context(), &pod);
    let status = adopter.start().await;
    assert_eq!(container_id(&status, "app"), Some(app.clone()));
    let mut ids: Vec<String> = pod_containers(&rt, &uid)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    let mut before: Vec<String> = listed.iter().map(|c| c.id.clone()).collect();
    before.sort();
    assert_eq!(ids, before);
    let events = adopter.events();
    assert!(!has(&events, "DriftDetected", ""), "{events:?}");

    // A changed pod spec replaces the container with the next attempt.
    agent.input.pod = std::sync::Arc::new(scope.pod("drifty", spec("7200")));
    let status = agent
        .until(Duration::from_secs(30), |s| {
            container_id(s, "app").is_some_and(|id| id != app)
        })
        .await;
    let changed = container_id(&status, "app").expect("a new container");
    assert_ne!(changed, app);
    let events = agent.events();
    assert!(
        has(
            &events,
            "DriftDetected",
            "container app no longer matches its spec"
        ),
        "{events:?}"
    );
    assert!(
        rt.inspect_container(&app).await.unwrap().is_none(),
        "the old one is gone"
    );

    // Stopped behind berth's back: the engine's events say it was not the agent.
    let mut engine = rt.events(&[(labels::POD_UID, uid.as_str())]);
    docker(&["stop", "-t", "0", &changed]);
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(event)) = engine.next().await {
            agent
                .ctx
                .observe_engine_event(&event.container_id, &event.action);
            if event.container_id == changed && event.action == "die" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "the engine reports the stop");
    let status = agent
        .until(Duration::from_secs(30), |s| {
            container_id(s, "app").is_some_and(|id| id != changed)
        })
        .await;
    let restarted = container_id(&status, "app").expect("restarted");
    let events = agent.events();
    assert!(
        has(
            &events,
            "DriftDetected",
            "container app was stopped outside berth (docker "
        ),
        "{events:?}"
    );
    assert!(
        has(&events, "DriftRepaired", "restarted container app"),
        "{events:?}"
    );

    // Removed behind berth's back: made again as the next attempt.
    docker(&["rm", "-f", &restarted]);
    let status = agent
        .until(Duration::from_secs(30), |s| {
            container_id(s, "app").is_some_and(|id| id != restarted)
        })
        .await;
    assert!(container_id(&status, "app").is_some());
    let events = agent.events();
    assert!(
        has(
            &events,
            "DriftDetected",
            "container app was removed outside berth"
        ),
        "{events:?}"
    );
    let app_status = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        app_status.restart_count, 3,
        "attempts 1, 2 and 3 after the first"
    );

    // The pod is gone from the node: its containers are orphans.
    let listed = pod_containers(&rt, &uid).await.unwrap();
    assert!(orphans(&listed, |u| u == uid).is_empty());
    let orphaned = orphans(&listed, |_| false);
    assert_eq!(orphaned.len(), 1);
    assert_eq!(orphaned[uid.as_str()].len(), listed.len());
}
