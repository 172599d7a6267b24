//! Scheduler throughput: 1,000 registered fake nodes and 10,000 pending pods in a real
//! SQLite store, the scheduler alone (its caches fed by the store's watch, binds through the
//! in-process API's `pods/binding`), no agents. **In-process**: the store, the API's router
//! and the scheduler run inside this test binary, not in a `berth server` process (no HTTP,
//! no TLS between them).
//!
//! The reference, in the same run and interleaved with it (scheduler, floor, scheduler, floor…,
//! each on a fresh store holding the same nodes and pods): the **bind floor**, the same 10,000
//! bindings written through the same `pods/binding` batches (64 pods a batch, 4 batches in
//! flight, as the scheduler sends them) with the nodes chosen round-robin: what binding costs
//! without any choosing. Both runs are checked: every pod bound, to a node that exists, no node
//! given more pods than it holds. Ignored by default; run with
//!
//! ```sh
//! cargo test --release --test scheduler_bench -- --ignored --nocapture
//! ```

pub mod support;

use std::time::{Duration, Instant};

use berth::cluster::api::binding::Binding;
use berth::cluster::controllers::client::LocalApi;
use futures::StreamExt;
use serde_json::json;
use support::api::Api;

const NODES: usize = 1_000;
const PODS: usize = 10_000;

/// A fresh store with the nodes and the pending pods.
async fn seeded() -> Api {
    let owned = Api::new().await;
    let api = &owned;
    let send = |uri: String, body: serde_json::Value| async move {
        let (code, v) = api.call("POST", &uri, Some(&body)).await;
        assert!(code.is_success(), "{uri}: {v}");
    };
    let nodes = (0..NODES).map(|i| {
        let name = format!("node-{i:04}");
        async move {
            send(
                "/api/v1/nodes".into(),
                json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"zone": format!("z{}", i % 3)}}}),
            )
            .await;
            let r = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
            let body = json!({"status": {"capacity": r, "allocatable": r,
                "conditions": [{"type": "Ready", "status": "True"}]}});
            let (code, v) = api
                .send(
                    "PATCH",
                    &format!("/api/v1/nodes/{name}/status"),
                    Some(support::api::ADMIN),
                    "application/merge-patch+json",
                    Some(body.to_string()),
                )
                .await;
            assert!(code.is_success(), "{v}");
        }
    });
    futures::stream::iter(nodes)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let pods = (0..PODS).map(|i| {
        send(
            "/api/v1/namespaces/default/pods".into(),
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}),
        )
    });
    futures::stream::iter(pods)
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    owned
}

/// Every pod bound, each to a node that exists, none of them given more than 110 pods.
async fn check_bound(api: &Api) {
    let (code, list) = api
        .call("GET", "/api/v1/namespaces/default/pods", None)
        .await;
    assert!(code.is_success(), "{list}");
    let mut per_node = std::collections::HashMap::<String, usize>::new();
    for pod in list["items"].as_array().expect("items") {
        let node = pod["spec"]["nodeName"].as_str().expect("every pod bound");
        *per_node.entry(node.to_string()).or_default() += 1;
    }
    assert_eq!(per_node.values().sum::<usize>(), PODS);
    assert!(per_node.len() <= NODES, "{} nodes", per_node.len());
    for (node, n) in &per_node {
        let i: usize = node["node-".len()..].parse().expect("a bench node");
        assert!(i < NODES && *n <= 110, "{node}: {n} pods");
    }
}

/// The scheduler binds every pod: its time and rate.
async fn scheduler_once() -> (Duration, f64) {
    let api = seeded().await;
    let start = Instant::now();
    let (_scheduler, pods) = berth::cluster::scheduler::start_alone(api.state.clone());
    loop {
        let bound = pods
            .list(None)
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_string())
            .count();
        if bound == PODS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "only {bound} bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    check_bound(&api).await;
    (took, PODS as f64 / took.as_secs_f64())
}

/// The bind floor: the same bindings, nodes chosen round-robin, no scheduler.
async fn floor_once() -> (Duration, f64) {
    let api = seeded().await;
    let binder = LocalApi::new(api.state.clone(), "bench-floor");
    let start = Instant::now();
    let batches: Vec<Vec<Binding>> = (0..PODS)
        .map(|i| Binding {
            namespace: "default".into(),
            pod: format!("pod-{i:05}"),
            node: format!("node-{:04}", i % NODES),
        })
        .collect::<Vec<_>>()
        .chunks(64)
        .map(<[Binding]>::to_vec)
        .collect();
    let results = futures::stream::iter(batches.iter())
        .map(|batch| binder.bind_many(batch))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let took = start.elapsed();
    for result in results.into_iter().flatten() {
        result.expect("every binding written");
    }
    check_bound(&api).await;
    (took, PODS as f64 / took.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn scheduler_binds_ten_thousand_pods_on_a_thousand_nodes() {
    let (mut rates, mut floors) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (took, rate) = scheduler_once().await;
        eprintln!(
            "round {round}: scheduler: {PODS} pods bound on {NODES} nodes in {took:?}: {rate:.0} pods/s"
        );
        rates.push(rate);
        let (took, floor) = floor_once().await;
        eprintln!("round {round}: bind floor: {PODS} bindings in {took:?}: {floor:.0} pods/s");
        floors.push(floor);
    }
    rates.sort_by(f64::total_cmp);
    floors.sort_by(f64::total_cmp);
    let (rate, floor) = (rates[1], floors[1]);
    eprintln!(
        "median: scheduler {rate:.0} pods/s, bind floor {floor:.0} pods/s, ratio {:.2} (target 5,000 pods/s)",
        rate / floor
    );
    println!(
        "RESULT scheduler-in-process {rate:.0}pods/s bind-floor:{floor:.0}pods/s {:.2}x >=5000pods/s",
        rate / floor
    );
}
