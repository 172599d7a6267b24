//! `pods/eviction` and PodDisruptionBudgets in a real `berth server`, with fake nodes whose
//! kubelet marks pods Ready: the budget's status as Kubernetes computes it, evictions
//! answered 429 while the budget is spent and 201 when it allows, two evictions racing for
//! the last disruption, and the real `kubectl drain` (and `berth drain`) held back by a
//! budget, then evicting one pod at a time.

pub mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::control::{Cluster, FakeNode, deployment};
use support::{accept, eventually};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const BUDGETS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";

fn budget(name: &str, app: &str, rule: Value) -> Value {
    let mut spec = json!({"selector": {"matchLabels": {"app": app}}});
    spec.as_object_mut()
        .expect("an object")
        .extend(rule.as_object().expect("an object").clone());
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name}, "spec": spec})
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The pods of `app`, sorted by name.
async fn pods_of(c: &Cluster, app: &str) -> Vec<Value> {
    let mut pods: Vec<Value> = c
        .pods("default")
        .await
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .collect();
    pods.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
    pods
}

/// Waits until `app` has `n` Ready pods and no other, and returns their names.
async fn ready_pods(c: &Cluster, app: &str, n: usize) -> Vec<String> {
    eventually(
        &format!("{n} Ready pods of {app}"),
        Duration::from_secs(30),
        || async move {
            let pods = pods_of(c, app).await;
            let names: Vec<String> = pods
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect();
            if pods.len() == n && pods.iter().all(is_ready) {
                Ok(names)
            } else {
                Err(names)
            }
        },
    )
    .await
}

/// Waits until the budget's status shows its current generation with these counts:
/// `(expectedPods, currentHealthy, desiredHealthy, disruptionsAllowed)`.
async fn budget_status(c: &Cluster, name: &str, want: (i64, i64, i64, i64)) -> Value {
    eventually(
        &format!("the status of budget {name} to be {want:?}"),
        Duration::from_secs(20),
        || async move {
            let b = c.http.get(&format!("{BUDGETS}/{name}")).await;
            let s = &b["status"];
            let got = (
                s["expectedPods"].as_i64().unwrap_or(-1),
                s["currentHealthy"].as_i64().unwrap_or(-1),
                s["desiredHealthy"].as_i64().unwrap_or(-1),
                s["disruptionsAllowed"].as_i64().unwrap_or(-1),
            );
            let current = s["observedGeneration"] == b["metadata"]["generation"];
            accept(b.clone(), |_| current && got == want).map_err(|_| (got, b))
        },
    )
    .await
}

async fn evict(c: &Cluster, pod: &str) -> (u16, Value) {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": "default"}});
    c.http
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
            "application/json",
            Some(&body),
        )
        .await
}

