//! Adoption and drift against the real Docker engine: a fresh listing by label finds the
//! same containers, and containers stopped, removed or changed outside berth are detected.

mod support_docker;

use std::collections::BTreeSet;
use std::process::Command;

use berth::daemons::agent::pod::drift::{Drift, orphans, pod_drift};
use berth::daemons::agent::runtime::ContainerState;
use berth::daemons::agent::worker::teardown::{pod_containers, start_pod};
use support_docker::{TEST_IMAGE, TestScope, runtime};

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {out:?}");
}

#[tokio::test]
async fn containers_stopped_removed_or_changed_outside_berth_are_detected() {
    let rt = runtime().await;
    let scope = TestScope::new("drift");
    let spec = |arg: &str| {
        serde_json::json!({
            "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", arg]}]
        })
    };
    let pod = scope.pod("drifty", spec("3600"));
    let plan = scope.plan(&pod);
    let started = start_pod(&rt, &plan).await.expect("pod starts");
    let app = started.containers[0].1.clone();
    let uid = plan.identity.uid.clone();

    // Adoption: what a restarted agent lists is in sync with its plan, ids unchanged.
    let observed = pod_containers(&rt, &uid).await.unwrap();
    assert_eq!(pod_drift(&plan, &observed), vec![]);
    assert!(observed.iter().any(|c| c.id == app));

    // A changed pod spec shows as a spec-hash mismatch on the running container.
    let changed = scope.plan(&scope.pod("drifty", spec("7200")));
    assert!(matches!(
        pod_drift(&changed, &observed).as_slice(),
        [Drift::SpecChanged { container, id, .. }] if container == "app" && *id == app
    ));

    // Stopped behind berth's back.
    docker(&["stop", "-t", "0", &app]);
    let observed = pod_containers(&rt, &uid).await.unwrap();
    let found = pod_drift(&plan, &observed);
    assert!(
        matches!(found.as_slice(),
            [Drift::NotRunning { container, state: ContainerState::Exited { .. }, .. }] if container == "app"),
        "{found:?}"
    );
    assert!(found[0].to_string().contains("no longer running"));

    // Removed behind berth's back.
    docker(&["rm", "-f", &app]);
    let observed = pod_containers(&rt, &uid).await.unwrap();
    assert_eq!(
        pod_drift(&plan, &observed),
        vec![Drift::Missing {
            container: "app".into()
        }]
    );

    // The pod is gone from the node: its remaining containers (the sandbox) are orphans.
    assert_eq!(orphans(&BTreeSet::from([uid.clone()]), &observed), vec![]);
    let orphaned = orphans(&BTreeSet::new(), &observed);
    assert!(
        matches!(orphaned.as_slice(), [Drift::Orphan { pod, container, .. }]
            if pod == "default/drifty" && container == "POD"),
        "{orphaned:?}"
    );
}
