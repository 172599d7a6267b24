//! Harness for the control-plane tests: a live `berth server` (scheduler and controllers
//! inside) plus fake nodes — Node objects whose Lease a task renews and whose bound pods a
//! fake kubelet marks Running and Ready, as an agent would. Dropping a node stops both.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support_api::Server;

/// The server plus an admin HTTP client.
pub struct Cluster {
    pub server: Server,
    pub http: reqwest::Client,
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
        let http = server.client();
        Cluster { server, http }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        ct: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.url))
            .bearer_auth(&self.server.admin_token)
            .header("content-type", ct);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let code = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        (code, v)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (code, v) = self
            .send(reqwest::Method::GET, path, "application/json", None)
            .await;
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    pub async fn try_get(&self, path: &str) -> Option<Value> {
        let (code, v) = self
            .send(reqwest::Method::GET, path, "application/json", None)
            .await;
        (code == 200).then_some(v)
    }

    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (code, v) = self
            .send(reqwest::Method::POST, path, "application/json", Some(&body))
            .await;
        assert_eq!(code, 201, "POST {path}: {v}");
        v
    }

    pub async fn patch(&self, path: &str, body: Value) -> Value {
        let (code, v) = self
            .send(
                reqwest::Method::PATCH,
                path,
                "application/merge-patch+json",
                Some(&body),
            )
            .await;
        assert_eq!(code, 200, "PATCH {path}: {v}");
        v
    }

    pub async fn delete(&self, path: &str, propagation: &str) -> Value {
        let body =
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation});
        let (code, v) = self
            .send(
                reqwest::Method::DELETE,
                path,
                "application/json",
                Some(&body),
            )
            .await;
        assert!(code == 200 || code == 202, "DELETE {path}: {code} {v}");
        v
    }

    pub async fn pods(&self, ns: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/namespaces/{ns}/pods")).await["items"]
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
    pub async fn add_node(self: &Arc<Self>, name: &str, cpu: &str, memory: &str) -> FakeNode {
        self.create(
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
        )
        .await;
        let resources = json!({"cpu": cpu, "memory": memory, "pods": "110"});
        self.patch(&format!("/api/v1/nodes/{name}/status"), json!({"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "fake node", "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}}))
            .await;
        self.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 10, "renewTime": micro_now()}}))
            .await;
        let alive = Arc::new(AtomicBool::new(true));
        let (cluster, flag, node) = (self.clone(), alive.clone(), name.to_string());
        let task = tokio::spawn(async move {
            let mut beat = Instant::now();
            while flag.load(Ordering::Relaxed) {
                if beat.elapsed() > Duration::from_millis(500) {
                    let lease = format!(
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
                    );
                    cluster
                        .patch(&lease, json!({"spec": {"renewTime": micro_now()}}))
                        .await;
                    beat = Instant::now();
                }
                cluster.run_pods(&node).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        FakeNode {
            name: name.to_string(),
            alive,
            task: Some(task),
        }
    }

    /// What an agent does: pods bound to `node` become Running and Ready, and pods being
    /// deleted gracefully are finished off (their containers would have stopped).
    async fn run_pods(&self, node: &str) {
        let list = self
            .get(&format!(
                "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
            ))
            .await;
        for p in list["items"].as_array().into_iter().flatten() {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            if p["metadata"].get("deletionTimestamp").is_some() {
                let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                    "gracePeriodSeconds": 0, "preconditions": {"uid": p["metadata"]["uid"]}});
                let _ = self
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/namespaces/{ns}/pods/{name}"),
                        "application/json",
                        Some(&options),
                    )
                    .await;
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
            // The pod may be gone meanwhile; that is fine.
            let _ = self
                .send(
                    reqwest::Method::PATCH,
                    &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
                    "application/merge-patch+json",
                    Some(&body),
                )
                .await;
        }
    }

    pub async fn wait_for<F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if check().await {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.server.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// A fake node's heartbeat and kubelet; stopped on drop.
pub struct FakeNode {
    pub name: String,
    alive: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeNode {
    /// The node dies: no more Lease renewals, no more pod status.
    pub fn stop(&mut self) {
        self.alive.store(false, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop();
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