fn set_min_available(min: Value) -> Value {
    json!({"spec": {"minAvailable": min}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_status_counts_pods_or_controller_scale_as_kubernetes_does() {
    let c = &Cluster::start(&[]);
    // Room for three pods of 300m: the fourth replica stays Pending, matched but not Ready.
    let _node: FakeNode = c.add_node("node-a", "1", "8Gi").await;
    let mut web = deployment("web", 4, "berth-test/busybox:1.36");
    web["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] =
        json!("300m");
    c.http.create(DEPLOYS, web).await;
    eventually(
        "three Ready pods and one Pending",
        Duration::from_secs(30),
        || async move {
            let pods = pods_of(c, "web").await;
            let ready = pods.iter().filter(|p| is_ready(p)).count();
            accept((pods.len(), ready), |got| *got == (4, 3))
        },
    )
    .await;
    for (name, rule) in [
        ("min-two", json!({"minAvailable": 2})),
        ("max-one", json!({"maxUnavailable": 1})),
        ("min-half", json!({"minAvailable": "50%"})),
        ("max-thirty", json!({"maxUnavailable": "30%"})),
    ] {
        c.http.create(BUDGETS, budget(name, "web", rule)).await;
    }
    // (expectedPods, currentHealthy, desiredHealthy, disruptionsAllowed)
    budget_status(c, "min-two", (4, 3, 2, 1)).await;
    let max_one = budget_status(c, "max-one", (4, 3, 3, 0)).await;
    budget_status(c, "min-half", (4, 3, 2, 1)).await;
    budget_status(c, "max-thirty", (4, 3, 2, 1)).await;
    let condition = &max_one["status"]["conditions"][0];
    assert_eq!(
        (
            &condition["type"],
            &condition["status"],
            &condition["reason"]
        ),
        (
            &json!("DisruptionAllowed"),
            &json!("False"),
            &json!("InsufficientPods")
        ),
        "{max_one}"
    );
    let min_two = c.http.get(&format!("{BUDGETS}/min-two")).await;
    assert_eq!(
        min_two["status"]["conditions"][0]["status"], "True",
        "{min_two}"
    );

    // Scaling the Deployment moves the expected count of the budgets that count its scale.
    c.http
        .patch(&format!("{DEPLOYS}/web"), json!({"spec": {"replicas": 2}}))
        .await;
    budget_status(c, "max-one", (2, 2, 1, 1)).await;
    budget_status(c, "min-two", (2, 2, 2, 0)).await;

    // A pod no controller owns leaves a scale-counted budget unable to count: no disruption.
    c.http
        .create(
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "berth-test/busybox:1.36"}]}}),
        )
        .await;
    eventually(
        "max-one to fail safe",
        Duration::from_secs(20),
        || async move {
            let b = c.http.get(&format!("{BUDGETS}/max-one")).await;
            let condition = &b["status"]["conditions"][0];
            accept(b.clone(), |_| {
                condition["reason"] == "SyncFailed"
                    && b["status"]["disruptionsAllowed"] == 0
                    && condition["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("stray")
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_answers_429_while_the_budget_is_spent_and_201_when_it_allows() {
    let c = &Cluster::start(&[]);
    let _node = c.add_node("node-a", "4", "8Gi").await;
    c.http
        .create(DEPLOYS, deployment("web", 2, "berth-test/busybox:1.36"))
        .await;
    let pods = ready_pods(c, "web", 2).await;
    c.http
        .create(
            BUDGETS,
            budget("web-pdb", "web", json!({"minAvailable": 2})),
        )
        .await;
    budget_status(c, "web-pdb", (2, 2, 2, 0)).await;

    // Discovery offers the subresource as Kubernetes does, so kubectl drain uses it.
    let core = c.http.get("/api/v1").await;
    let entry = core["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "pods/eviction")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (
            &entry["group"],
            &entry["version"],
            &entry["kind"],
            &entry["verbs"]
        ),
        (
            &json!("policy"),
            &json!("v1"),
            &json!("Eviction"),
            &json!(["create"])
        ),
        "{entry}"
    );

    let (code, status) = evict(c, &pods[0]).await;
    assert_eq!(code, 429, "{status}");
    assert_eq!(status["reason"], "TooManyRequests", "{status}");
    let message = status["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("Cannot evict pod as it would violate the pod's disruption budget.")
            && message.contains("web-pdb"),
        "{status}"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"], "DisruptionBudget",
        "{status}"
    );
    let kept = c
        .http
        .get(&format!("/api/v1/namespaces/default/pods/{}", pods[0]))
        .await;
    assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept}");

    // One disruption allowed: the first eviction takes it, the next is refused.
    c.http
        .patch(&format!("{BUDGETS}/web-pdb"), set_min_available(json!(1)))
        .await;
    budget_status(c, "web-pdb", (2, 2, 1, 1)).await;
    let (code, status) = evict(c, &pods[0]).await;
    assert_eq!(
        (code, &status["status"]),
        (201, &json!("Success")),
        "{status}"
    );
    let gone = c
        .http
        .get_opt(&format!("/api/v1/namespaces/default/pods/{}", pods[0]))
        .await;
    assert!(
        gone.is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null()),
        "the evicted pod is deleted"
    );
    let (code, status) = evict(c, &pods[1]).await;
    assert_eq!(code, 429, "{status}");

    // Once the replacement is Ready the budget allows one again.
    ready_pods(c, "web", 2).await;
    budget_status(c, "web-pdb", (2, 2, 1, 1)).await;

    // A pod two budgets select cannot be evicted: which one would pay is ambiguous.
    c.http
        .create(
            BUDGETS,
            budget("web-too", "web", json!({"maxUnavailable": 1})),
        )
        .await;
    let (code, status) = evict(c, &pods[1]).await;
    assert_eq!(code, 500, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("more than one PodDisruptionBudget"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_evictions_racing_for_the_last_disruption_exactly_one_wins() {
    let c = &Cluster::start(&[]);
    let _node = c.add_node("node-a", "4", "8Gi").await;
    c.http
        .create(DEPLOYS, deployment("web", 3, "berth-test/busybox:1.36"))
        .await;
    let pods = ready_pods(c, "web", 3).await;
    c.http
        .create(
            BUDGETS,
            budget("web-pdb", "web", json!({"minAvailable": 2})),
        )
        .await;
    budget_status(c, "web-pdb", (3, 3, 2, 1)).await;
    let answers =
        futures::future::join_all(pods.iter().map(|p| async move { evict(c, p).await.0 })).await;
    let won = answers.iter().filter(|code| **code == 201).count();
    let refused = answers.iter().filter(|code| **code == 429).count();
    assert_eq!((won, refused), (1, 2), "answers: {answers:?}");
    let deleting = pods_of(c, "web")
        .await
        .iter()
        .filter(|p| pods.contains(&p["metadata"]["name"].as_str().unwrap_or("").to_string()))
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
        .count();
    assert!(deleting <= 1, "only the winner's pod goes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_refused_while_a_budget_would_be_violated_then_evicts_one_at_a_time() {
    let c = &Cluster::start(&[]);
    let node_a = c.add_node("node-a", "4", "8Gi").await;
    c.http
        .create(DEPLOYS, deployment("web", 2, "berth-test/busybox:1.36"))
        .await;
    let before = ready_pods(c, "web", 2).await;
    let _node_b = c.add_node("node-b", "4", "8Gi").await;
    c.http
        .create(
            BUDGETS,
            budget("web-pdb", "web", json!({"minAvailable": 2})),
        )
        .await;
    budget_status(c, "web-pdb", (2, 2, 2, 0)).await;

    let server = &c.server;
    let drain = [
        "drain",
        node_a.name.as_str(),
        "--ignore-daemonsets",
        "--timeout=10s",
    ];
    let out = tokio::task::block_in_place(|| server.kubectl(&drain));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "kubectl drain succeeded: {text}");
    assert!(
        text.contains("disruption budget") && text.contains("web-pdb"),
        "{text}"
    );
    let (ok, _, err) = c.berth(&["drain", "node-a", "--timeout", "6"]);
    assert!(!ok && err.contains("web-pdb"), "berth drain: {err}");
    let untouched = pods_of(c, "web").await;
    assert!(
        untouched
            .iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_null()),
        "{untouched:#?}"
    );
    assert_eq!(
        ready_pods(c, "web", 2).await,
        before,
        "the same pods still run"
    );

    // One disruption at a time: the drain succeeds, and a Ready pod is left throughout.
    c.http
        .patch(&format!("{BUDGETS}/web-pdb"), set_min_available(json!(1)))
        .await;
    budget_status(c, "web-pdb", (2, 2, 1, 1)).await;
    let drain = ["drain", "node-a", "--ignore-daemonsets", "--timeout=60s"];
    let running = tokio::task::spawn_blocking({
        let (kubeconfig, home) = (server.kubeconfig.clone(), server.dir.path().to_owned());
        move || {
            std::process::Command::new("kubectl")
                .env("KUBECONFIG", kubeconfig)
                .env("HOME", home)
                .args(drain)
                .output()
                .expect("kubectl runs")
        }
    });
    let mut fewest_ready = usize::MAX;
    while !running.is_finished() {
        let ready = pods_of(c, "web")
            .await
            .iter()
            .filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
            .count();
        fewest_ready = fewest_ready.min(ready);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = running.await.expect("kubectl drain ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl drain failed: {text}");
    assert!(
        text.contains("will retry after"),
        "the second eviction waited for the first pod's replacement: {text}"
    );
    assert!(fewest_ready >= 1, "a Ready pod was left at every moment");
    let after = ready_pods(c, "web", 2).await;
    let placed = c.placement("default").await;
    assert!(!placed.contains_key("node-a"), "{placed:?}");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "both pods were replaced"
    );
}
