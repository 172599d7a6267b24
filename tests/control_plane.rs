//! The scheduler and controllers inside a real `berth server`, with fake nodes (Node objects
//! whose Lease the test renews and whose pods it marks Running and Ready, as an agent would):
//! spreading, node failure and eviction, rolling updates and undo, unschedulable pods, drain,
//! cascading deletes and namespace deletion. kubectl is the real one.

pub mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::control::{Cluster, deployment};
use support::{accept, eventually, poll_every};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// How often a rollout is sampled for an invariant (ready count, one image at a time).
const SAMPLE: Duration = Duration::from_millis(30);

async fn three_nodes(c: &Cluster) -> Vec<support::control::FakeNode> {
    let mut nodes = Vec::new();
    for n in ["node-a", "node-b", "node-c"] {
        nodes.push(c.add_node(n, "4", "8Gi").await);
    }
    nodes
}

fn ready_pods(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

async fn wait_spread(c: &Cluster, want: &[(&str, usize)]) {
    eventually(
        "the pods' placement",
        Duration::from_secs(30),
        || async move {
            let p = c.placement("default").await;
            want.iter()
                .all(|(n, k)| p.get(*n).copied().unwrap_or(0) == *k)
                && p.values().sum::<usize>() == want.iter().map(|(_, k)| k).sum::<usize>()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_replicas_spread_two_two_two_and_deleting_the_deployment_removes_everything() {
    let c = &Cluster::start(&[]);
    let _nodes = three_nodes(c).await;
    c.http
        .create(DEPLOYS, deployment("web", 6, "berth-test/busybox:1.36"))
        .await;
    wait_spread(c, &[("node-a", 2), ("node-b", 2), ("node-c", 2)]).await;
    eventually(
        "the deployment to be available",
        Duration::from_secs(30),
        || async move {
            let d = c.http.get(&format!("{DEPLOYS}/web")).await;
            d["status"]["availableReplicas"] == 6 && d["status"]["updatedReplicas"] == 6
        },
    )
    .await;
    let d = c.http.get(&format!("{DEPLOYS}/web")).await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let out = c
        .server
        .kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=20s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    c.http.delete(&format!("{DEPLOYS}/web"), "Background").await;
    eventually(
        "the ReplicaSets and pods to go",
        Duration::from_secs(20),
        || async move {
            let rs = c
                .http
                .get("/apis/apps/v1/namespaces/default/replicasets")
                .await;
            rs["items"].as_array().is_some_and(Vec::is_empty) && c.pods("default").await.is_empty()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_stops_is_tainted_and_its_pods_move_to_the_others() {
    let c = &Cluster::start(&[]);
    let mut nodes = three_nodes(c).await;
    c.http
        .create(DEPLOYS, deployment("web", 6, "berth-test/busybox:1.36"))
        .await;
    wait_spread(c, &[("node-a", 2), ("node-b", 2), ("node-c", 2)]).await;

    // The floor: the node grace period (10 s) to the taint, the default toleration (10 s
    // more) to the eviction. Each wait allows three times its floor.
    let killed = Instant::now();
    nodes[2].stop();
    eventually(
        "node-c to be unreachable",
        Duration::from_secs(30),
        || async move {
            let n = c.http.get("/api/v1/nodes/node-c").await;
            let tainted = n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| {
                    t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"
                });
            let unknown = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "Unknown");
            tainted && unknown
        },
    )
    .await;
    let tainted_after = killed.elapsed();
    eventually(
        "six Running replicas on node-a and node-b",
        Duration::from_secs(60),
        || async move {
            let pods = c.pods("default").await;
            let moved = pods
                .iter()
                .all(|p| p["spec"]["nodeName"] == "node-a" || p["spec"]["nodeName"] == "node-b");
            pods.len() == 6 && moved && ready_pods(&pods) == 6
        },
    )
    .await;
    let recovered = killed.elapsed();
    eprintln!(
        "node failure: tainted after {tainted_after:?}, 6 replicas running elsewhere after {recovered:?}"
    );
    wait_spread(c, &[("node-a", 3), ("node-b", 3)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_with_max_unavailable_zero_keeps_six_ready_and_undo_restores() {
    let c = &Cluster::start(&[]);
    let _nodes = three_nodes(c).await;
    let mut d = deployment("web", 6, "berth-test/busybox:1.36");
    d["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    c.http.create(DEPLOYS, d).await;
    eventually("six ready pods", Duration::from_secs(30), || async move {
        ready_pods(&c.pods("default").await) == 6
    })
    .await;
    c.server
        .kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=20s"]);

    c.http.patch(&format!("{DEPLOYS}/web"), json!({"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "berth-test/busybox:2", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}))
        .await;
    // Every sample of the rollout counts the ready pods.
    let fewest = std::cell::Cell::new(usize::MAX);
    let rollout = poll_every(SAMPLE, Duration::from_secs(60), || async {
        let pods = c.pods("default").await;
        fewest.set(fewest.get().min(ready_pods(&pods)));
        let d = c.http.get(&format!("{DEPLOYS}/web")).await;
        let s = &d["status"];
        let new_image = pods
            .iter()
            .filter(|p| p["spec"]["containers"][0]["image"] == "berth-test/busybox:2")
            .count();
        let done = s["updatedReplicas"] == 6
            && s["availableReplicas"] == 6
            && s["replicas"] == 6
            && new_image == 6
            && pods.len() == 6;
        if done { Ok(()) } else { Err(s.clone()) }
    })
    .await;
    rollout.unwrap_or_else(|s| panic!("the rollout did not finish: {s}"));
    let fewest = fewest.get();
    assert!(fewest >= 6, "only {fewest} pods were ready at one point");
    let out = c
        .server
        .kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=20s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = c.http.get(&format!("{DEPLOYS}/web")).await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let (ok, history, err) = c.berth(&["rollout", "history", "deploy/web"]);
    assert!(
        ok && history.contains("1 ") && history.contains("2 "),
        "{history}{err}"
    );

    let out = c.server.kubectl_ok(&["rollout", "undo", "deploy/web"]);
    assert!(out.contains("rolled back"), "{out}");
    eventually(
        "the old template back on six pods",
        Duration::from_secs(60),
        || async move {
            let pods = c.pods("default").await;
            pods.len() == 6
                && pods
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == "berth-test/busybox:1.36")
                && ready_pods(&pods) == 6
        },
    )
    .await;
    let (ok, out, err) = c.berth(&["rollout", "status", "deploy/web", "--timeout", "20"]);
    assert!(ok && out.contains("successfully rolled out"), "{out}{err}");
    let d = c.http.get(&format!("{DEPLOYS}/web")).await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let rs = c
        .http
        .get("/apis/apps/v1/namespaces/default/replicasets")
        .await;
    assert_eq!(
        rs["items"].as_array().map(Vec::len),
        Some(2),
        "undo reuses the first ReplicaSet"
    );

    // pause / resume with berth.
    let (ok, out, err) = c.berth(&["rollout", "pause", "deploy/web"]);
    assert!(ok && out.contains("paused"), "{out}{err}");
    let changed = c
        .http
        .patch(
            &format!("{DEPLOYS}/web"),
            json!({"spec": {"template": {"metadata": {"annotations": {"x": "1"}}}}}),
        )
        .await;
    // The controller has seen the new template once its status says so; only then may the
    // absence of a new ReplicaSet mean something.
    let generation = changed["metadata"]["generation"]
        .as_i64()
        .expect("a generation");
    eventually(
        "the paused Deployment's change observed",
        Duration::from_secs(30),
        || async move {
            let d = c.http.get(&format!("{DEPLOYS}/web")).await;
            accept(d, |d| {
                d["status"]["observedGeneration"].as_i64() >= Some(generation)
            })
        },
    )
    .await;
    let rs = c
        .http
        .get("/apis/apps/v1/namespaces/default/replicasets")
        .await;
    assert_eq!(
        rs["items"].as_array().map(Vec::len),
        Some(2),
        "a paused deployment does not roll"
    );
    let (ok, _, err) = c.berth(&["rollout", "resume", "deploy/web"]);
    assert!(ok, "{err}");
    eventually(
        "the rollout after resume",
        Duration::from_secs(30),
        || async move {
            c.http
                .get("/apis/apps/v1/namespaces/default/replicasets")
                .await["items"]
                .as_array()
                .map(Vec::len)
                == Some(3)
        },
    )
    .await;
}

/// How many scheduling attempts of pod `name` failed: the counts of its FailedScheduling
/// events.
async fn failed_scheduling(c: &Cluster, name: &str) -> i64 {
    let events = c.http.get("/api/v1/namespaces/default/events").await;
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == name)
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_too_big_for_every_node_waits_with_the_reason_until_a_big_node_joins() {
    let c = &Cluster::start(&[]);
    let _a = c.add_node("small-a", "2", "1Gi").await;
    let _b = c.add_node("small-b", "2", "1Gi").await;
    let _c = c.add_node("labelled", "2", "1Gi").await;
    c.http
        .create(
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "big"},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "small-a"},
            "containers": [{"name": "c", "image": "berth-test/busybox:1.36",
            "resources": {"requests": {"memory": "4Gi"}}}]}}),
        )
        .await;
    // Two kinds of reasons: small-a lacks memory; the other two do not match the selector.
    eventually(
        "PodScheduled=False",
        Duration::from_secs(10),
        || async move {
            let p = c.http.get("/api/v1/namespaces/default/pods/big").await;
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
        },
    )
    .await;
    let p = c.http.get("/api/v1/namespaces/default/pods/big").await;
    let cond = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(
        cond["message"],
        "0/3 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, 1 Insufficient memory."
    );
    // The scheduler writes the condition first and the event after it.
    eventually(
        "a FailedScheduling event",
        Duration::from_secs(10),
        || async move {
            let events = c.http.get("/api/v1/namespaces/default/events").await;
            events["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["reason"] == "FailedScheduling")
        },
    )
    .await;

    // A plain pod that fits nowhere, then a big node joins.
    c.http
        .create(
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "c", "image": "berth-test/busybox:1.36",
            "resources": {"requests": {"memory": "16Gi"}}}]}}),
        )
        .await;
    eventually(
        "huge to be unschedulable",
        Duration::from_secs(10),
        || async move {
            let p = c.http.get("/api/v1/namespaces/default/pods/huge").await;
            p["status"]["conditions"][0]["message"]
                == "0/3 nodes are available: 3 Insufficient memory."
        },
    )
    .await;
    // A node changes: the scheduler tries the waiting pods again after their back-off (1 s
    // after one failure), and each attempt bumps the FailedScheduling event's count. Once a
    // retry after the change is on record, huge is still not on a node too small.
    let first = eventually(
        "huge's first FailedScheduling event",
        Duration::from_secs(10),
        || async move { accept(failed_scheduling(c, "huge").await, |n| *n >= 1) },
    )
    .await;
    c.http
        .patch(
            "/api/v1/nodes/small-a",
            json!({"metadata": {"labels": {"poked": "yes"}}}),
        )
        .await;
    eventually(
        "a scheduling attempt after the node changed",
        Duration::from_secs(30),
        || async move { accept(failed_scheduling(c, "huge").await, |n| *n > first) },
    )
    .await;
    assert!(c.http.get("/api/v1/namespaces/default/pods/huge").await["spec"]["nodeName"].is_null());
    let _big = c.add_node("big", "8", "32Gi").await;
    let joined = Instant::now();
    eventually(
        "huge to land on the big node",
        Duration::from_secs(15),
        || async move {
            c.http.get("/api/v1/namespaces/default/pods/huge").await["spec"]["nodeName"] == "big"
        },
    )
    .await;
    let took = joined.elapsed();
    eprintln!("scheduled {took:?} after the big node joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_empties_a_node_and_cordon_keeps_it_empty() {
    let c = &Cluster::start(&[]);
    let _nodes = three_nodes(c).await;
    c.http
        .create(DEPLOYS, deployment("web", 6, "berth-test/busybox:1.36"))
        .await;
    wait_spread(c, &[("node-a", 2), ("node-b", 2), ("node-c", 2)]).await;
    let out = c
        .server
        .kubectl_ok(&["drain", "node-a", "--ignore-daemonsets", "--timeout=30s"]);
    assert!(out.contains("drained"), "{out}");
    eventually(
        "six pods on node-b and node-c",
        Duration::from_secs(20),
        || async move {
            let p = c.placement("default").await;
            !p.contains_key("node-a") && p.get("node-b") == Some(&3) && p.get("node-c") == Some(&3)
        },
    )
    .await;
    let n = c.http.get("/api/v1/nodes/node-a").await;
    assert_eq!(n["spec"]["unschedulable"], true);
    c.server.kubectl_ok(&["uncordon", "node-a"]);

    // berth's own drain, with a pod no controller manages: refused without --force.
    c.http.create("/api/v1/namespaces/default/pods", json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lonely"},
        "spec": {"nodeName": "node-b", "containers": [{"name": "c", "image": "berth-test/busybox:1.36"}]}}))
        .await;
    let (ok, _, err) = c.berth(&["drain", "node-b"]);
    assert!(
        !ok && err.contains("--force") && err.contains("default/lonely"),
        "{err}"
    );
    let (ok, out, err) = c.berth(&["drain", "node-b", "--force", "--timeout", "30"]);
    assert!(ok && out.contains("node/node-b drained"), "{out}{err}");
    eventually("node-b empty", Duration::from_secs(20), || async move {
        let p = c.placement("default").await;
        !p.contains_key("node-b") && p.values().sum::<usize>() == 6
    })
    .await;
    let (ok, out, _) = c.berth(&["uncordon", "node-b"]);
    assert!(ok && out.contains("node/node-b uncordoned"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_and_orphan_deletes_and_namespace_deletion() {
    let c = &Cluster::start(&[]);
    let _nodes = three_nodes(c).await;
    c.http
        .create(DEPLOYS, deployment("fg", 2, "berth-test/busybox:1.36"))
        .await;
    c.http
        .create(DEPLOYS, deployment("orph", 2, "berth-test/busybox:1.36"))
        .await;
    eventually(
        "four running pods",
        Duration::from_secs(20),
        || async move { ready_pods(&c.pods("default").await) == 4 },
    )
    .await;
    c.server
        .kubectl_ok(&["delete", "deploy", "fg", "--cascade=foreground"]);
    c.server
        .kubectl_ok(&["delete", "deploy", "orph", "--cascade=orphan"]);
    eventually(
        "fg's pods gone and orph's kept",
        Duration::from_secs(20),
        || async move {
            let pods = c.pods("default").await;
            let deploys = c.http.get(DEPLOYS).await;
            deploys["items"].as_array().is_some_and(Vec::is_empty)
                && pods.len() == 2
                && pods
                    .iter()
                    .all(|p| p["metadata"]["labels"]["app"] == "orph")
        },
    )
    .await;
    let rs = c
        .http
        .get("/apis/apps/v1/namespaces/default/replicasets")
        .await;
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{rs}");
    assert!(
        items[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{rs}"
    );

    c.http
        .create(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        )
        .await;
    let mut d = deployment("web", 3, "berth-test/busybox:1.36");
    d["metadata"]["namespace"] = json!("shop");
    c.http
        .create("/apis/apps/v1/namespaces/shop/deployments", d)
        .await;
    c.http
        .create(
            "/api/v1/namespaces/shop/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}),
        )
        .await;
    eventually(
        "three pods in shop",
        Duration::from_secs(20),
        || async move { c.pods("shop").await.len() == 3 },
    )
    .await;
    c.server
        .kubectl_ok(&["delete", "namespace", "shop", "--wait=false"]);
    eventually(
        "the namespace and its contents to go",
        Duration::from_secs(30),
        || async move { c.http.get_opt("/api/v1/namespaces/shop").await.is_none() },
    )
    .await;
    for kind in [
        "/api/v1/pods",
        "/apis/apps/v1/replicasets",
        "/apis/apps/v1/deployments",
        "/api/v1/configmaps",
    ] {
        let all = c.http.get(kind).await;
        assert!(
            all["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["metadata"]["namespace"] != "shop"),
            "{kind}: {all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_runs_old_and_new_pods_together() {
    let c = &Cluster::start(&[]);
    let _nodes = three_nodes(c).await;
    let mut d = deployment("web", 3, "berth-test/busybox:1.36");
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    c.http.create(DEPLOYS, d).await;
    eventually("three ready pods", Duration::from_secs(30), || async move {
        ready_pods(&c.pods("default").await) == 3
    })
    .await;
    c.http
        .patch(
            &format!("{DEPLOYS}/web"),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "main",
            "image": "berth-test/busybox:2"}]}}}}),
        )
        .await;
    // Every sample of the rollout has one image at most.
    let recreate = poll_every(SAMPLE, Duration::from_secs(30), || async {
        let pods = c.pods("default").await;
        let images: std::collections::BTreeSet<String> = pods
            .iter()
            .map(|p| {
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert!(images.len() <= 1, "old and new pods together: {images:?}");
        pods.len() == 3 && images.contains("berth-test/busybox:2") && ready_pods(&pods) == 3
    })
    .await;
    recreate.expect("the recreate to finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_cannot_progress_reports_its_deadline() {
    let c = &Cluster::start(&[]);
    // No node: the pods stay Pending and the rollout cannot progress.
    let mut d = deployment("stuck", 2, "berth-test/busybox:1.36");
    d["spec"]["progressDeadlineSeconds"] = json!(2);
    c.http.create(DEPLOYS, d).await;
    eventually(
        "ProgressDeadlineExceeded",
        Duration::from_secs(15),
        || async move {
            let d = c.http.get(&format!("{DEPLOYS}/stuck")).await;
            d["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| {
                    x["type"] == "Progressing"
                        && x["status"] == "False"
                        && x["reason"] == "ProgressDeadlineExceeded"
                })
        },
    )
    .await;
    let (ok, _, err) = c.berth(&["rollout", "status", "deploy/stuck"]);
    assert!(
        !ok && err.contains("exceeded its progress deadline"),
        "{err}"
    );
    let out = c
        .server
        .kubectl(&["rollout", "status", "deploy/stuck", "--timeout=10s"]);
    assert!(!out.status.success(), "kubectl rollout status must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeded its progress deadline"));
}
