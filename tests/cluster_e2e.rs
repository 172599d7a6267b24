//! End to end with three real agents: one `berth server` (scheduler and controllers), three
//! `berth agent` processes with distinct node names on the one Docker engine, and a
//! Deployment whose pods must spread over the nodes and move when an agent dies.

pub mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::api::Server;
use support::cluster::*;
use support::docker::{TEST_IMAGE, TestScope, runtime, sh};
use support::{accept, eventually};

async fn wait_placement(
    pods: &Api<Pod>,
    timeout: Duration,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    eventually("the placement", timeout, || async {
        accept(running_per_node(pods, "app=spread").await, &done)
    })
    .await
}

#[tokio::test]
async fn six_replicas_spread_over_three_agents_and_move_when_one_is_killed() {
    runtime().await;
    let scope = TestScope::new("e2e-three");
    let server = Server::start();
    let mut agents: Vec<Agent> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|n| Agent::start(&server, n, &scope, &[]))
        .collect();
    let client = admin(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "spread"},
        "spec": {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "spread"}},
            "template": {
                "metadata": {"labels": {"app": "spread"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": TEST_IMAGE,
                        "imagePullPolicy": "Never", "command": sh("sleep 3600")}]
                }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // The scheduler spreads the replicas of one owner: two on each node.
    let placement = wait_placement(&pods, Duration::from_secs(90), |p| {
        p.values().sum::<usize>() == 6
    })
    .await;
    assert_eq!(
        placement,
        BTreeMap::from([
            ("node-a".to_string(), 2),
            ("node-b".to_string(), 2),
            ("node-c".to_string(), 2)
        ]),
    );

    // kill -9 one agent: its node's Lease stops, the node is tainted, its pods are evicted
    // and replaced on the two nodes left. The floor is the node grace period and the default
    // toleration (10 s each); the test allows three times that.
    let killed = agents.remove(0);
    let killed_at = Instant::now();
    drop(killed);
    let placement = wait_placement(&pods, Duration::from_secs(60), |p| {
        !p.contains_key("node-a") && p.values().sum::<usize>() == 6
    })
    .await;
    println!(
        "all 6 replicas Running on the other nodes {:.1} s after the agent was killed: {placement:?}",
        killed_at.elapsed().as_secs_f64()
    );
    drop(agents);
}
