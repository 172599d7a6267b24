//! Scheduler throughput: 1,000 registered fake nodes and 10,000 pending pods in a real
//! SQLite store, the scheduler alone (its caches fed by the store's watch, binds through the
//! in-process API's `pods/binding`), no agents. Ignored by default; run with
//!
//! ```sh
//! cargo test --release --test scheduler_bench -- --ignored --nocapture
//! ```

pub mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::api::Api;

const NODES: usize = 1_000;
const PODS: usize = 10_000;

async fn run_once() -> (Duration, f64) {
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
    (took, PODS as f64 / took.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn scheduler_binds_ten_thousand_pods_on_a_thousand_nodes() {
    let mut rates = Vec::new();
    for round in 0..3 {
        let (took, rate) = run_once().await;
        eprintln!(
            "round {round}: {PODS} pods bound on {NODES} nodes in {took:?}: {rate:.0} pods/s"
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    eprintln!("median: {:.0} pods/s (target 5,000)", rates[1]);
}
