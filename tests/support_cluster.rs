//! A real cluster for end-to-end tests: the `berth server` binary (see `support_api`) plus
//! `berth agent` processes on real Docker, an admin kube-rs client, and helpers that wait
//! for pods and events. Agents are killed on drop; their containers carry the test's label,
//! so the test's `TestScope` removes them even when the test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth::client::ClientOptions;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};

#[path = "support_api.rs"]
pub mod support_api;
#[path = "support_docker.rs"]
pub mod support_docker;

use support_api::Server;
use support_docker::{TEST_LABEL, TestScope, eventually};

/// An admin client for `server`.
pub async fn admin(server: &Server) -> kube::Client {
    ClientOptions {
        server: Some(server.url.clone()),
        token: Some(server.admin_token.clone()),
        certificate_authority: Some(server.dir.path().join("tls/ca.crt")),
        ..ClientOptions::default()
    }
    .connect()
    .await
    .expect("admin client")
    .client
}

/// A running `berth agent`, killed on drop.
pub struct Agent {
    child: Option<Child>,
    pub node: String,
    pub metrics_url: String,
}

impl Agent {
    /// Starts an agent for `node`, labelling its containers with the scope, with short
    /// intervals so tests run fast.
    pub fn start(server: &Server, node: &str, scope: &TestScope, extra: &[&str]) -> Agent {
        Agent::start_with_env(server, node, scope, extra, &[])
    }

    /// As [`Agent::start`], with extra environment variables for the agent process.
    pub fn start_with_env(
        server: &Server,
        node: &str,
        scope: &TestScope,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "agent",
                "--server",
                &server.url,
                "--token",
                &server.agent_token,
            ])
            .arg("--certificate-authority")
            .arg(server.dir.path().join("tls/ca.crt"))
            .args([
                "--node-name",
                node,
                "--metrics-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--relist-interval", "1", "--lease-interval", "1"])
            .args(["--node-status-interval", "1"])
            .args([
                "--restart-backoff-initial",
                "1",
                "--restart-backoff-max",
                "4",
            ])
            .arg("--container-label")
            .arg(format!("{TEST_LABEL}={}", scope.id))
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut agent = Agent {
            child: Some(child),
            node: node.to_string(),
            metrics_url: String::new(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("metrics on ") => {
                    agent.metrics_url = line["metrics on ".len()..].to_string();
                }
                Ok(line) if line.ends_with(" registered") => break,
                Ok(_) => {}
                Err(_) => panic!("berth agent did not register its node within 60 s"),
            }
        }
        agent
    }

    /// SIGTERM, then wait (as an operator restarting the agent would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates a pod bound to `node` (as the scheduler's binding would leave it).
pub async fn create_pod(client: &kube::Client, node: &str, mut pod: serde_json::Value) -> Pod {
    pod["apiVersion"] = "v1".into();
    pod["kind"] = "Pod".into();
    pod["spec"]["nodeName"] = node.into();
    let pod: Pod = serde_json::from_value(pod).expect("a valid pod");
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod")
}

/// Polls the pod until `check` accepts it.
pub async fn wait_pod(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Pod) -> bool,
) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let found = eventually(timeout, || {
        let api = api.clone();
        let check = &check;
        async move { api.get_opt(name).await.ok().flatten().filter(|p| check(p)) }
    })
    .await;
    match found {
        Some(pod) => pod,
        None => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!(
                "pod {name}: {what} did not happen within {timeout:?}; last seen: {}",
                serde_json::to_string_pretty(&last.map(|p| p.status)).unwrap_or_default()
            )
        }
    }
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The reasons and messages of the events about pod `name`, oldest first.
pub async fn pod_events(client: &kube::Client, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut list = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    list.into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Waits until an event with `reason` (and a message containing `text`) is recorded.
pub async fn wait_event(client: &kube::Client, pod: &str, reason: &str, text: &str) -> String {
    let found = eventually(Duration::from_secs(30), || async {
        pod_events(client, pod)
            .await
            .into_iter()
            .find(|(r, m)| r == reason && m.contains(text))
            .map(|(_, m)| m)
    })
    .await;
    match found {
        Some(m) => m,
        None => panic!(
            "no {reason} event mentioning {text:?} for pod {pod}; events: {:?}",
            pod_events(client, pod).await
        ),
    }
}

/// `docker` with arguments; panics with its output on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker run -d` of a container the agent is expected to repair or remove: the agent may see it
/// created and remove it before `docker run` gets to start it, which is the behaviour under test,
/// not a failure. Returns the new container's id.
pub fn docker_run_for_the_agent(args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("run")
        .args(args)
        .output()
        .expect("docker CLI");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let removed_first =
        stderr.contains("marked for removal") || stderr.contains("No such container");
    assert!(
        !id.is_empty() && (out.status.success() || removed_first),
        "docker run {args:?}: {out:?}"
    );
    id
}

/// Ids of the containers of pod `uid`, all states, newest first.
pub fn pod_container_ids(uid: &str, container: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "ps".to_string(),
        "-aq".into(),
        "--filter".into(),
        format!("label=berth.dev/pod-uid={uid}"),
    ];
    if let Some(c) = container {
        args.extend(["--filter".into(), format!("label=berth.dev/container={c}")]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&refs)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The id of pod `uid`'s running sandbox.
pub fn running_sandbox(uid: &str) -> String {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=berth.dev/pod-uid={uid}"),
        "--filter",
        "label=berth.dev/role=sandbox",
    ])
}

/// The body of `GET path` (HTTP/1.0) from `127.0.0.1:port`, headers included.
pub fn http_get_local(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The id of the running container `container` of the pod, from its status.
pub fn container_id(pod: &Pod, container: &str) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container))
        .and_then(|c| c.container_id.clone())
        .expect("a container id in the status")
        .trim_start_matches("docker://")
        .to_string()
}

/// Whether every app container of the pod runs and is ready.
pub fn all_ready(p: &Pod) -> bool {
    phase(p) == "Running"
        && p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

/// Creates a namespaced object in `default`.
pub async fn create<K>(client: &kube::Client, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("valid object");
    Api::<K>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &object)
        .await
        .expect("create")
}

pub fn exec(id: &str, script: &str) -> String {
    docker(&["exec", id, "sh", "-c", script])
}

/// Polls `read` until its output contains `want`; returns the last output.
pub async fn eventually_output(read: impl Fn() -> String, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = read();
        if out.contains(want) || std::time::Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Running, ready and not terminating pods with `selector`, counted per node.
pub async fn running_per_node(
    pods: &Api<Pod>,
    selector: &str,
) -> std::collections::BTreeMap<String, usize> {
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods");
    let mut per_node = std::collections::BTreeMap::new();
    for p in list.items.iter().filter(|p| {
        p.metadata.deletion_timestamp.is_none() && phase(p) == "Running" && all_ready(p)
    }) {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        *per_node.entry(node.unwrap_or_default()).or_default() += 1;
    }
    per_node
}
