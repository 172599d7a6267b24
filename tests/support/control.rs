//! Harness for the control-plane tests: a live `berth server` (scheduler and controllers
//! inside) plus fake nodes — Node objects whose Lease a task renews and whose bound pods a
//! fake kubelet marks Running and Ready, as an agent would. Dropping a node stops both; a
//! write of the fake kubelet the server refuses fails the test.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::api::{Http, Server};

/// The server plus an admin HTTP client.
pub struct Cluster {
    pub server: Server,
    pub http: Http,
}

pub fn micro_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Cluster {
    pub fn start(extra: &[&str]) -> Cluster {
        let server = Server::start_with(extra);
        let http = server.http();
        Cluster { server, http }
    }

    pub async fn pods(&self, ns: &str) -> Vec<Value> {
        self.http
            .get(&format!("/api/v1/namespaces/{ns}/pods"))
            .await["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Pods per node name (unbound pods under "").
    pub async fn placement(&self, ns: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for p in self.pods(ns).await {
            let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
            *out.entry(node).or_insert(0) += 1;
        }
        out
    }

    /// Registers a Ready node with this much CPU and memory, its Lease renewed every 500 ms
    /// and its pods marked Running and Ready, until the [`FakeNode`] is dropped or stopped.
    pub async fn add_node(&self, name: &str, cpu: &str, memory: &str) -> FakeNode {
        let http = &self.http;
        http.create(
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
        )
        .await;
        let resources = json!({"cpu": cpu, "memory": memory, "pods": "110"});
        http.patch(&format!("/api/v1/nodes/{name}/status"), json!({"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "fake node", "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}}))
            .await;
        http.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 10, "renewTime": micro_now()}}))
            .await;
        let refused = Arc::new(Mutex::new(Vec::new()));
        let kubelet = Kubelet {
            http: self.http.clone(),
            node: name.to_string(),
            refused: refused.clone(),
        };
        let task = tokio::spawn(async move {
            let mut beat = Instant::now();
            loop {
                if beat.elapsed() > Duration::from_millis(500) {
                    kubelet.renew_lease().await;
                    beat = Instant::now();
                }
                kubelet.run_pods().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        FakeNode {
            name: name.to_string(),
            refused,
            task: Some(task),
        }
    }

    /// Runs `berth ARGS --kubeconfig …` and returns (success, stdout, stderr).
    pub fn berth(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.server.kubeconfig)
            .output()
            .expect("run berth");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// What a fake node's kubelet writes, and the writes the server refused.
struct Kubelet {
    http: Http,
    node: String,
    refused: Arc<Mutex<Vec<String>>>,
}

impl Kubelet {
    /// Notes a write answered with a code outside `accepted`.
    fn check(&self, what: &str, (code, body): (u16, Value), accepted: &[u16]) {
        if !accepted.contains(&code) {
            let refusal = format!("fake kubelet of {}: {what}: {code} {body}", self.node);
            eprintln!("{refusal}");
            self.refused.lock().expect("refusals").push(refusal);
        }
    }

    async fn renew_lease(&self) {
        let lease = format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
            self.node
        );
        let answer = self
            .http
            .try_patch(&lease, &json!({"spec": {"renewTime": micro_now()}}))
            .await;
        self.check("renew the Lease", answer, &[200]);
    }

    /// What an agent does: pods bound to the node become Running and Ready, and pods being
    /// deleted gracefully are finished off (their containers would have stopped). A pod
    /// deleted meanwhile (404), or replaced under its name (409 on the uid precondition), is
    /// no failure; any other refusal is.
    async fn run_pods(&self) {
        let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", self.node);
        let (code, list) = self
            .http
            .send(reqwest::Method::GET, &path, "application/json", None)
            .await;
        if code != 200 {
            return self.check("list its pods", (code, list), &[200]);
        }
        for p in list["items"].as_array().into_iter().flatten() {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
            if p["metadata"].get("deletionTimestamp").is_some() {
                let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                    "gracePeriodSeconds": 0, "preconditions": {"uid": p["metadata"]["uid"]}});
                let answer = self
                    .http
                    .send(
                        reqwest::Method::DELETE,
                        &path,
                        "application/json",
                        Some(&options),
                    )
                    .await;
                self.check(
                    &format!("finish pod {ns}/{name}"),
                    answer,
                    &[200, 202, 404, 409],
                );
                continue;
            }
            if p["status"]["phase"] == "Running" {
                continue;
            }
            let t = now();
            let body = json!({"status": {"phase": "Running", "podIP": "10.0.0.1", "startTime": t,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
                    {"type": "Ready", "status": "True", "lastTransitionTime": t}]}});
            let answer = self.http.try_patch(&format!("{path}/status"), &body).await;
            self.check(&format!("run pod {ns}/{name}"), answer, &[200, 404]);
        }
    }
}

/// A fake node's heartbeat and kubelet; stopped on drop, which fails the test if the server
/// refused one of its writes.
pub struct FakeNode {
    pub name: String,
    refused: Arc<Mutex<Vec<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeNode {
    /// The node dies: no more Lease renewals, no more pod status.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            if t.is_finished() {
                // It loops until aborted: finished means it panicked.
                self.refused
                    .lock()
                    .expect("refusals")
                    .push(format!("the fake kubelet of {} panicked", self.name));
            }
            t.abort();
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop();
        let refused = self.refused.lock().map(|r| r.clone()).unwrap_or_default();
        if !std::thread::panicking() {
            assert!(
                refused.is_empty(),
                "the server refused writes of node {}: {refused:#?}",
                self.name
            );
        }
    }
}

/// A Deployment of `replicas` pods with a small request.
pub fn deployment(name: &str, replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}})
}
