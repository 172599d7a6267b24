//! End to end with real agents, for what operators do to a running cluster: a pod too big for
//! every node waits until one that fits joins; `berth drain` empties a node; deleting a
//! Deployment takes its ReplicaSets, pods and containers with it.

pub mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::api::Server;
use support::cluster::*;
use support::docker::{TEST_IMAGE, TEST_LABEL, TestScope, runtime, sh};
use support::eventually;

/// The host's memory in KiB, as the agent reports it.
fn host_memory_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo")
}

/// The app containers the agents run for pods labelled `app`, per node (Docker's view).
fn containers_per_node(scope: &TestScope, app: &str) -> BTreeMap<String, usize> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={TEST_LABEL}={}", scope.id),
        "--filter",
        "label=berth.dev/container=app",
        "--format",
        "{{.Label \"berth.dev/node\"}} {{.Label \"berth.dev/pod-name\"}}",
    ]);
    let mut per_node = BTreeMap::new();
    for line in out.lines() {
        if let Some((node, pod)) = line.split_once(' ')
            && pod.starts_with(app)
        {
            *per_node.entry(node.to_string()).or_default() += 1;
        }
    }
    per_node
}

fn deployment(name: &str, replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": TEST_IMAGE,
                        "imagePullPolicy": "Never", "command": sh("sleep 3600")}]
                }
            }
        }
    })
}

#[tokio::test]
async fn a_pod_too_big_for_every_node_waits_until_a_node_that_fits_joins() {
    runtime().await;
    let scope = TestScope::new("e2e-too-big");
    let server = Server::start();
    // Two small nodes: everything but 1 GiB of the host is reserved for the system.
    let reserve = format!("memory={}Ki", host_memory_kib().saturating_sub(1024 * 1024));
    let small: Vec<Agent> = ["small-a", "small-b"]
        .into_iter()
        .map(|n| Agent::start(&server, n, &scope, &["--system-reserved", &reserve]))
        .collect();
    let client = admin(&server).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "big"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": sh("sleep 3600"),
                "resources": {"requests": {"memory": "2Gi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");

    let message = eventually("PodScheduled=False", Duration::from_secs(30), async || {
        let p = pods.get("big").await.map_err(|e| e.to_string())?;
        let condition = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled").cloned());
        match condition {
            Some(c) if c.status == "False" => Ok(c.message.unwrap_or_default()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(message, "0/2 nodes are available: 2 Insufficient memory.");
    // The event is written after the condition: wait for it rather than read once.
    let event = wait_event(&client, "big", "FailedScheduling", &message).await;
    assert_eq!(event, message);
    // Still pending after more attempts: the nodes' status updates (every second) wake the
    // scheduler, which tries again after its back-off (1 s, then 2 s), and each attempt bumps
    // the FailedScheduling event's count. Two attempts later, it is on no node too small.
    let first = event_count(&client, "big", "FailedScheduling").await;
    eventually(
        "two more scheduling attempts",
        Duration::from_secs(60),
        || async {
            let n = event_count(&client, "big", "FailedScheduling").await;
            if n >= first + 2 { Ok(n) } else { Err(n) }
        },
    )
    .await;
    let p = pods.get("big").await.expect("get the pod");
    assert_eq!(p.spec.as_ref().unwrap().node_name, None);

    // A node with the whole host's memory joins: the pod goes there and runs.
    let joined_at = Instant::now();
    let big = Agent::start(&server, "big-node", &scope, &[]);
    let node = eventually("the pod running", Duration::from_secs(60), async || {
        let p = pods.get("big").await.map_err(|e| e.to_string())?;
        match (p.spec.as_ref().and_then(|s| s.node_name.clone()), phase(&p)) {
            (Some(node), "Running") => Ok(node),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(node, "big-node");
    println!(
        "the pending pod ran on the joined node {:.1} s after its agent started",
        joined_at.elapsed().as_secs_f64()
    );
    drop((small, big));
}

#[tokio::test]
async fn drain_empties_a_node_and_deleting_a_deployment_removes_everything_it_made() {
    runtime().await;
    let scope = TestScope::new("e2e-drain");
    let server = Server::start();
    let agents: Vec<Agent> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|n| Agent::start(&server, n, &scope, &[]))
        .collect();
    let client = admin(&server).await;
    let _: Deployment = create(&client, deployment("drained", 6)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("2/2/2 placement", Duration::from_secs(90), async || {
        let p = running_per_node(&pods, "app=drained").await;
        if p.values().all(|n| *n == 2) && p.len() == 3 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;

    // `berth drain node-b`: cordoned, its pods evicted and replaced on the other nodes, and
    // its agent removes their containers.
    let started = Instant::now();
    let drained = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["drain", "node-b", "--timeout", "60"])
        .env("KUBECONFIG", &server.kubeconfig)
        .output()
        .expect("run berth drain");
    assert!(
        drained.status.success(),
        "berth drain failed: {}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let b = nodes.get("node-b").await.expect("get node-b");
    assert_eq!(b.spec.as_ref().unwrap().unschedulable, Some(true));
    let placement = eventually("6 pods off node-b", Duration::from_secs(60), async || {
        let p = running_per_node(&pods, "app=drained").await;
        if !p.contains_key("node-b") && p.values().sum::<usize>() == 6 {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    eventually(
        "no containers on node-b",
        Duration::from_secs(30),
        async || {
            let c = containers_per_node(&scope, "drained");
            if c.contains_key("node-b") {
                Err(format!("{c:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    println!(
        "drained node-b in {:.1} s: {placement:?}",
        started.elapsed().as_secs_f64()
    );

    // Deleting the Deployment (background propagation, kubectl's default) removes its
    // ReplicaSets, their pods, and the containers on every node.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .delete("drained", &DeleteParams::default())
        .await
        .expect("delete the deployment");
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    eventually("everything gone", Duration::from_secs(60), async || {
        let rs = replicasets
            .list(&ListParams::default().labels("app=drained"))
            .await
            .map_err(|e| e.to_string())?;
        let p = pods
            .list(&ListParams::default().labels("app=drained"))
            .await
            .map_err(|e| e.to_string())?;
        let c = containers_per_node(&scope, "drained");
        if rs.items.is_empty() && p.items.is_empty() && c.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} replicasets, {} pods, containers {c:?}",
                rs.items.len(),
                p.items.len()
            ))
        }
    })
    .await;
    drop(agents);
}
